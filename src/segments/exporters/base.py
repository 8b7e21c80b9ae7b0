"""Shared exporter machinery: the exporter base class, its options, output id types, members.

An exporter turns an audience pack's `members` frame (one row per (one_id, identifier):
`one_id`, `id_type`, `id`, plus `phone_md5`, `phone_cc_sha256`, `phone_e164_sha256` on
`phone_sha256` rows) into the files one ad platform accepts, and a manifest beside them.

The steps every platform shares live here and in `ids`, `files` and `manifest`:

1. each output id type (`OutputType`) reads one or more input id types (`Source`), checks and
   normalises the value (`ids.normalise_id`, `ids.invalid_reason`), then encodes it (hash or not);
2. the encoded values are deduplicated and sorted, so equal input gives byte-identical files;
3. the pack is refused (`ExportError`) when fewer people than `min_size` have a usable id;
4. files are written atomically (temp file in the same folder, then `os.replace`); zips have
   fixed timestamps and permissions and are split into parts below a size limit (`files`);
5. `<pack>_<week>_<platform>_manifest.json` records counts in, invalid (by reason), duplicate
   and out, and every file's size, SHA-256, MD5 and row count (`manifest`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from segments.errors import ConfigError, ExportError
from segments.exporters.files import write_text_file
from segments.exporters.ids import as_is, invalid_reason, normalise_id
from segments.exporters.manifest import ExportManifest, FileEntry, IdTypeStats, manifest_name
from segments.io import write_bytes
from segments.settings.load import validated

# The engine refuses to export a pack that fewer people than this can be matched from
# (reference §7: meets every verified platform floor except Alibaba's 2,000 push minimum).
ENGINE_MIN_SIZE = 1_000

# Columns of the members frame. Phone hash columns are filled on `phone_sha256` rows only.
MEMBER_COLUMNS = ("one_id", "id_type", "id")
PHONE_HASH_COLUMNS = ("phone_md5", "phone_cc_sha256", "phone_e164_sha256")

_SAFE_NAME = re.compile(r"^\w[\w.-]{0,119}$")


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
    to emit) and `write_output(prepared, stem, out_dir, options)` (the files of one id type;
    `CsvExporter` provides the one-CSV-per-id-type kind).
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


class CsvExporter(Exporter):
    """An exporter that writes each id type as `<pack>_<week>_<TYPE>.csv`: the type's header
    row, then one value per line."""

    def write_output(
        self, prepared: Prepared, stem: str, out_dir: Path, options: ExportOptions
    ) -> list[FileEntry]:
        out = prepared.output
        return [write_text_file(out_dir, f"{stem}_{out.name}.csv", prepared.values, out.header)]


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
