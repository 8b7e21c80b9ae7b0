"""Polars expression helpers shared by the per-user stages."""

from __future__ import annotations

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
    constant in the stages goes through here."""
    if constant == 0:
        raise ValueError("div: division by zero")
    return expr * (1.0 / constant)
