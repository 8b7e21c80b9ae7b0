"""Behaviour tags from mini-program events, and identity and channel tags from the OneID map."""

from __future__ import annotations

import polars as pl

from segments.contract import COMMERCE_ID_TYPES, KNOWN_EVENTS, WECHAT_ID_TYPES
from segments.weeks import AsOf

COUNTED_EVENTS = ("view", "search", "add_cart", "favorite", "share", "live_view")
# The window counts: (column, weeks, the events it counts; None for every event). The person
# state keeps them per identifier (`segments.state.event_long`), so they are named once, here.
WINDOW_COUNTS: tuple[tuple[str, int, tuple[str, ...] | None], ...] = (
    ("events_1w", 1, None),
    ("events_4w", 4, None),
    ("events_13w", 13, None),
    *((f"{name}_13w", 13, (name,)) for name in COUNTED_EVENTS),
)
ACTIVE_DAYS_WEEKS = 13  # active_days_13w: distinct local days with an event
COUNT_NAMES = (*(name for name, _, _ in WINDOW_COUNTS), "active_days_13w")


def behaviour_features(
    events: pl.LazyFrame | None,
    week: AsOf,
    last: pl.LazyFrame | None = None,
    counts: pl.LazyFrame | None = None,
) -> pl.LazyFrame:
    """Counts of what a person did before `week.end`.

    In: events with one_id, ts, event. Out: one row per one_id with an event: events_1w,
    events_4w, events_13w, `<event>_13w` for view, search, add_cart, favorite, share and
    live_view, active_days_13w (distinct local days with an event), days_since_last_event
    (the as-of's last day minus the day of the latest event), cart_to_view_13w (add_cart /
    view).

    With `last` (one_id, last_ts: each person's latest event before the end, from the person
    state), `events` need only hold the last 13 weeks: the rows are `last`'s people, counts
    are 0 for those without an event in the windows, and the days since the last event come
    from `last_ts` (the result equals the one from every event). With `counts` as well
    (one_id and `COUNT_NAMES`: the person state's window counts, `event_long.per_person`),
    no event is read."""
    since = (pl.lit(week.last_day) - pl.col("_last").dt.date()).dt.total_days().cast(pl.Int64)
    if counts is not None:
        if last is None:
            raise ValueError("behaviour_features: counts come with the last event times")
        aggs = _with_counts(last, counts.select("one_id", *COUNT_NAMES))
    else:
        if events is None:
            raise ValueError("behaviour_features: no events and no counts")
        seen = events.filter(pl.col("one_id").is_not_null() & (pl.col("ts") < week.end))
        counts_exprs = _count_exprs(week)
        if last is None:
            aggs = seen.group_by("one_id").agg(*counts_exprs, pl.col("ts").max().alias("_last"))
        else:
            aggs = _with_counts(last, seen.group_by("one_id").agg(counts_exprs))
    return (
        aggs.with_columns(since.alias("days_since_last_event"))
        .drop("_last")
        .with_columns(
            pl.when(pl.col("view_13w") > 0)
            .then(pl.col("add_cart_13w") / pl.col("view_13w"))
            .otherwise(None)
            .alias("cart_to_view_13w")
        )
    )


def _count_exprs(week: AsOf) -> list[pl.Expr]:
    ts, ev = pl.col("ts"), pl.col("event")
    exprs = []
    for name, weeks, kinds in WINDOW_COUNTS:
        hit = ts >= week.window_start(weeks)
        if kinds is not None:
            hit = hit & ev.is_in(list(kinds))
        exprs.append(hit.sum().cast(pl.Int64).alias(name))
    in_days = ts >= week.window_start(ACTIVE_DAYS_WEEKS)
    exprs.append(ts.filter(in_days).dt.date().n_unique().cast(pl.Int64).alias("active_days_13w"))
    return exprs


def _with_counts(last: pl.LazyFrame, counts: pl.LazyFrame) -> pl.LazyFrame:
    """`last`'s people (with a last event) and their counts, 0 where they have none."""
    return (
        last.select("one_id", pl.col("last_ts").alias("_last"))
        .filter(pl.col("_last").is_not_null())
        .join(counts, on="one_id", how="left")
        .with_columns(pl.col(list(COUNT_NAMES)).fill_null(0))
    )


def identity_features(id_map: pl.LazyFrame, orders: pl.LazyFrame) -> pl.LazyFrame:
    """What the engine knows of a person's identifiers and channels.

    In: the one_id map (one_id, id_type, id); orders with one_id and source. Out: one row per
    one_id: identifier_count, has_phone, has_unionid, has_wecom, is_linked (holds both a
    commerce-side and a WeChat-side identifier), order_channels (sorted list of order sources),
    channel_count, primary_channel (the source with most orders; ties: alphabetical).
    """
    commerce = pl.col("id_type").is_in([*COMMERCE_ID_TYPES, "phone_sha256"])
    ids = id_map.group_by("one_id").agg(
        pl.len().cast(pl.Int64).alias("identifier_count"),
        (pl.col("id_type") == "phone_sha256").any().alias("has_phone"),
        (pl.col("id_type") == "unionid").any().alias("has_unionid"),
        (pl.col("id_type") == "wecom_external_userid").any().alias("has_wecom"),
        (commerce.any() & pl.col("id_type").is_in(list(WECHAT_ID_TYPES)).any()).alias("is_linked"),
    )
    per_source = (
        orders.filter(pl.col("one_id").is_not_null())
        .group_by("one_id", "source")
        .agg(pl.len().alias("n"))
        .sort(["one_id", "n", "source"], descending=[False, True, False])
    )
    channels = per_source.group_by("one_id").agg(
        pl.col("source").sort().alias("order_channels"),
        pl.col("source").n_unique().cast(pl.Int64).alias("channel_count"),
        pl.col("source").first().alias("primary_channel"),
    )
    return ids.join(channels, on="one_id", how="left", maintain_order="left")


def opted_out(
    consent: pl.LazyFrame, id_map: pl.LazyFrame, phone_hashes: pl.LazyFrame | None = None
) -> pl.LazyFrame:
    """People who opted out on any identifier (the latest row per identifier wins).

    In: consent (id_type, id, status, updated_at; rows in read order), the one_id map, and the
    phone hash table (phone_sha256, phone_md5, ...): an opt-out given as a `phone_md5` reaches
    the person who holds that phone as `phone_sha256`.
    Out: one_id, is_opted_out (True only; others are absent)."""
    if phone_hashes is not None:
        md5 = phone_hashes.select(
            pl.col("phone_md5").alias("id"), pl.col("phone_sha256").alias("_sha")
        )
        translated = (
            consent.filter(pl.col("id_type") == "phone_md5")
            .join(md5, on="id", how="inner")
            .with_columns(pl.lit("phone_sha256").alias("id_type"), pl.col("_sha").alias("id"))
            .drop("_sha")
        )
        consent = pl.concat([consent, translated], how="vertical_relaxed")
    latest = (
        consent.with_row_index("_order")
        .sort(["updated_at", "_order"], nulls_last=False)
        .group_by("id_type", "id")
        .agg(pl.col("status").last())
        .filter(pl.col("status") == "opt_out")
    )
    return (
        latest.join(id_map, on=["id_type", "id"], how="inner")
        .select("one_id")
        .unique()
        .with_columns(pl.lit(True).alias("is_opted_out"))
    )


__all__ = [
    "ACTIVE_DAYS_WEEKS",
    "COUNTED_EVENTS",
    "COUNT_NAMES",
    "KNOWN_EVENTS",
    "WINDOW_COUNTS",
    "behaviour_features",
    "identity_features",
    "opted_out",
]
