"""Settings of the clustering stage (`[clustering]`): feature families, k, names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from segments.names import DEFAULT_INTERESTS

MAX_CLUSTERS = 64


INTERESTS = tuple(DEFAULT_INTERESTS)


INTEREST_LABELS = dict(DEFAULT_INTERESTS)


_INTEREST_COLUMNS = tuple(f"interest_{n}" for n in INTERESTS)


class ClusteringFeatures(BaseModel):
    """Feature families: which tag columns enter the clustering and how each is transformed.

    `money` and `counts` go through sign(x)·log1p(|x|), `shares` (shares, scores, rates,
    booleans) are taken as they are; all three are then scaled by the configured scaler.
    `unscaled` columns are used as they are without scaling (e.g. a 0-1 score whose spread is
    so small that scaling would blow it up); `categorical` columns are one-hot encoded. Columns
    absent from the tag table are skipped.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    money: tuple[str, ...] = ("monetary_52w", "monetary_13w", "aov_52w", "predicted_value_52w")
    counts: tuple[str, ...] = (
        "recency_days",
        "frequency_52w",
        "frequency_13w",
        "tenure_weeks",
        "messages_13w",
        "events_13w",
    )
    shares: tuple[str, ...] = (
        "trend_13w",
        "discount_share",
        "refund_rate_52w",
        "p_alive",
        *_INTEREST_COLUMNS,
        "koc_score",
        "deal_seeking_share",
        "coupon_hunter_score",
        "promo_order_share_52w",
        "is_high_value",
    )
    categorical: tuple[str, ...] = ("lifecycle_stage", "aipl_stage")
    unscaled: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _disjoint(self) -> ClusteringFeatures:
        seen: dict[str, str] = {}
        twice = []
        for family in ("money", "counts", "shares", "unscaled", "categorical"):
            for c in getattr(self, family):
                if c in seen:
                    twice.append(f"'{c}' in both {seen[c]} and {family}")
                seen[c] = family
        if twice:
            raise ValueError("a column belongs to one feature family only: " + "; ".join(twice))
        return self


_ZERO_WHEN_MISSING = (
    "monetary_52w",
    "monetary_13w",
    "aov_52w",
    "predicted_value_52w",
    "frequency_52w",
    "frequency_13w",
    "messages_13w",
    "events_13w",
    *_INTEREST_COLUMNS,
    "koc_score",
)


_PROFILE_TAGS = (
    "recency_days",
    "frequency_52w",
    "monetary_52w",
    "aov_52w",
    "tenure_weeks",
    "trend_13w",
    "discount_share",
    "refund_rate_52w",
    "p_alive",
    "predicted_value_52w",
    "is_high_value",
    "messages_13w",
    "koc_score",
    "events_13w",
    "deal_seeking_share",
    "coupon_hunter_score",
    "promo_order_share_52w",
    *_INTEREST_COLUMNS,
)


class ClusteringConfig(BaseModel):
    """Settings of the clustering stage.

    k: a fixed number of clusters, or None to choose it in `k_range` (inclusive) by the
    silhouette on `silhouette_sample` fitted rows (the first week only: later weeks keep the
    previous k unless `k` is set to another number). `fill_values`: a value, in the column's own
    units, given to nulls of that column (null recency = never bought = long ago; a missing
    count = none); other numeric nulls get the median. `drift_threshold`: a centroid shift (in
    scaled feature units) above which a cluster is reported `drifted`; `size_drift_threshold`:
    the same for a relative size change. `renumber_shift`: a matched cluster that moved further
    than this is a different group and gets a new number (None: never). `threads`: threads for
    k-means (None: all cores; 1 by default, which on a shared machine is the fastest).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: ClusteringFeatures = ClusteringFeatures()
    fill_values: dict[str, float] = Field(
        default_factory=lambda: {"recency_days": 1095.0, **dict.fromkeys(_ZERO_WHEN_MISSING, 0.0)}
    )
    scaler: Literal["robust", "quantile"] = (
        "quantile"  # robust scaling lets a few outliers own whole clusters
    )
    k: int | None = Field(None, ge=2, le=MAX_CLUSTERS)
    k_range: tuple[int, int] = (4, 10)
    silhouette_sample: int = Field(20_000, ge=100)
    algorithm: Literal["minibatch", "kmeans"] = "minibatch"
    random_state: int = Field(0, ge=0)
    threads: int | None = Field(1, ge=1)
    fit_sample: int = Field(200_000, ge=100)
    max_categories: int = Field(32, ge=1)
    drift_threshold: float = Field(0.5, gt=0)
    size_drift_threshold: float = Field(0.5, gt=0)
    renumber_shift: float | None = Field(3.0, gt=0)
    profile_tags: tuple[str, ...] = _PROFILE_TAGS
    interest_labels: dict[str, str] = Field(default_factory=lambda: dict(INTEREST_LABELS))
    name_lift: float = Field(1.5, gt=1)
    low_lift: float = Field(0.67, gt=0, lt=1)
    interest_lift: float = Field(1.3, gt=1)
    interest_min: float = Field(0.1, ge=0)

    @model_validator(mode="after")
    def _k_range(self) -> ClusteringConfig:
        lo, hi = self.k_range
        if not 2 <= lo <= hi <= MAX_CLUSTERS:
            raise ValueError(f"k_range must be [lo, hi] with 2 <= lo <= hi <= {MAX_CLUSTERS}")
        return self
