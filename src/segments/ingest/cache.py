"""The ingest cache: each input file validated once, into a folder keyed by all that shapes it."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import polars as pl
import polars_hash  # noqa: F401  (registers .nchash)
import pyarrow.parquet as pq

from segments.contract import Table, one_line, phone_hash_columns, sha256_hex
from segments.errors import DataError
from segments.ingest.adapters import SKIP, Adapter
from segments.ingest.parse import mask_value
from segments.ingest.validate import (
    _check_columns,
    _detected_adapter,
    _reject_frame,
    _value_counts,
    validate,
)
from segments.io import FILE, ROW, file_format, iter_raw, reading_encoding, sha256_file
from segments.settings.identity import IdentityConfig

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
HASH = "_h"
FREE_TEXT = {"text"}  # columns of free text: their files are written lz4-compressed


@functools.cache
def _code_digest() -> str:
    """What the cache depends on besides the input: this code (every module of the ingest
    package, the adapters among them), the readers and the contract."""
    h = hashlib.sha256(CACHE_VERSION.encode())
    here = Path(__file__).resolve().parent
    for path in (*sorted(here.glob("*.py")), here.parent / "io.py", here.parent / "contract.py"):
        h.update(path.read_bytes())
    h.update(pl.__version__.encode())
    return h.hexdigest()


class JsonMemo:
    """A small JSON memo kept beside the ingest cache folder (`<cache>.<suffix>.json`: the
    folder holds only entries): `known` is what the last run left (empty when the file is
    missing or damaged), `seen` what this run records; `save` keeps `seen` alone, atomically
    and owner-only."""

    suffix = "memo"

    def __init__(self, cache: Path) -> None:
        self.path = self.memo_of(cache)
        try:
            held = json.loads(self.path.read_text())
            self.known: dict[str, Any] = held if isinstance(held, dict) else {}
        except (OSError, ValueError):
            self.known = {}
        self.seen: dict[str, Any] = {}

    @classmethod
    def memo_of(cls, cache: Path) -> Path:
        return cache.with_name(f"{cache.name}.{cls.suffix}.json")

    def save(self) -> None:
        """Remember what this run recorded (and only that)."""
        if self.seen == self.known:
            return
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.seen, sort_keys=True))
        tmp.chmod(0o600)
        tmp.replace(self.path)


class FileHashes(JsonMemo):
    """Each input file's SHA-256, remembered by the file's identity on disk (device, inode,
    size, modification and change times in ns, as git's index does), so a refresh hashes only
    the files that are new or were touched: at 2M people, hashing the 4.1 GB of inputs again
    took about 3 s of every refresh. Any write to a file moves its change time, so a file
    edited in place is hashed again. Kept in `<cache>.hashes.json`; a damaged one is ignored."""

    suffix = "hashes"

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
        held = self.known.get(key)
        if isinstance(held, list) and len(held) == 6 and held[:5] == stamp:
            sha = str(held[5])
        else:
            sha = sha256_file(path)
        self.seen[key] = [*stamp, sha]
        return sha


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
    encoding: str = "auto",
    identity: IdentityConfig | None = None,
) -> dict:
    """Validate one input file into the cache entry `dest` (written under a temporary name and
    renamed when complete), its text read as `encoding` asks (`io.reading_encoding`). Returns
    its counts and the encoding it was read in (`meta.json`)."""
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
    enc, fallback = reading_encoding(encoding, declared.encoding if declared else None, rel)
    # A Parquet file read by the contract itself (no adapter to look into its values) keeps
    # its naive timestamps typed: validation takes them as they are (20M brand events: no
    # text written and parsed back).
    typed = declared is None and _contract_parquet(path, table)
    for i, raw in enumerate(iter_raw(path, enc, chunk_rows, fallback, typed)):
        if i == 0:
            meta["encoding"] = raw.encoding
            adapter = declared or _detected_adapter(table.name, raw.frame.columns)
            _check_columns(rel, table, adapter, raw.frame.columns, categories)
        assert adapter is not None
        if progress and (i or raw.frame.height >= chunk_rows):
            progress(
                f"ingest {table.name}: {rel} rows {meta['read'] + 1:,}-{meta['read'] + raw.frame.height:,}"
            )
        frame = adapter.apply(raw.frame, categories, tz)
        meta["read"] += raw.frame.height + len(raw.malformed)
        if raw.malformed:
            rejects.append(
                _reject_frame(
                    [(row, "", mask_value(v, False), why) for row, v, why in raw.malformed]
                )
            )
        if SKIP not in frame.columns:
            frame = frame.with_columns(pl.lit(None, pl.String).alias(SKIP))
        df = validate(frame.lazy(), table, tz, identity).collect()
        del frame, raw
        # Each filter copies every column it keeps: a frame is filtered only when some row
        # goes (most chunks keep all), and only on the columns that are written.
        keep = [*table.schema, ROW]
        cn11 = [f"_cn11_{id_col}" for _, id_col in table.id_columns]
        if table.name == "orders":
            cn11.append("_phone_cn11")
            keep += ["phone_is_virtual", "_phone_reject"]
        skips = df.get_column(SKIP)
        if skips.null_count() < df.height:
            skipped = skips.drop_nulls().to_frame()
            meta["skipped"] += skipped.height
            for reason, n in _value_counts(skipped, SKIP).items():
                skip_reasons[reason] = skip_reasons.get(reason, 0) + n
            del skipped
            df = df.filter(pl.col(SKIP).is_null())
        del skips
        is_bad = df.get_column("_reject_reason").is_not_null()
        if is_bad.any():
            bad = df.filter(is_bad)
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
            del bad
        columns = [c for c in df.columns if c in {*table.names, ROW, *cn11, "_phone_reject"}]
        good = df.select(columns).filter(~is_bad) if is_bad.any() else df.select(columns)
        del df, is_bad
        phones.append(
            pl.concat([good.select(pl.col(c).alias("cn11")) for c in cn11]).drop_nulls().unique()
        )
        if table.name == "orders":
            good = good.with_columns(
                sha256_hex(pl.col("_phone_cn11")).alias("phone_sha256"),
                pl.col("_phone_cn11")
                .str.slice(0, 3)
                .is_in(list(virtual_prefixes))
                .alias("phone_is_virtual"),
            )
        good = good.select(keep).with_columns(pl.col(ROW).cast(pl.Int64))
        if table.dedup_key:
            good = good.with_columns(_key_hash(table))
        # Uncompressed: these files are the spooled tables every later stage reads in place.
        # Against lz4, on the 3.4M validated rows of a 100k-people input: written in 0.70 s of
        # CPU instead of 0.93, read whole in 0.17 s instead of 0.24, 203 MB instead of 141.
        # Free text (chat messages) stays lz4: one pasted message can be megabytes, and the
        # workspace should not hold it at full size.
        good.write_parquet(
            tmp / f"good-{i:05d}.parquet",
            compression="lz4" if FREE_TEXT & set(good.columns) else "uncompressed",
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
    # each number hashed once (the hashes are a function of it: rows unique by number are
    # unique), written uncompressed: hex digests do not compress with lz4 and zstd took 0.1 s
    # for 65k numbers
    phone_df = pl.concat(phones)
    if len(phones) > 1:
        phone_df = phone_df.unique()
    phone_df.select(phone_hash_columns(pl.col("cn11"))).sort("phone_sha256").write_parquet(
        tmp / "phones.parquet", compression="uncompressed"
    )
    del phone_df
    _private(tmp / "rejects.parquet")
    _private(tmp / "phones.parquet")
    (tmp / "meta.json").write_text(json.dumps(meta, sort_keys=True))
    _private(tmp / "meta.json")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return meta


def _contract_parquet(path: Path, table: Table) -> bool:
    """Whether `path` is a Parquet file that the contract's own adapter reads (as opposed to a
    built-in adapter recognised by its columns). An unreadable file says no: the reader then
    reports it."""
    if file_format(path) != "parquet":
        return False
    try:
        names = pq.read_schema(path).names
    except Exception:  # pyarrow raises many types for a damaged file
        return False
    return _detected_adapter(table.name, names).name == "contract"


@dataclass(frozen=True)
class _Entry:
    rel: str
    dir: Path
    meta: dict

    def scan(self) -> pl.LazyFrame:
        files = [self.dir / f"good-{j:05d}.parquet" for j in range(self.meta["chunks"])]
        return pl.scan_parquet(files, glob=False).with_columns(pl.lit(self.rel).alias(FILE))


def _cache_error(table: Table, entries: list[_Entry], e: Exception) -> DataError:
    return DataError(
        f"the ingest cache of table '{table.name}' cannot be read "
        f"({one_line(str(e))[:200]}); delete {entries[0].dir.parent} and run again."
    )


@dataclass(frozen=True)
class _Piece:
    """One validated Parquet file of a cache entry (a whole input file, or a piece of one)."""

    path: Path
    entry: _Entry
    rows: int

    @property
    def key(self) -> str:
        """The piece's name in the cache (`<entry>/<file>`): the entry is named by the file's
        content and the code, so one key is always the same rows."""
        return f"{self.path.parent.name}/{self.path.name}"


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
