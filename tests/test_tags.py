"""The tag registry: complete, consistent, documented, and checked against the table."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from segments.errors import StageError
from segments.tags import (
    BY_NAME,
    CONTRACT_COLUMNS,
    REGISTRY,
    finalize,
    registry_markdown,
    tag_dictionary,
)

FAMILIES = {
    "identity",
    "rfm",
    "behaviour",
    "interest",
    "community",
    "promo",
    "lifecycle",
    "predicted",
    "cluster",
}


def test_registry_has_80_documented_tags_with_unique_names() -> None:
    names = [t.name for t in REGISTRY]
    assert len(names) == len(set(names))
    assert len(names) - 1 >= 80  # one_id is the key, not a tag
    assert set(CONTRACT_COLUMNS) <= set(names)
    for t in REGISTRY:
        assert t.family in FAMILIES, t.name
        assert t.description and t.label_zh and t.null_means, t.name
        assert t.dtype in {"bool", "int", "float", "str", "datetime", "list[str]"}, t.name


def test_docs_tags_md_is_in_step_with_the_registry() -> None:
    doc = Path(__file__).parents[1] / "docs" / "tags.md"
    assert doc.read_text(encoding="utf-8") == registry_markdown(), (
        "docs/tags.md is stale: run `segments tags list --markdown > docs/tags.md`"
    )


def test_finalize_orders_fills_and_refuses() -> None:
    df = pl.DataFrame({t.name: [None] for t in REGISTRY}).with_columns(pl.lit("U1").alias("one_id"))
    out = finalize(df.select(list(reversed(df.columns))))
    assert out.columns == [t.name for t in REGISTRY]
    row = out.row(0, named=True)
    assert row["frequency_52w"] == 0 and row["is_high_value"] is False
    assert row["recency_days"] is None  # null means: never bought
    assert row["interests"] == [] and row["lifecycle_stage"] == "prospect"
    assert out.schema["monetary_52w"] == pl.Float64 and out.schema["interests"] == pl.List(
        pl.String
    )
    with pytest.raises(StageError, match="undocumented column\\(s\\) surprise"):
        finalize(df.with_columns(pl.lit(1).alias("surprise")))
    with pytest.raises(StageError, match="not computed: koc_score"):
        finalize(df.drop("koc_score"))


def test_tag_dictionary_matches_registry() -> None:
    d = tag_dictionary()
    assert d["name"].to_list() == [t.name for t in REGISTRY]
    assert (
        d.filter(pl.col("name") == "frequency_52w")["label_zh"].item()
        == BY_NAME["frequency_52w"].label_zh
    )
