"""Benchmark the bucket passes: seconds and peak RSS of each bucket, as a Spark worker sees them.

    python benchmarks/bench_buckets.py --users 100000 --buckets 8

Writes a demo population (`segments.demo.generate`), then runs the whole week through
`pipeline.run` with an executor that runs every bucket task in a fresh child process (like a
Spark Python worker: the task's context is pickled, the bucket read from the staging folder).
Per bucket it prints the staged rows, wall and CPU seconds of the task alone (imports and
unpickling excluded) and the child's peak RSS, for pass 1 and pass 2, then the pipeline's
stages. `docs/scale.md` builds its cluster estimate from these figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import multiprocessing
import os
import resource
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from segments import demo, pipeline
from segments.config import load_config
from segments.progress import Progress

STAGED = ("orders", "events", "messages", "people")


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _task(fn: Any, ctx: Any, b: int) -> tuple[bytes, dict[str, float]]:
    """In the child: run one bucket task; its result as Arrow IPC and its figures.

    The peak RSS is the task's own: the high-water mark is reset first (a spawned child
    inherits its parent's through fork + exec), so it is the baseline (interpreter, imports,
    the unpickled context) plus what the task itself needed."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    base = _status_mib("VmRSS")
    wall, cpu = time.perf_counter(), time.process_time()
    df = fn(ctx, b)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = _status_mib("VmHWM")
    buf = io.BytesIO()
    df.write_ipc(buf)
    figures = {"seconds": wall, "cpu_seconds": cpu, "base_rss_mib": base, "peak_rss_mib": peak}
    return buf.getvalue(), figures


class MeasuringExecutor:
    """Each bucket task in its own spawned process (fresh interpreter, like a Spark worker)."""

    name = "bench"

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def map_buckets(self, fn: Any, context: Any, buckets: Any) -> list[pl.DataFrame]:
        out = []
        spawn = multiprocessing.get_context("spawn")
        for b in buckets:
            rows = {
                t: pl.scan_parquet(f"{context.staging}/{t}/{b:05d}.parquet").select(pl.len())
                for t in STAGED
            }
            counts = {t: int(q.collect().item()) for t, q in rows.items()}
            counts["persons"] = int(
                pl.scan_parquet(f"{context.staging}/people/{b:05d}.parquet")
                .select(pl.col("one_id").n_unique())
                .collect()
                .item()
            )
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                data, figures = pool.submit(_task, fn, context, b).result()
            df = pl.read_ipc(io.BytesIO(data))
            self.records.append(
                {"pass": fn.__name__, "bucket": b, **counts, "out_rows": df.height, **figures}
            )
            out.append(df)
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--buckets", type=int, default=8)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument(
        "--spark",
        metavar="MASTER",
        help="also run the week with SparkExecutor on this master (e.g. local[2]) and time it",
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_buckets_"))
    try:
        t0 = time.perf_counter()
        summary = demo.generate(work / "input", users=args.users, seed=args.seed)
        gen_s = time.perf_counter() - t0
        cfg = load_config()
        cfg = cfg.model_copy(update={"run": cfg.run.model_copy(update={"buckets": args.buckets})})
        executor = MeasuringExecutor()
        t0 = time.perf_counter()
        result = pipeline.run(
            cfg, work / "input", work / "out", executor=executor, progress=Progress(quiet=True)
        )[0]
        run_s = time.perf_counter() - t0
        spark_stages: list[dict] = []
        if args.spark:
            from segments.engine.spark import SparkExecutor

            with SparkExecutor(master=args.spark) as on_spark:
                on_spark.spark  # start the session outside the timings  # noqa: B018
                spark_stages = pipeline.run(
                    cfg, work / "input", work / "out_spark", executor=on_spark
                )[0].stages
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print(
        f"{args.users:,} users (demo seed {args.seed}), {args.buckets} buckets, "
        f"{os.cpu_count()} cores, POLARS_MAX_THREADS={os.environ.get('POLARS_MAX_THREADS', 'all')}"
    )
    print(
        f"demo data {gen_s:.1f} s ({summary.orders:,} order rows, {summary.events:,} events, "
        f"{summary.messages:,} messages); pipeline.run {run_s:.1f} s; {result.people:,} people"
    )
    header = (
        f"{'pass':<13}{'bucket':>6}{'persons':>9}{'ids':>9}{'orders':>9}{'events':>10}{'messages':>9}"
        f"{'out':>8}{'wall s':>8}{'cpu s':>8}{'base MiB':>9}{'peak MiB':>9}"
    )
    print(header)
    for r in executor.records:
        print(
            f"{r['pass']:<13}{r['bucket']:>6}{r['persons']:>9,}{r['people']:>9,}{r['orders']:>9,}{r['events']:>10,}"
            f"{r['messages']:>9,}{r['out_rows']:>8,}{r['seconds']:>8.2f}{r['cpu_seconds']:>8.2f}"
            f"{r['base_rss_mib']:>9.0f}{r['peak_rss_mib']:>9.0f}"
        )
    p2 = [r for r in executor.records if r["pass"] == "pass2_bucket"]
    events = sum(r["events"] for r in p2)
    wall = sum(r["seconds"] for r in p2)
    cpu = sum(r["cpu_seconds"] for r in p2)
    print(
        f"pass 2 total: {wall:.1f} s wall, {cpu:.1f} s CPU for {events:,} events "
        f"({events / wall:,.0f} events/s wall, {cpu / max(events, 1) * 1e6:.1f} CPU-us/event); "
        f"peak RSS per bucket {max(r['peak_rss_mib'] for r in p2):.0f} MiB"
    )
    print("pipeline stages (s):")
    for s in result.stages:
        print(f"  {s['name']:<45}{s.get('seconds', 0):>8.2f}")
    if spark_stages:
        print(f"with SparkExecutor({args.spark!r}), bucket passes (s):")
        for s in spark_stages:
            if s["name"].startswith("pass "):
                print(f"  {s['name']:<45}{s.get('seconds', 0):>8.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "users": args.users,
                    "buckets": args.buckets,
                    "demo": dataclasses.asdict(summary),
                    "run_seconds": run_s,
                    "buckets_figures": executor.records,
                    "stages": result.stages,
                    "spark_stages": spark_stages,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    sys.exit(main())
