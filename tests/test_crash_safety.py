"""Crash safety and idempotency: `segments run` killed with SIGKILL at many points never damages a
good workspace, leaves no temp file that passes for output, leaves a lock the next run clears,
and the next run gives exactly what a clean run gives. Reruns are byte-identical; the same
input file under two names does not double-count orders."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segments import demo, pipeline
from segments.config import load_config
from segments.ingest import ingest
from segments.state import StateStore
from segments.tags import REGISTRY

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "segments.cli"]
BASE_WEEK = "2026-W46"  # the good run already in the workspace
WEEK = "2026-W47"  # the run that gets killed (the latest complete week of the demo)
# The only files whose bytes legitimately differ between identical runs are the run manifests
# (a run id, timings, memory): `outputs()` leaves them out, every other file is compared as bytes.


# ---------------------------------------------------------------------------------------------
# Workspace snapshots


def is_scratch(rel: Path) -> bool:
    """Temp files of atomic writes, the staging folder and the lock: never output."""
    return rel.name.endswith(".tmp") or rel.parts[0] == "staging" or rel.name == ".lock"


def snapshot(root: Path) -> dict[Path, bytes]:
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def outputs(snap: dict[Path, bytes]) -> dict[Path, bytes]:
    """The snapshot without scratch files and run manifests."""
    return {k: v for k, v in snap.items() if not is_scratch(k) and k.parts[0] != "runs"}


def assert_state_whole(ws: Path) -> None:
    """The state generation in force, if any, reads whole: every file it names is there."""
    current = StateStore(ws / "state").current()
    if current is not None:
        for name in current.files():
            pl.read_parquet(ws / "state" / "files" / name)


def assert_valid(root: Path, rel: Path) -> None:
    """A complete, readable output file."""
    path = root / rel
    if rel.suffix == ".parquet":
        pl.read_parquet(path)
    elif rel.suffix == ".json":
        json.loads(path.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Fixtures: a small demo input, a workspace holding a good W46 run, and a clean W47 reference


@pytest.fixture(scope="module")
def small_input(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crash_input") / "input"
    demo.generate(out, users=200, seed=5)
    return out


@pytest.fixture(scope="module")
def base_ws(small_input: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("crash_base") / "out"
    pipeline.run(load_config(), small_input, ws, as_of=BASE_WEEK)
    return ws


@pytest.fixture(scope="module")
def reference(small_input: Path, base_ws: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """What an uninterrupted W47 run makes of the base workspace."""
    ws = tmp_path_factory.mktemp("crash_ref") / "out"
    shutil.copytree(base_ws, ws)
    pipeline.run(load_config(), small_input, ws)
    snap = snapshot(ws)
    assert (Path("weeks") / WEEK / "tags.parquet") in snap
    return snap


# ---------------------------------------------------------------------------------------------
# Killing a run


def run_and_kill(
    input_dir: Path,
    out: Path,
    *,
    after: float | None = None,
    on_line: str | None = None,
    delay: float = 0.0,
    command: str = "run",
    config: Path | None = None,
) -> tuple[int, list[str]]:
    """Start `segments run` (or `refresh`); SIGKILL it `after` seconds, or `delay` seconds
    after it prints a stderr line starting with `on_line`. Returns the exit status (negative:
    killed by that signal) and the stderr lines read."""
    lines: list[str] = []
    where = ["--out", str(out)] if command == "run" else ["--workspace", str(out)]
    if config is not None:
        where += ["--config", str(config)]
    proc = subprocess.Popen(
        [*CLI, command, "--input", str(input_dir), *where],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )

    def kill() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)

    def watch() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if on_line is not None and line.startswith(on_line):
                if delay:
                    threading.Timer(delay, kill).start()
                else:
                    kill()
        proc.stderr.close()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        proc.wait(timeout=after if after is not None else 120)
    except subprocess.TimeoutExpired:
        kill()
    code = proc.wait()
    watcher.join(timeout=10)
    return code, lines


_rng = random.Random(20261126)
# Kill points: seconds after the start (seeded jitter), and stderr progress lines (the stages
# as they start or finish), some with a short delay to land inside the writes that follow.
TIME_KILLS = [round(t + _rng.uniform(0.0, 0.3), 2) for t in (0.2, 0.5, 1.0, 2.0, 3.0)]
LINE_KILLS = [
    ("[segments] write rejects ...", 0.0),
    ("[segments] write rejects ...", round(_rng.uniform(0.01, 0.05), 3)),
    ("[segments] identity ...", round(_rng.uniform(0.01, 0.05), 3)),
    ("[segments] identity done", 0.0),
    ("[segments] pass 2", 0.0),
    ("[segments] clusters ...", 0.0),
    ("[segments] write tags ...", 0.0),
    ("[segments] write tags ...", round(_rng.uniform(0.02, 0.2), 3)),
]
KILLS = [(t, None, 0.0) for t in TIME_KILLS] + [(None, line, d) for line, d in LINE_KILLS]
KILL_IDS = [
    f"after={t}s" if t is not None else f"at={line[11:].rstrip(' .')}+{d}s" for t, line, d in KILLS
]


@pytest.mark.parametrize(("after", "on_line", "delay"), KILLS, ids=KILL_IDS)
def test_sigkill_never_damages_the_workspace(
    after: float | None,
    on_line: str | None,
    delay: float,
    small_input: Path,
    base_ws: Path,
    reference: dict,
    tmp_path: Path,
) -> None:
    ws = tmp_path / "out"
    shutil.copytree(base_ws, ws)
    before = snapshot(ws)
    code, lines = run_and_kill(small_input, ws, after=after, on_line=on_line, delay=delay)
    assert code in (0, -signal.SIGKILL), f"the run failed on its own (exit {code}): {lines[-3:]}"
    if on_line is not None:
        assert code == -signal.SIGKILL and any(x.startswith(on_line) for x in lines), lines[-3:]

    # 1. every output the good run left is intact: the old bytes, or the clean W47 run's bytes
    after_kill = snapshot(ws)
    for rel, data in before.items():
        if rel.parts[0] == "cache" and rel not in after_kill:
            continue  # a cache entry the new run no longer needs may go: it is not output
        assert rel in after_kill, f"{rel} disappeared"
        assert after_kill[rel] == data or (
            rel in reference and after_kill[rel] == reference[rel]
        ), f"{rel} is neither the old file nor a clean run's"
    # 2. every new file is scratch (a temp file, staging, the lock), a complete manifest, or a
    #    clean run's file
    for rel in sorted(set(after_kill) - set(before)):
        if is_scratch(rel):
            assert not rel.name.endswith(".tmp") or rel.name.startswith("."), rel
            continue
        assert_valid(ws, rel)
        if rel.parts[0] == "runs":
            assert json.loads(after_kill[rel])["week"] == WEEK
        else:
            assert rel in reference and after_kill[rel] == reference[rel], rel
    # 3. no temp file passes for output: they are hidden `.NAME.XXXX.tmp` files that no
    #    `*.parquet` glob matches, and every file such a glob finds outside staging reads
    for p in ws.rglob("*.parquet"):
        if not is_scratch(p.relative_to(ws)):
            pl.read_parquet(p)
    # the person state in force names complete files only
    assert_state_whole(ws)
    # the identity cache's meta always names a complete graph
    meta = ws / "cache" / "identity" / "meta.json"
    if meta.exists():
        graph = json.loads(meta.read_text())["graph"]
        for part in ("valid", "rejected", "edges", "bad_links"):
            pl.read_parquet(meta.parent / graph[part])
    # 4. a lock left by the dead process names it, and it is stale
    lock = ws / ".lock"
    if lock.exists():
        holder = dict(part.split("=", 1) for part in lock.read_text().split() if "=" in part)
        with pytest.raises(ProcessLookupError):
            os.kill(int(holder["pid"]), 0)

    # 5. the next run clears the stale lock, completes, and equals a clean run
    [result] = pipeline.run(load_config(), small_input, ws)
    assert result.week.label == WEEK
    assert not lock.exists()
    want, got = outputs(reference), outputs(snapshot(ws))
    assert sorted(got) == sorted(want)
    assert [str(k) for k in want if got[k] != want[k]] == []
    assert not (ws / "staging").exists() or not any((ws / "staging").rglob("*"))


def test_a_lock_of_a_live_process_is_respected(small_input: Path, tmp_path: Path) -> None:
    """The CLI refuses (exit 5, one line) while another live process holds the lock."""
    ws = tmp_path / "out"
    ws.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (ws / ".lock").write_text(f"pid={sleeper.pid} host={os.uname().nodename}\n")
        done = subprocess.run(
            [*CLI, "run", "--input", str(small_input), "--out", str(ws)],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    assert done.returncode == 5
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("LockError:")
    assert not (ws / "weeks").exists()
    # the holder is gone now: its lock is stale, and the next run clears it
    pipeline.run(load_config(), small_input, ws)
    assert not (ws / ".lock").exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leave_debris(ws: Path) -> list[Path]:
    """What a run killed mid-write leaves: half-written temp files and its lock."""
    debris = []
    for rel in (Path("weeks") / WEEK / "tags.parquet", Path("identity") / "one_id_map.parquet"):
        good = (ws / rel).read_bytes() if (ws / rel).exists() else b"PAR1"
        tmp = ws / rel.parent / f".{rel.name}.k1ll3d.tmp"
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(good[: len(good) // 2])
        debris.append(tmp)
    (ws / ".lock").write_text(f"pid={_dead_pid()} host={os.uname().nodename}\n")
    return debris


def test_half_written_temp_files_are_never_read(
    small_input: Path, base_ws: Path, reference: dict, tmp_path: Path
) -> None:
    ws = tmp_path / "out"
    shutil.copytree(base_ws, ws)
    _leave_debris(ws)
    pipeline.run(load_config(), small_input, ws)  # clears the stale lock too
    assert not (ws / ".lock").exists()
    want, got = outputs(reference), outputs(snapshot(ws))
    assert [str(k) for k in want if k not in got or got[k] != want[k]] == []


def test_the_next_run_sweeps_temp_files_of_a_killed_run(
    small_input: Path, base_ws: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "out"
    shutil.copytree(base_ws, ws)
    debris = _leave_debris(ws)
    pipeline.run(load_config(), small_input, ws)
    assert [p for p in debris if p.exists()] == []


# ---------------------------------------------------------------------------------------------
# Idempotency


def test_rerunning_a_week_gives_byte_identical_outputs(
    small_input: Path, base_ws: Path, reference: dict, tmp_path: Path
) -> None:
    ws = tmp_path / "out"
    shutil.copytree(base_ws, ws)
    pipeline.run(load_config(), small_input, ws)
    first = outputs(snapshot(ws))
    pipeline.run(load_config(), small_input, ws)
    second = outputs(snapshot(ws))
    assert sorted(first) == sorted(second) == sorted(outputs(reference))
    # byte for byte: every Parquet, JSON and model file
    assert [str(k) for k in first if first[k] != second[k]] == []
    assert any(k.suffix == ".json" for k in first) and any(k.suffix == ".skops" for k in first)
    manifests = sorted((ws / "runs").glob("*/manifest.json"))
    assert len(manifests) == 3  # one per run (base, first, second)
    tables = [json.loads(m.read_text())["tables"] for m in manifests[1:]]
    assert tables[0] == tables[1]


def test_identity_stats_hold_no_timings(demo_run: Path) -> None:
    """Regression: identity/stats.json held the step timings, so reruns were never identical."""
    for path in (demo_run / "identity").rglob("stats.json"):
        assert "seconds" not in json.loads(path.read_text()), path


# ---------------------------------------------------------------------------------------------
# The same file twice


def _tags(ws: Path) -> pl.DataFrame:
    return pl.read_parquet(ws / "weeks" / WEEK / "tags.parquet").sort("one_id")


def test_the_same_orders_file_twice_does_not_double_count(
    small_input: Path, tmp_path: Path
) -> None:
    csv_once, csv_twice = tmp_path / "csv1", tmp_path / "csv2"
    for folder in (csv_once, csv_twice):
        (folder / "orders").mkdir(parents=True)
        shutil.copy(small_input / "orders" / "orders.csv", folder / "orders" / "orders.csv")
    shutil.copy(small_input / "orders" / "orders.csv", csv_twice / "orders" / "orders (1).csv")
    one = ingest(csv_once).counts["orders"]
    two = ingest(csv_twice).counts["orders"]
    assert one.reconciles() and two.reconciles()
    assert one.rejected > 0  # the demo's dirty rows: rejected in both copies
    assert (two.read, two.rejected) == (2 * one.read, 2 * one.rejected)
    assert two.accepted == one.accepted  # every copied order is the same order
    assert two.duplicates == one.accepted + 2 * one.duplicates  # dropped and counted
    assert two.reasons == {k: 2 * v for k, v in one.reasons.items()}

    # the whole input with the copy: the same orders table and the same tags
    twice_in = tmp_path / "input"
    shutil.copytree(small_input, twice_in, ignore=shutil.ignore_patterns("truth"))
    shutil.copy(twice_in / "orders" / "orders.csv", twice_in / "orders" / "orders (1).csv")
    single, twice = ingest(small_input), ingest(twice_in)
    assert_frame_equal(
        single.tables["orders"].sort("source", "order_id"),
        twice.tables["orders"].sort("source", "order_id"),
    )
    a, b = tmp_path / "a", tmp_path / "b"
    pipeline.run(load_config(), small_input, a)
    pipeline.run(load_config(), twice_in, b)
    assert_frame_equal(_tags(a), _tags(b))


# Tag families that may read events (directly, or through clusters and lifecycle).
EVENT_FAMILIES = {"behaviour", "interest", "cluster", "predicted", "lifecycle", "promo"}


def test_events_without_event_id_twice_do_double_count(small_input: Path, tmp_path: Path) -> None:
    """The contract: rows without an event_id are never duplicates. So the same events file
    (exported without event_id) under two names counts every event twice: this test pins that
    documented behaviour and shows which tags it moves."""
    base_in, twice_in = tmp_path / "once", tmp_path / "twice"
    for folder in (base_in, twice_in):
        shutil.copytree(small_input, folder, ignore=shutil.ignore_patterns("truth"))
        events = pl.read_parquet(folder / "events" / "events.parquet").drop("event_id")
        events.write_parquet(folder / "events" / "events.parquet")
    shutil.copy(twice_in / "events" / "events.parquet", twice_in / "events" / "events_copy.parquet")
    once = ingest(base_in, tables=["events"]).counts["events"]
    twice = ingest(twice_in, tables=["events"]).counts["events"]
    assert twice.read == 2 * once.read
    assert twice.duplicates == 0 == once.duplicates
    assert twice.accepted == 2 * once.accepted  # every event counted twice

    a, b = tmp_path / "a", tmp_path / "b"
    pipeline.run(load_config(), base_in, a)
    pipeline.run(load_config(), twice_in, b)
    ta, tb = _tags(a), _tags(b)
    assert ta["one_id"].to_list() == tb["one_id"].to_list()
    family = {t.name: t.family for t in REGISTRY}
    changed = [c for c in ta.columns if not ta[c].equals(tb[c])]
    assert changed, "doubling every event moved no tag"
    assert {family[c] for c in changed} <= EVENT_FAMILIES, changed
    # order-based tags do not move
    for col in ("frequency_52w", "monetary_52w", "recency_days", "is_high_value"):
        assert ta[col].equals(tb[col]), col
    assert "events_13w" in changed and (tb["events_13w"] >= ta["events_13w"]).all()


def test_a_workspace_path_with_brackets_works(small_input: Path, tmp_path: Path) -> None:
    ws = tmp_path / "out [2026]"
    pipeline.run(load_config(), small_input, ws)
    assert (ws / "weeks" / WEEK / "tags.parquet").is_file()
    # and next week's run finds its caches there (a globbed path once hid identity's)
    pipeline.run(load_config(), small_input, ws)
    runs = sorted((ws / "runs").glob("*/manifest.json"))
    first, second = (json.loads(p.read_text()) for p in runs)
    assert second["input_files_from_cache"] == len(first["inputs"]) > 0
    assert second["identity_pieces"] == {"read": 0, "reused": first["identity_pieces"]["read"]}


def test_demo_data_runs_in_a_fresh_process(tmp_path: Path) -> None:
    """Regression: contract.py used polars_hash's `.chash` without importing it, so a fresh
    `segments demo-data` (which imports nothing else that does) died with AttributeError."""
    done = subprocess.run(
        [*CLI, "demo-data", "--out", str(tmp_path / "d"), "--users", "20"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr


def test_staging_files_left_by_a_killed_run_are_owner_only(
    small_input: Path, base_ws: Path, tmp_path: Path
) -> None:
    ws = tmp_path / "out"
    shutil.copytree(base_ws, ws)
    disk = tmp_path / "disk.toml"  # rows staged on disk, as for Spark or a brand-sized week
    disk.write_text('[run]\nstaging = "disk"\n')
    code, lines = run_and_kill(small_input, ws, on_line="[segments] pass 2", config=disk)
    assert code == -signal.SIGKILL, lines[-3:]
    staged = [p for p in (ws / "staging").rglob("*") if p.is_file()]
    assert staged, "nothing staged: the kill came too early"
    assert [str(p) for p in staged if p.stat().st_mode & 0o077] == []


# ---------------------------------------------------------------------------------------------
# Killing a refresh

REFRESH_KILLS = [(round(t + _rng.uniform(0.0, 0.3), 2), None) for t in (0.3, 1.0, 2.0, 3.0)] + [
    (None, "[segments] person state done"),
    (None, "[segments] identity done"),
    (None, "[segments] pass 2"),
    (None, "[segments] write live table ..."),
    (None, "[segments] refresh packs ..."),
]


@pytest.fixture(scope="module")
def live_ws(small_input: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace built for W46 from the files up to W46, with a live table of those; and the
    input folder with W47's files added (what the killed refresh reads)."""
    from segments.demo.deliveries import gather, split

    root = tmp_path_factory.mktemp("crash_live")
    d0, d1 = split(small_input, root / "deliveries", [datetime(2026, 11, 16)])
    inputs = gather(root / "input", d0)
    ws = root / "ws"
    pipeline.run(load_config(), inputs, ws, as_of=BASE_WEEK)
    pipeline.refresh(load_config(), inputs, ws)
    return ws, gather(inputs, d1)


@pytest.mark.parametrize(
    ("after", "on_line"), REFRESH_KILLS, ids=[str(a or b) for a, b in REFRESH_KILLS]
)
def test_a_killed_refresh_leaves_the_last_live_table_and_the_next_one_completes(
    after: float | None, on_line: str | None, live_ws: tuple[Path, Path], tmp_path: Path
) -> None:
    from segments.layout import Layout

    base, inputs = live_ws
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    layout = Layout(ws)
    before = layout.live_version()
    code, lines = run_and_kill(inputs, ws, after=after, on_line=on_line, command="refresh")
    assert code in (0, -signal.SIGKILL), (
        f"the refresh failed on its own (exit {code}): {lines[-3:]}"
    )
    # the live table in force is the old version or the new one, whole
    assert layout.live_version() in (before, "v000002")
    manifest = json.loads(layout.current("manifest.json").read_text())
    assert manifest["version"] == layout.live_version()
    assert (
        pl.read_parquet(layout.current("one_id_map.parquet"))["one_id"].n_unique()
        == (manifest["people"])
    )
    pl.read_parquet(layout.current("tags.parquet"))
    assert_state_whole(ws)
    # the next refresh completes and equals a refresh that was never killed
    pipeline.refresh(load_config(), inputs, ws)
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    pipeline.refresh(load_config(), inputs, clean)
    assert_frame_equal(
        pl.read_parquet(layout.current("tags.parquet")),
        pl.read_parquet(Layout(clean).current("tags.parquet")),
        check_exact=True,
    )
