"""Promotion sensitivity and coupon-hunter risk from orders, behaviour, chat and phone sharing.

Each risk signal is a raw feature turned into a 0-1 strength by dividing by its saturation
point (`caps`) and clipping at 1; a missing feature has strength 0:

| signal              | raw feature                                   | cap (default)           |
| ---                 | ---                                           | ---                     |
| discount_depth      | discount_depth_52w                            | 0.3                     |
| promo_order_share   | promo_order_share_52w                         | 1.0                     |
| claims_per_purchase | claims_per_purchase                           | 5 claims per purchase   |
| checkins            | checkins_13w                                  | 30                      |
| refund_rate         | refund_rate_52w                               | 0.5                     |
| low_value_orders    | low_value_order_share                         | 1.0                     |
| shared_phone        | accounts_on_shared_phone - 1 (0 past the fence) | 3 other accounts      |
| virtual_phone       | virtual_phone                                 | (true = 1)              |
| deal_seeking        | deal_seeking_share                            | 0.3                     |

A weekly build learns the scales from the brand's own people (`learn_caps`, `learn_priors`):
the discount-depth cap, and the shared-number fence (`shared_phone_fence`: a number many more
accounts order with than the brand's usual sharing is a front desk, and counts as no sharing).

`coupon_hunter_score` = sum(hunter_weights[s] * strength[s]) / sum(hunter_weights), in 0-1;
`promo_sensitivity` is the same with `sensitivity_weights`. `coupon_hunter_reasons` lists, for
flagged people only, the (up to) 3 signals with the largest positive contribution, largest
first, ties in `hunter_weights` order.

Orders: an order *counts* as in the data contract (status `paid` or missing, amount - refund
> 0); an order is *placed* unless cancelled.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, model_validator

from segments.exprs import div, ranked
from segments.settings.load import read_toml, shipped, validated
from segments.settings.promo import PromoConfig
from segments.stages.rfm import money_sum
from segments.weeks import Week

_MD_RE = re.compile(r"^(\d{2})-(\d{2})$")
_YMD_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


# ---------------------------------------------------------------------------------------------
# Calendar


class PromoWindow(BaseModel):
    """One promotion window; `start`/`end` inclusive, `MM-DD` (yearly) or `YYYY-MM-DD` (once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    start: str
    end: str

    @property
    def yearly(self) -> bool:
        return bool(_MD_RE.match(self.start))

    def _problems(self) -> list[str]:
        where = f"window '{self.name}'"
        problems = []
        both_md = _MD_RE.match(self.start) and _MD_RE.match(self.end)
        both_ymd = _YMD_RE.match(self.start) and _YMD_RE.match(self.end)
        if not (both_md or both_ymd):
            return [
                f"{where}: start and end must both be MM-DD (yearly) or both YYYY-MM-DD "
                f"(got '{self.start}'..'{self.end}')"
            ]
        for label, text in (("start", self.start), ("end", self.end)):
            try:
                date.fromisoformat(text if both_ymd else f"2000-{text}")  # 2000 has Feb 29
            except ValueError:
                problems.append(f"{where}: {label} '{text}' is not a calendar day")
        if both_ymd and not problems and self.end < self.start:
            problems.append(f"{where}: ends ({self.end}) before it starts ({self.start})")
        return problems

    def contains(self, day: pl.Expr) -> pl.Expr:
        """Whether the date/datetime `day` falls inside the window."""
        if self.yearly:
            md = day.dt.month().cast(pl.Int32) * 100 + day.dt.day().cast(pl.Int32)
            s = int(self.start.replace("-", ""))
            e = int(self.end.replace("-", ""))
            return (md >= s) & (md <= e) if s <= e else (md >= s) | (md <= e)
        d = day.cast(pl.Date)
        return (d >= date.fromisoformat(self.start)) & (d <= date.fromisoformat(self.end))


class PromoCalendar(BaseModel):
    """The promotion windows (configs/promo_calendar.toml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    windows: tuple[PromoWindow, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> PromoCalendar:
        problems: list[str] = []
        names: set[str] = set()
        for w in self.windows:
            if not w.name.strip():
                problems.append("a window has an empty name")
            elif w.name in names:
                problems.append(f"window '{w.name}' is defined twice")
            names.add(w.name)
            problems.extend(w._problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def in_promo(self, ts: pl.Expr) -> pl.Expr:
        """Whether `ts` falls inside any window (False with no windows; null stays null)."""
        if not self.windows:
            return pl.when(ts.is_not_null()).then(pl.lit(False))
        return pl.any_horizontal([w.contains(ts) for w in self.windows])


def load_promo_calendar(path: str | Path | None = None) -> PromoCalendar:
    """Read and validate a promotion calendar (default: the shipped `configs/promo_calendar.toml`).

    Raises ConfigError naming the file and listing every problem found.
    """
    path = Path(path) if path is not None else shipped("promo_calendar.toml")
    data = read_toml(path, "promotion calendar")
    return calendar_from_dict(data, where=str(path))


def calendar_from_dict(data: dict[str, Any], where: str = "promo calendar") -> PromoCalendar:
    """Validate a calendar given as a dict (the TOML shape); ConfigError lists every problem."""
    return validated(PromoCalendar, data, where)


# ---------------------------------------------------------------------------------------------
# Config


def is_virtual_phone(cn11: pl.Expr, prefixes: tuple[str, ...] | None = None) -> pl.Expr:
    """For ingest, before hashing: whether an 11-digit number starts with a virtual-carrier
    prefix (default `PromoConfig().virtual_prefixes`). Null stays null."""
    prefixes = prefixes if prefixes is not None else PromoConfig().virtual_prefixes
    return (
        cn11.str.starts_with(prefixes[0])
        if len(prefixes) == 1
        else pl.any_horizontal([cn11.str.starts_with(p) for p in prefixes])
    )


# ---------------------------------------------------------------------------------------------
# Threshold from the score's shape


def gaussian_density(x: Any, at: Any, bandwidth: float, chunk: int = 4096) -> Any:
    """The Gaussian kernel density of the values `x` at the points `at` (numpy arrays), as
    `scipy.stats.gaussian_kde(x, bw_method=bandwidth / x.std())` gives it: that rule makes the
    kernel's standard deviation `bandwidth` x sqrt(n / (n - 1)) (SciPy scales the sample's
    unbiased deviation by a factor over the biased one). Each distinct value is evaluated
    once, weighted by how often it occurs (100k demo scores hold 44k distinct values),
    `chunk` values at a time: 0.11 s where SciPy's took 0.19 s. The same density as SciPy's to
    rounding, and the same thresholds (`test_promo`)."""
    import numpy as np

    values, counts = np.unique(x, return_counts=True)
    n = x.size
    sigma = bandwidth * float(np.sqrt(n / (n - 1)))
    out = np.zeros(at.size, dtype=np.float64)
    for start in range(0, values.size, chunk):
        v = values[start : start + chunk, None]
        w = counts[start : start + chunk].astype(np.float64)
        out += w @ np.exp(-0.5 * ((at[None, :] - v) / sigma) ** 2)
    return out / (n * sigma * np.sqrt(2.0 * np.pi))


def hunter_threshold(
    scores: pl.Series,
    bandwidth: float = 0.03,
    grid: int = 201,
    min_ratio: float = 1.2,
    min_share: float = 0.01,
    max_share: float = 0.5,
    edge: float = 1.0,
) -> float | None:
    """Where the coupon-hunter score's valley ends below: the density (Gaussian kernels
    `bandwidth` wide in score units, on a grid of 0..1) has a main mode and, above it, the
    hunters' mode; the threshold is the lowest point before the antimode (the lowest density
    between the two) where the density is within `edge` x the antimode's (edge 1: the
    antimode). A mode above the main one must reach `min_ratio` x the lowest density between
    them, or it is a ripple in the main mode's tail; at least `min_share` of the scores must
    lie above its antimode, or it is a ripple of a few people in the far tail (where the
    density between is ~0); at most `max_share`, or it is the bulk of ordinary buyers, not
    hunters. Of the modes left, the hunters' is the deepest (highest mode / trough ratio): a
    shoulder of ordinary buyers with a small discount can be more prominent in absolute terms
    but sits in a shallow dip. No truth is used. None when the scores are fewer than 10, all
    equal, or show no such mode."""
    import numpy as np

    x = scores.drop_nulls().drop_nans().cast(pl.Float64).to_numpy()
    if x.size < 10 or float(x.min()) == float(x.max()):
        return None
    g = np.linspace(0.0, 1.0, grid)
    d = gaussian_density(x, g, bandwidth)
    main = int(np.argmax(d))
    peaks = [
        i for i in range(main + 1, grid) if d[i] > d[i - 1] and (i == grid - 1 or d[i] >= d[i + 1])
    ]
    # a mode, not a ripple in the main mode's tail: min_ratio x the lowest density before it
    peaks = [i for i in peaks if d[i] >= min_ratio * d[main : i + 1].min()]
    # ... and a mode of people, not of a few: enough of the scores above its antimode
    peaks = [
        i for i in peaks if (x >= g[main + int(np.argmin(d[main : i + 1]))]).mean() >= min_share
    ]
    if not peaks:
        return None
    # ... and of a minority: hunters are fewer than half of the scored people
    peaks = [
        i for i in peaks if (x >= g[main + int(np.argmin(d[main : i + 1]))]).mean() <= max_share
    ]
    if not peaks:
        return None
    depth = [d[i] / max(float(d[main : i + 1].min()), 1e-12) for i in peaks]
    upper = peaks[int(np.argmax(depth))]
    low = main + int(np.argmin(d[main : upper + 1]))
    start = low  # down the valley while the density stays within edge x the antimode's
    while start > main and d[start - 1] <= edge * d[low]:
        start -= 1
    return float(g[start])


def week_hunter_threshold(scores: pl.Series, cfg: PromoConfig) -> float:
    """The threshold a weekly build uses: with `auto_threshold`, the valley of the week's
    scores (`hunter_threshold` at `mode_ratio` and `valley_edge`) clamped to `auto_range`; `threshold` when auto is off or the
    scores show no shape."""
    if not cfg.auto_threshold:
        return cfg.threshold
    found = hunter_threshold(scores, min_ratio=cfg.mode_ratio, edge=cfg.valley_edge)
    if found is None:
        return cfg.threshold
    lo, hi = cfg.auto_range
    return min(max(found, lo), hi)


def apply_hunter_threshold(tags: pl.DataFrame, threshold: float) -> pl.DataFrame:
    """is_coupon_hunter = coupon_hunter_score >= `threshold` where there is a score (others keep
    theirs), and coupon_hunter_reasons emptied for everyone not flagged."""
    score = pl.col("coupon_hunter_score")
    flag = (
        pl.when(score.is_not_null()).then(score >= threshold).otherwise(pl.col("is_coupon_hunter"))
    )
    return tags.with_columns(flag.alias("is_coupon_hunter")).with_columns(
        pl.when(pl.col("is_coupon_hunter").fill_null(False))
        .then(pl.col("coupon_hunter_reasons"))
        .otherwise(pl.lit([], dtype=pl.List(pl.String)))
        .alias("coupon_hunter_reasons")
    )


# ---------------------------------------------------------------------------------------------
# Scales from the brand's own distribution


def _raw_signals() -> dict[str, pl.Expr]:
    """Each signal's raw feature, from the columns `promo_features` writes."""
    return {
        "discount_depth": pl.col("discount_depth_52w"),
        "promo_order_share": pl.col("promo_order_share_52w"),
        "claims_per_purchase": pl.col("claims_per_purchase"),
        "checkins": pl.col("checkins_13w").cast(pl.Float64),
        "refund_rate": pl.col("refund_rate_52w"),
        "low_value_orders": pl.col("low_value_order_share"),
        "shared_phone": (pl.col("accounts_on_shared_phone") - 1).cast(pl.Float64),
        "virtual_phone": pl.col("virtual_phone").cast(pl.Float64),
        "deal_seeking": pl.col("deal_seeking_share"),
    }


def order_value_cut(
    orders: pl.LazyFrame, week: Week, cfg: PromoConfig | None = None
) -> float | None:
    """The brand's low-value line: the `low_value_quantile` quantile of the amounts of its
    counted orders in the lookback window (everyone's orders: a global step). None without
    an order."""
    cfg = cfg or PromoConfig()
    status = pl.col("status").fill_null("paid")
    kept = pl.col("amount") - pl.col("refund").fill_null(0.0)
    counted = orders.filter(
        (pl.col("paid_at") < week.end)
        & (pl.col("paid_at") >= week.window_start(cfg.lookback_weeks))
        & (status == "paid")
        & (kept > 0)
    )
    cut = (
        counted.select(pl.col("amount").quantile(cfg.low_value_quantile, "linear")).collect().item()
    )
    return None if cut is None else round(float(cut), 2)


def learn_caps(tags: pl.DataFrame, cfg: PromoConfig | None = None) -> dict[str, float]:
    """Each signal's saturation point from the brand's own people: the `cap_quantile`
    quantile of its raw feature over the people who show it (value > 0; a signal nobody
    shows keeps its configured cap). `virtual_phone`
    is a flag and keeps cap 1. With a shared number in the table, also the shared-number fence
    under the key `FENCE` (`shared_phone_fence`). In: the tag table (everyone: a global step)."""
    cfg = cfg or PromoConfig()
    caps: dict[str, float] = {}
    present = set(tags.columns)
    for signal, expr in _raw_signals().items():
        needed = expr.meta.root_names()
        if signal not in cfg.relative_caps or not set(needed) <= present:
            caps[signal] = cfg.cap(signal)
            continue
        values = tags.select(expr.alias("x")).get_column("x").drop_nulls().drop_nans()
        values = values.filter(values > 0)
        q = values.quantile(cfg.cap_quantile, "linear") if values.len() else None
        caps[signal] = round(float(q), 6) if q is not None and q > 0 else cfg.cap(signal)
    fence = shared_phone_fence(tags, cfg)
    if fence is not None:
        caps[FENCE] = fence
    return caps


# The key `learn_caps` records the shared-number fence under (with the caps: promo.json).
FENCE = "shared_phone_fence"


def shared_phone_fence(tags: pl.DataFrame, cfg: PromoConfig | None = None) -> float | None:
    """The most accounts a number may carry and still read as one person's spare accounts:
    `fence_factor` x the `cap_quantile` quantile of the accounts on the brand's shared numbers
    (two or more accounts), each number counted once (a person on a number of a accounts
    weighs 1/a). A number far beyond the brand's usual sharing is a shop's or an office's
    front desk, where many unrelated accounts order: it says nothing about any of them. None
    without the column or a shared number (then every shared number counts)."""
    cfg = cfg or PromoConfig()
    if "accounts_on_shared_phone" not in tags.columns or cfg.fence_factor <= 0:
        return None
    a = tags.get_column("accounts_on_shared_phone").drop_nulls().cast(pl.Float64)
    a = a.filter(a >= 2).sort()
    if a.len() == 0:
        return None
    w = (1.0 / a).cum_sum()
    q = float(a[int((w >= cfg.cap_quantile * w[-1]).arg_max())])
    return round(cfg.fence_factor * q, 6)


# Shares read from a person's orders: with few orders they are noisy (one order in a sale is a
# promotion share of 1), so the scores shrink them toward the brand's mean.
SHRUNK = ("discount_depth", "promo_order_share", "refund_rate", "low_value_orders")


def learn_priors(tags: pl.DataFrame, cfg: PromoConfig | None = None) -> dict[str, float]:
    """The brand's mean of each order share in `SHRUNK` over the people who have it (the
    point `hunter_scores` shrinks a person's share toward). In: the tag table (everyone)."""
    cfg = cfg or PromoConfig()
    raw = _raw_signals()
    out: dict[str, float] = {}
    for signal in SHRUNK:
        if not set(raw[signal].meta.root_names()) <= set(tags.columns):
            continue
        mean = tags.select(raw[signal].alias("x")).get_column("x").drop_nans().mean()
        if mean is not None:
            out[signal] = round(float(mean), 6)
    return out


def hunter_scores(
    lf: pl.LazyFrame,
    cfg: PromoConfig | None = None,
    caps: dict[str, float] | None = None,
    reasons_from: float | None = None,
    priors: dict[str, float] | None = None,
) -> pl.LazyFrame:
    """promo_sensitivity, coupon_hunter_score, is_coupon_hunter (score >= `cfg.threshold`)
    and coupon_hunter_reasons from the raw features (`promo_features`' columns), each signal
    scaled by `caps` (default: the configured caps). Replaces those four columns.

    With `priors` (`learn_priors`) and `cfg.shrink_orders` > 0, each share in `SHRUNK` is
    first shrunk toward the brand's mean by the person's counted orders n (`frequency_52w`):
    (share * n + shrink_orders * mean) / (n + shrink_orders)."""
    cfg = cfg or PromoConfig()
    lf = lf.drop(
        "promo_sensitivity",
        "coupon_hunter_score",
        "is_coupon_hunter",
        "coupon_hunter_reasons",
        strict=False,
    )

    def cap(signal: str) -> float:
        return caps[signal] if caps and signal in caps else cfg.cap(signal)

    raw = _raw_signals()
    if caps and FENCE in caps:
        accounts = pl.col("accounts_on_shared_phone")
        raw["shared_phone"] = (
            pl.when(accounts > caps[FENCE]).then(0.0).otherwise(raw["shared_phone"])
        )
    a = cfg.shrink_orders
    if priors and a > 0 and "frequency_52w" in lf.collect_schema().names():
        n = pl.col("frequency_52w").fill_null(0).cast(pl.Float64)
        for signal, mean in priors.items():
            raw[signal] = (raw[signal] * n + a * mean) / (n + a)

    # A signal at its cap is exactly 1 (`div` alone can give 0.9999999999999999 there).
    strength = {
        s: pl.when(expr >= cap(s))
        .then(1.0)
        .otherwise(div(expr, cap(s)).clip(0.0, 1.0))
        .fill_null(0.0)
        .alias(f"_s_{s}")
        for s, expr in raw.items()
    }
    out = lf.with_columns(strength.values())

    def weighted(weights: dict[str, float]) -> pl.Expr:
        total = sum(weights.values())
        return pl.sum_horizontal([pl.col(f"_s_{s}") * (w / total) for s, w in weights.items()])

    hw = cfg.hunter_weights
    out = out.with_columns(
        weighted(cfg.sensitivity_weights).clip(0.0, 1.0).alias("promo_sensitivity"),
        weighted(hw).clip(0.0, 1.0).alias("coupon_hunter_score"),
    ).with_columns((pl.col("coupon_hunter_score") >= cfg.threshold).alias("is_coupon_hunter"))

    # Reasons only for flagged people, through a long table (no per-row list building).
    rank = {sig: i for i, sig in enumerate(hw)}
    listed = (
        pl.col("is_coupon_hunter")
        if reasons_from is None
        else pl.col("coupon_hunter_score") >= min(reasons_from, cfg.threshold)
    )
    reasons = (
        out.filter(listed)
        .select("one_id", *[(pl.col(f"_s_{sig}") * w).alias(sig) for sig, w in hw.items()])
        .unpivot(index="one_id", variable_name="_signal", value_name="_c")
        .filter(pl.col("_c") > 0)
        .group_by("one_id")
        .agg(ranked("_signal", "_c", rank).head(3).alias("coupon_hunter_reasons"))
    )
    return (
        out.join(reasons, on="one_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("coupon_hunter_reasons").fill_null(pl.lit([], dtype=pl.List(pl.String)))
        )
        .drop([f"_s_{s}" for s in strength])
    )


# ---------------------------------------------------------------------------------------------
# Stage


def _has(lf: pl.LazyFrame, col: str) -> bool:
    return col in lf.collect_schema().names()


def _share(num: pl.Expr, den: pl.Expr) -> pl.Expr:
    return pl.when(den > 0).then(num.cast(pl.Float64) / den).otherwise(None)


def phone_orders(orders: pl.LazyFrame, week: Week, cfg: PromoConfig | None = None) -> pl.LazyFrame:
    """The orders `phone_account_counts` counts: those paid in the lookback window with both a
    phone and a buyer id."""
    cfg = cfg or PromoConfig()
    return orders.filter(
        (pl.col("paid_at") < week.end)
        & (pl.col("paid_at") >= week.window_start(cfg.lookback_weeks))
        & pl.col("phone_sha256").is_not_null()
        & pl.col("buyer_id").is_not_null()
    )


def count_phone_accounts(orders: pl.LazyFrame) -> pl.LazyFrame:
    """phone_sha256, accounts from `phone_orders` rows (or their distinct phone_sha256,
    buyer_id_type, buyer_id: the same counts)."""
    return (
        orders.group_by("phone_sha256", "buyer_id_type")
        .agg(pl.col("buyer_id").n_unique().alias("_n"))
        .group_by("phone_sha256")
        .agg(pl.col("_n").max().cast(pl.Int64).alias("accounts"))
    )


def phone_account_counts(
    orders: pl.LazyFrame, week: Week, cfg: PromoConfig | None = None
) -> pl.LazyFrame:
    """phone_sha256, accounts: the largest number of distinct buyer ids of one id type that
    ordered with the phone in the lookback window.

    A phone is shared across people (that is the point), so this is a global step: run it on
    everyone's orders and pass the result to `promo_features` of each bucket."""
    return count_phone_accounts(phone_orders(orders, week, cfg))


def _phone_accounts(
    orders: pl.LazyFrame,
    id_map_lf: pl.LazyFrame | None,
    counts: pl.LazyFrame,
    start: Any,
    end: Any,
) -> pl.LazyFrame:
    """one_id, accounts_on_shared_phone: max over the person's phones (on their orders in the
    window, or in the one_id map) of `counts`."""
    o = orders.filter(
        (pl.col("paid_at") < end)
        & (pl.col("paid_at") >= start)
        & pl.col("phone_sha256").is_not_null()
    )
    phones = o.filter(pl.col("one_id").is_not_null()).select("one_id", "phone_sha256")
    if id_map_lf is not None:
        phones = pl.concat(
            [
                phones,
                id_map_lf.filter(pl.col("id_type") == "phone_sha256").select(
                    pl.col("one_id").cast(pl.String), pl.col("id").alias("phone_sha256")
                ),
            ]
        )
    return (
        phones.unique()
        .join(
            counts.select("phone_sha256", pl.col("accounts").alias("_accounts")),
            on="phone_sha256",
            how="inner",
        )
        .group_by("one_id")
        .agg(pl.col("_accounts").max().alias("accounts_on_shared_phone"))
    )


# The event counts of the promotion window: (column, event). The person state keeps them per
# identifier (`segments.state.event_long`).
PROMO_EVENT_COUNTS = (("coupon_claims_13w", "coupon_claim"), ("checkins_13w", "checkin"))


def promo_features(
    orders: pl.LazyFrame | None,
    events: pl.LazyFrame | None,
    community_lf: pl.LazyFrame | None,
    id_map_lf: pl.LazyFrame | None,
    week: Week,
    cfg: PromoConfig | None,
    calendar: PromoCalendar,
    phone_counts: pl.LazyFrame | None = None,
    reasons_from: float | None = None,
    low_value_cny: float | None = None,
    event_counts: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Promotion sensitivity and coupon-hunter risk per person as of `week`.

    `event_counts` (one_id and the `PROMO_EVENT_COUNTS` columns over the promotion window:
    the person state's counts, `event_long.per_person`) stand for `events` when given.

    `phone_counts` is `phone_account_counts` over everyone's orders; when None it is computed
    from `orders`, which is right only when `orders` holds every person (no buckets).

    Inputs (each may be None): orders (one_id, paid_at, amount, discount, refund, status,
    phone_sha256, buyer_id_type, buyer_id, optional phone_is_virtual), events (one_id, ts,
    event), `community_features` output (one_id, deal_seeking_share), the one_id map
    (one_id, id_type, id). `cfg` None means the defaults; `calendar` is a loaded
    `PromoCalendar` (`load_promo_calendar()` for the shipped one: the stage reads no file).

    Rows: people with an order in the last `lookback_weeks`, a phone (on their orders or in
    the one_id map) that was ordered with in that time, a coupon claim or check-in in the last
    `window_weeks`, or a community row. Columns: one_id, discount_depth_52w
    (sum discount / sum (amount + discount) over placed orders), promo_order_share_52w,
    refund_rate_52w (share of placed orders refunded in whole or part), low_value_order_share
    (counted orders with amount < `low_value_cny`: the brand's low-value line from
    `order_value_cut`, or the configured `low_value_cny` when None), coupon_claims_13w, checkins_13w (Int64),
    claims_per_purchase (claims / max(1, counted orders in the window)),
    accounts_on_shared_phone (Int64, null without a phone), virtual_phone (Boolean, null when
    unknown), deal_seeking_share, promo_sensitivity, coupon_hunter_score (Float64 0-1),
    is_coupon_hunter (score >= threshold), coupon_hunter_reasons (list[str]: for flagged
    people, or for everyone scoring at least `reasons_from` when given: a build that reads the
    threshold from the week's scores (`apply_hunter_threshold`) lists reasons down to the
    lowest threshold it may choose, then keeps them for the flagged only).
    "52w"/"13w" are `lookback_weeks` / `window_weeks`.
    """
    cfg = cfg or PromoConfig()
    low_value = cfg.low_value_cny if low_value_cny is None else low_value_cny
    start52, start13, end = (
        week.window_start(cfg.lookback_weeks),
        week.window_start(cfg.window_weeks),
        week.end,
    )
    parts: list[pl.LazyFrame] = []

    if orders is not None:
        o = orders.filter(
            pl.col("one_id").is_not_null()
            & (pl.col("paid_at") < end)
            & (pl.col("paid_at") >= start52)
        ).with_columns(
            pl.col("discount").fill_null(0.0).alias("_disc"),
            pl.col("refund").fill_null(0.0).alias("_ref"),
            pl.col("status").fill_null("paid").alias("_status"),
        )
        placed_ = pl.col("_status") != "cancelled"
        # Each order's flags as columns before the group-by: evaluated inside the aggregation
        # (the promotion calendar above all) they took twice the time.
        o = o.with_columns(
            placed_.alias("_placed"),
            ((pl.col("_status") == "paid") & (pl.col("amount") - pl.col("_ref") > 0)).alias(
                "_counted"
            ),
            (placed_ & ((pl.col("_status") == "refunded") | (pl.col("_ref") > 0))).alias(
                "_refunded"
            ),
            calendar.in_promo(pl.col("paid_at")).fill_null(False).alias("_promo"),
        )
        placed, counted = pl.col("_placed"), pl.col("_counted")
        refunded, promo = pl.col("_refunded"), pl.col("_promo")
        virtual = (
            [
                # null (unknown) when none of the person's orders carried a phone
                pl.when(pl.col("phone_is_virtual").is_not_null().any())
                .then(pl.col("phone_is_virtual").cast(pl.Boolean).any())
                .alias("virtual_phone")
            ]
            if _has(orders, "phone_is_virtual")
            else []
        )
        per = o.group_by("one_id").agg(
            _share(
                money_sum(pl.col("_disc").filter(placed)),
                money_sum((pl.col("amount") + pl.col("_disc")).filter(placed)),
            ).alias("discount_depth_52w"),
            _share((counted & promo).sum(), counted.sum()).alias("promo_order_share_52w"),
            _share(refunded.sum(), placed.sum()).alias("refund_rate_52w"),
            _share((counted & (pl.col("amount") < low_value)).sum(), counted.sum()).alias(
                "low_value_order_share"
            ),
            (counted & (pl.col("paid_at") >= start13)).sum().cast(pl.Int64).alias("_purchases_13w"),
            *virtual,
        )
        parts.append(per)
        counts = (
            phone_counts if phone_counts is not None else phone_account_counts(orders, week, cfg)
        )
        parts.append(_phone_accounts(orders, id_map_lf, counts, start52, end))

    names = [name for name, _ in PROMO_EVENT_COUNTS]
    if event_counts is not None:
        parts.append(
            event_counts.select("one_id", *names).filter(
                pl.any_horizontal(pl.col(n) > 0 for n in names)
            )
        )
    elif events is not None:
        kinds = [event for _, event in PROMO_EVENT_COUNTS]
        ev = (
            events.filter(
                pl.col("one_id").is_not_null()
                & (pl.col("ts") < end)
                & (pl.col("ts") >= start13)
                & pl.col("event").is_in(kinds)
            )
            .group_by("one_id")
            .agg(
                (pl.col("event") == event).sum().cast(pl.Int64).alias(name)
                for name, event in PROMO_EVENT_COUNTS
            )
        )
        parts.append(ev)

    if community_lf is not None:
        parts.append(
            community_lf.select(
                pl.col("one_id"), pl.col("deal_seeking_share").cast(pl.Float64)
            ).filter(pl.col("one_id").is_not_null())
        )

    schema = {
        "discount_depth_52w": pl.Float64(),
        "promo_order_share_52w": pl.Float64(),
        "refund_rate_52w": pl.Float64(),
        "low_value_order_share": pl.Float64(),
        "_purchases_13w": pl.Int64(),
        "virtual_phone": pl.Boolean(),
        "accounts_on_shared_phone": pl.Int64(),
        "coupon_claims_13w": pl.Int64(),
        "checkins_13w": pl.Int64(),
        "deal_seeking_share": pl.Float64(),
    }
    if not parts:
        out = pl.LazyFrame(schema={"one_id": pl.String(), **schema})
    else:
        out = pl.concat([p.select("one_id") for p in parts]).unique()
        for p in parts:
            out = out.join(p, on="one_id", how="left")
    present = out.collect_schema().names()
    out = out.with_columns(
        pl.lit(None, dtype).alias(c) for c, dtype in schema.items() if c not in present
    ).with_columns(
        pl.col("coupon_claims_13w").fill_null(0),
        pl.col("checkins_13w").fill_null(0),
        pl.col("_purchases_13w").fill_null(0),
    )
    out = out.with_columns(
        (
            pl.col("coupon_claims_13w").cast(pl.Float64)
            / pl.max_horizontal(pl.col("_purchases_13w"), pl.lit(1))
        ).alias("claims_per_purchase")
    )

    out = hunter_scores(out, cfg, reasons_from=reasons_from)
    return out.select(
        "one_id",
        "discount_depth_52w",
        "promo_order_share_52w",
        "coupon_claims_13w",
        "checkins_13w",
        "claims_per_purchase",
        "refund_rate_52w",
        "low_value_order_share",
        "accounts_on_shared_phone",
        "virtual_phone",
        "deal_seeking_share",
        "promo_sensitivity",
        "coupon_hunter_score",
        "is_coupon_hunter",
        "coupon_hunter_reasons",
    )
