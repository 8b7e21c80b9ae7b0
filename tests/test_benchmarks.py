"""The CI-sized benchmark: runs `make bench` on a small population and records the ratios, so a
regression shows in benchmarks/results; it never fails on an absolute time. The DuckDB peer's
week (benchmarks/peer.py) is checked against R/F/M computed here in Polars from the raw files."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

ROOT = Path(__file__).parents[1]


def _bench(tmp_path: Path, docs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """benchmarks/run.py with `args`, its data, results and docs page under tmp_path."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            *args,
            *("--docs", str(docs), "--data", str(tmp_path / "data")),
            *("--results", str(tmp_path / "results")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_ci_sized_benchmark_records_its_ratios(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    docs.write_text(page, encoding="utf-8")
    done = _bench(tmp_path, docs, "--users", "1500")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "users-1500.json").read_text())
    ratios = results["side_by_side"]["ratios"]
    assert all(v > 0 for v in ratios.values())
    stages = {s["name"] for s in results["run"]["manifest"]["stages"]}
    assert {"ingest", "identity", "tags"} <= stages
    # the same week again reads every input file from the ingest cache
    cold, warm = results["run"]["manifest"], results["rerun_cached"]["manifest"]
    assert cold["input_files_from_cache"] == 0
    assert warm["input_files_from_cache"] == len(warm["inputs"]) > 0
    assert warm["tables"] == cold["tables"]
    assert results["rerun_cached"]["same_outputs"] is True  # byte-identical tags and map
    # the same week again folds nothing into the person state; the next week only W47's files
    assert sum(warm["state"]["rows_added"].values()) == 0
    fresh = results["fresh"]
    # Mon-Sat, Sunday to 18:00, the evening; and the last hour's events
    added = fresh["next_week"]["state"]["pieces_added"]
    assert added["events"] == 4 and added["messages"] == 3 and added["orders"] >= 3
    assert fresh["refresh_one_day"]["as_of"] == "2026-11-22"
    assert (
        0
        < sum(fresh["refresh_one_day"]["state"]["rows_added"].values())
        < sum(fresh["refresh_six_days"]["state"]["rows_added"].values())
    )
    # the first refresh after the week recomputes everyone; a new day the people with a row
    # on a window edge or in the delivery (the others aged from the day before); the evening
    # of the same day only the people it touched
    six, one, same = (fresh[k] for k in ("refresh_six_days", "refresh_one_day", "refresh_same_day"))
    assert six["people_recomputed"] == six["people"]
    assert 0 < one["people_recomputed"] < one["people"] and one["aged_from"] == "2026-11-21"
    assert same["as_of"] == "2026-11-22" and 0 < same["people_recomputed"] < same["people"]
    # events alone: the community graph and the phone counts are the version in force's
    events = fresh["refresh_events_only"]
    assert events["state"]["rows_added"]["orders"] == events["state"]["rows_added"]["messages"] == 0
    assert events["state"]["rows_added"]["events"] > 0
    assert 0 < events["people_recomputed"] < events["people"]
    community = next(s for s in events["stages"] if s["name"] == "community graph")
    assert (
        community["rows"]
        == 0
        < next(s["rows"] for s in same["stages"] if s["name"] == "community graph")
    )
    # its own section of the page, before the component table; the other sizes' untouched
    new = docs.read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN make bench users-1500 -->", "<!-- END make bench users-1500 -->"
    assert new.count(begin) == 1 and new.count(end) == 1
    assert new.index(end) < new.index("## Components, measured separately")
    assert new.replace(new[new.index(begin) : new.index(end) + len(end) + 2], "") == page
    # the DuckDB peer ran right after the cold build, over the same files
    peer = results["peer"]
    assert list(peer["seconds"]) == [
        *("ingest", "phones", "identity", "rfm", "affinity", "chat", "write")
    ]
    assert peer["wall_seconds"] >= sum(peer["seconds"].values()) > 0
    assert list(peer["cpu_seconds"]) == list(peer["seconds"])
    assert peer["engine_over_peer"] == round(
        results["run"]["wall_seconds"] / peer["wall_seconds"], 2
    )
    wide = pl.read_parquet(peer["wide"])
    assert wide.height == peer["people"] == wide["one_id"].n_unique() > 1000
    assert peer["rows"]["orders"] <= cold["tables"]["orders"]["read"]
    assert (
        "DuckDB peer (`benchmarks/peer.py`" in new
        and "| peer step | ingest |" in new
        and "| CPU seconds |" in new
    )
    print(json.dumps(ratios, indent=2))  # the figures land in the CI log


@pytest.mark.slow
def test_a_cold_only_people_shaped_benchmark_says_what_it_left_out(tmp_path: Path) -> None:
    done = _bench(
        tmp_path,
        tmp_path / "benchmarks.md",
        *("--users", "600", "--shape", "people", "--cold-only", "--no-peer"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "people-600.json").read_text())
    assert results["shape"] == "people" and results["users"] == 600
    assert "rerun_cached" not in results and "side_by_side" not in results
    assert "peer" not in results and not (tmp_path / "data" / "peer-people-600").exists()
    tables = results["run"]["manifest"]["tables"]
    # the people shape draws about 10 events per person (the demo's own mix: about 22)
    assert 4 * 600 < tables["events"]["read"] < 16 * 600
    page = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "`benchmarks/run.py --users 600 --shape people --cold-only --no-peer`" in page
    assert "A cold build only" in page and "Side by side" not in page
    assert "DuckDB peer" not in page
    # the child's progress went to a log beside the workspace
    assert (tmp_path / "data" / "workspace-people-600.log").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# The DuckDB peer's week, against Polars over the raw files

END = datetime(2026, 11, 23)  # the end of 2026-W47, the peer's default week


def _peer_module():
    spec = importlib.util.spec_from_file_location("peer", ROOT / "benchmarks" / "peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def peer_week(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("peer")
    # The demo never writes a taxonomy keyword in chat (tests/test_demo.py): one message that
    # does, from the archive's latest sender, gives the peer's keyword step something to find.
    inp = out / "input"
    shutil.copytree(demo_input, inp, ignore=shutil.ignore_patterns("truth"))
    archive = inp / "messages" / "wecom_archive.jsonl"
    last = json.loads(archive.read_text(encoding="utf-8").splitlines()[-1])
    said = {
        **last,
        "msgid": "kw-1",
        "tolist": [],
        "text": {"content": "周末露营，帐篷和睡袋都带上"},
    }
    (inp / "messages" / "zz_keywords.jsonl").write_text(
        json.dumps(said, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    result = _peer_module().run_peer(inp, out)
    result["id_map"] = pl.read_parquet(out / "identity_map.parquet")
    result["table"] = pl.read_parquet(out / "wide.parquet")
    return result


def _phone_sha256(raw: str | None) -> str | None:
    """The contract's phone rule, written again in plain Python for the oracle."""
    digits = "".join(c for c in (raw or "") if c.isdigit())
    if len(digits) == 15 and digits.startswith("0086"):
        digits = digits[4:]
    elif len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if len(digits) != 11 or digits[0] != "1" or digits[1] < "3":
        return None
    return hashlib.sha256(digits.encode()).hexdigest()


def _polars_rfm(input_dir: Path, id_map: pl.DataFrame, weeks: int | None) -> pl.DataFrame:
    """one_id, frequency, monetary over `weeks` weeks (None: all before the week's end),
    straight from the demo's two order files."""
    csv = pl.read_csv(input_dir / "orders" / "orders.csv", infer_schema=False)
    store = pl.read_parquet(input_dir / "orders" / "store_orders.parquet")
    # The demo writes `YYYY-MM-DD HH:MM:SS` or the same local time with `T` and `+08:00`.
    csv = csv.with_columns(
        pl.col("paid_at")
        .str.slice(0, 19)
        .str.replace("T", " ")
        .str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False),
        *(pl.col(c).cast(pl.Float64, strict=False) for c in ("amount", "refund")),
    )
    cols = ["source", "order_id", "buyer_id_type", "buyer_id", "paid_at", "amount", "refund"]
    orders = pl.concat(
        [
            csv.select(*cols, "status"),
            store.select(*cols, pl.col("status")).with_columns(
                pl.col("paid_at").cast(pl.Datetime("us"))
            ),
        ],
        how="vertical_relaxed",
    ).with_columns(pl.col("refund").fill_null(0.0), pl.col("status").fill_null("paid"))
    valid = (
        pl.col("order_id").is_not_null()
        & pl.col("paid_at").is_not_null()
        & (pl.col("amount") >= 0)
        & (pl.col("refund") <= pl.col("amount"))
        & pl.col("status").is_in(["paid", "refunded", "cancelled"])
    )
    orders = orders.filter(valid).unique(["source", "order_id"], keep="last", maintain_order=True)
    phone = pl.col("buyer_id").map_elements(_phone_sha256, return_dtype=pl.String)
    orders = orders.with_columns(
        buyer_id=pl.when(pl.col("buyer_id_type") == "phone").then(phone).otherwise("buyer_id"),
        buyer_id_type=pl.col("buyer_id_type").replace("phone", "phone_sha256"),
    ).filter(pl.col("buyer_id").is_not_null())
    kept = pl.col("amount") - pl.col("refund")
    counted = orders.filter(
        (pl.col("status") == "paid")
        & (kept > 0)
        & (pl.col("paid_at") < END)
        & (pl.col("paid_at") >= END - timedelta(weeks=weeks or 100_000))
    )
    return (
        counted.join(id_map, left_on=["buyer_id_type", "buyer_id"], right_on=["id_type", "id"])
        .group_by("one_id")
        .agg(
            pl.len().alias("frequency"),
            ((kept * 100).round().cast(pl.Int64).sum() / 100).alias("monetary"),
        )
    )


def test_the_peer_writes_one_row_per_person(peer_week: dict) -> None:
    table, id_map = peer_week["table"], peer_week["id_map"]
    # one row per connected component, and every identifier in exactly one of them
    assert table.height == peer_week["people"] == id_map["one_id"].n_unique() > 300
    assert table["one_id"].is_unique().all() and table["identifiers"].sum() == id_map.height
    assert id_map.select("id_type", "id").is_unique().all()
    assert "phone" not in id_map["id_type"].to_list()
    assert (
        id_map.filter(pl.col("id_type") == "phone_sha256")["id"]
        .str.contains("^[0-9a-f]{64}$")
        .all()
    )
    # the placeholder ids and the test phone are nobody
    assert not id_map["id"].is_in(["null", "0", "undefined", ""]).any()
    assert _phone_sha256("13800000000") not in id_map["id"].to_list()
    # windows nest, money is never negative, recency only for buyers
    for short, long in zip((1, 4, 13, 26, 52), (4, 13, 26, 52, "lifetime"), strict=True):
        long_name = "lifetime" if long == "lifetime" else f"{long}w"
        assert (table[f"frequency_{short}w"] <= table[f"frequency_{long_name}"]).all()
        assert (table[f"monetary_{short}w"] <= table[f"monetary_{long_name}"] + 1e-9).all()
    assert (table["monetary_lifetime"] >= 0).all()
    assert (table["recency_days"].is_null() == (table["frequency_lifetime"] == 0)).all()
    assert table.filter(pl.col("frequency_1w") > 0)["recency_days"].max() <= 6
    interests = [c for c in table.columns if c.startswith("interest_")]
    assert len(interests) >= 10
    assert all(table[c].is_between(0, 1).all() for c in interests)
    # the primary interest is the strongest one
    strongest = table.select(
        pl.concat_list(interests).list.arg_max().alias("i"), "primary_interest"
    )
    with_one = strongest.filter(pl.col("primary_interest").is_not_null())
    named = with_one["i"].map_elements(
        lambda i: interests[i][len("interest_") :], return_dtype=pl.String
    )
    assert (named == with_one["primary_interest"]).mean() > 0.99  # equal scores may tie
    # the one message with keywords (露营, 帐篷, 睡袋: three camping hits), no other
    assert table.select(pl.sum_horizontal(pl.col("^chat_.*$")).sum()).item() == 3
    assert table["chat_camping"].sum() == 3


@pytest.mark.parametrize(("window", "weeks"), [("52w", 52), ("13w", 13), ("lifetime", None)])
def test_the_peer_counts_what_polars_counts(
    peer_week: dict, demo_input: Path, window: str, weeks: int | None
) -> None:
    table = peer_week["table"]
    oracle = _polars_rfm(demo_input, peer_week["id_map"], weeks)
    f, m = f"frequency_{window}", f"monetary_{window}"
    got = table.select("one_id", f, m).join(oracle, on="one_id", how="left")
    got = got.with_columns(pl.col("frequency", "monetary").fill_null(0))
    assert oracle.height > 100 and got[f].sum() > 300
    assert (got[f] == got["frequency"]).all()
    assert ((got[m] - got["monetary"]).abs() < 0.005).all()


def test_the_peer_finds_the_planted_people(peer_week: dict, demo_input: Path) -> None:
    """No component mixes two of the demo's planted people (the parcel-station phone shared by
    30+ buyers must lose its edges), and most people are one component."""
    truth = pl.read_parquet(demo_input / "truth" / "identifiers.parquet")
    seen = peer_week["id_map"].join(truth, on=["id_type", "id"], how="inner")
    assert seen.height > 0.99 * peer_week["id_map"].height
    mixed = seen.group_by("one_id").agg(pl.col("person_id").n_unique().alias("n"))
    assert mixed["n"].max() == 1
    split = seen.group_by("person_id").agg(pl.col("one_id").n_unique().alias("k"))
    assert (split["k"] == 1).mean() > 0.9


HAND_ORDERS = """order_id,source,buyer_id_type,buyer_id,phone,paid_at,amount,discount,refund,status,category,sku,quantity
o1,tmall,taobao_ouid,AAbuyer0001,138 1234 5678,2026-11-20 10:00:00,100.00,0,0,paid,帐篷,,1
o2,tmall,taobao_ouid,AAbuyer0001,,2026-11-01T09:00:00+08:00,50.50,0,50.50,paid,帐篷,,1
o3,jd,jd_pin,jdA,+86 13812345678,2026-06-01 12:00:00,"1,200.50",0,0,,登山鞋,,1
o4,tmall,taobao_ouid,AAbuyer0001,,2026-11-21 08:00:00,30.00,0,0,paid,帐篷,,1
o5,tmall,taobao_ouid,AAbuyer0002,,2025-12-01 08:00:00,80.00,0,10.00,paid,鱼竿,,1
o6,tmall,taobao_ouid,AAbuyer0002,,2026-11-23 00:00:00,99.00,0,0,paid,鱼竿,,1
o7,tmall,taobao_ouid,AAbuyer0003,,2026-11-20 08:00:00,-5.00,0,0,paid,鱼竿,,1
o4,tmall,taobao_ouid,AAbuyer0001,,2026-11-21 08:00:00,30.00,0,30.00,refunded,帐篷,,1
"""


def test_the_peer_on_eight_orders_worked_out_by_hand(tmp_path: Path) -> None:
    """A: o1 (this week), o3 (same phone, June, "1,200.50"); o2 nets to 0, o4 was refunded by
    its later copy. B: o5 (80 - 10, December 2025); o6 is after the week. o7 is rejected."""
    (tmp_path / "in" / "orders").mkdir(parents=True)
    (tmp_path / "in" / "orders" / "orders.csv").write_text(HAND_ORDERS, encoding="utf-8")
    result = _peer_module().run_peer(tmp_path / "in", tmp_path / "out")
    assert result["people"] == 2 and result["rows"]["orders"] == 6
    table = pl.read_parquet(tmp_path / "out" / "wide.parquet").sort("identifiers")
    cols = ["identifiers", "recency_days", "frequency_1w", "frequency_13w", "frequency_52w"]
    cols += ["monetary_1w", "monetary_52w", "frequency_lifetime", "primary_interest"]
    assert table.select(cols).rows() == [
        (1, 356, 0, 0, 1, 0.0, 70.0, 1, "fishing"),
        (3, 2, 1, 1, 2, 100.0, 1300.5, 2, "camping"),
    ]
    id_map = pl.read_parquet(tmp_path / "out" / "identity_map.parquet")
    assert sorted(id_map["id_type"]) == ["jd_pin", "phone_sha256", "taobao_ouid", "taobao_ouid"]
    assert _phone_sha256("13812345678") in id_map["id"].to_list()


def test_the_floors_run_over_a_built_week(demo_input: Path, demo_run: Path) -> None:
    """`benchmarks/floors.py` reads the week's tag table with the configured cluster features
    (a derived one, active_recency_days, is computed from its columns, not looked up)."""
    spec = importlib.util.spec_from_file_location("floors", ROOT / "benchmarks" / "floors.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    got = module.floors(demo_input, demo_run, 3)
    assert {"ingest", "person state", "clusters", "write tags"} <= set(got)
    assert all(v >= 0 for v in got.values())
