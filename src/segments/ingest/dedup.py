"""Repeated keys: the last row read wins, found by the key hashes without holding a table whole."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)

from segments.contract import Table
from segments.ingest.cache import HASH, JsonMemo, Part, Run, _cache_error, _Entry, _Piece
from segments.ingest.validate import REJECT_SCHEMA, _phone_rejects
from segments.io import ROW

# How much of a table ingest holds at once (read from this module when used: tests lower them).
CHUNK_ROWS = 1_000_000  # rows of one Parquet input validated at a time
ROWS_PER_PART = 4_000_000  # rows of a part (a slice staged at once; a hash range if rewritten)
CHECK_ROWS = 32_000_000  # key hashes sorted at a time to find the repeated ones
FIX_ROWS = 2_000_000  # at most this many rows sharing a key hash are resolved in place


def _partitions(rows: int, table: Table, per_part: int | None = None) -> int:
    """Hash ranges (a power of two, at most 1024) holding about `per_part` rows each."""
    per_part = per_part or ROWS_PER_PART
    if not table.dedup_key or rows <= per_part:
        return 1
    parts = 1
    while parts * per_part < rows and parts < 1024:
        parts *= 2
    return parts


def _hash_range(k: int, parts: int, of: pl.Expr | None = None) -> pl.Expr:
    """Range k of `parts` (a power of two): a contiguous range of `_h` (or of the hash `of`)."""
    h = pl.col(HASH) if of is None else of
    shift = 64 - parts.bit_length() + 1
    lo = h >= pl.lit(k << shift, pl.UInt64)
    if k == parts - 1:
        return lo
    return lo & (h < pl.lit((k + 1) << shift, pl.UInt64))


def _replaced_rows(
    table: Table, pieces: list[_Piece], memo: SharedKeys | None = None
) -> tuple[dict[int, pl.Series], int] | None:
    """The rows that a later row with the same dedup key replaces (the last row read wins), as
    `_row` numbers by piece (its place in `pieces`: one file delivered twice is two pieces of
    the same cache file), and their count. None when more than `FIX_ROWS` rows share a key
    hash (a file delivered twice): the table is then deduplicated by hash range instead.

    The repeated key hashes are found by sorting the hashes alone, `CHECK_ROWS` at a time, so
    a table whose keys do not repeat is never read again; with `memo` (the hashes repeated
    among the pieces of the last run), when this run only adds pieces, from the new pieces'
    hashes alone: those repeated among them, and those the earlier pieces hold (one scan of
    their hash column for a few values, no sort)."""
    if not table.dedup_key:
        return {}, 0
    from_memo = memo.added_to(table.name, pieces) if memo is not None else None
    shared_hashes = from_memo if from_memo is not None else _shared_hashes(table, pieces)
    if shared_hashes is None:
        return None
    key = list(table.dedup_key)
    rows_sharing = (
        pl.concat(
            [
                pl.scan_parquet(p.path, glob=False)
                .filter(pl.col(HASH).is_in(shared_hashes.implode()))
                .select(*key, ROW, pl.lit(i, pl.Int32).alias("_piece"))
                for i, p in enumerate(pieces)
            ]
        )
        # the memo's hashes are not counted yet: one row past the limit says enough (the
        # sort above counted its own, `_shared_hashes`)
        .head(FIX_ROWS + 1)
        .collect()
        .sort("_piece", ROW)  # the order the rows were read in
        if shared_hashes.len()
        else pl.DataFrame()
    )
    if rows_sharing.height > FIX_ROWS:
        return None
    if memo is not None:
        memo.keep(table.name, pieces, shared_hashes)
    if shared_hashes.is_empty():
        return {}, 0
    has_key = pl.all_horizontal(pl.col(c).is_not_null() for c in key)
    last = (pl.col(key[0]) if len(key) == 1 else pl.struct(key)).is_last_distinct()
    replaced = rows_sharing.filter(has_key & ~last)
    drop = {
        int(i): group.get_column(ROW).sort()
        for (i,), group in replaced.partition_by("_piece", as_dict=True).items()
    }
    return drop, replaced.height


def _shared_hashes(table: Table, pieces: list[_Piece]) -> pl.Series | None:
    """The key hashes more than one row of `pieces` holds (sorted, unique), found by sorting
    the hashes `CHECK_ROWS` at a time; None when more than `FIX_ROWS` rows share one."""
    ranges = _partitions(sum(p.rows for p in pieces), table, CHECK_ROWS)
    repeated: list[pl.Series] = [pl.Series(HASH, [], pl.UInt64)]
    rows = 0
    for k in range(ranges):
        lf = _hashes(pieces)
        if ranges > 1:
            lf = lf.filter(_hash_range(k, ranges))
        hashes = lf.collect().get_column(HASH).sort()
        shared = (hashes == hashes.shift(1)) | (hashes == hashes.shift(-1))
        rows += int(shared.sum())
        if rows > FIX_ROWS:
            return None
        repeated.append(hashes.filter(shared).unique())
        del hashes, shared
    return pl.concat(repeated).unique().sort()


def _hashes(pieces: list[_Piece]) -> pl.LazyFrame:
    if not pieces:
        return pl.LazyFrame(schema={HASH: pl.UInt64})
    return pl.scan_parquet([p.path for p in pieces], glob=False).select(pl.col(HASH).drop_nulls())


class SharedKeys(JsonMemo):
    """The key hashes repeated among each table's pieces in the last run, and those pieces
    (cache file names, in order), so that a run that only adds pieces finds the repeated keys
    from the new pieces' hashes. Kept in `<cache>.shared_keys.json`; a damaged or foreign one
    is ignored, and a run that drops or replaces a piece finds them all again."""

    suffix = "shared_keys"
    LIMIT = 1_000_000  # more repeated hashes than this are not remembered

    def added_to(self, table: str, pieces: list[_Piece]) -> pl.Series | None:
        """The repeated hashes of `pieces` from the last run's, when its pieces are all still
        here (as many times each); None when they must all be found again."""
        held = self.known.get(table)
        try:
            spare = Counter(list(held["pieces"]))
            old_shared = pl.Series(HASH, held["shared"], pl.UInt64)
        except (KeyError, TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            return None
        new, old = [], []
        for p in pieces:  # the first occurrences are the old ones, the rest were added
            if spare[p.key] > 0:
                spare[p.key] -= 1
                old.append(p)
            else:
                new.append(p)
        if any(n > 0 for n in spare.values()):  # a piece of the last run is gone
            return None
        if not new:
            return old_shared.unique().sort()
        fresh = _hashes(new).collect().get_column(HASH)
        counts = fresh.value_counts(name="_n")
        among_new = counts.filter(pl.col("_n") > 1).get_column(HASH)
        candidates = counts.get_column(HASH)
        in_old = (
            _hashes(old).filter(pl.col(HASH).is_in(candidates.implode())).collect().get_column(HASH)
            if old
            else pl.Series(HASH, [], pl.UInt64)
        )
        return pl.concat([old_shared, among_new, in_old]).unique().sort()

    def keep(self, table: str, pieces: list[_Piece], shared: pl.Series) -> None:
        if shared.len() <= self.LIMIT:
            self.seen[table] = {"pieces": [p.key for p in pieces], "shared": shared.to_list()}


def _slices(
    pieces: list[_Piece], drop: dict[int, pl.Series], columns: tuple[str, ...]
) -> list[Part]:
    """The pieces, in the order read, cut into parts of `ROWS_PER_PART` rows (a big CSV file is
    one piece; a part is what the staging step holds in memory)."""
    parts: list[Part] = []
    runs: list[Run] = []
    held = 0
    for i, p in enumerate(pieces):
        first = 0
        while True:
            n = min(p.rows - first, ROWS_PER_PART - held)
            runs.append(Run(p.path, first, n, p.rows, drop.get(i)))
            held += n
            first += n
            if held >= ROWS_PER_PART:
                parts.append(Part(tuple(runs), columns))
                runs, held = [], 0
            if first >= p.rows:
                break
    if runs or not parts:
        parts.append(Part(tuple(runs), columns))
    return parts


def _deduplicated(
    table: Table, entries: list[_Entry], parts: int, columns: tuple[str, ...]
) -> Iterator[tuple[pl.DataFrame, int, pl.DataFrame]]:
    """Each partition of the table: (accepted rows, duplicates dropped, receiver-phone rejects).
    The last row read wins (files in name order, rows in file order)."""
    for k in range(parts):
        lf = pl.concat([e.scan() for e in entries], how="vertical")
        if parts > 1:  # rows without a key spread by their row number
            spread = pl.col(ROW).cast(pl.String).nchash.xxhash64()
            lf = lf.filter(_hash_range(k, parts, pl.coalesce(pl.col(HASH), spread)))
        try:
            good = lf.collect()
        except (pl.exceptions.PolarsError, OSError) as e:  # a cache file damaged or deleted
            raise _cache_error(table, entries, e) from None
        dups = 0
        if table.dedup_key:
            key = list(table.dedup_key)
            has_key = pl.all_horizontal(pl.col(c).is_not_null() for c in key)
            last = (pl.col(key[0]) if len(key) == 1 else pl.struct(key)).is_last_distinct()
            deduped = good.filter(~has_key | last)
            dups = good.height - deduped.height
            good = deduped
        id_rejects = pl.DataFrame(schema=REJECT_SCHEMA)
        if "_phone_reject" in good.columns:
            id_rejects = _phone_rejects(table, good.lazy()).collect()
        yield good.select(columns), dups, id_rejects
