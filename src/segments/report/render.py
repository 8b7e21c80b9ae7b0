"""The report's page: plotly figures of the aggregates, the CSS and the self-contained HTML document."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import polars as pl

from segments.io import write_text
from segments.report.collect import _INTEREST_ZH, NONE_KEY, ReportData, collect_report

FONT_FAMILY = '"Noto Sans CJK SC", "Microsoft YaHei", "PingFang SC", sans-serif'

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
                )
                + _learned_table(data.learned_categories),
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


def _learned_table(learned: pl.DataFrame) -> str:
    """The categories the taxonomy places nowhere that count for an interest this week."""
    if not learned.height:
        return ""
    rows = "".join(
        f"<tr><td>{_e(r['category'])}</td><td>{_e(r['label_zh'])} ({_e(r['interest'])})</td></tr>"
        for r in learned.iter_rows(named=True)
    )
    return (
        f'<p class="sub">{learned.height} categories the taxonomy does not name count for the '
        "interest their people lead with, learned this week (add a category to the taxonomy to "
        "place it yourself):</p><table><thead><tr><th>category</th><th>counts for</th></tr>"
        f"</thead><tbody>{rows}</tbody></table>"
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
