"""The live table: every person's tags as of the newest data, between two weekly builds.

`segments refresh` folds the files that landed since the last build into the person state
and writes the tags as of the day of the newest input row, applying what the latest weekly
build learned on everyone (`Learned`: cut points, fitted models, the interest graph, the
clusterer), so a live table moves people, not the yardsticks. It lives in versions:

```
WS/current/LIVE                 the version in force, e.g. v000042 (replaced in one rename)
WS/current/v000042/tags.parquet, one_id_map.parquet, manifest.json
WS/exports/live/<pack>/v000042/ the packs marked `refresh` in audiences.toml, re-exported
```

A version is written whole before `LIVE` names it; the previous version stays until the next
one lands, so a reader that opened it can finish (`segments serve` swaps between them).
The manifest records how old the data is: the newest input row and the time of the refresh.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import polars as pl
import pyarrow as pa

from segments.build import BuiltTags, Learned, Touched, aging
from segments.clustering import ClusterModelState
from segments.errors import SegmentsError
from segments.exprs import take_sorted
from segments.io import atomic_path, parquet_metadata, read_json, write_json, write_parquet
from segments.layout import Layout
from segments.runs import code_digest
from segments.stages.predict import BgNbdParams, GammaGammaParams
from segments.stages.scores import RfmCutPoints
from segments.state.store import Generation
from segments.weeks import Day

# What a live version keeps beside its tags for the next refresh of the same day (`Increment`).
GLOBAL_TABLES = ("community", "phone_counts")


def learned_from_week(layout: Layout, week: str) -> Learned:
    """What week `week` learned on everyone, read back from its files."""

    def state(name: str) -> str | None:
        path = layout.week_state(week, name)
        return path.read_text(encoding="utf-8") if path.is_file() else None

    cuts, bg, gg, clusters, promo, interests = (
        state("rfm_cut_points"),
        state("bgnbd"),
        state("gamma_gamma"),
        state("clustering"),
        state("promo"),
        state("interests"),
    )
    promo_state = json.loads(promo) if promo else {}
    # a week built before categories were learned learned none
    category_map = json.loads(interests).get("category_map") if interests else None
    graph = layout.week_file(week, "interest_graph.parquet")
    return Learned(
        cuts=RfmCutPoints.from_json(cuts) if cuts else None,
        bgnbd=BgNbdParams.from_json(bg) if bg else None,
        gamma_gamma=GammaGammaParams.from_json(gg) if gg else None,
        interest_graph=pl.read_parquet(graph, glob=False),
        clusters=ClusterModelState.from_json(clusters) if clusters else None,
        hunter_threshold=float(promo_state["hunter_threshold"]) if promo else None,
        hunter_caps=promo_state.get("caps"),
        hunter_priors=promo_state.get("priors"),
        low_value_cny=promo_state.get("low_value_cny"),
        category_map=category_map,
    )


def next_version(layout: Layout) -> str:
    """The name of the next live version (`v000001` first)."""
    current = layout.live_version()
    return f"v{(int(current[1:]) if current else 0) + 1:06d}"


def input_listing(input_dir: Path) -> list[list[Any]]:
    """Every input file with its size, modification and change times and inode: a refresh with
    the same listing as the last one has nothing new to read (checked before any file is
    hashed). The change time and inode are those the ingest cache checks too: a file
    corrected in place and given back its old size and modification time (`cp -p`, `rsync
    -t`) was once taken as unchanged."""
    out = []
    for path in sorted(p for p in Path(input_dir).rglob("*") if p.is_file()):
        st = path.stat()
        out.append(
            [
                str(path.relative_to(input_dir)),
                st.st_size,
                st.st_mtime_ns,
                st.st_ctime_ns,
                st.st_ino,
            ]
        )
    return out


def unchanged(layout: Layout, listing: list[list[Any]], config_hash: str, week: str) -> bool:
    """Whether the live table in force was built from exactly this input listing and config,
    on the latest weekly build (`week`), by this code (`runs.code_digest`): after a new weekly
    build, or a new release, the same files give a new table."""
    try:
        manifest = read_json(layout.current("manifest.json"))
    except SegmentsError:
        return False
    return (
        manifest.get("input_listing") == listing
        and manifest.get("config_hash") == config_hash
        and manifest.get("based_on_week") == week
        and manifest.get("code_digest") == code_digest()
    )


def publish(layout: Layout, version: str) -> None:
    """Make `version` (a complete folder) the live table: one rename of the pointer; then
    remove every version but this one and the one before it."""
    previous = layout.live_version()
    with atomic_path(layout.current_dir / "LIVE") as tmp:
        tmp.write_text(version + "\n", encoding="utf-8")
    keep = {version, previous}
    for folder in layout.current_dir.iterdir():
        if folder.is_dir() and folder.name not in keep:
            shutil.rmtree(folder, ignore_errors=True)
    for root in (
        (layout.exports_dir / "live").glob("*") if (layout.exports_dir / "live").is_dir() else []
    ):
        for folder in root.iterdir():
            if folder.is_dir() and folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)


def sweep(layout: Layout) -> None:
    """Remove live versions a killed refresh left unpublished (newer than the one in force)."""
    current = layout.live_version()
    if not layout.current_dir.is_dir():
        return
    for folder in layout.current_dir.iterdir():
        if (
            folder.is_dir()
            and folder.name.startswith("v")
            and (current is None or folder.name > current)
        ):
            shutil.rmtree(folder, ignore_errors=True)


def export_refresh_packs(
    layout: Layout,
    version: str,
    audiences: str | Path | Mapping[str, Any] | None,
    data_age: dict[str, Any],
) -> list[dict[str, Any]]:
    """Re-export every pack marked `refresh = [platforms]` from the live table into
    `exports/live/<pack>/<version>/<platform>/`, each with a `live.json` beside the platform's
    own manifest (the version, the live as-of, the newest input row, the refresh time). A pack
    that cannot go (too small, a missing option) is reported, and the others still go."""
    from segments.audiences import export_pack, load_audiences

    packs = load_audiences(audiences) if not isinstance(audiences, Mapping) else dict(audiences)
    out: list[dict[str, Any]] = []
    for pack in packs.values():
        for platform in pack.refresh:
            folder = layout.live_exports(pack.name) / version / platform
            record: dict[str, Any] = {"pack": pack.name, "platform": platform, "version": version}
            try:
                manifest = export_pack(
                    layout.root,
                    pack.name,
                    platform,
                    folder,
                    week="live",
                    options=pack.refresh_options.get(platform),
                    audiences=packs,
                )
            except SegmentsError as e:
                record["error"] = str(e).splitlines()[0]
                out.append(record)
                continue
            record |= {"people": manifest.people, "folder": str(folder), **data_age}
            write_json(record, folder / "live.json")
            out.append(record)
    return out


def live_manifest(
    as_of_label: str,
    based_on: str,
    newest: datetime | None,
    refreshed_at: datetime,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """The live table's manifest: its as-of, the week it applies, and how old its data is."""
    age = (refreshed_at - newest).total_seconds() if newest else None
    return {
        "as_of": as_of_label,
        "based_on_week": based_on,
        "newest_row": newest.isoformat() if newest else None,
        "refreshed_at": refreshed_at.isoformat(timespec="seconds"),
        "data_age_seconds": age,
        **extra,
    }


# ---------------------------------------------------------------------------------------------
# Refreshes within one day: only the people whose inputs changed


@dataclass(frozen=True)
class Increment:
    """A refresh at the same as-of as the live version in force, or a few days after it
    (`aged_from`), with the same week's learning, settings and code: the build recomputes
    `touched` people only, and the tags of everyone else are the previous version's, aged to
    the new day when it is one (`merged`). `dropped` are the previous version's one_ids that
    the new identity map no longer holds as they were (merged, split or renumbered)."""

    touched: Touched
    dropped: pl.DataFrame
    previous: Path  # the version folder in force
    # The as-of of the version in force when it is an earlier day: everyone not touched is
    # aged to the new day (`build.aging`), not copied.
    aged_from: Day | None = None


def state_token(generation: Generation | None) -> str | None:
    """A fingerprint of one committed generation of the person state (its number and a digest
    of its manifest): the state a live version was built from (`live_manifest`'s
    `state_token`), which the next refresh's fold must have started from for the rows it
    folds to be all that changed since (`increment`). None: no state yet."""
    if generation is None:
        return None
    blob = json.dumps(generation.manifest, sort_keys=True, default=str).encode()
    return f"{generation.number}:{hashlib.sha256(blob).hexdigest()[:16]}"


def increment(
    layout: Layout,
    as_of_label: str,
    week: str,
    config_hash: str,
    folded_ids: pl.DataFrame | None,
    new_map: Path,
    moved: pl.DataFrame | None = None,
    week_token: str | None = None,
    state_base: str | None = None,
    quiet: Collection[str] = (),
    edges: Callable[[Day], pl.DataFrame | None] | None = None,
) -> Increment | None:
    """The `Increment` of a refresh, or None when it must recompute everyone: no version in
    force, another as-of that cannot be aged (below), another week's learning, other settings
    or other code (`runs.code_digest`), a state folded from scratch (`folded_ids` None), a version without the global
    tables it compares with, or a version built from another generation of the person state
    than the one this refresh folded onto (`state_base`, `state_token`): `folded_ids` are the
    identifiers of the rows this fold took in or out (`FoldReport.touched`; without its `rows`
    mark, every one counts as read as a row), so they are all that changed only when
    the version in force saw the state this fold started from. A refresh killed after its
    fold and before it published, or a weekly build run in between, folds rows that no
    version in force holds.

    The identifiers that moved are those whose one_id differs between the map in force and
    `new_map`. With `moved` (the new map's identifiers whose one_id is not the week's map's,
    `IdentityResult.moved`) and the version in force's own such file written against the same
    week's map (`week_token`), only those two small sets are compared: an identifier in
    neither holds the week's one_id in both maps. Otherwise the two maps are joined whole.

    `quiet` names the tables whose rows the fold neither took in nor out; with them, the
    version in force's global tables that cannot have changed are reused (`same_globals`).

    A version in force as of an earlier day is moved to this one when `edges` gives, for its
    day, the identifiers with a row on a window edge since (None: it cannot be aged, see
    `aging.can_age`) and it kept the side tables aging reads: the people of those whose row is
    read as a row (`rows`) are recomputed with the others touched, the others' are aged with
    the state's aggregates (`Touched.aged_with_state`), everyone else is aged (`aged_from`)."""
    current = layout.live_version()
    if current is None or folded_ids is None:
        return None
    folder = layout.current_dir / current
    try:
        manifest = read_json(folder / "manifest.json")
    except SegmentsError:
        return None
    if (
        manifest.get("based_on_week") != week
        or manifest.get("config_hash") != config_hash
        or manifest.get("code_digest") != code_digest()
        or state_base is None
        or manifest.get("state_token") != state_base
        or not all((folder / f"{name}.parquet").is_file() for name in GLOBAL_TABLES)
    ):
        return None
    aged_from, edge_ids = None, None
    if manifest.get("as_of") != as_of_label:
        aged_from = aging.day_of(str(manifest.get("as_of")))
        if aged_from is None or edges is None or not aging.has_side_tables(folder):
            return None
        edge_ids = edges(aged_from)
        if edge_ids is None:
            return None
    ids = ["id_type", "id"]
    new = pl.read_parquet(new_map, columns=["one_id", *ids], glob=False)
    old_moved = _moved_from_week(folder, week_token) if moved is not None else None
    if moved is not None and old_moved is not None:
        changed = _moved_between(old_moved, moved)
    else:
        old = pl.read_parquet(folder / "one_id_map.parquet", columns=["one_id", *ids], glob=False)
        both = old.rename({"one_id": "old"}).join(new, on=ids, how="full", coalesce=True)
        changed = both.filter(pl.col("old").ne_missing(pl.col("one_id")))
        del old, both
    # identifiers whose rows pass 2 reads as rows: their people are recomputed; those whose
    # rows it reads only through the state's aggregates: their people can be aged with them
    # (`aging.Renewed`), when the version in force kept the side tables aging reads
    if "rows" not in folded_ids.columns:
        folded_ids = folded_ids.with_columns(pl.lit(True).alias("rows"))
    marked = [folded_ids.select(*ids, pl.col("rows").cast(pl.Boolean))]
    if edge_ids is not None:
        marked.append(edge_ids.select(*ids, "rows"))
    elif not aging.has_side_tables(folder):
        marked = [marked[0].with_columns(pl.lit(True).alias("rows"))]
    marks = pl.concat(marked, how="vertical_relaxed")
    rows = marks.filter("rows").select(ids).unique()
    by_rows = new.join(rows, on=ids, how="semi").select("one_id")
    renewed = new.join(marks.filter(~pl.col("rows")), on=ids, how="semi").select("one_id")
    dropped = changed.select(pl.col("old").alias("one_id")).drop_nulls().unique()
    # a one_id an identifier left and others still hold: that person lost an identifier (a
    # link taken back, a phone corrected) and is recomputed under it, not only dropped
    shrunk = new.filter(pl.col("one_id").is_in(dropped.get_column("one_id").implode()))
    touched = pl.concat(
        [by_rows, changed.select("one_id").drop_nulls(), shrunk.select("one_id")]
    ).unique()
    renewed = renewed.join(touched, on="one_id", how="anti").unique().sort("one_id")
    return Increment(
        touched=Touched(
            one_ids=touched,
            community=pl.read_parquet(folder / "community.parquet", glob=False),
            phone_counts=pl.read_parquet(folder / "phone_counts.parquet", glob=False),
            # a new day moves the global tables' windows: both are computed again
            unchanged=same_globals(quiet, changed) if aged_from is None else frozenset(),
            aged_with_state=renewed if edge_ids is not None or renewed.height else None,
        ),
        dropped=dropped,
        previous=folder,
        aged_from=aged_from,
    )


def same_globals(quiet: Collection[str], changed: pl.DataFrame) -> frozenset[str]:
    """The global tables of the version in force that a refresh at the same as-of cannot
    change (`build.Touched.unchanged`), given the tables whose rows did not come or go
    (`quiet`) and the identifiers whose one_id changed (`changed`: id_type, id, and `old`, the
    one_id in the map in force, null for an identifier new to it).

    Both tables read only kept rows (the same day: the same windows) and the one_ids of the
    identifiers on them. Every identifier on a kept row is a node of the map in force (a
    message's sender and the people it mentions, an order's buyer and receiver phone), so an
    identifier new to it is on none of them. So, when every changed identifier is new: the
    phone counts are unchanged when no order came or went, and the community features when no
    message came or went."""
    if changed.get_column("old").null_count() != changed.height:
        return frozenset()  # an identifier of the map in force moved: it may be on kept rows
    return frozenset(
        name for name, table in (("phone_counts", "orders"), ("community", "messages"))
        if table in quiet
    )  # fmt: skip


MOVED = "moved_from_week.parquet"  # a version's identifiers whose one_id is not the week's
WEEK_TOKEN_KEY = "segments.week_map_token"


def write_moved(moved: pl.DataFrame, week_token: str, folder: Path) -> None:
    """A version's `IdentityResult.moved` against the week's map whose token is `week_token`
    (the next refresh compares with it: `increment`). Phone hashes: owner only."""
    path = folder / MOVED
    write_parquet(moved, path, metadata={WEEK_TOKEN_KEY: week_token})
    path.chmod(0o600)


def _moved_from_week(folder: Path, week_token: str | None) -> pl.DataFrame | None:
    """The version's moved identifiers, when written against the week's map `week_token`."""
    path = folder / MOVED
    if not week_token or not path.is_file():
        return None
    try:
        if parquet_metadata(path).get(WEEK_TOKEN_KEY) != week_token:
            return None
        return pl.read_parquet(path, columns=["id_type", "id", "prev", "one_id"], glob=False)
    except (OSError, pl.exceptions.PolarsError, pa.ArrowException):
        return None


def _moved_between(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """The identifiers whose one_id differs between two maps, each known by the identifiers
    whose one_id is not the week's map's (`prev` is the week's one_id, null for a new one):
    `old` (the old one_id) and `one_id` (the new one), null where the map lacks it."""
    ids = ["id_type", "id"]
    a = old.select(*ids, pl.col("prev").alias("prev_a"), pl.col("one_id").alias("old"),
                   pl.lit(True).alias("in_a"))  # fmt: skip
    b = new.select(*ids, pl.col("prev").alias("prev_b"), "one_id", pl.lit(True).alias("in_b"))
    both = a.join(b, on=ids, how="full", coalesce=True)
    return both.select(
        *ids,
        pl.when(pl.col("in_a")).then(pl.col("old")).otherwise(pl.col("prev_b")).alias("old"),
        pl.when(pl.col("in_b")).then(pl.col("one_id")).otherwise(pl.col("prev_a")).alias("one_id"),
    ).filter(pl.col("old").ne_missing(pl.col("one_id")))


def merged(
    inc: Increment,
    built: BuiltTags,
    age: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
) -> pl.DataFrame:
    """The live table of an increment: the previous version's rows of everyone not touched or
    dropped (aged to the new day by `age` when the version is of an earlier day:
    `aging.aged`; on the same day, those of the people `built.renewed` names are aged by `age`
    with the state's aggregates), and the rows `built` recomputed; everyone's opt-out set again
    (consent is read whole every refresh)."""
    assert built.recomputed is not None and built.opted_out is not None
    prev = pl.read_parquet(inc.previous / "tags.parquet", glob=False)
    # one column replaced: the others are shared, not copied
    prev = prev.with_columns(
        pl.col("one_id").is_in(built.opted_out.get_column("one_id").implode()).alias("is_opted_out")
    )
    gone = pl.concat([inc.dropped, built.recomputed.select("one_id")]).unique()
    ids = prev.get_column("one_id")
    drop = ids.is_in(gone.get_column("one_id").implode())
    moved = None
    if inc.aged_from is not None:
        if age is None:
            raise ValueError("merged: a version of an earlier day is aged, and no `age` is given")
        # A filter keeps the previous table's order (by one_id, as every tag table is
        # written), so the recomputed rows are merged in: no sort of the whole table.
        kept = prev.filter(~drop)
        del prev, ids, drop  # not held beside the aged table (2M people: about 2 GiB)
        kept = age(kept)
    else:
        if built.renewed is not None and built.renewed.one_ids.height:
            # the same day: the people whose events alone came or went are aged with the
            # state's aggregates (`aging.Renewed`); they are merged in with the recomputed rows
            mine = ids.is_in(built.renewed.one_ids.get_column("one_id").implode()) & ~drop
            if mine.any():
                if age is None:
                    raise ValueError(
                        "merged: people are aged with the state, and no `age` is given"
                    )
                moved = age(prev.filter(mine))
                drop = drop | mine
        # one filter of the whole table, however many groups of people leave it
        kept = prev.filter(~drop)
        del prev, ids, drop
    fresh = built.tags.select(kept.columns)
    if moved is not None:
        fresh = pl.concat([fresh, moved.select(kept.columns)], how="vertical_relaxed")
    fresh = take_sorted(fresh, "one_id")
    if not kept.get_column("one_id").is_sorted():  # a table written by other means
        kept = take_sorted(kept, "one_id")
    return merge_in(kept, fresh)


# Up to this many recomputed rows are merged in by slicing the kept table around them; more
# go through `merge_sorted`. At 2M people x 120 tags, 2,000 rows: 1.4 s sliced, 4.4 s
# merged (both with the copy into one chunk that writing makes); 80,000 rows: 21 s sliced.
SLICE_MERGE_ROWS = 4096


def merge_in(kept: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """`kept` and `fresh` (same columns, each sorted by one_id, no one_id in both) as one table
    sorted by one_id, in one chunk. A few fresh rows are placed by binary search between
    slices of `kept` (no per-row comparison of the whole table)."""
    if fresh.height > SLICE_MERGE_ROWS or kept.height == 0:
        return kept.merge_sorted(fresh, key="one_id").rechunk()
    at = kept.get_column("one_id").search_sorted(fresh.get_column("one_id"), side="left")
    parts: list[pl.DataFrame] = []
    start = j = 0
    positions = at.to_list()
    while j < len(positions):
        p, k = positions[j], j
        while k < len(positions) and positions[k] == p:  # fresh rows between the same two
            k += 1
        parts += [kept.slice(start, p - start), fresh.slice(j, k - j)]
        start, j = p, k
    parts.append(kept.slice(start))
    return pl.concat(parts, rechunk=True)


def write_global_tables(built: BuiltTags, folder: Path) -> None:
    """The tables the next refresh of the same day compares with (phone hashes: owner only)."""
    for name in GLOBAL_TABLES:
        path = folder / f"{name}.parquet"
        write_parquet(built.global_tables[name], path)
        path.chmod(0o600)


def write_side_tables(
    inc: Increment | None,
    built: BuiltTags,
    tags: pl.DataFrame,
    folder: Path,
    renewed: aging.Renewed | None = None,
) -> None:
    """The side tables the next day's refresh ages people from (`aging.SIDE_TABLES`): the
    build's own when it computed everyone; for an increment, the version in force's rows of
    the people it kept and the build's of those it recomputed (none when the version in force
    kept none: the next day then recomputes everyone)."""
    if inc is None:
        tables = built.side
    elif built.recomputed is not None and aging.has_side_tables(inc.previous):
        keep = tags.select("one_id").join(built.recomputed, on="one_id", how="anti")
        # the previous version's people not kept: those `merged` left out of it
        gone = pl.concat([inc.dropped.get_column("one_id"), built.recomputed.get_column("one_id")])
        tables = aging.carried_side_tables(inc.previous, keep, built.side, renewed, gone)
    else:
        return
    if tables:
        aging.write_side_tables(tables, folder)


def now(timezone: str) -> datetime:
    """The refresh time on the brand's wall clock (naive, like every time in the data);
    `SEGMENTS_NOW` (an ISO time on that clock) fixes it for tests and replays."""
    fixed = os.environ.get("SEGMENTS_NOW")
    if fixed:
        return datetime.fromisoformat(fixed)
    return datetime.now(UTC).astimezone(ZoneInfo(timezone)).replace(tzinfo=None)


def manifest_json(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, ensure_ascii=False, indent=2, sort_keys=True, default=str)


__all__ = [
    "Increment",
    "export_refresh_packs",
    "increment",
    "input_listing",
    "learned_from_week",
    "live_manifest",
    "merge_in",
    "merged",
    "next_version",
    "now",
    "publish",
    "sweep",
    "unchanged",
    "write_global_tables",
    "write_moved",
    "write_side_tables",
]
