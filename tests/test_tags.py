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
    REGISTRY_VERSION,
    finalize,
    registry,
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


def _with_surfing():
    from segments.taxonomy import load_taxonomy, taxonomy_from_dict

    data = load_taxonomy().model_dump()
    data["interests"] = [
        *data["interests"],
        {"name": "surfing", "label": "冲浪", "categories": ["冲浪板"], "keywords": ["冲浪"]},
    ]
    return taxonomy_from_dict(data)


def test_a_brands_taxonomy_gives_its_interest_tags() -> None:
    tax = _with_surfing()
    tags = registry(tax)
    names = [t.name for t in tags]
    assert {"interest_surfing", "interest_surfing_expanded"} <= set(names)
    # taxonomy order: the new interest's tags follow the last default interest's
    assert names.index("interest_surfing") == names.index("interest_family_outdoor") + 1
    surfing = next(t for t in tags if t.name == "interest_surfing")
    assert surfing.label_zh == "冲浪兴趣度" and "surfing" in surfing.description
    assert len(tags) == len(REGISTRY) + 2
    assert [t for t in tags if "surfing" not in t.name] == list(REGISTRY)
    d = tag_dictionary(tax)
    assert d["name"].to_list() == names
    doc = registry_markdown(tax)
    assert "| `interest_surfing` | 冲浪兴趣度 |" in doc
    assert "| `interest_surfing_expanded` | 冲浪扩展兴趣度 |" in doc
    assert "interest_surfing" not in registry_markdown()
    # the weekly table of that brand is finalized against its own registry
    df = pl.DataFrame({n: [None] for n in names}).with_columns(pl.lit("U1").alias("one_id"))
    out = finalize(df.clone(), tax)
    assert out.columns == names and out.row(0, named=True)["interest_surfing"] == 0.0
    with pytest.raises(StageError, match="undocumented column\\(s\\) interest_surfing"):
        finalize(df)


def test_window_tags_follow_the_rfm_windows() -> None:
    from segments.stages.rfm import WINDOWS

    names = [t.name for t in REGISTRY]
    for prefix in ("frequency", "monetary"):
        windowed = [n for n in names if n.startswith(prefix + "_") and n[-1] == "w"]
        assert windowed == [f"{prefix}_{n}w" for n in WINDOWS]
        assert [BY_NAME[n].window for n in windowed] == [f"{n}w" for n in WINDOWS]


def test_registry_toml_has_named_fields_only() -> None:
    import tomllib

    from segments.tags.registry import REGISTRY_FILE

    data = tomllib.loads(REGISTRY_FILE.read_text(encoding="utf-8"))
    named = {
        "name",
        "family",
        "dtype",
        "unit",
        "description",
        "label_zh",
        "sources",
        "window",
        "null_means",
    }
    assert set(data) == {"version", "tag"} and data["version"] == REGISTRY_VERSION
    assert data["tag"] and all(isinstance(t, dict) for t in data["tag"])
    for t in data["tag"]:
        assert named <= set(t) <= named | {"fill", "each"}, t
        assert all(not isinstance(v, list) or k == "fill" for k, v in t.items()), t


def test_an_interest_that_clashes_with_a_tag_is_refused() -> None:
    from segments.errors import ConfigError
    from segments.taxonomy import load_taxonomy, taxonomy_from_dict

    data = load_taxonomy().model_dump()
    data["interests"] = [
        *data["interests"],
        {"name": "signal_count", "label": "信号", "categories": ["信号"], "keywords": ["信号"]},
    ]
    with pytest.raises(ConfigError, match="tag 'interest_signal_count' comes twice"):
        registry(taxonomy_from_dict(data))


def test_a_registry_file_with_a_missing_field_is_refused_in_the_engine_shape() -> None:
    import tomllib

    from segments.errors import ConfigError
    from segments.settings.load import validated
    from segments.tags.registry import REGISTRY_FILE, RegistryFile

    data = tomllib.loads(REGISTRY_FILE.read_text(encoding="utf-8"))
    del data["tag"][0]["unit"]
    data["tag"][1]["fill"] = 1.5  # identifier_count is an int
    with pytest.raises(ConfigError) as e:
        validated(RegistryFile, data, "registry.toml")
    assert str(e.value).startswith("registry.toml has 2 problems:")
    assert "tag.0.unit: Field required." in str(e.value)
    assert "fill 1.5 does not fit dtype int" in str(e.value)
