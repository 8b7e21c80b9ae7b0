"""The export manifest: what one export wrote and why, saved beside the files as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


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
