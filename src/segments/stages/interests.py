"""Interest affinity from orders, behaviour and chat, and the interest co-occurrence graph.

Signals. Every record that points at an interest is one *signal* with a base weight:
- an order (any status but `cancelled`) whose category belongs to an interest: `order_weight`;
- an event whose category belongs to an interest, or whose search `query` contains a keyword of
  it: `event_weights[event]` (events weighted 0, e.g. `coupon_claim`, give no signal);
- a chat message whose text contains a keyword of it: `chat_weight`.
A record gives at most one signal per interest (a message with three camping words is one
camping signal); a record may signal several interests (a keyword listed under two interests).
Categories are matched exactly first; a category that is not in the taxonomy is matched by
keywords ("户外帐篷" -> camping; "Outdoor>Camping>Tent" -> camping); one that neither places is
a signal of its own (interest `CATEGORY_KEY` + the category), counted for the interest each
weekly build learns for it from its holders (`learn_category_map`), or for none. Text is matched with
Aho-Corasick (`str.extract_many`): Chinese keywords inside the text, English ones as whole
words in any case and width (`Taxonomy.text_mask`).

Affinity. A signal `age` weeks old (age measured from the as-of week's end) weighs
`weight * 2 ** (-age / half_life_weeks)`; the person's raw score for an interest is the sum.
The score is mapped to 0-1 by the saturating transform `1 - 2 ** (-score / saturation_score)`
(with the defaults, one fresh order is 0.5), which keeps absolute strength comparable across
people and is monotone, so the argmax of the affinities is the argmax of the raw scores.
`primary_interest` is that argmax (ties go to taxonomy order, computed on raw scores so that
two saturated affinities never tie), null unless the evidence is enough on two counts:
- weight: (top - rest) / total > `primary_margin`, where top is the leading interest's raw
  score, rest the sum of every other interest's and total their sum. With the default margin 0
  the leading interest must hold more evidence than all the others together (a strict
  majority): a person whose signals split between two interests gets none;
- signals: the leading interest's share of the person's signals is above one half with
  probability >= `primary_confidence` (0.65) under a uniform prior, P(Binomial(n + 1, 1/2)
  <= a) for a of n signals (`majority_votes`): one signal alone, 2 of 3 or 3 of 5 pass, 2 of 4
  does not, so a lead built by one heavy order among many views of other interests abstains.
This replaces `min_evidence` for the primary interest. Both are chosen without the truth (a
majority, and how sure it must be); precision and coverage on the demo are in
docs/evaluation.md.
`interests` lists, in taxonomy order, the interests with affinity >= `threshold` backed by at
least `min_evidence` signals of that interest. People with no signal have no row.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timedelta

import polars as pl

from segments.exprs import blank_to_null, div, ranked
from segments.settings.interests import InterestConfig
from segments.taxonomy import Taxonomy
from segments.weeks import AsOf, Week

_WEEK_US = 7 * 24 * 3600 * 1_000_000
# The `interest` of a signal whose category the taxonomy does not place: this prefix and the
# category (no interest name starts with it: names are snake_case)
CATEGORY_KEY = "@"
SIGNAL_SCHEMA = {
    "one_id": pl.String(),
    "interest": pl.String(),
    "ts": pl.Datetime("us"),
    "weight": pl.Float64(),
    "kind": pl.String(),
}


def _window(col: str, week: Week, cfg: InterestConfig) -> pl.Expr:
    return (pl.col(col) < week.end) & (pl.col(col) >= week.window_start(cfg.lookback_weeks))


def with_category_mask(lf: pl.LazyFrame, taxonomy: Taxonomy, out: str) -> pl.LazyFrame:
    """`out`: the category's interest mask (UInt64, 0 for none), and `ucat`: the category where
    that is 0 (`unplaced_category`; ingest has masked any phone number in it). Each distinct
    category is matched once and joined back (categories are few, rows many). The raw rows'
    signals here and the row store (`state.rows.slim`) both take their masks from it."""
    cats = (
        lf.select("category")
        .unique()
        .filter(pl.col("category").is_not_null())
        .with_columns(taxonomy.category_mask(pl.col("category")).alias(out))
        .with_columns(unplaced_category(pl.col("category"), pl.col(out)).alias("ucat"))
    )
    return lf.join(cats, on="category", how="left", maintain_order="left").with_columns(
        pl.col(out).fill_null(0).cast(pl.UInt64)
    )


def unplaced_category(category: pl.Expr, mask: pl.Expr) -> pl.Expr:
    """The category (stripped) where its interest mask is 0, else null: the rows whose
    category the taxonomy does not place (`learn_category_map` reads what they signal)."""
    return pl.when(mask == 0).then(blank_to_null(category))


def category_signals(
    lf: pl.LazyFrame,
    ts: str,
    weight: pl.Expr,
    kind: pl.Expr,
    keys: tuple[str, ...] = ("one_id",),
) -> pl.LazyFrame:
    """One signal row per row with an unplaced category (`ucat`), weighted as that row's
    interest signals are: interest `CATEGORY_KEY` + the category. A week's build counts it
    for the interest it learned for the category, or not at all (`affinity_from_sums`)."""
    return (
        lf.filter(pl.col("ucat").is_not_null())
        .select(
            *keys,
            (pl.lit(CATEGORY_KEY) + pl.col("ucat")).alias("interest"),
            pl.col(ts).alias("ts"),
            weight.cast(pl.Float64).alias("weight"),
            kind.cast(pl.String).alias("kind"),
        )
        .filter(pl.col("weight") > 0)
    )


# Up to this many interests, `mask_signals` decodes every possible mask (4,095 at 12).
EVERY_MASK_BITS = 12


def mask_signals(
    lf: pl.LazyFrame,
    taxonomy: Taxonomy,
    ts: str,
    weight: pl.Expr,
    kind: pl.Expr,
    keys: tuple[str, ...] = ("one_id",),
) -> pl.LazyFrame:
    """One signal row per interest bit set in `_mask`: the masks are decoded once and joined
    back, so no list is built per row. With at most `EVERY_MASK_BITS` interests every possible
    mask is decoded, a table of its own (no pass over the rows for their masks, and a small
    side to join: a 2M-person recount's sums of 59M events peaked 1.3 GiB lower); with more,
    the rows' distinct masks."""
    lf = lf.filter(pl.col("_mask") != 0).select(
        *keys,
        pl.col("_mask"),
        pl.col(ts).alias("ts"),
        weight.cast(pl.Float64).alias("weight"),
        kind.cast(pl.String).alias("kind"),
    )
    n = len(taxonomy.names)
    masks = (
        pl.LazyFrame({"_mask": pl.Series(range(1, 1 << n), dtype=lf.collect_schema()["_mask"])})
        if n <= EVERY_MASK_BITS
        else lf.select("_mask").unique()
    )
    decoded = masks.with_columns(
        taxonomy.mask_interests(pl.col("_mask")).alias("interest")
    ).explode("interest")
    return (
        lf.join(decoded, on="_mask", how="inner")
        .filter(pl.col("weight") > 0)
        .select(*keys, *list(SIGNAL_SCHEMA)[1:])
    )


def event_signals(
    events: pl.LazyFrame,
    week: AsOf | None,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
    keys: tuple[str, ...] = ("one_id",),
) -> pl.LazyFrame:
    """The interest signals of events: (keys, interest, ts, weight, kind = the event name).

    In: events with `keys`, ts, event and either `imask` (the row store's precomputed interest
    mask) or category and query. With `week`, only events inside its lookback window."""
    cfg = cfg or InterestConfig()
    weights = {k: v for k, v in cfg.event_weights.items() if v > 0}
    keep = pl.col("event").is_in(list(weights)) & pl.all_horizontal(
        pl.col(k).is_not_null() for k in keys
    )
    if week is not None:
        keep = keep & _window("ts", week, cfg)
    e = events.filter(keep).with_columns(
        pl.col("event").replace_strict(weights, default=0.0, return_dtype=pl.Float64).alias("_w")
    )
    if "imask" in e.collect_schema().names():  # the row store's precomputed mask
        e = e.with_columns(pl.col("imask").alias("_mask"))
    else:
        cols = e.select(*keys, "ts", "event", "_w", "category", "query")
        e = with_category_mask(cols, taxonomy, "_cmask")
        # query text is matched only where there is one (searches)
        e = e.with_columns(
            pl.when(pl.col("query").is_null())
            .then(pl.col("_cmask"))
            .otherwise(pl.col("_cmask") | taxonomy.text_mask(pl.col("query")))
            .alias("_mask"),
        )
    signals = mask_signals(e, taxonomy, "ts", pl.col("_w"), pl.col("event"), keys)
    if "ucat" not in e.collect_schema().names():
        return signals
    return pl.concat(
        [signals, category_signals(e, "ts", pl.col("_w"), pl.col("event"), keys)], how="vertical"
    )


def interest_signals(
    orders: pl.LazyFrame | None,
    events: pl.LazyFrame | None,
    messages: pl.LazyFrame | None,
    week: Week,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
) -> pl.LazyFrame:
    """Interest signals seen as of `week` (ts < week.end, within `lookback_weeks`).

    Inputs (each may be None when the table is absent): orders (one_id, paid_at, status,
    category), events (one_id, ts, event, category, query), messages (one_id, ts, text).
    Output: one row per (record, interest) with columns one_id, interest, ts, weight, kind
    (`order`, `chat` or the event name); rows without one_id are dropped.
    """
    cfg = cfg or InterestConfig()
    parts: list[pl.LazyFrame] = []
    if orders is not None:
        o = orders.filter(
            pl.col("one_id").is_not_null()
            & _window("paid_at", week, cfg)
            & (pl.col("status").fill_null("paid") != "cancelled")
        )
        if "imask" in o.collect_schema().names():  # the row store's precomputed mask
            o = o.with_columns(pl.col("imask").alias("_mask"))
        else:
            o = o.filter(pl.col("category").is_not_null())
            o = with_category_mask(o, taxonomy, "_mask")
        weight, kind = pl.lit(cfg.order_weight), pl.lit("order")
        parts.append(mask_signals(o, taxonomy, "paid_at", weight, kind))
        if "ucat" in o.collect_schema().names():
            parts.append(category_signals(o, "paid_at", weight, kind))
    if events is not None:
        parts.append(event_signals(events, week, taxonomy, cfg))
    if messages is not None:
        m = messages.filter(pl.col("one_id").is_not_null() & _window("ts", week, cfg))
        m = m.with_columns(
            pl.col("imask").alias("_mask")  # the row store's precomputed mask
            if "imask" in m.collect_schema().names()
            else taxonomy.text_mask(pl.col("text")).alias("_mask")
        )
        parts.append(mask_signals(m, taxonomy, "ts", pl.lit(cfg.chat_weight), pl.lit("chat")))
    if not parts:
        return pl.LazyFrame(schema=SIGNAL_SCHEMA)
    return pl.concat(
        [p.select(pl.col(c).cast(t) for c, t in SIGNAL_SCHEMA.items()) for p in parts],
        how="vertical",
    )


def decay_factor(ts: pl.Expr, week: Week, half_life_weeks: float) -> pl.Expr:
    """2 ** (-age / half_life), age in weeks from `week.end` to `ts` (1.0 at the end)."""
    age_us = (pl.lit(week.end) - ts).dt.total_microseconds().cast(pl.Float64)
    return pl.lit(2.0).pow(div(-age_us, _WEEK_US * half_life_weeks))


def interest_columns(taxonomy: Taxonomy) -> list[str]:
    """The `interest_<name>` affinity columns, in taxonomy order."""
    return [f"interest_{n}" for n in taxonomy.names]


# ---------------------------------------------------------------------------------------------
# Sums that merge exactly: a signal's decayed weight in fixed point, relative to an epoch
#
# A signal of weight w at time ts adds `round(w * 2 ** ((ts - epoch) / H) * 2 ** F)` (Int128)
# to its (person, interest) sum; the raw score as of `end` is that sum times
# `2 ** (-(end - epoch) / H - F)`. Integer sums are exact and order-free, so a person's sum can
# be kept between builds and moved on by adding the signals that arrive and taking away those
# that leave the lookback window: the result is the sum of a cold build, to the bit. The epoch
# is a deterministic function of the as-of (`decay_epoch`), at most `_BLOCK` half-lives before
# the lookback window starts, which bounds the terms; F bounds them again for short half-lives.

_EPOCH0 = datetime(2000, 1, 3)  # a Monday
_BLOCK = 16  # half-lives between two epochs


def decay_epoch(end: datetime, cfg: InterestConfig) -> datetime:
    """The epoch of the fixed-point sums of an as-of ending at `end`: the latest multiple of
    `_BLOCK` half-lives after 2000-01-03 that is not later than the lookback window's start."""
    block = timedelta(weeks=cfg.half_life_weeks * _BLOCK)
    start = end - timedelta(weeks=cfg.lookback_weeks)
    return _EPOCH0 + block * ((start - _EPOCH0) // block)


def fraction_bits(cfg: InterestConfig) -> int:
    """F: the sums count in units of 2**-F of a weight at the epoch. Terms stay below 2**90
    (a window is at most lookback/H + _BLOCK half-lives past the epoch), sums below 2**120."""
    return int(min(48, 70 - math.ceil(cfg.lookback_weeks / cfg.half_life_weeks)))


def fixed_terms(ts: pl.Expr, weight: pl.Expr, epoch: datetime, cfg: InterestConfig) -> pl.Expr:
    """Int128 terms of signals at `ts` with `weight` (see above)."""
    age_us = (ts - pl.lit(epoch)).dt.total_microseconds().cast(pl.Float64)
    growth = pl.lit(2.0).pow(div(age_us, _WEEK_US * cfg.half_life_weeks) + fraction_bits(cfg))
    return (weight.cast(pl.Float64) * growth).round(0).cast(pl.Int128)


def score_factor(end: datetime, epoch: datetime, cfg: InterestConfig) -> float:
    """What a fixed-point sum is multiplied by to give the raw score as of `end`."""
    half_lives = (end - epoch) / timedelta(weeks=cfg.half_life_weeks)
    return math.ldexp(2.0 ** (-half_lives), -fraction_bits(cfg))


SUM_SCHEMA = {"interest": pl.String(), "_s": pl.Int128(), "_n": pl.Int64()}


def signal_sums(
    signals: pl.LazyFrame,
    week: AsOf,
    cfg: InterestConfig | None = None,
    keys: tuple[str, ...] = ("one_id",),
) -> pl.LazyFrame:
    """Per (keys, interest): `_s`, the fixed-point sum of the signals in the lookback window as
    of `week`, and `_n`, their count. In: `interest_signals` rows (keys, interest, ts, weight)."""
    cfg = cfg or InterestConfig()
    epoch = decay_epoch(week.end, cfg)
    return (
        signals.filter(_window("ts", week, cfg))
        .with_columns(fixed_terms(pl.col("ts"), pl.col("weight"), epoch, cfg).alias("_t"))
        .group_by(*keys, "interest")
        .agg(pl.col("_t").sum().alias("_s"), pl.len().cast(pl.Int64).alias("_n"))
    )


def interest_affinity(
    signals: pl.LazyFrame,
    week: AsOf,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
) -> pl.LazyFrame:
    """Per-person interest affinity from `interest_signals` output.

    Output, one row per one_id with at least one signal: `interest_<name>` Float64 in [0, 1)
    for every interest (taxonomy order), `interest_signal_count` Int64, `interests` list[str]
    (assigned interests, taxonomy order, empty when none), `primary_interest` String (null
    when fewer than `min_evidence` signals). See the module docstring for the arithmetic.
    """
    cfg = cfg or InterestConfig()
    return affinity_from_sums(signal_sums(signals, week, cfg), week, taxonomy, cfg)


def affinity_from_sums(
    sums: pl.LazyFrame,
    week: AsOf,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
    category_map: dict[str, str] | None = None,
) -> pl.LazyFrame:
    """`interest_affinity`'s output from per (one_id, interest) sums (`signal_sums`; rows of
    one person and interest may repeat: their sums and counts are added). The sums of an
    unplaced category count for the interest `category_map` gives it (`learn_category_map`);
    those of a category it does not name count for nothing."""
    cfg = cfg or InterestConfig()
    names = taxonomy.names
    factor = score_factor(week.end, decay_epoch(week.end, cfg), cfg)
    index = {n: i for i, n in enumerate(names)}
    key = pl.col("interest")
    if category_map:
        key = key.replace({CATEGORY_KEY + c: i for c, i in category_map.items()})
    # One pass: each interest's columns hold a row's sum and count on that interest's rows and
    # zero elsewhere, summed per person. The sums stay exact (fixed-point) until a person's
    # total per interest is known, then become Float64 times the decay: the same numbers, to
    # the bit, as summing per (person, interest) first, at half the cost (one group-by over
    # the rows, not two). An interest whose count sums to 0 holds nothing, as a person all of
    # whose counts do has no row.
    rows = sums.with_columns(key.alias("interest")).filter(pl.col("interest").is_in(names))
    hit = {n: pl.col("interest") == n for n in names}
    held = {n: pl.col(f"_n_{n}") > 0 for n in names}
    agg = (
        rows.select(
            "one_id",
            *(pl.when(hit[n]).then(pl.col("_s")).otherwise(0).alias(f"_s_{n}") for n in names),
            *(pl.when(hit[n]).then(pl.col("_n")).otherwise(0).alias(f"_n_{n}") for n in names),
        )
        .group_by("one_id")
        .agg(*(pl.col(f"_s_{n}").sum() for n in names), *(pl.col(f"_n_{n}").sum() for n in names))
        .with_columns(
            *(
                pl.when(held[n])
                .then(pl.col(f"_s_{n}").cast(pl.Float64) * factor)
                .otherwise(0.0)
                .alias(f"_s_{n}")
                for n in names
            ),
            *(
                pl.when(held[n]).then(pl.col(f"_n_{n}")).otherwise(0).alias(f"_n_{n}")
                for n in names
            ),
        )
        .with_columns(
            pl.sum_horizontal(pl.col(f"_n_{n}") for n in names).alias("interest_signal_count")
        )
        .filter(pl.col("interest_signal_count") > 0)
    )

    aff = {
        n: (1.0 - pl.lit(2.0).pow(div(-pl.col(f"_s_{n}"), cfg.saturation_score))).alias(
            f"interest_{n}"
        )
        for n in names
    }
    # Lists are built per distinct mask, not per person (concat_list over millions of rows is
    # slow): the assigned interests become a bit mask, decoded once per distinct value.
    assigned_mask = pl.sum_horizontal(
        [
            pl.when((aff[n] >= cfg.threshold) & (pl.col(f"_n_{n}") >= cfg.min_evidence))
            .then(pl.lit(taxonomy.bit(n), pl.UInt64))
            .otherwise(pl.lit(0, pl.UInt64))
            for n in names
        ]
    )
    top = pl.max_horizontal([pl.col(f"_s_{n}") for n in names])
    argmax = pl.lit(None, pl.UInt8)  # the interest's place in the taxonomy
    for n in reversed(names):  # the first interest holding the maximum wins
        argmax = (
            pl.when(pl.col(f"_s_{n}") == top).then(pl.lit(index[n], pl.UInt8)).otherwise(argmax)
        )
    total = pl.sum_horizontal([pl.col(f"_s_{n}") for n in names])
    margin = top - (total - top) > cfg.primary_margin * total
    lead_n = pl.lit(0, pl.Int64)
    for n in reversed(names):
        lead_n = pl.when(pl.col("_arg") == index[n]).then(pl.col(f"_n_{n}")).otherwise(lead_n)
    agg = agg.with_columns(argmax.alias("_arg"))
    sure = lead_n >= majority_votes(pl.col("interest_signal_count"), cfg.primary_confidence)
    primary = pl.when(margin & sure).then(
        pl.col("_arg").replace_strict(dict(enumerate(names)), return_dtype=pl.String)
    )
    wide = agg.select(
        pl.col("one_id"),
        *aff.values(),
        pl.col("interest_signal_count"),
        assigned_mask.alias("_mask"),
        primary.alias("primary_interest"),
    )
    decoded = (
        wide.select("_mask")
        .unique()
        .with_columns(taxonomy.mask_interests(pl.col("_mask")).alias("interests"))
    )
    return wide.join(decoded, on="_mask", how="left").select(
        "one_id",
        *interest_columns(taxonomy),
        "interest_signal_count",
        "interests",
        "primary_interest",
    )


def learn_category_map(
    sums: pl.LazyFrame, taxonomy: Taxonomy, cfg: InterestConfig | None = None
) -> dict[str, str]:
    """unplaced category -> the interest its people lead with out of proportion, learned from
    everyone's sums (one_id, interest, _s, _n: `signal_sums` with the unplaced categories'
    `CATEGORY_KEY` rows), without the truth.

    A person's lead is their placed interest of the highest sum (ties: taxonomy order); b_i is
    the share of everyone with a lead who leads with i. Of a category's holders who have a
    lead, k_i lead with i, of n. With a uniform prior on the share p_i of its holders leading
    with i (p_i | k_i of n ~ Beta(k_i + 1, n - k_i + 1)), interest i stands out when
    P(p_i > `category_lift` x b_i) >= `category_confidence` and k_i >= `category_min_people`.
    The category counts for i when i alone stands out: people hold several interests, so a
    category's own interest is rarely the lead of most of its holders, but it is led with
    several times the brand's rate, and the others at about their rate; a category everyone
    buys (a gift card) stands out for none, one shared by two interests (a head torch) for
    both or neither, and counts for nothing. Empty when `learn_categories` is off."""
    cfg = cfg or InterestConfig()
    if not cfg.learn_categories:
        return {}
    from scipy.special import betainc

    names = taxonomy.names
    index = {n: i for i, n in enumerate(names)}
    unplaced = pl.col("interest").str.starts_with(CATEGORY_KEY)
    if sums.filter(unplaced).select(pl.len()).collect().item() == 0:
        return {}  # every category is placed: nothing to learn
    per = (
        sums.group_by("one_id", "interest")
        .agg(pl.col("_s").sum(), pl.col("_n").sum())
        .filter(pl.col("_n") > 0)
        .collect()
    )
    held = per.filter(unplaced).select(
        "one_id", pl.col("interest").str.slice(len(CATEGORY_KEY)).alias("category")
    )
    lead = (
        per.lazy()
        .filter(pl.col("interest").is_in(names))
        .group_by("one_id")
        .agg(ranked("interest", "_s", index).first().alias("lead"))
    )
    leads = lead.collect()
    cats = held.join(leads, on="one_id", how="inner")
    if not cats.height:
        return {}
    base = {r["lead"]: r["len"] / leads.height for r in leads.group_by("lead").len().to_dicts()}
    counts = (
        cats.group_by("category", "lead")
        .agg(pl.len().alias("k"))
        .join(cats.group_by("category").agg(pl.len().alias("n")), on="category")
        .filter(pl.col("k") >= cfg.category_min_people)
        .sort("category", "lead")
    )
    standing: dict[str, list[str]] = {}
    for r in counts.iter_rows(named=True):
        k, n, bar = r["k"], r["n"], cfg.category_lift * base[r["lead"]]
        # P(p > bar) for p ~ Beta(k + 1, n - k + 1); none above a share of 1
        sure = float(betainc(n - k + 1, k + 1, 1.0 - bar)) if bar < 1 else 0.0
        if sure >= cfg.category_confidence:
            standing.setdefault(r["category"], []).append(r["lead"])
    return {c: out[0] for c, out in sorted(standing.items()) if len(out) == 1}


def majority_votes(total: pl.Expr, confidence: float) -> pl.Expr:
    """The fewest of `total` signals the leading interest must hold so that, with a uniform
    prior on its share p of the person's signals, P(p > 1/2 | its signals) >= `confidence`.

    With a signals of the leading interest and b of the others, p | data ~ Beta(a + 1, b + 1)
    and P(p > 1/2) = P(Binomial(a + b + 1, 1/2) <= a): the smallest such a, exact up to 4,000
    signals (a lookup) and by the normal approximation above."""
    from statistics import NormalDist

    z = NormalDist().inv_cdf(confidence)
    n = total.cast(pl.Float64) + 1
    approx = (n / 2 + z * n.sqrt() / 2).ceil().cast(pl.Int64)
    return total.replace_strict(
        _majority_table(confidence), default=None, return_dtype=pl.Int64
    ).fill_null(approx)


@functools.cache
def _majority_table(confidence: float, exact: int = 4000) -> dict[int, int]:
    """total -> the smallest a with P(Binomial(total + 1, 1/2) <= a) >= confidence.

    The binomial rows are built by the recurrence pmf_m(i) = (pmf_{m-1}(i) + pmf_{m-1}(i-1)) / 2
    (each row an average of the last, good to about 1e-13 in its cumulative sums); where a
    cumulative sum lies within 1e-9 of `confidence` (a tie, as at 1/2 and an odd m, or a near
    one) the comparison is made exactly, on integers. (scipy.stats' `binom.ppf` gives the same
    table at the default confidence; importing scipy.stats costs a refresh about half a second.)
    """
    import numpy as np

    if confidence == 0.5:  # the distribution is symmetric: CDF(m // 2) >= 1/2 > CDF(m // 2 - 1)
        return {t: (t + 1) // 2 for t in range(exact + 1)}
    table = {}
    pmf = np.ones(1)
    for m in range(1, exact + 2):
        row = np.empty(m + 1)
        row[0], row[-1] = pmf[0] / 2, pmf[-1] / 2
        row[1:-1] = (pmf[1:] + pmf[:-1]) / 2
        pmf = row
        cdf = np.cumsum(pmf)
        a = int(np.searchsorted(cdf, confidence, side="left"))
        while a > 0 and abs(cdf[a - 1] - confidence) < 1e-9 and _cdf_at_least(m, a - 1, confidence):
            a -= 1
        while a < m and abs(cdf[a] - confidence) < 1e-9 and not _cdf_at_least(m, a, confidence):
            a += 1
        table[m - 1] = a
    return table


def _cdf_at_least(m: int, a: int, q: float) -> bool:
    """P(Binomial(m, 1/2) <= a) >= q, exactly (q as the float it is)."""
    from fractions import Fraction

    total, c = 0, 1
    for i in range(a + 1):
        total += c
        c = c * (m - i) // (i + 1)
    return Fraction(total, 1 << m) >= Fraction(q)


def interest_graph(
    affinity_lf: pl.LazyFrame,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
) -> pl.LazyFrame:
    """Co-occurrence of assigned interests over people.

    Input: `interest_affinity` output (uses one_id, interests). The population N is the people
    with at least one assigned interest. Output: one row per unordered pair (interest_a before
    interest_b in taxonomy order) held together by >= `graph_min_co_count` people, with
    co_count, count_a, count_b (people holding each), lift = co_count * N / (count_a * count_b)
    and jaccard = co_count / (count_a + count_b - co_count).
    """
    cfg = cfg or InterestConfig()
    order = {n: i for i, n in enumerate(taxonomy.names)}
    # people by a dense integer (joins and counts on 2M one_id strings are the slow part)
    long = (
        affinity_lf.select(pl.col("one_id").rank("dense").alias("one_id"), "interests")
        .explode("interests")
        .filter(pl.col("interests").is_not_null())
        .unique()
        .select(
            "one_id",
            pl.col("interests").alias("interest"),
            pl.col("interests")
            .replace_strict(order, default=None, return_dtype=pl.Int32)
            .alias("_i"),
        )
        .filter(pl.col("_i").is_not_null())
    )
    n_people = long.select(pl.col("one_id").n_unique().cast(pl.Float64).alias("_N"))
    counts = long.group_by("interest").agg(pl.len().cast(pl.Int64).alias("_count"))
    pairs = (
        long.join(long, on="one_id", suffix="_b")
        .filter(pl.col("_i") < pl.col("_i_b"))
        .group_by("interest", "interest_b", "_i", "_i_b")
        .agg(pl.len().cast(pl.Int64).alias("co_count"))
        .filter(pl.col("co_count") >= cfg.graph_min_co_count)
        .rename({"interest": "interest_a"})
    )
    return (
        pairs.join(counts.rename({"interest": "interest_a", "_count": "count_a"}), on="interest_a")
        .join(counts.rename({"interest": "interest_b", "_count": "count_b"}), on="interest_b")
        .join(n_people, how="cross")
        .with_columns(
            (pl.col("co_count") * pl.col("_N") / (pl.col("count_a") * pl.col("count_b"))).alias(
                "lift"
            ),
            (
                pl.col("co_count").cast(pl.Float64)
                / (pl.col("count_a") + pl.col("count_b") - pl.col("co_count"))
            ).alias("jaccard"),
        )
        .sort("_i", "_i_b")
        .select("interest_a", "interest_b", "co_count", "count_a", "count_b", "lift", "jaccard")
    )


def interest_expansion(
    affinity_lf: pl.LazyFrame,
    graph_lf: pl.LazyFrame,
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
) -> pl.LazyFrame:
    """Add `interest_<name>_expanded` (Float64, 0-1) to `interest_affinity` output.

    A person with direct evidence for an interest keeps their affinity. Otherwise the score
    is the best route through the graph: max over the person's interests a (affinity > 0) of
    `affinity_a * P(b | a)`, where P(b | a) = co_count / count_a, following only edges with
    lift > `expansion_min_lift`; 0 when no such edge leads there.
    """
    cfg = cfg or InterestConfig()
    names = taxonomy.names
    g = graph_lf.filter(pl.col("lift") > cfg.expansion_min_lift)
    directed = pl.concat(
        [
            g.select(
                pl.col("interest_a").alias("_src"),
                pl.col("interest_b").alias("_dst"),
                (pl.col("co_count") / pl.col("count_a")).alias("_conf"),
            ),
            g.select(
                pl.col("interest_b").alias("_src"),
                pl.col("interest_a").alias("_dst"),
                (pl.col("co_count") / pl.col("count_b")).alias("_conf"),
            ),
        ]
    ).collect()  # at most 2 x 55 edges
    # Per destination, the best route is a row-wise max over the sources' affinities times
    # constant confidences: no reshaping and no group-by over people.
    routes: dict[str, list[pl.Expr]] = {n: [] for n in names}
    for src, dst, conf in directed.iter_rows():
        if dst in routes:
            aff = pl.col(f"interest_{src}")
            routes[dst].append(pl.when(aff > 0).then(aff * conf))
    return affinity_lf.with_columns(
        pl.when(pl.col(f"interest_{n}") > 0)
        .then(pl.col(f"interest_{n}"))
        .otherwise(pl.max_horizontal(routes[n]).fill_null(0.0) if routes[n] else pl.lit(0.0))
        .alias(f"interest_{n}_expanded")
        for n in names
    )


def vocabulary_coverage(
    tables: dict[str, pl.LazyFrame | None],
    taxonomy: Taxonomy,
    top: int = 10,
    cfg: InterestConfig | None = None,
) -> dict[str, dict]:
    """How much of a brand's input the taxonomy understands: per table, the rows whose category
    (orders, events), search query (events) or text (messages) signals an interest, and the
    most common categories that signal none (most rows first, then by name), each with the
    interest its people lean to (`_leanings`) and the one a weekly build would learn for it
    (`learned`). A brand whose categories are its own names sees here which to add to its
    taxonomy. Cancelled orders are left out, as interests leave them out; null and blank
    values are not counted."""
    out: dict[str, dict] = {}
    lfs: dict[str, pl.LazyFrame] = {}
    for table in ("orders", "events", "messages"):
        lf = tables.get(table)
        if lf is None:
            continue
        if table == "orders" and "status" in lf.collect_schema().names():
            lf = lf.filter(pl.col("status").fill_null("paid") != "cancelled")
        lfs[table] = lf
    unplaced: dict[str, list[tuple[str, int]]] = {}
    for table, fields in (("orders", ("category",)), ("events", ("category", "query")),
                          ("messages", ("text",))):  # fmt: skip
        if table not in lfs:
            continue
        lf, entry = lfs[table], {}
        names = lf.collect_schema().names()
        for field in (f for f in fields if f in names):
            values = lf.select(blank_to_null(pl.col(field)).alias("v")).drop_nulls()
            if field == "category":
                counts = values.group_by("v").len().collect()
                counts = counts.with_columns(taxonomy.category_mask(pl.col("v")).alias("m"))
                missed = counts.filter(pl.col("m") == 0).sort(
                    ["len", "v"], descending=[True, False]
                )
                unplaced[table] = [
                    (v, int(n)) for v, n in missed.head(top).select("v", "len").iter_rows()
                ]
                entry["categories"] = {
                    "rows": int(counts["len"].sum()),
                    "with_interest": int(counts.filter(pl.col("m") != 0)["len"].sum()),
                    "distinct": counts.height,
                    "distinct_with_interest": counts.filter(pl.col("m") != 0).height,
                }
            else:
                hit = values.select(
                    pl.len().alias("rows"),
                    (taxonomy.text_mask(pl.col("v")) != 0).sum().alias("with_interest"),
                ).collect()
                key = "queries" if field == "query" else "texts"
                entry[key] = {k: int(hit[k][0]) for k in ("rows", "with_interest")}
        out[table] = entry
    leanings = _leanings(lfs, unplaced, taxonomy, cfg)
    for table, cats in unplaced.items():
        out[table]["categories"]["top_without_interest"] = [
            {"category": v, "rows": n, **leanings[(table, v)]} for v, n in cats
        ]
    return out


_WHO = {"orders": ("buyer_id_type", "buyer_id"), "events": ("user_id_type", "user_id")}
LEANING_MIN_PEOPLE = 5  # people of an unplaced category who must hold an interest to name it


def _learned_from_rows(
    rows: pl.LazyFrame, masks: pl.DataFrame, taxonomy: Taxonomy, cfg: InterestConfig | None
) -> dict[str, str]:
    """What a weekly build would learn for the unplaced categories (`learn_category_map`),
    from `rows` (id_type, id, category and `_rows`, how many input rows hold that: orders and
    events) with each identifier a person and each row a signal of weight one: validate links
    no identifier and has no as-of, so it is the build's rule on the input as it stands.
    `masks`: the placed categories' masks."""
    who = pl.concat_str("id_type", pl.lit("\x1f"), "id").alias("one_id")
    decoded = (
        masks.with_columns(taxonomy.mask_interests(pl.col("mask")).alias("interest"))
        .explode("interest")
        .select("category", "interest")
    )
    signals = pl.concat(
        [
            rows.join(decoded.lazy(), on="category", how="inner").select(who, "interest", "_rows"),
            rows.join(masks.lazy(), on="category", how="anti").select(
                who, (pl.lit(CATEGORY_KEY) + pl.col("category")).alias("interest"), "_rows"
            ),
        ]
    )
    sums = signals.group_by("one_id", "interest").agg(
        pl.col("_rows").sum().cast(pl.Int128).alias("_s"),
        pl.col("_rows").sum().cast(pl.Int64).alias("_n"),
    )
    return learn_category_map(sums, taxonomy, cfg)


def _leanings(
    lfs: dict[str, pl.LazyFrame],
    unplaced: dict[str, list[tuple[str, int]]],
    taxonomy: Taxonomy,
    cfg: InterestConfig | None = None,
) -> dict[tuple[str, str], dict]:
    """(table, unplaced category) -> the interest its people lean to. Its people are the
    identifiers with that category in that table (no OneID: an identifier as the input gives
    it); of them, those that also have a category the taxonomy places, in orders or events.
    Per interest, the share of those that hold it, against the share of every identifier with
    a placed category (the lift). Named: the interest of the highest lift that at least
    `LEANING_MIN_PEOPLE` of them hold, with its share and lift (none when no interest is held
    by that many). A hint for whoever extends the taxonomy. Beside it, `learned`: what a
    weekly build's own, stricter rule would learn for it (`_learned_from_rows`)."""
    rows = []
    for table, (t, i) in _WHO.items():
        lf = lfs.get(table)
        if lf is None or not {t, i, "category"} <= set(lf.collect_schema().names()):
            continue
        rows.append(
            lf.select(
                pl.lit(table).alias("table"),
                pl.col(t).alias("id_type"),
                pl.col(i).alias("id"),
                blank_to_null(pl.col("category")).alias("category"),
            ).drop_nulls()
        )
    out = {(t, v): {"people": 0, "people_placed": 0, "leans_to": None, "learned": None}
           for t, cats in unplaced.items() for v, _ in cats}  # fmt: skip
    if not rows or not out:
        return out
    # the input read once: how many rows each identifier has of each category, per table
    both = (
        pl.concat(rows)
        .group_by("table", "id_type", "id", "category")
        .agg(pl.len().alias("_rows"))
        .collect()
        .lazy()
    )
    masks = (
        both.select("category").unique().collect()
        .with_columns(taxonomy.category_mask(pl.col("category")).alias("mask"))
        .filter(pl.col("mask") != 0)
    )  # fmt: skip
    # every identifier with a placed category: the interests of its categories
    placed = (
        both.join(masks.lazy(), on="category", how="inner")
        .group_by("id_type", "id")
        .agg(pl.col("mask").bitwise_or())
        .collect()
    )
    wanted = pl.DataFrame(
        list(out), schema={"table": pl.String, "category": pl.String}, orient="row"
    )
    them = (
        both.join(wanted.lazy(), on=["table", "category"], how="semi")
        .select("table", "id_type", "id", "category")
        .collect()
    )
    known = them.join(placed, on=["id_type", "id"], how="inner")
    bits = {n: taxonomy.bit(n) for n in taxonomy.names}
    base = {
        n: float((placed["mask"] & b != 0).mean()) if placed.height else 0.0
        for n, b in bits.items()
    }
    learned = _learned_from_rows(both, masks, taxonomy, cfg)
    for (table, category), entry in out.items():
        mine = them.filter((pl.col("table") == table) & (pl.col("category") == category))
        held_by = known.filter((pl.col("table") == table) & (pl.col("category") == category))
        entry.update(
            people=mine.height, people_placed=held_by.height, learned=learned.get(category)
        )
        best = None
        for name, bit in bits.items():
            held = int((held_by["mask"] & bit != 0).sum())
            if held < LEANING_MIN_PEOPLE or base[name] == 0:
                continue
            share = held / held_by.height
            lift = share / base[name]
            if best is None or lift > best[2]:
                best = (name, share, lift)
        if best is not None:
            entry.update(leans_to=best[0], share=round(best[1], 4), lift=round(best[2], 2))
    return out
