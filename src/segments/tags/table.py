"""The tag table against the registry: `finalize`, and the registry as a table and a document."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import asdict
from typing import TYPE_CHECKING

import polars as pl

from segments.errors import StageError
from segments.exprs import take_sorted
from segments.tags.registry import REGISTRY_VERSION, registry

if TYPE_CHECKING:
    from segments.taxonomy import Taxonomy

_DTYPES = {
    "bool": pl.Boolean(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "str": pl.String(),
    "datetime": pl.Datetime("us"),
    "list[str]": pl.List(pl.String()),
}


def finalize(
    table: pl.DataFrame,
    taxonomy: Taxonomy | None = None,
    only: Collection[str] | None = None,
) -> pl.DataFrame:
    """Registry order, registry dtypes and fills, sorted by one_id; refuses undocumented or
    missing columns. The columns are moved out of `table` one at a time (it is left empty when
    this returns), so the peak holds the table once plus a column, not twice. The interest
    columns are those of `taxonomy` (default: the contract's). With `only`, the other columns
    are taken as they are: they must be finalized already (rows of a finalized table with
    some columns computed again)."""
    tags = registry(taxonomy)
    names = {t.name for t in tags}
    undocumented = [c for c in table.columns if c not in names]
    missing = [t.name for t in tags if t.name not in table.columns]
    if undocumented or missing:
        parts = []
        if undocumented:
            parts.append(f"undocumented column(s) {', '.join(undocumented)}")
        if missing:
            parts.append(f"documented tag(s) not computed: {', '.join(missing)}")
        raise StageError("tag table does not match the registry: " + "; ".join(parts) + ".")
    final = []
    for tag in tags:
        col = pl.col(tag.name).cast(_DTYPES[tag.dtype])
        if tag.dtype == "float":
            # Parallel sums may differ in the last bits between runs; rounding keeps the files
            # byte-identical (money to the cent, scores to 1e-6).
            col = col.round(2 if tag.unit == "CNY" else 6)
        if tag.fill is not None:
            fill = (
                pl.lit(tag.fill, dtype=_DTYPES[tag.dtype])
                if tag.dtype != "list[str]"
                else pl.lit([], dtype=_DTYPES[tag.dtype])
            )
            col = col.fill_null(fill)
        if only is not None and tag.name not in only:
            final.append(table.drop_in_place(tag.name))
            continue
        column = table.drop_in_place(tag.name).to_frame()
        final.append(column.select(col.alias(tag.name)).to_series())
        del column
    return take_sorted(pl.DataFrame(final), "one_id")


def tag_dictionary(taxonomy: Taxonomy | None = None) -> pl.DataFrame:
    """The registry as a table (written as `tag_dictionary.parquet` beside the tags), with the
    interest tags of `taxonomy` (default: the contract's)."""
    rows = []
    for i, t in enumerate(registry(taxonomy)):
        d = asdict(t)
        d["fill"] = None if t.fill is None else str(t.fill)
        rows.append({"position": i, **d})
    return pl.DataFrame(rows)


def registry_markdown(taxonomy: Taxonomy | None = None) -> str:
    """docs/tags.md: the registry as a document (a test keeps the file in step with the code),
    with the interest tags of `taxonomy` (default: the contract's)."""
    tags = registry(taxonomy)
    lines = [
        "# Tags",
        "",
        f"The weekly tag table `OUT/weeks/<WEEK>/tags.parquet` has one row per `one_id` and these "
        f"{len(tags)} columns, in this order (registry version {REGISTRY_VERSION}). Generated "
        "from `segments.tags.REGISTRY` by `segments tags list --markdown`; `segments tags describe "
        "NAME` prints one entry.",
        "",
    ]
    family = None
    for i, t in enumerate(tags):
        if t.family != family:
            family = t.family
            lines += [
                f"## {family}",
                "",
                "| tag | 中文 | type | unit | window | sources | meaning | null means |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |",
            ]
        lines.append(
            f"| `{t.name}` | {t.label_zh} | {t.dtype} | {t.unit} | {t.window} | {t.sources} | "
            f"{t.description} | {t.null_means} |"
        )
        if i + 1 == len(tags) or tags[i + 1].family != family:
            lines.append("")
    return "\n".join(lines)
