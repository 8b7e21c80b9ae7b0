"""The row store: every kept input row the per-person stages read, slim, by ISO week.

Orders, events and messages enter the state as the validated, de-duplicated rows ingest
keeps, narrowed to the columns the stages read, with what costs the most worked out once,
when the row arrives, instead of at every build:

- `imask`: the row's interests as a bit mask (an order's category; an event's category and
  search query; a message's text, matched with the taxonomy's keywords);
- `ucat`: an order's or event's category where the taxonomy places it nowhere (mask 0), else
  null: what it signals is learned each week (`interests.learn_category_map`);
- messages: `is_question` and `is_deal` (the community stage's question and deal words), so
  the state keeps no message text at all.

Rows are keyed by their identifier (`*_id_type`, `*_id`), not by person: a new link that
merges two people, or a guard that splits one, changes no stored row. Each row carries
`_piece`, the 64-bit hash of the ingest piece it came from (a validated file's kept rows), so
a piece that leaves (a replaced file, rows a later file replaced) is taken out exactly.

Files are partitioned by the ISO week of the row's time (`orders.paid_at`, `events.ts`,
`messages.ts`): a build reads only the weeks its windows need.
"""

from __future__ import annotations

from datetime import datetime

import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)

from segments.config import SegmentsConfig
from segments.stages.interests import with_category_mask
from segments.taxonomy import Taxonomy

ROW_TABLES = ("orders", "events", "messages")
PIECE = "_piece"
WEEK = "_week"
WEEK_PARTS = ("_week_year", "_week_number")  # the ISO year and week of a row, as integers

ID_COLUMNS = {
    "orders": ("buyer_id_type", "buyer_id"),
    "events": ("user_id_type", "user_id"),
    "messages": ("sender_id_type", "sender_id"),
}
TIME_COLUMN = {"orders": "paid_at", "events": "ts", "messages": "ts"}

# The row store's columns of each table, in order (plus PIECE).
COLUMNS = {
    "orders": (
        "buyer_id_type",
        "buyer_id",
        "source",
        "phone_sha256",
        "phone_is_virtual",
        "paid_at",
        "amount",
        "discount",
        "refund",
        "status",
        "quantity",
        "imask",
        "ucat",
    ),
    "events": ("user_id_type", "user_id", "ts", "event", "imask", "ucat"),
    "messages": (
        "msg_id",
        "sender_id_type",
        "sender_id",
        "room_id",
        "ts",
        "reply_to_msg_id",
        "mentions",
        "is_question",
        "is_deal",
        "imask",
    ),
}


def piece_hash(key: str) -> int:
    """The 64-bit id of an ingest piece key, as stored in `_piece`."""
    return pl.select(pl.lit(key).nchash.xxhash64()).item()


def _marks(text: pl.Expr, words: tuple[str, ...]) -> pl.Expr:
    if not words:
        return pl.lit(False)
    return text.fill_null("").str.contains_any(list(words), ascii_case_insensitive=True)


def slim(table: str, rows: pl.LazyFrame, taxonomy: Taxonomy, cfg: SegmentsConfig) -> pl.LazyFrame:
    """A table's validated rows as the row store keeps them: `COLUMNS[table]`, no `_piece`.

    In: canonical rows (segments.contract) after ingest. Out: the slim columns; `imask` is the
    UInt64 interest mask (see the module docstring). A column the input lacks is null."""
    names = rows.collect_schema().names()
    if table == "orders":
        lf = with_category_mask(rows, taxonomy, "imask") if "category" in names else rows
        if "category" not in names:
            lf = lf.with_columns(
                pl.lit(0, pl.UInt64).alias("imask"), pl.lit(None, pl.String).alias("ucat")
            )
        if "phone_is_virtual" not in names:
            lf = lf.with_columns(pl.lit(None, pl.Boolean).alias("phone_is_virtual"))
    elif table == "events":
        lf = with_category_mask(rows, taxonomy, "_cmask")
        lf = lf.with_columns(
            pl.when(pl.col("query").is_null())
            .then(pl.col("_cmask"))
            .otherwise(pl.col("_cmask") | taxonomy.text_mask(pl.col("query")))
            .alias("imask")
        )
    elif table == "messages":
        text = pl.col("text")
        lf = rows.with_columns(
            _marks(text, cfg.community.question_markers).alias("is_question"),
            _marks(text, cfg.community.deal_keywords).alias("is_deal"),
            taxonomy.text_mask(text).alias("imask"),
        )
    else:
        raise ValueError(f"no row store for table {table!r}")
    if "ucat" in COLUMNS[table] and not cfg.interests.learn_categories:
        # nothing will be learned: no category sums (the setting is part of the state digest)
        lf = lf.with_columns(pl.lit(None, pl.String).alias("ucat"))
    return lf.select(COLUMNS[table])


def week_of(ts: pl.Expr) -> pl.Expr:
    """The ISO week label of a timestamp: the partition a row is stored in."""
    return pl.format("{}-W{}", ts.dt.iso_year(), ts.dt.week().cast(pl.String).str.zfill(2)).alias(
        WEEK
    )


def week_parts(ts: pl.Expr) -> list[pl.Expr]:
    """The ISO year and week number of a timestamp, as integers (`WEEK_PARTS`): rows are
    partitioned by these, and only each partition's key is made a label (`week_label`), not
    every row's (20M events: one string per row formatted and hashed)."""
    return [
        ts.dt.iso_year().cast(pl.Int32).alias(WEEK_PARTS[0]),
        ts.dt.week().cast(pl.Int8).alias(WEEK_PARTS[1]),
    ]


def week_label(year: int | None, week: int | None) -> str | None:
    """`week_of`'s label of an ISO year and week number (None for a missing time)."""
    if year is None or week is None:
        return None
    return f"{year}-W{str(week).zfill(2)}"


def weeks_between(start: datetime | None, end: datetime) -> set[str] | None:
    """The partition labels holding times in [start, end); None when `start` is None (all)."""
    if start is None:
        return None

    from segments.weeks import Week

    labels, w = set(), Week.of(start.date())
    while w.start < end:
        labels.add(w.label)
        w = w.shift(1)
    return labels


def schema(table: str) -> dict[str, pl.DataType]:
    """The row store schema of `table` (plus `_piece`)."""
    from segments.contract import TABLES

    base = dict(TABLES[table].schema)
    extra = {
        "phone_sha256": pl.String(),
        "phone_is_virtual": pl.Boolean(),
        "imask": pl.UInt64(),
        "ucat": pl.String(),
        "is_question": pl.Boolean(),
        "is_deal": pl.Boolean(),
    }
    out = {c: extra.get(c) or base[c] for c in COLUMNS[table]}
    out[PIECE] = pl.UInt64()
    return out


__all__ = [
    "COLUMNS",
    "ID_COLUMNS",
    "PIECE",
    "ROW_TABLES",
    "TIME_COLUMN",
    "WEEK",
    "WEEK_PARTS",
    "piece_hash",
    "schema",
    "slim",
    "week_label",
    "week_of",
    "week_parts",
    "weeks_between",
]
