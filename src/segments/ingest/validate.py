"""One table checked against the contract: typed columns, rejects, the adapter a file uses."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from segments.contract import (
    FLOAT,
    INT,
    LIST,
    PHONE_ID_TYPES,
    STR,
    TIMESTAMP,
    TS,
    Table,
    hide_phone,
    hide_phone_id,
    normalize_phone,
    one_line,
    phone_invalid_reason,
    sha256_hex,
)
from segments.errors import DataError
from segments.ingest.adapters import (
    SKIP,
    WECOM_ARCHIVE,
    Adapter,
    builtin_adapters,
    is_wecom_archive,
)
from segments.ingest.parse import (
    FREE_TEXT,
    _clean_id,
    _number,
    _only,
    mask_phones,
    with_timestamp,
)
from segments.io import FILE, ROW
from segments.settings.identity import IdentityConfig

# The largest amount of money one value may hold, in CNY: every money sum is added in whole
# cents as a 64-bit integer (exact, order-free), and 10^12 CNY a row keeps any person's sum
# far inside it. A larger value is a typo or a shifted column: `out of range`.
MONEY_LIMIT = 1e12


# A list column's text that is a JSON array of ids (strings or numbers), or the same written
# with single quotes (a Python list); any other text starting with "[" is rejected, where
# decoding it would stop the whole file (a lone surrogate escape, \ud800, is no id either).
_JSON_ID = r'(?:"(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u(?:[0-9a-cA-Ce-fE-F][0-9a-fA-F]{3}|[dD][0-7][0-9a-fA-F]{2}))*"|-?\d+(?:\.\d+)?)'
_JSON_IDS = rf"^\[\s*(?:{_JSON_ID}\s*(?:,\s*{_JSON_ID}\s*)*)?\]$"
_PY_IDS = r"^\[\s*(?:'[^'\"\\]*'\s*(?:,\s*'[^'\"\\]*'\s*)*)?\]$"


# Open codes, text that is neither an identifier, a record key, free text nor a closed
# vocabulary (`sku`, an event name, a link's `source`): where a shifted column or a typed
# value puts a mobile number in one, it is stored hashed as a record key is
# (`contract.hide_phone`), so no raw phone is kept and equal values stay equal.
OPEN_CODES = ("sku", "event", "source")


_OBJECT = r'^\{\s*"(?:[^"\\]|\\.)*"\s*:.*\}$'  # the JSON text of an object with a key


def _first_failed(cases: list[tuple[pl.Expr, pl.Expr]]) -> pl.Expr:
    """The value of the first case whose condition holds, null when none does: a chain of
    when/then, not a coalesce, so a failed check whose value is empty (a required value
    missing) shows nothing rather than the value of the next check that failed."""
    if not cases:
        return pl.lit(None, pl.String)
    (cond, value), *rest = cases
    chain = pl.when(cond).then(value)
    for cond, value in rest:
        chain = chain.when(cond).then(value)
    return chain


REJECT_SCHEMA = {
    "table": pl.String,
    "file": pl.String,
    "row": pl.Int64,
    "column": pl.String,
    "value": pl.String,
    "reason": pl.String,
}


def _reason(cond: pl.Expr, text: str | pl.Expr) -> pl.Expr:
    return pl.when(cond).then(pl.lit(text) if isinstance(text, str) else text)


def _t(name: str) -> str:
    return f"_t_{name}"


def validate(
    lf: pl.LazyFrame, table: Table, tz: str, identity: IdentityConfig | None = None
) -> pl.LazyFrame:
    """Parse and check every column; return canonical typed columns plus `_reject_column`,
    `_reject_reason`, `_reject_value`, `_phone_cn11` (valid receiver phone digits, orders only,
    never written) and `_phone_reject` (why the receiver phone was dropped).

    Built in small steps (text, then values, then checks) so that each expression refers to
    columns by name and the plan stays small."""
    present = set(lf.collect_schema().names())
    id_cols = {id_col for _, id_col in table.id_columns}
    identity = identity or IdentityConfig()
    patterns = dict(identity.patterns)

    # 1. the trimmed text of every column (null when empty), as read
    schema = lf.collect_schema()
    listed = {
        c.name for c in table.columns if c.kind != LIST and isinstance(schema.get(c.name), pl.List)
    }
    # timestamps a Parquet file holds typed (`io.read_raw` with `typed_times`): their value is
    # the column itself, and a text of theirs is only ever read where it is missing (a
    # required value missing); the placeholder "" stands for a value that is there
    typed = {
        c.name
        for c in table.columns
        if c.kind == TS and c.name in present and schema.get(c.name) == TIMESTAMP
    }
    texts: list[pl.Expr] = []
    for col in table.columns:
        if col.kind == LIST:
            if col.name in present and not isinstance(schema.get(col.name), pl.List):
                # what a reject row shows of a list given as text
                texts.append(pl.col(col.name).cast(pl.String).str.strip_chars().alias(_t(col.name)))
            continue
        if col.name in typed:
            texts.append(
                pl.when(pl.col(col.name).is_not_null()).then(pl.lit("")).alias(_t(col.name))
            )
            continue
        if col.name in listed:  # a JSON list where one value belongs: kept as text, rejected below
            raw = pl.col(col.name).cast(pl.List(pl.String)).list.join(",")
        else:
            raw = (
                pl.col(col.name).cast(pl.String) if col.name in present else pl.lit(None, pl.String)
            )
        text = raw.str.strip_chars()
        texts.append(pl.when(text.str.len_bytes() > 0).then(text).alias(_t(col.name)))
    step = lf.with_columns(texts)

    # 2. typed values
    values: list[pl.Expr] = []
    for col in table.columns:
        if col.kind == LIST:
            if col.name not in present:
                value = pl.lit(None, pl.List(pl.String))
            elif isinstance(schema.get(col.name), pl.List):
                value = pl.col(col.name).cast(pl.List(pl.String))
            else:  # text: a JSON list, or ids separated by commas, semicolons or spaces
                text = pl.col(col.name).cast(pl.String).str.strip_chars()
                json_ok, py_ok = text.str.contains(_JSON_IDS), text.str.contains(_PY_IDS)
                value = (
                    pl.when(json_ok)
                    .then(_only(json_ok, text).str.json_decode(pl.List(pl.String)))
                    .when(py_ok)  # a Python list: ['wm1', 'wm2']
                    .then(
                        _only(py_ok, text)
                        .str.replace_all("'", '"', literal=True)
                        .str.json_decode(pl.List(pl.String))
                    )
                    .when(~text.str.starts_with("["))
                    .then(text.str.replace_all(r"[,;\s]+", ",").str.split(","))
                )  # another bracketed text is rejected below
                value = value.list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
            mentioned = identity.mention_id_type
            if mentioned and mentioned not in PHONE_ID_TYPES:  # no raw phone stored
                value = value.list.eval(hide_phone_id(pl.lit(mentioned), pl.element(), patterns))
            else:  # ignored, or typed as phones: refused by identity, stored hashed
                value = value.list.eval(hide_phone(pl.element()))
            values.append(value.alias(col.name))
            continue
        text = pl.col(_t(col.name))
        if col.kind == STR:
            value = _clean_id(text) if col.name in id_cols or col.name.endswith("_id") else text
            if col.name.endswith("_id") and col.name not in id_cols:
                value = hide_phone(value)  # a record key: only its equality is read
            if col.name in FREE_TEXT:
                value = mask_phones(value)
            if col.allowed is not None or col.lower:
                value = value.str.to_lowercase()
            if col.name in OPEN_CODES and col.allowed is None:  # hashed where it holds a phone
                value = hide_phone(value)
        elif col.kind in (FLOAT, INT):
            value = _number(text).cast(pl.Float64, strict=False)
        else:
            continue  # timestamps: parsed below, in steps
        values.append(value.alias(col.name))
    step = step.with_columns(values)
    for col in table.columns:
        if col.kind == TS and col.name not in typed:
            step = with_timestamp(step, _t(col.name), col.name, tz)

    # 3. checks, by name
    checks: list[tuple[str, pl.Expr]] = []
    for col in table.columns:
        if col.kind == LIST:
            if col.name in present and not isinstance(schema.get(col.name), pl.List):
                raw = pl.col(_t(col.name))
                bad = raw.str.starts_with("[") & ~raw.str.contains(_JSON_IDS)
                bad = bad & ~raw.str.contains(_PY_IDS)
                checks.append((col.name, _reason(bad, "not a JSON list of ids")))
            continue
        text, value = pl.col(_t(col.name)), pl.col(col.name)
        if col.name in listed:
            checks.append(
                (
                    col.name,
                    _reason(pl.col(col.name).is_not_null(), "a list where one value belongs"),
                )
            )
        if col.kind == STR and col.name not in FREE_TEXT:
            # a JSON object in a JSON lines file where one value belongs reaches here as its
            # JSON text (`{"id": "m1"}`); in an identifier or a code it is no value
            braced = _only(text.str.starts_with("{"), text)
            checks.append(
                (
                    col.name,
                    _reason(braced.str.contains(_OBJECT), "an object where one value belongs"),
                )
            )
        if col.required:
            checks.append((col.name, _reason(text.is_null(), "required value missing")))
        if col.allowed is not None:
            checks.append(
                (
                    col.name,
                    _reason(
                        value.is_not_null() & ~value.is_in(list(col.allowed)),
                        f"unknown {col.name} (expected one of {', '.join(col.allowed)})",
                    ),
                )
            )
        if col.kind in (FLOAT, INT):
            checks.append(
                (
                    col.name,
                    _reason(
                        text.is_not_null()
                        & (value.is_null() | value.is_nan() | value.is_infinite()),
                        "not a number",
                    ),
                )
            )
            if col.kind == INT:
                # read through a float: beyond 2^53 a whole number is no longer held exactly
                checks.append((col.name, _reason(value.abs() >= 2.0**53, "out of range")))
            else:  # money: sums are kept in whole cents (Int64), which such values would wrap
                checks.append((col.name, _reason(value.abs() >= MONEY_LIMIT, "out of range")))
            if col.kind == INT:
                checks.append((col.name, _reason(value != value.round(0), "not a whole number")))
            if col.non_negative:
                checks.append((col.name, _reason(value < 0, "negative")))
        if col.kind == TS:
            checks.append(
                (col.name, _reason(text.is_not_null() & value.is_null(), "unparseable timestamp"))
            )
    if table.name == "orders":
        checks.append(
            ("refund", _reason(pl.col("refund") > pl.col("amount"), "refund exceeds amount"))
        )
    # identifiers: a phone's digits (only rows typed `phone` are normalised)
    step = step.with_columns(
        normalize_phone(_only(pl.col(type_col) == "phone", pl.col(id_col))).alias(f"_cn11_{id_col}")
        for type_col, id_col in table.id_columns
    )
    for type_col, id_col in table.id_columns:
        id_type, ident = pl.col(type_col), pl.col(id_col)
        bad_phone = (id_type == "phone") & ident.is_not_null() & pl.col(f"_cn11_{id_col}").is_null()
        checks.append((id_col, _reason(bad_phone, phone_invalid_reason(_only(bad_phone, ident)))))
        for hashed, length in (("phone_md5", 32), ("phone_sha256", 64)):
            checks.append(
                (
                    id_col,
                    _reason(
                        (id_type == hashed)
                        & ~_only(id_type == hashed, ident)
                        .str.to_lowercase()
                        .str.contains(f"^[0-9a-f]{{{length}}}$"),
                        f"{hashed} must be {length} hex characters",
                    ),
                )
            )
    # each check evaluated once, into a column of its own; the first that fails names the
    # reason, the column and the value
    failed = [f"__check_{i}" for i in range(len(checks))]
    step = step.with_columns(r.alias(f) for (_, r), f in zip(checks, failed, strict=True))
    step = step.with_columns(
        pl.coalesce(failed).alias("_reject_reason"),
        pl.coalesce(
            [
                pl.when(pl.col(f).is_not_null()).then(pl.lit(c))
                for (c, _), f in zip(checks, failed, strict=True)
            ]
        ).alias("_reject_column"),
        _first_failed(
            [
                (pl.col(f).is_not_null(), pl.col(_t(c)))
                for (c, _), f in zip(checks, failed, strict=True)
            ]
        ).alias("_reject_value"),
    ).drop(failed)

    # 4. defaults, then identifiers: phones normalised and hashed, hashed phones lower-cased
    # (non-strict casts: the rows whose value does not fit were rejected above)
    step = step.with_columns(
        pl.col(c.name).fill_null(pl.lit(c.default)).cast(c.dtype, strict=False)
        if c.default is not None
        else pl.col(c.name).cast(c.dtype, strict=False)
        for c in table.columns
    )
    finals: list[pl.Expr] = []
    for type_col, id_col in table.id_columns:
        id_type, ident = pl.col(type_col), pl.col(id_col)
        finals.append(
            pl.when(id_type == "phone")
            .then(sha256_hex(pl.col(f"_cn11_{id_col}")))
            .when(id_type.is_in(["phone_md5", "phone_sha256"]))
            .then(_only(id_type.is_in(["phone_md5", "phone_sha256"]), ident).str.to_lowercase())
            .otherwise(hide_phone_id(id_type, ident, patterns))
            .alias(id_col)
        )
        finals.append(
            pl.when(id_type == "phone")
            .then(pl.lit("phone_sha256"))
            .otherwise(id_type)
            .alias(type_col)
        )
    step = step.with_columns(finals)
    if table.name == "orders":
        step = step.with_columns(normalize_phone(_t("phone")).alias("_phone_cn11"))
        bad = pl.col(_t("phone")).is_not_null() & pl.col("_phone_cn11").is_null()
        step = step.with_columns(
            _reason(bad, phone_invalid_reason(_only(bad, pl.col(_t("phone"))))).alias(
                "_phone_reject"
            )
        )
    keep = [c for c in (FILE, ROW, SKIP) if c in present]
    extra = [f"_cn11_{id_col}" for _, id_col in table.id_columns]
    if table.name == "orders":
        extra += ["_phone_cn11", "_phone_reject"]
    return step.select(
        *keep,
        *table.names,
        *extra,
        "_reject_reason",
        "_reject_column",
        "_reject_value",
    )


def _declared_adapter(
    path: Path, table: str, adapters: list[Adapter], forced: Adapter | None
) -> Adapter | None:
    """The adapter a file is declared to use: forced with --adapter, or by file-name pattern."""
    if forced is not None and forced.table == table:
        return forced
    return next((a for a in adapters if a.table == table and a.matches(path)), None)


def _detected_adapter(table: str, columns: list[str]) -> Adapter:
    """For a file with no declared adapter: the WeCom archive by its columns, else the contract."""
    if table == "messages" and is_wecom_archive(columns):
        return WECOM_ARCHIVE
    return Adapter(name="contract", table=table)


def _reject_frame(rows: list[tuple[int, str, str | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=[(c, REJECT_SCHEMA[c]) for c in ("row", "column", "value", "reason")],
        orient="row",
    )


def _check_columns(
    rel: str, table: Table, adapter: Adapter, columns: list[str], categories: list[str] | None
) -> None:
    gone = adapter.missing_sources(columns)
    required_gone = {k: v for k, v in gone.items() if k in table.required}
    if required_gone:
        target, srcs = next(iter(required_gone.items()))
        raise DataError(
            f"{rel}: missing column {' or '.join(repr(s) for s in srcs)} "
            f"(needed for '{target}' by adapter '{adapter.name}')."
        )
    try:
        mapped = adapter.apply(pl.DataFrame(schema={c: pl.String for c in columns}), categories)
    except DataError as e:  # two columns read as one (`Status` and `status `)
        raise DataError(f"{rel}: {e}") from None
    absent = [col for col in table.required if col not in mapped.columns]
    if absent:
        found = ", ".join(one_line(c) for c in columns if c != ROW)
        fits = [
            a.name
            for a in builtin_adapters().values()
            if a.table == table.name and a.columns and not a.missing_sources(columns)
        ]
        raise DataError(
            f"{rel}: missing required column '{absent[0]}' for table '{table.name}'"
            + (f" (and {', '.join(absent[1:])})" if absent[1:] else "")
            + f"; found columns: {found[:300]}"
            + (
                f". These are the columns of a known export: pass --adapter {fits[0]}"
                if fits
                else ""
            )
            + "."
        )


def _phone_rejects(table: Table, rows: pl.LazyFrame, file: str | None = None) -> pl.LazyFrame:
    """Receiver phones that failed validation on kept rows (the rows themselves stay)."""
    return rows.filter(pl.col("_phone_reject").is_not_null()).select(
        pl.lit(table.name).alias("table"),
        (pl.col(FILE) if file is None else pl.lit(file)).alias("file"),
        pl.col(ROW).alias("row"),
        pl.lit("phone").alias("column"),
        pl.lit(None, pl.String).alias("value"),
        pl.col("_phone_reject").alias("reason"),
    )


def _value_counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    if df.height == 0:
        return {}
    vc = df.group_by(column).len().sort(["len", column], descending=[True, False])
    return {str(k): int(v) for k, v in vc.iter_rows()}
