"""Polars helpers shared by the stages: exact divisions, sorting a wide table in place, the rows
that differ between two versions of a table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl


def div(expr: pl.Expr, constant: float) -> pl.Expr:
    """`expr / constant`, computed the same way in every row whatever the frame's layout.

    polars (2.1) divides a column by a constant in one of two ways, chosen by how the column
    happens to be chunked: a one-row chunk (a bucket holding one person, a one-group
    aggregate) by true division, a longer one by a multiplication with `1 / constant`, and
    some lengths mix the two. They differ in the last bit: 1999 cents / 100 is 19.99 one way
    and 19.990000000000002 the other, so one person's value compared with a cut point or a
    threshold could give a different score or flag depending on who else is in the bucket.
    A multiplication by `1 / constant` is the same in every layout, so every division by a
    constant in the stages goes through here.

    It is not always the correctly rounded quotient: `div(49, 49)` is 0.9999999999999999 and
    `div(1999, 100)` 19.990000000000002. Money is rounded to the cent and scores to 1e-6
    before they are written or compared with a learned cut point (`features.round_money`,
    `tags.finalize`); compare whole numbers before dividing where a threshold must be exact."""
    if constant == 0:
        raise ValueError("div: division by zero")
    return expr * (1.0 / constant)


def blank_to_null(expr: pl.Expr) -> pl.Expr:
    """A value as text with its surrounding whitespace stripped; null when nothing is left."""
    text = expr.cast(pl.String).str.strip_chars()
    return pl.when(text.str.len_chars() == 0).then(None).otherwise(text)


def ranked(col: str, value: str, order: dict[str, int]) -> pl.Expr:
    """`col` (in an aggregation) sorted by `value`, highest first, ties in the fixed `order` of
    `col`'s values (a taxonomy's, a list of signals'): "the strongest, first listed first"."""
    return pl.col(col).sort_by(
        [pl.col(value), pl.col(col).replace_strict(order, return_dtype=pl.Int32)],
        descending=[True, False],
    )


def take_sorted(df: pl.DataFrame, by: str | Sequence[str]) -> pl.DataFrame:
    """`df.sort(by)` for keys without ties, built by moving one column at a time out of `df`.

    `df` is left without columns. `sort` holds the table twice until it returns; this holds it
    once plus one column (the weekly tag table of 10M people is about 9 GiB, their identity
    map 5 GiB). A table already in order moves its columns without copying them."""
    keys = [by] if isinstance(by, str) else list(by)
    if len(keys) == 1 and df.get_column(keys[0]).is_sorted():
        order = None
    else:
        order = df.select(pl.arg_sort_by(keys).alias("order")).to_series()
    return take_in_order(df, order)


def take_in_order(df: pl.DataFrame, order: pl.Series | np.ndarray | None) -> pl.DataFrame:
    """`df`'s rows in `order` (row numbers, each once; None or an ascending order: as they are),
    moving one column at a time out of `df`, which is left without columns (see
    `take_sorted`)."""
    if order is not None:
        order = order if isinstance(order, pl.Series) else pl.Series("order", order)
        if order.is_sorted():  # a permutation in ascending order is the identity
            order = None
    moved = []
    for name in df.columns:
        column = df.drop_in_place(name)
        moved.append(column if order is None else column.gather(order))
        del column
    return pl.DataFrame(moved)


def insert_positions(kept: pl.Series, fresh: pl.Series) -> np.ndarray | None:
    """Where each value of `fresh` goes among those of `kept` to keep one sorted sequence: both
    sorted and no value in both; the positions (ascending) are what `np.insert` takes. None
    when either is out of order or a value is in both: then the caller sorts.

    A few rows merged into a large sorted table this way cost a binary search each, not a
    sort of the table (the 8.7M-row identity map of 2M people: about 4 s to sort)."""
    if not (kept.is_sorted() and fresh.is_sorted()):
        return None
    at = kept.search_sorted(fresh, side="left").cast(pl.Int64).to_numpy()
    inside = at < kept.len()
    if inside.any() and (kept.gather(at[inside]) == fresh.filter(pl.Series(inside))).any():
        return None
    return at


def insert_positions_via(
    values: pl.Series, kept: np.ndarray, fresh: pl.Series
) -> np.ndarray | None:
    """`insert_positions(values.gather(kept), fresh)` without gathering `kept`: a binary search
    of all of `fresh` at once, reading `values` only at the rows it visits (about 23 per value
    of `fresh` among 8.7M), so a few rows merged into a large table do not cost a random read of
    all of it. That `values.gather(kept)` is sorted is *not* checked (the caller checks the
    merged result); `fresh` out of order, a null, or a value of `fresh` equal to one of the kept
    give None, as in `insert_positions`."""
    n = len(kept)
    if values.null_count() or not fresh.is_sorted():
        return None
    lo = np.zeros(fresh.len(), dtype=np.int64)
    hi = np.full(fresh.len(), n, dtype=np.int64)
    active = np.flatnonzero(lo < hi)
    while active.size:
        mid = (lo[active] + hi[active]) // 2
        below = (values.gather(kept[mid]) < fresh.gather(active)).to_numpy()
        lo[active[below]] = mid[below] + 1
        hi[active[~below]] = mid[~below]
        active = active[lo[active] < hi[active]]
    inside = lo < n
    if inside.any() and (values.gather(kept[lo[inside]]) == fresh.filter(pl.Series(inside))).any():
        return None
    return lo


def changed_rows(new: pl.DataFrame, old: pl.DataFrame) -> pl.DataFrame:
    """The rows in one of `new` and `old` and not the other, with `len` (how often the row is
    there). Rows are counted, so a row twice in one and once in the other has changed; nulls
    compare equal. Both frames hold the same columns."""
    cols = new.columns
    a, b = new.group_by(cols).len(), old.select(cols).group_by(cols).len()
    keys = [*cols, "len"]
    return pl.concat(
        [
            a.join(b, on=keys, how="anti", nulls_equal=True),
            b.join(a, on=keys, how="anti", nulls_equal=True),
        ]
    )
