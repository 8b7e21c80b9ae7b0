"""Resource limits: a 10 MB chat message, one person with a million events, and a phone shared by
100k buyers each go through `segments run` in a child process without crashing, with bounded
peak memory, and (for the hub) with the cut reported."""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from segments import demo
from segments.weeks import Week

pytestmark = pytest.mark.slow

WEEK = Week.parse("2026-W47")
MAX_GROWTH_KIB = 3 * 1024 * 1024  # 3 GB of peak RSS above the child's RSS after its imports
# The child: import everything, note its RSS, run, note the peak. ru_maxrss is in KiB on Linux.
CHILD = """
import json, resource, sys, time
from pathlib import Path
from segments import pipeline
from segments.config import load_config
cfg = load_config()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
[r] = pipeline.run(cfg, Path(sys.argv[1]), Path(sys.argv[2]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "seconds": time.perf_counter() - t0,
                  "summary": r.summary()}, default=str))
"""


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("limits") / "demo"
    demo.generate(out, users=60, seed=3)
    return out


def _input(small_demo: Path, tmp_path: Path) -> Path:
    inp = tmp_path / "input"
    shutil.copytree(small_demo, inp, ignore=shutil.ignore_patterns("truth"))
    return inp


def run_child(inp: Path, out: Path) -> dict:
    """`pipeline.run` in a fresh interpreter; its peak RSS growth, seconds and summary."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(inp), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["growth_kib"] = report["peak_kib"] - report["base_kib"]
    # the parent's view of the same child, as a cross-check of the child's own numbers
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert children >= report["peak_kib"] * 0.9
    return report


def _random_times(rng: np.random.Generator, n: int) -> np.ndarray:
    start = np.datetime64("2025-01-01T00:00:00", "us")
    span = int((np.datetime64(WEEK.end, "us") - start).astype(np.int64))
    return start + rng.integers(0, span, n).astype("timedelta64[us]")


def test_a_10mb_chat_message(small_demo: Path, tmp_path: Path) -> None:
    inp = _input(small_demo, tmp_path)
    first = json.loads((inp / "messages" / "wecom_archive.jsonl").read_text().splitlines()[0])
    text = ("周末去营地过夜，帐篷和睡袋都带上。" * 700_000)[:10_000_000]
    line = {
        "msgid": "big-1",
        "action": "send",
        "from": first["from"],
        "tolist": [],
        "roomid": first["roomid"],
        "msgtime": 1763600000000,  # 2025-11-20, inside the demo's window
        "msgtype": "text",
        "text": {"content": text},
    }
    (inp / "messages" / "zz_big.jsonl").write_text(
        json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    out = tmp_path / "out"
    report = run_child(inp, out)
    assert report["growth_kib"] < MAX_GROWTH_KIB
    messages = report["summary"]["tables"]["messages"]
    assert messages["rejected"] == 0 and messages["accepted"] >= 2
    # the text itself is not copied into any output
    biggest = max(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert biggest < 5_000_000


def test_one_person_with_a_million_events(small_demo: Path, tmp_path: Path) -> None:
    inp = _input(small_demo, tmp_path)
    n = 1_000_000
    rng = np.random.default_rng(1)
    kinds = np.array(["view", "search", "add_cart", "favorite", "share", "checkin", "live_view"])
    events = pl.DataFrame(
        {
            "user_id_type": "unionid",
            "user_id": "oHEAVYUSER00000000000001",
            "ts": _random_times(rng, n),
            "event": kinds[rng.integers(0, len(kinds), n)],
            "category": np.array(["帐篷", "睡袋", "登山鞋", "冲锋衣"])[rng.integers(0, 4, n)],
            "item_id": rng.integers(0, 5000, n).astype(str),
            "event_id": np.char.add("heavy-", np.arange(n).astype(str)),
        }
    )
    events.write_parquet(inp / "events" / "zz_heavy.parquet")
    out = tmp_path / "out"
    report = run_child(inp, out)
    assert report["growth_kib"] < MAX_GROWTH_KIB
    assert report["summary"]["tables"]["events"]["accepted"] >= n

    id_map = pl.read_parquet(out / "identity" / "one_id_map.parquet")
    [one_id] = id_map.filter(pl.col("id") == "oHEAVYUSER00000000000001")["one_id"]
    assert id_map.filter(pl.col("one_id") == one_id).height == 1
    tags = pl.read_parquet(out / "weeks" / WEEK.label / "tags.parquet")
    row = tags.filter(pl.col("one_id") == one_id).row(0, named=True)
    ts = events["ts"]
    assert row["events_13w"] == ((ts >= WEEK.window_start(13)) & (ts < WEEK.end)).sum()
    assert row["events_1w"] == ((ts >= WEEK.window_start(1)) & (ts < WEEK.end)).sum()


def test_a_phone_shared_by_100k_buyers_is_cut_as_a_hub(small_demo: Path, tmp_path: Path) -> None:
    inp = _input(small_demo, tmp_path)
    m = 100_000
    hub_phone = "13912340000"
    rng = np.random.default_rng(2)
    pl.DataFrame(
        {
            "order_id": np.char.add("H", np.arange(m).astype(str)),
            "source": "tmall",
            "buyer_id_type": "taobao_ouid",
            "buyer_id": np.char.add("tbHUB", np.char.zfill(np.arange(m).astype(str), 8)),
            "phone": hub_phone,
            "paid_at": _random_times(rng, m),
            "amount": rng.uniform(10, 500, m).round(2),
            "category": "帐篷",
        }
    ).write_parquet(inp / "orders" / "zz_hub.parquet")
    out = tmp_path / "out"
    report = run_child(inp, out)
    assert report["growth_kib"] < MAX_GROWTH_KIB
    assert report["summary"]["tables"]["orders"]["accepted"] >= m

    import hashlib

    hub = hashlib.sha256(hub_phone.encode()).hexdigest()
    cut = pl.read_parquet(out / "identity" / "rejected_links.parquet").filter(
        (pl.col("id_a") == hub) | (pl.col("id_b") == hub)
    )
    assert cut.height == m  # every link to the hub is cut, and each cut is reported
    assert set(cut["reason"]) == {f"hub_degree:{m}"}
    stats = json.loads((out / "identity" / "stats.json").read_text())
    assert stats["cuts_by_reason"]["hub_degree"] >= m
    id_map = pl.read_parquet(out / "identity" / "one_id_map.parquet")
    sizes = id_map.group_by("one_id").len()
    assert sizes["len"].max() <= 10  # no one_id holds the 100k buyers
    hub_person = id_map.filter(pl.col("id") == hub)["one_id"]
    assert id_map.filter(pl.col("one_id").is_in(hub_person.implode())).height == 1
    assert report["summary"]["people"] >= m
