"""Wires the stages: ingest -> person state -> identity -> the tag build -> outputs.

`run` builds a week (or several); `refresh` keeps the live table as of the newest data;
`validate_inputs` checks inputs without building. Where each output goes is `segments.layout`;
how it is written, `segments.outputs` and `segments.live`; what is reported, `segments.runs`.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import polars as pl

from segments import live
from segments.build import Learned, aging, build_tags, inputs_from_state, round_money
from segments.clustering import ClusterModelState
from segments.config import SegmentsConfig
from segments.contract import KNOWN_EVENTS, TABLES
from segments.engine import Executor, LocalExecutor
from segments.errors import ConfigError, DataError, SegmentsError, StageError
from segments.identity import (
    IdentityResult,
    NodeCache,
    attach_one_id,
    build_identity,
    map_token_of,
    wait_for_saves,
)
from segments.ingest import IngestResult, ingest
from segments.ingest.adapters import Adapter
from segments.ingest.parse import mask_value
from segments.io import (
    WorkspaceLock,
    check_paths,
    clear_stale_temps,
    read_json,
    write_json,
    write_parquet,
)
from segments.layout import Layout
from segments.outputs import tags_metadata, write_identity, write_rejects, write_week
from segments.progress import Progress, peak_rss_mib
from segments.runs import (
    LiveResult,
    WeekResult,
    code_digest,
    redacted_config,
    run_id,
    versions,
)
from segments.stages.interests import vocabulary_coverage
from segments.stages.rfm import snapshot_from_panel, weekly_panel
from segments.state import FoldReport, State, StateStore, fold
from segments.state.rows import ROW_TABLES
from segments.taxonomy import Taxonomy, load_taxonomy
from segments.weeks import AsOf, Day, Week, latest_complete_week, week_range


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
        encoding=cfg.ingest.encoding,
        identity=cfg.identity,
    )


def validate_inputs(cfg: SegmentsConfig, input_dir: Path, adapter: str | None = None) -> dict:
    """Validate without building: per-table counts, the top reject reasons and how much of the
    input the taxonomy reads an interest in (`interests.vocabulary_coverage`). The tables are
    spooled to a temporary folder, so a brand-sized input is validated in bounded memory."""
    with tempfile.TemporaryDirectory(prefix="segments-validate-") as tmp:
        result = _ingest(cfg, input_dir, adapter, None, spool=Path(tmp) / "tables")
        taxonomy = load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
        coverage = vocabulary_coverage(
            {t: result.scan(t) for t in ROW_TABLES}, taxonomy, cfg=cfg.interests
        )
        unknown = _unknown_events(result.scan("events"))
    for entry in coverage.values():  # a name shown is never a phone (a shifted column)
        for c in entry.get("categories", {}).get("top_without_interest", []):
            c["category"] = mask_value(c["category"], is_phone=False)
    tables = {name: c.to_dict() for name, c in result.counts.items()}
    unusable = [name for name, c in result.counts.items() if c.accepted == 0]
    return {
        "input": str(input_dir),
        "tables": tables,
        "identifier_rejects": result.identifier_rejects.height,
        "unusable": unusable,
        "reconciles": all(c.reconciles() for c in result.counts.values()),
        "interests": coverage,
        "unknown_events": unknown,
    }


def _unknown_events(events: pl.LazyFrame | None, top: int = 10) -> dict[str, int]:
    """The event names outside the contract's known events (kept; they weigh only where the
    config names them): the `top` most common with their rows, most first, then by name; a
    name shown is never a phone."""
    if events is None:
        return {}
    counts = (
        events.filter(~pl.col("event").is_in(list(KNOWN_EVENTS)))
        .group_by("event")
        .len()
        .sort(["len", "event"], descending=[True, False])
        .head(top)
        .collect()
    )
    return {mask_value(e, is_phone=False) or "": int(n) for e, n in counts.iter_rows()}


def _week_tables(
    ingested: IngestResult, week: AsOf
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


def _max_timestamp(result: IngestResult, until: datetime | None = None) -> datetime:
    """The newest time of an order, event or message (not after `until`, when given)."""
    best = None
    for name in ROW_TABLES:
        lf = result.scan(name)
        col = TABLES[name].time_column
        if lf is not None and col:
            if until is not None:
                lf = lf.filter(pl.col(col) <= until)
            m = lf.select(pl.col(col).max()).collect().item()
            if m is not None and (best is None or m > best):
                best = m
    if best is None:
        raise DataError("no timestamps in orders, events or messages: pass --as-of.")
    return best


def _default_week(cfg: SegmentsConfig, ingested: IngestResult, progress: Progress) -> Week:
    """The latest complete week of the data, without --as-of. A row later than now (a mistyped
    year, a wrong clock upstream) does not move it: the week is that of the newest row up to
    now, and the later rows are counted after the as-of (`after_as_of`), not read."""
    newest, clock = _max_timestamp(ingested), live.now(cfg.run.timezone)
    if newest > clock:
        week = latest_complete_week(_max_timestamp(ingested, until=clock))
        progress.note(
            f"run: input rows as late as {newest}, after now ({clock:%Y-%m-%d %H:%M}): as of "
            f"{week.label}, the week of the newest row before now (--as-of chooses another)"
        )
        return week
    return latest_complete_week(newest)


def _previous_clusters(layout: Layout, week: Week) -> ClusterModelState | None:
    """The clustering state of the latest week built before `week`."""
    path = layout.previous_state(week.label, "clustering")
    return ClusterModelState.from_json(path.read_text(encoding="utf-8")) if path else None


def _stage_error(stage: str, label: str, e: Exception) -> StageError:
    return StageError(f"stage '{stage}' failed for {label}: {type(e).__name__}: {e}")


def _fold(
    cfg: SegmentsConfig,
    ingested: IngestResult,
    layout: Layout,
    as_of: AsOf,
    taxonomy: Taxonomy,
    progress: Progress,
    touched: bool = True,
) -> tuple[State, FoldReport]:
    """Fold what is new into the person state and move it to `as_of` (with `touched`, the
    report names the identifiers whose rows changed: what a same-day refresh recomputes)."""
    with progress.stage("person state") as rec:
        try:
            pieces = ingested.row_pieces(layout.ingest_cache, ROW_TABLES, salt=cfg.digest())
            state, report = fold(
                StateStore(layout.state_dir),
                pieces,
                as_of,
                cfg,
                taxonomy,
                progress.note,
                touched=touched,
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise _stage_error("person state", as_of.label, e) from e
        rec.rows = sum(report.rows_added.values())
    return state, report


def _identity(
    cfg: SegmentsConfig,
    ingested: IngestResult,
    tables: dict[str, list[pl.LazyFrame]],
    layout: Layout,
    as_of: AsOf,
    previous: Path | None,
    executor: Executor,
    progress: Progress,
) -> IdentityResult:
    """The one global step: every identifier seen up to `as_of`, grouped into people."""
    with progress.stage("identity") as rec:
        try:
            pieces = ingested.identity_pieces(as_of.end, layout.ingest_cache)
            ident = build_identity(
                {k: pl.concat(v) for k, v in tables.items()},
                cfg.identity,
                # scanned: last week's map never sits in memory twice
                previous=pl.scan_parquet(previous, glob=False) if previous else None,
                week_label=as_of.label,
                # a refresh steps new one_ids as its week's build does: the same person, the
                # same one_id, whichever of them assigns it
                salt=as_of.week.label if isinstance(as_of, Day) else as_of.label,
                # the graph's components where the engine finds them (scipy here, or Spark)
                components=executor.components_finder(),
                node_cache=NodeCache(layout.identity_cache, pieces) if pieces is not None else None,
                previous_token=map_token_of(previous) if previous else None,
                # the kept graph is written while the tags are built: the caller waits for it
                # before it publishes (`IdentityResult.wait_saved`)
                save_in_background=True,
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise _stage_error("identity", as_of.label, e) from e
        rec.rows = ident.one_id_map.height
    return ident


# ---------------------------------------------------------------------------------------------
# A weekly build


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
    builds the full tag table of every week instead. The files read before are not read again:
    the person state (`segments.state`) holds them, and only what is new is folded in."""
    progress = progress or Progress(quiet=True)
    executor = executor or LocalExecutor()
    out_dir = Path(out_dir)
    if as_of and weeks:
        raise ConfigError("give --as-of or --weeks, not both.")
    # Parse the weeks before anything is read or written: a typo costs nothing.
    asked = week_range(weeks) if weeks else [Week.parse(as_of)] if as_of else None
    check_paths(input_dir, out_dir)
    layout = Layout(out_dir)
    with WorkspaceLock(out_dir):
        clear_stale_temps(out_dir)  # what a killed run left half-written
        shutil.rmtree(layout.staging_tables, ignore_errors=True)
        try:
            return _run(cfg, input_dir, layout, asked, adapter, progress, executor, full_history)
        finally:
            wait_for_saves()  # a failed build's kept graph is not left half-written
            shutil.rmtree(layout.staging_tables, ignore_errors=True)


def _run(
    cfg: SegmentsConfig,
    input_dir: Path,
    layout: Layout,
    asked: list[Week] | None,
    adapter: str | None,
    progress: Progress,
    executor: Executor,
    full_history: bool,
) -> list[WeekResult]:
    started = time.perf_counter()
    ingested = _read(cfg, input_dir, adapter, layout, progress)
    targets = asked or [_default_week(cfg, ingested, progress)]
    builds = targets if (full_history or len(targets) == 1) else targets[-1:]
    results = [
        _build_week(cfg, ingested, week, layout, progress, started, executor) for week in builds
    ]
    if len(targets) > 1:
        with progress.stage(f"rfm history ({len(targets)} weeks from the panel)") as rec:
            rec.rows = _rfm_history(cfg, ingested, layout, targets)
    return results


def _read(
    cfg: SegmentsConfig, input_dir: Path, adapter: str | None, layout: Layout, progress: Progress
) -> IngestResult:
    """Ingest (each input file validated once, then read from the cache) and write rejects."""
    with progress.stage("ingest") as rec:
        ingested = _ingest(
            cfg,
            input_dir,
            adapter,
            progress,
            spool=layout.staging_tables,
            cache=layout.ingest_cache,
        )
        rec.rows = sum(c.accepted for c in ingested.counts.values())
        if ingested.reused:
            progress.note(f"ingest: {ingested.reused} input file(s) unchanged, read from the cache")
    with progress.stage("write rejects") as rec:
        rec.rows = write_rejects(ingested, layout)
    return ingested


def _rfm_history(
    cfg: SegmentsConfig, ingested: IngestResult, layout: Layout, weeks: list[Week]
) -> int:
    """The weekly panel (one row per person and week with an order) and, from it alone, the RFM
    snapshot of every week. People are those of the last week's identity map."""
    orders = ingested.scan("orders")
    if orders is None:
        return 0
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
    layout: Layout,
    progress: Progress,
    started: float,
    executor: Executor,
) -> WeekResult:
    rid = run_id(week.label)
    taxonomy = load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
    tables, after = _week_tables(ingested, week)
    # a weekly build recomputes everyone: the identifiers a fold touched are not gathered
    state, folded = _fold(cfg, ingested, layout, week, taxonomy, progress, touched=False)
    ident = _identity(
        cfg,
        ingested,
        tables,
        layout,
        week,
        layout.previous_one_id_map(week.label),
        executor,
        progress,
    )
    identifiers = ident.one_id_map.height
    with progress.stage("write identity map") as rec:
        ident, people = write_identity(
            ident, layout.identity_history(week.label), layout.identity_dir
        )
        rec.rows = identifiers

    with progress.stage("tags") as rec:
        try:
            built = build_tags(
                cfg,
                inputs_from_state(state, week, cfg, tables.get("consent", [])),
                layout.one_id_map,
                week,
                progress,
                layout.staging(week.label),
                executor,
                taxonomy=taxonomy,
                previous_clusters=_previous_clusters(layout, week),
                phone_hashes=pl.scan_parquet(layout.phone_hashes, glob=False),
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise _stage_error("tags", week.label, e) from e
        rec.rows = built.tags.height
    ident.wait_saved()
    with progress.stage("write tags"):
        tags_path = write_week(built, cfg, taxonomy, layout, week.label)

    tags = built.tags
    result = WeekResult(
        week=week,
        out_dir=layout.root,
        run_id=rid,
        counts=ingested.counts,
        after_as_of=after,
        people=people,
        identifiers=identifiers,
        linkage_rate=float(ident.stats.get("linkage_rate", 0.0)),
        tags_written=tags.height,
        tag_columns=tags.width,
        high_value=_count(tags, "is_high_value"),
        coupon_hunters=_count(tags, "is_coupon_hunter"),
        stages=[r.to_dict() for r in progress.records],
        tags_path=tags_path,
        state=folded.to_dict(),
    )
    manifest = {
        "run_id": rid,
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
        # how many identifiers and edges the graph's guards evaluated (all of them, or those of
        # the components the new pieces touched: `identity.incremental`)
        "identity_graph": ident.stats.get("graph"),
        # what the person state folded in and took out (`segments.state.fold`)
        "state": result.state,
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "seconds": round(time.perf_counter() - started, 3),
        "config_hash": cfg.digest(),
        "config": redacted_config(cfg),
        "versions": versions(),
        "outputs": {"tags": str(tags_path), "one_id_map": str(layout.one_id_map)},
        "people": result.people,
        "linkage_rate": result.linkage_rate,
    }
    result.manifest = write_json(manifest, layout.run_manifest(rid))
    return result


def _count(tags: pl.DataFrame, flag: str) -> int:
    return int(tags.get_column(flag).sum()) if flag in tags.columns else 0


def load_stats(out_dir: Path) -> dict:
    return read_json(Layout(out_dir).identity_stats)


# ---------------------------------------------------------------------------------------------
# The live table


def refresh(
    cfg: SegmentsConfig,
    input_dir: Path,
    workspace: Path,
    *,
    adapter: str | None = None,
    progress: Progress | None = None,
    executor: Executor | None = None,
    audiences: str | Path | None = None,
    touched_only: bool = True,
) -> LiveResult:
    """Fold the files that landed since the last build into the person state and write the
    live table as of the day of the newest input row, with the cut points, models and clusters
    of the latest weekly build (`segments.live`); re-export the packs marked for refresh. With
    the same input files and config as the live table in force, nothing is read. A refresh at
    the same as-of as the version in force recomputes only the people whose inputs changed
    (`live.increment`); `touched_only=False` recomputes everyone (the same table)."""
    progress = progress or Progress(quiet=True)
    executor = executor or LocalExecutor()
    layout = Layout(workspace)
    check_paths(input_dir, workspace, "--workspace")
    week = layout.resolve_week()  # DataError when no week is built: run `segments run` first
    with WorkspaceLock(layout.root):
        clear_stale_temps(layout.root)
        live.sweep(layout)  # what a killed refresh left unpublished
        listing = live.input_listing(input_dir)
        if live.unchanged(layout, listing, cfg.files_digest(), week):
            manifest = read_json(layout.current("manifest.json"))
            return LiveResult(
                as_of=Day(date.fromisoformat(manifest["as_of"])),
                based_on=manifest["based_on_week"],
                newest_row=None,
                refreshed_at=live.now(cfg.run.timezone),
                people=manifest.get("people", 0),
                tags_path=layout.current("tags.parquet"),
                unchanged=True,
            )
        shutil.rmtree(layout.staging_tables, ignore_errors=True)
        try:
            return _refresh(
                cfg, input_dir, layout, week, listing, adapter, progress, executor, audiences,
                touched_only,
            )  # fmt: skip
        finally:
            wait_for_saves()  # a failed refresh's kept graph is not left half-written
            shutil.rmtree(layout.staging_tables, ignore_errors=True)


def _refresh(
    cfg: SegmentsConfig,
    input_dir: Path,
    layout: Layout,
    week: str,
    listing: list,
    adapter: str | None,
    progress: Progress,
    executor: Executor,
    audiences: str | Path | None,
    touched_only: bool,
) -> LiveResult:
    taxonomy = load_taxonomy(cfg.resolve(cfg.paths.taxonomy))
    ingested = _read(cfg, input_dir, adapter, layout, progress)
    newest, clock = _max_timestamp(ingested), live.now(cfg.run.timezone)
    if newest > clock:  # a row from the future (a wrong clock upstream) must not move the as-of
        progress.note(f"refresh: input rows as late as {newest}, after now; as of today")
    day = Day.of(min(newest, clock))
    tables, _ = _week_tables(ingested, day)
    state_base = live.state_token(StateStore(layout.state_dir).current())  # before the fold
    state, folded = _fold(cfg, ingested, layout, day, taxonomy, progress)
    previous = layout.identity_history(week) / "one_id_map.parquet"
    ident = _identity(cfg, ingested, tables, layout, day, previous, executor, progress)
    version = live.next_version(layout)
    folder = layout.current_dir / version
    with progress.stage("write identity map") as rec:
        rec.rows = ident.one_id_map.height
        ident, people = write_identity(ident, folder)
        week_token = map_token_of(previous)
        if ident.moved is not None and week_token:  # what the next refresh compares with
            live.write_moved(ident.moved, week_token, folder)
    learned: Learned = live.learned_from_week(layout, week)
    inc = (
        live.increment(
            layout,
            day.label,
            week,
            cfg.files_digest(),
            None if folded.rebuilt else folded.touched,
            folder / "one_id_map.parquet",
            ident.moved,
            week_token,
            state_base,
            quiet=[t for t in ROW_TABLES if not (folded.rows_added[t] or folded.rows_removed[t])],
            edges=lambda old: (
                aging.edge_identifiers(state.scan, old, day, cfg)
                if aging.can_age(old, day, cfg)
                else None
            ),
        )
        if touched_only
        else None
    )
    with progress.stage("tags") as rec:
        try:
            built = build_tags(
                cfg,
                inputs_from_state(state, day, cfg, tables.get("consent", [])),
                folder / "one_id_map.parquet",
                day,
                progress,
                layout.staging(day.label),
                executor,
                taxonomy=taxonomy,
                phone_hashes=pl.scan_parquet(layout.phone_hashes, glob=False),
                learned=learned,
                touched=inc.touched if inc is not None else None,
            )
            tags = (
                live.merged(
                    inc, built, age=_ager(inc, day, cfg, learned, taxonomy, progress, built.renewed)
                )
                if inc is not None
                else built.tags
            )
        except SegmentsError:
            raise
        except Exception as e:
            raise _stage_error("tags", day.label, e) from e
        rec.rows = built.tags.height
    recomputed = built.recomputed.height if built.recomputed is not None else tags.height
    aged_from = inc.aged_from.label if inc and inc.aged_from else None
    aged = f", the others aged from {aged_from}" if aged_from else ""
    renewed = built.renewed  # (less those the build recomputed after all)
    with_state = renewed.one_ids.height if renewed is not None else None
    if with_state is not None and aged_from:
        aged += f" ({with_state:,} with the state's moved counts, sums and last times)"
    elif with_state:  # the same day: the people whose events alone came or went
        aged = f", {with_state:,} aged with the state's moved counts, sums and last times"
    progress.note(f"refresh: tags of {recomputed:,} of {tags.height:,} people recomputed{aged}")
    refreshed_at = live.now(cfg.run.timezone)
    newest = state.newest()
    with progress.stage("write live table"):
        write_parquet(tags, folder / "tags.parquet", metadata=tags_metadata(cfg, day.label))
        live.write_global_tables(built, folder)
        live.write_side_tables(inc, built, tags, folder, renewed)
        manifest = live.live_manifest(
            day.label,
            week,
            newest,
            refreshed_at,
            {
                "version": folder.name,
                "people": people,
                "config_hash": cfg.files_digest(),
                "input_listing": listing,
                "state": folded.to_dict(),
                "state_token": live.state_token(state.generation),
                "people_recomputed": recomputed,
                "code_digest": code_digest(),
                # the version of an earlier day whose other people were aged to this one
                "aged_from": aged_from,
                "people_aged_with_state": with_state,
            },
        )
        write_json(manifest, folder / "manifest.json")
        ident.wait_saved()
        live.publish(layout, version)
    with progress.stage("refresh packs") as rec:
        packs = live.export_refresh_packs(
            layout,
            version,
            audiences,
            {k: manifest[k] for k in ("as_of", "newest_row", "refreshed_at", "data_age_seconds")},
        )
        rec.rows = len(packs)
    return LiveResult(
        as_of=day,
        based_on=week,
        newest_row=newest,
        refreshed_at=refreshed_at,
        people=people,
        tags_path=layout.current("tags.parquet"),
        packs=packs,
        stages=[r.to_dict() for r in progress.records],
        state=folded.to_dict(),
        manifest=layout.current("manifest.json"),
        recomputed=recomputed,
        aged_from=aged_from,
        aged_with_state=with_state,
    )


def _ager(
    inc: live.Increment,
    day: Day,
    cfg: SegmentsConfig,
    learned: Learned,
    taxonomy: Taxonomy,
    progress: Progress,
    renewed: aging.Renewed | None = None,
) -> Callable[[pl.DataFrame], pl.DataFrame]:
    """How `live.merged` ages the rows it keeps from a version of an earlier day, or on the
    same day those of the people whose events alone came or went (`renewed`: the people aged
    with the person state's aggregates, and those)."""

    label = (
        f"age the others from {inc.aged_from}"
        if inc.aged_from is not None
        else "age the people whose events alone moved"
    )

    def age(kept: pl.DataFrame) -> pl.DataFrame:
        with progress.stage(label) as rec:
            out = aging.aged(kept, inc.previous, day, cfg, learned, taxonomy, renewed)
            rec.rows = out.height
        return out

    return age


__all__ = [
    "LiveResult",
    "WeekResult",
    "load_stats",
    "refresh",
    "run",
    "validate_inputs",
]
