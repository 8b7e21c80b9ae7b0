"""Weekly RFM: counted orders, the history panel, features, scores, segments, lifecycle, AIPL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import polars as pl

from segments.errors import DataError
from segments.exprs import div
from segments.settings.rfm import RfmConfig
from segments.weeks import AsOf, Week

# Windows (whole weeks ending at W.end) for the frequency_<n>w / monetary_<n>w columns.
WINDOWS: tuple[int, ...] = (1, 4, 13, 26, 52)

# Columns rfm_features_from_panel shares with rfm_features (same names, same values).
PANEL_FEATURE_COLUMNS: tuple[str, ...] = (
    "one_id",
    "recency_days",
    *(f"frequency_{n}w" for n in WINDOWS),
    "frequency_lifetime",
    *(f"monetary_{n}w" for n in WINDOWS),
    "monetary_lifetime",
    "aov_52w",
    "max_order_value",
    "order_value_std_52w",
    "items_52w",
    "first_purchase_at",
    "last_purchase_at",
    "tenure_weeks",
    "purchase_days",
    "interpurchase_mean_weeks",
    "expected_next_purchase_week",
    "trend_13w",
    "discount_share",
    "refund_rate_52w",
    "is_high_value",
    "value_tier",
)
# Every column `rfm_features` gives (the panel's and those that need single orders).
FEATURE_COLUMNS: tuple[str, ...] = (
    *PANEL_FEATURE_COLUMNS,
    "interpurchase_std_weeks",
    "regularity",
    "preferred_weekday",
    "preferred_hour",
)


# ---------------------------------------------------------------------------------------------
# Counted orders


def _kept() -> pl.Expr:
    return pl.col("amount") - pl.col("refund").fill_null(0.0)


def _if(cond: pl.Expr, value: pl.Expr) -> pl.Expr:
    # `value` where `cond` holds, else null: in a group_by, `_if(c, x).sum()` is the sum over
    # the rows where c holds (0 when none; null for max/min), and streams far faster than
    # `x.filter(c).sum()`.
    return pl.when(cond).then(value)


def money_sum(value: pl.Expr) -> pl.Expr:
    """The sum of a money column, exact to the cent and the same in any order.

    Values are added as whole cents in Int64: a parallel group-by adds floats in no fixed
    order, so a float sum (and every ratio of one) differed in its last bits from run to run.
    Null values (see `_if`) are skipped; a group without any sums to 0."""
    return div((value * 100).round(0).cast(pl.Int64).sum(), 100)


def _money_sq(value: pl.Expr) -> pl.Expr:
    """The sum of squared money values, exactly (whole cents squared, in Int128)."""
    return div((value * 100).round(0).cast(pl.Int128).pow(2).sum().cast(pl.Float64), 10_000)


def _integer_std(n: str, total: str, squares: str) -> pl.Expr:
    """The sample standard deviation (ddof=1) of whole numbers from their count, sum and sum
    of squares, null under two values: `sqrt((n * sq - sum^2) / (n * (n - 1)))`.

    The numerator and denominator are exact integers (below 2^53 they convert to floats
    exactly: a person's gap days are far below that), so the result is the same in every
    layout; polars' grouped `std()` gave a lone person's gaps another last bit than the same
    gaps in a larger group. The count is widened to Int64 first: a UInt32 `n * (n - 1)` would
    wrap above 65,537 values."""
    count, s, sq = pl.col(n).cast(pl.Int64), pl.col(total), pl.col(squares)
    var = (count * sq - s * s).cast(pl.Float64) / (count * (count - 1)).cast(pl.Float64)
    return pl.when(count >= 2).then(var.sqrt())


def _first_argmax(cols: list[str], first: int) -> pl.Expr:
    # `first + i` for the first column i holding the row's largest value (Int8).
    top = pl.max_horizontal(cols)
    return pl.coalesce(
        [
            pl.when(pl.col(c) == top).then(pl.lit(first + i, dtype=pl.Int8))
            for i, c in enumerate(cols)
        ]
    )


def is_counted() -> pl.Expr:
    """True for an order that counts: status `paid` (null is paid) and amount - refund > 0."""
    status = pl.col("status")
    return (status.is_null() | (status == "paid")) & (_kept() > 0)


def _not_cancelled() -> pl.Expr:
    return pl.col("status").is_null() | (pl.col("status") != "cancelled")


def _refund_effective() -> pl.Expr:
    # A `refunded` order gave everything back; otherwise the refund column, clipped to amount.
    return (
        pl.when(pl.col("status") == "refunded")
        .then(pl.col("amount"))
        .otherwise(pl.min_horizontal(pl.col("refund").fill_null(0.0), pl.col("amount")))
    )


def counted_orders(orders: pl.LazyFrame, week: Week) -> pl.LazyFrame:
    """Counted orders paid before `week.end`, with a known `one_id`.

    In: `orders` with one_id, paid_at, amount, refund, status (+ discount, quantity if present).
    Out: one_id, paid_at, day (local date), kept (amount - refund), amount, discount, quantity.
    """
    names = orders.collect_schema().names()
    discount = pl.col("discount").fill_null(0.0) if "discount" in names else pl.lit(0.0)
    quantity = pl.col("quantity").fill_null(1) if "quantity" in names else pl.lit(1)
    return orders.filter(
        pl.col("one_id").is_not_null() & (pl.col("paid_at") < week.end) & is_counted()
    ).select(
        "one_id",
        "paid_at",
        pl.col("paid_at").dt.date().alias("day"),
        _kept().alias("kept"),
        pl.col("amount").cast(pl.Float64),
        discount.cast(pl.Float64).alias("discount"),
        quantity.cast(pl.Int64).alias("quantity"),
    )


# ---------------------------------------------------------------------------------------------
# Weekly panel


def weekly_panel(orders: pl.LazyFrame) -> pl.LazyFrame:
    """The sparse weekly history: one row per (one_id, week_start) with any order that week.

    In: canonical orders with `one_id` (orders without one_id are dropped).
    Out: one_id, week_start (Date, Monday), orders (counted orders, Int64), purchase_days
    (distinct local dates with a counted order), amount_kept (sum of amount - refund),
    amount_kept_sq (sum of its squares), max_order_value, amount_paid (sum of amount),
    discount, items (sum of quantity) — all over counted orders —, gross_amount and refunds
    (sum of amount and of the effective refund over orders not cancelled; a `refunded` order
    refunds its whole amount), first_paid_at and last_paid_at (counted orders).
    Weeks hold whole ISO weeks, so every window of whole weeks ending at a week's end is a
    sum over panel rows: `rfm_features_from_panel` builds a snapshot without the orders.
    """
    names = orders.collect_schema().names()
    discount = pl.col("discount").fill_null(0.0) if "discount" in names else pl.lit(0.0)
    quantity = pl.col("quantity").fill_null(1) if "quantity" in names else pl.lit(1)
    counted = pl.col("_counted")
    kept = pl.col("_kept")
    return (
        orders.filter(pl.col("one_id").is_not_null())
        .with_columns(
            pl.col("paid_at").dt.date().dt.truncate("1w").alias("week_start"),
            is_counted().alias("_counted"),
            _kept().alias("_kept"),
            _not_cancelled().alias("_live"),
            discount.cast(pl.Float64).alias("_discount"),
            quantity.cast(pl.Int64).alias("_quantity"),
        )
        .group_by("one_id", "week_start")
        .agg(
            counted.sum().cast(pl.Int64).alias("orders"),
            _if(counted, pl.col("paid_at").dt.date())
            .drop_nulls()
            .n_unique()
            .cast(pl.Int64)
            .alias("purchase_days"),
            money_sum(_if(counted, kept)).alias("amount_kept"),
            _money_sq(_if(counted, kept)).alias("amount_kept_sq"),
            _if(counted, kept).max().alias("max_order_value"),
            money_sum(_if(counted, pl.col("amount"))).alias("amount_paid"),
            money_sum(_if(counted, pl.col("_discount"))).alias("discount"),
            _if(counted, pl.col("_quantity")).sum().cast(pl.Int64).alias("items"),
            money_sum(_if(pl.col("_live"), pl.col("amount"))).alias("gross_amount"),
            money_sum(_if(pl.col("_live"), _refund_effective())).alias("refunds"),
            _if(counted, pl.col("paid_at")).min().alias("first_paid_at"),
            _if(counted, pl.col("paid_at")).max().alias("last_paid_at"),
        )
    )


# ---------------------------------------------------------------------------------------------
# Features


def _iso_label(day: pl.Expr) -> pl.Expr:
    return pl.format("{}-W{}", day.dt.iso_year(), day.dt.week().cast(pl.String).str.zfill(2))


def as_of_columns(week: AsOf) -> list[pl.Expr]:
    """The columns of `rfm_features` that move with the as-of alone, from first_purchase_at
    and last_purchase_at: recency_days and tenure_weeks (a live table moves a person whose
    orders did not change with these: `build.aging`)."""
    sunday = pl.lit(week.last_day)
    return [
        (sunday - pl.col("last_purchase_at").dt.date()).dt.total_days().alias("recency_days"),
        ((sunday - pl.col("first_purchase_at").dt.date()).dt.total_days() // 7).alias(
            "tenure_weeks"
        ),
    ]


def _derive(lf: pl.LazyFrame, week: Week, cfg: RfmConfig) -> pl.LazyFrame:
    """Derived columns from per-person aggregates (shared by the order and the panel paths).

    Needs: frequency_<n>w, monetary_<n>w, frequency/monetary_lifetime, _monetary_prev13,
    _kept_sq_52w, _amount_52w, _discount_52w, _gross_52w, _refunds_52w, first/last_purchase_at,
    purchase_days.
    """
    f52, m52 = pl.col("frequency_52w"), pl.col("monetary_52w")
    first_day = pl.col("first_purchase_at").dt.date()
    last_day = pl.col("last_purchase_at").dt.date()
    m13, prev13 = pl.col("monetary_13w"), pl.col("_monetary_prev13")
    span_days = (last_day - first_day).dt.total_days()
    mean_days = pl.when(pl.col("purchase_days") >= 2).then(
        span_days / (pl.col("purchase_days") - 1)
    )
    # Sample variance of order values from the sum of squares (n >= 2); rounding noise below
    # 1e-9 of the squared mean (equal values summed in another order) is 0.
    var = (pl.col("_kept_sq_52w") - m52 * m52 / f52) / (f52 - 1)
    var = pl.when(var > 1e-9 * (m52 / f52) ** 2).then(var).otherwise(0.0)
    denom_discount = pl.col("_amount_52w") + pl.col("_discount_52w")
    tier = pl.lit(cfg.value_tier_labels[0])
    for cut, label in zip(cfg.value_tier_cuts, cfg.value_tier_labels[1:], strict=True):
        tier = pl.when(m52 >= cut).then(pl.lit(label)).otherwise(tier)
    return lf.with_columns(
        *as_of_columns(week),
        pl.when(f52 > 0).then(m52 / f52).alias("aov_52w"),
        pl.when(f52 >= 2).then(var.sqrt()).alias("order_value_std_52w"),
        div(mean_days, 7).alias("interpurchase_mean_weeks"),
        _iso_label(last_day + pl.duration(days=mean_days.round().cast(pl.Int64))).alias(
            "expected_next_purchase_week"
        ),
        pl.when(m13 + prev13 > 0).then((m13 - prev13) / (m13 + prev13)).alias("trend_13w"),
        pl.when(denom_discount > 0)
        .then(pl.col("_discount_52w") / denom_discount)
        .alias("discount_share"),
        pl.when(pl.col("_gross_52w") > 0)
        .then(pl.col("_refunds_52w") / pl.col("_gross_52w"))
        .alias("refund_rate_52w"),
        ((f52 >= cfg.high_value_min_orders) & (m52 >= cfg.high_value_min_aov * f52)).alias(
            "is_high_value"
        ),
        pl.when(f52 == 0).then(pl.lit(cfg.value_tier_none)).otherwise(tier).alias("value_tier"),
    )


def rfm_features(orders: pl.LazyFrame, week: Week, cfg: RfmConfig | None = None) -> pl.LazyFrame:
    """RFM and purchase-pattern features as of `week`, computed from the orders.

    In: canonical orders with `one_id` (see `segments.contract.ORDERS`); only rows paid before
    `week.end` are read. Out: one row per one_id with a counted order before W.end:
    recency_days (W.sunday minus the local date of the latest counted order), frequency_<n>w
    and monetary_<n>w for n in 1, 4, 13, 26, 52 (counted orders and their amount - refund in
    the n whole weeks ending at W.end; 52 weeks = 364 days), frequency_lifetime,
    monetary_lifetime, aov_52w, max_order_value (largest kept order value in 52 weeks),
    order_value_std_52w, items_52w, first_purchase_at, last_purchase_at, tenure_weeks (whole
    weeks from the first purchase to W.sunday), purchase_days (distinct purchase dates),
    interpurchase_mean_weeks and interpurchase_std_weeks (gaps between consecutive distinct
    purchase dates, in weeks; std with ddof=1, null under two gaps), regularity (1/(1+cv) of
    the gaps), expected_next_purchase_week (ISO label of the last purchase date plus the mean
    gap), trend_13w ((a-b)/(a+b) of monetary in the last 13 weeks a and the 13 before b),
    preferred_weekday (1=Monday..7) and preferred_hour (0-23) of counted orders (ties: the
    smallest), discount_share (discount / (amount + discount) of counted orders in 52 weeks),
    refund_rate_52w (refunded / paid amount of orders not cancelled in 52 weeks),
    is_high_value, value_tier.
    """
    cfg = cfg or RfmConfig()
    starts = {n: week.window_start(n) for n in WINDOWS}
    ws52, ws13, ws26 = starts[52], starts[13], starts[26]
    paid_at, kept = pl.col("paid_at"), pl.col("kept")
    in52 = paid_at >= ws52
    weekday, hour = paid_at.dt.weekday(), paid_at.dt.hour()

    counted = counted_orders(orders, week)
    aggs = counted.group_by("one_id").agg(
        *((paid_at >= starts[n]).sum().cast(pl.Int64).alias(f"frequency_{n}w") for n in WINDOWS),
        pl.len().cast(pl.Int64).alias("frequency_lifetime"),
        *(money_sum(_if(paid_at >= starts[n], kept)).alias(f"monetary_{n}w") for n in WINDOWS),
        money_sum(kept).alias("monetary_lifetime"),
        money_sum(_if((paid_at >= ws26) & (paid_at < ws13), kept)).alias("_monetary_prev13"),
        _if(in52, kept).max().alias("max_order_value"),
        _money_sq(_if(in52, kept)).alias("_kept_sq_52w"),
        _if(in52, pl.col("quantity")).sum().alias("items_52w"),
        money_sum(_if(in52, pl.col("amount"))).alias("_amount_52w"),
        money_sum(_if(in52, pl.col("discount"))).alias("_discount_52w"),
        paid_at.min().alias("first_purchase_at"),
        paid_at.max().alias("last_purchase_at"),
        # Order counts per weekday and hour; the first largest is the preferred one.
        *((weekday == k).sum().alias(f"_wd{k}") for k in range(1, 8)),
        *((hour == k).sum().alias(f"_h{k}") for k in range(24)),
    )
    aggs = aggs.with_columns(
        _first_argmax([f"_wd{k}" for k in range(1, 8)], first=1).alias("preferred_weekday"),
        _first_argmax([f"_h{k}" for k in range(24)], first=0).alias("preferred_hour"),
    )
    # Gaps between consecutive distinct purchase dates: one global sort beats per-group lists.
    same_person = pl.col("one_id") == pl.col("one_id").shift()
    gaps = (
        counted.select("one_id", "day")
        .unique()
        .sort("one_id", "day")
        .with_columns(pl.when(same_person).then(pl.col("day").diff().dt.total_days()).alias("_gap"))
        .group_by("one_id")
        .agg(
            pl.len().cast(pl.Int64).alias("purchase_days"),
            pl.col("_gap").count().alias("_gap_n"),
            pl.col("_gap").sum().alias("_gap_sum"),
            pl.col("_gap").pow(2).sum().alias("_gap_sq"),
        )
        .select(
            "one_id",
            "purchase_days",
            _integer_std("_gap_n", "_gap_sum", "_gap_sq").alias("_gap_std_days"),
        )
    )
    refunds = (
        orders.filter(
            pl.col("one_id").is_not_null()
            & (paid_at >= ws52)
            & (paid_at < week.end)
            & _not_cancelled()
        )
        .group_by("one_id")
        .agg(
            money_sum(pl.col("amount")).alias("_gross_52w"),
            money_sum(_refund_effective()).alias("_refunds_52w"),
        )
    )
    joined = aggs.join(refunds, on="one_id", how="left").join(gaps, on="one_id", how="left")
    out = _derive(joined, week, cfg)
    std_weeks = div(pl.col("_gap_std_days"), 7)
    out = out.with_columns(
        std_weeks.alias("interpurchase_std_weeks"),
        (1.0 / (1.0 + std_weeks / pl.col("interpurchase_mean_weeks"))).alias("regularity"),
    )
    return out.select(FEATURE_COLUMNS)


def rfm_features_from_panel(
    panel: pl.LazyFrame, week: Week, cfg: RfmConfig | None = None
) -> pl.LazyFrame:
    """The order-independent part of `rfm_features` as of `week`, from `weekly_panel` output.

    In: the weekly panel (any weeks; rows after `week` are ignored). Out: the columns
    `PANEL_FEATURE_COLUMNS`, equal to those of `rfm_features` on the same orders; the gap
    std, regularity and preferred weekday/hour need single orders and are not here.
    """
    cfg = cfg or RfmConfig()
    ws = pl.col("week_start")
    first_monday = {n: week.monday - timedelta(weeks=n - 1) for n in WINDOWS}
    in52 = ws >= first_monday[52]
    aggs = (
        panel.filter(ws <= week.monday)
        .group_by("one_id")
        .agg(
            *(
                _if(ws >= first_monday[n], pl.col("orders")).sum().alias(f"frequency_{n}w")
                for n in WINDOWS
            ),
            pl.col("orders").sum().alias("frequency_lifetime"),
            *(
                money_sum(_if(ws >= first_monday[n], pl.col("amount_kept"))).alias(f"monetary_{n}w")
                for n in WINDOWS
            ),
            money_sum(pl.col("amount_kept")).alias("monetary_lifetime"),
            money_sum(
                _if((ws >= first_monday[26]) & (ws < first_monday[13]), pl.col("amount_kept"))
            ).alias("_monetary_prev13"),
            _if(in52, pl.col("max_order_value")).max().alias("max_order_value"),
            # squares of whole cents, kept in 1e-4 CNY: exact in a float up to 2^53
            div(
                (_if(in52, pl.col("amount_kept_sq")) * 10_000)
                .round(0)
                .cast(pl.Int128)
                .sum()
                .cast(pl.Float64),
                10_000,
            ).alias("_kept_sq_52w"),
            _if(in52, pl.col("items")).sum().alias("items_52w"),
            money_sum(_if(in52, pl.col("amount_paid"))).alias("_amount_52w"),
            money_sum(_if(in52, pl.col("discount"))).alias("_discount_52w"),
            money_sum(_if(in52, pl.col("gross_amount"))).alias("_gross_52w"),
            money_sum(_if(in52, pl.col("refunds"))).alias("_refunds_52w"),
            pl.col("first_paid_at").min().alias("first_purchase_at"),
            pl.col("last_paid_at").max().alias("last_purchase_at"),
            pl.col("purchase_days").sum().alias("purchase_days"),
        )
        .filter(pl.col("frequency_lifetime") > 0)
    )
    return _derive(aggs, week, cfg).select(PANEL_FEATURE_COLUMNS)


def snapshot_from_panel(
    panel: pl.LazyFrame, weeks: Sequence[Week], cfg: RfmConfig | None = None
) -> pl.LazyFrame:
    """RFM history: `rfm_features_from_panel` for each of `weeks`, stacked.

    In: the weekly panel. Out: week (ISO label, String) followed by `PANEL_FEATURE_COLUMNS`,
    one row per (week, one_id with a counted order before that week's end).
    """
    cfg = cfg or RfmConfig()
    frames = [
        rfm_features_from_panel(panel, w, cfg).select(pl.lit(w.label).alias("week"), pl.all())
        for w in weeks
    ]
    if not frames:
        raise DataError("snapshot_from_panel: no weeks given.")
    return pl.concat(frames, how="vertical")
