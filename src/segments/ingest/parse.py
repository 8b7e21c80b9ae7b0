"""Raw text to values: timestamps, numbers, identifiers; phones masked in values and text."""

from __future__ import annotations

import polars as pl

from segments.contract import _D, _S, PHONE_IN_TEXT, TIMESTAMP, mask_value  # noqa: F401
from segments.settings.promo import PromoConfig

# the documented public list (MIIT virtual-operator segments), one source: [promo] settings
VIRTUAL_PREFIXES = PromoConfig().virtual_prefixes


def _only(cond: pl.Expr, expr: pl.Expr) -> pl.Expr:
    """`expr` where `cond` holds, null elsewhere; parsing a null costs nothing, so the slow
    paths below run only on the rows that need them."""
    return pl.when(cond).then(expr)


# a timestamp's text once the offset is cut off and a date or minutes are filled out
_BODY = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:[0-5]\d(?:\.\d+)?$"


def with_timestamp(lf: pl.LazyFrame, src: str, dst: str, tz: str) -> pl.LazyFrame:
    """Add `dst`: the text column `src` as naive local time. Naive text is local (`tz`); text
    with an offset (`+08:00`, `-0500`) or `Z` is converted to local time. Accepts ISO-8601
    with `T` or a space and optional fractional seconds, `YYYY/MM/DD`, minutes without
    seconds, and a bare date; a year of four digits, seconds to 59 and offsets to 14 hours.

    Built in steps over temporary columns, and every slow step gets a null input on the rows
    that do not need it (a null costs nothing): plain `YYYY-MM-DD HH:MM:SS` pays for one
    parse."""
    t, off, body, naive = "__ts_text", "__ts_off", "__ts_body", "__ts_naive"
    text = pl.col(src).cast(pl.String).str.strip_chars()
    lf = lf.with_columns(text.alias(t))
    # (`str.replace` with a pattern costs as much on a column that is mostly null as on a
    # full one: 52 ms for 360k orders of which 3% had a `T`. The rows that change are rebuilt
    # from slices instead, and the offset is cut off with `str.extract`, which skips nulls.)
    slash = _only(pl.col(t).str.contains("/", literal=True), pl.col(t))
    lf = lf.with_columns(
        pl.coalesce(
            _only(
                slash.str.contains(r"^\d{4}/\d{2}/\d{2}"),
                pl.concat_str(
                    slash.str.slice(0, 4),
                    pl.lit("-"),
                    slash.str.slice(5, 2),
                    pl.lit("-"),
                    slash.str.slice(8),
                ),
            ),
            pl.col(t),
        ).alias(t)
    )
    tee = _only(pl.col(t).str.contains("T", literal=True), pl.col(t))
    lf = lf.with_columns(
        pl.coalesce(
            _only(
                tee.str.contains(r"^\d{4}-\d{2}-\d{2}T"),
                pl.concat_str(tee.str.slice(0, 10), pl.lit(" "), tee.str.slice(11)),
            ),
            pl.col(t),
        ).alias(t)
    )
    lf = lf.with_columns(
        _only(pl.col(t).str.len_chars() > 16, pl.col(t))
        .str.extract(r"\d\s*(Z|[+-]\d{2}:?\d{2})$", 1)
        .alias(off)
    )
    lf = lf.with_columns(
        pl.coalesce(
            # what precedes the leftmost match of `\s*(Z|[+-]\d{2}:?\d{2})$`
            _only(pl.col(off).is_not_null(), pl.col(t)).str.extract(
                r"(?s)^(.*?)\s*(?:Z|[+-]\d{2}:?\d{2})$", 1
            ),
            pl.col(t),
        ).alias(body)
    )
    n = pl.col(body).str.len_chars()
    lf = lf.with_columns(
        pl.coalesce(
            _only(n == 10, pl.col(body)) + " 00:00:00",
            _only(n == 16, pl.col(body)) + ":00",
            pl.col(body),
        ).alias(body)
    )
    # a four-digit year, and seconds up to 59 (the parser reads `26-11-20` as the year 26 and
    # a 60th second as the next minute): anything else is an unparseable timestamp
    lf = lf.with_columns(_only(pl.col(body).str.contains(_BODY), pl.col(body)).alias(body))
    n = pl.col(body).str.len_chars()
    lf = lf.with_columns(
        pl.coalesce(
            _only(n == 19, pl.col(body)).str.to_datetime(
                "%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"
            ),
            _only(n != 19, pl.col(body)).str.to_datetime(
                "%Y-%m-%d %H:%M:%S%.f", strict=False, time_unit="us"
            ),
        ).alias(naive)
    )
    digits = pl.col(off).str.replace(":", "", literal=True)
    hours = digits.str.slice(1, 2).cast(pl.Int64, strict=False)
    mins = digits.str.slice(3, 2).cast(pl.Int64, strict=False)
    minutes = (
        pl.when(pl.col(off) == "Z")
        .then(pl.lit(0, pl.Int64))
        .when((hours <= 14) & (mins <= 59))  # the offsets in use run from -12:00 to +14:00
        .then((hours * 60 + mins) * pl.when(digits.str.starts_with("-")).then(-1).otherwise(1))
    )
    local = (
        (_only(pl.col(off).is_not_null(), pl.col(naive)) - pl.duration(minutes=minutes))
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone(tz)
        .dt.replace_time_zone(None)
    )
    lf = lf.with_columns(
        pl.coalesce(local, _only(pl.col(off).is_null(), pl.col(naive))).cast(TIMESTAMP).alias(dst)
    )
    return lf.drop(t, off, body, naive)


def parse_timestamp(expr: pl.Expr, tz: str) -> pl.Expr:
    """`with_timestamp` as an expression, for small inputs (tests, one-off values)."""

    def parse(s: pl.Series) -> pl.Series:
        return with_timestamp(s.to_frame("v").lazy(), "v", "out", tz).collect().get_column("out")

    return expr.map_batches(parse, return_dtype=TIMESTAMP)


# Free text people type (chat, search queries), and product categories, where a shifted column
# or a hand-typed note puts one: a mobile number in it is masked on the way in, so no validated
# table, cache entry, stored row or staged file ever holds one.
FREE_TEXT = ("text", "query", "category")


def mask_phones(expr: pl.Expr) -> pl.Expr:
    """Replace every mobile number inside free text with `<phone>` (only rows with 11 digits in
    a row pay for the regex; twice, because one match consumes the character the next needs)."""
    maybe = expr.str.contains(rf"[1１]{_S}*[3-9３-９]{_S}*[{_D}]{_S}*[{_D}]")
    masked = _only(maybe, expr)
    for _ in range(2):
        masked = masked.str.replace_all(PHONE_IN_TEXT, "${1}<phone>${3}")
    return pl.coalesce(masked, expr)


def _clean_id(expr: pl.Expr) -> pl.Expr:
    """Undo spreadsheet guards on identifiers: `="123"` and a leading apostrophe (only the
    rows that carry one pay for the regexes)."""
    guarded = expr.str.starts_with("=") | expr.str.starts_with("'")
    fixed = (
        _only(guarded, expr)
        .str.replace(r'^="(.*)"$', "$1")
        .str.replace(r"^'", "")
        .str.strip_chars()
    )
    return pl.coalesce(fixed, expr)


# Thousands grouped by commas, as a spreadsheet writes them: 1,234.50 (not 12,50 or 1,2,3).
_GROUPED = r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d*)?$"


def _number(expr: pl.Expr) -> pl.Expr:
    """Number text with a currency sign (¥, ￥, CNY), surrounding spaces, spreadsheet guards or
    thousands grouped by commas (`1,234.50`) cleaned. Any other comma or inner space stays, so
    the value is `not a number`: `12,50` (a decimal comma) or `1,2,3` must not become 1250
    or 123."""
    odd = expr.str.contains(r"[^0-9.eE+-]")
    text = (
        _clean_id(_only(odd, expr))
        .str.replace_all(r"[¥￥]", "")
        .str.strip_chars()
        .str.replace(r"^CNY\s*", "")
    )
    fixed = pl.when(text.str.contains(_GROUPED)).then(text.str.replace_all(",", "")).otherwise(text)
    return pl.coalesce(fixed, expr)
