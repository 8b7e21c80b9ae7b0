"""The one module that reads input files and writes outputs: format detection, atomic writes, locks."""

from __future__ import annotations

import codecs
import contextlib
import csv
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import socket
import sys
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from segments.contract import one_line
from segments.errors import ConfigError, DataError, LockError
from segments.layout import workspace_folders

ROW = "_row"  # 1-based record number inside its file (header not counted)
FILE = "_file"  # the file a row came from, relative to the input folder


def file_format(path: Path) -> str:
    name = path.name.lower()
    for suffix, fmt in (
        (".csv.gz", "csv"),
        (".csv", "csv"),
        (".parquet", "parquet"),
        (".jsonl.gz", "jsonl"),
        (".jsonl", "jsonl"),
        (".ndjson.gz", "jsonl"),
        (".ndjson", "jsonl"),
        (".json.gz", "jsonl"),
        (".json", "jsonl"),
    ):
        if name.endswith(suffix):
            return fmt
    raise DataError(
        f"{path}: unknown file type; use .csv, .parquet, .jsonl, .ndjson or .json (optionally"
        " .gz), or start its name with '.' or '_' to leave it out."
    )


def table_files(input_dir: Path, table: str) -> list[Path]:
    """Input files of one table folder, sorted by name (the order that decides 'last write wins').

    A name starting with '.' or '_' is left out (hidden files, and the markers a Spark or
    Hadoop export leaves: `_SUCCESS`, `.part-0.crc`); any other file of a type that cannot be
    read stops the run with one line (`file_format`), rather than being left out unseen."""
    folder = input_dir / table
    if not folder.is_dir():
        return []
    files = [
        p for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith((".", "_"))
    ]
    for p in files:
        file_format(p)  # a DataError naming the file and the types that can be read
    return files


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
        return data
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"{path}: cannot read the file ({_first_line(e)}).") from None


# ---------------------------------------------------------------------------------------------
# Text encodings: decided once for the whole file, never a replacement character

ENCODINGS = ("auto", "utf-8", "gbk", "gb18030")  # what --encoding and [ingest] encoding take
DETECTED = ("gbk", "gb18030")  # what "auto" tries, in order, for a file that is not UTF-8
BOM = b"\xef\xbb\xbf"


def canonical_encoding(name: str) -> str:
    """`UTF8`, `utf_8`, `GB18030` -> `utf-8`, `utf-8`, `gb18030`."""
    enc = name.strip().lower().replace("_", "-")
    return "utf-8" if enc in ("utf8", "utf-8-sig") else enc


def is_utf8(data: bytes) -> bool:
    """Whether `data` is valid UTF-8, checked by Arrow in place (no copy, no Python string:
    0.02 s for 100 MB, a tenth of `bytes.decode`)."""
    offsets = pa.py_buffer(np.array([0, len(data)], dtype=np.int64).tobytes())
    array = pa.Array.from_buffers(pa.large_string(), 1, [None, offsets, pa.py_buffer(data)])
    try:
        array.validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


def as_utf8(
    data: bytes, path: Path, encoding: str = "auto", fallback: tuple[str, ...] = DETECTED
) -> tuple[bytes, str]:
    """The text of a CSV or JSON lines file as UTF-8 bytes (a UTF-8 byte-order mark removed),
    and the encoding it was read in: `utf-8`, or with `auto` the first of `fallback` that
    reads the whole file when it is not UTF-8 (and does not look like UTF-8 with a few broken
    bytes). Anything else is a one-line DataError naming the first byte that does not fit,
    its row and column, and `--encoding`. A valid UTF-8 file is checked, not decoded."""
    enc = canonical_encoding(encoding)
    bom = data.startswith(BOM)
    if enc in ("auto", "utf-8"):
        body = data[3:] if bom else data
        if is_utf8(body):
            return body, "utf-8"
        also = ""
        if enc == "auto" and not bom:
            also = f" nor {' or '.join(c.upper() for c in fallback)}"
            for candidate in fallback:
                try:
                    text = _strict(body, candidate, path)
                except UnicodeDecodeError:
                    continue
                if fallback == DETECTED and _looks_like_broken_utf8(body):
                    # (an adapter's encoding is read as the adapter says)
                    also = (
                        f" (the rest of the file is UTF-8: it is not read as {candidate.upper()})"
                    )
                    break
                return text.encode("utf-8"), canonical_encoding(candidate)
        raise _not_text(path, body, "utf-8", _first_bad_utf8(body), also)
    if bom:
        raise DataError(
            f"{path}: the file starts with a UTF-8 byte-order mark but --encoding {enc} was "
            "given; pass --encoding utf-8 (or auto)."
        )
    try:
        return _strict(data, enc, path).encode("utf-8"), enc
    except UnicodeDecodeError as e:
        raise _not_text(path, data, enc, e.start) from None


def reading_encoding(
    option: str, declared: str | None, where: object
) -> tuple[str, tuple[str, ...]]:
    """What `as_utf8` is asked for: `option` is `--encoding` (or `[ingest] encoding`), one of
    ENCODINGS; `declared` the encoding a file's adapter names. With `auto`, a file that is not
    UTF-8 is read in the adapter's encoding, or else in the first of GBK and GB18030 that fits.
    An unknown option or adapter encoding is a ConfigError."""
    option = canonical_encoding(option)
    if option not in ENCODINGS:
        raise ConfigError(
            f"--encoding '{option}' is not one of {', '.join(ENCODINGS)}. Got {option!r} instead."
        )
    if declared is None or canonical_encoding(declared) == "utf-8":
        return option, DETECTED
    try:
        codecs.lookup(declared)  # an unknown codec fails here, whatever the file holds
    except LookupError:
        raise ConfigError(
            f"{where}: unknown encoding '{declared}' in its adapter; use one of "
            f"{', '.join(ENCODINGS[1:])}."
        ) from None
    return option, (canonical_encoding(declared),)


def _strict(data: bytes, encoding: str, path: object) -> str:
    try:
        return data.decode(encoding)
    except LookupError:
        raise ConfigError(
            f"{path}: unknown encoding '{encoding}'; use one of {', '.join(ENCODINGS[1:])}."
        ) from None


def _first_bad_utf8(data: bytes) -> int:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start
    return len(data)  # pragma: no cover (only called on invalid data)


_NON_ASCII = re.compile(rb"[\x80-\xff]+")


def _looks_like_broken_utf8(data: bytes) -> bool:
    """Whether most runs of non-ASCII bytes are UTF-8: a UTF-8 file with a few broken bytes,
    which must not be read as GBK (UTF-8 Chinese text is often valid GBK, as mojibake). In a
    GBK file almost no run of Chinese text happens to be valid UTF-8."""
    good = bad = 0
    for run in _NON_ASCII.finditer(data):
        try:
            text = run.group().decode("utf-8")
        except UnicodeDecodeError:
            bad += 1
            continue
        # two-byte characters (é, ¥) are as often GBK pairs that happen to fit: no evidence
        good += any(ord(ch) >= 0x800 for ch in text)
    return good >= bad


def _not_text(path: Path, data: bytes, encoding: str, pos: int, also: str = "") -> DataError:
    """The one-line error for a file whose bytes are not text in `encoding`, at byte `pos`."""
    where = _locate(path, data, pos, encoding)
    byte = data[pos : pos + 1].hex().upper() or "end of file"
    return DataError(
        f"{path}, {where}: byte 0x{byte} is not {encoding.upper()} text{also}; the file was not "
        "read. Fix the file, or name its encoding with --encoding (auto, utf-8, gbk or gb18030)."
    )


def _locate(path: Path, data: bytes, pos: int, encoding: str) -> str:
    """Where byte `pos` is, as a reader would say it: the CSV row (header not counted) and
    column name, or the JSON line and the key being read."""
    prefix = data[:pos].decode(encoding, errors="replace")  # valid up to `pos`: no replacement
    if file_format(path) == "jsonl":
        line = prefix.count("\n") + 1
        keys = re.findall(r'"((?:[^"\\]|\\.)*)"\s*:', prefix[prefix.rfind("\n") + 1 :])
        return f"line {line}" + (f", key '{_short(keys[-1])}'" if keys else "")
    try:
        records = list(csv.reader(io.StringIO(prefix, newline=""))) or [[]]
    except csv.Error:  # the byte is inside an open quote: say the line
        return f"line {prefix.count(chr(10)) + 1}"
    if not prefix:
        return "the header row, field 1"
    if prefix.endswith(("\n", "\r")) and prefix.count('"') % 2 == 0:  # it starts a record
        records.append([])
    field = max(len(records[-1]) - 1, 0)
    row = len(records) - 1
    header = records[0] if row else []
    name = f"column '{_short(header[field])}'" if field < len(header) else f"field {field + 1}"
    return f"row {row}, {name}" if row else f"the header row, field {field + 1}"


def _short(text: str) -> str:
    """A header name or key as an error message shows it: `contract.one_line`, 60 characters."""
    return one_line(text)[:60]


@dataclass
class RawFile:
    """One input file as strings: every column `pl.String` (lists stay `List(String)`; asked
    with `typed_times`, a Parquet file's naive microsecond timestamps stay `Datetime("us")`),
    plus `_row`; `malformed` holds (row, reason) for records the parser could not split into
    fields."""

    frame: pl.DataFrame
    malformed: list[tuple[int, str, str]]
    encoding: str = "utf-8"  # what the text was read as (Parquet strings are UTF-8)


def read_raw(
    path: Path,
    encoding: str = "auto",
    fallback: tuple[str, ...] = DETECTED,
    typed_times: bool = False,
) -> RawFile:
    """Read one file with every value as text, so validation sees exactly what was written.
    `encoding` and `fallback`: as `as_utf8` (CSV and JSON lines; Parquet text is UTF-8).
    `typed_times`: a Parquet column of naive microsecond timestamps (years 1000-9999) stays
    typed, instead of written as text for validation to parse back to the same value."""
    fmt = file_format(path)
    if fmt == "parquet":
        return RawFile(_read_parquet(path, typed_times), [])
    data, chosen = as_utf8(_read_bytes(path), path, encoding, fallback)
    raw = _read_jsonl(path, data) if fmt == "jsonl" else _read_csv(path, data)
    raw.encoding = chosen
    return raw


def iter_raw(
    path: Path,
    encoding: str = "auto",
    chunk_rows: int = 2_000_000,
    fallback: tuple[str, ...] = DETECTED,
    typed_times: bool = False,
) -> Iterator[RawFile]:
    """`read_raw` in pieces of at most `chunk_rows` rows for Parquet (row numbers run on across
    pieces), so a file larger than memory is validated piece by piece. A CSV or JSON lines file
    is one piece: split a very large text export into several files (or send Parquet)."""
    if file_format(path) != "parquet":
        yield read_raw(path, encoding, fallback)
        return
    try:
        reader = pq.ParquetFile(path)
        total = reader.metadata.num_rows
    except Exception as e:  # pyarrow raises many types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(e)}).") from None
    check_header(path, reader.schema_arrow.names)
    if total <= chunk_rows:
        yield read_raw(path, encoding, fallback, typed_times)
        return
    # polars reads a slice of the row groups directly: 5x faster than pyarrow batches
    # converted to polars (8M brand events in 1M slices: 0.5 s instead of 2.7 s)
    groups = [reader.metadata.row_group(g).num_rows for g in range(reader.metadata.num_row_groups)]
    for start, length in parquet_slices(groups, chunk_rows):
        try:
            df = pl.scan_parquet(path, glob=False).slice(start, length).collect()
        except Exception as e:
            raise DataError(f"{path}: not a readable Parquet file ({_first_line(e)}).") from None
        df = df.rename(_without_reserved(df.columns))
        try:
            text = _stringify(df, typed_times)
        except Exception as e:
            raise DataError(
                f"{path}: a column cannot be read as text ({_first_line(e)})."
            ) from None
        yield RawFile(text.with_row_index(ROW, offset=start + 1), [])


def parquet_slices(groups: list[int], chunk_rows: int) -> list[tuple[int, int]]:
    """(start, rows) pieces of a Parquet file whose row groups hold `groups` rows each: whole
    row groups, as many as fit in `chunk_rows`; a group of up to twice that is one piece on its
    own, a larger one is cut in equal pieces. A slice across a group boundary decodes both
    groups: 1M-row slices of the brand's 1,048,576-row groups read at 0.135 us a row, whole
    groups at 0.082."""
    pieces: list[tuple[int, int]] = []
    start = rows = 0
    for n in groups:
        if rows and rows + n > chunk_rows:
            pieces.append((start, rows))
            start, rows = start + rows, 0
        if n > 2 * chunk_rows:
            cuts = -(-n // chunk_rows)
            bounds = [n * k // cuts for k in range(cuts + 1)]
            pieces += [(start + a, b - a) for a, b in itertools.pairwise(bounds)]
            start += n
            continue
        rows += n
    if rows:
        pieces.append((start, rows))
    return [p for p in pieces if p[1]]


def _without_reserved(names: list[str]) -> dict[str, str]:
    """Input columns that clash with the engine's bookkeeping columns get a suffix (as many
    `_input` as it takes to be a new name: a file may hold `_row` and `_row_input`)."""
    out = {}
    for n in names:
        if n in (ROW, FILE):
            new = f"{n}_input"
            while new in names:
                new += "_input"
            out[n] = new
    return out


def _csv_names(header: list[str]) -> list[str]:
    """A CSV header's names as columns: a blank name becomes `_unnamed_<position>`, an engine
    column name gets `_input` (both readers name columns this way)."""
    named = [h if h.strip() else f"_unnamed_{i}" for i, h in enumerate(header, start=1)]
    reserved = _without_reserved(named)
    return [reserved.get(h, h) for h in named]


def check_header(path: Path, names: list[str], what: str = "column") -> None:
    """A name given twice is an error naming where each is, whatever the other rows hold:
    reading one of the two silently would change data."""
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        if name.strip():  # unnamed columns (a spreadsheet's trailing commas) are never read
            seen.setdefault(name, []).append(i)
    repeated = {n: at for n, at in seen.items() if len(at) > 1}
    if not repeated:
        return
    name, at = next(iter(repeated.items()))
    more = f" (and {len(repeated) - 1} more repeated name(s))" if len(repeated) > 1 else ""
    places = ", ".join(str(i) for i in at[:-1]) + f" and {at[-1]}"
    raise DataError(
        f"{path}: the header repeats the {what} name '{_short(name)}' ({what}s {places}){more}; "
        "rename or remove one of them."
    )


def _stringify(df: pl.DataFrame, typed_times: bool = False) -> pl.DataFrame:
    exprs = []
    for name, dtype in df.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime) and dtype.time_zone is not None:
            exprs.append(col.dt.to_string("%Y-%m-%dT%H:%M:%S%.f%:z"))
        elif typed_times and dtype == pl.Datetime("us") and _four_digit_years(df.get_column(name)):
            # written as text, validation would parse it back to this very value (naive text
            # is local time; `%Y` of years 1000-9999 is four digits): kept as it is
            exprs.append(col)
        elif isinstance(dtype, pl.Datetime):
            # whole seconds as `YYYY-MM-DD HH:MM:SS` (the one-parse path of validation)
            whole = col.dt.truncate("1s") == col
            exprs.append(
                pl.when(whole)
                .then(col.dt.to_string("%Y-%m-%d %H:%M:%S"))
                .otherwise(col.cast(pl.String))
                .alias(name)
            )
        elif isinstance(dtype, pl.List):
            exprs.append(col.cast(pl.List(pl.String)))
        elif isinstance(dtype, pl.Struct | pl.Array):
            exprs.append(
                col.struct.json_encode() if isinstance(dtype, pl.Struct) else col.cast(pl.String)
            )
        elif dtype in (pl.Float32, pl.Float64):
            exprs.append(_float_text(col).alias(name))
        else:
            exprs.append(col.cast(pl.String))
    return df.select(exprs)


def _four_digit_years(ts: pl.Series) -> bool:
    """Whether every timestamp of `ts` falls in the years 1000-9999 (nulls aside)."""
    lo, hi = ts.min(), ts.max()
    return lo is None or (lo.year >= 1000 and hi.year <= 9999)


def _float_text(col: pl.Expr) -> pl.Expr:
    """A float as text, the same way on every reader path: a whole number without `.0` and in
    full digits (12.0 -> "12", 1e20 -> "100000000000000000000"), anything else as its shortest
    form. An id written as a JSON number is then one key whichever file it comes from."""
    whole = col.is_finite() & (col == col.floor()) & (col.abs() < 1e38)
    return (
        pl.when(whole)
        .then(pl.when(whole).then(col).cast(pl.Int128).cast(pl.String))
        .otherwise(col.cast(pl.String))
    )


def _read_parquet(path: Path, typed_times: bool = False) -> pl.DataFrame:
    try:
        check_header(path, pq.read_schema(path).names)
        df = pl.read_parquet(path, glob=False)
    except DataError:
        raise
    except Exception as e:  # pyarrow/polars raise many types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({_first_line(e)}).") from None
    df = df.rename(_without_reserved(df.columns))
    try:
        text = _stringify(df, typed_times)
    except Exception as e:  # a column type that has no text form (map, binary, nested lists)
        raise DataError(f"{path}: a column cannot be read as text ({_first_line(e)}).") from None
    return text.with_row_index(ROW, offset=1)


def _read_csv(path: Path, data: bytes) -> RawFile:
    """A CSV file's records as text; `data` is UTF-8 (`as_utf8`)."""
    if not data or data.isspace():  # (strip() would copy the file to find out)
        raise DataError(f"{path}: the file is empty (no header row).")
    if b"\r" in data and b"\n" not in data:  # old Mac line ends
        data = data.replace(b"\r", b"\n")
    header = _csv_header(data)
    if header is not None:  # (an unreadable header is the record-by-record reader's to report)
        check_header(path, header)
    try:
        if header is None or not _uniform_records(data):
            raise ValueError("records with another number of fields than the header")
        df = pl.read_csv(io.BytesIO(data), infer_schema=False, raise_if_empty=True)
        if df.width != len(header):
            raise ValueError("the header reads differently")
        df.columns = _csv_names(header)
        return RawFile(df.with_row_index(ROW, offset=1), [])
    except Exception:
        # Malformed records (a wrong number of fields, a stray quote): parse with the standard
        # library, keep every well-formed record and report the others by row.
        return _read_csv_slow(data, path)


def _csv_header(data: bytes) -> list[str] | None:
    """The first record's fields, read as the standard library reads them (only as many bytes
    as the header takes are decoded)."""
    text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", newline="")
    try:
        return next(csv.reader(text))
    except (StopIteration, csv.Error):
        return None


def _uniform_records(data: bytes) -> bool:
    """Whether every record has as many fields as the header (quote-aware, vectorised).

    The fast reader pads a short record with nulls, so a row cut off mid-way would pass as a
    row with empty optional fields; such files go to the record-by-record reader instead,
    which rejects the short row. Blank lines are left to the readers."""
    b = np.frombuffer(data, dtype=np.uint8)
    ends, commas, quotes = _offsets(data, b"\n", b",", b'"')
    if quotes.size:  # keep the separators outside quoted fields: an even number of quotes before
        ends = ends[(np.searchsorted(quotes, ends) & 1) == 0]
        commas = commas[(np.searchsorted(quotes, commas) & 1) == 0]
    if ends.size == 0 or ends[-1] != b.size - 1:
        ends = np.append(ends, b.size)  # the last record may lack its newline
    per_record = np.diff(np.searchsorted(commas, ends), prepend=0)
    starts = np.concatenate(([0], ends[:-1] + 1))
    length = ends - starts
    first = b[np.minimum(starts, b.size - 1)]
    blank = (length == 0) | ((length == 1) & (first == ord("\r")))  # "" or "\r"
    fields = per_record[~blank]
    return bool(fields.size == 0 or (fields == fields[0]).all())


def _read_csv_slow(data: bytes, path: Path) -> RawFile:
    text = data.decode("utf-8")  # valid: `as_utf8` checked it
    csv.field_size_limit(sys.maxsize)  # a 1 MB field is a field, not a malformed record
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as e:
        raise DataError(f"{path}: no readable header row ({e}).") from None
    check_header(path, header)
    header = _csv_names(header)
    rows: list[list[str | None]] = []
    numbers: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    n = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            n += 1
            malformed.append((n, "", f"malformed CSV record ({e})"))
            continue
        n += 1
        if not record:
            malformed.append((n, "", "empty line"))
            continue
        if len(record) != len(header):
            malformed.append(
                (
                    n,
                    ",".join(record)[:200],
                    f"record has {len(record)} fields, header has {len(header)}",
                )
            )
            continue
        rows.append([v if v != "" else None for v in record])
        numbers.append(n)
    columns = {h: [r[i] for r in rows] for i, h in enumerate(header)}
    df = pl.DataFrame(columns, schema={h: pl.String for h in header})
    df = df.with_columns(pl.Series(ROW, numbers, dtype=pl.UInt32)).select([ROW, *header])
    return RawFile(df, malformed)


def _flatten_frame(df: pl.DataFrame) -> pl.DataFrame:
    """Nested objects become dotted columns (`text.content`), as the slow path does."""
    while any(isinstance(t, pl.Struct) for t in df.schema.values()):
        exprs = []
        for name, dtype in df.schema.items():
            if isinstance(dtype, pl.Struct):
                exprs += [
                    pl.col(name).struct.field(f.name).alias(f"{name}.{f.name}")
                    for f in dtype.fields
                ]
            else:
                exprs.append(pl.col(name))
        df = df.select(exprs)
    return df


MAX_JSON_DEPTH = 200  # deeper lines are rejected by the line-by-line reader
FAST_JSON_BRACKETS = 64  # a file with a line of more `[` and `{` is read line by line


def _fast_json_may_read(data: bytes, offsets: tuple[np.ndarray, np.ndarray] | None = None) -> bool:
    """Whether the fast reader may read a JSON lines file: polars reads nested objects in time
    that grows with the cube of their depth (250 levels: 19 s), and turns a lone surrogate
    escape (`"\\ud800"`) into NUL. A line with many brackets (an upper bound of its depth) or
    surrogate escapes that are not in pairs sends the file line by line. `offsets`: those of
    the line ends and of the brackets, when already found (`_offsets`)."""
    ends, brackets = offsets if offsets is not None else _offsets(data, b"\n", b"[{")
    ends = np.append(ends, len(data))
    if np.diff(np.searchsorted(brackets, ends), prepend=0).max(initial=0) > FAST_JSON_BRACKETS:
        return False
    # (a lone backslash byte is found by memchr: most files have none, and skip both searches)
    if b"\\" in data and (b"\\ud" in data or b"\\uD" in data):
        lines = _json_lines(data)
        high, low = r"\\u[dD][89abAB][0-9a-fA-F]{2}", r"\\u[dD][c-fC-F][0-9a-fA-F]{2}"
        pairs = lines.str.count_matches(high + low)
        singles = lines.str.count_matches(high) + lines.str.count_matches(low)
        return bool((singles == 2 * pairs).all())
    return True


def _offsets(data: bytes, *groups: bytes, step: int = 1 << 20) -> list[np.ndarray]:
    """For each group of byte values, the offsets in `data` of the bytes in the group, in
    order. Scanned in 1 MiB slices that stay in the CPU cache: several times faster than
    passes over the whole array (165 MB, line ends and brackets: 0.10 s instead of 0.55-0.92
    s). No byte of a multi-byte UTF-8 character is below 0x80: ASCII bytes are characters."""
    b = np.frombuffer(data, dtype=np.uint8)
    found: list[list[np.ndarray]] = [[] for _ in groups]
    for s in range(0, b.size, step):
        part = b[s : s + step]
        for out, group in zip(found, groups, strict=True):
            hit = part == group[0]
            for v in group[1:]:
                hit |= part == v
            out.append(np.flatnonzero(hit) + s)
    return [np.concatenate(f) if f else np.zeros(0, dtype=np.int64) for f in found]


def _json_lines(data: bytes) -> pl.Series:
    return pl.Series([data], dtype=pl.Binary).cast(pl.String).str.split("\n").explode()


def _key_paths(df: pl.DataFrame) -> dict[str, list[pl.Expr] | None]:
    """Each key name of a frame read from JSON lines (nested objects' keys too) -> the counts
    of its non-null values, one per place it is read at; None for a key inside a list of
    objects (not counted in place)."""
    paths: dict[str, list[pl.Expr] | None] = {}
    stack: list[tuple[pl.Expr | None, str, pl.DataType]]
    stack = [(pl.col(name), name, dtype) for name, dtype in df.schema.items()]
    while stack:
        expr, name, dtype = stack.pop()
        inner = dtype
        while isinstance(inner, pl.List | pl.Array):
            inner = inner.inner
        if expr is None or (name in paths and paths[name] is None):
            paths[name] = None  # keys inside lists of objects: counted line by line
        else:
            paths.setdefault(name, []).append(expr.is_not_null().sum())  # type: ignore[union-attr]
        if isinstance(inner, pl.Struct):
            stack.extend(
                (
                    expr.struct.field(f.name) if expr is not None and inner is dtype else None,
                    f.name,
                    f.dtype,
                )
                for f in inner.fields
            )
    return paths


def _held(df: pl.DataFrame, paths: dict[str, list[pl.Expr] | None]) -> dict[str, int]:
    """Per key whose values are counted in place: how many non-null values the frame holds."""
    sure = [n for n in sorted(paths) if paths[n] is not None]
    if not sure:
        return {}
    return df.select(pl.sum_horizontal(paths[n]).alias(n) for n in sure).row(0, named=True)  # type: ignore[arg-type]


def _quoted_keys(data: bytes, colons: np.ndarray | None = None) -> int | None:
    """How many keys the file writes, when every colon of it directly follows a quote (the
    usual export): the `":` pairs, counted in bytes (165 MB: 0.25 s, against 1.4 s to make the
    text a string and match `"\\s*:`; no byte of a multi-byte UTF-8 character is a quote or a
    colon). None when some colon follows something else. `colons`: the offsets of the colons,
    when already found (`_offsets`)."""
    if colons is not None:
        if colons.size and colons[0] == 0:
            return None
        after_quote = np.frombuffer(data, dtype=np.uint8)[colons - 1] == ord('"')
        return int(colons.size) if bool(after_quote.all()) else None
    quoted = data.count(b'":')
    return quoted if quoted == data.count(b":") else None


def _keys_repeat(data: bytes, df: pl.DataFrame) -> bool:
    """Whether a line may name a key twice (polars keeps the first). First over the whole
    file: a key written (plain or escaped) exactly as often as it holds a value is never
    repeated on a line. Only when a key is written more often (an explicit null, a value equal
    to a key name, a list of objects, a repeat) are the lines counted one by one; a file where
    some line writes a key twice is read line by line, which decides exactly."""
    paths = _key_paths(df)
    if not paths:
        return False
    names = sorted(paths)
    sure = [n for n in names if paths[n] is not None]
    held = _held(df, paths)
    # One pass first: every key is a `"` then a colon, so the keys written are at least the
    # values held plus the repeats; as many as held, none repeats (`_quoted_keys`).
    if len(sure) == len(names):
        keys_written = _quoted_keys(data)
        if keys_written is None:
            keys_written = (
                pl.Series([data], dtype=pl.Binary)
                .cast(pl.String)
                .to_frame("t")
                .select(pl.col("t").str.count_matches(r'"\s*:'))
                .item()
            )
        if keys_written == sum(held.values()):
            return False
    blob = pl.Series([data], dtype=pl.Binary).cast(pl.String).to_frame("t")
    # a key is its JSON string then a colon (a value equal to a key's name is not a key)
    forms = {
        n: sorted({re.escape(json.dumps(n, ensure_ascii=a)) + r"\s*:" for a in (True, False)})
        for n in names
    }
    written = blob.select(
        pl.sum_horizontal(pl.col("t").str.count_matches(f) for f in forms[n]).alias(n)
        for n in names
    ).row(0, named=True)
    unsure = [n for n in names if paths[n] is None or written[n] != held[n]]
    if not unsure:
        return False
    line = pl.col("line")
    repeats = [pl.sum_horizontal(line.str.count_matches(f) for f in forms[n]) > 1 for n in unsure]
    # A line naming a key twice may use it at two places (`{"text": {...}, "quote": {"text":
    # ...}}`): only these lines are parsed, and only a key twice in one object is a repeat.
    maybe = _json_lines(data).to_frame("line").filter(pl.any_horizontal(repeats))["line"]
    for text in maybe:
        try:
            json.loads(text, object_pairs_hook=_unique_keys)
        except _RepeatedKey:
            return True
        except (ValueError, RecursionError):
            return True  # not what the fast reader read: the line-by-line reader decides
    return False


JSON_SAMPLE_LINES = 10_000  # lines a large JSON lines file's schema is taken from (tests lower it)


def _has_null_type(dtype: pl.DataType) -> bool:
    if dtype == pl.Null:
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _has_null_type(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_has_null_type(f.dtype) for f in dtype.fields)
    return False


def _sampled_ndjson(data: bytes, colons: np.ndarray | None = None) -> pl.DataFrame | None:
    """A large JSON lines file read with the schema of its first `JSON_SAMPLE_LINES` lines
    (polars infers a schema from every line in a pass of its own: half the read), or None
    when that read cannot be the one a schema from every line gives (the caller then reads
    so). It can be: a later value that does not fit the sampled type fails the read (an
    integer where a float was seen reads as the float every line would give; text takes
    anything as every line would), a type that is only null in the sample is refused (polars
    would read later values as null), and a key the sample never saw (or a value read as
    null) shows in the counts: every key the file writes (`_quoted_keys`) must hold a value.
    That count is `_keys_repeat`'s first pass: a frame returned has no key written twice.
    `colons`: the offsets of the file's colons, when already found."""
    cut = -1
    for _ in range(JSON_SAMPLE_LINES):
        cut = data.find(b"\n", cut + 1)
        if cut < 0:
            return None  # a small file: read as a whole
    written = _quoted_keys(data, colons)
    if written is None:
        return None
    try:
        schema = pl.read_ndjson(io.BytesIO(data[: cut + 1]), infer_schema_length=None).schema
        if not schema or any(_has_null_type(t) for t in schema.values()):
            return None
        df = pl.read_ndjson(io.BytesIO(data), schema=schema)
    except Exception:
        return None
    paths = _key_paths(df)
    if any(p is None for p in paths.values()) or written != sum(_held(df, paths).values()):
        return None
    return df


def _lost_digits(df: pl.DataFrame) -> bool:
    """A float column holding a value of 2^53 or more: a key with integers and fractions on
    different lines is read as Float64, where a long integer id (`12345678901234567`) loses
    its last digits. The line-by-line reader keeps each value as written."""
    floats = [c for c, t in df.schema.items() if t == pl.Float64]
    if not floats:
        return False
    big = df.select(pl.any_horizontal((pl.col(c).abs() >= 2.0**53).any() for c in floats))
    return bool(big.item())


def _read_jsonl(path: Path, data: bytes) -> RawFile:
    """A JSON lines file's objects as text columns (nested objects as dotted columns); `data`
    is UTF-8 (`as_utf8`). A line that is not one usable object is a malformed record."""
    # one scan of the bytes finds the line ends, brackets and colons every check below reads
    ends, brackets, colons = _offsets(data, b"\n", b"[{", b":")
    if not data.startswith(b"\n") and not (np.diff(ends) == 1).any():  # no blank line
        # Fast path: a clean file (no blank lines, so record n is line n). Anything odd —
        # a malformed line, mixed types, a key named twice — falls back to the line-by-line
        # reader below.
        try:
            if _fast_json_may_read(data, (ends, brackets)):
                df = _sampled_ndjson(data, colons)
                if df is None:
                    df = pl.read_ndjson(io.BytesIO(data), infer_schema_length=None)
                    repeats = df.width and _keys_repeat(data, df)
                else:
                    repeats = False  # (counted by `_sampled_ndjson`)
                if df.width and not repeats:
                    df = _flatten_frame(df)
                    if _lost_digits(df):
                        raise ValueError("an integer beyond 2^53 in a float column")
                    df = _stringify(df)
                    if all(t == pl.String or t == pl.List(pl.String) for t in df.schema.values()):
                        df = df.rename(_without_reserved(df.columns))
                        return RawFile(df.with_row_index(ROW, offset=1), [])
        except Exception:
            pass
    text = data.decode("utf-8")  # valid: `as_utf8` checked it
    records: list[dict] = []
    numbers: list[int] = []
    malformed: list[tuple[int, str, str]] = []
    for n, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        why = None
        try:
            obj = json.loads(line, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as e:
            why = f"not valid JSON ({e.msg})"
        except _RepeatedKey as e:
            why = f"not usable JSON: the key '{_short(e.key)}' appears twice in one object"
        except RecursionError:
            why = f"not usable JSON: nested deeper than {MAX_JSON_DEPTH} levels"
        except ValueError:  # an integer too long to convert
            why = "not usable JSON: a number with too many digits"
        else:
            if _depth(obj) > MAX_JSON_DEPTH:  # (first: as deeper lines fail to parse)
                why = f"not usable JSON: nested deeper than {MAX_JSON_DEPTH} levels"
            elif not isinstance(obj, dict):
                why = f"a JSON line must be an object, not {_json_kind(obj)}"
            elif "\\ud" in line.lower() and not _is_text(obj):
                why = "not usable JSON: a lone surrogate escape (\\ud800-\\udfff) is not text"
        if why is not None:
            malformed.append((n, line[:200], why))
            continue
        records.append(obj)
        numbers.append(n)
    # A key that holds an object on some lines and something else on others stays one column,
    # the object as its JSON text (as the fast reader does); objects everywhere are flattened.
    kinds: dict[str, set[bool]] = {}
    for obj in records:
        for k, v in obj.items():
            if v is not None:
                kinds.setdefault(k, set()).add(isinstance(v, dict))
    mixed = {k for k, seen in kinds.items() if seen == {True, False}}
    flat: list[dict] = []
    kept: list[int] = []
    for n, obj in zip(numbers, records, strict=True):
        try:
            flat.append(
                _flatten(
                    {
                        k: json.dumps(v, ensure_ascii=False)
                        if k in mixed and isinstance(v, dict)
                        else v
                        for k, v in obj.items()
                    }
                )
            )
            kept.append(n)
        except _RepeatedKey as e:  # `{"a.b": 1, "a": {"b": 2}}`: two values for column a.b
            malformed.append(
                (n, "", f"not usable JSON: the column '{_short(e.key)}' is given twice")
            )
    records, numbers = flat, kept
    if not records and malformed:
        n, line, why = min(malformed)
        hint = (
            " (it looks like one JSON array: write one object per line)"
            if why.startswith("not valid JSON") and line.lstrip().startswith("[")
            else ""
        )
        raise DataError(
            f"{path} line {n}: {why}; no line of the file is a usable JSON object, so it has no "
            f"columns{hint}."
        )
    keys: dict[str, None] = {}
    for r in records:
        keys.update(dict.fromkeys(r))
    columns: dict[str, list] = {k: [] for k in keys}
    for r in records:
        for k in keys:
            columns[k].append(r.get(k))
    schema: dict[str, pl.DataType] = {}
    for k, vals in columns.items():
        kinds = {isinstance(v, list) for v in vals if v is not None}
        if kinds == {True}:
            schema[k] = pl.List(pl.String)
        else:  # text, or lists beside text in one key: lists kept as their JSON text
            schema[k] = pl.String()
            columns[k] = [
                json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for v in vals
            ]
    row = pl.Series(ROW, numbers, dtype=pl.UInt32)
    if not columns:  # every object empty (`{}`): rows without columns, as a header-only CSV
        return RawFile(row.to_frame(), malformed)
    df = pl.DataFrame(columns, schema=schema)
    df = df.rename(_without_reserved(df.columns))
    df = df.with_columns(row)
    return RawFile(df.select([ROW, *(c for c in df.columns if c != ROW)]), malformed)


def _flatten(obj: dict, prefix: str = "") -> dict:
    """Nested objects become dotted keys (`text.content`); scalars become strings."""
    out: dict = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            inner = _flatten(v, key + ".")
            if inner.keys() & out.keys():
                raise _RepeatedKey(next(iter(inner.keys() & out.keys())))
            out.update(inner)
            continue
        if key in out:
            raise _RepeatedKey(key)
        if isinstance(v, list):
            out[key] = [None if x is None else _scalar(x) for x in v]
        else:
            out[key] = None if v is None else _scalar(v)
    return out


def _scalar(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():  # as `_float_text`: 12.0 -> "12"
        return str(int(v))
    if isinstance(v, dict | list):
        return json.dumps(v, ensure_ascii=False, sort_keys=True)
    return str(v)  # (a lone surrogate never gets here: its line is rejected)


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """`json.loads`'s object hook: a key given twice in one object is an error, not last-wins."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def _depth(obj: object) -> int:
    """How deeply lists and objects nest in `obj` (without recursion)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, d = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (item.values() if isinstance(item, dict) else item))
    return deepest


def _is_text(obj: object) -> bool:
    """Whether every string in `obj` is text (no lone surrogate from a `\\udXXX` escape)."""
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_kind(obj: object) -> str:
    if isinstance(obj, list):
        return "a list"
    if isinstance(obj, str):
        return "a string"
    if obj is None:
        return "null"
    return "a boolean" if isinstance(obj, bool) else "a number"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# Writing


def check_paths(input_dir: Path | None, out_dir: Path | None, out_option: str = "--out") -> None:
    """Before any work: the input is a folder, and the output folder (`out_option` names it in
    the message) can be a workspace: not a file, not under a file, writable, not inside the
    input folder, and none of its own folders is a file. Each problem is a one-line DataError
    that says what to do."""
    if input_dir is not None:
        input_dir = Path(input_dir)
        if input_dir.is_file():
            raise DataError(
                f"--input {input_dir} is a file; give the folder that holds the table folders "
                "(orders/, events/, messages/, identities/, consent/)."
            )
        if not input_dir.is_dir():
            raise DataError(f"{input_dir}: no such input folder.")
    if out_dir is None:
        return
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(
            f"{out_option} {out_dir} is a file, not a folder; give a folder path (a new one, or "
            "a workspace a run wrote)."
        )
    existing = out_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise DataError(
            f"{out_option} {out_dir}: {existing} is a file, so no folder can be made under it; "
            "choose another path."
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise DataError(
            f"{out_option} {out_dir}: no permission to write in {existing}; choose a folder you "
            "can write to, or change its permissions."
        )
    if input_dir is not None:
        inp, out = input_dir.resolve(), out_dir.resolve()
        if out == inp or inp in out.parents:
            raise DataError(
                f"{out_option} {out_dir} is inside the input folder {input_dir}; its files would "
                "be read as input. Choose a folder outside the input folder."
            )
    for name in workspace_folders():
        sub = out_dir / name
        if sub.exists() and not sub.is_dir():
            raise DataError(
                f"{out_option} {out_dir}: {sub} is a file where the workspace keeps a folder; "
                "move it away, or choose another folder."
            )
        if sub.is_dir() and not os.access(sub, os.W_OK | os.X_OK):
            raise DataError(
                f"{out_option} {out_dir}: no permission to write in {sub}; change its "
                "permissions, or choose another folder."
            )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success it replaces `target` in one rename.

    The temporary file is created owner-read/write only (0600) and keeps that mode (exports and
    identity files hold personal information); it is synced before the rename, and nothing is
    left behind when the body fails."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def clear_stale_temps(folder: Path) -> int:
    """Remove temporary files a killed run left behind (`.<name>.<random>.tmp`, written by
    `atomic_path`); call it only while holding the workspace lock. Returns how many."""
    removed = 0
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
    return removed


# Rows per row group of `write_parquet` (pyarrow's default): fixed, so the layout never
# depends on how a frame happens to be chunked.
ROW_GROUP_ROWS = 1 << 20
# zstd's fastest level: written a third faster than at its default (3), read as fast, 1-2 %
# larger (measured on the 2M brand's tag table, identity map and person state files)
ZSTD_LEVEL = 1


def write_parquet(df: pl.DataFrame, target: Path, metadata: dict[str, str] | None = None) -> Path:
    """Write deterministically (no timestamps, fixed statistics and row groups) and atomically;
    `metadata` becomes the file's key-value metadata (`parquet_metadata` reads it back).

    Polars' writer encodes columns in parallel: the 2M-person tag table (2.07M rows x 120
    columns) takes 6 s where pyarrow's took 10 s, and the bytes are the same from run to run.
    zstd at level 1 (`ZSTD_LEVEL`), not its default 3: at 2M people the tag table is written
    in 4.8 s instead of 5.8, the 8.7M-row identity map in 3.1 s instead of 4.5, for 1-2 % more
    bytes (and the signal sums of the person state are smaller at level 1)."""
    with atomic_path(target) as tmp:
        df.rechunk().write_parquet(
            tmp,
            compression="zstd",
            compression_level=ZSTD_LEVEL,
            statistics=True,
            row_group_size=ROW_GROUP_ROWS,
            metadata=dict(metadata) if metadata else None,
        )
    return target


def parquet_metadata(path: Path) -> dict[str, str]:
    """A Parquet file's key-value metadata (what `write_parquet` was given, or pyarrow wrote as
    schema metadata), without the Arrow schema itself. Raises OSError or ArrowException when
    the file cannot be read."""
    raw = pq.ParquetFile(path).metadata.metadata or {}
    return {
        k.decode(errors="replace"): v.decode(errors="replace")
        for k, v in raw.items()
        if k != b"ARROW:schema"
    }


def write_json(obj: object, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(
            json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n"
        )
    return target


def write_bytes(data: bytes, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return target


def write_text(text: str, target: Path) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot read ({_first_line(e)}).") from None


# ---------------------------------------------------------------------------------------------
# The workspace lock


class WorkspaceLock:
    """An exclusive lock on an output folder. A lock whose process is gone is cleared."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".lock"

    def __enter__(self) -> WorkspaceLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._holder_alive():
                    holder = self.path.read_text(errors="replace").strip()
                    raise LockError(
                        f"{self.path.parent} is locked by another run ({holder}); wait for it to "
                        f"finish, or delete {self.path} if that process is gone."
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process died
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"pid={os.getpid()} host={socket.gethostname()}\n")
            return self
        raise LockError(f"cannot take the lock {self.path}.")

    def _holder_alive(self) -> bool:
        try:
            text = self.path.read_text()
        except OSError:
            return False
        fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
        if fields.get("host") not in (None, socket.gethostname()):
            return True  # another machine's run: we cannot tell, so respect it
        try:
            pid = int(fields.get("pid", ""))
        except ValueError:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
