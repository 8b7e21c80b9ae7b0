"""What a person's events say over the long run, and every interest signal of the lookback
window, kept per identifier and moved on, not recounted.

Events are most of a brand's rows, and three tag families look back further than the
few weeks a build reads of them (`TRAILING_WEEKS`): the last event ever (days since the last
event), the last awareness and interest events (AIPL), and the interest signals of the
lookback window (two years by default). These are kept per identifier (`user_id_type`,
`user_id`: an event's user, an order's buyer, a message's sender) in two tables:

- `last`: last_ts, last_aware_ts, last_aipl_ts (the latest event, awareness event and AIPL
  interest event before the as-of end);
- `sums`: per interest, the fixed-point sum of the decayed signal weights and the count of
  signals inside the lookback window (`segments.stages.interests.signal_sums`), of the
  events, the orders and the messages (`SIGNAL_TABLES`): a build reads a person's interest
  evidence from here, not from two years of their rows. The orders' and events' categories
  the taxonomy does not place have sums of their own (interest `@` + the category), which a
  build counts for the interest it learns for them (`interests.learn_category_map`);
- `counts`: the event counts of the trailing windows that the behaviour and promotion tags
  read (`count_columns`: events of the last 1, 4 and 13 weeks, each counted event kind's
  13 weeks, coupon claims and check-ins of the promotion window), and the days of the last
  13 weeks with an event as four 32-bit masks (`_d0` to `_d3`: bit `day % 128`), so that
  a person's active days are the bits set in the union of their identifiers' masks. A build
  reads no event row: the events are most of a brand's rows.

A new as-of moves them on exactly: the sums gain the signals that entered the window and lose
those that left it or were taken out of the state (integer sums, so the result is the cold
build's to the bit); the counts gain the rows that entered each window and lose those that
left it, and the masks lose the days that left the 13 weeks; the last times take the maximum
with the rows that entered; and the identifiers whose rows were taken out have their last
times and counts recounted from their stored rows.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import polars as pl

from segments.config import SegmentsConfig
from segments.stages.behaviour import ACTIVE_DAYS_WEEKS, WINDOW_COUNTS
from segments.stages.interests import (
    category_signals,
    decay_epoch,
    event_signals,
    fixed_terms,
    mask_signals,
)
from segments.stages.promo import PROMO_EVENT_COUNTS
from segments.state.rows import ID_COLUMNS, TIME_COLUMN
from segments.taxonomy import Taxonomy
from segments.weeks import AsOf

KEYS = ("user_id_type", "user_id")
# The stored tables whose rows are interest signals (`segments.stages.interests`).
SIGNAL_TABLES = ("orders", "events", "messages")
LAST_SCHEMA = {
    "user_id_type": pl.String(),
    "user_id": pl.String(),
    "last_ts": pl.Datetime("us"),
    "last_aware_ts": pl.Datetime("us"),
    "last_aipl_ts": pl.Datetime("us"),
}
SUMS_SCHEMA = {
    "user_id_type": pl.String(),
    "user_id": pl.String(),
    "interest": pl.String(),
    "_s": pl.Int128(),
    "_n": pl.Int64(),
}


# The day masks: bit `day % DAY_BITS` over `_d0` (bits 0-31) to `_d3` (96-127), days counted
# from 1970-01-01; the 13 weeks' 91 days never share a bit. 32-bit words: a mask never reads
# as an 11-digit number (the privacy tests look for anything shaped like a phone number).
DAY_BITS = 128
WORD = 32
MASKS = ("_d0", "_d1", "_d2", "_d3")
_EPOCH_DAY = date(1970, 1, 1)
assert ACTIVE_DAYS_WEEKS * 7 <= DAY_BITS, "the active days' window must fit the day masks"


def count_columns(cfg: SegmentsConfig) -> tuple[tuple[str, int, tuple[str, ...] | None], ...]:
    """The counts kept per identifier: (column, weeks of its window, the events it counts; None
    for every event)."""
    promo = tuple((name, cfg.promo.window_weeks, (event,)) for name, event in PROMO_EVENT_COUNTS)
    return (*WINDOW_COUNTS, *promo)


def counts_schema(cfg: SegmentsConfig) -> dict[str, pl.DataType]:
    return {
        "user_id_type": pl.String(),
        "user_id": pl.String(),
        **{name: pl.Int64() for name, _, _ in count_columns(cfg)},
        **{m: pl.UInt32() for m in MASKS},
    }


def _out(schema: dict[str, pl.DataType], keys: tuple[str, ...]) -> list[pl.Expr]:
    """The output columns of an aggregation by `keys`: `schema`'s, cast; by another key (the
    `KEY` hash of `compute`), that key as it is, then the others."""
    if keys == KEYS:
        return [pl.col(c).cast(t) for c, t in schema.items()]
    return [
        *(pl.col(k) for k in keys),
        *(pl.col(c).cast(t) for c, t in schema.items() if c not in KEYS),
    ]


def _no_rows(schema: dict[str, pl.DataType], keys: tuple[str, ...]) -> pl.LazyFrame:
    """An empty aggregation by `keys` (`_out`'s columns)."""
    key_schema = {k: pl.UInt64() for k in keys} if keys != KEYS else {}
    return pl.LazyFrame(schema={**key_schema, **schema}).select(_out(schema, keys))


def _day_bits(ts: pl.Expr) -> list[pl.Expr]:
    """The bit of the local day of `ts` in each word of `MASKS` (0 in all words but one)."""
    k = (ts.dt.date().cast(pl.Int32) % DAY_BITS + DAY_BITS) % DAY_BITS
    days = list(range(DAY_BITS))
    return [
        k.replace_strict(
            days,
            [1 << (i - w * WORD) if i // WORD == w else 0 for i in days],
            return_dtype=pl.UInt32,
        )
        for w in range(len(MASKS))
    ]


def window_counts(
    events: pl.LazyFrame,
    ranges: dict[int, tuple[datetime, datetime]],
    days: tuple[datetime, datetime] | None,
    cfg: SegmentsConfig,
    sign: int = 1,
    keys: tuple[str, ...] = KEYS,
) -> pl.LazyFrame:
    """Per identifier (`keys`), `sign` times each count of `count_columns` over the events
    whose time is in its window's range (`ranges`: weeks -> [start, end); a window without a
    range counts 0), and the day masks of the events in `days` ([start, end); None: no day)."""
    ts, ev = pl.col("ts"), pl.col("event")
    aggs = []
    for name, weeks, kinds in count_columns(cfg):
        if weeks not in ranges:
            aggs.append(pl.lit(0, pl.Int64).alias(name))
            continue
        start, end = ranges[weeks]
        hit = (ts >= start) & (ts < end)
        if kinds is not None:
            hit = hit & ev.is_in(list(kinds))
        aggs.append((hit.sum().cast(pl.Int64) * sign).alias(name))
    if days is None:
        aggs += [pl.lit(0, pl.UInt32).alias(m) for m in MASKS]
    else:
        inside = (ts >= days[0]) & (ts < days[1])
        for m, bit in zip(MASKS, _day_bits(ts), strict=True):
            aggs.append(bit.filter(inside).bitwise_or().fill_null(0).cast(pl.UInt32).alias(m))
    return events.group_by(keys).agg(aggs).select(_out(counts_schema(cfg), keys))


def count_windows(end: datetime, cfg: SegmentsConfig) -> dict[int, tuple[datetime, datetime]]:
    """Each counted window's range as of `end`."""
    return {w: (end - timedelta(weeks=w), end) for _, w, _ in count_columns(cfg)}


def days_window(end: datetime) -> tuple[datetime, datetime]:
    return end - timedelta(weeks=ACTIVE_DAYS_WEEKS), end


def counts_reach(cfg: SegmentsConfig) -> timedelta:
    """How far back the counts look: their widest window."""
    return timedelta(weeks=max(ACTIVE_DAYS_WEEKS, *(w for _, w, _ in count_columns(cfg))))


def cleared_masks(masks: pl.LazyFrame, start: datetime, new_start: datetime) -> pl.LazyFrame:
    """`masks` without the bits of the days in [start, new_start) (days that left the window;
    `start` and `new_start` are midnights)."""
    n = (new_start.date() - start.date()).days
    keep = [(1 << WORD) - 1] * len(MASKS)
    if n >= DAY_BITS:
        keep = [0] * len(MASKS)
    else:
        for i in range(max(n, 0)):
            k = ((start.date() + timedelta(days=i)) - _EPOCH_DAY).days % DAY_BITS
            keep[k // WORD] &= ~(1 << (k % WORD))
    return masks.with_columns(
        pl.col(m) & pl.lit(v, pl.UInt32) for m, v in zip(MASKS, keep, strict=True)
    )


def _counted(cfg: SegmentsConfig) -> pl.Expr:
    """An identifier with a count: one whose counts are all 0 leaves the table."""
    return pl.any_horizontal(pl.col(name) != 0 for name, _, _ in count_columns(cfg))


def merge_counts(parts: list[pl.LazyFrame], cfg: SegmentsConfig) -> pl.DataFrame:
    """Add signed counts and unite the day masks; an identifier left with no count leaves."""
    names = [name for name, _, _ in count_columns(cfg)]
    merged = (
        pl.concat(parts)
        .group_by(KEYS)
        .agg(*(pl.col(n).sum() for n in names), *(pl.col(m).bitwise_or() for m in MASKS))
        .filter(_counted(cfg))
        .collect()
    )
    return _sorted(merged)


def last_times(
    events: pl.LazyFrame, end: datetime, cfg: SegmentsConfig, keys: tuple[str, ...] = KEYS
) -> pl.LazyFrame:
    """Per identifier (`keys`): the latest event, awareness event and AIPL interest event
    before `end`."""
    ts, ev = pl.col("ts"), pl.col("event")
    return (
        events.filter(ts < end)
        .group_by(keys)
        .agg(
            ts.max().alias("last_ts"),
            ts.filter(ev.is_in(list(cfg.rfm.aipl_awareness_events))).max().alias("last_aware_ts"),
            ts.filter(ev.is_in(list(cfg.rfm.aipl_interest_events))).max().alias("last_aipl_ts"),
        )
        .select(_out(LAST_SCHEMA, keys))
    )


def table_signals(
    table: str,
    rows: pl.LazyFrame,
    cfg: SegmentsConfig,
    taxonomy: Taxonomy,
    keys: tuple[str, ...] = KEYS,
) -> pl.LazyFrame:
    """The interest signals of a stored table's rows, keyed by identifier (`KEYS`, interest,
    ts, weight, kind), with no window: the signals `interests.interest_signals` gives those
    rows once they have a person (an order of any status but cancelled weighs `order_weight`,
    a message `chat_weight`, an event its `event_weights`)."""
    icfg = cfg.interests
    if table == "events":
        return event_signals(rows, None, taxonomy, icfg, keys=keys)
    type_col, id_col = ID_COLUMNS[table]
    keep = pl.col(type_col).is_not_null() & pl.col(id_col).is_not_null()
    if table == "orders":
        keep = keep & (pl.col("status").fill_null("paid") != "cancelled")
        weight, kind = icfg.order_weight, "order"
    else:
        weight, kind = icfg.chat_weight, "chat"
    unplaced = "ucat" in rows.collect_schema().names()  # orders: their unplaced categories
    ids = (
        [
            pl.col(type_col).cast(pl.String).alias(KEYS[0]),
            pl.col(id_col).cast(pl.String).alias(KEYS[1]),
        ]
        if keys == KEYS
        else [pl.col(k) for k in keys]
    )
    own = rows.filter(keep).select(
        *ids,
        pl.col(TIME_COLUMN[table]).alias("ts"),
        pl.col("imask").alias("_mask"),
        *([pl.col("ucat")] if unplaced else []),
    )
    signals = mask_signals(own, taxonomy, "ts", pl.lit(weight), pl.lit(kind), keys)
    if not unplaced:
        return signals
    categories = category_signals(own, "ts", pl.lit(weight), pl.lit(kind), keys)
    return pl.concat([signals, categories], how="vertical")


def signed_sums(
    table: str,
    rows: pl.LazyFrame,
    epoch: datetime,
    cfg: SegmentsConfig,
    taxonomy: Taxonomy,
    sign: int = 1,
    keys: tuple[str, ...] = KEYS,
) -> pl.LazyFrame:
    """`sign` times the fixed-point sums and counts of the signals of `table`'s rows (no
    window: the caller chooses the rows), per identifier (`keys`) and interest."""
    signals = table_signals(table, rows, cfg, taxonomy, keys)
    return (
        signals.with_columns(
            fixed_terms(pl.col("ts"), pl.col("weight"), epoch, cfg.interests).alias("_t")
        )
        .group_by(*keys, "interest")
        .agg((pl.col("_t").sum() * sign).alias("_s"), (pl.len().cast(pl.Int64) * sign).alias("_n"))
        .select(_out(SUMS_SCHEMA, keys))
    )


def window(as_of: AsOf, cfg: SegmentsConfig) -> tuple[datetime, datetime]:
    """The signals' lookback window [start, end) as of `as_of`."""
    return as_of.window_start(cfg.interests.lookback_weeks), as_of.end


# The key `compute` groups by: a 64-bit hash of the identifier (`KEYS`), never written.
KEY = "_k"
KEY_SEED = 0x5E6D


def key_hash(table: str) -> pl.Expr:
    """`KEY` of each row of `table` (null when a part of its identifier is). The identifiers of
    the aggregates (`KEYS`) are named as the events' are: `key_hash("events")` hashes them."""
    type_col, id_col = ID_COLUMNS[table]
    t, i = pl.col(type_col).cast(pl.String), pl.col(id_col).cast(pl.String)
    return (
        pl.when(t.is_not_null() & i.is_not_null())
        .then(pl.struct(t.alias("t"), i.alias("i")).hash(KEY_SEED))
        .alias(KEY)
    )


def compute(
    tables: dict[str, pl.LazyFrame], as_of: AsOf, cfg: SegmentsConfig, taxonomy: Taxonomy
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(`last`, `sums`, `counts`) from every stored row of `tables` (each of `SIGNAL_TABLES`
    it holds; a cold build, or a recount).

    The aggregations group by a 64-bit hash of the identifier (`KEY`), not by its two strings,
    on Polars' streaming engine, and the identifiers are joined back from one table of the
    distinct (identifier, hash) pairs. Grouping by the strings held every event row's
    identifier at once: at 2M people (73M stored rows, 59M of them events) the recount peaked
    at 10.6 GiB against 6.6 GiB now, in about the same time (70 s, 67 s). The rows are the ones
    grouping by the strings gives (`_by_identifier`, in the strings' order), which is what runs
    when two identifiers share a hash (the pairs tell: a hash on two pairs) or an event's
    identifier is incomplete. Nothing reads the rows in an order: a fold appends the
    identifiers it moves (`merged_into`)."""
    keyed = {t: rows.with_columns(key_hash(t)) for t, rows in tables.items()}
    # An order or message without a whole identifier gives no signal (`table_signals`); an
    # event's would be a group of its own, which a null hash cannot name: its pair is kept
    pairs = (
        pl.concat(
            [
                rows.filter(pl.col(KEY).is_not_null() | pl.lit(t == "events")).select(
                    pl.col(ID_COLUMNS[t][0]).cast(pl.String).alias(KEYS[0]),
                    pl.col(ID_COLUMNS[t][1]).cast(pl.String).alias(KEYS[1]),
                    KEY,
                )
                for t, rows in keyed.items()
            ]
        )
        .unique()
        .collect(engine="streaming")
        if keyed
        else pl.DataFrame(schema={**dict.fromkeys(KEYS, pl.String()), KEY: pl.UInt64()})
    )
    if pairs.get_column(KEY).null_count() or pairs.get_column(KEY).n_unique() != pairs.height:
        return _by_identifier(tables, as_of, cfg, taxonomy)
    last, sums, counts = _aggregates(keyed, as_of, cfg, taxonomy, (KEY,))
    # In the hashes' order (no two identifiers share one: a total order, so the files are the
    # same from run to run), the identifiers joined in that order: sorting by the two strings
    # instead took 2.8 of the 13.6 s of this recount at 400k people (2.7M rows sorted).
    counts = counts.filter(_counted(cfg))
    last, sums, counts = (
        frame.sort(order).join(pairs, on=KEY, how="left", maintain_order="left").select(schema)
        for frame, order, schema in (
            (last, [KEY], list(LAST_SCHEMA)),
            (sums, [KEY, "interest"], list(SUMS_SCHEMA)),
            (counts, [KEY], list(counts_schema(cfg))),
        )
    )
    return last, sums, counts


def _by_identifier(
    tables: dict[str, pl.LazyFrame], as_of: AsOf, cfg: SegmentsConfig, taxonomy: Taxonomy
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """`compute`, grouping by the identifier's strings."""
    last, sums, counts = _aggregates(tables, as_of, cfg, taxonomy, KEYS)
    return _sorted(last), _sorted(sums), merge_counts([counts.lazy()], cfg)


def _aggregates(
    tables: dict[str, pl.LazyFrame],
    as_of: AsOf,
    cfg: SegmentsConfig,
    taxonomy: Taxonomy,
    keys: tuple[str, ...],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The last times, signal sums and counts of every row of `tables`, per `keys`, unsorted."""
    start, end = window(as_of, cfg)
    epoch = decay_epoch(end, cfg.interests)
    parts = []
    for table, rows in tables.items():
        t = pl.col(TIME_COLUMN[table])
        in_window = rows.filter((t >= start) & (t < end))
        parts.append(signed_sums(table, in_window, epoch, cfg, taxonomy, keys=keys))
    events = tables.get("events")
    if events is not None:
        last = last_times(events, end, cfg, keys)
        counts = all_counts(events, end, cfg, keys)
    else:
        last, counts = _no_rows(LAST_SCHEMA, keys), _no_rows(counts_schema(cfg), keys)
    engine = "auto" if keys == KEYS else "streaming"
    sums = _merged(parts, keys)
    return last.collect(engine=engine), sums.collect(engine=engine), counts.collect(engine=engine)


def all_counts(
    events: pl.LazyFrame, end: datetime, cfg: SegmentsConfig, keys: tuple[str, ...] = KEYS
) -> pl.LazyFrame:
    """The counts and day masks of `events` as of `end` (identifiers with a count only)."""
    t = pl.col("ts")
    recent = events.filter((t >= end - counts_reach(cfg)) & (t < end))
    return window_counts(recent, count_windows(end, cfg), days_window(end), cfg, keys=keys)


def _merged(parts: list[pl.LazyFrame], keys: tuple[str, ...] = KEYS) -> pl.LazyFrame:
    if not parts:
        return _no_rows(SUMS_SCHEMA, keys)
    return (
        pl.concat(parts)
        .group_by(*keys, "interest")
        .agg(pl.col("_s").sum(), pl.col("_n").sum())
        .filter(pl.col("_n") != 0)
    )


def merge_sums(parts: list[pl.LazyFrame]) -> pl.DataFrame:
    """Add signed sums; a (identifier, interest) whose count falls to 0 leaves."""
    return _sorted(_merged(parts).collect())


def merge_last(parts: list[pl.LazyFrame]) -> pl.DataFrame:
    """The latest of each time over the parts, per identifier."""
    merged = (
        pl.concat(parts)
        .group_by(KEYS)
        .agg(pl.col("last_ts").max(), pl.col("last_aware_ts").max(), pl.col("last_aipl_ts").max())
        .collect()
    )
    return _sorted(merged)


def merged_into(
    base: pl.LazyFrame,
    deltas: list[pl.LazyFrame],
    merge: Callable[[list[pl.LazyFrame]], pl.DataFrame],
) -> pl.DataFrame:
    """The rows of `merge([base, *deltas])` (`merge_sums`, `merge_last`, `merge_counts`), with
    only the identifiers the deltas hold merged: `base`'s rows of every other identifier are
    kept as they are, in their order, and the merged rows follow, in `merge`'s order. `base`
    is a merged table (each identifier's rows already what `merge` leaves). A new day moves
    the sums of a few identifiers in 10.8M rows (2M people): 3.0 s against 9.7 s for grouping
    and sorting every row. Every aggregate is exact (fixed-point sums, counts, maxima, masks),
    so the row order changes no value read from the table."""
    if not deltas:
        return base.collect()
    delta = pl.concat(deltas).collect()
    keys = delta.select(KEYS).unique().lazy()
    kept, mine = pl.collect_all(
        [
            base.join(keys, on=list(KEYS), how="anti", maintain_order="left"),
            base.join(keys, on=list(KEYS), how="semi"),
        ]
    )
    merged = merge([mine.lazy(), delta.lazy()])
    return kept.vstack(merged.select(kept.columns).cast(kept.schema))


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    keys = [*KEYS, "interest"] if "interest" in df.columns else list(KEYS)
    return df.sort(keys)


def per_person(
    last: pl.LazyFrame,
    sums: pl.LazyFrame,
    counts: pl.LazyFrame,
    id_map: pl.LazyFrame,
    cfg: SegmentsConfig,
) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """The identifiers' tables summed into people: (one_id, last_ts, last_aware_ts,
    last_aipl_ts), (one_id, interest, _s, _n) and (one_id, every count of `count_columns`,
    active_days_13w: the days in the union of their day masks). `id_map`: one_id, id_type,
    id."""
    ids = id_map.select(
        "one_id", pl.col("id_type").alias("user_id_type"), pl.col("id").alias("user_id")
    )
    people_last = (
        last.join(ids, on=list(KEYS), how="inner")
        .group_by("one_id")
        .agg(pl.col("last_ts").max(), pl.col("last_aware_ts").max(), pl.col("last_aipl_ts").max())
    )
    people_sums = (
        sums.join(ids, on=list(KEYS), how="inner")
        .group_by("one_id", "interest")
        .agg(pl.col("_s").sum(), pl.col("_n").sum())
    )
    names = [name for name, _, _ in count_columns(cfg)]
    days = sum(pl.col(m).bitwise_or().bitwise_count_ones().cast(pl.Int64) for m in MASKS)
    people_counts = (
        counts.join(ids, on=list(KEYS), how="inner")
        .group_by("one_id")
        .agg(*(pl.col(n).sum() for n in names), days.alias("active_days_13w"))
    )
    return people_last, people_sums, people_counts


__all__ = [
    "DAY_BITS",
    "KEYS",
    "LAST_SCHEMA",
    "SIGNAL_TABLES",
    "SUMS_SCHEMA",
    "all_counts",
    "cleared_masks",
    "compute",
    "count_columns",
    "count_windows",
    "counts_reach",
    "counts_schema",
    "days_window",
    "key_hash",
    "last_times",
    "merge_counts",
    "merge_last",
    "merge_sums",
    "merged_into",
    "per_person",
    "signed_sums",
    "table_signals",
    "window",
    "window_counts",
]
