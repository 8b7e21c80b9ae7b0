"""Pack export: members and their identifiers, the week's tags, identity files, the export log."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from segments.audiences.definitions import PackDef, definition, definition_hash, pack_and_packs
from segments.audiences.select import OPTED_OUT, Selection, select_pack
from segments.errors import DataError, ExportError
from segments.exporters import ExportManifest, get_exporter
from segments.exporters.base import PHONE_HASH_COLUMNS
from segments.io import parquet_metadata, read_json, sha256_file, write_parquet
from segments.layout import Layout

# The members frame's phone hash columns, filled on `phone_sha256` rows.
PHONE_HASHES = PHONE_HASH_COLUMNS


def pack_members(
    selection: Selection,
    one_id_map: pl.LazyFrame | pl.DataFrame,
    phone_hashes: pl.LazyFrame | pl.DataFrame | None = None,
    hash_columns: tuple[str, ...] = PHONE_HASHES,
) -> pl.DataFrame:
    """The members frame the exporters take: one row per (one_id, id_type, id) of the selected
    people (holdout excluded), in `one_id_map`'s row order (the exporters sort what they
    write), with `phone_md5`, `phone_cc_sha256`, `phone_e164_sha256` joined from `phone_hashes` on `phone_sha256` rows (null on other rows, or when unknown).

    `hash_columns`: the phone hash columns to read (the others stay null), e.g. only those one
    platform uses: `phone_hashes` is as long as the population, so reading less is faster.
    """
    ids = selection.frame.get_column("one_id").cast(pl.String)
    members = (
        one_id_map.lazy()
        .select(
            pl.col("one_id").cast(pl.String),
            pl.col("id_type").cast(pl.String),
            pl.col("id").cast(pl.String),
        )
        .filter(pl.col("one_id").is_in(ids.implode()))
        .collect()
    )
    wanted = [c for c in PHONE_HASHES if c in hash_columns]
    if phone_hashes is not None and wanted:
        ph = phone_hashes.lazy().select(
            pl.col("phone_sha256").cast(pl.String), *[pl.col(c).cast(pl.String) for c in wanted]
        )
        rows = members.height
        members = (
            members.lazy()
            .with_columns(
                pl.when(pl.col("id_type") == "phone_sha256").then(pl.col("id")).alias("_phone")
            )
            .join(ph, left_on="_phone", right_on="phone_sha256", how="left", maintain_order="left")
            .drop("_phone", strict=False)
            .collect()
        )
        if members.height != rows:  # a phone listed twice in phone_hashes (same hashes)
            members = members.unique(maintain_order=True)
    missing = [c for c in PHONE_HASHES if c not in members.columns]
    members = members.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])
    return members.select("one_id", "id_type", "id", *PHONE_HASHES)


LIVE = "live"  # `--week live`: the live table a refresh keeps (`segments refresh`)


@dataclass(frozen=True)
class WeekTags:
    """Where one week's tags live in a workspace, and the identity map they were built with."""

    label: str
    path: Path
    one_id_map: Path


def week_tags(workspace: str | Path, week: str | None = None) -> WeekTags:
    """The tag file of `week` (an ISO week or a date) in `workspace`, default the latest week;
    `live` is the live table (labelled with its as-of day).

    Raises DataError when the workspace has no such week or no weeks at all.
    """
    layout = Layout(workspace)
    if week == LIVE:
        manifest = read_json(layout.current("manifest.json"))
        return WeekTags(
            manifest["as_of"], layout.current("tags.parquet"), layout.current("one_id_map.parquet")
        )
    label = layout.resolve_week(week)
    return WeekTags(label, layout.tags(label), layout.identity_of_week("one_id_map.parquet", label))


def scan_tags(workspace: str | Path, week: str | None = None) -> tuple[str, pl.LazyFrame]:
    """(week label, lazy scan of that week's tags)."""
    wt = week_tags(workspace, week)
    return wt.label, pl.scan_parquet(wt.path, glob=False)


def identity_file(
    workspace: Path, name: str, required: bool, week: str | None = None
) -> pl.LazyFrame | None:
    """An identity file; with `week`, that week's copy from identity/history when it exists
    (a pack of an older week holds that week's identifiers)."""
    path = Layout(workspace).identity_of_week(name, week)
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing; run `segments run` first.")
        return None
    return pl.scan_parquet(path, glob=False)


def _tags_metadata(path: Path) -> dict[str, str]:
    try:
        return parquet_metadata(path)
    except Exception:
        return {}


def append_log(workspace: str | Path, record: Mapping[str, Any]) -> Path:
    """Append one record to the workspace's export log."""
    return Layout(workspace).append_export_log(record)


def read_log(workspace: str | Path) -> list[dict[str, Any]]:
    """Every record of the workspace's export log, oldest first ([] when none)."""
    return Layout(workspace).read_export_log()


@dataclass(frozen=True)
class ExportPlan:
    """A pack selected for export in one workspace week, with every size and privacy check
    passed: what `export_pack` writes from."""

    workspace: Path
    pack: PackDef
    packs: dict[str, PackDef]
    week: WeekTags
    selection: Selection

    @property
    def tags(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.week.path, glob=False)


def plan_export(
    workspace: str | Path,
    name: str,
    platforms: tuple[str, ...] | list[str] = (),
    week: str | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> ExportPlan:
    """Resolve pack `name`, check it may go to `platforms`, select it in the week (default the
    latest) and check its size against `min_size` / `max_size` and that nobody opted out is in
    it. Raises ExportError (one line) when any check fails."""
    pack, packs = pack_and_packs(name, audiences)
    check_platforms(pack, platforms)
    wt = week_tags(workspace, week)
    return plan_from_tags(workspace, pack, packs, wt, pl.scan_parquet(wt.path, glob=False))


def check_platforms(pack: PackDef, platforms: tuple[str, ...] | list[str]) -> None:
    """ExportError (one line) for an unknown platform or one the pack is not meant for."""
    for platform in platforms:
        get_exporter(platform)  # unknown platform: ExportError listing the valid ones
        if pack.platforms and platform != "parquet" and platform not in pack.platforms:
            raise ExportError(
                f"pack '{pack.name}' is not meant for {platform} (its platforms: "
                f"{', '.join(pack.platforms)}); nothing written."
            )


def plan_from_tags(
    workspace: str | Path,
    pack: PackDef,
    packs: Mapping[str, PackDef],
    wt: WeekTags,
    tags: pl.LazyFrame,
) -> ExportPlan:
    """`plan_export` over tags already at hand (`wt` names where they came from): select the
    pack, check its size and that nobody opted out is in it. `segments serve` plans from the
    live version it holds in memory, which a later refresh may have removed from disk."""
    sel = select_pack(tags, pack, packs)
    final = sel.counts["final"]
    if final < pack.min_size:
        raise ExportError(
            f"pack '{pack.name}' {wt.label}: {final:,} people left ({sel.describe()}), below "
            f"its min_size of {pack.min_size:,}; nothing written."
        )
    if pack.max_size is not None and final > pack.max_size:
        raise ExportError(
            f"pack '{pack.name}' {wt.label}: {final:,} people ({sel.describe()}), above its "
            f"max_size of {pack.max_size:,}; nothing written."
        )
    # Defence in depth: nobody opted out may leave, whatever the selection did.
    leaked = (
        tags.select(pl.col("one_id").cast(pl.String), pl.col(OPTED_OUT).cast(pl.Boolean))
        .filter(pl.col(OPTED_OUT).fill_null(True))
        .filter(pl.col("one_id").is_in(sel.frame.get_column("one_id").implode()))
        .select(pl.len())
        .collect()
        .item()
    )
    if leaked:
        raise ExportError(
            f"pack '{pack.name}': {leaked:,} opted-out people selected; nothing written."
        )
    return ExportPlan(Path(workspace), pack, dict(packs), wt, sel)


def platform_hash_columns(platform: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    exporter = get_exporter(platform)
    parsed = exporter.parse_options(dict(options))
    used = {s.column for o in exporter.selected_outputs(parsed) for s in o.sources}
    return tuple(c for c in PHONE_HASHES if c in used)


def plan_members(plan: ExportPlan, hash_columns: tuple[str, ...] = PHONE_HASHES) -> pl.DataFrame:
    """`pack_members` of a plan, from the workspace's identity files."""
    if not plan.week.one_id_map.is_file():
        raise DataError(f"{plan.week.one_id_map}: missing; run `segments run` first.")
    one_id_map = pl.scan_parquet(plan.week.one_id_map, glob=False)
    phone_hashes = identity_file(plan.workspace, "phone_hashes.parquet", required=False)
    return pack_members(plan.selection, one_id_map, phone_hashes, hash_columns)


def export_plan(
    plan: ExportPlan,
    platform: str,
    to: str | Path,
    options: Mapping[str, Any] | None = None,
    members: pl.DataFrame | None = None,
) -> ExportManifest:
    """Write a planned pack for `platform` into `to`, its holdout and a log record (see
    `export_pack`). `members`: the plan's members frame when already built (with every phone
    hash column the platform reads)."""
    pack, packs, wt, sel = plan.pack, plan.packs, plan.week, plan.selection
    exporter = get_exporter(platform)
    opts: dict[str, Any] = dict(options or {})
    parsed = exporter.parse_options(opts)
    if members is None:
        members = plan_members(plan, platform_hash_columns(platform, opts))
    opts["min_size"] = max(pack.min_size, exporter.effective_min_size(parsed))
    def_hash = definition_hash(pack, packs)
    config_hash = _tags_metadata(wt.path).get("segments.config_hash")
    if platform == "parquet":
        meta = {
            "segments.pack": pack.name,
            "segments.week": wt.label,
            "segments.definition": json.dumps(
                definition(pack, packs), sort_keys=True, ensure_ascii=False
            ),
            "segments.definition_hash": def_hash,
            "segments.filter": pack.where or "",
            "segments.rule": sel.rule,
            "segments.counts": json.dumps(sel.counts),
            "segments.holdout_share": repr(pack.holdout),
            "segments.holdout_size": str(sel.counts["holdout"]),
        }
        if sel.info:
            meta["segments.info"] = json.dumps(sel.info, sort_keys=True, default=str)
        if config_hash:
            meta["segments.config_hash"] = config_hash
        opts["metadata"] = {**dict(opts.get("metadata") or {}), **meta}

    out_dir = Path(to)
    manifest = exporter.export(members, pack.name, wt.label, out_dir, opts)

    holdout_file = None
    if sel.counts["holdout"]:
        holdout_file = Layout(plan.workspace).holdout(pack.name, wt.label)
        write_parquet(
            sel.holdout,
            holdout_file,
            metadata={
                "segments.pack": pack.name,
                "segments.week": wt.label,
                "segments.holdout_share": repr(pack.holdout),
            },
        )
    manifest_path = out_dir / f"{pack.name}_{wt.label}_{platform}_manifest.json"
    record = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pack": pack.name,
        "week": wt.label,
        "platform": platform,
        "out_dir": str(out_dir.resolve()),
        "rule": sel.rule,
        "definition_hash": def_hash,
        "config_hash": config_hash,
        "counts": sel.counts,
        "info": sel.info,
        "holdout_share": pack.holdout,
        "holdout_size": sel.counts["holdout"],
        "holdout_file": str(holdout_file) if holdout_file else None,
        "people": manifest.people,
        "people_exportable": manifest.people_exportable,
        "min_size": manifest.min_size,
        "files": [
            {"path": f.path, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows}
            for f in manifest.files
        ],
        "manifest": {
            "path": manifest_path.name,
            "sha256": sha256_file(manifest_path) if manifest_path.is_file() else None,
        },
        "options": manifest.options,
        "warnings": list(manifest.warnings),
    }
    append_log(plan.workspace, record)
    return manifest


def export_pack(
    workspace: str | Path,
    name: str,
    platform: str,
    to: str | Path,
    week: str | None = None,
    options: Mapping[str, Any] | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> ExportManifest:
    """Select pack `name` in `workspace`'s week (default latest) and export it for `platform`.

    Writes the platform's files and manifest into `to`, the holdout one_ids to
    `OUT/exports/holdouts/<pack>_<week>.parquet` (when the pack holds people out), and appends a
    record (pack, week, platform, time, counts, files with sha256) to `OUT/exports/log.jsonl`.
    The `parquet` platform's file carries the definition, rule, week, counts, holdout and
    config hash as key-value metadata (no timestamp: re-exports are byte-identical).
    `audiences`: a file or the packs themselves (default: the shipped configs/audiences.toml).
    Raises ExportError (one line, nothing written) when the pack is not meant for `platform`,
    holds fewer than its `min_size` people (or the platform's minimum) or more than `max_size`.
    """
    plan = plan_export(workspace, name, (platform,), week, audiences)
    return export_plan(plan, platform, to, options)


def export_pack_all(
    workspace: str | Path,
    name: str,
    platforms: tuple[str, ...] | list[str],
    to: str | Path,
    week: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> dict[str, ExportManifest]:
    """`export_pack` to several platforms from one selection: `to/<platform>/` each.

    `options`: per platform, e.g. `{"tencent": {"openid_app_id": "wx..."}}`. Every platform is
    checked before anything is written; a platform whose own minimum is not met raises
    ExportError after the platforms before it were written (each has its log record).
    """
    plan = plan_export(workspace, name, tuple(platforms), week, audiences)
    options = options or {}
    needed = tuple(
        c
        for c in PHONE_HASHES
        if any(c in platform_hash_columns(p, options.get(p, {})) for p in platforms)
    )
    members = plan_members(plan, needed)
    return {
        p: export_plan(plan, p, Path(to) / p, options.get(p), members=members) for p in platforms
    }
