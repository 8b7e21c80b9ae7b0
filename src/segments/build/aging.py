"""A live table moved to a new day: people none of whose rows crossed a window edge are aged.

A new day moves every window and every recency, which is why the first refresh of a day used
to recompute everyone from their rows. But a person's tags change with the day in two ways
only:

- **through their rows**, when a row enters a window (new data: the fold names the people it
  touched) or leaves one (a row exactly `7 n` days old, for every window of n weeks a tag
  reads: `window_weeks`, `edge_identifiers`);
- **through the as-of alone**, in the frames of pass 2 that `passes.as_of_frames` names:
  recency and tenure, the RFM scores, the lifecycle and AIPL stages, the days since the last
  event, the BG/NBD and Gamma-Gamma predictions (T grows), the interest affinity (every sum
  decays) and, after them, the interest expansion and the cluster.

So a refresh on a new day recomputes from rows only the people touched as on the same day
(`live.increment`) or with a row on an edge that the person state does not carry, and *ages*
everyone else (`age_rows`): the same `as_of_frames`, over the inputs the previous version
kept for them (`SIDE_TABLES`: the BG/NBD summary, the last event times and the interest
signal sums), and their tags of the previous version for the rest.

An event or a message leaving a window changes only what the person state already moved to
the new day (`state.fold`: the identifiers' window counts and interest sums), and pass 2
reads events and messages only through those aggregates. So a person whose rows on an edge
are all such (`edge_identifiers`, `rows` false) is aged too, with their counts and sums
taken from the moved state instead of the previous version (`Renewed`). Orders on an edge,
and the events the promotion counts on its own window's edge, are read by pass 2 as rows (the
R/F/M, the promotion features): those people are recomputed. The result is the one a
refresh of everyone gives (`tests/test_aging.py`).

New events (and events taken out with a replaced file) change likewise only what the fold
moved: the window counts, interest sums and last times (`Renewed.last`). So a person whose
only new or gone rows are events the promotion does not count (`state.fold.FoldReport.touched`,
`rows` false) is aged with the moved state too, on a new day and on the same day
(`live.merged`), not recomputed from their rows.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from segments.build.passes import SUMMARY_COLS, Models, as_of_frames
from segments.clustering import assign_clusters
from segments.config import SegmentsConfig
from segments.io import write_parquet
from segments.stages.behaviour import ACTIVE_DAYS_WEEKS, COUNT_NAMES
from segments.stages.interests import decay_epoch, interest_expansion
from segments.stages.predict import observed_units
from segments.stages.promo import PROMO_EVENT_COUNTS
from segments.stages.rfm import FEATURE_COLUMNS, WINDOWS, as_of_columns
from segments.state.event_long import count_columns
from segments.state.rows import ID_COLUMNS
from segments.tags import finalize
from segments.taxonomy import Taxonomy
from segments.weeks import Day

if TYPE_CHECKING:
    from segments.build.week import Learned

# A new day ages people only this many days after the version in force; further, every
# window has moved by so much that most people have a row on an edge anyway.
MAX_DAYS = 7

# What a live version keeps for the next day's aging (person ids only; owner-only files).
SIDE_TABLES = ("summary", "event_last", "signal_sums")
SUMMARY = ("one_id", "frequency", "recency", "monetary_value")
EVENT_LAST = ("one_id", "last_ts", "last_aware_ts", "last_aipl_ts")
SIGNAL_SUMS = ("one_id", "interest", "_s", "_n")
_SORT = {"summary": ["one_id"], "event_last": ["one_id"], "signal_sums": ["one_id", "interest"]}


def window_weeks(cfg: SegmentsConfig, table: str | None = None) -> tuple[int, ...]:
    """The windows, in weeks, through which a tag reads the rows of `table` (None: of any):

    - orders: the R/F/M windows (with the 13 weeks before the last 13 of `trend_13w`), the
      promotion's lookback and window, and the interest lookback;
    - events: the event counts (behaviour and promotion), the active days and the interest
      lookback. The AIPL windows and the days since the last event read the last times, which
      no row leaving a window moves (they are the latest of all history): `as_of_frames`
      computes them again for everyone;
    - messages: the interest lookback. Everything else a message gives (the community family,
      and the deal-seeking share the promotion reads) comes from the community features, which
      a new day computes for everyone and compares with the previous version's
      (`build.week._touched_people`): a person whose features changed is recomputed.
    """
    lookback = cfg.interests.lookback_weeks
    weeks = {
        "orders": {*WINDOWS, cfg.promo.lookback_weeks, cfg.promo.window_weeks, lookback},
        "events": {*(w for _, w, _ in count_columns(cfg)), ACTIVE_DAYS_WEEKS, lookback},
        "messages": {lookback},
    }
    if table is None:
        return tuple(sorted(set().union(*weeks.values())))
    return tuple(sorted(weeks[table]))


def can_age(old: Day, new: Day, cfg: SegmentsConfig) -> bool:
    """Whether a version as of `old` can be moved to `new` by aging: a later day within
    `MAX_DAYS`, with the interest sums on the same fixed-point epoch."""
    days = (new.last_day - old.last_day).days
    return 0 < days <= MAX_DAYS and decay_epoch(old.end, cfg.interests) == decay_epoch(
        new.end, cfg.interests
    )


def edge_ranges(
    old: Day, new: Day, weeks: Iterable[int], entering: bool = True
) -> list[tuple[datetime, datetime]]:
    """The times [start, end) of the rows that enter or leave a window of `weeks` between the
    as-of `old` and `new`: a window of n weeks as of a day holds [end - 7n days, end), so the
    rows in [old.end - 7n, new.end - 7n) leave it, and those in [old.end, new.end) enter
    every window (left out with `entering` false). Overlapping ranges are joined."""
    spans = [(old.end, new.end)] if entering else []
    spans += [(old.end - timedelta(weeks=w), new.end - timedelta(weeks=w)) for w in weeks]
    spans.sort()
    out: list[tuple[datetime, datetime]] = []
    for start, end in spans:
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


# A table's stored rows with time in [start, end) (`state.State.scan`).
RowScan = Callable[[str, datetime, datetime], pl.LazyFrame]


def edge_identifiers(scan: RowScan, old: Day, new: Day, cfg: SegmentsConfig) -> pl.DataFrame:
    """id_type, id and `rows` of every identifier with a stored order, event or message in the
    `edge_ranges` of its table's windows (the identifier the row is staged by:
    `state.rows.ID_COLUMNS`). `scan` gives a table's stored rows in [start, end)
    (`state.State.scan`).

    `rows` is true when one of those rows is read as a row by pass 2: an order, a message
    entering the windows, or a coupon claim or check-in entering or on the edge of the
    promotion's window (`promo.PROMO_EVENT_COUNTS`). Otherwise (other events entering or
    leaving a window, messages leaving the interest lookback) the row changes only the person
    state's aggregates, and the identifier's person can be aged with them (`Renewed`)."""
    frames = []
    kinds = [event for _, event in PROMO_EVENT_COUNTS]
    for table, (type_col, id_col) in ID_COLUMNS.items():
        ids = [
            pl.col(type_col).cast(pl.String).alias("id_type"),
            pl.col(id_col).cast(pl.String).alias("id"),
        ]
        weeks = window_weeks(cfg, table)
        spans: list[tuple[datetime, datetime, pl.Expr | None, bool]] = []
        if table == "orders":
            spans += [(a, b, None, True) for a, b in edge_ranges(old, new, weeks)]
        else:
            # entering events move only the state's aggregates (last times among them), as
            # leaving ones do; the promotion's own (below) and messages are read as rows
            spans.append((old.end, new.end, None, table != "events"))
            spans += [(a, b, None, False) for a, b in edge_ranges(old, new, weeks, False)]
        if table == "events":
            promo = pl.col("event").cast(pl.String).is_in(kinds)
            spans += [
                (a, b, promo, True) for a, b in edge_ranges(old, new, [cfg.promo.window_weeks])
            ]
        for start, end, keep, by_rows in spans:
            rows = scan(table, start, end)
            if keep is not None:
                rows = rows.filter(keep)
            frames.append(rows.select(*ids, pl.lit(by_rows).alias("rows")))
    if not frames:
        return pl.DataFrame(schema={"id_type": pl.String, "id": pl.String, "rows": pl.Boolean})
    return (
        pl.concat(pl.collect_all(frames))
        .drop_nulls(["id_type", "id"])
        .group_by("id_type", "id")
        .agg(pl.col("rows").any())
        .sort("id_type", "id")
    )


@dataclass(frozen=True)
class Renewed:
    """The people aged with the person state's aggregates as of the new day (`one_ids`) and
    those aggregates: their window counts (one_id and `COUNT_NAMES`), interest signal sums
    (one_id, interest, _s, _n) and last event times (`EVENT_LAST`), as
    `event_long.per_person` gives them to pass 2."""

    one_ids: pl.DataFrame
    counts: pl.DataFrame
    sums: pl.DataFrame
    last: pl.DataFrame


def renewed_of(
    one_ids: pl.DataFrame, sums: pl.DataFrame, counts: pl.DataFrame, last: pl.DataFrame
) -> Renewed:
    """The `Renewed` of `one_ids` (one_id) from per-person sums, counts and last times as
    `event_long.per_person` gives them (of these people and maybe others)."""
    ids = one_ids.select("one_id")
    return Renewed(
        ids,
        counts.join(ids, on="one_id", how="semi").select("one_id", *COUNT_NAMES),
        sums.join(ids, on="one_id", how="semi").select(SIGNAL_SUMS),
        last.join(ids, on="one_id", how="semi").select(EVENT_LAST),
    )


def side_tables(
    summary: pl.DataFrame, event_last: pl.DataFrame, signal_sums: pl.DataFrame
) -> dict[str, pl.DataFrame]:
    """A build's `SIDE_TABLES` of the people it computed, from pass 1's summary and the
    staged aggregates of the person state, in a fixed order."""
    tables = {
        "summary": summary.select(SUMMARY),
        "event_last": event_last.select(EVENT_LAST),
        "signal_sums": signal_sums.select(SIGNAL_SUMS),
    }
    return {name: df.sort(_SORT[name]) for name, df in tables.items()}


def write_side_tables(tables: dict[str, pl.DataFrame], folder: Path) -> None:
    for name in SIDE_TABLES:
        path = side_path(folder, name)
        write_parquet(tables[name], path)
        path.chmod(0o600)


def side_path(folder: Path, name: str) -> Path:
    return folder / f"aging_{name}.parquet"


def has_side_tables(folder: Path) -> bool:
    return all(side_path(folder, name).is_file() for name in SIDE_TABLES)


def carried_side_tables(
    folder: Path,
    keep: pl.DataFrame,
    fresh: dict[str, pl.DataFrame],
    renewed: Renewed | None = None,
    gone: pl.Series | None = None,
) -> dict[str, pl.DataFrame]:
    """The side tables of a version built by aging: the previous version's (`folder`) rows of
    the people it kept (`keep`: one_id), which aging does not change, and `fresh` (the
    recomputed people's); the interest sums and last event times of the people aged with the
    state's aggregates are those (`renewed`).

    With `gone` (one_id: exactly the previous version's people not in `keep`, which the caller
    knows: those it dropped or recomputed), the previous rows are those of no one in `gone`: a
    filter by a few thousand one_ids instead of a join with everyone kept (at 2M people, the
    three tables: about 0.3 s against 1.9 s)."""
    out = {}
    moved = (
        {"signal_sums": (renewed.sums, SIGNAL_SUMS), "event_last": (renewed.last, EVENT_LAST)}
        if renewed is not None
        else {}
    )
    for name in SIDE_TABLES:
        kept, new, out_ids = keep.select("one_id"), fresh[name], gone
        if name in moved:
            assert renewed is not None
            theirs, cols = moved[name]
            kept = kept.join(renewed.one_ids, on="one_id", how="anti")
            if out_ids is not None:
                out_ids = pl.concat([out_ids, renewed.one_ids.get_column("one_id")])
            mine = theirs.join(keep.select("one_id"), on="one_id", how="semi")
            new = pl.concat([new.select(cols), mine.select(cols).cast(new.select(cols).schema)])
            new = new.sort(_SORT[name])
        old = pl.read_parquet(side_path(folder, name), glob=False)
        if out_ids is None:
            old = old.join(kept, on="one_id", how="semi", maintain_order="left")
        else:
            old = old.filter(~pl.col("one_id").is_in(out_ids.implode()))
        new = new.select(old.columns).cast(old.schema)  # sorted by `side_tables`
        # no one_id is in both, and both are in `_SORT` order: merged by one_id, not sorted
        out[name] = old.merge_sorted(new, key="one_id")
    return out


def age_rows(
    kept: pl.DataFrame,
    folder: Path,
    day: Day,
    cfg: SegmentsConfig,
    models: Models,
    taxonomy: Taxonomy,
    interest_graph: pl.DataFrame,
    renewed: Renewed | None = None,
) -> tuple[pl.DataFrame, list[str]]:
    """`kept` (rows of the version in `folder`, as of an earlier day, of people with no row on
    a window edge since that pass 2 reads as a row) as of `day`: the columns of
    `passes.as_of_frames` computed again from the version's side tables and the rows' own
    R/F/M columns and window counts (for the people of `renewed`, from its counts, sums and
    last times instead), then the interest expansion, and the names of the columns computed again. Those
    are not finalized: the caller finalizes them and assigns clusters, as a build does."""
    if kept.height == 0:
        return kept, []
    people = kept.lazy().select("one_id")

    def side(name: str) -> pl.LazyFrame:
        return pl.scan_parquet(side_path(folder, name), glob=False).join(
            people, on="one_id", how="semi", maintain_order="left"
        )

    counts = kept.lazy().select("one_id", *COUNT_NAMES)
    sums, last = side("signal_sums"), side("event_last")
    if renewed is not None:
        # people whose events or messages came in or left a window: the moved state's counts,
        # sums and last times
        mine = renewed.one_ids.lazy()

        def theirs(frame: pl.LazyFrame, moved: pl.DataFrame) -> pl.LazyFrame:
            return pl.concat(
                [
                    frame.join(mine, on="one_id", how="anti"),
                    moved.lazy().join(people, on="one_id", how="semi"),
                ],
                how="vertical_relaxed",
            )

        counts = theirs(counts, renewed.counts)
        sums = theirs(sums, renewed.sums)
        last = theirs(last, renewed.last)

    unit_days = cfg.predict.unit_days
    rfm = (
        kept.lazy()
        .filter(pl.col("first_purchase_at").is_not_null())
        .select(FEATURE_COLUMNS)
        .with_columns(as_of_columns(day))
        .join(side("summary"), on="one_id", how="left")
        .with_columns(
            observed_units(pl.col("first_purchase_at").dt.date(), day.last_day, unit_days).alias(
                "T"
            )
        )
        .select(*FEATURE_COLUMNS, *SUMMARY_COLS)
    )
    frames = as_of_frames(
        cfg,
        day,
        taxonomy,
        models,
        rfm,
        people,
        last,
        counts,
        sums,
    )
    # The new columns are joined to the one_ids alone and set beside the kept ones, which are
    # shared, not copied; the first frame to give a column gives it, as in pass 2.
    ids = kept.select("one_id")
    fresh: dict[str, pl.Series] = {}
    for part in pl.collect_all(frames):
        cols = [c for c in part.columns if c != "one_id" and c not in fresh]
        joined = ids.join(
            part.select("one_id", *cols), on="one_id", how="left", maintain_order="left"
        )
        fresh.update({c: joined.get_column(c) for c in cols})
    out = kept.with_columns(fresh.values())
    expanded = interest_expansion(
        out.lazy(), interest_graph.lazy(), taxonomy, cfg.interests
    ).collect()
    return expanded, [*fresh, *(c for c in expanded.columns if c.endswith("_expanded"))]


def aged(
    kept: pl.DataFrame,
    folder: Path,
    day: Day,
    cfg: SegmentsConfig,
    learned: Learned,
    taxonomy: Taxonomy,
    renewed: Renewed | None = None,
) -> pl.DataFrame:
    """`age_rows` with the week's learning, finalized, and each row's cluster the nearest of
    the week's centroids (what a live build does with the rows it computes)."""
    models = Models(learned.cuts, learned.bgnbd, learned.gamma_gamma, learned.category_map)
    rows, moved = age_rows(
        kept, folder, day, cfg, models, taxonomy, learned.interest_graph, renewed
    )
    tags = finalize(rows, taxonomy, only=moved)
    if learned.clusters is not None and tags.height:
        assigned = assign_clusters(tags, learned.clusters)
        cluster = ("cluster", "cluster_name")
        tags = finalize(
            tags.with_columns(assigned.get_column(c) for c in cluster), taxonomy, only=cluster
        )
    return tags


def day_of(label: str) -> Day | None:
    """The Day of a live version's as-of label (YYYY-MM-DD), None for anything else (a week
    label: `date.fromisoformat` would read "2026-W46" as its Monday)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", label):
        return None
    try:
        return Day(date.fromisoformat(label))
    except ValueError:
        return None


__all__ = [
    "MAX_DAYS",
    "SIDE_TABLES",
    "Renewed",
    "age_rows",
    "aged",
    "can_age",
    "carried_side_tables",
    "day_of",
    "edge_identifiers",
    "edge_ranges",
    "has_side_tables",
    "renewed_of",
    "side_tables",
    "window_weeks",
    "write_side_tables",
]
