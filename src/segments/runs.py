"""What a run reports: the result objects the CLI and notebooks read, and the run manifest.

A weekly build returns a `WeekResult`, a refresh a `LiveResult`; both carry per-stage seconds
and memory. The run manifest (`runs/<run_id>/manifest.json`) records the inputs with their
SHA-256, the counts that reconcile, the config (phones only as hashes) and the versions.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from segments.config import SegmentsConfig
from segments.ingest import TableCounts
from segments.weeks import AsOf


def run_id(label: str) -> str:
    """A run's id: its start time (UTC, microseconds) and what it built."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + label


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("segments", "polars", "pyarrow", "scikit-learn", "scipy", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


@functools.cache
def code_digest() -> str:
    """A digest of this package's files (code and package data: the tag registry sets each
    tag's type, rounding and fill) and of the versions of the libraries whose arithmetic the
    tags hold (Polars, NumPy): a live version kept or aged by the next refresh must have been
    computed by the same release (`live.increment`), or a release installed mid-week would
    leave the old release's values, or columns, in the table. Caches, hidden files and editor
    lock files are left out; a file that cannot be read counts by its name alone."""
    import numpy as np
    import polars as pl

    h = hashlib.sha256()
    package = Path(__file__).parent
    for path in sorted(package.rglob("*")):
        rel = path.relative_to(package)
        if "__pycache__" in rel.parts or any(p.startswith((".", "#")) for p in rel.parts):
            continue
        if not path.is_file():  # a folder, or a dangling link
            continue
        h.update(str(rel).encode() + b"\0")
        with contextlib.suppress(OSError):
            h.update(path.read_bytes())
    h.update(f"polars={pl.__version__};numpy={np.__version__}".encode())
    return h.hexdigest()[:20]


def redacted_config(cfg: SegmentsConfig) -> dict:
    """The config as recorded in a manifest: phone numbers in it (test numbers that are blocked
    as identifiers) appear only as their SHA-256, like every phone the engine writes."""
    dump = cfg.model_dump(mode="json")
    phones = dump.get("identity", {}).get("blocked_phones")
    if phones:
        dump["identity"]["blocked_phones"] = [
            "sha256:" + hashlib.sha256(p.encode()).hexdigest() for p in phones
        ]
    return dump


def without_timings(stats: object) -> object:
    """Identity statistics minus the seconds they took, what it read from its cache and how much
    of the graph it evaluated again: outputs must not change between two runs of the same week
    (those go to the run manifest)."""
    if isinstance(stats, dict):
        return {
            k: without_timings(v)
            for k, v in stats.items()
            if k not in ("seconds", "cpu_seconds", "pieces", "graph")
        }
    return stats


@dataclass
class WeekResult:
    week: AsOf
    out_dir: Path
    run_id: str
    counts: dict[str, TableCounts]
    after_as_of: dict[str, int]
    people: int
    identifiers: int
    linkage_rate: float
    tags_written: int
    tag_columns: int
    high_value: int
    coupon_hunters: int
    stages: list[dict] = field(default_factory=list)
    manifest: Path | None = None
    tags_path: Path | None = None
    state: dict[str, Any] = field(default_factory=dict)  # what the fold did (FoldReport)

    def summary(self) -> dict:
        return {
            "week": self.week.label,
            "out": str(self.out_dir),
            "run_id": self.run_id,
            "tables": {k: v.to_dict() for k, v in self.counts.items()},
            "after_as_of": self.after_as_of,
            "people": self.people,
            "identifiers": self.identifiers,
            "linkage_rate": self.linkage_rate,
            "tags_written": self.tags_written,
            "tag_columns": self.tag_columns,
            "high_value": self.high_value,
            "coupon_hunters": self.coupon_hunters,
            "stages": self.stages,
            "state": self.state,
            "manifest": str(self.manifest) if self.manifest else None,
        }

    def describe(self) -> str:
        lines = [
            f"week {self.week.label}: {self.people:,} people (one_ids) from {self.identifiers:,} identifiers, "
            f"OneID linkage {self.linkage_rate:.1%}"
        ]
        lines.append(
            f"  tags: {self.tags_written:,} rows x {self.tag_columns} columns -> {self.tags_path}"
        )
        lines.append(f"  high value: {self.high_value:,}   coupon hunters: {self.coupon_hunters:,}")
        for name, c in self.counts.items():
            after = self.after_as_of.get(name, 0)
            lines.append(
                f"  {name:<10} read {c.read:>9,}  accepted {c.accepted:>9,}  rejected {c.rejected:>7,}  "
                f"duplicates {c.duplicates:>6,}  skipped {c.skipped:>6,}  after as-of {after:>7,}"
            )
        other = [
            f"{name} {enc} ({n} file{'s' if n != 1 else ''})"
            for name, c in self.counts.items()
            for enc, n in c.encodings.items()
            if enc != "utf-8"
        ]
        if other:  # what the files that were not UTF-8 were read as
            lines.append(f"  text read as: {', '.join(other)}")
        reasons: dict[str, int] = {}
        for name, c in self.counts.items():
            for reason, n in c.reasons.items():
                reasons[f"{name}: {reason}"] = reasons.get(f"{name}: {reason}", 0) + n
        if reasons:
            lines.append("  rejects by reason:")
            for reason, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:10]:
                lines.append(f"    {n:>7,}  {reason}")
        if self.manifest:
            lines.append(f"  manifest: {self.manifest}")
        return "\n".join(lines)


@dataclass
class LiveResult:
    """What a refresh did: the live table's as-of, how old its newest data is, the packs it
    re-exported, and the run's stages."""

    as_of: AsOf
    based_on: str  # the weekly build whose cut points, models and clusters it applied
    newest_row: datetime | None
    refreshed_at: datetime
    people: int
    tags_path: Path
    packs: list[dict[str, Any]] = field(default_factory=list)
    stages: list[dict] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    manifest: Path | None = None
    unchanged: bool = False  # nothing new since the last refresh: nothing rebuilt
    recomputed: int | None = None  # people whose tags were computed (the others were kept)
    aged_from: str | None = None  # the earlier day the others were aged from (`build.aging`)
    # of the people aged, those aged with the person state's moved counts and sums (their
    # events or messages left a window: `build.aging.Renewed`)
    aged_with_state: int | None = None

    @property
    def data_age_seconds(self) -> float | None:
        """How old the newest input row was when the table was written."""
        if self.newest_row is None:
            return None
        return (self.refreshed_at - self.newest_row).total_seconds()

    def summary(self) -> dict:
        return {
            "as_of": self.as_of.label,
            "based_on_week": self.based_on,
            "newest_row": self.newest_row.isoformat() if self.newest_row else None,
            "refreshed_at": self.refreshed_at.isoformat(timespec="seconds"),
            "people": self.people,
            "tags": str(self.tags_path),
            "packs": self.packs,
            "stages": self.stages,
            "state": self.state,
            "unchanged": self.unchanged,
            "people_recomputed": self.recomputed,
            "aged_from": self.aged_from,
            "people_aged_with_state": self.aged_with_state,
            "manifest": str(self.manifest) if self.manifest else None,
        }

    def describe(self) -> str:
        if self.unchanged:
            return f"live table as of {self.as_of.label}: no new input since the last refresh"
        newest = self.newest_row.isoformat(sep=" ") if self.newest_row else "none"
        lines = [
            f"live table as of {self.as_of.label} (cut points and models of {self.based_on}): "
            f"{self.people:,} people -> {self.tags_path}",
            f"  newest input row: {newest}",
        ]
        if self.recomputed is not None and self.recomputed != self.people:
            rest = f"aged from {self.aged_from}" if self.aged_from else "kept"
            lines.append(f"  tags recomputed for {self.recomputed:,} people, the rest {rest}")
        for p in self.packs:
            head = f"  pack {p['pack']} -> {p['platform']} {p['version']}"
            lines.append(
                f"{head}: {p['people']:,} people" if "people" in p else f"{head}: {p['error']}"
            )
        return "\n".join(lines)


__all__ = [
    "LiveResult",
    "WeekResult",
    "redacted_config",
    "run_id",
    "versions",
    "without_timings",
]
