"""Settings of the clustering stage (`[clustering]`): feature families, k, names."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from segments.names import DEFAULT_INTERESTS

MAX_CLUSTERS = 64


INTERESTS = tuple(DEFAULT_INTERESTS)


INTEREST_LABELS = dict(DEFAULT_INTERESTS)


_INTEREST_COLUMNS = tuple(f"interest_{n}" for n in INTERESTS)


# Behaviour groups: each group weighs the same in the distance whatever its column count (a
# column weighs group_weight / sqrt(columns of the group present)). Interests are not a
# behaviour group: they are tags of their own (primary_interest, interests) and name clusters.
#
# Only observed behaviour enters the distance, not tags computed from other columns of it:
# p_alive and predicted_value_52w are BG/NBD and Gamma-Gamma functions of recency, frequency,
# tenure and order value, and trend_13w a ratio of the 13-week spends, so each counted its
# behaviour a second time. Without them the tuning seed's clusters read ARI 0.768 against
# 0.706, and the k rule keeps one k more often across seeds (docs/evaluation.md).
#
# Recency is the days since the person last bought *or* did anything the events record
# (`least`: active_recency_days), not since their last order alone: someone who joined last
# month and browsed yesterday but never bought is recent, not three years lapsed. Order value
# and discount share are undefined without an order, so a non-buyer gets the buyers' median
# (the imputer's default), not 0: a zero made non-buyers the cheapest buyers, with no
# discount, and made both columns repeat frequency's buyer / non-buyer split
# (docs/evaluation.md, "Recency of any activity").
_GROUPS: dict[str, tuple[str, ...]] = {
    "recency": ("active_recency_days",),
    "frequency": ("frequency_52w", "frequency_13w"),
    "tenure": ("tenure_weeks",),
    "value": ("monetary_52w", "aov_52w"),
    "engagement": ("messages_13w", "events_13w", "koc_score"),
    "promotion": (
        "discount_share",
        "deal_seeking_share",
        "coupon_hunter_score",
        "promo_order_share_52w",
    ),
}


class ClusteringFeatures(BaseModel):
    """Feature families: which tag columns enter the clustering and how each is transformed.

    `money` and `counts` go through sign(x)·log1p(|x|), `shares` (shares, scores, rates,
    booleans) are taken as they are; all three are then scaled by the configured scaler.
    `unscaled` columns are used as they are without scaling (e.g. a 0-1 score whose spread is
    so small that scaling would blow it up); `categorical` columns are one-hot encoded. Columns
    absent from the tag table are skipped.

    `least` derives a feature from tag columns: its value is the least of theirs that is not
    null (`active_recency_days`: the days since the last order or event); the feature is
    present when any of its columns is, and used when a family names it. A configuration that
    lists its own `counts` or `groups` names `active_recency_days` there (a `recency_days` it
    lists instead is purchase recency, and falls in the "other" group unless a group names
    it); one that sets its own `fill_values` gives `active_recency_days` its 1095, or people
    seen nowhere get the median.

    `groups` name what a set of columns measures; after scaling, each column of a group is
    multiplied by group_weights[group] (default 1) / sqrt(the group's columns present), so a
    group of four columns weighs as much as a group of one. The numeric columns in no group
    form one group together ("other"), so columns added without a group cannot swamp the
    behaviour groups by their number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    money: tuple[str, ...] = ("monetary_52w", "aov_52w")
    counts: tuple[str, ...] = (
        "active_recency_days",
        "frequency_52w",
        "frequency_13w",
        "tenure_weeks",
        "messages_13w",
        "events_13w",
    )
    shares: tuple[str, ...] = (
        "koc_score",
        "discount_share",
        "deal_seeking_share",
        "coupon_hunter_score",
        "promo_order_share_52w",
    )
    categorical: tuple[str, ...] = ()
    unscaled: tuple[str, ...] = ()
    least: dict[str, tuple[str, ...]] = Field(
        default_factory=lambda: {"active_recency_days": ("recency_days", "days_since_last_event")}
    )
    groups: dict[str, tuple[str, ...]] = Field(default_factory=lambda: dict(_GROUPS))
    group_weights: dict[str, float] = Field(default_factory=dict)

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
        grouped: dict[str, str] = {}
        for g, cols in self.groups.items():
            for c in cols:
                if c in grouped:
                    twice.append(f"'{c}' in both groups {grouped[c]} and {g}")
                grouped[c] = g
        unknown = [g for g in self.group_weights if g not in self.groups]
        if twice or unknown:
            raise ValueError(
                "; ".join(
                    ([f"a column belongs to one group only: {'; '.join(twice)}"] if twice else [])
                    + ([f"group_weights: unknown group(s) {', '.join(unknown)}"] if unknown else [])
                )
            )
        if any(w < 0 for w in self.group_weights.values()):
            raise ValueError("group_weights must be >= 0")
        for name, cols in self.least.items():
            if not cols or name in cols:
                raise ValueError(f"least: '{name}' must name one or more other columns")
        return self

    def column_weights(self, present: tuple[str, ...]) -> dict[str, float]:
        """Column -> weight for the numeric columns `present`: group_weight / sqrt(the group's
        columns present); the columns in no group form one group together (weight 1)."""
        group_of = {c: g for g, cols in self.groups.items() for c in cols}
        size: dict[str, int] = {}
        for c in present:
            g = group_of.get(c, "__other__")
            size[g] = size.get(g, 0) + 1
        out = {}
        for c in present:
            g = group_of.get(c, "__other__")
            out[c] = self.group_weights.get(g, 1.0) / size[g] ** 0.5
        return out


_ZERO_WHEN_MISSING = (
    "tenure_weeks",  # never bought: not a customer for any week yet
    "monetary_52w",
    "monetary_13w",
    "predicted_value_52w",
    "frequency_52w",
    "frequency_13w",
    "messages_13w",
    "events_13w",
    *_INTEREST_COLUMNS,
    "koc_score",
    # no order, no chat or no promotion row: none of the behaviour the share measures
    "p_alive",
    "trend_13w",
    "deal_seeking_share",
    "coupon_hunter_score",
    "promo_order_share_52w",
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
    "is_coupon_hunter",
    *_INTEREST_COLUMNS,
)


class ClusteringConfig(BaseModel):
    """Settings of the clustering stage.

    k: a fixed number of clusters, or None to choose it in `k_range` (inclusive) on
    `silhouette_sample` fitted rows by bootstrap stability (`stability_rounds` resamples; a k
    must reach `min_stability`, the mean ARI of a resample's clusters with the full fit's) and
    separation (the smallest stable k whose silhouette is within `k_tolerance` of the best
    stable one); the first week only: later weeks keep the previous k unless `k` is set to
    another number. Chosen on demo seed 7 and checked on other seeds: min_stability 0.8,
    k_tolerance 0.1 (see docs/evaluation.md). `fill_values`: a value, in the column's own
    units, given to nulls of that column (null recency = never bought nor seen = long ago; a
    missing count = none); other numeric nulls get the median (order value and discount share
    of someone who never ordered: undefined, so the buyers' median). `drift_threshold`: a
    centroid shift (in scaled feature units) above which a cluster is reported `drifted`;
    `size_drift_threshold`: the same for a relative size change. `renumber_shift`: a matched
    cluster that moved further than this is a different group and gets a new number (None:
    never). `threads`: threads for
    k-means (None: all cores; 1 by default, which on a shared machine is the fastest). `jobs`:
    the independent fits of choosing k (one per k, one per bootstrap resample, the silhouette's
    blocks) run this many at a time, each with `threads` threads (None: one per core); the
    clusters are the same to the bit whatever the number.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    features: ClusteringFeatures = ClusteringFeatures()
    fill_values: dict[str, float] = Field(
        default_factory=lambda: {
            "active_recency_days": 1095.0,
            "recency_days": 1095.0,
            **dict.fromkeys(_ZERO_WHEN_MISSING, 0.0),
        }
    )
    # standard scaling of log1p money and counts: the logs tame the outliers that made robust
    # scaling of raw values hand whole clusters to a few people; quantile scaling flattens the
    # gaps between groups (ARI 0.48-0.58 against 0.62 on demo seed 7)
    scaler: Literal["standard", "robust", "quantile"] = "standard"
    k: int | None = Field(None, ge=2, le=MAX_CLUSTERS)
    k_range: tuple[int, int] = (4, 10)
    silhouette_sample: int = Field(20_000, ge=100)
    # full k-means on the fit sample (at most `fit_sample` rows): mini-batch k-means lands in
    # a different local minimum from one resample to the next (stability 0.6-0.8 vs 0.86-1.0)
    algorithm: Literal["minibatch", "kmeans"] = "kmeans"
    stability_rounds: int = Field(5, ge=0)
    min_stability: float = Field(0.8, ge=0, le=1)
    k_tolerance: float = Field(0.1, ge=0, le=1)
    random_state: int = Field(0, ge=0)
    threads: int | None = Field(1, ge=1)
    jobs: int | None = Field(None, ge=1)
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
    # 羊毛党 names a cluster only where flagged coupon hunters are at least this share of it
    hunter_majority: float = Field(0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _k_range(self) -> ClusteringConfig:
        lo, hi = self.k_range
        if not 2 <= lo <= hi <= MAX_CLUSTERS:
            raise ValueError(f"k_range must be [lo, hi] with 2 <= lo <= hi <= {MAX_CLUSTERS}")
        return self
