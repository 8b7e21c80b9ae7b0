"""Pack previews: counts per selection step, breakdowns of who a pack holds; pack listings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import ValidationError

from segments.audiences.definitions import PackDef, pack_and_packs, problems_line, rule_text
from segments.audiences.export import week_tags
from segments.audiences.select import Selection, select_pack
from segments.errors import ConfigError

# Preview breakdowns (those present in the tag table are used).
BREAKDOWN_COLUMNS = ("cluster", "primary_interest", "lifecycle_stage")
NONE_KEY = "(none)"


# ---------------------------------------------------------------------------------------------
# Preview


def _breakdown(frame: pl.DataFrame, key: pl.Expr) -> dict[str, int]:
    counts = frame.group_by(key.alias("key")).len().rows()
    items = [(NONE_KEY if k is None else str(k), int(n)) for k, n in counts]
    return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))


def preview(
    selection: Selection, tags: pl.LazyFrame, one_id_map: pl.LazyFrame | None = None
) -> dict[str, Any]:
    """What a pack holds: counts per step and breakdowns of the final people.

    In: a Selection, the tags it came from (cluster, cluster_name, primary_interest,
    lifecycle_stage are used when present), and optionally the identity map (one_id, sources:
    the "table" or "table:source" labels each identifier was seen in). Out (JSON-ready):
    `pack`, `rule`, `count`, `holdout`, `counts`, `info`, and `breakdowns` {column: {value:
    people}} by cluster ("<cluster>: <cluster_name>"), primary_interest, lifecycle_stage and
    source (a person counts once for each source any of their identifiers was seen in).
    """
    schema = tags.collect_schema()
    ids = selection.frame.lazy()
    present = [c for c in BREAKDOWN_COLUMNS if c in schema]
    extra = ["cluster_name"] if "cluster" in present and "cluster_name" in schema else []
    breakdowns: dict[str, dict[str, int]] = {}
    if present:
        df = (
            tags.select(pl.col("one_id").cast(pl.String), *present, *extra)
            .join(ids, on="one_id", how="semi")
            .collect()
        )
        for col in present:
            key = pl.col(col)
            if col == "cluster" and extra:
                key = (
                    pl.when(pl.col("cluster").is_null())
                    .then(None)
                    .otherwise(
                        pl.concat_str(
                            [
                                pl.col("cluster").cast(pl.String),
                                pl.col("cluster_name").fill_null(""),
                            ],
                            separator=": ",
                        ).str.strip_chars_end(": ")
                    )
                )
            breakdowns[col] = _breakdown(df, key)
    if one_id_map is not None and "sources" in one_id_map.collect_schema():
        src = (
            one_id_map.select(pl.col("one_id").cast(pl.String), "sources")
            .join(ids, on="one_id", how="semi")
            .explode("sources")
            .drop_nulls("sources")
            .unique()
            .group_by(pl.col("sources").alias("key"))
            .len()
            .collect()
        )
        items = [(str(k), int(n)) for k, n in src.rows()]
        breakdowns["source"] = dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))
    return preview_result(selection, breakdowns)


def preview_result(selection: Selection, breakdowns: dict[str, Any]) -> dict[str, Any]:
    """What a preview answers (the CLI's and the HTTP API's): the pack, its rule, counts and
    breakdowns."""
    return {
        "pack": selection.pack.name,
        "description": selection.pack.description,
        "rule": selection.rule,
        "count": selection.counts["final"],
        "holdout": selection.counts["holdout"],
        "counts": dict(selection.counts),
        "info": dict(selection.info),
        "breakdowns": breakdowns,
    }


def adhoc_pack(where: str, option: str = "--where") -> PackDef:
    """The ad-hoc pack `adhoc` of one `where` filter (suppressions as for any pack; no minimum
    size). ConfigError (one line, naming `option`) when the filter is refused."""
    try:
        return PackDef(name="adhoc", description="ad-hoc filter", where=where, min_size=1)
    except ValidationError as e:
        raise ConfigError(problems_line(option, e) + ".") from None


def preview_pack(
    workspace: str | Path,
    name: str | None = None,
    where: str | None = None,
    week: str | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> dict[str, Any]:
    """Preview a named pack, or an ad-hoc `where` filter, in a workspace's week (default latest).

    Reads only the tag columns the rules and breakdowns need. Out: `preview()`'s dict plus
    `week`.
    """
    if (name is None) == (where is None):
        raise ConfigError("preview: give a pack name or --where, not both or neither.")
    workspace = Path(workspace)
    if where is not None:
        pack = adhoc_pack(where)
        packs: dict[str, PackDef] = {"adhoc": pack}
    else:
        assert name is not None
        pack, packs = pack_and_packs(name, audiences)
    wt = week_tags(workspace, week)
    tags = pl.scan_parquet(wt.path, glob=False)
    sel = select_pack(tags, pack, packs)
    one_id_map = pl.scan_parquet(wt.one_id_map, glob=False) if wt.one_id_map.is_file() else None
    out = preview(sel, tags, one_id_map)
    return {"week": wt.label, **out}


def pack_summaries(packs: Mapping[str, PackDef]) -> list[dict[str, Any]]:
    """One dict per pack (name, description, rule, holdout, platforms) for listings."""
    return [
        {
            "name": p.name,
            "description": p.description,
            "where": p.where,
            "rule": rule_text(p, packs),
            "holdout": p.holdout,
            "min_size": p.min_size,
            "platforms": list(p.platforms),
        }
        for p in packs.values()
    ]
