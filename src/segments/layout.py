"""The workspace layout: every path under a workspace folder, in one place.

```
WS/rejects/<table>.parquet, rejects/identifiers.parquet
WS/identity/one_id_map.parquet, rejected_links, rejected_ids, changes, stats.json,
            phone_hashes.parquet, history/<WEEK>/<the same files>
WS/weeks/<WEEK>/tags.parquet, tag_dictionary.parquet, clusters.parquet, interest_graph.parquet,
                cluster_model.skops, state/<name>.json
WS/history/panel.parquet, rfm_weekly.parquet           (segments run --weeks)
WS/runs/<run_id>/manifest.json
WS/exports/log.jsonl, exports/holdouts/<pack>_<WEEK>.parquet
WS/cache/ingest/, cache/identity/                       (validated inputs, identifier nodes)
WS/state/CURRENT, state/manifest-<N>.json, state/files/ (the person state, segments.state)
WS/current/tags.parquet, one_id_map.parquet, manifest.json   (the live table: segments refresh)
WS/exports/live/<pack>/<version>/                       (packs re-exported by a refresh)
WS/exports/served/<pack>/<version>/                     (packs `segments serve` built on request)
WS/staging/tables/, staging/<WEEK>/                     (a run's scratch space)
```

No other module joins path fragments of a workspace: they ask a `Layout`. It also answers
the questions about what a workspace holds that several commands ask: which weeks are built,
the latest one, the one before a week, last week's identity map, the export log.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from segments.errors import DataError
from segments.weeks import Week

_WEEK_LABEL = re.compile(r"^\d{4}-W\d{2}$")


class _Under:
    """A folder right under the workspace root, read as an attribute of a `Layout`."""

    def __init__(self, name: str, doc: str | None = None) -> None:
        self.name = name
        self.__doc__ = doc or f"`{name}/` under the workspace root."

    def __get__(self, layout: Layout, owner: type | None = None) -> Path:
        return layout.root / self.name


@dataclass(frozen=True)
class Layout:
    """The paths of one workspace folder (nothing is created or checked on construction)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    # -- top-level folders -----------------------------------------------------------------
    rejects_dir = _Under("rejects")
    identity_dir = _Under("identity")
    weeks_dir = _Under("weeks")
    history_dir = _Under("history")
    runs_dir = _Under("runs")
    exports_dir = _Under("exports")
    cache_dir = _Under("cache")
    staging_dir = _Under("staging")
    state_dir = _Under("state", "The person state (`segments.state.StateStore`).")
    current_dir = _Under(
        "current",
        "The live table a refresh writes: tags as of the newest data, one folder per version "
        "(`v000042/`) and `LIVE`, the name of the version in force (replaced in one rename, "
        "so a reader never sees half of a version).",
    )

    def live_version(self) -> str | None:
        """The name of the live table's version in force (None before the first refresh)."""
        pointer = self.current_dir / "LIVE"
        if not pointer.is_file():
            return None
        name = pointer.read_text(encoding="utf-8").strip()
        return name if re.fullmatch(r"v\d{6}", name) else None

    def current(self, name: str, version: str | None = None) -> Path:
        """A file of the live table's version in force (or of `version`), e.g.
        `current("tags.parquet")`; DataError before the first refresh."""
        version = version or self.live_version()
        if version is None:
            raise DataError(f"{self.root}: no live table; run `segments refresh` first.")
        return self.current_dir / version / name

    # -- rejects -----------------------------------------------------------------------------
    def rejects(self, table: str) -> Path:
        """`rejects/<table>.parquet` (`identifiers` for the identifier rejects)."""
        return self.rejects_dir / f"{table}.parquet"

    # -- identity ----------------------------------------------------------------------------
    def identity(self, name: str) -> Path:
        """The latest build's identity file, e.g. `identity("one_id_map.parquet")`."""
        return self.identity_dir / name

    def identity_history(self, week: str) -> Path:
        """The folder of one week's copy of the identity files."""
        return self.identity_dir / "history" / week

    def identity_of_week(self, name: str, week: str | None) -> Path:
        """The identity file as `week` built it (its history copy) when there is one, else the
        latest build's."""
        if week is not None:
            path = self.identity_history(week) / name
            if path.is_file():
                return path
        return self.identity(name)

    @property
    def one_id_map(self) -> Path:
        return self.identity("one_id_map.parquet")

    @property
    def phone_hashes(self) -> Path:
        return self.identity("phone_hashes.parquet")

    @property
    def identity_stats(self) -> Path:
        return self.identity("stats.json")

    def previous_one_id_map(self, week: str) -> Path | None:
        """The identity map of the latest week built before `week` (keeps one_ids stable)."""
        history = self.identity_dir / "history"
        if not history.is_dir():
            return None
        earlier = sorted(p.name for p in history.iterdir() if p.is_dir() and p.name < week)
        for label in reversed(earlier):
            path = history / label / "one_id_map.parquet"
            if path.is_file():
                return path
        return None

    # -- weeks -------------------------------------------------------------------------------
    def week_dir(self, week: str) -> Path:
        return self.weeks_dir / week

    def week_file(self, week: str, name: str) -> Path:
        """A file of one built week, e.g. `week_file(W, "clusters.parquet")`."""
        return self.week_dir(week) / name

    def tags(self, week: str) -> Path:
        return self.week_file(week, "tags.parquet")

    def week_state(self, week: str, name: str) -> Path:
        """A week's learned state, `weeks/<W>/state/<name>.json`."""
        return self.week_dir(week) / "state" / f"{name}.json"

    def built_weeks(self) -> list[str]:
        """The weeks with a tag table, oldest first."""
        if not self.weeks_dir.is_dir():
            return []
        return sorted(
            d.name
            for d in self.weeks_dir.iterdir()
            if _WEEK_LABEL.match(d.name) and (d / "tags.parquet").is_file()
        )

    def resolve_week(self, week: str | None = None) -> str:
        """The label of a built week: `week` (a date or ISO week) or, when None, the latest.
        DataError when no week is built or `week` is not."""
        built = self.built_weeks()
        if not built:
            raise DataError(f"{self.root}: no weekly tag table; run `segments run` first.")
        if week is None:
            return built[-1]
        label = Week.parse(week).label
        if label not in built:
            raise DataError(
                f"{self.root}: no tags for {label}; weeks built: {', '.join(built[-5:])}."
            )
        return label

    def previous_week(self, week: str) -> str | None:
        """The latest built week before `week`."""
        earlier = [w for w in self.built_weeks() if w < week]
        return earlier[-1] if earlier else None

    def previous_state(self, week: str, name: str) -> Path | None:
        """The state file `name` of the latest week before `week` that holds one."""
        if not self.weeks_dir.is_dir():
            return None
        for label in sorted(
            (p.name for p in self.weeks_dir.iterdir() if p.name < week), reverse=True
        ):
            path = self.week_state(label, name)
            if path.is_file():
                return path
        return None

    # -- history, runs, caches, staging -------------------------------------------------------
    def history(self, name: str) -> Path:
        """`history/<name>.parquet`: the weekly panel and the RFM of every week."""
        return self.history_dir / f"{name}.parquet"

    def run_manifest(self, run_id: str) -> Path:
        return self.runs_dir / run_id / "manifest.json"

    @property
    def ingest_cache(self) -> Path:
        return self.cache_dir / "ingest"

    @property
    def identity_cache(self) -> Path:
        return self.cache_dir / "identity"

    @property
    def staging_tables(self) -> Path:
        """Where ingest spools tables it rewrites by hash range (emptied after each run)."""
        return self.staging_dir / "tables"

    def staging(self, week: str) -> Path:
        """The per-bucket staged rows of one week's build (removed when the build ends)."""
        return self.staging_dir / week

    # -- exports -------------------------------------------------------------------------------
    @property
    def export_log(self) -> Path:
        return self.exports_dir / "log.jsonl"

    def holdout(self, pack: str, week: str) -> Path:
        return self.exports_dir / "holdouts" / f"{pack}_{week}.parquet"

    def live_exports(self, pack: str) -> Path:
        """Where a refresh re-exports a pack: one folder per version (`v000001`, ...)."""
        return self.exports_dir / "live" / pack

    def served_exports(self, pack: str) -> Path:
        """Where `segments serve` builds a pack asked for that no refresh exported: one folder
        per live version, like `live_exports`."""
        return self.exports_dir / "served" / pack

    def read_export_log(self) -> list[dict[str, Any]]:
        """Every export record, oldest first ([] when none). A torn last line (a crash during an
        append) and lines that are not records are skipped."""
        if not self.export_log.is_file():
            return []
        records = []
        for line in self.export_log.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        return records

    def append_export_log(self, record: Mapping[str, Any]) -> Path:
        """Append one JSON line to the export log (created owner-only when new), synced."""
        path = self.export_log
        path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False, sort_keys=True, default=str) + "\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8"))
            os.fsync(fd)
        finally:
            os.close(fd)
        return path


def workspace_folders() -> list[str]:
    """The folders right under a workspace root (`rejects`, `identity`, ...)."""
    return [v.name for v in vars(Layout).values() if isinstance(v, _Under)]


__all__ = ["Layout", "workspace_folders"]
