"""`make bench`: the weekly build at a chosen size, side by side with DuckDB.

    python benchmarks/run.py --users 100000            # writes docs/benchmarks.md
    python benchmarks/run.py --users 2000 --no-docs --results /tmp/r   # the CI-sized check

1. Generates the demo population once per size (cached in benchmarks/data/, not in git).
2. Runs `segments run` in a child process and reads per-stage seconds and peak memory from
   the run manifest; right after it, the DuckDB peer (benchmarks/peer.py: the whole week as an
   analyst would write it in SQL) over the same files, also in a child process, and records
   its per-step seconds and the ratio cold build / peer (skip it with --no-peer).
3. Lays the canonical orders and events (with one_id) out as Parquet and times the heavy
   aggregations in Polars and in DuckDB SQL over the same files, plus two floors: a bare
   column sum (R_scan) and a bare per-user group-by (R_agg).
4. Writes benchmarks/results/<size>.json and, unless --no-docs, the table in
   docs/benchmarks.md between that size's BEGIN/END markers (the rest of the page is prose).

Nothing here asserts a time: the figures are recorded, and a regression shows as a ratio.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

# What the caller set for polars' allocator, before importing polars writes its own defaults
# into the environment: the `segments run` child gets this (or nothing, so that it runs with
# the settings the CLI itself chooses, as a user's run does).
CALLER_MALLOC_CONF = os.environ.get("_RJEM_MALLOC_CONF")

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from segments import demo  # noqa: E402
from segments.identity import attach_one_id  # noqa: E402
from segments.ingest import ingest  # noqa: E402
from segments.stages.behaviour import behaviour_features  # noqa: E402
from segments.stages.rfm import rfm_features  # noqa: E402
from segments.weeks import Week  # noqa: E402

WEEK = Week.parse("2026-W47")


def markers(label: str) -> tuple[str, str]:
    """The lines around one size's generated section of docs/benchmarks.md."""
    return f"<!-- BEGIN make bench {label} -->", f"<!-- END make bench {label} -->"


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# The brand-scale shape (issue #9): per 2M users, 10M orders, 100M events, 5M chat messages.
# The demo draws about 22 events and 6.5 messages per person; these scales give 50 and 2.5.
BRAND = {"events_scale": 2.266, "messages_scale": 0.383, "chunks_per_file": 4}
# Many people, few events each (issue #9's brand five times larger, within this machine's disk):
# about 10 events and 2.5 messages per person; 10M people give the brand set's 100M events.
PEOPLE = {"events_scale": 0.45, "messages_scale": 0.383, "chunks_per_file": 4}
SHAPES = {"demo": {}, "brand": BRAND, "people": PEOPLE}


def generate(users: int, data_dir: Path, shape: str = "demo") -> Path:
    target = data_dir / f"{shape}-{users}"
    marker = target / ".complete"
    if not marker.exists():
        t0 = time.perf_counter()
        summary = demo.generate(target, users=users, seed=7, **SHAPES[shape])
        info = summary.as_dict() | {"seconds": round(time.perf_counter() - t0, 1)}
        marker.write_text(json.dumps(info, default=str) + "\n")
    return target


def run_pipeline(input_dir: Path, workspace: Path) -> dict:
    exe = Path(sys.executable).with_name("segments")
    cmd = [
        str(exe),
        "run",
        "--input",
        str(input_dir),
        "--out",
        str(workspace),
        "--as-of",
        WEEK.label,
        "--json",
    ]
    env = {k: v for k, v in os.environ.items() if k != "_RJEM_MALLOC_CONF"}
    if CALLER_MALLOC_CONF is not None:
        env["_RJEM_MALLOC_CONF"] = CALLER_MALLOC_CONF
    # The child's progress lines go to a log beside the workspace (`tail -f` it on a long run).
    log = workspace.with_name(f"{workspace.name}.log")
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("a") as err:
        done = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, check=False, env=env
        )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"segments run failed (exit {done.returncode}, log {log}): {last}")
    summary = json.loads(done.stdout)[0]
    manifest = json.loads(Path(summary["manifest"]).read_text())
    return {"wall_seconds": round(wall, 2), "manifest": manifest, "summary": summary}


def run_peer(input_dir: Path, out_dir: Path) -> dict:
    """benchmarks/peer.py over `input_dir` in a child process, timed as `segments run` is: the
    wall time with imports, and the per-step seconds the peer reports."""
    shutil.rmtree(out_dir, ignore_errors=True)
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "peer.py"),
        *("--input", str(input_dir), "--out", str(out_dir), "--as-of", WEEK.label, "--json"),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"benchmarks/peer.py failed (exit {done.returncode}): {last}")
    out = json.loads(done.stdout)
    return {"wall_seconds": round(wall, 2)} | {
        k: out[k] for k in ("seconds", "cpu_seconds", "rows", "people", "wide")
    }


def lay_out(input_dir: Path, workspace: Path, folder: Path) -> dict[str, Path]:
    """Canonical orders and events with one_id, as the per-user stages see them: validated
    through the workspace's ingest cache, joined with its identity map, streamed to Parquet."""
    folder.mkdir(parents=True, exist_ok=True)
    spool = folder / "tables"
    ingested = ingest(
        input_dir,
        tables=["orders", "events"],
        spool=spool,
        cache=workspace / "cache" / "ingest",
    )
    id_map = pl.scan_parquet(workspace / "identity" / "one_id_map.parquet").select(
        "one_id", "id_type", "id"
    )
    paths = {}
    for name, (type_col, id_col, ts) in {
        "orders": ("buyer_id_type", "buyer_id", "paid_at"),
        "events": ("user_id_type", "user_id", "ts"),
    }.items():
        paths[name] = folder / f"{name}.parquet"
        lf = ingested.scan(name)
        assert lf is not None
        attach_one_id(lf.filter(pl.col(ts) < WEEK.end), id_map, type_col, id_col).filter(
            pl.col("one_id").is_not_null()
        ).sink_parquet(paths[name])
    shutil.rmtree(spool, ignore_errors=True)
    return paths


RFM_SQL = """
SELECT one_id,
  date_diff('day', max(paid_at)::DATE, DATE '{sunday}') AS recency_days,
  count(*) FILTER (WHERE paid_at >= TIMESTAMP '{start52}') AS frequency_52w,
  coalesce(sum(amount - coalesce(refund, 0)) FILTER (WHERE paid_at >= TIMESTAMP '{start52}'), 0) AS monetary_52w,
  count(*) FILTER (WHERE paid_at >= TIMESTAMP '{start13}') AS frequency_13w,
  coalesce(sum(amount - coalesce(refund, 0)) FILTER (WHERE paid_at >= TIMESTAMP '{start13}'), 0) AS monetary_13w,
  count(*) AS frequency_lifetime
FROM read_parquet('{path}')
WHERE coalesce(status, 'paid') = 'paid' AND amount - coalesce(refund, 0) > 0 AND paid_at < TIMESTAMP '{end}'
GROUP BY one_id
"""

EVENTS_SQL = """
SELECT one_id,
  count(*) FILTER (WHERE ts >= TIMESTAMP '{start13}') AS events_13w,
  count(*) FILTER (WHERE ts >= TIMESTAMP '{start13}' AND event = 'view') AS view_13w,
  count(*) FILTER (WHERE ts >= TIMESTAMP '{start13}' AND event = 'search') AS search_13w,
  count(*) FILTER (WHERE ts >= TIMESTAMP '{start13}' AND event = 'add_cart') AS add_cart_13w,
  count(DISTINCT ts::DATE) FILTER (WHERE ts >= TIMESTAMP '{start13}') AS active_days_13w
FROM read_parquet('{path}') WHERE ts < TIMESTAMP '{end}'
GROUP BY one_id
"""


def rfm_same_as_sql(orders: pl.LazyFrame) -> pl.LazyFrame:
    """The SQL's columns, written in Polars: the like-for-like comparison."""
    kept = pl.col("amount") - pl.col("refund").fill_null(0.0)
    in52 = pl.col("paid_at") >= WEEK.window_start(52)
    in13 = pl.col("paid_at") >= WEEK.window_start(13)
    return (
        orders.filter(
            (pl.col("status").fill_null("paid") == "paid")
            & (kept > 0)
            & (pl.col("paid_at") < WEEK.end)
        )
        .group_by("one_id")
        .agg(
            (pl.lit(WEEK.sunday) - pl.col("paid_at").max().dt.date())
            .dt.total_days()
            .alias("recency_days"),
            in52.sum().alias("frequency_52w"),
            kept.filter(in52).sum().alias("monetary_52w"),
            in13.sum().alias("frequency_13w"),
            kept.filter(in13).sum().alias("monetary_13w"),
            pl.len().alias("frequency_lifetime"),
        )
    )


def side_by_side(paths: dict[str, Path]) -> dict:
    fmt = {
        "sunday": WEEK.sunday.isoformat(),
        "end": WEEK.end.isoformat(sep=" "),
        "start52": WEEK.window_start(52).isoformat(sep=" "),
        "start13": WEEK.window_start(13).isoformat(sep=" "),
    }
    con = duckdb.connect()
    con.execute(f"SET threads TO {os.cpu_count() or 1}")
    orders, events = paths["orders"], paths["events"]
    out: dict = {
        "rows": {k: pl.scan_parquet(p).select(pl.len()).collect().item() for k, p in paths.items()}
    }
    t_rfm = best_of(lambda: rfm_features(pl.scan_parquet(orders), WEEK).collect(engine="streaming"))
    t_rfm_sql = best_of(lambda: con.sql(RFM_SQL.format(path=orders, **fmt)).to_arrow_table())
    t_rfm_same = best_of(
        lambda: rfm_same_as_sql(pl.scan_parquet(orders)).collect(engine="streaming")
    )
    t_ev = best_of(
        lambda: behaviour_features(pl.scan_parquet(events), WEEK).collect(engine="streaming")
    )
    t_ev_sql = best_of(lambda: con.sql(EVENTS_SQL.format(path=events, **fmt)).to_arrow_table())
    t_scan = best_of(lambda: pl.scan_parquet(orders).select(pl.col("amount").sum()).collect())
    t_agg = best_of(
        lambda: (
            pl.scan_parquet(orders)
            .group_by("one_id")
            .agg(pl.col("amount").sum())
            .collect(engine="streaming")
        )
    )
    t_ev_agg = best_of(
        lambda: pl.scan_parquet(events).group_by("one_id").agg(pl.len()).collect(engine="streaming")
    )
    out["seconds"] = {
        "rfm_features (every RFM tag)": t_rfm,
        "rfm in DuckDB SQL (R, F, M, 13w, lifetime)": t_rfm_sql,
        "the same R, F, M columns in Polars": t_rfm_same,
        "behaviour_features": t_ev,
        "behaviour in DuckDB SQL": t_ev_sql,
        "bare sum of orders.amount": t_scan,
        "bare per-user group-by of orders": t_agg,
        "bare per-user group-by of events": t_ev_agg,
    }
    out["ratios"] = {
        "rfm, same columns, Polars vs DuckDB (<= 1.0 is as fast)": t_rfm_same / t_rfm_sql,
        "rfm_features (33 tags) vs DuckDB's 6 columns": t_rfm / t_rfm_sql,
        "behaviour vs DuckDB": t_ev / t_ev_sql,
        "R_scan = bare sum / rfm_features": t_scan / t_rfm,
        "R_agg = bare group-by / rfm_features": t_agg / t_rfm,
        "R_agg events = bare group-by / behaviour_features": t_ev_agg / t_ev,
    }
    return out


def machine() -> dict:
    mem = 0
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) // 1024
    return {
        "cpus": os.cpu_count(),
        "memory_mib": mem,
        "python": platform.python_version(),
        "polars": pl.__version__,
        "duckdb": duckdb.__version__,
        "platform": platform.platform(),
    }


def _rerun_sentence(results: dict) -> str:
    if "rerun_cached" not in results:
        return "(A cold build only: no second run, no side by side.)"
    again = results["rerun_cached"]
    rerun = again["manifest"]
    hits, files = rerun.get("input_files_from_cache", 0), len(rerun.get("inputs", []))
    # the rerun is only the floor of an incremental week if the cache was used: say so
    cached = "every input file" if hits == files else f"{hits} of {files} input files"
    same = (
        "Both runs wrote byte-identical tags, tables and identity map."
        if again.get("same_outputs")
        else "**The two runs wrote different outputs.**"
    )
    return (
        f"The same week again, {cached} read from the ingest cache: "
        f"**{again['wall_seconds']:.1f} s**, peak RSS {rerun['peak_rss_mib']:,.0f} MiB. {same}"
    )


def markdown(results: dict, label: str) -> str:
    m = results["machine"]
    run = results["run"]
    man = run["manifest"]
    begin, end = markers(label)
    flags = f"--users {results['users']}" + (
        f" --shape {results['shape']}" if results["shape"] != "demo" else ""
    )
    if "rerun_cached" not in results:
        flags += " --cold-only"
    if "peer" not in results:
        flags += " --no-peer"
    lines = [
        begin,
        f"Measured by `benchmarks/run.py {flags}` on {m['cpus']} cores, "
        f"{m['memory_mib']:,} MiB, Python {m['python']}, polars {m['polars']}, DuckDB {m['duckdb']}.",
        "",
        "| input | rows read |",
        "| --- | ---: |",
    ]
    for name, c in man["tables"].items():
        lines.append(f"| {name} | {c['read']:,} |")
    lines += [
        "",
        f"Full weekly build: **{run['wall_seconds']:.1f} s** wall (child process, imports included), "
        f"peak RSS **{man['peak_rss_mib']:,.0f} MiB**. " + _rerun_sentence(results),
        "",
        "| stage | seconds | rows | peak RSS MiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for s in man["stages"]:
        rows = f"{s['rows']:,}" if s["rows"] is not None else ""
        lines.append(f"| {s['name']} | {s['seconds']:.2f} | {rows} | {s['peak_rss_mib']:,.0f} |")
    lines += _peer_lines(results)
    lines += _fresh_lines(results)
    if "side_by_side" not in results:
        lines.append(end)
        return "\n".join(lines)
    sbs = results["side_by_side"]
    lines += [
        "",
        f"Side by side over the same Parquet files ({sbs['rows']['orders']:,} orders, {sbs['rows']['events']:,} events; best of 3):",
        "",
        "| query | seconds |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.3f} |" for k, v in sbs["seconds"].items()]
    lines += ["", "| ratio | value |", "| --- | ---: |"]
    lines += [f"| {k} | {v:.2f} |" for k, v in sbs["ratios"].items()]
    lines.append(end)
    return "\n".join(lines)


def _peer_lines(results: dict) -> list[str]:
    """The DuckDB peer's wall time, its steps, and the cold build over it, from one run."""
    peer = results.get("peer")
    if not peer:
        return []
    secs = peer["seconds"]
    return [
        "",
        f"DuckDB peer (`benchmarks/peer.py`, the same files, right after the cold build): "
        f"**{peer['wall_seconds']:.1f} s** wall (child process, imports included), "
        f"{peer['people']:,} people; cold build / peer = **{peer['engine_over_peer']:.2f}**.",
        "",
        "| peer step | " + " | ".join(secs) + " |",
        "| --- |" + " ---: |" * len(secs),
        "| seconds | " + " | ".join(f"{v:.2f}" for v in secs.values()) + " |",
        "| CPU seconds | " + " | ".join(f"{v:.2f}" for v in peer["cpu_seconds"].values()) + " |",
    ]


FRESH_STEPS = (
    ("cold", "cold build of W47 (every file)"),
    ("next_week", "the next week: W46 workspace + W47's files"),
    ("refresh_six_days", "refresh: W46 workspace + Mon-Sat of W47"),
    ("refresh_one_day", "refresh: + Sunday's files to 18:00 (a new day: everyone)"),
    ("refresh_same_day", "refresh: + Sunday evening (the same day: the people touched)"),
)


def _fresh_lines(results: dict) -> list[str]:
    """The fresh-data table: the cold build, the next week and the refreshes of one run."""
    fresh = results.get("fresh")
    if not fresh:
        return []
    lines = [
        "",
        "Fresh data (`benchmarks/fresh.py`, the same input cut into deliveries, one run):",
        "",
        "| step | wall s | of cold | peak RSS MiB | rows folded in |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    cold = fresh["cold"]["wall_seconds"]
    for key, label in FRESH_STEPS:
        step = fresh[key]
        folded = sum((step.get("state") or {}).get("rows_added", {}).values())
        lines.append(
            f"| {label} | {step['wall_seconds']:.1f} | {step['wall_seconds'] / cold:.0%} "
            f"| {step['peak_rss_mib']:,.0f} | {folded:,} |"
        )
    day = fresh.get("refresh_one_day", {})
    if day.get("aged_from"):
        lines.append(
            f"\nThe one-day refresh recomputed {day['people_recomputed']:,} of "
            f"{day['people']:,} people and aged the others from {day['aged_from']} "
            f"({day.get('people_aged_with_state') or 0:,} with the state's moved counts and sums)."
        )
    same = fresh.get("refresh_same_day", {})
    if same.get("people_recomputed") is not None:
        lines.append(
            f"\nThe same-day refresh recomputed {same['people_recomputed']:,} of "
            f"{same['people']:,} people."
        )
    for key in ("next_week", "refresh_one_day", "refresh_same_day"):
        stages = ", ".join(f"{s['name']} {s['seconds']:.1f}" for s in fresh[key]["stages"])
        lines.append(f"\n{key.replace('_', ' ')}, seconds per stage: {stages}.")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="demo",
        help="brand: 50 events and 2.5 messages per person, text files split; people: 10 "
        "events and 2.5 messages per person; demo: the demo generator's own mix",
    )
    ap.add_argument("--brand", action="store_true", help="the same as --shape brand")
    ap.add_argument(
        "--cold-only",
        action="store_true",
        help="one cold build: no cached second run, no side by side with DuckDB",
    )
    ap.add_argument(
        "--no-peer",
        action="store_true",
        help="skip the DuckDB peer (benchmarks/peer.py) after the cold build",
    )
    ap.add_argument(
        "--no-fresh",
        action="store_true",
        help="skip the next week and the one-day refresh (benchmarks/fresh.py)",
    )
    ap.add_argument("--data", type=Path, default=ROOT / "benchmarks" / "data")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--no-docs", action="store_true")
    args = ap.parse_args()

    shape = "brand" if args.brand else args.shape
    input_dir = generate(args.users, args.data, shape)
    label = f"{'users' if shape == 'demo' else shape}-{args.users}"
    workspace = args.data / f"workspace-{label}"
    shutil.rmtree(workspace, ignore_errors=True)  # a cold build: no ingest cache, no history
    run = run_pipeline(input_dir, workspace)
    results = {"users": args.users, "shape": shape, "machine": machine(), "run": run}
    if not args.no_peer:  # right after the engine, on the same files: the ratio of one run
        peer = run_peer(input_dir, args.data / f"peer-{label}")
        peer["engine_over_peer"] = round(run["wall_seconds"] / peer["wall_seconds"], 2)
        results["peer"] = peer
    if not args.cold_only:
        results |= _rerun_and_compare(input_dir, workspace, args.data / f"canonical-{label}")
    if not args.cold_only and not args.no_fresh:
        from fresh import measure  # benchmarks/fresh.py, beside this file

        results["fresh"] = measure(input_dir, args.data / f"fresh-{label}")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / f"{label}.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    table = markdown(results, label)
    print(table)
    if not args.no_docs:
        write_section(args.docs, label, table)


def _rerun_and_compare(input_dir: Path, workspace: Path, canonical: Path) -> dict:
    outputs = _output_digests(workspace)
    # The same week again: every input file is in the ingest cache (the floor of an
    # incremental week, whose new files are a small fraction of the input).
    rerun = run_pipeline(input_dir, workspace)
    # The same inputs must give the same files, at this size too (parallel float sums once
    # made the last bits of some tags differ between runs).
    rerun["same_outputs"] = _output_digests(workspace) == outputs
    paths = lay_out(input_dir, workspace, canonical)
    return {"rerun_cached": rerun, "side_by_side": side_by_side(paths)}


def _output_digests(workspace: Path) -> dict[str, str]:
    week = workspace / "weeks" / WEEK.label
    files = [*sorted(week.glob("*.parquet")), workspace / "identity" / "one_id_map.parquet"]
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def write_section(docs: Path, label: str, table: str) -> None:
    """Replace this size's section of the page; a new size goes before the components."""
    begin, end = markers(label)
    doc = docs.read_text(encoding="utf-8") if docs.exists() else "# Benchmarks\n"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + table + doc[doc.index(end) + len(end) :]
    elif COMPONENTS in doc:
        at = doc.index(COMPONENTS)
        doc = doc[:at] + table + "\n\n" + doc[at:]
    else:
        doc += "\n" + table + "\n"
    docs.write_text(doc, encoding="utf-8")


COMPONENTS = "## Components, measured separately"


if __name__ == "__main__":
    main()
