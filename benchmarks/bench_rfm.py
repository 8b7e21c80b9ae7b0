"""Benchmark `rfm_features` against the same R/F/M aggregation in DuckDB SQL.

    python benchmarks/bench_rfm.py --orders 10000000 --users 2000000

Synthesises orders (two years, a mix of statuses, refunds, zero amounts) into one Parquet
file, then times, over that file:
  - polars `rfm_features` (every feature), collected with the streaming engine;
  - polars R/F/M only (recency, frequency/monetary over 1..52 weeks and lifetime), the same
    aggregation as the SQL, to compare like with like;
  - DuckDB SQL of that R/F/M aggregation;
and checks that the R/F/M columns of all three agree. Then the history path: build the
weekly panel once, and the snapshots of `--history` weeks from the panel alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from segments.stages.rfm import (
    PANEL_FEATURE_COLUMNS,
    WINDOWS,
    counted_orders,
    rfm_features,
    snapshot_from_panel,
    weekly_panel,
)
from segments.weeks import Week

RFM = [
    "one_id",
    "recency_days",
    *(c for n in WINDOWS for c in (f"frequency_{n}w", f"monetary_{n}w")),
    "frequency_lifetime",
    "monetary_lifetime",
]


def synthesise(n: int, users: int, path: Path, seed: int = 11) -> None:
    rng = np.random.default_rng(seed)
    start = datetime(2025, 1, 6).timestamp()
    span = 2 * 364 * 86400
    # Heavy-tailed buyers: a few buy often, most once or twice.
    buyer = np.minimum((rng.pareto(1.2, n) * users / 8).astype(np.int64), users - 1)
    amount = np.round(rng.gamma(2.0, 250.0, n), 2)
    amount[rng.random(n) < 0.01] = 0.0
    kind = rng.random(n)
    refund = np.where(kind < 0.05, amount, np.where(kind < 0.12, np.round(amount * 0.3, 2), 0.0))
    status = rng.choice(np.array([0, 1, 2, 3], dtype=np.int8), n, p=[0.75, 0.05, 0.05, 0.15])
    df = pl.DataFrame(
        {
            "order_id": pl.int_range(0, n, eager=True).cast(pl.String),
            "one_id": pl.Series(buyer).cast(pl.String).str.zfill(9),
            "paid_at": pl.Series((start + rng.random(n) * span) * 1e6)
            .cast(pl.Int64)
            .cast(pl.Datetime("us")),
            "amount": amount,
            "discount": np.round(rng.random(n) * 50, 2),
            "refund": refund,
            "status": pl.Series(status).replace_strict(
                {0: "paid", 1: "refunded", 2: "cancelled", 3: None}, return_dtype=pl.String
            ),
            "quantity": rng.integers(1, 4, n),
        }
    )
    df.write_parquet(path)


def polars_rfm_only(orders: pl.LazyFrame, week: Week) -> pl.LazyFrame:
    c = counted_orders(orders, week)
    paid_at, kept = pl.col("paid_at"), pl.col("kept")
    return c.group_by("one_id").agg(
        (pl.lit(week.sunday) - paid_at.max().dt.date()).dt.total_days().alias("recency_days"),
        *(
            e
            for n in WINDOWS
            for e in (
                (paid_at >= week.window_start(n)).sum().cast(pl.Int64).alias(f"frequency_{n}w"),
                kept.filter(paid_at >= week.window_start(n)).sum().alias(f"monetary_{n}w"),
            )
        ),
        pl.len().cast(pl.Int64).alias("frequency_lifetime"),
        kept.sum().alias("monetary_lifetime"),
    )


def duckdb_rfm(path: Path, week: Week) -> pl.DataFrame:
    windows = ",\n".join(
        f"count(*) FILTER (WHERE paid_at >= $end - INTERVAL {7 * n} DAY) AS frequency_{n}w, "
        f"coalesce(sum(kept) FILTER (WHERE paid_at >= $end - INTERVAL {7 * n} DAY), 0) AS monetary_{n}w"
        for n in WINDOWS
    )
    sql = f"""
        SELECT one_id,
               date_diff('day', CAST(max(paid_at) AS DATE), $sunday) AS recency_days,
               {windows},
               count(*) AS frequency_lifetime,
               sum(kept) AS monetary_lifetime
        FROM (
            SELECT one_id, paid_at, amount - coalesce(refund, 0) AS kept
            FROM read_parquet('{path}')
            WHERE coalesce(status, 'paid') = 'paid' AND amount - coalesce(refund, 0) > 0
              AND paid_at < $end AND one_id IS NOT NULL
        )
        GROUP BY one_id
    """
    con = duckdb.connect()
    rel = con.sql(sql, params={"end": week.end, "sunday": week.sunday})
    return pl.from_arrow(rel.to_arrow_table())


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=10_000_000)
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--week", default="2026-W20")
    ap.add_argument("--engine", default="streaming", choices=["streaming", "in-memory", "auto"])
    ap.add_argument("--history", type=int, default=13, help="weeks of snapshots from the panel")
    args = ap.parse_args()
    week = Week.parse(args.week)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "orders.parquet"
        _, t_syn = timed(lambda: synthesise(args.orders, args.users, path))
        print(f"synthesised {args.orders:,} orders, {args.users:,} users in {t_syn:.1f}s")
        lf = pl.scan_parquet(path)

        full, t_full = timed(lambda: rfm_features(lf, week).collect(engine=args.engine))
        core, t_core = timed(lambda: polars_rfm_only(lf, week).collect(engine=args.engine))
        ddb, t_ddb = timed(lambda: duckdb_rfm(path, week))

        key = ["one_id"]
        a = full.select(RFM).sort(key)
        b = core.select(RFM).sort(key)
        c = (
            ddb.with_columns(pl.col("^frequency_.*$", "recency_days").cast(pl.Int64))
            .select(RFM)
            .sort(key)
        )
        assert_frame_equal(a, b, check_exact=False, rel_tol=1e-9)
        assert_frame_equal(a, c, check_exact=False, rel_tol=1e-9)

        print(f"as of {week.label}: {full.height:,} customers, {full.width} feature columns")
        print(f"polars rfm_features (all features, {args.engine}): {t_full:8.2f}s")
        print(f"polars R/F/M only ({args.engine}):                 {t_core:8.2f}s")
        print(f"duckdb R/F/M SQL:                                 {t_ddb:8.2f}s")
        print(f"ratio rfm_features / duckdb: {t_full / t_ddb:.2f}")
        print(f"ratio R/F/M polars / duckdb: {t_core / t_ddb:.2f}")

        panel, t_panel = timed(lambda: weekly_panel(lf).collect(engine=args.engine))
        weeks = [week.shift(-k) for k in range(args.history)]
        snap, t_snap = timed(
            lambda: snapshot_from_panel(panel.lazy(), weeks).collect(engine=args.engine)
        )
        same = snap.filter(pl.col("week") == week.label).drop("week").sort(key)
        assert_frame_equal(
            same, full.select(PANEL_FEATURE_COLUMNS).sort(key), check_exact=False, rel_tol=1e-9
        )
        print(f"weekly_panel ({panel.height:,} rows):                 {t_panel:8.2f}s")
        print(
            f"snapshot_from_panel, {args.history} weeks ({snap.height:,} rows): {t_snap:8.2f}s"
            f" ({t_snap / args.history:.2f}s a week)"
        )


if __name__ == "__main__":
    main()
