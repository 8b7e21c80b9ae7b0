"""The analysts' report: one self-contained, offline HTML page of a workspace's week (aggregates only).

```
>>> from segments.report import build_report                    # doctest: +SKIP
>>> build_report("out", week=None, to="report.html")            # doctest: +SKIP
PosixPath('report.html')
```

Sections: key figures, the OneID linkage funnel, RFM segment sizes and their week-over-week
movement, the interest graph, cluster profiles, the coupon-hunter trend and audience pack
sizes. The page embeds plotly.js once (no CDN, no network) and holds no timestamp of its own,
so the same workspace gives a byte-identical file. It holds only counts: no phone, no
identifier, no one_id.
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from segments.contract import COMMERCE_ID_TYPES, WECHAT_ID_TYPES
from segments.errors import DataError
from segments.io import write_text
from segments.tags import INTERESTS
from segments.weeks import Week
from segments.workspace import Workspace, open_workspace

FONT_FAMILY = '"Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif'
NONE_KEY = "(none)"

# Section id -> title, in page order. Tests and readers rely on these titles.
SECTIONS: dict[str, str] = {
    "summary": "Key figures",
    "linkage": "OneID linkage funnel",
    "rfm": "RFM segments",
    "movement": "RFM segment movement",
    "interests": "Interest graph",
    "clusters": "Cluster profiles",
    "coupon": "Coupon-hunter trend",
    "packs": "Audience pack sizes",
}

_PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "modeBarButtonsToRemove": ["sendDataToCloud"],
}
_INTEREST_ZH = dict(INTERESTS)


# ---------------------------------------------------------------------------------------------
# The aggregates


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


def _segment_order(values: list[str]) -> list[str]:
    try:
        from segments.stages.rfm import RFM_SEGMENTS

        canonical = [zh for _, zh in RFM_SEGMENTS.values()]
    except ImportError:  # pragma: no cover - rfm always ships
        canonical = []
    present = set(values)
    known = [s for s in canonical if s in present]
    rest = sorted(s for s in present if s not in canonical and s != NONE_KEY)
    return known + rest + ([NONE_KEY] if NONE_KEY in present else [])


def _tags_meta(path: Path) -> dict[str, str]:
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    out = {}
    for key in ("segments.engine_version", "segments.config_hash", "segments.registry_version"):
        value = raw.get(key.encode())
        if value is not None:
            out[key.removeprefix("segments.")] = value.decode("utf-8", errors="replace")
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
    )


# ---------------------------------------------------------------------------------------------
# The figures


def _layout(fig: Any, height: int, **kw: Any) -> Any:
    kw.setdefault("margin", {"l": 60, "r": 30, "t": 40, "b": 60})
    fig.update_layout(
        template="plotly_white", font={"family": FONT_FAMILY, "size": 13}, height=height, **kw
    )
    return fig


def _fig_funnel(data: ReportData) -> Any:
    import plotly.graph_objects as go

    labels = [s for s, _ in data.funnel]
    values = [v for _, v in data.funnel]
    people = dict(data.funnel).get("people (OneIDs)")
    text = []
    for label, value in data.funnel:
        if label == "identifiers" and people:
            text.append(f"{value:,} ({value / people:.1f} per person)")
        elif label != "people (OneIDs)" and people:
            text.append(f"{value:,} ({value / people:.1%} of people)")
        else:
            text.append(f"{value:,}")
    fig = go.Figure(
        go.Funnel(
            y=labels,
            x=values,
            text=text,
            textinfo="text",
            hovertemplate="%{y}: %{text}<extra></extra>",
            marker={
                "color": ["#9aa5b1", "#4c78a8", "#72b7b2", "#54a24b", "#e45756"][: len(values)]
            },
        )
    )
    return _layout(fig, 360, margin={"l": 200, "r": 30, "t": 20, "b": 20})


def _fig_rfm(data: ReportData) -> Any:
    import plotly.graph_objects as go

    df = data.rfm_sizes
    fig = go.Figure(
        go.Bar(
            x=df["rfm_segment"].to_list(),
            y=df["people"].to_list(),
            text=df["people"].to_list(),
            textposition="outside",
            marker_color="#4c78a8",
            hovertemplate="%{x}: %{y:,} people<extra></extra>",
        )
    )
    return _layout(fig, 380, yaxis_title="people", xaxis_title="rfm_segment")


def _fig_movement(data: ReportData) -> Any:
    import plotly.graph_objects as go

    assert data.movement is not None
    m = data.movement
    cols = [c for c in m.columns if c != "from"]
    z = [[int(v) for v in row] for row in m.select(cols).iter_rows()]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=m["from"].to_list(),
            colorscale="Blues",
            texttemplate="%{z}",
            hovertemplate="%{y} → %{x}: %{z:,} people<extra></extra>",
        )
    )
    return _layout(
        fig,
        520,
        xaxis_title=f"segment in {data.week}",
        yaxis_title=f"segment in {data.previous_week}",
        yaxis={"autorange": "reversed"},
        margin={"l": 130, "r": 30, "t": 20, "b": 110},
    )


def _fig_interests(data: ReportData) -> Any:
    import plotly.graph_objects as go

    nodes = data.interest_nodes
    n = nodes.height
    pos = {}
    for i, name in enumerate(nodes["interest"].to_list()):
        angle = math.pi / 2 - 2 * math.pi * i / max(n, 1)
        pos[name] = (round(math.cos(angle), 6), round(math.sin(angle), 6))
    traces = []
    edges = data.interest_edges
    max_lift = float(edges["lift"].max()) if edges.height else 1.0
    mid_x, mid_y, mid_text = [], [], []
    for a, b, co, lift in edges.select("interest_a", "interest_b", "co_count", "lift").iter_rows():
        if a not in pos or b not in pos:
            continue
        (x0, y0), (x1, y1) = pos[a], pos[b]
        width = 1.5 + 6.0 * ((lift - 1.0) / (max_lift - 1.0) if max_lift > 1.0 else 0.0)
        traces.append(
            go.Scatter(
                x=[x0, x1],
                y=[y0, y1],
                mode="lines",
                line={"width": round(width, 3), "color": "rgba(228,87,86,0.55)"},
                hoverinfo="skip",
                showlegend=False,
            )
        )
        mid_x.append(round((x0 + x1) / 2, 6))
        mid_y.append(round((y0 + y1) / 2, 6))
        both = f", {co:,} people with both" if co is not None else ""
        mid_text.append(
            f"{_INTEREST_ZH.get(a, a)} – {_INTEREST_ZH.get(b, b)}: lift {lift:.2f}{both}"
        )
    if mid_x:
        traces.append(
            go.Scatter(
                x=mid_x,
                y=mid_y,
                mode="markers",
                marker={"size": 8, "color": "rgba(228,87,86,0.0)"},
                hovertext=mid_text,
                hoverinfo="text",
                showlegend=False,
            )
        )
    people = nodes["people"].to_list()
    top = max(people) if people and max(people) > 0 else 1
    sizes = [round(14 + 46 * math.sqrt(p / top), 3) for p in people]
    names = nodes["interest"].to_list()
    zh = nodes["label_zh"].to_list()
    traces.append(
        go.Scatter(
            x=[pos[k][0] for k in names],
            y=[pos[k][1] for k in names],
            mode="markers+text",
            marker={"size": sizes, "color": "#4c78a8", "line": {"width": 1, "color": "white"}},
            text=[f"{z}<br>{k}" for z, k in zip(zh, names, strict=True)],
            textposition="top center",
            hovertext=[
                f"{z} ({k}): {p:,} people" for z, k, p in zip(zh, names, people, strict=True)
            ],
            hoverinfo="text",
            showlegend=False,
        )
    )
    fig = go.Figure(traces)
    axis = {"visible": False, "range": [-1.45, 1.45]}
    _layout(
        fig,
        620,
        xaxis=axis,
        yaxis={**axis, "scaleanchor": "x"},
        margin={"l": 20, "r": 20, "t": 20, "b": 20},
    )
    if not mid_x:
        fig.add_annotation(
            text="no pair of interests co-occurs above chance (lift > 1)",
            x=0,
            y=0,
            showarrow=False,
        )
    return fig


def _cluster_label(cluster: int, name: str | None) -> str:
    return f"{cluster} · {name}" if name else str(cluster)


def _fig_clusters(data: ReportData) -> Any:
    import plotly.graph_objects as go

    c = data.clusters
    assert c is not None
    labels = [
        _cluster_label(k, n)
        for k, n in zip(c["cluster"].to_list(), c["cluster_name"].to_list(), strict=True)
    ]
    share = c["share"].to_list()
    fig = go.Figure(
        go.Bar(
            y=labels,
            x=c["size"].to_list(),
            orientation="h",
            text=[f"{s:,} ({p:.1%})" for s, p in zip(c["size"].to_list(), share, strict=True)],
            textposition="auto",
            marker_color="#72b7b2",
            hovertemplate="%{y}: %{x:,} people<extra></extra>",
        )
    )
    return _layout(
        fig,
        max(260, 60 + 40 * c.height),
        xaxis_title="people",
        yaxis={"autorange": "reversed"},
        margin={"l": 220, "r": 30, "t": 20, "b": 50},
    )


def _fig_coupon(data: ReportData) -> Any:
    import plotly.graph_objects as go

    t = data.coupon_trend
    top = max((v for v in t["coupon_hunters"].to_list() if v is not None), default=0)
    fig = go.Figure(
        go.Scatter(
            x=t["week"].to_list(),
            y=t["coupon_hunters"].to_list(),
            mode="lines+markers+text",
            text=[f"{v:,}" if v is not None else "" for v in t["coupon_hunters"].to_list()],
            textposition="top center",
            line={"color": "#f58518"},
            customdata=[[s if s is not None else 0.0] for s in t["share"].to_list()],
            hovertemplate="%{x}: %{y:,} coupon hunters (%{customdata[0]:.1%} of people)<extra></extra>",
        )
    )
    return _layout(
        fig,
        340,
        xaxis={"type": "category", "title": "week"},
        yaxis={"title": "is_coupon_hunter", "range": [0, max(1, top) * 1.25]},
    )


def _fig_packs(data: ReportData) -> Any:
    import plotly.graph_objects as go

    p = data.packs
    fig = go.Figure(
        go.Bar(
            y=p["pack"].to_list(),
            x=p["people"].to_list(),
            orientation="h",
            text=[f"{v:,}" for v in p["people"].to_list()],
            textposition="auto",
            marker_color="#54a24b",
            hovertext=p["detail"].to_list(),
            hovertemplate="%{y}: %{x:,} people<br>%{hovertext}<extra></extra>",
        )
    )
    return _layout(
        fig,
        max(240, 60 + 36 * p.height),
        xaxis_title="people",
        yaxis={"autorange": "reversed"},
        margin={"l": 260, "r": 30, "t": 20, "b": 50},
    )


# ---------------------------------------------------------------------------------------------
# The page

_CSS = (
    "body { font-family: "
    + FONT_FAMILY
    + "; margin: 0; background: #f6f7f9; color: #1f2933; }"
    + """
main { max-width: 1200px; margin: 0 auto; padding: 24px 32px 48px; }
h1 { font-size: 26px; margin: 8px 0 4px; }
h2 { font-size: 20px; margin: 0 0 8px; }
.sub { color: #52606d; margin: 0 0 20px; }
section { background: white; border-radius: 8px; padding: 18px 22px; margin: 18px 0;
          box-shadow: 0 1px 3px rgba(0,0,0,0.08); }
.note { color: #7b8794; font-style: italic; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { flex: 1 1 150px; background: #f0f4f8; border-radius: 6px; padding: 10px 14px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: #52606d; font-size: 13px; }
table { border-collapse: collapse; margin-top: 10px; font-size: 13px; }
th, td { border-bottom: 1px solid #e4e7eb; padding: 4px 10px; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
footer { color: #7b8794; font-size: 12px; margin-top: 24px; }
"""
)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _figure_html(fig: Any, div_id: str) -> str:
    import plotly.io as pio

    height = int(fig.layout.height or 400)
    return pio.to_html(
        fig,
        include_plotlyjs=False,
        full_html=False,
        div_id=div_id,
        config=_PLOTLY_CONFIG,
        default_height=f"{height}px",
        default_width="100%",
    )


def _section(key: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="sub">{lead}</p>' if lead else ""
    return f'<section id="{key}">\n<h2>{_e(SECTIONS[key])}</h2>\n{lead_html}\n{body}\n</section>'


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _fmt(value: object, pct: bool = False) -> str:
    if value is None:
        return "–"
    if pct:
        return f"{float(value):.1%}"  # type: ignore[arg-type]
    return f"{int(value):,}"  # type: ignore[call-overload]


def render_report(data: ReportData) -> str:
    """The report page for `data`: one HTML document with plotly.js embedded once."""
    from plotly.offline import get_plotlyjs

    parts: list[str] = []
    s = data.summary
    cards = [
        ("people (OneIDs)", _fmt(s.get("people"))),
        ("identifiers", _fmt(s.get("identifiers"))),
        ("OneID linkage rate", _fmt(s.get("linkage_rate"), pct=True)),
        ("high value", _fmt(s.get("high_value"))),
        ("coupon hunters", _fmt(s.get("coupon_hunters"))),
        ("opted out", _fmt(s.get("opted_out"))),
    ]
    cards_html = (
        '<div class="cards">'
        + "".join(
            f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>'
            for k, v in cards
        )
        + "</div>"
    )
    parts.append(_section("summary", cards_html))

    if data.funnel:
        rate = s.get("linkage_rate")
        lead = (
            f"OneID rate: {_fmt(rate, pct=True)} of people hold both a commerce id and a WeChat id."
            if rate is not None
            else ""
        )
        parts.append(_section("linkage", _figure_html(_fig_funnel(data), "fig-linkage"), _e(lead)))
    else:
        parts.append(_section("linkage", _note(data.notes["linkage"])))

    if data.rfm_sizes.height:
        parts.append(
            _section(
                "rfm",
                _figure_html(_fig_rfm(data), "fig-rfm"),
                _e(f"People per rfm_segment in {data.week}; {NONE_KEY}: no counted order."),
            )
        )
    else:
        parts.append(_section("rfm", _note(data.notes.get("rfm", "No RFM segments."))))

    if data.movement is not None:
        parts.append(
            _section(
                "movement",
                _figure_html(_fig_movement(data), "fig-movement"),
                _e(
                    f"People by rfm_segment in {data.previous_week} (rows) and {data.week} "
                    f"(columns); {NONE_KEY}: no segment or not present that week."
                ),
            )
        )
    else:
        parts.append(_section("movement", _note(data.notes.get("movement", "No movement."))))

    if "interests" in data.notes:
        parts.append(_section("interests", _note(data.notes["interests"])))
    else:
        parts.append(
            _section(
                "interests",
                _figure_html(_fig_interests(data), "fig-interests"),
                _e(
                    "Nodes: interests, sized by people; edges: pairs that co-occur more often "
                    f"than chance (lift > 1), thicker for a higher lift ({data.interest_edges.height} "
                    "pairs)."
                ),
            )
        )

    if data.clusters is not None:
        table = _cluster_table(data.clusters)
        parts.append(
            _section("clusters", _figure_html(_fig_clusters(data), "fig-clusters") + table)
        )
    else:
        parts.append(_section("clusters", _note(data.notes["clusters"])))

    if "coupon" in data.notes:
        parts.append(_section("coupon", _note(data.notes["coupon"])))
    else:
        lead = f"People tagged is_coupon_hunter in each built week up to {data.week}."
        if len(data.weeks) == 1:
            lead += " Only one week is built so far."
        parts.append(_section("coupon", _figure_html(_fig_coupon(data), "fig-coupon"), _e(lead)))

    if data.packs.height:
        if data.packs_source == "exports log":
            lead = f"Final sizes of the packs exported for {data.week} (the latest export of each, from exports/log.jsonl)."
        else:
            lead = f"No pack was exported for {data.week}: sizes of built-in filters over the tag table."
        parts.append(_section("packs", _figure_html(_fig_packs(data), "fig-packs"), _e(lead)))
    else:
        parts.append(_section("packs", _note("No pack sizes: no export and no flag column.")))

    meta = ", ".join(f"{k} {v}" for k, v in sorted(data.meta.items()))
    footer = (
        f"Workspace {data.workspace}, week {data.week} (data before {data.as_of_end}). "
        f"Built weeks: {', '.join(data.weeks)}."
        + (f" Engine: {meta}." if meta else "")
        + " Aggregates only: no phone, identifier or OneID appears in this page."
    )
    title = f"segments report · {data.week}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n"
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<style>{_CSS}</style>\n"
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
        f'<script type="text/javascript" id="plotlyjs">{get_plotlyjs()}</script>\n'
        "</head>\n<body>\n<main>\n"
        f"<h1>{_e(title)}</h1>\n"
        f'<p class="sub">Workspace {_e(data.workspace)} · week {_e(data.week)} · '
        f"data before {_e(data.as_of_end)}</p>\n" + "\n".join(parts) + "\n"
        f"<footer>{_e(footer)}</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def _cluster_table(c: pl.DataFrame) -> str:
    head = ["cluster", "name", "people", "share"] + (
        ["top lifecycle"] if "top_lifecycle" in c.columns else []
    )
    rows = []
    for r in c.iter_rows(named=True):
        cells = [
            f"<td>{_e(r['cluster'])}</td>",
            f"<td>{_e(r.get('cluster_name') or '')}</td>",
            f'<td class="n">{r["size"]:,}</td>',
            f'<td class="n">{(r.get("share") or 0.0):.1%}</td>',
        ]
        if "top_lifecycle" in c.columns:
            cells.append(f"<td>{_e(r.get('top_lifecycle') or '')}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        "<table><thead><tr>"
        + "".join(f"<th>{_e(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def build_report(
    workspace: str | Path, week: str | None = None, to: str | Path = "report.html"
) -> Path:
    """Write the report of `workspace`'s `week` (default: the latest built) to `to`, atomically.

    One self-contained HTML file (plotly.js embedded, no network) of aggregates only; the same
    workspace gives the same bytes. Raises DataError when the workspace has no built week.
    """
    data = collect_report(workspace, week)
    return write_text(render_report(data), Path(to))


__all__ = [
    "SECTIONS",
    "ReportData",
    "build_report",
    "collect_report",
    "linkage_funnel",
    "render_report",
]
