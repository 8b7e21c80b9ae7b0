"""`ingest`: every table folder read, each file validated through the cache, keys resolved."""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from segments.contract import TABLES, phone_hash_columns
from segments.errors import DataError
from segments.ingest import dedup  # through the module: tests lower its sizes
from segments.ingest.adapters import Adapter
from segments.ingest.cache import (
    FileHashes,
    Part,
    Run,
    _cache_error,
    _Entry,
    _entry_key,
    _pieces,
    _private,
    _validate_file,
)
from segments.ingest.parse import VIRTUAL_PREFIXES
from segments.ingest.validate import REJECT_SCHEMA, _declared_adapter, _phone_rejects, _value_counts
from segments.io import table_files
from segments.settings.identity import IdentityConfig


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
    # how many files were read in each text encoding (`utf-8`, `gbk`, `gb18030`; Parquet: utf-8)
    encodings: dict[str, int] = field(default_factory=dict)

    def reconciles(self) -> bool:
        return self.read == self.accepted + self.rejected + self.duplicates + self.skipped

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class IngestResult:
    tables: dict[str, pl.DataFrame]  # in memory (empty when spooled: see `parts`)
    rejects: dict[str, pl.DataFrame]
    identifier_rejects: pl.DataFrame
    counts: dict[str, TableCounts]
    inputs: list[dict]
    parts: dict[str, list[Part]] = field(default_factory=dict)  # spooled: slices on disk
    reused: int = 0  # input files whose validation came from the cache
    # The validated files' phone hash tables (`phones.parquet` of each cache entry) and a
    # digest of those entries' content keys: the same token, the same `phone_hashes`.
    phone_files: list[Path] = field(default_factory=list)
    phone_token: str = ""
    _phones: pl.DataFrame | None = field(default=None, repr=False)

    @property
    def phone_hashes(self) -> pl.DataFrame:
        """Every accepted phone's hashes, one row per phone, by `phone_sha256`: gathered from
        the cache entries when first asked for (a writer that already holds the table of
        `phone_token` never asks)."""
        if self._phones is None:
            self._phones = _gather_phones(self.phone_files)
        return self._phones

    def release_phone_hashes(self) -> None:
        """Free the gathered table (the build reads it back from its file, lazily)."""
        self._phones = None

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

    def _file_runs(self, cache: Path) -> dict[str, dict[Path, list[Run]]] | None:
        """Per table, the runs read of each validated file of the ingest cache `cache`, in read
        order. None when a table is not read in place from the cache (held in memory, or
        rewritten by hash range)."""
        out: dict[str, dict[Path, list[Run]]] = {}
        cache = cache.resolve()
        for name in self.names:
            parts = self.parts.get(name)
            if not parts:
                return None
            runs: dict[Path, list[Run]] = {}
            for part in parts:
                for run in part.runs:
                    if cache not in run.path.resolve().parents:
                        return None
                    runs.setdefault(run.path, []).append(run)
            out[name] = runs
        return out

    def identity_pieces(
        self, week_end: datetime, cache: Path
    ) -> dict[str, dict[str, pl.LazyFrame]] | None:
        """Every table's rows, cut at `week_end` (the end of the week built), grouped by the
        validated file of the ingest cache `cache` they are read from, each under a key that
        fixes its content: the file (its folder is named by the input's content), the slices
        read of it, the rows a later row replaced, and the cut when it falls inside the file
        (`identity.NodeCache`). None when a table is not read in place from the cache (held in
        memory, or rewritten by hash range)."""
        by_table = self._file_runs(cache)
        if by_table is None:
            return None
        out: dict[str, dict[str, pl.LazyFrame]] = {}
        for name, runs in by_table.items():
            columns = self.parts[name][0].columns
            col = TABLES[name].time_column
            latest = (
                pl.collect_all(
                    [pl.scan_parquet(p, glob=False).select(pl.col(col).max()) for p in runs]
                )
                if col
                else []
            )
            pieces: dict[str, pl.LazyFrame] = {}
            for k, (path, file_runs) in enumerate(runs.items()):
                lf = pl.concat([run.scan().select(columns) for run in file_runs])
                cut = "-"
                if col:
                    last = latest[k].item()
                    if last is not None and last >= week_end:
                        cut = week_end.isoformat()
                        lf = lf.filter(~(pl.col(col) >= week_end).fill_null(False))
                pieces[f"{path.parent.name}/{path.name}:{_spans(file_runs)}:{cut}"] = lf
            out[name] = pieces
        return out

    def row_pieces(
        self, cache: Path, names: tuple[str, ...], salt: str
    ) -> dict[str, dict[str, list[pl.LazyFrame]]]:
        """The kept rows of the tables `names` as the person state folds them in: per table,
        piece key -> the piece's runs (each a bounded slice, read whole). A piece is the kept
        rows of one validated file, keyed as in `identity_pieces` (without a cut). A table not
        read in place from the cache is one piece, keyed by its input files' digests and
        `salt` (the settings that shaped its rows)."""
        by_table = self._file_runs(cache) or {}
        out: dict[str, dict[str, list[pl.LazyFrame]]] = {}
        for name in names:
            if name in by_table:
                columns = self.parts[name][0].columns
                out[name] = {
                    f"{path.parent.name}/{path.name}:{_spans(runs)}": [
                        run.scan().select(columns) for run in runs
                    ]
                    for path, runs in by_table[name].items()
                }
                continue
            lf = self.scan(name)
            if lf is None:
                continue
            files = sorted(
                (d["path"], d["sha256"]) for d in self.inputs if d["path"].startswith(f"{name}/")
            )
            digest = hashlib.sha256(json.dumps([files, salt]).encode()).hexdigest()[:20]
            out[name] = {f"{name}:whole:{digest}": [lf]}
        return out


def _spans(runs: list[Run]) -> list[tuple[int, int, str]]:
    """The rows read of one file, whatever parts they were cut into: each stretch of adjacent
    runs (one per copy of the file delivered) as (first, end, digest of the rows left out).
    A new file elsewhere in the read order moves the part boundaries, not these."""
    spans: list[list] = []
    for run in runs:
        if spans and spans[-1][1] == run.first:
            spans[-1][1] += run.rows
        else:
            spans.append([run.first, run.first + run.rows, []])
        if run.drop is not None:
            spans[-1][2].append(run.drop.cast(pl.Int64))
    return [(a, b, _rows_digest(drops)) for a, b, drops in spans]


def _rows_digest(drops: list[pl.Series]) -> str:
    if not drops:
        return "-"
    rows = pl.concat(drops).unique().sort()
    return hashlib.sha256(rows.to_numpy().tobytes()).hexdigest()[:16]


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
    identity: IdentityConfig | None = None,
    encoding: str = "auto",
) -> IngestResult:
    """Read and validate every table folder under `input_dir`.

    `encoding` (one of `io.ENCODINGS`) is how CSV and JSON lines text is read: `auto` reads a
    UTF-8 file as UTF-8 and detects GBK or GB18030 (or uses the adapter's encoding); a name
    reads every file strictly in it. A file that fits none stops ingest with a one-line
    DataError; the encoding each file was read in is in `inputs` and `TableCounts.encodings`.

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
    lasting_cache = cache is not None
    with contextlib.ExitStack() as stack:
        in_memory = spool is None
        if spool is None or cache is None:
            temp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="segments-")))
            spool = Path(spool or temp / "spool")
            # Spooled parts are read in place from the cache: it lives as long as the spool.
            cache = cache or (temp / "cache" if in_memory else spool / ".cache")
        result = _ingest(
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
            chunk_rows=chunk_rows or dedup.CHUNK_ROWS,
            in_memory=in_memory,
            encoding=encoding,
            identity=identity or IdentityConfig(),
        )
        if not lasting_cache:  # the phone tables go with this call's cache: gather them now
            result.phone_hashes  # noqa: B018
        return result
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
    encoding: str,
    identity: IdentityConfig,
) -> IngestResult:
    # the encoding asked for is part of every cache key: a changed --encoding reads again; so
    # are the identifier patterns, checked at ingest on an id that holds a phone
    id_rules = [sorted(identity.patterns.items()), identity.mention_id_type]
    settings = json.dumps([tz, categories, list(virtual_prefixes), chunk_rows, encoding, id_rules])
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
    hashes = FileHashes(cache)
    shared_keys = dedup.SharedKeys(cache)

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
            sha = hashes.sha256(path)
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
                    encoding,
                    identity,
                )
            inputs[-1]["encoding"] = meta.get("encoding", "utf-8")
            c.encodings[inputs[-1]["encoding"]] = c.encodings.get(inputs[-1]["encoding"], 0) + 1
            used.add(key)
            entries.append(_Entry(rel, dest, meta))
            if _has_rows(dest / "phones.parquet"):  # a file of no phone adds none
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
            replaced = dedup._replaced_rows(table, pieces, shared_keys)
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
            out_parts[name] = dedup._slices(pieces, drop, columns)
        else:
            parts = dedup._partitions(validated, table)
            if progress:
                progress(f"ingest {name}: deduplicating in {parts} partitions")
            deduplicated = dedup._deduplicated(table, entries, parts, columns)
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
    hashes.save()
    shared_keys.save()
    if set(tables) == set(TABLES):  # entries no input uses any more
        for entry in cache.iterdir():
            if entry.is_dir() and not entry.name.startswith(".") and entry.name not in used:
                shutil.rmtree(entry, ignore_errors=True)
    phone_files = sorted(set(phone_files))
    phone_token = hashlib.sha256("\n".join(f.parent.name for f in phone_files).encode())
    identifier_rejects = (
        pl.concat(id_rejects).cast(REJECT_SCHEMA)
        if id_rejects
        else pl.DataFrame(schema=REJECT_SCHEMA)
    )
    return IngestResult(
        out_tables,
        out_rejects,
        identifier_rejects,
        counts,
        inputs,
        parts=out_parts,
        reused=reused,
        phone_files=phone_files,
        phone_token=phone_token.hexdigest()[:40],
    )


def _has_rows(path: Path) -> bool:
    """Whether a Parquet file holds rows, from its footer; True when it cannot be read (the
    reader that gathers it says what is wrong)."""
    try:
        return pq.read_metadata(path).num_rows > 0
    except (OSError, pa.ArrowException):
        return True


def _gather_phones(files: list[Path]) -> pl.DataFrame:
    if not files:  # no file holds a phone
        return pl.DataFrame(schema={"cn11": pl.String}).select(phone_hash_columns(pl.col("cn11")))
    return pl.scan_parquet(files, glob=False).unique().sort("phone_sha256").collect()
