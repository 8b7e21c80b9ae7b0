"""`segments eval`'s per-family measures on hand-computed tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import adjusted_rand_score

from segments.evaluate import baseline_kmeans, cluster_metrics, hunter_metrics, interest_metrics


def _by_metric(metrics):
    return {m.metric: m for m in metrics}


def test_primary_interest_precision_is_over_everyone_assigned_and_coverage_over_signals() -> None:
    people = pl.DataFrame(
        {
            "primary_interest": ["camping", "camping", "hiking", None, "fishing", "skiing"],
            "primary_interest_tag": ["camping", "hiking", "hiking", "camping", None, None],
            "interest_signal_count": [6, 2, 9, 3, 1, 0],
        }
    )
    m = _by_metric(interest_metrics(people))
    # assigned: rows 0-3; right: rows 0 and 2 (row 3 has no planted interest: wrong)
    assert m["precision (everyone assigned)"].value == pytest.approx(2 / 4)
    assert m["precision (everyone assigned)"].n == 4
    # eligible: planted interest and >= 1 signal: rows 0, 1, 2, 4; assigned: 0, 1, 2
    assert m["coverage (planted interest, any signal)"].value == pytest.approx(3 / 4)
    assert m["coverage (planted interest, any signal)"].n == 4
    # 5+ signals: rows 0 and 2, both right
    assert m["top-1 accuracy (>= 5 signals)"].value == 1.0
    assert m["top-1 accuracy (>= 5 signals)"].target is None


def test_hunter_precision_and_coverage() -> None:
    people = pl.DataFrame(
        {
            "is_coupon_hunter": [True, True, True, False, False],
            "is_coupon_hunter_tag": [True, True, None, True, False],
        }
    )
    m = _by_metric(hunter_metrics(people))
    assert m["precision"].value == pytest.approx(2 / 3)
    assert m["coverage (recall)"].value == pytest.approx(2 / 3)
    assert m["precision"].passed is False


def _tags(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """Two planted groups told apart only by log-scale money and a score: raw money would be
    dominated by a few huge spenders, standardised logs are not."""
    group = np.repeat([0, 1], n // 2)
    money = np.where(group == 0, 100.0, 1000.0) * rng.lognormal(0, 0.3, n)
    money[:3] = 1e7  # three outliers
    return pl.DataFrame(
        {
            "persona": np.where(group == 0, "a", "b"),
            "cluster": group,
            "recency_days": rng.integers(1, 60, n),
            "frequency_52w": rng.integers(1, 4, n),
            "monetary_52w": money,
            "aov_52w": money / 2,
            "coupon_hunter_score": np.where(group == 0, 0.6, 0.1) + rng.normal(0, 0.02, n),
        }
    )


def test_baseline_is_standardised_so_a_few_outliers_do_not_own_it() -> None:
    df = _tags(np.random.default_rng(0), 200)
    labels = baseline_kmeans(df, 2)
    assert adjusted_rand_score(df["persona"].to_list(), labels) > 0.9
    # the unscaled version of the same data fails: the outliers own a cluster
    from sklearn.cluster import KMeans

    raw = KMeans(2, n_init=10, random_state=0).fit_predict(
        df.select("recency_days", "frequency_52w", "monetary_52w").to_numpy().astype(float)
    )
    assert adjusted_rand_score(df["persona"].to_list(), raw) < 0.1


def test_cluster_metrics_report_both_aris_and_a_target_above_the_baseline() -> None:
    df = _tags(np.random.default_rng(1), 200)
    m = _by_metric(cluster_metrics(df))
    ari, base = m["adjusted Rand index vs personas"], m["ARI of standardised KMeans (baseline)"]
    assert ari.value == 1.0
    assert ari.target == pytest.approx(max(0.45, base.value + 0.1))
    shuffled = df.with_columns(pl.Series("cluster", np.random.default_rng(2).integers(0, 2, 200)))
    assert _by_metric(cluster_metrics(shuffled))["adjusted Rand index vs personas"].passed is False


def test_eval_reports_the_demo_constants_the_truth_records(tmp_path: Path) -> None:
    from segments.demo.constants import RANGES, draw
    from segments.evaluate import demo_constants

    assert demo_constants(tmp_path) == []  # a truth folder without the record
    drawn = draw(5, {"hunter_share": 0.5})
    (tmp_path / "constants.json").write_text(drawn.to_json("b"), encoding="utf-8")
    rows = {m.metric: m for m in demo_constants(tmp_path)}
    assert {m.tag for m in rows.values()} == {"(demo, vocabulary b)"}
    moved = rows["hunter_share drawn (moved x0.5)"]
    assert moved.value == pytest.approx(drawn.knobs["hunter_share"], abs=1e-6)
    assert rows["order_value drawn"].value == pytest.approx(drawn.knobs["order_value"], abs=1e-6)
    assert len([k for k in rows if " drawn" in k]) == len(RANGES)
    shift = rows["promotion shift, largest (days)"].value
    assert shift == max(abs(s) for s in drawn.promo_shift_days)
    assert all(m.target is None and m.passed is None for m in rows.values())
