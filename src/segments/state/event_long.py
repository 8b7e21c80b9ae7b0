"""What a person's events say over the long run, kept per identifier and moved on, not recounted.

Events are most of a brand's rows, and three tag families look back further than the
few weeks a build reads of them (`TRAILING_WEEKS`): the last event ever (days since the last
event), the last awareness and interest events (AIPL), and the interest signals of the
lookback window (two years by default). These are kept per identifier (`user_id_type`,
`user_id`) in two tables:

- `last`: last_ts, last_aware_ts, last_aipl_ts (the latest event, awareness event and AIPL
  interest event before the as-of end);
- `sums`: per interest, the fixed-point sum of the decayed signal weights and the count of
  signals inside the lookback window (`segments.stages.interests.signal_sums`).

A new as-of moves them on exactly: the sums gain the signals that entered the window and lose
those that left it or were taken out of the state (integer sums, so the result is the cold
build's to the bit); the last times take the maximum with the rows that entered, and the
identifiers whose rows were taken out are recounted from their stored rows.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl

from segments.config import SegmentsConfig
from segments.stages.interests import decay_epoch, event_signals, fixed_terms
from segments.taxonomy import Taxonomy
from segments.weeks import AsOf

KEYS = ("user_id_type", "user_id")
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


def signed_sums(
    events: pl.LazyFrame,
    epoch: datetime,
    cfg: SegmentsConfig,
    taxonomy: Taxonomy,
    sign: int = 1,
) -> pl.LazyFrame:
    """`sign` times the fixed-point sums and counts of the events' signals (no window: the
    caller chooses the rows), per identifier and interest."""
    icfg = cfg.interests
    signals = event_signals(events, None, taxonomy, icfg, keys=KEYS)
    return (
        signals.with_columns(fixed_terms(pl.col("ts"), pl.col("weight"), epoch, icfg).alias("_t"))
        .group_by(*KEYS, "interest")
        .agg((pl.col("_t").sum() * sign).alias("_s"), (pl.len().cast(pl.Int64) * sign).alias("_n"))
        .select(pl.col(c).cast(t) for c, t in SUMS_SCHEMA.items())
    )


def window(as_of: AsOf, cfg: SegmentsConfig) -> tuple[datetime, datetime]:
    """The signals' lookback window [start, end) as of `as_of`."""
    return as_of.window_start(cfg.interests.lookback_weeks), as_of.end


def compute(
    events: pl.LazyFrame, as_of: AsOf, cfg: SegmentsConfig, taxonomy: Taxonomy
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(`last`, `sums`) from every stored event row (a cold build, or a recount)."""
    start, end = window(as_of, cfg)
    epoch = decay_epoch(end, cfg.interests)
    in_window = events.filter((pl.col("ts") >= start) & (pl.col("ts") < end))
    last, sums = pl.collect_all(
        [last_times(events, end, cfg), signed_sums(in_window, epoch, cfg, taxonomy)]
    )
    return _sorted(last), _sorted(sums)


def merge_sums(parts: list[pl.LazyFrame]) -> pl.DataFrame:
    """Add signed sums; a (identifier, interest) whose count falls to 0 leaves."""
    merged = (
        pl.concat(parts)
        .group_by(*KEYS, "interest")
        .agg(pl.col("_s").sum(), pl.col("_n").sum())
        .filter(pl.col("_n") != 0)
        .collect()
    )
    return _sorted(merged)


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
    "SUMS_SCHEMA",
    "compute",
    "last_times",
    "merge_last",
    "merge_sums",
    "per_person",
    "signed_sums",
    "window",
]
