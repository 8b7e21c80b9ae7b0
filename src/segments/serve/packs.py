"""A named pack for one platform, from the live version a request holds: the export a refresh
wrote for that version when there is one, else one built from the snapshot on first request.

```
WS/exports/live/<pack>/<version>/<platform>/     written by `segments refresh` (taken as is)
WS/exports/served/<pack>/<version>/<platform>/   built here, once per version, then reused
```

A build selects the pack in the snapshot's own tags (never the files of a later version),
checks it as `segments audience export` does (platform, min/max size, nobody opted out),
writes into a scratch folder and renames it into place, so a folder is either whole or absent.
It is logged in `exports/log.jsonl` like every export.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from segments.audiences import (
    WeekTags,
    check_platforms,
    export_plan,
    pack_members,
    plan_from_tags,
    platform_hash_columns,
)
from segments.errors import DataError
from segments.exporters.manifest import manifest_name
from segments.io import read_json
from segments.layout import Layout
from segments.serve.snapshot import Snapshot


@dataclass(frozen=True)
class PackFiles:
    """One pack export of one version: its folder, its manifest, where it came from
    (`refresh` or `served`), and the files a client may download (relative paths)."""

    pack: str
    platform: str
    version: str
    folder: Path
    manifest: dict[str, Any]
    source: str

    @property
    def manifest_file(self) -> str:
        return manifest_name(self.pack, self.manifest["week"], self.platform)

    def files(self) -> list[str]:
        names = [f["path"] for s in self.manifest.get("id_types", {}).values() for f in s["files"]]
        names += [f["path"] for f in self.manifest.get("other_files", [])]
        return [*names, self.manifest_file]


_build_locks: dict[tuple[str, str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(key: tuple[str, str, str]) -> threading.Lock:
    with _locks_guard:
        return _build_locks.setdefault(key, threading.Lock())


def find_export(layout: Layout, pack: str, platform: str, version: str) -> PackFiles | None:
    """The export of `pack` for `platform` in live version `version`, if a refresh or this
    server wrote it and it is still on disk (the refresh's first); None otherwise."""
    for source, root in (
        ("refresh", layout.live_exports(pack)),
        ("served", layout.served_exports(pack)),
    ):
        folder = root / version / platform
        try:
            names = sorted(folder.glob(manifest_name(pack, "*", platform)))
            if not names:
                continue
            manifest = read_json(names[-1])
        except (DataError, OSError, ValueError):
            continue
        return PackFiles(pack, platform, version, folder, manifest, source)
    return None


def pack_export(
    layout: Layout,
    snap: Snapshot,
    pack: str,
    platform: str,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> PackFiles:
    """The export of named pack `pack` for `platform` in the snapshot's version: found, or
    built once, with the exporter options `options[platform]` (the server's) overlaid by the
    pack's own `refresh_options[platform]`. ConfigError for an unknown pack, ExportError when
    it may not go (platform, size, opted-out people)."""
    snap.selection(pack)  # unknown pack, or one that cannot be selected: its error
    pack_def = snap.packs[pack]
    check_platforms(pack_def, [platform])
    found = find_export(layout, pack, platform, snap.version)
    if found is not None:
        return found
    with _lock_for((pack, platform, snap.version)):
        found = find_export(layout, pack, platform, snap.version)
        if found is not None:
            return found
        merged = {
            **dict((options or {}).get(platform) or {}),
            **dict(pack_def.refresh_options.get(platform) or {}),
        }
        return _build(layout, snap, pack, platform, merged)


def _build(
    layout: Layout, snap: Snapshot, pack: str, platform: str, options: dict[str, Any]
) -> PackFiles:
    pack_def = snap.packs[pack]
    wt = WeekTags(
        snap.as_of,
        layout.current("tags.parquet", snap.version),
        layout.current("one_id_map.parquet", snap.version),
    )
    plan = plan_from_tags(layout.root, pack_def, snap.packs, wt, snap.tags.lazy())
    phone_hashes = (
        pl.scan_parquet(layout.phone_hashes, glob=False) if layout.phone_hashes.is_file() else None
    )
    members = pack_members(
        plan.selection, snap.id_map, phone_hashes, platform_hash_columns(platform, options)
    )
    final = layout.served_exports(pack) / snap.version / platform
    scratch = final.parent / f".{platform}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    try:
        export_plan(plan, platform, scratch, options, members=members)
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(scratch, final)
        except OSError:  # another process built it first: theirs is the same bytes
            if not final.is_dir():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = find_export(layout, pack, platform, snap.version)
    if found is None:
        raise DataError(f"pack '{pack}' {platform}: the export wrote no manifest.")
    return found


__all__ = ["PackFiles", "find_export", "pack_export"]
