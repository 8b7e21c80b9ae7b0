"""Cluster profiles (sizes, means, lifts) and the Chinese names and English keys they give."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from segments.clustering.space import _is_numeric
from segments.settings.clustering import ClusteringConfig

# Lifecycle stage -> (Chinese word, English key, leads the name?).
_LIFECYCLE_WORDS = {
    "new": ("新客", "new", True),
    "active": ("活跃", "active", False),
    "at_risk": ("流失风险", "at_risk", False),
    "lapsed": ("沉睡", "dormant", True),
    "churned": ("流失", "churned", True),
    "prospect": ("潜客", "prospect", True),
}


def _lift(row: dict[str, Any], tag: str) -> float | None:
    v = row.get(f"lift_{tag}")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _name_parts(row: dict[str, Any], cfg: ClusteringConfig) -> list[tuple[str, str, str]]:
    """(slot, Chinese word, English key) naming words of one profile row, display-ordered."""
    hi, lo = cfg.name_lift, cfg.low_lift
    words: dict[str, tuple[str, str]] = {}

    def at_least(tag: str, level: float) -> bool:
        v = _lift(row, tag)
        return v is not None and v >= level

    def at_most(tag: str, level: float) -> bool:
        v = _lift(row, tag)
        return v is not None and v <= level

    mean_hv = row.get("mean_is_high_value")
    hunters = row.get("mean_is_coupon_hunter")
    if hunters is not None and hunters >= cfg.hunter_majority:
        words["value"] = ("羊毛党", "coupon_hunter")
    elif at_least("monetary_52w", hi) or (
        at_least("is_high_value", hi) and mean_hv is not None and mean_hv >= 0.5
    ):
        words["value"] = ("高价值", "high_value")
    if any(
        at_least(t, hi) for t in ("discount_share", "deal_seeking_share", "promo_order_share_52w")
    ):
        words["promo"] = ("高优惠敏感", "promo_sensitive")
    best, best_lift = None, cfg.interest_lift
    for name in cfg.interest_labels:
        v, m = _lift(row, f"interest_{name}"), row.get(f"mean_interest_{name}")
        if (
            v is not None
            and m is not None
            and m >= cfg.interest_min
            and (v > best_lift or (best is None and v >= best_lift))
        ):
            best, best_lift = name, v
    if best is not None:
        words["interest"] = (cfg.interest_labels[best], best)
    stage, stage_share = row.get("top_lifecycle"), row.get("top_lifecycle_share")
    lead = False
    if stage in _LIFECYCLE_WORDS and stage_share is not None and stage_share >= 0.5:
        zh, en, lead = _LIFECYCLE_WORDS[stage]
        words["activity"] = (zh, en)
    elif at_most("tenure_weeks", lo):
        words["activity"], lead = ("新客", "new"), True
    elif at_least("recency_days", 2.0):
        words["activity"], lead = ("沉睡", "dormant"), True
    elif at_most("recency_days", 0.5):
        words["activity"] = ("活跃", "active")
    if at_most("frequency_52w", lo):
        words["frequency"] = ("低频", "low_freq")
    elif at_least("frequency_52w", 2.0):
        words["frequency"] = ("高频", "high_freq")
    chosen = [s for s in ("value", "activity", "interest", "promo", "frequency") if s in words][:3]
    order = ["lead", "value", "promo", "interest", "trail", "frequency"]
    slots = [("lead" if lead else "trail") if s == "activity" else s for s in chosen]
    parts = [(slot, *words[s]) for s, slot in zip(chosen, slots, strict=True)]
    return sorted(parts, key=lambda p: order.index(p[0]))


def cluster_names(
    profiles: pl.DataFrame, cfg: ClusteringConfig | None = None
) -> tuple[list[str], list[str]]:
    """(Chinese names, English keys) for the rows of a profile table, unique within it.

    Words: a value word (羊毛党 where flagged coupon hunters are at least `hunter_majority` of
    the cluster, else 高价值 from the monetary or high-value lift), 高优惠敏感 (discount/deal/promo lift), the interest with the highest
    affinity lift (>= interest_lift, mean >= interest_min), an activity word from the modal
    lifecycle stage (held by >= half the cluster) or else from tenure/recency lifts, and
    低频/高频 from the frequency lift; at most three, by that priority, joined with "·". A
    cluster with none is 大众. When names repeat, the later clusters get 2, 3, ... appended.
    """
    cfg = cfg or ClusteringConfig()
    zh_names, en_keys = [], []
    for row in profiles.iter_rows(named=True):
        parts = _name_parts(row, cfg)
        zh_names.append("·".join(p[1] for p in parts) or "大众")
        en_keys.append("-".join(p[2] for p in parts) or "mainstream")
    return _unique(zh_names, ""), _unique(en_keys, "-")


def _unique(names: list[str], sep: str) -> list[str]:
    bare = set(names)
    used: set[str] = set()
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in used or (candidate != name and candidate in bare):
            n += 1
            candidate = f"{name}{sep}{n}"
        used.add(candidate)
        out.append(candidate)
    return out


def _cluster_means(
    df: pl.DataFrame, labels: np.ndarray, tags: list[str]
) -> tuple[pl.DataFrame, dict[str, float | None]]:
    """cluster, size and mean_<tag> (nulls ignored), sorted by cluster; and each tag's
    population mean (None when every value is null).

    One column at a time in float64, with no copy of the table (at 10M people the numeric
    tags are 4 GiB). Each cluster's values are added in row order (`np.bincount`) and the
    population's total is numpy's sum of the clusters' totals (a fixed order for a given k),
    so the means are the same from run to run (a parallel group-by adds partial float sums in
    no fixed order), and a single cluster's lift is exactly 1."""
    clusters, idx = np.unique(labels, return_inverse=True)
    k = len(clusters)
    cols: dict[str, pl.Series] = {
        "cluster": pl.Series("cluster", clusters, dtype=pl.Int32),
        "size": pl.Series("size", np.bincount(idx, minlength=k), dtype=pl.Int64),
    }
    pop: dict[str, float | None] = {}
    for t in tags:
        column = df.get_column(t).cast(pl.Float64)
        valid = column.is_not_null().to_numpy()
        values = column.fill_null(0.0).to_numpy()
        count = np.bincount(idx, weights=valid, minlength=k)
        total = np.bincount(idx, weights=values, minlength=k)
        means = [float(s) / c if c else None for s, c in zip(total, count, strict=True)]
        cols[f"mean_{t}"] = pl.Series(f"mean_{t}", means, dtype=pl.Float64)
        n_valid = float(count.sum())  # the population: the clusters' sums added
        pop[t] = float(total.sum()) / n_valid if n_valid else None
    return pl.DataFrame(list(cols.values())), pop


def _ratios(values: pl.Series, by: float | None) -> list[float | None]:
    """values / by, each by true division; all null when `by` is null, 0 or NaN."""
    if by is None or by == 0.0 or math.isnan(by):
        return [None] * values.len()
    return [None if v is None else v / by for v in values.to_list()]


def profile_clusters(
    df: pl.DataFrame,
    labels: Sequence[int] | np.ndarray | pl.Series,
    cfg: ClusteringConfig | None = None,
    drift: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """One row per cluster: who is in it, how it differs from everyone, and its name.

    In: the tag table and each row's cluster number (same order and length). Out: cluster
    (Int32), cluster_name (Chinese), cluster_key (English), size, share, top_lifecycle and
    top_lifecycle_share (when lifecycle_stage is present), the `drift` columns (prev_share,
    share_change, size_change, centroid_shift, drift_status) when given, then for every
    numeric or boolean column of `cfg.profile_tags` and of the numeric feature families present
    (in that order): mean_<tag> (nulls ignored) and
    lift_<tag> = mean_<tag> / population mean (null when the population mean is 0 or null).
    Sorted by cluster.
    """
    cfg = cfg or ClusteringConfig()
    lab = pl.Series("cluster", np.asarray(labels), dtype=pl.Int32)
    if lab.len() != df.height:
        raise ValueError(f"profile_clusters: {lab.len()} labels for {df.height} rows")
    f = cfg.features
    wanted = dict.fromkeys((*cfg.profile_tags, *f.money, *f.counts, *f.shares, *f.unscaled))
    tags = [c for c in wanted if c in df.columns and _is_numeric(df.schema[c])]
    n = df.height
    prof, pop = _cluster_means(df, lab.to_numpy(), tags)
    # Shares and lifts are divided in Python: polars divides a chunk of two or more rows by a
    # number as a multiplication by its reciprocal, and a chunk of one row by true division,
    # so these profiles (one row per cluster, in either layout) gave 46/416 as
    # 0.11057692307692307 in one run and 0.11057692307692309 in another.
    prof = prof.with_columns(
        pl.Series("share", [s / n for s in prof.get_column("size").to_list()], pl.Float64),
        *[
            pl.Series(f"lift_{t}", _ratios(prof.get_column(f"mean_{t}"), pop[t]), pl.Float64)
            for t in tags
        ],
    )
    extra: list[str] = []
    if "lifecycle_stage" in df.columns:
        life = (
            df.select(pl.col("lifecycle_stage").cast(pl.String))
            .with_columns(lab)
            .group_by("cluster", "lifecycle_stage")
            .len()
            .sort(
                ["cluster", "len", "lifecycle_stage"],
                descending=[False, True, False],
                nulls_last=True,
            )
            .group_by("cluster", maintain_order=True)
            .agg(
                pl.col("lifecycle_stage").first().alias("top_lifecycle"),
                (pl.col("len").first() / pl.col("len").sum()).alias("top_lifecycle_share"),
            )
        )
        prof = prof.join(life, on="cluster", how="left")
        extra = ["top_lifecycle", "top_lifecycle_share"]
    zh, en = cluster_names(prof, cfg)
    prof = prof.with_columns(
        pl.Series("cluster_name", zh, pl.String), pl.Series("cluster_key", en, pl.String)
    )
    drift_cols: list[str] = []
    if drift is not None:
        d = drift.drop("share", strict=False).with_columns(pl.col("cluster").cast(pl.Int32))
        prof = prof.join(d, on="cluster", how="left")
        drift_cols = [c for c in d.columns if c != "cluster"]
    metric_cols = [c for t in tags for c in (f"mean_{t}", f"lift_{t}")]
    return prof.select(
        "cluster", "cluster_name", "cluster_key", "size", "share", *extra, *drift_cols, *metric_cols
    )
