"""Shared exporter machinery: options, id validation and hashing, deterministic files, manifests.

An exporter turns an audience pack's `members` frame (one row per (one_id, identifier):
`one_id`, `id_type`, `id`, plus `phone_md5`, `phone_cc_sha256`, `phone_e164_sha256` on
`phone_sha256` rows) into the files one ad platform accepts, and a manifest beside them.

The steps every platform shares live here:

1. each output id type (`OutputType`) reads one or more input id types (`Source`), checks and
   normalises the value (`normalise_id`, `invalid_reason`), then encodes it (hash or not);
2. the encoded values are deduplicated and sorted, so equal input gives byte-identical files;
3. the pack is refused (`ExportError`) when fewer people than `min_size` have a usable id;
4. files are written atomically (temp file in the same folder, then `os.replace`); zips have
   fixed timestamps and permissions and are split into parts below a size limit;
5. `<pack>_<week>_<platform>_manifest.json` records counts in, invalid (by reason), duplicate
   and out, and every file's size, SHA-256, MD5 and row count.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import zipfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from segments.contract import md5_hex, sha256_hex
from segments.errors import ConfigError, ExportError
from segments.io import write_bytes
from segments.settings.load import validated

# The engine refuses to export a pack that fewer people than this can be matched from
# (reference §7: meets every verified platform floor except Alibaba's 2,000 push minimum).
ENGINE_MIN_SIZE = 1_000

# Size limits are in decimal megabytes: if a platform means MiB, decimal MB is still below it.
MB = 1_000_000

# Columns of the members frame. Phone hash columns are filled on `phone_sha256` rows only.
MEMBER_COLUMNS = ("one_id", "id_type", "id")
PHONE_HASH_COLUMNS = ("phone_md5", "phone_cc_sha256", "phone_e164_sha256")

ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
ZIP_FILE_MODE = 0o100644  # regular file, rw-r--r--
ZIP_COMPRESS_LEVEL = 1  # hex hashes barely compress: level 6 is 3x slower for 2% smaller files

_SAFE_NAME = re.compile(r"^\w[\w.-]{0,119}$")


# ---------------------------------------------------------------------------------------------
# Identifier kinds: how a value is normalised and when it is rejected


@dataclass(frozen=True)
class IdKind:
    """How one kind of identifier is normalised and validated before it is encoded."""

    name: str
    normalise: Callable[[pl.Expr], pl.Expr]
    pattern: str  # the normalised value must match this (Rust regex)
    problem: str  # the invalid reason when it does not
    placeholder: str | None = None  # normalised values matching this are "not a real id"


def _strip(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars()


def _lower(e: pl.Expr) -> pl.Expr:
    return e.str.strip_chars().str.to_lowercase()


def _idfa(e: pl.Expr) -> pl.Expr:
    """Uppercase; a 32-hex IDFA without hyphens gets them back in UUID positions."""
    v = e.str.strip_chars().str.to_uppercase()
    hyphenated = pl.concat_str(
        [
            v.str.slice(0, 8),
            v.str.slice(8, 4),
            v.str.slice(12, 4),
            v.str.slice(16, 4),
            v.str.slice(20, 12),
        ],
        separator="-",
    )
    return pl.when(v.str.contains(r"^[0-9A-F]{32}$")).then(hyphenated).otherwise(v)


def _mac(e: pl.Expr) -> pl.Expr:
    """Tencent's legacy MAC rule: drop ':' and '-', UPPERCASE."""
    return e.str.strip_chars().str.replace_all(r"[:-]", "").str.to_uppercase()


ID_KINDS: dict[str, IdKind] = {
    k.name: k
    for k in (
        IdKind("md5", _lower, r"^[0-9a-f]{32}$", "not a 32-character hex MD5"),
        IdKind("sha256", _lower, r"^[0-9a-f]{64}$", "not a 64-character hex SHA-256"),
        IdKind(
            "imei",
            _lower,
            r"^[0-9a-f]{14,15}$",
            "not a 14/15-character IMEI or MEID",
            placeholder=r"^0+$",
        ),
        IdKind(
            "idfa",
            _idfa,
            r"^[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}$",
            "not an IDFA (8-4-4-4-12 hex)",
            placeholder=r"^[0-]+$",
        ),
        IdKind(
            "oaid",
            _strip,
            r"^[0-9A-Za-z][0-9A-Za-z-]{7,99}$",
            "not an OAID (8 to 100 letters, digits and hyphens)",
            placeholder=r"^[0-]+$",
        ),
        # No exporter reads MACs (not a contract id type); kept for Tencent's HASH_MAC rule.
        IdKind("mac", _mac, r"^[0-9A-F]{12}$", "not a MAC address (12 hex digits)"),
        IdKind(
            "wechat",
            _strip,
            r"^[0-9A-Za-z_-]{10,64}$",
            "not a WeChat id (10 to 64 letters, digits, '_' and '-')",
        ),
        IdKind(
            "taobao",
            _strip,
            r"^[^\s\p{Cc},;\"']{1,128}$",
            "not a Taobao id (1 to 128 characters, no spaces, commas or quotes)",
        ),
    )
}


def normalise_id(raw: str | pl.Expr, kind: str) -> pl.Expr:
    """The value of `raw` in the canonical form of `kind` (not yet validated).

    md5/sha256/imei: trimmed, lowercase. idfa: trimmed, UPPERCASE, hyphens kept (added when a
    32-hex IDFA has none). mac: ':' and '-' dropped, UPPERCASE. oaid, wechat, taobao: trimmed
    only (case is part of the id).

    >>> pl.select(normalise_id(pl.lit(" ff1999cd71774937a47474937a102630"), "idfa")).item()
    'FF1999CD-7177-4937-A474-74937A102630'
    """
    expr = pl.col(raw) if isinstance(raw, str) else raw
    return ID_KINDS[kind].normalise(expr)


def invalid_reason(raw: str | pl.Expr, kind: str, missing: str = "missing value") -> pl.Expr:
    """Why `raw` cannot be exported as a `kind` identifier; null when it can.

    >>> pl.select(invalid_reason(pl.lit("00000000-0000-0000-0000-000000000000"), "idfa")).item()
    'placeholder idfa (all zeros)'
    """
    expr = pl.col(raw) if isinstance(raw, str) else raw
    k = ID_KINDS[kind]
    value = k.normalise(expr)
    chain = pl.when(expr.is_null() | expr.str.strip_chars().eq("")).then(pl.lit(missing))
    if k.placeholder is not None:
        chain = chain.when(value.str.contains(k.placeholder)).then(
            pl.lit(f"placeholder {k.name} (all zeros)")
        )
    return chain.when(~value.str.contains(k.pattern)).then(pl.lit(k.problem)).otherwise(None)


# ---------------------------------------------------------------------------------------------
# Encoders (applied to normalised, valid values). All hex output is lowercase.


def as_is(e: pl.Expr) -> pl.Expr:
    """The normalised value itself (raw ids such as unionid, or ids hashed upstream)."""
    return e


def lowercase(e: pl.Expr) -> pl.Expr:
    """Lowercase (Meta MADID: lowercase, hyphens kept, not hashed)."""
    return e.str.to_lowercase()


def md5(e: pl.Expr) -> pl.Expr:
    """Lowercase hex MD5 of the UTF-8 value.

    With the kinds' normalisation this is Tencent's rule for every device id: IMEI lowercase,
    IDFA UPPERCASE with hyphens, OAID exactly as given.
    """
    return md5_hex(e)


def sha256(e: pl.Expr) -> pl.Expr:
    """Lowercase hex SHA-256 of the UTF-8 value."""
    return sha256_hex(e)


def md5_sha256(e: pl.Expr) -> pl.Expr:
    """Tencent MD5_SHA256_*: SHA-256 of the lowercase hex MD5 of the normalised value."""
    return sha256_hex(md5_hex(e))


def sha256_lower(e: pl.Expr) -> pl.Expr:
    """SHA-256 of the lowercased value (TikTok MAID, lowercase variant)."""
    return sha256_hex(e.str.to_lowercase())


def sha256_upper(e: pl.Expr) -> pl.Expr:
    """SHA-256 of the uppercased value (TikTok MAID, uppercase variant)."""
    return sha256_hex(e.str.to_uppercase())


# ---------------------------------------------------------------------------------------------
# Output id types


@dataclass(frozen=True)
class Source:
    """One input that feeds an output id type: rows with `id_type`, value in `column`."""

    id_type: str
    kind: str
    column: str = "id"
    missing: str = "missing value"  # the invalid reason when the value is null or blank


@dataclass(frozen=True)
class OutputType:
    """One id type a platform accepts: its name (used in file names), inputs and encoding."""

    name: str
    sources: tuple[Source, ...]
    encode: Callable[[pl.Expr], pl.Expr] = as_is
    code: int | None = None  # the platform's numeric code for the type, when it has one
    header: str | None = None  # header row for CSV platforms

    @property
    def input_id_types(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(s.id_type for s in self.sources))


@dataclass(frozen=True)
class Prepared:
    """One output id type after validation, encoding and dedup: what gets written."""

    output: OutputType
    rows_in: int
    invalid_reasons: dict[str, int]
    rows_duplicate: int
    values: list[str]  # encoded, deduplicated, sorted
    pairs: pl.DataFrame  # distinct (one_id, out) of the valid rows

    @property
    def one_ids(self) -> pl.Series:
        """Distinct one_ids with at least one valid value."""
        return self.pairs.get_column("one_id").unique()

    @property
    def rows_invalid(self) -> int:
        return sum(self.invalid_reasons.values())

    @property
    def rows_out(self) -> int:
        return len(self.values)


def prepare(members: pl.DataFrame, output: OutputType) -> Prepared:
    """Validate, normalise, encode and deduplicate the members rows that feed `output`.

    Input: the members frame (`one_id`, `id_type`, `id`, phone hash columns). Output: the
    sorted distinct encoded values, the invalid rows counted by reason, and the people covered.
    """
    frames = [
        members.lazy()
        .filter(pl.col("id_type") == s.id_type)
        .select(
            pl.col("one_id"),
            normalise_id(pl.col(s.column), s.kind).alias("value"),
            invalid_reason(pl.col(s.column), s.kind, s.missing).alias("reason"),
        )
        for s in output.sources
    ]
    rows = pl.concat(frames).collect()
    reasons = (
        rows.filter(pl.col("reason").is_not_null()).group_by("reason").len().sort("reason").rows()
    )
    valid = rows.filter(pl.col("reason").is_null()).select(
        "one_id", output.encode(pl.col("value")).alias("out")
    )
    values = valid.get_column("out").unique().sort().to_list()
    return Prepared(
        output=output,
        rows_in=rows.height,
        invalid_reasons={r: int(n) for r, n in reasons},
        rows_duplicate=valid.height - len(values),
        values=values,
        pairs=valid.unique(),
    )


# ---------------------------------------------------------------------------------------------
# Manifest


@dataclass(frozen=True)
class FileEntry:
    """One written file: name relative to the export folder, size, digests, id count."""

    path: str
    bytes: int
    sha256: str
    md5: str  # TikTok and Ocean Engine ask for the file's MD5 as `file_signature`
    rows: int


@dataclass(frozen=True)
class IdTypeStats:
    """Counts for one output id type: rows_in = rows_invalid + rows_duplicate + rows_out."""

    rows_in: int
    rows_invalid: int
    invalid_reasons: dict[str, int]
    rows_duplicate: int
    rows_out: int
    people: int
    files: tuple[FileEntry, ...] = ()
    platform_code: int | None = None


@dataclass(frozen=True)
class ExportManifest:
    """What one export wrote and why; saved as `<pack>_<week>_<platform>_manifest.json`.

    `people` counts distinct one_ids in the pack, `people_exportable` those with at least one
    identifier the platform can use. `skipped` counts input rows of id types the export did not
    use, by reason. `other_files` are files that hold several id types (the Parquet pack).
    """

    platform: str
    pack: str
    week: str
    people: int
    people_exportable: int
    min_size: int
    id_types: dict[str, IdTypeStats]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    other_files: tuple[FileEntry, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[FileEntry]:
        """Every file written, in manifest order."""
        out = [f for s in self.id_types.values() for f in s.files]
        return out + list(self.other_files)

    def to_dict(self) -> dict[str, Any]:
        def file_dict(f: FileEntry) -> dict[str, Any]:
            return {
                "path": f.path,
                "bytes": f.bytes,
                "sha256": f.sha256,
                "md5": f.md5,
                "rows": f.rows,
            }

        return {
            "platform": self.platform,
            "pack": self.pack,
            "week": self.week,
            "people": self.people,
            "people_exportable": self.people_exportable,
            "min_size": self.min_size,
            "id_types": {
                name: {
                    "rows_in": s.rows_in,
                    "rows_invalid": s.rows_invalid,
                    "invalid_reasons": dict(sorted(s.invalid_reasons.items())),
                    "rows_duplicate": s.rows_duplicate,
                    "rows_out": s.rows_out,
                    "people": s.people,
                    "platform_code": s.platform_code,
                    "files": [file_dict(f) for f in s.files],
                }
                for name, s in self.id_types.items()
            },
            "skipped": {k: dict(sorted(v.items())) for k, v in sorted(self.skipped.items())},
            "warnings": list(self.warnings),
            "other_files": [file_dict(f) for f in self.other_files],
            "options": self.options,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ExportManifest:
        d = json.loads(text)
        return cls(
            platform=d["platform"],
            pack=d["pack"],
            week=d["week"],
            people=d["people"],
            people_exportable=d["people_exportable"],
            min_size=d["min_size"],
            id_types={
                name: IdTypeStats(
                    rows_in=s["rows_in"],
                    rows_invalid=s["rows_invalid"],
                    invalid_reasons=dict(s["invalid_reasons"]),
                    rows_duplicate=s["rows_duplicate"],
                    rows_out=s["rows_out"],
                    people=s["people"],
                    files=tuple(FileEntry(**f) for f in s["files"]),
                    platform_code=s.get("platform_code"),
                )
                for name, s in d["id_types"].items()
            },
            skipped={k: dict(v) for k, v in d.get("skipped", {}).items()},
            warnings=tuple(d.get("warnings", ())),
            other_files=tuple(FileEntry(**f) for f in d.get("other_files", ())),
            options=dict(d.get("options", {})),
        )


def manifest_name(pack: str, week_label: str, platform: str) -> str:
    return f"{pack}_{week_label}_{platform}_manifest.json"


# ---------------------------------------------------------------------------------------------
# Deterministic, atomic files


def text_bytes(lines: Sequence[str], header: str | None = None) -> bytes:
    """Lines joined with `\\n` (and a final `\\n`), UTF-8 without BOM."""
    body = ([header] if header is not None else []) + list(lines)
    return ("\n".join(body) + "\n").encode("utf-8") if body else b""


def file_entry(path: Path, out_dir: Path, rows: int, data: bytes | None = None) -> FileEntry:
    """The manifest entry of a written file (digests of `data`, or of the file when None)."""
    if data is None:
        data = path.read_bytes()
    return FileEntry(
        path=path.relative_to(out_dir).as_posix(),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        md5=hashlib.md5(data).hexdigest(),
        rows=rows,
    )


def write_text_file(
    out_dir: Path, name: str, lines: Sequence[str], header: str | None = None
) -> FileEntry:
    """Write one text/CSV file (one value per line, optional header) and describe it."""
    data = text_bytes(lines, header)
    path = out_dir / name
    write_bytes(data, path)
    return file_entry(path, out_dir, rows=len(lines), data=data)


def zip_bytes(entries: Mapping[str, bytes]) -> bytes:
    """A zip of `entries` that depends on nothing but their names and contents.

    Entries are sorted by name, dated 1980-01-01 00:00, mode 0644, made on "Unix", deflated at
    a fixed level, with no comment or extra fields: the same input gives the same bytes.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.create_system = 3
            info.external_attr = ZIP_FILE_MODE << 16
            zf.writestr(info, entries[name], compresslevel=ZIP_COMPRESS_LEVEL)
    return buf.getvalue()


def _even_bounds(total: int, parts: int) -> list[tuple[int, int]]:
    return [(i * total // parts, (i + 1) * total // parts) for i in range(parts)]


def write_zip_parts(
    out_dir: Path,
    base: str,
    lines: Sequence[str],
    max_zip_bytes: int,
    rows: Sequence[int] | None = None,
    header: str | None = None,
    inner_suffix: str = ".txt",
) -> list[FileEntry]:
    """Write `lines` as `<base>.zip` holding `<base>.txt`, split when the zip would be too big.

    When one zip would exceed `max_zip_bytes`, the lines are cut into contiguous near-equal
    parts, as few as fit (counting up from the single zip's size / limit):
    `<base>_part1.zip` holding `<base>_part1.txt`, ...
    `rows[i]` is the number of ids on line i (default 1). A line is never cut.
    """
    if not lines:
        return []
    row_counts = list(rows) if rows is not None else [1] * len(lines)
    total = len(lines)
    parts = 1
    while True:
        blobs: list[tuple[str, bytes, int]] = []
        too_big = 0
        for k, (a, b) in enumerate(_even_bounds(total, parts)):
            name = base if parts == 1 else f"{base}_part{k + 1}"
            blob = zip_bytes({name + inner_suffix: text_bytes(lines[a:b], header)})
            if len(blob) > max_zip_bytes:
                too_big = len(blob)
                break
            blobs.append((name, blob, sum(row_counts[a:b])))
        if not too_big:
            break
        if parts >= total:
            raise ExportError(
                f"{base}: one line does not fit in a zip of at most {max_zip_bytes:,} bytes."
            )
        if parts == 1:
            # The parts' zips add up to at least about the single zip: start from that count.
            parts = max(2, math.ceil(too_big / max_zip_bytes))
        else:
            parts += 1
        parts = min(parts, total)
    entries = []
    for name, blob, n in blobs:
        path = out_dir / f"{name}.zip"
        write_bytes(blob, path)
        entries.append(file_entry(path, out_dir, rows=n, data=blob))
    return entries


# ---------------------------------------------------------------------------------------------
# Options


class ExportOptions(BaseModel):
    """Options every exporter accepts.

    min_size: refuse the export when fewer people have a usable id (default: the exporter's
        `min_size`, 1,000; Alibaba 2,000).
    id_types: emit only these output id types (names as in `Exporter.id_types()`); default all.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_size: int | None = Field(default=None, ge=1)
    id_types: tuple[str, ...] | None = None


# ---------------------------------------------------------------------------------------------
# The exporter base class


class Exporter(ABC):
    """An ad-platform exporter: `export(members, pack, week_label, out_dir, options)`.

    Subclasses set `name`, `min_size`, `platform_min_size` (the platform's own documented
    minimum, informational) and `options_model`, and implement `outputs(options)` (the id types
    to emit) and `write_output(prepared, stem, out_dir, options)` (the files of one id type).
    """

    name: ClassVar[str]
    min_size: ClassVar[int] = ENGINE_MIN_SIZE
    platform_min_size: ClassVar[int | None] = None
    options_model: ClassVar[type[ExportOptions]] = ExportOptions

    # --- what subclasses provide -----------------------------------------------------------

    @abstractmethod
    def all_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        """Every output id type this exporter can emit with these options."""

    def unavailable(self, options: ExportOptions) -> dict[str, str]:
        """Output id types that cannot be emitted with these options, with the reason."""
        return {}

    def skip_reason(self, id_type: str, options: ExportOptions) -> str:
        """Why input rows of `id_type` feed no output of this export."""
        return f"{self.name} does not use {id_type}"

    @abstractmethod
    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        """Write the files of one prepared output id type; return their manifest entries."""

    def extra_warnings(self, options: ExportOptions) -> list[str]:
        return []

    def write_all(
        self,
        frame: pl.DataFrame,
        prepared: Sequence[Prepared],
        stem: str,
        out_dir: Path,
        options: ExportOptions,
    ) -> tuple[dict[str, list[FileEntry]], list[FileEntry]]:
        """Write every prepared output: (files per id type, files holding several types).

        By default each non-empty id type is written on its own by `write_output`.
        """
        per_type = {
            p.output.name: self.write_output(p, stem, out_dir, options) if p.values else []
            for p in prepared
        }
        return per_type, []

    # --- shared behaviour --------------------------------------------------------------------

    def id_types(self, options: ExportOptions | Mapping[str, Any] | None = None) -> tuple[str, ...]:
        """Names of the output id types this exporter can emit (with these options)."""
        opts = self.parse_options(options)
        return tuple(o.name for o in self.all_outputs(opts))

    def parse_options(self, options: ExportOptions | Mapping[str, Any] | None) -> ExportOptions:
        """Validate `options` (a model, a mapping or None) into this exporter's options model."""
        model = self.options_model
        if isinstance(options, model):
            opts = options
        else:
            if options is None:
                data: dict[str, Any] = {}
            elif isinstance(options, BaseModel):
                data = options.model_dump(exclude_unset=True)
            else:
                data = dict(options)
            opts = validated(model, data, f"export options for {self.name}")
        if opts.id_types is not None:
            known = [o.name for o in self.all_outputs(opts)]
            unknown = [t for t in opts.id_types if t not in known]
            if unknown:
                raise ConfigError(
                    f"export options for {self.name}: id_types {', '.join(map(repr, unknown))} "
                    f"unknown; valid: {', '.join(known)}."
                )
        return opts

    def selected_outputs(self, options: ExportOptions) -> tuple[OutputType, ...]:
        """The output id types this export emits: all (or `options.id_types`) minus unavailable."""
        blocked = self.unavailable(options)
        chosen = options.id_types
        return tuple(
            o
            for o in self.all_outputs(options)
            if o.name not in blocked and (chosen is None or o.name in chosen)
        )

    def effective_min_size(self, options: ExportOptions) -> int:
        return options.min_size if options.min_size is not None else self.min_size

    def export(
        self,
        members: pl.DataFrame | pl.LazyFrame,
        pack: str,
        week_label: str,
        out_dir: Path,
        options: ExportOptions | Mapping[str, Any] | None = None,
    ) -> ExportManifest:
        """Write this platform's files for one pack and week into `out_dir`; return the manifest.

        Raises ExportError (nothing written) when fewer than the minimum number of people have
        an identifier this platform can use, or when `members` lacks the required columns.
        """
        opts = self.parse_options(options)
        _check_name(pack, "pack")
        _check_name(week_label, "week")
        frame = members_frame(members)
        out_dir = Path(out_dir)

        warnings = self._min_size_warnings(opts)
        blocked = self.unavailable(opts)
        warnings += [
            f"{name} not exported: {why}"
            for name, why in blocked.items()
            if opts.id_types is None or name in opts.id_types
        ]
        warnings += self.extra_warnings(opts)
        outputs = self.selected_outputs(opts)
        prepared = [prepare(frame, o) for o in outputs]

        people = frame.get_column("one_id").n_unique()
        exportable = _count_people(prepared)
        min_size = self.effective_min_size(opts)
        _check_size(self.name, pack, week_label, people, exportable, min_size)

        out_dir.mkdir(parents=True, exist_ok=True)
        stem = f"{pack}_{week_label}"
        per_type, other_files = self.write_all(frame, prepared, stem, out_dir, opts)
        stats = {p.output.name: _stats(p, per_type.get(p.output.name, [])) for p in prepared}
        manifest = ExportManifest(
            platform=self.name,
            pack=pack,
            week=week_label,
            people=people,
            people_exportable=exportable,
            min_size=min_size,
            id_types=stats,
            skipped=self._skipped(frame, outputs, opts),
            warnings=tuple(warnings),
            other_files=tuple(other_files),
            options=opts.model_dump(mode="json"),
        )
        self._write_manifest(manifest, out_dir)
        return manifest

    # --- helpers for subclasses and export() ---------------------------------------------------

    def _min_size_warnings(self, opts: ExportOptions) -> list[str]:
        min_size = self.effective_min_size(opts)
        floor = self.platform_min_size
        if floor is not None and min_size < floor:
            return [
                f"min_size {min_size:,} is below {self.name}'s documented minimum of "
                f"{floor:,}; the platform may reject the audience."
            ]
        return []

    def _skipped(
        self, frame: pl.DataFrame, outputs: Sequence[OutputType], opts: ExportOptions
    ) -> dict[str, dict[str, int]]:
        used = {t for o in outputs for t in o.input_id_types}
        counts = frame.group_by("id_type").len().sort("id_type").rows()
        return {
            t: {self.skip_reason(t, opts): int(n)}
            for t, n in counts
            if t is not None and t not in used
        }

    def _write_manifest(self, manifest: ExportManifest, out_dir: Path) -> None:
        path = out_dir / manifest_name(manifest.pack, manifest.week, self.name)
        _remove_stale(path, out_dir, {f.path for f in manifest.files})
        write_bytes(manifest.to_json().encode("utf-8"), path)


def _stats(p: Prepared, files: list[FileEntry]) -> IdTypeStats:
    return IdTypeStats(
        rows_in=p.rows_in,
        rows_invalid=p.rows_invalid,
        invalid_reasons=p.invalid_reasons,
        rows_duplicate=p.rows_duplicate,
        rows_out=p.rows_out,
        people=p.one_ids.len(),
        files=tuple(files),
        platform_code=p.output.code,
    )


def _count_people(prepared: Sequence[Prepared]) -> int:
    if not prepared:
        return 0
    return pl.concat([p.one_ids for p in prepared]).n_unique()


def _check_size(
    platform: str, pack: str, week: str, people: int, exportable: int, min_size: int
) -> None:
    if exportable < min_size:
        raise ExportError(
            f"pack '{pack}' {week}: only {exportable:,} of its {people:,} people have an "
            f"identifier {platform} can use, below the minimum of {min_size:,}; nothing written."
        )


def _check_name(value: str, what: str) -> None:
    if not isinstance(value, str) or not _SAFE_NAME.match(value):
        raise ExportError(
            f"{what} name {value!r} cannot be used in a file name: use letters, digits, "
            f"'_', '-' or '.' (starting with a letter or digit)."
        )


def _remove_stale(manifest_path: Path, out_dir: Path, keep: set[str]) -> None:
    """Delete files the previous manifest at `manifest_path` listed and the new one does not."""
    if not manifest_path.exists():
        return
    try:
        old = ExportManifest.from_json(manifest_path.read_text(encoding="utf-8"))
    except (ValueError, KeyError, TypeError):
        return
    for f in old.files:
        name = Path(f.path)
        if f.path in keep or name.is_absolute() or ".." in name.parts:
            continue
        (out_dir / name).unlink(missing_ok=True)


def members_frame(members: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """The members frame as exporters read it: string columns, phone hash columns present.

    Missing phone hash columns are added as nulls (rows that need them are then counted invalid
    with a reason). Raises ExportError when `one_id`, `id_type` or `id` is missing or a row has
    no one_id.
    """
    if isinstance(members, pl.LazyFrame):
        members = members.collect()
    if not isinstance(members, pl.DataFrame):
        raise ExportError(f"members must be a polars DataFrame, got {type(members).__name__}.")
    missing = [c for c in MEMBER_COLUMNS if c not in members.columns]
    if missing:
        raise ExportError(
            f"members frame lacks column(s) {', '.join(missing)}; "
            f"it has {', '.join(members.columns) or 'none'}."
        )
    frame = members.select(
        [pl.col(c).cast(pl.String) for c in MEMBER_COLUMNS]
        + [
            pl.col(c).cast(pl.String) if c in members.columns else pl.lit(None, pl.String).alias(c)
            for c in PHONE_HASH_COLUMNS
        ]
    )
    no_id = frame.get_column("one_id").null_count()
    if no_id:
        raise ExportError(f"members frame has {no_id:,} row(s) without a one_id.")
    return frame
