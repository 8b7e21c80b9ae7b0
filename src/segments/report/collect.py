"""The report's aggregates: every number it shows, read from a workspace's week (no person-level row)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segments.contract import COMMERCE_ID_TYPES, WECHAT_ID_TYPES
from segments.errors import DataError
from segments.ingest.parse import mask_value
from segments.tags import INTERESTS
from segments.weeks import Week
from segments.workspace import Workspace, open_workspace

NONE_KEY = "(none)"
_INTEREST_ZH = dict(INTERESTS)


# ---------------------------------------------------------------------------------------------
# The aggregates


LEARNED_SCHEMA = {"category": pl.String, "interest": pl.String, "label_zh": pl.String}


@dataclass
class ReportData:
    """Every number the report shows, as small tables of aggregates (no person-level row)."""

    workspace: str  # the workspace folder's name (not its full path)
    week: str
    previous_week: str | None
    weeks: list[str]  # built weeks up to and including `week`
    as_of_end: str  # the week's exclusive end, ISO
    meta: dict[str, str]  # engine version, config hash, registry version from tags.parquet
    summary: dict[str, Any]  # people, identifiers, linkage_rate, high_value, coupon_hunters, ...
    funnel: list[tuple[str, int]]  # (stage, count), in funnel order
    rfm_sizes: pl.DataFrame  # rfm_segment (NONE_KEY for null), people
    movement: pl.DataFrame | None  # from + one column per `to` segment, counts; None: one week
    interest_nodes: pl.DataFrame  # interest, label_zh, people
    interest_edges: pl.DataFrame  # interest_a, interest_b, co_count, lift (only lift > 1)
    clusters: (
        pl.DataFrame | None
    )  # cluster, cluster_name, size, share (+ top_lifecycle); None: none
    coupon_trend: pl.DataFrame  # week, people, coupon_hunters, share
    packs: pl.DataFrame  # pack, people, detail
    packs_source: str  # "exports log" or "built-in filters"
    notes: dict[str, str] = field(default_factory=dict)  # section id -> why a chart is missing
    # the categories the taxonomy places nowhere that the week learned an interest for:
    # category, interest, label_zh (`interests.learn_category_map`)
    learned_categories: pl.DataFrame = field(
        default_factory=lambda: pl.DataFrame(schema=LEARNED_SCHEMA)
    )


def _segment_order(values: list[str]) -> list[str]:
    try:
        from segments.stages.scores import RFM_SEGMENTS

        canonical = [zh for _, zh in RFM_SEGMENTS.values()]
    except ImportError:  # pragma: no cover - rfm always ships
        canonical = []
    present = set(values)
    known = [s for s in canonical if s in present]
    rest = sorted(s for s in present if s not in canonical and s != NONE_KEY)
    return known + rest + ([NONE_KEY] if NONE_KEY in present else [])


def _tags_meta(path: Path) -> dict[str, str]:
    from segments.io import parquet_metadata

    raw = parquet_metadata(path)
    out = {}
    for key in ("segments.engine_version", "segments.config_hash", "segments.registry_version"):
        value = raw.get(key)
        if value is not None:
            out[key.removeprefix("segments.")] = value
    return out


def _identity_stats(ws: Workspace, week: str) -> dict:
    path = ws.layout.identity_of_week("stats.json", week)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({e}).") from None


def linkage_funnel(one_id_map: pl.LazyFrame | None, stats: dict) -> list[tuple[str, int]]:
    """The funnel: identifiers -> people -> with a commerce id -> with a WeChat id -> linked.

    In: the week's one_id_map (one_id, id_type, id, sources) and identity stats.json. A
    commerce id is a commerce-platform id type, or a phone_sha256 seen on an order (as the
    identity stage counts it); linked = both a commerce id and a WeChat id. Stages whose data
    is missing are left out.
    """
    rows: list[tuple[str, int]] = []
    if "identifiers" in stats:
        rows.append(("identifiers", int(stats["identifiers"])))
    if one_id_map is not None:
        names = one_id_map.collect_schema().names()
        on_order = (
            pl.col("sources")
            .list.eval(pl.element().str.split(":").list.first() == "orders")
            .list.any()
            .fill_null(False)
            if "sources" in names
            else pl.lit(False)
        )
        commerce = pl.col("id_type").is_in(list(COMMERCE_ID_TYPES)) | (
            (pl.col("id_type") == "phone_sha256") & on_order
        )
        wechat = pl.col("id_type").is_in(list(WECHAT_ID_TYPES))
        per = one_id_map.group_by("one_id").agg(commerce.any().alias("c"), wechat.any().alias("w"))
        people, c, w, both = (
            per.select(
                pl.len().alias("people"),
                pl.col("c").sum().alias("commerce"),
                pl.col("w").sum().alias("wechat"),
                (pl.col("c") & pl.col("w")).sum().alias("linked"),
            )
            .collect()
            .row(0)
        )
        rows += [
            ("people (OneIDs)", int(people)),
            ("with a commerce id", int(c)),
            ("with a WeChat id", int(w)),
            ("linked (commerce + WeChat)", int(both)),
        ]
    elif "people" in stats:
        rows.append(("people (OneIDs)", int(stats["people"])))
        if "linked_people" in stats:
            rows.append(("linked (commerce + WeChat)", int(stats["linked_people"])))
    return rows


def _value_counts(tags: pl.LazyFrame, column: str) -> pl.DataFrame:
    return (
        tags.select(pl.col(column).cast(pl.String).fill_null(NONE_KEY))
        .group_by(column)
        .agg(pl.len().cast(pl.Int64).alias("people"))
        .sort(column)
        .collect()
    )


def _flag_count(
    tags: pl.LazyFrame, names: list[str], column: str, null_as: bool = False
) -> int | None:
    """People with `column` true (a null counts as `null_as`); None when there is no column."""
    if column not in names:
        return None
    expr = pl.col(column).cast(pl.Boolean).fill_null(null_as).sum()
    return int(tags.select(expr).collect().item())


def _interest_tables(
    ws: Workspace, week: str, tags: pl.LazyFrame, names: list[str]
) -> tuple[pl.DataFrame, pl.DataFrame]:
    counts: dict[str, int] = {}
    edges = pl.DataFrame(
        schema={
            "interest_a": pl.String,
            "interest_b": pl.String,
            "co_count": pl.Int64,
            "lift": pl.Float64,
        }
    )
    path = ws.layout.week_file(week, "interest_graph.parquet")
    if path.is_file():
        graph = pl.read_parquet(path, glob=False)
        if {"interest_a", "interest_b", "lift"} <= set(graph.columns):
            for side in ("a", "b"):
                if f"count_{side}" in graph.columns:
                    for name, n in graph.select(f"interest_{side}", f"count_{side}").iter_rows():
                        counts.setdefault(name, int(n))
            co = (
                pl.col("co_count").cast(pl.Int64)
                if "co_count" in graph.columns
                else pl.lit(None, pl.Int64)
            )
            edges = (
                graph.filter(pl.col("lift") > 1)
                .select(
                    pl.col("interest_a").cast(pl.String),
                    pl.col("interest_b").cast(pl.String),
                    co.alias("co_count"),
                    pl.col("lift").cast(pl.Float64),
                )
                .sort("lift", "interest_a", "interest_b", descending=[True, False, False])
            )
    if "interests" in names:
        per = (
            tags.select(pl.col("interests").alias("interest"))
            .explode("interest")
            .drop_nulls()
            .group_by("interest")
            .agg(pl.len().cast(pl.Int64).alias("n"))
            .collect()
        )
        for name, n in per.iter_rows():
            counts.setdefault(name, int(n))
    order = [k for k, _ in INTERESTS] + sorted(k for k in counts if k not in _INTEREST_ZH)
    nodes = pl.DataFrame(
        {
            "interest": order,
            "label_zh": [_INTEREST_ZH.get(k, k) for k in order],
            "people": [counts.get(k, 0) for k in order],
        },
        schema={"interest": pl.String, "label_zh": pl.String, "people": pl.Int64},
    )
    return nodes, edges


def _learned_categories(ws: Workspace, week: str) -> pl.DataFrame:
    """What the week learned for the categories the taxonomy places nowhere (its
    `state/interests.json`), by interest then category; none for a week built before."""
    path = ws.layout.week_state(week, "interests")
    learned = None
    if path.is_file():
        try:
            learned = json.loads(path.read_text(encoding="utf-8")).get("category_map")
        except (OSError, json.JSONDecodeError, AttributeError) as e:
            raise DataError(f"{path}: cannot read ({e}).") from None
    # a name is shown as validate shows it: never a phone's digits (a shifted column)
    rows = [(mask_value(c, False), i, _INTEREST_ZH.get(i, i)) for c, i in (learned or {}).items()]
    return pl.DataFrame(rows, schema=LEARNED_SCHEMA, orient="row").sort("interest", "category")


def _clusters(
    ws: Workspace, week: str, tags: pl.LazyFrame, names: list[str]
) -> pl.DataFrame | None:
    path = ws.layout.week_file(week, "clusters.parquet")
    if path.is_file():
        prof = pl.read_parquet(path, glob=False)
        if {"cluster", "size"} <= set(prof.columns) and prof.height:
            keep = [
                c
                for c in ("cluster", "cluster_name", "size", "share", "top_lifecycle")
                if c in prof.columns
            ]
            out = prof.select(keep).with_columns(
                pl.col("cluster").cast(pl.Int64), pl.col("size").cast(pl.Int64)
            )
            if "cluster_name" not in out.columns:
                out = out.with_columns(pl.lit(None, pl.String).alias("cluster_name"))
            if "share" not in out.columns:
                out = out.with_columns((pl.col("size") / pl.col("size").sum()).alias("share"))
            return out.sort("cluster")
    if "cluster" not in names:
        return None
    name_col = (
        pl.col("cluster_name").cast(pl.String)
        if "cluster_name" in names
        else pl.lit(None, pl.String)
    )
    total = tags.select(pl.len()).collect().item()
    out = (
        tags.select(pl.col("cluster").cast(pl.Int64), name_col.alias("cluster_name"))
        .drop_nulls("cluster")
        .group_by("cluster")
        .agg(pl.col("cluster_name").drop_nulls().first(), pl.len().cast(pl.Int64).alias("size"))
        .sort("cluster")
        .collect()
    )
    if out.height == 0:
        return None
    return out.with_columns((pl.col("size") / total).alias("share"))


def _packs_from_log(records: list[dict], week: str) -> pl.DataFrame | None:
    latest: dict[str, dict] = {}
    for rec in records:
        if rec.get("week") == week and isinstance(rec.get("pack"), str):
            latest[rec["pack"]] = rec  # the log is oldest first: the last record wins
    rows = []
    for name in sorted(latest):
        rec = latest[name]
        counts = rec.get("counts") if isinstance(rec.get("counts"), dict) else {}
        people = counts.get("final", rec.get("people"))
        if people is None:
            continue
        detail = f"exported to {rec.get('platform', '?')}"
        if "matched" in counts:
            detail += f"; matched {int(counts['matched']):,}"
        if rec.get("holdout_size"):
            detail += f"; held out {int(rec['holdout_size']):,}"
        rows.append({"pack": name, "people": int(people), "detail": detail})
    if not rows:
        return None
    return pl.DataFrame(rows, schema={"pack": pl.String, "people": pl.Int64, "detail": pl.String})


_BUILTIN_PACKS: tuple[tuple[str, str, list[str]], ...] = (
    ("high value", "is_high_value", ["is_high_value"]),
    (
        "high value, reachable",
        "is_high_value AND NOT is_opted_out AND NOT is_coupon_hunter",
        ["is_high_value", "is_opted_out", "is_coupon_hunter"],
    ),
    ("coupon hunters (exclusion list)", "is_coupon_hunter", ["is_coupon_hunter"]),
    ("opted out (never exported)", "is_opted_out OR is_opted_out IS NULL", ["is_opted_out"]),
)


def _builtin_packs(tags: pl.LazyFrame, names: list[str]) -> pl.DataFrame:
    exprs = []
    rows = []
    for label, rule, cols in _BUILTIN_PACKS:
        if all(c in names for c in cols):
            # an unknown consent counts as opted out, as in the audience selection
            b = {c: pl.col(c).cast(pl.Boolean).fill_null(c == "is_opted_out") for c in cols}
            if label == "high value, reachable":
                e = b["is_high_value"] & ~b["is_opted_out"] & ~b["is_coupon_hunter"]
            else:
                e = b[cols[0]]
            exprs.append(e.sum().cast(pl.Int64).alias(label))
            rows.append((label, rule))
    if not exprs:
        return pl.DataFrame(schema={"pack": pl.String, "people": pl.Int64, "detail": pl.String})
    values = tags.select(exprs).collect().row(0, named=True)
    return pl.DataFrame(
        [{"pack": label, "people": int(values[label]), "detail": rule} for label, rule in rows],
        schema={"pack": pl.String, "people": pl.Int64, "detail": pl.String},
    )


def collect_report(workspace: str | Path | Workspace, week: str | None = None) -> ReportData:
    """Every aggregate the report shows for `week` (default: the latest built week).

    Raises DataError (one line) when the workspace has no built week or no such week.
    """
    ws = workspace if isinstance(workspace, Workspace) else open_workspace(workspace)
    label = ws.week(week)  # DataError when no week is built
    built = [w for w in ws.weeks if w <= label]
    previous = built[-2] if len(built) > 1 else None
    tags = ws.tags(label)
    names = tags.collect_schema().names()
    notes: dict[str, str] = {}

    stats = _identity_stats(ws, label)
    map_path = ws.layout.identity_of_week("one_id_map.parquet", label)
    one_id_map = pl.scan_parquet(map_path, glob=False) if map_path.is_file() else None
    funnel = linkage_funnel(one_id_map, stats)
    if not funnel:
        notes["linkage"] = "No identity statistics in this workspace (identity/stats.json)."

    people = int(tags.select(pl.len()).collect().item())
    summary: dict[str, Any] = {
        "people": people,
        "identifiers": stats.get("identifiers"),
        "linkage_rate": stats.get("linkage_rate"),
        "high_value": _flag_count(tags, names, "is_high_value"),
        "coupon_hunters": _flag_count(tags, names, "is_coupon_hunter"),
        # as the audience selection counts it: an unknown consent is an opt-out
        "opted_out": _flag_count(tags, names, "is_opted_out", null_as=True),
    }

    if "rfm_segment" in names:
        rfm = _value_counts(tags, "rfm_segment")
        order = _segment_order(rfm["rfm_segment"].to_list())
        rfm = rfm.sort(pl.col("rfm_segment").replace_strict(order, list(range(len(order)))))
    else:
        rfm = pl.DataFrame(schema={"rfm_segment": pl.String, "people": pl.Int64})
        notes["rfm"] = "The tag table has no rfm_segment column."

    movement = None
    if previous is None:
        notes["movement"] = (
            f"Only one week is built ({label}): there is no previous week to compare with yet."
        )
    elif "rfm_segment" in names:
        movement = ws.diff(previous, label).movement
        segs = _segment_order(
            movement["from"].to_list() + [c for c in movement.columns if c != "from"]
        )
        movement = movement.join(pl.DataFrame({"from": segs}), on="from", how="right").select(
            "from",
            *[
                (pl.col(s) if s in movement.columns else pl.lit(0))
                .fill_null(0)
                .cast(pl.Int64)
                .alias(s)
                for s in segs
            ],
        )

    nodes, edges = _interest_tables(ws, label, tags, names)
    if int(nodes["people"].sum()) == 0:
        notes["interests"] = "No interest signal in this week."

    clusters = _clusters(ws, label, tags, names)
    if clusters is None:
        notes["clusters"] = (
            "No cluster profiles for this week: clustering did not run or assigned nobody."
        )

    trend_rows = []
    for w in built:
        t = ws.tags(w)
        cols = t.collect_schema().names()
        n = int(t.select(pl.len()).collect().item())
        hunters = _flag_count(t, cols, "is_coupon_hunter")
        trend_rows.append(
            {
                "week": w,
                "people": n,
                "coupon_hunters": hunters,
                "share": (hunters / n) if (hunters is not None and n) else None,
            }
        )
    coupon_trend = pl.DataFrame(
        trend_rows,
        schema={
            "week": pl.String,
            "people": pl.Int64,
            "coupon_hunters": pl.Int64,
            "share": pl.Float64,
        },
    )
    if coupon_trend["coupon_hunters"].null_count() == coupon_trend.height:
        notes["coupon"] = "The tag tables have no is_coupon_hunter column."

    packs = _packs_from_log(ws.layout.read_export_log(), label)
    packs_source = "exports log"
    if packs is None:
        packs = _builtin_packs(tags, names)
        packs_source = "built-in filters"

    return ReportData(
        workspace=ws.root.resolve().name,
        week=label,
        previous_week=previous,
        weeks=built,
        as_of_end=Week.parse(label).end.isoformat(sep=" "),
        meta=_tags_meta(ws.tags_path(label)),
        summary=summary,
        funnel=funnel,
        rfm_sizes=rfm,
        movement=movement,
        interest_nodes=nodes,
        interest_edges=edges,
        clusters=clusters,
        coupon_trend=coupon_trend,
        packs=packs,
        packs_source=packs_source,
        notes=notes,
        learned_categories=_learned_categories(ws, label),
    )
