"""The HTML report: hand-computed aggregates on a tiny workspace, the page's safety (offline, no
identifier), and a real render in headless Chromium on a two-week demo workspace."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from segments.cli.report import report as report_command
from segments.errors import DataError
from segments.report import SECTIONS, build_report, collect_report, linkage_funnel

W46, W47 = "2026-W46", "2026-W47"
PHONE_RE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
EXTERNAL_SRC = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//",
    re.IGNORECASE,
)
PLOTLY_DIV = re.compile(r'<div id="(fig-[a-z]+)" class="plotly-graph-div"')

# ---------------------------------------------------------------------------------------------
# A tiny workspace whose every figure is computed by hand in the tests below.
#
#   person  ids                                       W46 segment   W47 segment   W47 flags
#   U1      taobao_ouid + unionid          (linked)   重要价值客户   重要价值客户   hv
#   U2      phone on an order + openid     (linked)   一般发展客户   重要价值客户   hv, hunter, opted out
#   U3      phone (not on an order) + wecom           (none)         一般发展客户   hunter
#   U4      jd_pin                                    一般挽留客户   (none)         consent unknown
#   U5      member_id x2                              -- absent --   一般发展客户

MAP = pl.DataFrame(
    {
        "one_id": ["U1", "U1", "U2", "U2", "U3", "U3", "U4", "U5", "U5"],
        "id_type": [
            "taobao_ouid",
            "unionid",
            "phone_sha256",
            "openid",
            "phone_sha256",
            "wecom_external_userid",
            "jd_pin",
            "member_id",
            "member_id",
        ],
        "id": [
            "ouidSECRET01",
            "unionSECRET01",
            "a" * 64,
            "openidSECRET02",
            "b" * 64,
            "wecomSECRET03",
            "jdpinSECRET04",
            "memberSECRET05",
            "memberSECRET05b",
        ],
        "sources": [
            ["orders:tmall"],
            ["identities:wecom"],
            ["orders:tmall", "identities:loyalty"],
            ["events"],
            ["identities:wecom"],
            ["messages"],
            ["orders:jd"],
            ["identities:loyalty"],
            ["orders:store"],
        ],
    }
)
STATS = {"identifiers": 9, "people": 5, "linked_people": 2, "linkage_rate": 0.4}

TAGS_46 = pl.DataFrame(
    {
        "one_id": ["U1", "U2", "U3", "U4"],
        "rfm_segment": ["重要价值客户", "一般发展客户", None, "一般挽留客户"],
        "is_high_value": [True, False, False, False],
        "is_coupon_hunter": [True, False, False, None],
        "is_opted_out": [False, False, False, False],
    }
)
TAGS_47 = pl.DataFrame(
    {
        "one_id": ["U1", "U2", "U3", "U4", "U5"],
        "rfm_segment": ["重要价值客户", "重要价值客户", "一般发展客户", None, "一般发展客户"],
        "is_high_value": [True, True, False, False, False],
        "is_coupon_hunter": [False, True, True, False, False],
        "is_opted_out": [False, True, False, None, False],
        "interests": [["camping", "hiking"], ["camping"], [], None, ["hiking", "climbing"]],
        "cluster": [0, 0, 1, None, 1],
        "cluster_name": ["露营家庭", "露营家庭", "城市新客", None, "城市新客"],
    },
    schema_overrides={"cluster": pl.Int32},
)
GRAPH = pl.DataFrame(
    {
        "interest_a": ["camping", "hiking", "camping"],
        "interest_b": ["hiking", "climbing", "climbing"],
        "co_count": [1, 1, 0],
        "count_a": [2, 2, 2],
        "count_b": [2, 1, 1],
        "lift": [1.25, 2.5, 0.0],
        "jaccard": [1 / 3, 0.5, 0.0],
    }
)


def _write_week(root: Path, week: str, tags: pl.DataFrame) -> None:
    folder = root / "weeks" / week
    folder.mkdir(parents=True, exist_ok=True)
    tags.write_parquet(folder / "tags.parquet")


def _tiny(root: Path, weeks: tuple[str, ...] = (W46, W47)) -> Path:
    if W46 in weeks:
        _write_week(root, W46, TAGS_46)
    if W47 in weeks:
        _write_week(root, W47, TAGS_47)
        GRAPH.write_parquet(root / "weeks" / W47 / "interest_graph.parquet")
    ident = root / "identity"
    for folder in (ident, *(ident / "history" / w for w in weeks)):
        folder.mkdir(parents=True, exist_ok=True)
        MAP.write_parquet(folder / "one_id_map.parquet")
        (folder / "stats.json").write_text(json.dumps(STATS))
    return root


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return _tiny(tmp_path / "out")


def _log(root: Path, records: list[dict], torn: bool = False) -> None:
    path = root / "exports" / "log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    path.write_text(text + ('{"pack": "torn' if torn else ""))


# ---------------------------------------------------------------------------------------------
# Aggregates


def test_linkage_funnel_counts_commerce_wechat_and_linked_people_by_hand() -> None:
    funnel = linkage_funnel(MAP.lazy(), STATS)
    assert funnel == [
        ("identifiers", 9),
        ("people (OneIDs)", 5),
        ("with a commerce id", 4),  # U1 ouid, U2 phone on an order, U4 jd_pin, U5 member_id
        ("with a WeChat id", 3),  # U1 unionid, U2 openid, U3 wecom
        ("linked (commerce + WeChat)", 2),  # U1, U2: equals the identity stage's linked_people
    ]
    # Without the map, the stats alone still give a funnel.
    assert linkage_funnel(None, STATS) == [
        ("identifiers", 9),
        ("people (OneIDs)", 5),
        ("linked (commerce + WeChat)", 2),
    ]


def test_collect_report_hand_computed(tiny: Path) -> None:
    data = collect_report(tiny)
    assert data.week == W47 and data.previous_week == W46 and data.weeks == [W46, W47]
    assert data.summary == {
        "people": 5,
        "identifiers": 9,
        "linkage_rate": 0.4,
        "high_value": 2,
        "coupon_hunters": 2,
        "opted_out": 2,  # U2, and U4 whose consent is unknown
    }
    # RFM sizes, in the canonical segment order, (none) last.
    assert data.rfm_sizes.rows() == [("重要价值客户", 2), ("一般发展客户", 2), ("(none)", 1)]
    # Movement W46 -> W47: rows and columns cover every segment of either week, zeros included.
    m = data.movement
    assert m is not None
    assert m.columns == ["from", "重要价值客户", "一般发展客户", "一般挽留客户", "(none)"]
    assert m.rows() == [
        ("重要价值客户", 1, 0, 0, 0),  # U1 stayed
        ("一般发展客户", 1, 0, 0, 0),  # U2 moved up
        ("一般挽留客户", 0, 0, 0, 1),  # U4 lost its segment
        ("(none)", 0, 2, 0, 0),  # U3 had none, U5 was absent
    ]
    assert int(m.drop("from").sum_horizontal().sum()) == 5
    # Interest graph: only pairs with lift > 1, strongest first; node sizes from the graph.
    assert data.interest_edges.rows() == [
        ("hiking", "climbing", 1, 2.5),
        ("camping", "hiking", 1, 1.25),
    ]
    people = dict(data.interest_nodes.select("interest", "people").iter_rows())
    assert people["camping"] == 2 and people["hiking"] == 2 and people["climbing"] == 1
    assert people["skiing"] == 0 and data.interest_nodes.height == 11
    assert dict(data.interest_nodes.select("interest", "label_zh").iter_rows())["camping"] == "露营"
    # Clusters from the tag columns (no clusters.parquet).
    assert data.clusters is not None
    assert data.clusters.select("cluster", "cluster_name", "size").rows() == [
        (0, "露营家庭", 2),
        (1, "城市新客", 2),
    ]
    assert data.clusters["share"].to_list() == [0.4, 0.4]
    # Coupon hunters per built week (a null flag is not a hunter).
    assert data.coupon_trend.select("week", "people", "coupon_hunters").rows() == [
        (W46, 4, 1),
        (W47, 5, 2),
    ]
    # No exports log: built-in filters over the tags.
    assert data.packs_source == "built-in filters"
    assert data.packs.select("pack", "people").rows() == [
        ("high value", 2),
        ("high value, reachable", 1),  # U2 is opted out and a coupon hunter
        ("coupon hunters (exclusion list)", 2),
        ("opted out (never exported)", 2),
    ]


def test_the_categories_a_week_learned_are_listed_and_never_show_a_phone(tiny: Path) -> None:
    state = tiny / "weeks" / W47 / "state"
    state.mkdir(parents=True, exist_ok=True)
    learned = {"ZX-Dome 2P": "camping", "Carbon Pole": "fishing", "13812345678": "hiking"}
    (state / "interests.json").write_text(json.dumps({"category_map": learned}))
    data = collect_report(tiny)
    assert data.learned_categories.rows() == [
        ("ZX-Dome 2P", "camping", "露营"),
        ("Carbon Pole", "fishing", "钓鱼"),
        ("<phone>", "hiking", "徒步登山"),
    ]
    page = build_report(tiny, to=tiny / "r.html").read_text()
    assert "ZX-Dome 2P" in page and "钓鱼 (fishing)" in page and "3 categories" in page
    assert "13812345678" not in page
    # a week with no learned categories (W46 has no interests.json) lists none
    assert collect_report(tiny, W46).learned_categories.height == 0
    # a damaged file is one clear line, not a traceback
    (state / "interests.json").write_text("{")
    with pytest.raises(DataError, match=r"interests\.json: cannot read"):
        collect_report(tiny)
    (state / "interests.json").write_text(json.dumps({"category_map": learned}))
    assert (
        "categories the taxonomy does not name"
        not in build_report(tiny, W46, to=tiny / "r46.html").read_text()
    )


def test_an_earlier_week_has_no_previous_week(tiny: Path) -> None:
    data = collect_report(tiny, "2026-11-15")  # a date inside W46
    assert data.week == W46 and data.previous_week is None and data.weeks == [W46]
    assert data.movement is None
    assert "Only one week is built" in data.notes["movement"]
    # W46 has no interest or cluster column: those sections say so instead of failing.
    assert data.clusters is None and "clusters" in data.notes
    assert "interests" in data.notes
    assert data.coupon_trend["coupon_hunters"].to_list() == [1]
    html = build_report(tiny, W46, to=tiny / "w46.html").read_text(encoding="utf-8")
    assert "Only one week is built (2026-W46)" in html and 'id="fig-movement"' not in html
    assert 'id="fig-rfm"' in html and 'id="fig-coupon"' in html


def test_exports_log_gives_the_latest_final_size_of_each_pack_of_the_week(tiny: Path) -> None:
    _log(
        tiny,
        [
            {"pack": "high_value", "week": W46, "platform": "tencent", "counts": {"final": 99}},
            {
                "pack": "high_value",
                "week": W47,
                "platform": "tencent",
                "counts": {"matched": 30, "final": 10},
            },
            {"pack": "coupon_hunters", "week": W47, "platform": "alimama", "counts": {"final": 3}},
            {
                "pack": "high_value",
                "week": W47,
                "platform": "oceanengine",
                "counts": {"matched": 30, "final": 12},
                "holdout_size": 2,
            },
        ],
        torn=True,
    )
    data = collect_report(tiny)
    assert data.packs_source == "exports log"
    assert data.packs.rows() == [
        ("coupon_hunters", 3, "exported to alimama"),
        ("high_value", 12, "exported to oceanengine; matched 30; held out 2"),
    ]
    # W46 has its own record; a week with none falls back to the built-in filters.
    assert collect_report(tiny, W46).packs.rows()[0][:2] == ("high_value", 99)
    _log(tiny, [{"pack": "x", "week": "2026-W40", "counts": {"final": 1}}])
    assert collect_report(tiny).packs_source == "built-in filters"


def test_clusters_parquet_is_preferred_and_all_null_clusters_are_skipped(tiny: Path) -> None:
    pl.DataFrame(
        {
            "cluster": pl.Series([0, 1, 2], dtype=pl.Int32),
            "cluster_name": ["高价值露营", "城市新客", "沉睡老客"],
            "cluster_key": ["a", "b", "c"],
            "size": [3, 1, 1],
            "share": [0.6, 0.2, 0.2],
            "top_lifecycle": ["active", "new", "churned"],
            "mean_monetary_52w": [1.0, 2.0, 3.0],
        }
    ).write_parquet(tiny / "weeks" / W47 / "clusters.parquet")
    data = collect_report(tiny)
    assert data.clusters is not None
    assert data.clusters.rows() == [
        (0, "高价值露营", 3, 0.6, "active"),
        (1, "城市新客", 1, 0.2, "new"),
        (2, "沉睡老客", 1, 0.2, "churned"),
    ]
    html = build_report(tiny, to=tiny / "r.html").read_text(encoding="utf-8")
    assert "高价值露营" in html and "<td>churned</td>" in html

    (tiny / "weeks" / W47 / "clusters.parquet").unlink()
    _write_week(
        tiny,
        W47,
        TAGS_47.with_columns(
            pl.lit(None, pl.Int32).alias("cluster"), pl.lit(None, pl.String).alias("cluster_name")
        ),
    )
    data = collect_report(tiny)
    assert data.clusters is None
    html = build_report(tiny, to=tiny / "r.html").read_text(encoding="utf-8")
    assert 'id="fig-clusters"' not in html and "No cluster profiles" in html


# ---------------------------------------------------------------------------------------------
# The page


def _page_text(html: str) -> str:
    """The page without the embedded plotly.js library (whose minified code is not ours)."""
    start = html.index('<script type="text/javascript" id="plotlyjs">')
    end = html.index("</script>", start)
    return html[:start] + html[end:]


def test_report_page_is_offline_complete_and_free_of_identifiers(tiny: Path) -> None:
    out = build_report(tiny, to=tiny / "reports" / "week.html")
    assert out == tiny / "reports" / "week.html"
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not EXTERNAL_SRC.search(html), EXTERNAL_SRC.search(html)
    for bad in ('<script src="https://cdn.plot.ly/x.js">', "<link rel=stylesheet href=//f.cn/a>"):
        assert EXTERNAL_SRC.search(bad)  # the check itself does see a network source
    # plotly.js is embedded exactly once, and every chart is drawn by it.
    assert html.count('id="plotlyjs"') == 1 and len(html) > 3_000_000
    assert "cdn.plot.ly" not in _page_text(html)
    divs = PLOTLY_DIV.findall(html)
    assert divs == [
        "fig-linkage",
        "fig-rfm",
        "fig-movement",
        "fig-interests",
        "fig-clusters",
        "fig-coupon",
        "fig-packs",
    ]
    for div in divs:
        assert re.search(r'Plotly\.newPlot\(\s*"' + div + '"', html), div
    for title in SECTIONS.values():
        assert f">{title}</h2>" in html
    # Chinese labels go into the charts' data (JSON-escaped), with a CJK font stack.
    for label in ("重要价值客户", "露营", "露营家庭"):
        assert json.dumps(label)[1:-1] in html, label
    assert "Noto Sans CJK SC" in html
    # Aggregates only: no identifier, no one_id, no phone.
    for value in [*MAP["id"].to_list(), "U1", "U5"]:
        assert value not in _page_text(html), value
    assert not PHONE_RE.search(_page_text(html))
    # Nothing left beside it (atomic write).
    assert sorted(p.name for p in out.parent.iterdir()) == ["week.html"]


def test_report_is_deterministic(tiny: Path) -> None:
    a = build_report(tiny, to=tiny / "a.html").read_bytes()
    b = build_report(tiny, W47, to=tiny / "b.html").read_bytes()
    assert a == b


def test_no_weeks_is_a_one_line_data_error(tmp_path: Path) -> None:
    empty = tmp_path / "out"
    (empty / "weeks").mkdir(parents=True)
    with pytest.raises(DataError, match="no weekly tag table") as err:
        build_report(empty, to=tmp_path / "r.html")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(DataError, match="no such workspace"):
        build_report(tmp_path / "missing", to=tmp_path / "r.html")
    with pytest.raises(DataError, match="no tags for 2026-W10"):
        build_report(_tiny(tmp_path / "ws"), "2026-W10", to=tmp_path / "r.html")


def test_cli_report(tiny: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    to = tmp_path / "r.html"
    res = runner.invoke(report_command, ["--workspace", str(tiny), "--to", str(to)])
    assert res.exit_code == 0, res.output
    assert f"report {W47} (movement since {W46}) -> {to}" in res.output
    assert "5 people" in res.output
    assert to.read_bytes() == build_report(tiny, to=tmp_path / "lib.html").read_bytes()

    res = runner.invoke(
        report_command, ["--workspace", str(tiny), "--week", W46, "--to", str(tmp_path / "46.html")]
    )
    assert res.exit_code == 0 and f"report {W46} -> " in res.output

    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(
        report_command, ["--workspace", str(empty), "--to", str(tmp_path / "x.html")]
    )
    assert res.exit_code == DataError.exit_code
    assert res.output.strip().startswith("DataError:") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.html").exists()


# ---------------------------------------------------------------------------------------------
# A real two-week demo workspace, rendered in headless Chromium


@pytest.fixture(scope="module")
def two_weeks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from segments import demo, pipeline
    from segments.config import load_config

    base = tmp_path_factory.mktemp("report")
    demo.generate(base / "input", users=500, seed=5)
    cfg = load_config()
    for as_of in ("2026-11-15", "2026-11-22"):
        pipeline.run(cfg, base / "input", base / "out", as_of=as_of)
    return base / "input", base / "out"


def _raw_phones(input_dir: Path) -> set[str]:
    phones: set[str] = set()
    orders = pl.read_csv(input_dir / "orders" / "orders.csv", infer_schema=False)
    phones |= set(orders["phone"].drop_nulls().to_list())
    links = pl.read_csv(input_dir / "identities" / "links.csv", infer_schema=False)
    for side in ("a", "b"):
        phones |= set(links.filter(pl.col(f"id_type_{side}") == "phone")[f"id_{side}"].to_list())
    # The raw strings and their 11 digits, for every value that holds a mainland mobile number.
    out: set[str] = set()
    for p in phones:
        digits = PHONE_RE.search(re.sub(r"\D", "", p or "")[-11:])
        if digits:
            out |= {p, digits.group(0)}
    return out


@pytest.mark.slow
def test_report_of_a_real_workspace(two_weeks: tuple[Path, Path], tmp_path: Path) -> None:
    input_dir, out = two_weeks
    data = collect_report(out)
    assert (data.previous_week, data.week) == (W46, W47)
    stats = json.loads((out / "identity" / "history" / W47 / "stats.json").read_text())
    funnel = dict(data.funnel)
    assert funnel["identifiers"] == stats["identifiers"]
    assert funnel["people (OneIDs)"] == stats["people"]
    assert funnel["linked (commerce + WeChat)"] == stats["linked_people"]
    tags = pl.read_parquet(out / "weeks" / W47 / "tags.parquet")
    assert int(data.rfm_sizes["people"].sum()) == tags.height
    assert data.coupon_trend["coupon_hunters"].to_list() == [
        int(pl.read_parquet(out / "weeks" / w / "tags.parquet")["is_coupon_hunter"].sum())
        for w in (W46, W47)
    ]
    assert data.movement is not None and data.movement.height >= 2

    html = build_report(out, to=tmp_path / "report.html").read_text(encoding="utf-8")
    assert not EXTERNAL_SRC.search(html)
    for title in SECTIONS.values():
        assert f">{title}</h2>" in html
    assert not PHONE_RE.search(_page_text(html))
    phones = _raw_phones(input_dir)
    assert phones, "the demo should carry raw phones for this check to mean something"
    assert not any(p in html for p in phones)
    one_ids = tags["one_id"].to_list()
    page = _page_text(html)
    assert not any(i in page for i in one_ids)
    ids = pl.read_parquet(out / "identity" / "one_id_map.parquet")["id"].to_list()
    assert not any(i in page for i in ids if len(i) >= 8)


# -- headless Chromium


def _apt_install(*packages: str) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", *packages]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
        if proc.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-500:]}")


def _has_cjk_font() -> bool:
    if not shutil.which("fc-list"):
        return False
    proc = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True)
    return bool(proc.stdout.strip())


@pytest.fixture(scope="session")
def chromium() -> str:
    exe = Path("/usr/bin/chromium")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    missing = [] if exe.exists() else ["chromium"]
    if not _has_cjk_font():
        missing += ["fonts-noto-cjk", "fontconfig"]  # without it Chinese labels render as boxes
    if missing:
        if not root:
            pytest.skip(
                f"headless rendering needs Debian's {' and '.join(missing)} (/usr/bin/chromium, a "
                "CJK font); not root, so they cannot be apt-get installed here"
            )
        _apt_install(*missing)
    assert exe.exists() and _has_cjk_font()
    return str(exe)


def _run_chromium(exe: str, page: Path, profile: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=20000",
        *extra,
        page.resolve().as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


# Records every error the page raises into <pre id="js-errors">, which --dump-dom then shows.
_ERROR_HOOK = """<script>
window.__errs = [];
function __rec(m) { window.__errs.push(String(m));
  var e = document.getElementById('js-errors'); if (e) { e.textContent = window.__errs.join('\\n'); } }
window.addEventListener('error', function (ev) { __rec('error: ' + ev.message); });
window.addEventListener('unhandledrejection', function (ev) { __rec('rejection: ' + ev.reason); });
(function () { var ce = console.error; console.error = function () {
  __rec('console.error: ' + Array.prototype.join.call(arguments, ' ')); ce.apply(console, arguments); }; })();
document.addEventListener('DOMContentLoaded', function () { var e = document.createElement('pre');
  e.id = 'js-errors'; e.textContent = window.__errs.join('\\n'); document.body.appendChild(e); });
</script>"""


def _render_problems(exe: str, page: Path, work: Path) -> tuple[list[str], list[str]]:
    """(plotly divs that did not render, errors) of `page` loaded in headless Chromium."""
    hooked = work / f"hooked-{page.name}"
    hooked.write_text(
        page.read_text(encoding="utf-8").replace("<head>", "<head>\n" + _ERROR_HOOK, 1),
        encoding="utf-8",
    )
    proc = _run_chromium(exe, hooked, work / f"profile-{page.stem}", "--dump-dom")
    dom = proc.stdout
    errors = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    hook = re.search(r'<pre id="js-errors">(.*?)</pre>', dom, re.DOTALL)
    if hook is None:
        errors.append("the error hook did not run (no <pre id=js-errors> in the DOM)")
    elif hook.group(1).strip():
        errors.append(hook.group(1).strip())
    starts = [(m.start(), m.group(1)) for m in re.finditer(r'<div id="(fig-[a-z]+)"', dom)]
    if not starts:
        errors.append("no chart div in the DOM")
    unrendered = []
    for i, (pos, name) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(dom)
        if not re.search(r'<svg[^>]*class="main-svg"', dom[pos:end]):
            unrendered.append(name)
    return unrendered, errors


@pytest.mark.slow
def test_render_check_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    """The render check itself can fail: an undrawn chart and a script error are both caught."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        '<div id="fig-never" class="plotly-graph-div"></div>'
        "<script>console.error('boom'); notAFunction();</script></body></html>"
    )
    unrendered, errors = _render_problems(chromium, page, tmp_path)
    assert unrendered == ["fig-never"]
    text = "\n".join(errors)
    assert "boom" in text and "notAFunction" in text


@pytest.mark.slow
def test_report_renders_in_headless_chromium(
    chromium: str, two_weeks: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = two_weeks
    page = build_report(out, to=tmp_path / "report.html")
    expected = PLOTLY_DIV.findall(page.read_text(encoding="utf-8"))
    assert {"fig-linkage", "fig-rfm", "fig-movement", "fig-interests", "fig-coupon"} <= set(
        expected
    )
    unrendered, errors = _render_problems(chromium, page, tmp_path)
    assert unrendered == [] and errors == [], (unrendered, errors)

    shot = tmp_path / "report.png"
    _run_chromium(
        chromium, page, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1400,4000"
    )
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert (width, height) == (1400, 4000)
    assert len(png) > 100_000  # a blank page is a few kB; charts and text make it far larger
    if os.environ.get("SEGMENTS_REPORT_SCREENSHOT"):  # to look at it: set a path
        shutil.copy(shot, os.environ["SEGMENTS_REPORT_SCREENSHOT"])
