"""Wires the stages for one week: ingest -> identity -> per-user stages -> tags -> outputs.

This is the one module that collects LazyFrames and decides what is written where:

```
OUT/rejects/<table>.parquet, OUT/rejects/identifiers.parquet
OUT/identity/one_id_map.parquet, rejected_links.parquet, rejected_ids.parquet, changes.parquet,
             stats.json, phone_hashes.parquet, history/<WEEK>/...
OUT/weeks/<WEEK>/tags.parquet (+ the learned state of that week)
OUT/runs/<run_id>/manifest.json
```
"""

from __future__ import annotations

import hashlib
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import polars as pl

from segments import features
from segments.clustering import ClusterModelState, save_model
from segments.config import SegmentsConfig
from segments.contract import TABLES
from segments.engine import Executor, LocalExecutor
from segments.errors import ConfigError, DataError, SegmentsError, StageError
from segments.exprs import take_sorted
from segments.features import round_money
from segments.identity import IdentityResult, NodeCache, attach_one_id, build_identity
from segments.ingest import IngestResult, TableCounts, ingest
from segments.ingest.adapters import Adapter
from segments.io import (
    WorkspaceLock,
    atomic_path,
    clear_stale_temps,
    read_json,
    write_json,
    write_parquet,
)
from segments.layout import Layout
from segments.progress import Progress, peak_rss_mib
from segments.stages.rfm import snapshot_from_panel, weekly_panel
from segments.tags import REGISTRY_VERSION, tag_dictionary
from segments.taxonomy import load_taxonomy
from segments.weeks import Week, latest_complete_week, week_range


@dataclass
class WeekResult:
    week: Week
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
            "manifest": str(self.manifest) if self.manifest else None,
        }

    def describe(self) -> str:
        lines = [
            f"week {self.week.label}: {self.people:,} people (one_ids) from {self.identifiers:,} identifiers, "
            f"OneID linkage {self.linkage_rate:.1%}"
        ]
        lines.append(
            f"  tags: {self.tags_written:,} rows x {self.tag_columns} columns -> "
            f"{Layout(self.out_dir).tags(self.week.label)}"
        )
        lines.append(f"  high value: {self.high_value:,}   coupon hunters: {self.coupon_hunters:,}")
        for name, c in self.counts.items():
            after = self.after_as_of.get(name, 0)
            lines.append(
                f"  {name:<10} read {c.read:>9,}  accepted {c.accepted:>9,}  rejected {c.rejected:>7,}  "
                f"duplicates {c.duplicates:>6,}  skipped {c.skipped:>6,}  after as-of {after:>7,}"
            )
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


def _adapters(cfg: SegmentsConfig, forced: str | None) -> tuple[list[Adapter], Adapter | None]:
    known = cfg.adapters()
    chosen = None
    if forced:
        if forced not in known:
            raise ConfigError(
                f"unknown adapter '{forced}'; known adapters: {', '.join(sorted(known))}."
            )
        chosen = known[forced]
    return list(known.values()), chosen


def _ingest(
    cfg: SegmentsConfig,
    input_dir: Path,
    adapter: str | None,
    progress: Progress | None,
    spool: Path | None = None,
    cache: Path | None = None,
) -> IngestResult:
    taxonomy = load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
    adapters, forced = _adapters(cfg, adapter)
    return ingest(
        Path(input_dir),
        tz=cfg.run.timezone,
        adapters=adapters,
        forced_adapter=forced,
        categories=list(taxonomy.category_map()),
        virtual_prefixes=tuple(cfg.promo.virtual_prefixes),
        progress=progress.note if progress else None,
        spool=spool,
        cache=cache,
    )


def validate_inputs(cfg: SegmentsConfig, input_dir: Path, adapter: str | None = None) -> dict:
    """Validate without building: per-table counts and the top reject reasons. The tables are
    spooled to a temporary folder, so a brand-sized input is validated in bounded memory."""
    with tempfile.TemporaryDirectory(prefix="segments-validate-") as tmp:
        result = _ingest(cfg, input_dir, adapter, None, spool=Path(tmp) / "tables")
    tables = {name: c.to_dict() for name, c in result.counts.items()}
    unusable = [name for name, c in result.counts.items() if c.accepted == 0]
    return {
        "input": str(input_dir),
        "tables": tables,
        "identifier_rejects": result.identifier_rejects.height,
        "unusable": unusable,
        "reconciles": all(c.reconciles() for c in result.counts.values()),
    }


def describe_validation(report: dict) -> str:
    lines = [f"{report['input']}:"]
    for name, c in report["tables"].items():
        lines.append(
            f"  {name:<10} files {c['files']:>3}  read {c['read']:>9,}  accepted {c['accepted']:>9,}  "
            f"rejected {c['rejected']:>7,}  duplicates {c['duplicates']:>6,}  skipped {c['skipped']:>6,}"
        )
        for reason, n in list(c["reasons"].items())[:5]:
            lines.append(f"      {n:>7,}  {reason}")
    if report["identifier_rejects"]:
        lines.append(f"  identifiers rejected on kept rows: {report['identifier_rejects']:,}")
    for name in report["unusable"]:
        lines.append(f"  {name}: no usable row")
    return "\n".join(lines)


def _week_tables(
    ingested: IngestResult, week: Week
) -> tuple[dict[str, list[pl.LazyFrame]], dict[str, int]]:
    """Every table as its parts, cut at the end of `week`, and how many rows fell after it."""
    tables: dict[str, list[pl.LazyFrame]] = {}
    after: dict[str, int] = {}
    for name in ingested.names:
        on_disk = ingested.parts.get(name)
        parts = [part.scan() for part in on_disk] if on_disk else [ingested.tables[name].lazy()]
        col = TABLES[name].time_column
        if col is None:
            tables[name], after[name] = parts, 0
            continue
        late = pl.col(col) >= week.end
        tables[name] = [lf.filter(~late.fill_null(False)) for lf in parts]
        after[name] = int(
            pl.concat([lf.select(late.sum()) for lf in parts]).sum().collect().item() or 0
        )
    return tables, after


def _max_timestamp(result: IngestResult) -> datetime:
    best: datetime | None = None
    for name in ("orders", "events", "messages"):
        lf = result.scan(name)
        col = TABLES[name].time_column
        if lf is not None and col:
            m = lf.select(pl.col(col).max()).collect().item()
            if m is not None and (best is None or m > best):
                best = m
    if best is None:
        raise DataError("no timestamps in orders, events or messages: pass --as-of.")
    return best


def _previous_map(layout: Layout, week: Week) -> pl.LazyFrame | None:
    path = layout.previous_one_id_map(week.label)
    # scanned: last week's map never sits in memory twice
    return pl.scan_parquet(path, glob=False) if path else None


def _previous_clusters(layout: Layout, week: Week) -> ClusterModelState | None:
    """The clustering state of the latest week built before `week`."""
    path = layout.previous_state(week.label, "clustering")
    return ClusterModelState.from_json(path.read_text(encoding="utf-8")) if path else None


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("segments", "polars", "pyarrow", "scikit-learn", "scipy", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run(
    cfg: SegmentsConfig,
    input_dir: Path,
    out_dir: Path,
    *,
    as_of: str | None = None,
    weeks: str | None = None,
    adapter: str | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    full_history: bool = False,
) -> list[WeekResult]:
    """Build every output for the week holding `as_of`.

    With `weeks` (a range such as `2026-W01..2026-W47`) the RFM history of every week in the
    range comes from the weekly panel in one pass (`history/rfm_weekly.parquet`, no rescan of
    the orders per week) and the full tag table is built for the last week; `full_history`
    builds the full tag table of every week instead."""
    progress = progress or Progress(quiet=True)
    executor = executor or LocalExecutor()
    out_dir = Path(out_dir)
    if as_of and weeks:
        raise ConfigError("give --as-of or --weeks, not both.")
    # Parse the weeks before anything is read or written: a typo costs nothing.
    asked = week_range(weeks) if weeks else [Week.parse(as_of)] if as_of else None
    with WorkspaceLock(out_dir):
        clear_stale_temps(out_dir)  # what a killed run left half-written
        spool = Layout(out_dir).staging_tables
        shutil.rmtree(spool, ignore_errors=True)
        try:
            return _run(
                cfg, input_dir, out_dir, asked, adapter, progress, executor, full_history, spool
            )
        finally:
            shutil.rmtree(spool, ignore_errors=True)


def _run(
    cfg: SegmentsConfig,
    input_dir: Path,
    out_dir: Path,
    asked: list[Week] | None,
    adapter: str | None,
    progress: Progress,
    executor: Executor,
    full_history: bool,
    spool: Path,
) -> list[WeekResult]:
    started = time.perf_counter()
    layout = Layout(out_dir)
    with progress.stage("ingest") as rec:
        ingested = _ingest(
            cfg, input_dir, adapter, progress, spool=spool, cache=layout.ingest_cache
        )
        rec.rows = sum(c.accepted for c in ingested.counts.values())
        if ingested.reused:
            progress.note(f"ingest: {ingested.reused} input file(s) unchanged, read from the cache")
    with progress.stage("write rejects") as rec:
        for name, rejects in ingested.rejects.items():
            write_parquet(rejects, layout.rejects(name))
        write_parquet(ingested.identifier_rejects, layout.rejects("identifiers"))
        write_parquet(ingested.phone_hashes, layout.phone_hashes)
        # On disk now: the tag build reads it lazily (at brand scale it is 2M rows of hashes).
        ingested.phone_hashes = ingested.phone_hashes.clear()
        rec.rows = sum(r.height for r in ingested.rejects.values())
    targets = asked or [latest_complete_week(_max_timestamp(ingested))]
    results = []
    builds = targets if (full_history or len(targets) == 1) else targets[-1:]
    for week in builds:
        results.append(_build_week(cfg, ingested, week, out_dir, progress, started, executor))
    if len(targets) > 1:
        with progress.stage(f"rfm history ({len(targets)} weeks from the panel)") as rec:
            rec.rows = _rfm_history(cfg, ingested, out_dir, targets)
    return results


def _rfm_history(
    cfg: SegmentsConfig, ingested: IngestResult, out_dir: Path, weeks: list[Week]
) -> int:
    """The weekly panel (one row per person and week with an order) and, from it alone, the RFM
    snapshot of every week. People are those of the last week's identity map."""
    orders = ingested.scan("orders")
    if orders is None:
        return 0
    layout = Layout(out_dir)
    id_map = pl.scan_parquet(
        layout.identity_history(weeks[-1].label) / "one_id_map.parquet", glob=False
    )
    with_ids = attach_one_id(
        orders, id_map.select("one_id", "id_type", "id"), "buyer_id_type", "buyer_id"
    )
    panel = weekly_panel(with_ids.filter(pl.col("paid_at") < weeks[-1].end)).collect()
    write_parquet(panel.sort("one_id", "week_start"), layout.history("panel"))
    history = round_money(snapshot_from_panel(panel.lazy(), weeks, cfg.rfm).collect())
    write_parquet(history.sort("week", "one_id"), layout.history("rfm_weekly"))
    return history.height


def _build_week(
    cfg: SegmentsConfig,
    ingested: IngestResult,
    week: Week,
    out_dir: Path,
    progress: Progress,
    started: float,
    executor: Executor,
) -> WeekResult:
    run_id = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + week.label
    tables, after = _week_tables(ingested, week)
    layout = Layout(out_dir)

    def stage_error(stage: str, e: Exception) -> StageError:
        return StageError(f"stage '{stage}' failed for {week.label}: {type(e).__name__}: {e}")

    # -- identity: the one global step
    with progress.stage("identity") as rec:
        try:
            pieces = ingested.identity_pieces(week.end, layout.ingest_cache)
            ident: IdentityResult = build_identity(
                {k: pl.concat(v) for k, v in tables.items()},
                cfg.identity,
                previous=_previous_map(layout, week),
                week_label=week.label,
                # the graph's components where the engine finds them (scipy here, or Spark)
                components=executor.components_finder(),
                node_cache=NodeCache(layout.identity_cache, pieces) if pieces is not None else None,
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise stage_error("identity", e) from e
        rec.rows = identifiers = ident.one_id_map.height
        ident, people = _write_identity(ident, layout, week)

    # -- per-user stages
    with progress.stage("tags") as rec:
        try:
            built = features.build_tags(
                cfg,
                tables,
                layout.one_id_map,
                week,
                progress,
                layout.staging(week.label),
                executor,
                previous_clusters=_previous_clusters(layout, week),
                phone_hashes=pl.scan_parquet(layout.phone_hashes, glob=False),
                rows={
                    name: c.accepted - after.get(name, 0)
                    for name, c in ingested.counts.items()
                    if name in ("orders", "events", "messages")
                },
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise stage_error("tags", e) from e
        rec.rows = built.tags.height
    with progress.stage("write tags"):
        meta = {
            "segments.week": week.label,
            "segments.config_hash": cfg.digest(),
            "segments.engine_version": _versions()["segments"],
        }
        meta["segments.registry_version"] = REGISTRY_VERSION
        write_parquet(built.tags, layout.tags(week.label), metadata=meta)
        # The dictionary names the interest tags of the brand's taxonomy, as the table does.
        taxonomy = load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
        write_parquet(
            tag_dictionary(taxonomy), layout.week_file(week.label, "tag_dictionary.parquet")
        )
        for name, frame in built.extra_tables.items():
            write_parquet(frame, layout.week_file(week.label, f"{name}.parquet"), metadata=meta)
        for name, state in built.state.items():
            write_json(state, layout.week_state(week.label, name))
        if built.model is not None:
            with atomic_path(layout.week_file(week.label, "cluster_model.skops")) as tmp:
                save_model(built.model, tmp)

    tags = built.tags
    result = WeekResult(
        week=week,
        out_dir=out_dir,
        run_id=run_id,
        counts=ingested.counts,
        after_as_of=after,
        people=people,
        identifiers=identifiers,
        linkage_rate=float(ident.stats.get("linkage_rate", 0.0)),
        tags_written=tags.height,
        tag_columns=tags.width,
        high_value=int(tags.get_column("is_high_value").sum())
        if "is_high_value" in tags.columns
        else 0,
        coupon_hunters=int(tags.get_column("is_coupon_hunter").sum())
        if "is_coupon_hunter" in tags.columns
        else 0,
        stages=[r.to_dict() for r in progress.records],
    )
    manifest = {
        "run_id": run_id,
        "week": week.label,
        "as_of_end": week.end.isoformat(),
        "inputs": ingested.inputs,
        "tables": {
            k: {**v.to_dict(), "after_as_of": after.get(k, 0)} for k, v in ingested.counts.items()
        },
        "identifier_rejects": ingested.identifier_rejects.height,
        "input_files_from_cache": ingested.reused,
        "stages": result.stages,
        "identity_timings": {
            k: ident.stats.get(k) for k in ("seconds", "cpu_seconds") if k in ident.stats
        },
        # how many validated files identity read for its identifiers, and how many it took as
        # last run's aggregated nodes instead (`identity.NodeCache`)
        "identity_pieces": ident.stats.get("pieces"),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "seconds": round(time.perf_counter() - started, 3),
        "config_hash": cfg.digest(),
        "config": _redacted_config(cfg),
        "versions": _versions(),
        "outputs": {
            "tags": str(layout.tags(week.label)),
            "one_id_map": str(layout.one_id_map),
        },
        "people": result.people,
        "linkage_rate": result.linkage_rate,
    }
    result.manifest = write_json(manifest, layout.run_manifest(run_id))
    return result


def _redacted_config(cfg: SegmentsConfig) -> dict:
    """The config as recorded in a manifest: phone numbers in it (test numbers that are blocked
    as identifiers) appear only as their SHA-256, like every phone the engine writes."""
    dump = cfg.model_dump(mode="json")
    phones = dump.get("identity", {}).get("blocked_phones")
    if phones:
        dump["identity"]["blocked_phones"] = [
            "sha256:" + hashlib.sha256(p.encode()).hexdigest() for p in phones
        ]
    return dump


def _write_identity(
    ident: IdentityResult, layout: Layout, week: Week
) -> tuple[IdentityResult, int]:
    """Write the week's identity files; return `ident` with its frames sorted as written,
    except the map, which is returned empty: the per-user stages read it back from its file
    (`features.build_tags`), so the map (5 GiB at 10M people) is not held beside the tag table.
    The second value is the number of people (distinct one_ids) in the map.

    `ident`'s frames are emptied: each is sorted by moving its columns out (`take_sorted`)."""
    hist = layout.identity_history(week.label)
    written = {}
    for name in ("one_id_map", "rejected_links", "rejected_ids", "changes"):
        frame = getattr(ident, name)
        keys = [c for c, t in frame.schema.items() if not isinstance(t, pl.List)]
        frame = take_sorted(frame, keys) if frame.height else frame
        write_parquet(frame, hist / f"{name}.parquet")
        with atomic_path(
            layout.identity(f"{name}.parquet")
        ) as tmp:  # the same bytes: copied, not encoded
            shutil.copyfile(hist / f"{name}.parquet", tmp)
        written[name] = frame
    stats = _without_timings(ident.stats)
    write_json(stats, hist / "stats.json")
    write_json(stats, layout.identity_stats)
    people = written["one_id_map"].get_column("one_id").n_unique()  # sorted: a cheap count
    written["one_id_map"] = written["one_id_map"].clear()
    return replace(ident, **written), people


def _without_timings(stats: object) -> object:
    """Identity statistics minus the seconds they took and what it read from its cache: outputs
    must not change between two runs of the same week (those go to the run manifest)."""
    if isinstance(stats, dict):
        return {
            k: _without_timings(v)
            for k, v in stats.items()
            if k not in ("seconds", "cpu_seconds", "pieces")
        }
    return stats


def load_stats(out_dir: Path) -> dict:
    return read_json(Layout(out_dir).identity_stats)


__all__ = ["WeekResult", "describe_validation", "load_stats", "run", "validate_inputs"]
