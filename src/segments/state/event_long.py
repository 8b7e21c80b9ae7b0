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
  evidence from here, not from two years of their rows.

A new as-of moves them on exactly: the sums gain the signals that entered the window and lose
those that left it or were taken out of the state (integer sums, so the result is the cold
build's to the bit); the last times take the maximum with the rows that entered, and the
identifiers whose rows were taken out are recounted from their stored rows.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from segments.config import SegmentsConfig
from segments.stages.interests import decay_epoch, event_signals, fixed_terms, mask_signals
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


def last_times(events: pl.LazyFrame, end: datetime, cfg: SegmentsConfig) -> pl.LazyFrame:
    """Per identifier: the latest event, awareness event and AIPL interest event before `end`."""
    ts, ev = pl.col("ts"), pl.col("event")
    return (
        events.filter(ts < end)
        .group_by(KEYS)
        .agg(
            ts.max().alias("last_ts"),
            ts.filter(ev.is_in(list(cfg.rfm.aipl_awareness_events))).max().alias("last_aware_ts"),
            ts.filter(ev.is_in(list(cfg.rfm.aipl_interest_events))).max().alias("last_aipl_ts"),
        )
        .select(pl.col(c).cast(t) for c, t in LAST_SCHEMA.items())
    )


def table_signals(
    table: str, rows: pl.LazyFrame, cfg: SegmentsConfig, taxonomy: Taxonomy
) -> pl.LazyFrame:
    """The interest signals of a stored table's rows, keyed by identifier (`KEYS`, interest,
    ts, weight, kind), with no window: the signals `interests.interest_signals` gives those
    rows once they have a person (an order of any status but cancelled weighs `order_weight`,
    a message `chat_weight`, an event its `event_weights`)."""
    icfg = cfg.interests
    if table == "events":
        return event_signals(rows, None, taxonomy, icfg, keys=KEYS)
    type_col, id_col = ID_COLUMNS[table]
    keep = pl.col(type_col).is_not_null() & pl.col(id_col).is_not_null()
    if table == "orders":
        keep = keep & (pl.col("status").fill_null("paid") != "cancelled")
        weight, kind = icfg.order_weight, "order"
    else:
        weight, kind = icfg.chat_weight, "chat"
    own = rows.filter(keep).select(
        pl.col(type_col).cast(pl.String).alias(KEYS[0]),
        pl.col(id_col).cast(pl.String).alias(KEYS[1]),
        pl.col(TIME_COLUMN[table]).alias("ts"),
        pl.col("imask").alias("_mask"),
    )
    return mask_signals(own, taxonomy, "ts", pl.lit(weight), pl.lit(kind), KEYS)


def signed_sums(
    table: str,
    rows: pl.LazyFrame,
    epoch: datetime,
    cfg: SegmentsConfig,
    taxonomy: Taxonomy,
    sign: int = 1,
) -> pl.LazyFrame:
    """`sign` times the fixed-point sums and counts of the signals of `table`'s rows (no
    window: the caller chooses the rows), per identifier and interest."""
    signals = table_signals(table, rows, cfg, taxonomy)
    return (
        signals.with_columns(
            fixed_terms(pl.col("ts"), pl.col("weight"), epoch, cfg.interests).alias("_t")
        )
        .group_by(*KEYS, "interest")
        .agg((pl.col("_t").sum() * sign).alias("_s"), (pl.len().cast(pl.Int64) * sign).alias("_n"))
        .select(pl.col(c).cast(t) for c, t in SUMS_SCHEMA.items())
    )


def window(as_of: AsOf, cfg: SegmentsConfig) -> tuple[datetime, datetime]:
    """The signals' lookback window [start, end) as of `as_of`."""
    return as_of.window_start(cfg.interests.lookback_weeks), as_of.end


def compute(
    tables: dict[str, pl.LazyFrame], as_of: AsOf, cfg: SegmentsConfig, taxonomy: Taxonomy
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`last`, `sums`) from every stored row of `tables` (each of `SIGNAL_TABLES` it holds;
    a cold build, or a recount)."""
    start, end = window(as_of, cfg)
    epoch = decay_epoch(end, cfg.interests)
    parts = []
    for table, rows in tables.items():
        t = pl.col(TIME_COLUMN[table])
        in_window = rows.filter((t >= start) & (t < end))
        parts.append(signed_sums(table, in_window, epoch, cfg, taxonomy))
    events = tables.get("events")
    last = last_times(events, end, cfg) if events is not None else pl.LazyFrame(schema=LAST_SCHEMA)
    last_df, sums = pl.collect_all([last, _merged(parts)])
    return _sorted(last_df), _sorted(sums)


def _merged(parts: list[pl.LazyFrame]) -> pl.LazyFrame:
    if not parts:
        return pl.LazyFrame(schema=SUMS_SCHEMA)
    return (
        pl.concat(parts)
        .group_by(*KEYS, "interest")
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


def _sorted(df: pl.DataFrame) -> pl.DataFrame:
    keys = [*KEYS, "interest"] if "interest" in df.columns else list(KEYS)
    return df.sort(keys)


def per_person(
    last: pl.LazyFrame, sums: pl.LazyFrame, id_map: pl.LazyFrame
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The identifiers' tables summed into people: (one_id, last_ts, last_aware_ts,
    last_aipl_ts) and (one_id, interest, _s, _n). `id_map`: one_id, id_type, id."""
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
    return people_last, people_sums


__all__ = [
    "KEYS",
    "LAST_SCHEMA",
    "SIGNAL_TABLES",
    "SUMS_SCHEMA",
    "compute",
    "last_times",
    "merge_last",
    "merge_sums",
    "per_person",
    "signed_sums",
    "table_signals",
    "window",
]
