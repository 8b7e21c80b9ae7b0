"""Benchmark `cluster_stage`: fit on a 200k hash sample, predict everyone in float32.

    python benchmarks/bench_clustering.py --users 2000000            # k chosen in k_range
    python benchmarks/bench_clustering.py --users 2000000 --k 8      # fixed k
    python benchmarks/bench_clustering.py --sizes 20000,100000,1000000   # choosing k, per size

Synthesises a weekly tag table of `--users` people with ~60 clustering features (money and
count columns, shares and scores, 22 interest affinities, two categoricals) drawn from a few
planted personas, then times, on that table:
  - week W: `cluster_stage` without previous state (hash sample, fit, predict, profiles);
  - week W+1: `cluster_stage` again with W's state on a slightly shifted population (reused
    feature space, k-means started from W's centroids);
and reports the share of people whose cluster number stayed the same, the adjusted Rand index
against the planted personas, seconds per phase and the peak RSS of the process.

`--sizes` times only week W's `cluster_stage` (k chosen) at each population, wall and CPU
seconds: choosing k works on a fixed-size sample, so the time grows far slower than the rows.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import polars as pl
from sklearn.metrics import adjusted_rand_score

from segments.clustering import (
    INTERESTS,
    ClusteringConfig,
    ClusteringFeatures,
    cluster_stage,
    fit_stable,
)

MONEY = ["monetary_52w", "monetary_13w", "monetary_26w", "monetary_4w", "aov_52w", "aov_13w",
         "predicted_value_52w", "discount_amount_52w"]  # fmt: skip
COUNTS = ["recency_days", "frequency_52w", "frequency_13w", "frequency_26w", "frequency_4w",
          "tenure_weeks", "messages_13w", "events_13w", "events_4w", "coupon_claims_13w"]  # fmt: skip
SCORES = ["trend_13w", "discount_share", "refund_rate_52w", "p_alive", "koc_score",
          "deal_seeking_share", "coupon_hunter_score", "promo_order_share_52w", "promo_sensitivity",
          "share_of_wallet", "repeat_rate", "night_share", "mobile_share", "is_high_value"]  # fmt: skip
INTEREST_COLS = [f"interest_{n}" for n in INTERESTS] + [f"interest_{n}_expanded" for n in INTERESTS]
STAGES = np.array(["new", "active", "at_risk", "lapsed", "churned", "prospect"])
AIPL = np.array(["awareness", "interest", "purchase", "loyalty"])


def synthesise(n: int, seed: int = 7, shift: float = 0.0) -> tuple[pl.DataFrame, np.ndarray]:
    """A tag table of n people from 6 personas; `shift` nudges every numeric column."""
    rng = np.random.default_rng(seed)
    persona = rng.choice(6, n, p=[0.1, 0.15, 0.25, 0.2, 0.15, 0.15])
    level = np.array([8.5, 6.0, 5.5, 4.0, 6.5, 0.0])[persona]  # log money by persona
    freq = np.array([8.0, 5.0, 1.5, 0.3, 1.0, 0.0])[persona]
    cols: dict[str, np.ndarray] = {"one_id": np.char.add("u", np.arange(n).astype(str))}
    for i, c in enumerate(MONEY):
        cols[c] = np.exp(level + rng.normal(0, 0.5, n) - 0.2 * i) * (persona != 5) * (1 + shift)
    recency = np.array([10, 20, 40, 400, 15, 0])[persona] * rng.uniform(0.5, 1.5, n) * (1 + shift)
    for c in COUNTS:
        cols[c] = rng.poisson(freq + shift).astype(np.int64)
    cols["recency_days"] = np.where(persona == 5, -1, recency.astype(np.int64))
    cols["tenure_weeks"] = np.where(persona == 4, rng.integers(0, 6, n), rng.integers(6, 300, n))
    for i, c in enumerate(SCORES):
        base = np.array([0.1, 0.6, 0.2, 0.1, 0.2, 0.0])[persona] if i < 9 else rng.random(n) * 0.3
        cols[c] = np.clip(base + rng.normal(0, 0.1, n) + shift, 0, 1)
    cols["is_high_value"] = persona == 0
    # Interest affinities as `interests.py` makes them: 1 - 2^(-score), exactly 0 without signal.
    top = rng.integers(0, len(INTERESTS), n)
    for j, c in enumerate(INTEREST_COLS):
        signal = ((top == j % len(INTERESTS)) | (rng.random(n) < 0.05)) & (persona != 5)
        cols[c] = np.where(signal, 1 - 2.0 ** -rng.gamma(2.0, 1.0, n), 0.0)
    cols["lifecycle_stage"] = STAGES[np.array([1, 1, 2, 3, 0, 5])[persona]]
    cols["aipl_stage"] = AIPL[np.minimum(persona, 3)]
    df = pl.DataFrame(cols).with_columns(
        pl.when(pl.col("recency_days") < 0)
        .then(None)
        .otherwise(pl.col("recency_days"))
        .alias("recency_days")
    )
    return df, persona


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=2_000_000)
    ap.add_argument("--k", type=int, default=None, help="fixed k (default: k_range by silhouette)")
    ap.add_argument("--algorithm", default=None, choices=["minibatch", "kmeans"])
    ap.add_argument("--sizes", default=None, help="comma-separated populations: time each")
    args = ap.parse_args()

    cfg = ClusteringConfig(
        features=ClusteringFeatures(
            money=tuple(MONEY),
            counts=tuple(COUNTS),
            shares=tuple(SCORES + INTEREST_COLS),
            categorical=("lifecycle_stage", "aipl_stage"),
        ),
        k=args.k,
        **({"algorithm": args.algorithm} if args.algorithm else {}),
    )
    if args.sizes:
        for n in (int(v) for v in args.sizes.split(",")):
            df, persona = synthesise(n)
            t0, c0 = time.perf_counter(), time.process_time()
            a, _, s = cluster_stage(df, cfg, week="2026-W20")
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            ari = adjusted_rand_score(persona, a["cluster"].to_numpy())
            print(
                f"{n:>10,} people: cluster_stage {wall:.2f}s wall, {cpu:.2f}s CPU, k={s.k}, ARI {ari:.3f}"
            )
        return
    (df, persona), t_syn = timed(lambda: synthesise(args.users))
    print(f"synthesised {df.height:,} users x {df.width - 1} tag columns in {t_syn:.1f}s")
    print(f"peak RSS after synthesis: {peak_rss_mb():,.0f} MB")

    (est, state), t_fit = timed(lambda: fit_stable(df, cfg))
    print(
        f"fit_stable alone (hash sample {min(cfg.fit_sample, df.height):,} rows, "
        f"{len(state.feature_names)} features, k={state.k}): {t_fit:.2f}s"
    )
    if state.k_scores:
        print("  silhouette by k: " + ", ".join(f"{k}: {s:.3f}" for k, s in state.k_scores))
    _, t_pred = timed(lambda: est.predict(df))
    print(f"predict all {df.height:,} (float32): {t_pred:.2f}s")

    (a1, p1, s1), t1 = timed(lambda: cluster_stage(df, cfg, week="2026-W20"))
    print(f"cluster_stage week W (fit + predict + profiles): {t1:.2f}s")
    print(
        f"  ARI vs planted personas: {adjusted_rand_score(persona, a1['cluster'].to_numpy()):.3f}"
    )
    print(
        "  " + ", ".join(f"{c}:{n}" for c, n in zip(p1["cluster"], p1["cluster_name"], strict=True))
    )
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")

    df2, _ = synthesise(args.users, seed=7, shift=0.03)
    (a2, p2, _), t2 = timed(lambda: cluster_stage(df2, cfg, s1, week="2026-W21"))
    same = a1.join(a2, on="one_id", suffix="_next").select(
        (pl.col("cluster") == pl.col("cluster_next")).mean()
    )
    print(f"cluster_stage week W+1 with W's state: {t2:.2f}s; kept their number: {same.item():.1%}")
    for row in p2.select("cluster", "drift_status", "centroid_shift", "size_change").iter_rows():
        print("  cluster {}: {} (centroid shift {:.3f}, size change {:+.1%})".format(*row))
    print(f"peak RSS: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
