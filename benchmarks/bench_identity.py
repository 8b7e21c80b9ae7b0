"""Benchmark `build_identity`: synthesise N identifiers and M link rows, time the graph build.

    python benchmarks/bench_identity.py --n 3000000 --m 2500000

The tables are written as parquet to a temporary folder, then a fresh child process scans them
and runs `build_identity`, so the peak RSS reported is that of the build alone (as in the
pipeline, which scans its staging parquet), not of the synthesis.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl
import polars_hash  # noqa: F401

# Position of an identifier inside its person -> id type (and id prefix).
TYPES = ("phone_sha256", "unionid", "taobao_ouid", "openid", "wecom_external_userid", "jd_pin")
PREFIX = ("", "ou", "tb", "op", "wm", "jd_")


def synthesise(n: int, m: int, out: Path, seed: int = 7) -> dict[str, int]:
    """Write orders/identities/events parquet under `out` with ~n identifiers and m link rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice(np.arange(1, 7), size=n // 2 + 16, p=[0.3, 0.25, 0.2, 0.12, 0.08, 0.05])
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    sizes[-1] -= int(sizes.sum()) - n
    sizes = sizes[sizes > 0]
    people = len(sizes)
    start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    pos = np.arange(n, dtype=np.int64) - start

    nodes = pl.DataFrame({"node": np.arange(n, dtype=np.int64), "pos": pos}).with_columns(
        pl.col("pos")
        .replace_strict(dict(enumerate(TYPES)), return_dtype=pl.String)
        .alias("id_type"),
        pl.when(pl.col("pos") == 0)
        .then(pl.col("node").cast(pl.String).chash.sha2_256())
        .otherwise(
            pl.col("pos").replace_strict(dict(enumerate(PREFIX)), return_dtype=pl.String)
            + pl.col("node").cast(pl.String).str.zfill(12)
        )
        .alias("id"),
    )

    # Star edges inside each person (every identifier to the person's phone), then repeats
    # (the same link seen again: repeat orders, re-binds) and a few cross-person edges.
    members = np.flatnonzero(pos > 0)
    a = start[members]
    b = members
    base = len(a)
    extra = max(m - base, 0)
    n_cross = min(extra // 200, people)
    n_repeat = extra - n_cross
    rep = rng.integers(0, max(base, 1), size=n_repeat) if base else np.zeros(0, dtype=np.int64)
    ca = rng.integers(0, n, size=n_cross)
    cb = rng.integers(0, n, size=n_cross)
    # Parcel-station phones: one phone on the orders of 30 different buyers (hubs to cut).
    phones = np.flatnonzero(pos == 0)
    hub_phones = rng.choice(phones, size=max(1, n // 100_000), replace=False)
    buyers = np.flatnonzero(pos == 2)
    ha = np.repeat(hub_phones, 30)
    hb = rng.choice(buyers, size=len(ha)) if len(buyers) else ha
    ea = np.concatenate([ha, a, a[rep], ca])[:m]
    eb = np.concatenate([hb, b, b[rep], cb])[:m]
    edges = pl.DataFrame({"a": ea, "b": eb})
    keyed = nodes.select("node", "id_type", "id")
    edges = (
        edges.join(keyed.rename({"node": "a", "id_type": "ta", "id": "ia"}), on="a")
        .join(keyed.rename({"node": "b", "id_type": "tb", "id": "ib"}), on="b")
        .with_columns(
            (pl.lit(datetime(2025, 1, 1)) + pl.duration(minutes=pl.col("a") % 500_000)).alias("ts")
        )
    )
    is_order = (pl.col("ta") == "phone_sha256") & (pl.col("tb") == "taobao_ouid")
    orders = edges.filter(is_order).select(
        pl.int_range(pl.len()).cast(pl.String).alias("order_id"),
        pl.lit("tmall").alias("source"),
        pl.col("tb").alias("buyer_id_type"),
        pl.col("ib").alias("buyer_id"),
        pl.col("ia").alias("phone_sha256"),
        pl.col("ts").alias("paid_at"),
        pl.lit(100.0).alias("amount"),
    )
    identities = edges.filter(~is_order).select(
        pl.col("ta").alias("id_type_a"),
        pl.col("ia").alias("id_a"),
        pl.col("tb").alias("id_type_b"),
        pl.col("ib").alias("id_b"),
        pl.lit("crm").alias("source"),
        pl.col("ts").alias("observed_at"),
    )
    # Everyone shows up in events too (the lone identifiers only there).
    events = nodes.select(
        pl.col("id_type").alias("user_id_type"),
        pl.col("id").alias("user_id"),
        pl.lit(datetime(2025, 6, 1)).alias("ts"),
        pl.lit("view").alias("event"),
    )
    out.mkdir(parents=True, exist_ok=True)
    orders.write_parquet(out / "orders.parquet")
    identities.write_parquet(out / "identities.parquet")
    events.write_parquet(out / "events.parquet")
    return {
        "identifiers": n,
        "people_planted": people,
        "link_rows": len(ea),
        "orders": orders.height,
        "identities": identities.height,
        "cross_edges": n_cross,
        "hub_phones": len(hub_phones),
    }


def run(folder: Path, with_previous: bool) -> None:
    """Child process: scan the parquet tables and build the identity graph; print JSON.

    The first run saves its map as `previous.parquet`; with `with_previous` the build is a
    second week's, keeping one_ids stable against that map."""
    from segments.identity import IdentityConfig, build_identity

    tables = {
        name: pl.scan_parquet(folder / f"{name}.parquet")
        for name in ("orders", "identities", "events")
    }
    previous = pl.scan_parquet(folder / "previous.parquet") if with_previous else None
    t0 = time.perf_counter()
    result = build_identity(tables, IdentityConfig(), previous=previous, week_label="bench")
    seconds = time.perf_counter() - t0
    if not with_previous:
        result.one_id_map.select("one_id", "id_type", "id").write_parquet(
            folder / "previous.parquet"
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    stats = {k: v for k, v in result.stats.items() if k != "component_sizes"}
    report = {
        "seconds": round(seconds, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "stats": stats,
    }
    print(json.dumps(report))


def split(folder: Path, fraction: float, seed: int = 11) -> None:
    """Split each table into `base-<t>.parquet` and `new-<t>.parquet` (a random `fraction` of
    its rows): the next week's delivery, as new pieces beside the kept ones."""
    rng = np.random.default_rng(seed)
    for name in ("orders", "identities", "events"):
        df = pl.read_parquet(folder / f"{name}.parquet")
        new = rng.random(df.height) < fraction
        df.filter(~pl.Series(new)).write_parquet(folder / f"base-{name}.parquet")
        df.filter(pl.Series(new)).write_parquet(folder / f"new-{name}.parquet")


def run_incremental(folder: Path, week: str, check: bool) -> None:
    """Child process: `week` "base" builds from the base pieces with a node cache and keeps
    its map; "next" adds the new pieces and times the incremental build (with `check`, also
    a build without the cache, and asserts every output is the same)."""
    from segments.identity import (
        MAP_TOKEN_KEY,
        IdentityConfig,
        NodeCache,
        build_identity,
        map_token_of,
    )
    from segments.io import write_parquet
    from segments.runs import without_timings

    names = ("orders", "identities", "events")
    parts = ["base"] if week == "base" else ["base", "new"]
    pieces = {
        t: {f"{p}:-": pl.scan_parquet(folder / f"{p}-{t}.parquet") for p in parts} for t in names
    }
    tables = {t: pl.concat(list(ps.values())) for t, ps in pieces.items()}
    prev = folder / "previous.parquet"
    kwargs = {
        "previous": pl.scan_parquet(prev) if week == "next" else None,
        "previous_token": map_token_of(prev) if week == "next" else None,
        "week_label": week,
    }
    t0 = time.perf_counter()
    result = build_identity(
        tables, IdentityConfig(), node_cache=NodeCache(folder / "cache", pieces), **kwargs
    )
    seconds = time.perf_counter() - t0
    if week == "base":
        write_parquet(
            result.one_id_map.sort("id_type", "id"),
            prev,
            metadata={MAP_TOKEN_KEY: result.map_token},
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "seconds": round(seconds, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024),
        "steps": result.stats["seconds"],
        "graph": result.stats.get("graph"),
        "pieces": result.stats.get("pieces"),
    }
    if check and week == "next":
        t0 = time.perf_counter()
        cold = build_identity(tables, IdentityConfig(), **kwargs)
        report["cold_seconds"] = round(time.perf_counter() - t0, 2)
        for name in ("one_id_map", "rejected_links", "rejected_ids", "changes"):
            a, b = getattr(result, name), getattr(cold, name)
            keys = [c for c, t in a.schema.items() if not isinstance(t, pl.List)]
            if not a.sort(keys).equals(b.sort(keys)):
                raise SystemExit(f"incremental {name} differs from the cold build")
        if without_timings(result.stats) != without_timings(cold.stats):
            raise SystemExit("incremental stats differ from the cold build")
        if result.map_token != cold.map_token:
            raise SystemExit("incremental map token differs from the cold build")
        report["same_as_cold"] = True
    print(json.dumps(report))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3_000_000, help="identifiers (default 3M)")
    parser.add_argument("--m", type=int, default=2_500_000, help="link rows (default 2.5M)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--previous", action="store_true", help="also time a second week against the first map"
    )
    parser.add_argument(
        "--release-memory",
        action="store_true",
        help="run the build with _RJEM_MALLOC_CONF=dirty_decay_ms:0,muzzy_decay_ms:0 (polars' "
        "jemalloc returns freed pages at once: lower peak RSS)",
    )
    parser.add_argument(
        "--incremental",
        type=float,
        metavar="FRACTION",
        help="time the next week instead: a FRACTION of the rows is a new delivery folded "
        "into the kept graph (identity.NodeCache)",
    )
    parser.add_argument(
        "--check", action="store_true", help="with --incremental: assert it equals a cold build"
    )
    parser.add_argument("--run", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--week", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        if args.week:
            run_incremental(args.run, args.week, args.check)
        else:
            run(args.run, args.previous)
        return
    if args.incremental is not None:
        incremental(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench_identity_") as tmp:
        t0 = time.perf_counter()
        info = synthesise(args.n, args.m, Path(tmp), args.seed)
        print(f"synthesised in {time.perf_counter() - t0:.1f}s: {info}")
        weeks = [("first week", [])] + (
            [("with previous", ["--previous"])] if args.previous else []
        )
        for title, flags in weeks:
            env = dict(os.environ)
            if args.release_memory:
                env["_RJEM_MALLOC_CONF"] = "dirty_decay_ms:0,muzzy_decay_ms:0"
            child = subprocess.run(
                [sys.executable, __file__, "--run", tmp, *flags],
                capture_output=True,
                text=True,
                check=False,
                env=env,
            )
            if child.returncode != 0:
                sys.stderr.write(child.stderr)
                sys.exit(child.returncode)
            report = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"build_identity ({title}): {report['seconds']:.2f} s wall, "
                f"{report['cpu_seconds']} s CPU, peak RSS {report['peak_rss_mib']} MiB "
                "(whole child process, imports included)"
            )
            print(json.dumps(report["stats"], indent=1))


def incremental(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="bench_identity_") as tmp:
        t0 = time.perf_counter()
        info = synthesise(args.n, args.m, Path(tmp), args.seed)
        split(Path(tmp), args.incremental)
        print(f"synthesised in {time.perf_counter() - t0:.1f}s: {info}")
        for week in ("base", "next"):
            child = subprocess.run(
                [sys.executable, __file__, "--run", tmp, "--week", week]
                + (["--check"] if args.check else []),
                capture_output=True,
                text=True,
                check=False,
            )
            if child.returncode != 0:
                sys.stderr.write(child.stderr)
                sys.exit(child.returncode)
            report = json.loads(child.stdout.strip().splitlines()[-1])
            print(f"{week}: {json.dumps(report)}")


if __name__ == "__main__":
    main()
