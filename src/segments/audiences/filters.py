"""Safe pack filters: SQL boolean expressions over tag columns, parsed by Polars SQL, not eval."""

from __future__ import annotations

import re
from collections.abc import Mapping

import polars as pl

from segments.errors import ConfigError

MAX_FILTER_CHARS = 2_000

_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
# Words that only appear in statements and subqueries, never in one boolean expression.
_STATEMENT_WORDS = re.compile(r"\b(select|values|with|table|exists)\b", re.IGNORECASE)


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


class FilterError(ConfigError, ValueError):
    """A pack filter that cannot be used (a ConfigError; also a ValueError for pydantic)."""


def compile_filter(text: str) -> pl.Expr:
    """Parse `text`, an SQL boolean expression over tag columns, into a polars expression.

    Uses Polars SQL (`pl.sql_expr`); nothing is evaluated as Python. Refused with a one-line
    FilterError (a ConfigError): empty text, several statements (`;`), subqueries (`SELECT`,
    `VALUES`, `WITH`, `TABLE`, `EXISTS`), text that does not parse, unknown functions, and
    expressions that name no column. Whether the columns exist and the result is boolean is checked against
    the tag table by `check_filter`.

    >>> compile_filter("frequency_52w >= 3 AND NOT is_coupon_hunter").meta.root_names()
    ['frequency_52w', 'is_coupon_hunter']
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError("the filter is empty")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"the filter is {len(text):,} characters long (at most {MAX_FILTER_CHARS:,})"
        )
    if "\x00" in text:
        raise FilterError("the filter holds a NUL character")
    bare = _SQL_STRING.sub("''", text)
    if ";" in bare:
        raise FilterError("the filter must be one expression: ';' is not allowed")
    word = _STATEMENT_WORDS.search(bare)
    if word:
        raise FilterError(
            f"subqueries and statements are not allowed in a filter (found {word.group(0).upper()})"
        )
    try:
        expr = pl.sql_expr(text)
    except Exception as e:  # polars raises several SQL error types
        reason = first_line(e)
        keyword = re.search(r"found '(\w+)' clause", reason)
        if keyword:  # a column named like an SQL keyword, e.g. cluster
            word = keyword.group(1)
            reason += f'; a column called {word} must be quoted: "{word}"'
        raise FilterError(f"not a valid SQL expression: {reason}") from None
    if not isinstance(expr, pl.Expr):
        raise FilterError("the filter must be one expression")
    roots = expr.meta.root_names()
    if ".subplan" in str(expr) or any(r.startswith("_POLARS") for r in roots):
        raise FilterError("subqueries are not allowed in a filter")
    if not roots:
        raise FilterError("the filter names no tag column")
    return expr


def check_filter(expr: pl.Expr, text: str, schema: Mapping[str, pl.DataType], pack: str) -> None:
    """Check a compiled filter against the tag table's schema; ConfigError (one line) naming the
    pack when it names an unknown column, cannot be evaluated, or is not boolean."""
    unknown = [n for n in dict.fromkeys(expr.meta.root_names()) if n not in schema]
    if unknown:
        more = f" (also {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else ""
        raise ConfigError(
            f"pack '{pack}': filter {text!r} names unknown column '{unknown[0]}'{more}; "
            f"the tag table has no such column."
        )
    try:
        dtype = pl.DataFrame(schema=dict(schema)).select(expr.alias("_f")).schema["_f"]
    except Exception as e:
        raise ConfigError(
            f"pack '{pack}': filter {text!r} cannot be evaluated on the tag table: {first_line(e)}"
        ) from None
    if dtype != pl.Boolean:
        raise ConfigError(
            f"pack '{pack}': filter {text!r} is not a true/false expression (it gives {dtype})."
        )
