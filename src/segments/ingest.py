"""Ingest: read every input file, validate it against the contract, hash phones, keep every reject.

For each table the counts reconcile: `read = accepted + rejected + duplicates + skipped`.
A rejected row goes to `rejects/<table>.parquet` with its file, row, column, value and reason;
an invalid identifier on a row that is otherwise good (a receiver phone) goes to
`rejects/identifiers.parquet` and the row is kept.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)
import pyarrow.parquet as pq

from segments.adapters import SKIP, WECOM_ARCHIVE, Adapter, is_wecom_archive
from segments.contract import (
    FLOAT,
    INT,
    LIST,
    STR,
    TABLES,
    TIMESTAMP,
    TS,
    Table,
    normalize_phone,
    phone_hash_columns,
    phone_invalid_reason,
    sha256_hex,
)
from segments.errors import DataError
from segments.io import FILE, ROW, iter_raw, sha256_file, table_files

REJECT_SCHEMA = {
    "table": pl.String,
    "file": pl.String,
    "row": pl.Int64,
    "column": pl.String,
    "value": pl.String,
    "reason": pl.String,
}
VIRTUAL_PREFIXES = ("170", "171", "162", "165", "167")


def _only(cond: pl.Expr, expr: pl.Expr) -> pl.Expr:
    """`expr` where `cond` holds, null elsewhere; parsing a null costs nothing, so the slow
    paths below run only on the rows that need them."""
    return pl.when(cond).then(expr)


def with_timestamp(lf: pl.LazyFrame, src: str, dst: str, tz: str) -> pl.LazyFrame:
    """Add `dst`: the text column `src` as naive local time. Naive text is local (`tz`); text
    with an offset (`+08:00`, `-0500`) or `Z` is converted to local time. Accepts ISO-8601
    with `T` or a space and optional fractional seconds, `YYYY/MM/DD`, minutes without
    seconds, and a bare date.

    Built in steps over temporary columns, and every slow step gets a null input on the rows
    that do not need it (a null costs nothing): plain `YYYY-MM-DD HH:MM:SS` pays for one
    parse."""
    t, off, body, naive = "__ts_text", "__ts_off", "__ts_body", "__ts_naive"
    text = pl.col(src).cast(pl.String).str.strip_chars()
    lf = lf.with_columns(text.alias(t))
    lf = lf.with_columns(
        pl.coalesce(
            _only(pl.col(t).str.contains("/", literal=True), pl.col(t)).str.replace(
                r"^(\d{4})/(\d{2})/(\d{2})", "$1-$2-$3"
            ),
            pl.col(t),
        ).alias(t)
    )
    lf = lf.with_columns(
        pl.coalesce(
            _only(pl.col(t).str.contains("T", literal=True), pl.col(t)).str.replace(
                r"^(\d{4}-\d{2}-\d{2})T", "$1 "
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
            _only(pl.col(off).is_not_null(), pl.col(t)).str.replace(
                r"\s*(Z|[+-]\d{2}:?\d{2})$", ""
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
    minutes = (
        pl.when(pl.col(off) == "Z")
        .then(pl.lit(0, pl.Int64))
        .otherwise(
            (
                digits.str.slice(1, 2).cast(pl.Int64, strict=False) * 60
                + digits.str.slice(3, 2).cast(pl.Int64, strict=False)
            )
            * pl.when(digits.str.starts_with("-")).then(-1).otherwise(1)
        )
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


# ASCII or full-width (what Chinese input methods type): a phone is masked in either form.
_PHONE_LIKE = re.compile(
    r"(?:[+＋]?(?:[0０]{2})?[8８][6６][\s-]*)?(?<!\d)[1１][3-9３-９]\d(?:[\s-]*\d){8}(?!\d)"
)


def mask_value(value: str | None, is_phone: bool) -> str | None:
    """What a reject row may show of a raw value: never a phone's digits."""
    if value is None:
        return None
    if is_phone:
        seen = 0
        out = []
        for ch in value:
            if ch.isdigit():
                seen += 1
                out.append(ch if seen <= 3 else "*")
            else:
                out.append(ch)
        return "".join(out)[:200]
    return _PHONE_LIKE.sub("<phone>", value)[:200]


# Free text people type (chat, search queries): a mobile number in it is masked on the way in,
# so no validated table, cache entry or staged file ever holds one.
FREE_TEXT = ("text", "query")
_D = "0-9０-９"  # a digit, ASCII or full-width
_PHONE_IN_TEXT = (
    rf"(^|[^{_D}])((?:[+＋]?(?:[0０]{{2}})?[8８][6６][\s-]*)?[1１][3-9３-９][{_D}]"
    rf"(?:[\s-]*[{_D}]){{8}})([^{_D}]|$)"
)


def mask_phones(expr: pl.Expr) -> pl.Expr:
    """Replace every mobile number inside free text with `<phone>` (only rows with 11 digits in
    a row pay for the regex; twice, because one match consumes the character the next needs)."""
    maybe = expr.str.contains(rf"[1１][3-9３-９][{_D}][\s-]*[{_D}]")
    masked = _only(maybe, expr)
    for _ in range(2):
        masked = masked.str.replace_all(_PHONE_IN_TEXT, "${1}<phone>${3}")
    return pl.coalesce(masked, expr)


@dataclass
class TableCounts:
    files: int = 0
    read: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    skip_reasons: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected + self.duplicates + self.skipped

    def to_dict(self) -> dict:
        return asdict(self)


class Run(NamedTuple):
    """Rows `first .. first + rows` of a validated Parquet file (of `total` rows), less the
    rows whose `_row` number is in `drop` (a later row with the same key replaced them)."""

    path: Path
    first: int
    rows: int
    total: int
    drop: pl.Series | None = None

    def scan(self) -> pl.LazyFrame:
        lf = pl.scan_parquet(self.path, glob=False)
        if self.rows < self.total:
            lf = lf.slice(self.first, self.rows)
        if self.drop is not None:
            lf = lf.filter(~pl.col(ROW).is_in(self.drop.implode()))
        return lf


@dataclass(frozen=True)
class Part:
    """A slice of a table on disk, read in place: runs of rows of validated Parquet files,
    projected onto the table's columns. The same file may appear in two runs (one file
    delivered twice), each with the rows it loses."""

    runs: tuple[Run, ...]
    columns: tuple[str, ...]

    @property
    def files(self) -> list[Path]:
        return list(dict.fromkeys(run.path for run in self.runs))

    @property
    def rows(self) -> int:
        """Rows before the replaced ones are left out."""
        return sum(run.rows for run in self.runs)

    def scan(self) -> pl.LazyFrame:
        frames = [run.scan().select(self.columns) for run in self.runs]
        return pl.concat(frames) if len(frames) > 1 else frames[0]


@dataclass
class IngestResult:
    tables: dict[str, pl.DataFrame]  # in memory (empty when spooled: see `parts`)
    rejects: dict[str, pl.DataFrame]
    identifier_rejects: pl.DataFrame
    phone_hashes: pl.DataFrame
    counts: dict[str, TableCounts]
    inputs: list[dict]
    parts: dict[str, list[Part]] = field(default_factory=dict)  # spooled: slices on disk
    reused: int = 0  # input files whose validation came from the cache

    @property
    def names(self) -> list[str]:
        return [n for n in TABLES if n in self.tables or n in self.parts]

    def scan(self, name: str) -> pl.LazyFrame | None:
        """One table, lazily, whether it is held in memory or spooled to disk."""
        if name in self.tables:
            return self.tables[name].lazy()
        if name in self.parts:
            return pl.concat([part.scan() for part in self.parts[name]])
        return None


def _reason(cond: pl.Expr, text: str | pl.Expr) -> pl.Expr:
    return pl.when(cond).then(pl.lit(text) if isinstance(text, str) else text)


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


def _number(expr: pl.Expr) -> pl.Expr:
    """Number text with thousands separators, currency signs or spreadsheet guards cleaned."""
    odd = expr.str.contains(r"[^0-9.eE+-]")
    fixed = _clean_id(_only(odd, expr)).str.replace_all(r"[,¥￥\s]", "").str.replace(r"^CNY", "")
    return pl.coalesce(fixed, expr)


def _t(name: str) -> str:
    return f"_t_{name}"


def validate(lf: pl.LazyFrame, table: Table, tz: str) -> pl.LazyFrame:
    """Parse and check every column; return canonical typed columns plus `_reject_column`,
    `_reject_reason`, `_reject_value`, `_phone_cn11` (valid receiver phone digits, orders only,
    never written) and `_phone_reject` (why the receiver phone was dropped).

    Built in small steps (text, then values, then checks) so that each expression refers to
    columns by name and the plan stays small."""
    present = set(lf.collect_schema().names())
    id_cols = {id_col for _, id_col in table.id_columns}

    # 1. the trimmed text of every column (null when empty), as read
    schema = lf.collect_schema()
    listed = {
        c.name for c in table.columns if c.kind != LIST and isinstance(schema.get(c.name), pl.List)
    }
    texts: list[pl.Expr] = []
    for col in table.columns:
        if col.kind == LIST:
            continue
        if col.name in listed:  # a JSON list where one value belongs: kept as text, rejected below
            raw = pl.col(col.name).cast(pl.List(pl.String)).list.join(",")
        else:
            raw = (
                pl.col(col.name).cast(pl.String) if col.name in present else pl.lit(None, pl.String)
            )
        text = raw.str.strip_chars()
        texts.append(pl.when(text.str.len_chars() > 0).then(text).alias(_t(col.name)))
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
                value = (
                    pl.when(text.str.starts_with("["))
                    .then(text.str.replace_all("'", '"').str.json_decode(pl.List(pl.String)))
                    .otherwise(text.str.replace_all(r"[,;\s]+", ",").str.split(","))
                )
                value = value.list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
            values.append(value.alias(col.name))
            continue
        text = pl.col(_t(col.name))
        if col.kind == STR:
            value = _clean_id(text) if col.name in id_cols or col.name.endswith("_id") else text
            if col.name in FREE_TEXT:
                value = mask_phones(value)
            if col.allowed is not None:
                value = value.str.to_lowercase()
        elif col.kind in (FLOAT, INT):
            value = _number(text).cast(pl.Float64, strict=False)
        else:
            continue  # timestamps: parsed below, in steps
        values.append(value.alias(col.name))
    step = step.with_columns(values)
    for col in table.columns:
        if col.kind == TS:
            step = with_timestamp(step, _t(col.name), col.name, tz)

    # 3. checks, by name
    checks: list[tuple[str, pl.Expr]] = []
    for col in table.columns:
        if col.kind == LIST:
            continue
        text, value = pl.col(_t(col.name)), pl.col(col.name)
        if col.name in listed:
            checks.append(
                (
                    col.name,
                    _reason(pl.col(col.name).is_not_null(), "a list where one value belongs"),
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
                checks.append((col.name, _reason(value.abs() >= 2.0**62, "out of range")))
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
    reasons = [r for _, r in checks]
    step = step.with_columns(
        pl.coalesce(reasons).alias("_reject_reason"),
        pl.coalesce([pl.when(r.is_not_null()).then(pl.lit(c)) for c, r in checks]).alias(
            "_reject_column"
        ),
        pl.coalesce([pl.when(r.is_not_null()).then(pl.col(_t(c))) for c, r in checks]).alias(
            "_reject_value"
        ),
    )

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
            .otherwise(ident)
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


# ---------------------------------------------------------------------------------------------
# Validated files on disk: the ingest cache
#
# Each input file is validated once into a cache entry named by what decides its content (the
# file's SHA-256, its table, its adapter, the ingest settings and this code):
#
#   <cache>/<key>/good-00000.parquet ...  accepted rows (before cross-file dedup), identifiers
#                                         hashed, with `_h` (the dedup key's hash; large pieces
#                                         sorted by it)
#   <cache>/<key>/rejects.parquet         row, column, masked value, reason
#   <cache>/<key>/phones.parquet          every hashed form of the file's phones (no digits)
#   <cache>/<key>/meta.json               counts
#
# Next week only the new files are validated. Deduplication then runs over all entries one
# `_h` range at a time, so no table is ever held whole in memory.

CACHE_VERSION = "1"
CHUNK_ROWS = 1_000_000  # rows of one Parquet input validated at a time
ROWS_PER_PART = 4_000_000  # rows of a part (a slice staged at once; a hash range if rewritten)
CHECK_ROWS = 32_000_000  # key hashes sorted at a time to find the repeated ones
FIX_ROWS = 2_000_000  # at most this many rows sharing a key hash are resolved in place
HASH = "_h"


@functools.cache
def _code_digest() -> str:
    """What the cache depends on besides the input: this code, the readers and the contract."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    here = Path(__file__).resolve().parent
    for name in ("ingest.py", "io.py", "adapters.py", "contract.py"):
        h.update((here / name).read_bytes())
    h.update(pl.__version__.encode())
    return h.hexdigest()


def _entry_key(file_sha: str, table: str, adapter: Adapter | None, settings: str) -> str:
    h = hashlib.sha256("\x1f".join((_code_digest(), settings, table, file_sha)).encode())
    if adapter is not None:
        h.update(adapter.model_dump_json().encode())
        if adapter.sku_categories and Path(adapter.sku_categories).is_file():
            h.update(sha256_file(Path(adapter.sku_categories)).encode())
    return h.hexdigest()[:40]


def _private(path: Path) -> Path:
    path.chmod(0o600)  # hashed identifiers are still personal data: owner only
    return path


def _key_hash(table: Table) -> pl.Expr:
    """xxhash64 of the dedup key (stable across engines and versions); null for a row without
    a whole key, which is never a duplicate."""
    key = pl.concat_str([pl.col(k) for k in table.dedup_key], separator="\x1f")
    return key.nchash.xxhash64().alias(HASH)


def _validate_file(
    path: Path,
    rel: str,
    table: Table,
    declared: Adapter | None,
    categories: list[str] | None,
    tz: str,
    virtual_prefixes: tuple[str, ...],
    dest: Path,
    chunk_rows: int,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Validate one input file into the cache entry `dest` (written under a temporary name and
    renamed when complete). Returns its counts (`meta.json`)."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmpdir")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True, mode=0o700)
    meta = {"table": table.name, "file": rel, "read": 0, "skipped": 0, "rejected": 0}
    meta |= {"good": 0, "chunks": 0}
    skip_reasons: dict[str, int] = {}
    rejects: list[pl.DataFrame] = []
    phones: list[pl.DataFrame] = []
    phone_cols = {id_col for _, id_col in table.id_columns} | {"phone"}
    adapter = declared
    for i, raw in enumerate(iter_raw(path, declared.encoding if declared else "utf-8", chunk_rows)):
        if i == 0:
            adapter = declared or _detected_adapter(table.name, raw.frame.columns)
            _check_columns(rel, table, adapter, raw.frame.columns, categories)
        assert adapter is not None
        if progress and (i or raw.frame.height >= chunk_rows):
            progress(
                f"ingest {table.name}: {rel} rows {meta['read'] + 1:,}-{meta['read'] + raw.frame.height:,}"
            )
        frame = adapter.apply(raw.frame, categories)
        meta["read"] += raw.frame.height + len(raw.malformed)
        if raw.malformed:
            rejects.append(
                _reject_frame(
                    [(row, "", mask_value(v, False), why) for row, v, why in raw.malformed]
                )
            )
        if SKIP not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(SKIP))
        df = validate(frame.lazy(), table, tz).collect()
        del frame, raw
        skipped = df.filter(pl.col(SKIP).is_not_null())
        meta["skipped"] += skipped.height
        for reason, n in _value_counts(skipped, SKIP).items():
            skip_reasons[reason] = skip_reasons.get(reason, 0) + n
        df = df.filter(pl.col(SKIP).is_null())
        bad = df.filter(pl.col("_reject_reason").is_not_null())
        if bad.height:
            rejects.append(
                bad.select(
                    pl.col(ROW).cast(pl.Int64).alias("row"),
                    pl.col("_reject_column").alias("column"),
                    pl.struct("_reject_column", "_reject_value")
                    .map_elements(
                        lambda s, pc=phone_cols: mask_value(
                            s["_reject_value"], s["_reject_column"] in pc
                        ),
                        return_dtype=pl.String,
                    )
                    .alias("value"),
                    pl.col("_reject_reason").alias("reason"),
                )
            )
        good = df.filter(pl.col("_reject_reason").is_null())
        del df, bad
        cn11 = [f"_cn11_{id_col}" for _, id_col in table.id_columns]
        if table.name == "orders":
            cn11.append("_phone_cn11")
        phones.append(
            pl.concat([good.select(pl.col(c).alias("cn11")) for c in cn11])
            .drop_nulls()
            .unique()
            .select(phone_hash_columns(pl.col("cn11")))
        )
        keep = [*table.schema, ROW]
        if table.name == "orders":
            good = good.with_columns(
                sha256_hex(pl.col("_phone_cn11")).alias("phone_sha256"),
                pl.col("_phone_cn11")
                .str.slice(0, 3)
                .is_in(list(virtual_prefixes))
                .alias("phone_is_virtual"),
            )
            keep += ["phone_is_virtual", "_phone_reject"]
        good = good.select(keep).with_columns(pl.col(ROW).cast(pl.Int64))
        if table.dedup_key:
            good = good.with_columns(_key_hash(table))
        good.write_parquet(
            tmp / f"good-{i:05d}.parquet",
            compression="lz4",
            row_group_size=65_536,  # 16k groups read a hash range 1.85x slower (measured)
            statistics=True,
        )
        _private(tmp / f"good-{i:05d}.parquet")
        meta["good"] += good.height
        meta["chunks"] += 1
    meta["rejected"] = sum(r.height for r in rejects)
    meta["skip_reasons"] = skip_reasons
    reject_df = pl.concat(rejects) if rejects else _reject_frame([])
    reject_df.write_parquet(tmp / "rejects.parquet")
    pl.concat(phones).unique().sort("phone_sha256").write_parquet(tmp / "phones.parquet")
    _private(tmp / "rejects.parquet")
    _private(tmp / "phones.parquet")
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
    _private(tmp / "meta.json")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return meta


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
    mapped = adapter.apply(pl.DataFrame(schema={c: pl.String for c in columns}), categories)
    absent = [col for col in table.required if col not in mapped.columns]
    if absent:
        found = ", ".join(_one_line(c) for c in columns if c != ROW)
        raise DataError(
            f"{rel}: missing required column '{absent[0]}' for table '{table.name}'"
            + (f" (and {', '.join(absent[1:])})" if absent[1:] else "")
            + f"; found columns: {found[:300]}."
        )


@dataclass(frozen=True)
class _Entry:
    rel: str
    dir: Path
    meta: dict

    def scan(self) -> pl.LazyFrame:
        files = [self.dir / f"good-{j:05d}.parquet" for j in range(self.meta["chunks"])]
        return pl.scan_parquet(files, glob=False).with_columns(pl.lit(self.rel).alias(FILE))


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


def _cache_error(table: Table, entries: list[_Entry], e: Exception) -> DataError:
    return DataError(
        f"the ingest cache of table '{table.name}' cannot be read "
        f"({_one_line(str(e))[:200]}); delete {entries[0].dir.parent} and run again."
    )


@dataclass(frozen=True)
class _Piece:
    """One validated Parquet file of a cache entry (a whole input file, or a piece of one)."""

    path: Path
    entry: _Entry
    rows: int


def _pieces(table: Table, entries: list[_Entry]) -> list[_Piece]:
    """Every validated piece of the table in the order its rows were read; the row counts come
    from the Parquet footers, which are checked on the way."""
    out = []
    for e in entries:
        for j in range(e.meta["chunks"]):
            path = e.dir / f"good-{j:05d}.parquet"
            try:
                rows = pq.ParquetFile(path).metadata.num_rows
            except Exception as err:  # pyarrow raises many types for a damaged file
                raise _cache_error(table, entries, err) from None
            out.append(_Piece(path, e, rows))
    return out


def _replaced_rows(table: Table, pieces: list[_Piece]) -> tuple[dict[int, pl.Series], int] | None:
    """The rows that a later row with the same dedup key replaces (the last row read wins), as
    `_row` numbers by piece (its place in `pieces`: one file delivered twice is two pieces of
    the same cache file), and their count. The repeated keys are found by sorting the key
    hashes alone, `CHECK_ROWS` at a time, so a table whose keys do not repeat is never read
    again. None when more than `FIX_ROWS` rows share a key hash (a file delivered twice): the
    table is then deduplicated by hash range instead."""
    if not table.dedup_key:
        return {}, 0
    files = [p.path for p in pieces]
    ranges = _partitions(sum(p.rows for p in pieces), table, CHECK_ROWS)
    repeated: list[pl.Series] = []
    rows = 0
    for k in range(ranges):
        lf = pl.scan_parquet(files, glob=False).select(pl.col(HASH).drop_nulls())
        if ranges > 1:
            lf = lf.filter(_hash_range(k, ranges))
        hashes = lf.collect().get_column(HASH).sort()
        shared = (hashes == hashes.shift(1)) | (hashes == hashes.shift(-1))
        rows += int(shared.sum())
        if rows > FIX_ROWS:
            return None
        repeated.append(hashes.filter(shared).unique())
        del hashes, shared
    shared_hashes = pl.concat(repeated)
    if shared_hashes.is_empty():
        return {}, 0
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
        .collect()
        .sort("_piece", ROW)  # the order the rows were read in
    )
    has_key = pl.all_horizontal(pl.col(c).is_not_null() for c in key)
    last = (pl.col(key[0]) if len(key) == 1 else pl.struct(key)).is_last_distinct()
    replaced = rows_sharing.filter(has_key & ~last)
    drop = {
        int(i): group.get_column(ROW).sort()
        for (i,), group in replaced.partition_by("_piece", as_dict=True).items()
    }
    return drop, replaced.height


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


def ingest(
    input_dir: Path,
    *,
    tz: str = "Asia/Shanghai",
    adapters: list[Adapter] | None = None,
    forced_adapter: Adapter | None = None,
    categories: list[str] | None = None,
    tables: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    virtual_prefixes: tuple[str, ...] = VIRTUAL_PREFIXES,
    spool: Path | None = None,
    cache: Path | None = None,
    chunk_rows: int | None = None,
) -> IngestResult:
    """Read and validate every table folder under `input_dir`.

    Raises DataError for an unreadable file, a missing required column, or an input with no
    usable table. Returns canonical tables (accepted, deduplicated), rejects and counts.

    By default the tables come back in memory. With `spool`, they stay on disk as parts
    instead (`IngestResult.parts`, read with `IngestResult.scan`) and nothing table-sized is
    held in memory: a part is a slice of the validated files, read in place, less the rows a
    later row with the same key replaced. Only a table where many rows share a key (a file
    delivered twice) is deduplicated by hash range and rewritten into `spool`. With `cache`,
    validated files are kept there by content and a file seen before is not validated again
    (without it, a spooled ingest keeps them in `spool/.cache`)."""
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise DataError(f"{input_dir}: no such input folder.")
    with contextlib.ExitStack() as stack:
        in_memory = spool is None
        if spool is None or cache is None:
            temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segments-")))
            spool = Path(spool or temp / "spool")
            # Spooled parts are read in place from the cache: it lives as long as the spool.
            cache = cache or (temp / "cache" if in_memory else spool / ".cache")
        return _ingest(
            input_dir,
            tz=tz,
            adapters=adapters or [],
            forced_adapter=forced_adapter,
            categories=categories,
            tables=tables or list(TABLES),
            progress=progress,
            virtual_prefixes=virtual_prefixes,
            spool=Path(spool),
            cache=Path(cache),
            chunk_rows=chunk_rows or CHUNK_ROWS,
            in_memory=in_memory,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def _ingest(
    input_dir: Path,
    *,
    tz: str,
    adapters: list[Adapter],
    forced_adapter: Adapter | None,
    categories: list[str] | None,
    tables: list[str],
    progress: Callable[[str], None] | None,
    virtual_prefixes: tuple[str, ...],
    spool: Path,
    cache: Path,
    chunk_rows: int,
    in_memory: bool,
) -> IngestResult:
    settings = json.dumps([tz, categories, list(virtual_prefixes), chunk_rows])
    cache.mkdir(parents=True, exist_ok=True, mode=0o700)
    for stale in cache.glob(".*.tmpdir"):  # what a killed run left half-written
        shutil.rmtree(stale, ignore_errors=True)
    out_tables: dict[str, pl.DataFrame] = {}
    out_parts: dict[str, list[Part]] = {}
    out_rejects: dict[str, pl.DataFrame] = {}
    counts: dict[str, TableCounts] = {}
    inputs: list[dict] = []
    id_rejects: list[pl.DataFrame] = []
    phone_files: list[Path] = []
    used: set[str] = set()
    reused = 0

    for name in tables:
        table = TABLES[name]
        files = table_files(input_dir, name)
        if not files:
            continue
        c = TableCounts(files=len(files))
        entries: list[_Entry] = []
        for path in files:
            rel = str(path.relative_to(input_dir))
            declared = _declared_adapter(path, name, adapters, forced_adapter)
            sha = sha256_file(path)
            inputs.append({"path": rel, "bytes": path.stat().st_size, "sha256": sha})
            key = _entry_key(sha, name, declared, settings)
            dest = cache / key
            if (dest / "meta.json").is_file():
                meta = json.loads((dest / "meta.json").read_text())
                reused += 1
            else:
                if progress:
                    progress(f"ingest {name}: validating {rel}")
                meta = _validate_file(
                    path,
                    rel,
                    table,
                    declared,
                    categories,
                    tz,
                    virtual_prefixes,
                    dest,
                    chunk_rows,
                    progress,
                )
            used.add(key)
            entries.append(_Entry(rel, dest, meta))
            phone_files.append(dest / "phones.parquet")
        c.read = sum(e.meta["read"] for e in entries)
        c.skipped = sum(e.meta["skipped"] for e in entries)
        skips: dict[str, int] = {}
        for e in entries:
            for reason, n in e.meta["skip_reasons"].items():
                skips[reason] = skips.get(reason, 0) + n
        c.skip_reasons = dict(sorted(skips.items(), key=lambda kv: (-kv[1], kv[0])))
        reject_df = pl.concat(
            [
                pl.read_parquet(e.dir / "rejects.parquet", glob=False).select(
                    pl.lit(name).alias("table"),
                    pl.lit(e.rel).alias("file"),
                    pl.col("row", "column", "value", "reason"),
                )
                for e in entries
            ]
        ).cast(REJECT_SCHEMA)
        c.rejected = reject_df.height
        c.reasons = _value_counts(reject_df, "reason")
        columns = (*table.schema, *(("phone_is_virtual",) if name == "orders" else ()))
        pieces = _pieces(table, entries)
        validated = sum(p.rows for p in pieces)
        try:
            replaced = _replaced_rows(table, pieces)
        except (pl.exceptions.PolarsError, OSError) as e:  # a cache file damaged or deleted
            raise _cache_error(table, entries, e) from None
        if replaced is not None:  # read in place: nothing is copied
            drop, c.duplicates = replaced
            c.accepted = validated - c.duplicates
            if name == "orders":
                id_rejects.append(
                    pl.concat(
                        [
                            _phone_rejects(
                                table,
                                Run(p.path, 0, p.rows, p.rows, drop.get(i)).scan(),
                                p.entry.rel,
                            )
                            for i, p in enumerate(pieces)
                        ]
                    ).collect()
                )
            out_parts[name] = _slices(pieces, drop, columns)
        else:
            parts = _partitions(validated, table)
            if progress:
                progress(f"ingest {name}: deduplicating in {parts} partitions")
            deduplicated = _deduplicated(table, entries, parts, columns)
            for k, (good, dups, rejected_ids) in enumerate(deduplicated):
                c.duplicates += dups
                c.accepted += good.height
                id_rejects.append(rejected_ids)
                folder = spool / name
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                target = folder / f"{k:05d}.parquet"
                good.write_parquet(target, compression="lz4", statistics=True)
                _private(target)
                out_parts.setdefault(name, []).append(
                    Part((Run(target, 0, good.height, good.height),), columns)
                )
        if in_memory:
            out_tables[name] = pl.concat([part.scan() for part in out_parts.pop(name)]).collect()
        out_rejects[name] = reject_df
        counts[name] = c

    if not counts:
        raise DataError(
            f"{input_dir}: no usable table; expected sub-folders "
            f"{', '.join(TABLES)} holding .csv, .parquet or .jsonl files."
        )
    if set(tables) == set(TABLES):  # entries no input uses any more
        for entry in cache.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in used:
                shutil.rmtree(entry, ignore_errors=True)
    phone_hashes = (
        pl.scan_parquet(sorted(set(phone_files)), glob=False)
        .unique()
        .sort("phone_sha256")
        .collect()
    )
    identifier_rejects = (
        pl.concat(id_rejects).cast(REJECT_SCHEMA)
        if id_rejects
        else pl.DataFrame(schema=REJECT_SCHEMA)
    )
    return IngestResult(
        out_tables,
        out_rejects,
        identifier_rejects,
        phone_hashes,
        counts,
        inputs,
        parts=out_parts,
        reused=reused,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _value_counts(df: pl.DataFrame, column: str) -> dict[str, int]:
    if df.height == 0:
        return {}
    vc = df.group_by(column).len().sort(["len", column], descending=[True, False])
    return {str(k): int(v) for k, v in vc.iter_rows()}
