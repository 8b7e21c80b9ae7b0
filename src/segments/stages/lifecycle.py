"""Lifecycle stage and AIPL stage from the RFM features and the events."""

from __future__ import annotations

import polars as pl

from segments.settings.rfm import RfmConfig
from segments.weeks import AsOf

LIFECYCLE_STAGES = ("prospect", "new", "active", "at_risk", "lapsed", "churned")


AIPL_STAGES = ("awareness", "interest", "purchase", "loyalty")


def lifecycle(
    features: pl.LazyFrame,
    week: AsOf,
    cfg: RfmConfig | None = None,
    people: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Lifecycle stage as of `week`.

    In: `rfm_features` (recency_days, tenure_weeks) and optionally `people` (a one_id column:
    everyone known, buyers or not). Out: one_id, lifecycle_stage, one of `new` (first counted
    order within `new_weeks`), `active` (a counted order within `active_weeks`), `at_risk`
    (last within `at_risk_weeks`), `lapsed` (within `lapsed_weeks`), `churned` (older),
    `prospect` (no counted order: in `people` only, or null recency). "Within n weeks" is
    recency_days < 7 n, the n whole weeks ending at W.end.
    """
    cfg = cfg or RfmConfig()
    base = features.select("one_id", "recency_days", "tenure_weeks")
    if people is not None:
        base = (
            people.select("one_id")
            .filter(pl.col("one_id").is_not_null())
            .unique()
            .join(base, on="one_id", how="full", coalesce=True)
        )
    rec, ten = pl.col("recency_days"), pl.col("tenure_weeks")
    stage = (
        pl.when(rec.is_null())
        .then(pl.lit("prospect"))
        .when(ten < cfg.new_weeks)
        .then(pl.lit("new"))
        .when(rec < 7 * cfg.active_weeks)
        .then(pl.lit("active"))
        .when(rec < 7 * cfg.at_risk_weeks)
        .then(pl.lit("at_risk"))
        .when(rec < 7 * cfg.lapsed_weeks)
        .then(pl.lit("lapsed"))
        .otherwise(pl.lit("churned"))
    )
    return base.select("one_id", stage.alias("lifecycle_stage"))


def aipl_stage(
    events_lf: pl.LazyFrame | None,
    features_lf: pl.LazyFrame,
    week: AsOf,
    cfg: RfmConfig | None = None,
    last: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """AIPL stage as of `week`: the furthest of awareness, interest, purchase, loyalty.

    In: events with one_id, ts, event; `rfm_features` (frequency_lifetime, frequency_52w,
    is_high_value). Out: one row per one_id in either input: aipl_awareness (a view/live_view
    before W.end, or within `aipl_awareness_weeks`), aipl_interest (search/favorite/add_cart/
    share within `aipl_interest_weeks`), aipl_purchase (>= 1 counted order ever), aipl_loyalty
    (>= `aipl_loyalty_min_orders_52w` counted orders in 52 weeks, or high value), all Boolean,
    and aipl_stage (`loyalty` > `purchase` > `interest` > `awareness`; null when none holds,
    e.g. someone whose only events are check-ins).

    With `last` (one_id, last_ts, last_aware_ts, last_aipl_ts: each person's latest event,
    awareness event and interest event before the end, from the person state) the events are
    not read: an event kind happened in a window exactly when its latest time is inside it.
    """
    cfg = cfg or RfmConfig()
    interest_start = week.window_start(cfg.aipl_interest_weeks)
    aware_start = (
        week.window_start(cfg.aipl_awareness_weeks)
        if cfg.aipl_awareness_weeks is not None
        else None
    )
    if last is not None:
        aware_at = pl.col("last_aware_ts")
        e = last.filter(pl.col("last_ts").is_not_null()).select(
            "one_id",
            (aware_at >= aware_start if aware_start else aware_at.is_not_null())
            .fill_null(False)
            .alias("aipl_awareness"),
            (pl.col("last_aipl_ts") >= interest_start).fill_null(False).alias("aipl_interest"),
        )
    else:
        ts, ev = pl.col("ts"), pl.col("event")
        aware = ev.is_in(list(cfg.aipl_awareness_events))
        if aware_start is not None:
            aware = aware & (ts >= aware_start)
        interest = ev.is_in(list(cfg.aipl_interest_events)) & (ts >= interest_start)
        if events_lf is None:
            raise ValueError("aipl_stage: no events and no last times")
        e = (
            events_lf.filter(pl.col("one_id").is_not_null() & (ts < week.end))
            .group_by("one_id")
            .agg(aware.any().alias("aipl_awareness"), interest.any().alias("aipl_interest"))
        )
    f = features_lf.select(
        "one_id",
        (pl.col("frequency_lifetime") >= 1).alias("aipl_purchase"),
        (
            (pl.col("frequency_52w") >= cfg.aipl_loyalty_min_orders_52w)
            | pl.col("is_high_value").fill_null(False)
        ).alias("aipl_loyalty"),
    )
    flags = ("aipl_awareness", "aipl_interest", "aipl_purchase", "aipl_loyalty")
    out = e.join(f, on="one_id", how="full", coalesce=True).with_columns(
        pl.col(c).fill_null(False) for c in flags
    )
    stage = (
        pl.when(pl.col("aipl_loyalty"))
        .then(pl.lit("loyalty"))
        .when(pl.col("aipl_purchase"))
        .then(pl.lit("purchase"))
        .when(pl.col("aipl_interest"))
        .then(pl.lit("interest"))
        .when(pl.col("aipl_awareness"))
        .then(pl.lit("awareness"))
        .otherwise(pl.lit(None, dtype=pl.String))
    )
    return out.select("one_id", *flags, stage.alias("aipl_stage"))
