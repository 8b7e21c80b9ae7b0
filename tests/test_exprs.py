"""`segments.exprs`: a division that does not depend on the frame's layout; sorting in place."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from segments.exprs import div, take_sorted


def chunked(values: list[float], sizes: list[int]) -> pl.DataFrame:
    """`values` as a frame of chunks of the given sizes (the last one takes the rest)."""
    parts, start = [], 0
    for size in [*sizes, len(values)]:
        if start >= len(values):
            break
        stop = min(start + max(size, 1), len(values))
        parts.append(pl.DataFrame({"g": range(start, stop), "x": values[start:stop]}))
        start = stop
    return pl.concat(parts, rechunk=False)


def test_polars_plain_division_follows_the_layout() -> None:
    # Why `div` exists: 46 / 416 in a one-row frame is not 46 / 416 in a longer one. If
    # polars makes these equal some day, this test says `div` could go.
    one = pl.DataFrame({"x": [46.0]}).select(pl.col("x") / 416).item()
    many = pl.DataFrame({"x": [46.0] * 5}).select(pl.col("x") / 416).item(0, 0)
    assert one != many


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(
        st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=40
    ),
    sizes=st.lists(st.integers(1, 5), max_size=12),
    constant=st.sampled_from([100, 7, 10_000, 416, 3.5, 2**48, 0.3]),
)
def test_div_is_the_same_in_every_layout(
    values: list[float], sizes: list[int], constant: float
) -> None:
    expected = [v * (1.0 / constant) for v in values]
    df = chunked(values, sizes)
    assert df.select(div(pl.col("x"), constant))["x"].to_list() == expected
    for engine in ("in-memory", "streaming"):
        got = df.lazy().select(div(pl.col("x"), constant)).collect(engine=engine)["x"]
        assert got.to_list() == expected
    # as in the stages: a per-group aggregate divided by a constant
    agg = (
        df.lazy()
        .group_by("g", maintain_order=True)
        .agg(div(pl.col("x").sum(), constant))
        .collect()["x"]
    )
    assert agg.to_list() == expected


def test_div_by_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="division by zero"):
        div(pl.col("x"), 0)


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.text(min_size=0, max_size=4), unique=True, max_size=30),
    presorted=st.booleans(),
)
def test_take_sorted_equals_sort_and_empties_its_input(keys: list[str], presorted: bool) -> None:
    keys = sorted(keys) if presorted else keys
    df = pl.DataFrame(
        {
            "x": list(range(len(keys))),
            "one_id": keys,
            "tags": [[k, k] for k in keys],
            "score": [len(k) / 3 for k in keys],
        },
        schema_overrides={"one_id": pl.String, "tags": pl.List(pl.String)},
    )
    expected = df.sort("one_id")
    got = take_sorted(df, "one_id")
    assert got.columns == ["x", "one_id", "tags", "score"]
    assert_frame_equal(got, expected, check_exact=True)
    assert df.width == 0  # the columns were moved out, not copied


@settings(max_examples=40, deadline=None)
@given(
    pairs=st.lists(
        st.tuples(st.sampled_from(["a", "b", None]), st.integers(0, 5)), unique=True, max_size=18
    )
)
def test_take_sorted_by_several_keys_equals_sort(pairs: list[tuple[str | None, int]]) -> None:
    df = pl.DataFrame(
        {
            "kind": [k for k, _ in pairs],
            "n": [n for _, n in pairs],
            "sources": [[str(n)] for _, n in pairs],
        },
        schema={"kind": pl.String, "n": pl.Int64, "sources": pl.List(pl.String)},
    )
    expected = df.sort("kind", "n")
    assert_frame_equal(take_sorted(df, ["kind", "n"]), expected, check_exact=True)
    assert df.width == 0


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(alphabet="abcU0123", min_size=1, max_size=4), unique=True, max_size=40),
    data=st.data(),
)
def test_insert_positions_merge_two_sorted_sets_as_a_sort_would(values, data) -> None:
    """Oracle: `np.insert` at the positions gives the sorted union; a value in both, or a side
    out of order, gives None."""
    from segments.exprs import insert_positions

    fresh_mask = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    kept = sorted(v for v, f in zip(values, fresh_mask, strict=True) if not f)
    fresh = sorted(v for v, f in zip(values, fresh_mask, strict=True) if f)
    at = insert_positions(pl.Series(kept, dtype=pl.String), pl.Series(fresh, dtype=pl.String))
    assert at is not None
    merged = np.insert(np.array(kept, dtype=object), at, np.array(fresh, dtype=object))
    assert merged.tolist() == sorted(values)
    if kept:
        both = pl.Series(sorted({*fresh, kept[0]}), dtype=pl.String)
        assert insert_positions(pl.Series(kept, dtype=pl.String), both) is None
    if len(kept) > 1:
        backwards = pl.Series(kept[::-1], dtype=pl.String)
        assert insert_positions(backwards, pl.Series(fresh, dtype=pl.String)) is None


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.text(alphabet="abcU0123", min_size=1, max_size=4), unique=True, max_size=40),
    extra=st.lists(st.text(alphabet="xyz", min_size=1, max_size=2), unique=True, max_size=6),
    data=st.data(),
)
def test_insert_positions_via_rows_equal_those_of_the_gathered_rows(values, extra, data) -> None:
    """Oracle: `insert_positions` over the gathered kept values; the kept rows lie anywhere in
    a larger column (here among other values, shuffled); a value in both gives None."""
    import random

    from segments.exprs import insert_positions, insert_positions_via

    mask = data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values)))
    kept = sorted(v for v, f in zip(values, mask, strict=True) if not f)
    fresh = pl.Series(sorted(v for v, f in zip(values, mask, strict=True) if f), dtype=pl.String)
    column = [*kept, *extra, *fresh]
    random.Random(len(column)).shuffle(column)
    where = {v: i for i, v in enumerate(column)}
    rows = np.array([where[v] for v in kept], dtype=np.int64)
    col = pl.Series(column, dtype=pl.String)
    got = insert_positions_via(col, rows, fresh)
    want = insert_positions(pl.Series(kept, dtype=pl.String), fresh)
    assert got is not None and want is not None
    assert got.tolist() == want.tolist()
    if kept:
        both = pl.Series(sorted({*fresh, kept[-1]}), dtype=pl.String)
        assert insert_positions_via(col, rows, both) is None
    if fresh.len() > 1:
        assert insert_positions_via(col, rows, fresh.reverse()) is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(["U1", "U2", "U3", "U10", "U9"]), max_size=30), st.booleans())
def test_people_are_counted_as_runs_of_the_sorted_map_and_distinct_otherwise(ids, sort):
    from segments.outputs import _distinct

    s = pl.Series("one_id", sorted(ids) if sort else ids, dtype=pl.String)
    assert _distinct(s) == s.n_unique() == len(set(ids))
