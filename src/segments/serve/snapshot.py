"""The live table as `segments serve` holds it: one immutable snapshot per version, swapped whole.

A `Snapshot` is read once from `current/<version>/` into memory (tags, identity map, manifest)
with everything a request needs worked out at load: an index from each identifier to its
person, and every named pack's selection. A request takes the holder's snapshot once and reads
only it, so an answer is wholly one version, whatever a refresh does meanwhile (a refresh keeps
only the version in force and the one before it on disk; a snapshot never reads them again).

`LiveHolder` polls the `LIVE` pointer and, when it names a new version, loads that version
beside the one in force and then replaces the reference in one assignment: no restart, no
request waits for a load, no request sees half of a version.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from types import NoneType
from typing import Any

import polars as pl

from segments.audiences import (
    PackDef,
    Selection,
    adhoc_pack,
    load_audiences,
    preview,
    select_pack,
)
from segments.audiences.preview import BREAKDOWN_COLUMNS, NONE_KEY, preview_result
from segments.contract import normalize_phone, sha256_hex
from segments.errors import ConfigError, DataError, SegmentsError
from segments.io import read_json
from segments.layout import Layout
from segments.names import ID_TYPES
from segments.tags import tag_dictionary

log = logging.getLogger("segments.serve")

# Identifier types a person may be looked up by: the engine's id types and one_id itself.
ONE_ID = "one_id"
LOOKUP_TYPES = (ONE_ID, *ID_TYPES)
MAP_COLUMNS = ("one_id", "id_type", "id", "sources")


def phone_key(raw: str) -> str | None:
    """The engine's key of a phone as typed: sha256 of its 11 digits after the same
    normalisation as ingest (`contract.normalize_phone`: full-width digits, +86 / 0086, spaces
    and dashes dropped); None when it is not a mainland mobile number. The raw text is not kept.

    >>> phone_key("+86 138-0013-8000") == phone_key("13800138000")
    True
    """
    return pl.select(sha256_hex(normalize_phone(pl.lit(raw, dtype=pl.String)))).item()


def json_value(value: Any) -> Any:
    """A tag value as JSON can hold it: NaN and infinities become null, times ISO text."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): json_value(v) for k, v in value.items()}
    return value


@dataclass(frozen=True, eq=False)
class Snapshot:
    """One live version in memory. Never changed after `load_snapshot` (the preview memo only
    caches what the frozen fields give).

    tags: one row per one_id, sorted by one_id. id_map: one_id, id_type, id, sources, sorted by
    (id_type, id); `spans` gives each id type's rows in it. members / held_out: per tags row,
    the named packs that select the person, and those that hold them out (in pack order).
    """

    version: str
    manifest: dict[str, Any]
    tags: pl.DataFrame
    id_map: pl.DataFrame
    spans: dict[str, tuple[int, int]]
    packs: dict[str, PackDef]
    selections: dict[str, Selection]
    pack_errors: dict[str, SegmentsError]
    members: pl.Series
    held_out: pl.Series
    dictionary: list[dict[str, Any]]
    breakdown: pl.DataFrame
    sources: tuple[str, ...]
    one_id_keys: pl.Series | None
    loaded_at: float
    load_seconds: float
    _previews: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def as_of(self) -> str:
        return str(self.manifest["as_of"])

    @property
    def people(self) -> int:
        return self.tags.height

    # -- people --------------------------------------------------------------------------------
    def row_of(self, id_type: str, id: str) -> int | None:
        """The tags row of the person holding (id_type, id) (id already hashed for a phone);
        None when nobody does."""
        if id_type == ONE_ID:
            one_id = id
        else:
            span = self.spans.get(id_type)
            if span is None:
                return None
            start, end = span
            ids = self.id_map.get_column("id").slice(start, end - start)
            i = ids.search_sorted(id, side="left")
            if i >= ids.len() or ids[i] != id:
                return None
            one_id = self.id_map.get_column("one_id")[start + i]
        keys = self.tags.get_column("one_id")
        j = keys.search_sorted(one_id, side="left")
        if j >= keys.len() or keys[j] != one_id:
            return None
        return int(j)

    def rows_of(self, one_ids: pl.Series) -> pl.Series:
        """The tags rows of `one_ids` (all in the table): a binary search on the one_ids' 64-bit
        numbers when every one_id is the engine's `U` + 16 hex digits, else on the text."""
        if self.one_id_keys is not None:
            return self.one_id_keys.search_sorted(_one_id_numbers(one_ids))
        return self.tags.get_column("one_id").search_sorted(one_ids)

    def person(self, row: int) -> dict[str, Any]:
        """One person's answer: one_id, cluster, the packs they are in (and held out of), and
        every tag (JSON values)."""
        values = self.tags.row(row)
        tags = {
            k: (v if isinstance(v, str | int | bool | NoneType) else json_value(v))
            for k, v in zip(self.tags.columns, values, strict=True)
        }
        one_id = tags.pop("one_id")
        return {
            "one_id": one_id,
            "version": self.version,
            "as_of": self.as_of,
            "cluster": {"id": tags.get("cluster"), "name": tags.get("cluster_name")},
            "packs": _names(self.members[row]),
            "held_out_of": _names(self.held_out[row]),
            "tags": tags,
        }

    # -- packs -----------------------------------------------------------------------------------
    def selection(self, name: str) -> Selection:
        """A named pack's selection in this version; ConfigError for an unknown pack, the
        pack's own error when it could not be selected."""
        if name in self.pack_errors:
            raise self.pack_errors[name]
        if name not in self.selections:
            known = ", ".join(self.packs) or "none"
            raise ConfigError(f"pack {name!r} is not defined; the packs are: {known}.")
        return self.selections[name]

    def preview_pack(self, name: str) -> dict[str, Any]:
        """A named pack's preview (counts, breakdowns), worked out once per version."""
        with self._lock:
            cached = self._previews.get(name)
        if cached is None:
            cached = self._preview(self.selection(name))
            with self._lock:
                self._previews[name] = cached
        return cached

    def preview_where(self, where: str) -> dict[str, Any]:
        """The preview of an ad-hoc `where` filter (the same safe compiler as the CLI)."""
        pack = adhoc_pack(where, "preview")
        sel = select_pack(self.tags.lazy(), pack, {pack.name: pack})
        return self._preview(sel)

    def _preview(self, sel: Selection) -> dict[str, Any]:
        """`audiences.preview` of `sel`, with the breakdowns counted from the per-person keys
        worked out at load (a gather of the selected rows, no join, no explode); the same
        answer (tests/test_serve.py holds them equal)."""
        if "_sources" not in self.breakdown.columns:  # more sources than a mask holds
            out = preview(sel, self.tags.lazy(), self.id_map.lazy())
            return {"version": self.version, "as_of": self.as_of, **out}
        rows = self.rows_of(sel.frame.get_column("one_id"))
        picked = self.breakdown[rows]
        breakdowns = {c: _counted(picked.get_column(c)) for c in picked.columns if c != "_sources"}
        mask = picked.get_column("_sources").fill_null(0)
        bits = dict.fromkeys(self.sources, 0)
        for value, n in mask.value_counts().rows():  # few distinct sets of sources
            for b, name in enumerate(self.sources):
                if value >> b & 1:
                    bits[name] += n
        items = [(name, int(n)) for name, n in bits.items() if n]
        breakdowns["source"] = dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))
        return {"version": self.version, "as_of": self.as_of, **preview_result(sel, breakdowns)}


_ONE_ID_FORM = r"^U[0-9a-f]{16}$"  # identity.assign: "U" + 16 hex digits of a sha256


def _one_id_numbers(one_ids: pl.Series) -> pl.Series:
    return one_ids.str.slice(1).str.to_integer(base=16, dtype=pl.UInt64)


def _one_id_keys(one_ids: pl.Series) -> pl.Series | None:
    """The sorted one_ids as 64-bit numbers (same order: fixed-width lowercase hex), or None
    when some one_id has another form or two share a number."""
    if one_ids.is_empty() or not one_ids.str.contains(_ONE_ID_FORM).all():
        return None
    keys = _one_id_numbers(one_ids)
    if not keys.is_sorted() or keys.n_unique() != keys.len():
        return None
    return keys


def _counted(values: pl.Series) -> dict[str, int]:
    """{value: people}, most people first then by value; null as "(none)" (as `preview`)."""
    counts = values.value_counts().rows()
    items = [(NONE_KEY if k is None else str(k), int(n)) for k, n in counts]
    return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))


MAX_SOURCES = 63  # a person's sources as bits of one Int64


def _breakdown_keys(
    tags: pl.DataFrame, id_map: pl.DataFrame
) -> tuple[pl.DataFrame, tuple[str, ...]]:
    """Per tags row, the keys a preview breaks people down by (as `audiences.preview`:
    "<cluster>: <cluster_name>", primary_interest, lifecycle_stage) and `_sources`, the
    sources any of the person's identifiers was seen in, as bits (names in the tuple)."""
    present = [c for c in BREAKDOWN_COLUMNS if c in tags.columns]
    exprs = []
    for col in present:
        if col == "cluster" and "cluster_name" in tags.columns:
            exprs.append(
                pl.when(pl.col("cluster").is_null())
                .then(None)
                .otherwise(
                    pl.concat_str(
                        [pl.col("cluster").cast(pl.String), pl.col("cluster_name").fill_null("")],
                        separator=": ",
                    ).str.strip_chars_end(": ")
                )
                .alias("cluster")
            )
        else:
            exprs.append(pl.col(col))
    keys = tags.select(exprs).with_columns(pl.col(pl.String).cast(pl.Categorical))
    if "sources" not in id_map.columns:  # no source breakdown (as `audiences.preview`)
        return keys, ()
    pairs = id_map.select("one_id", "sources").explode("sources").drop_nulls("sources").unique()
    names = tuple(sorted(pairs.get_column("sources").unique().to_list()))
    if len(names) > MAX_SOURCES:
        return keys, ()
    bit = {name: 1 << i for i, name in enumerate(names)}
    masks = (
        pairs.with_columns(
            pl.col("sources").replace_strict(bit, return_dtype=pl.Int64).alias("_bit")
        )
        .group_by("one_id")
        .agg(pl.col("_bit").sum().alias("_sources"))
    )
    aligned = tags.select("one_id").join(masks, on="one_id", how="left", maintain_order="left")
    return keys.with_columns(aligned.get_column("_sources")), names


def _names(value: pl.Series | None) -> list[str]:
    return [] if value is None else value.to_list()


def _pack_lists(tags: pl.DataFrame, selections: Mapping[str, Selection], which: str) -> pl.Series:
    """Per tags row, the packs (in pack order) whose `which` frame (frame, holdout) holds the
    person."""
    parts = [
        getattr(sel, which).select(pl.col("one_id"), pl.lit(i, pl.Int32).alias("_i"))
        for i, sel in enumerate(selections.values())
    ]
    names = pl.Series(list(selections), dtype=pl.String)
    empty = pl.DataFrame(schema={"one_id": pl.String, "_i": pl.Int32})
    lists = (
        pl.concat([empty, *parts])
        .sort("_i")
        .group_by("one_id", maintain_order=True)
        .agg(pl.col("_i"))
    )
    out = tags.select("one_id").join(lists, on="one_id", how="left", maintain_order="left")
    return out.select(
        pl.col("_i").list.eval(pl.element().replace_strict(range(names.len()), names))
    ).to_series()


def load_snapshot(layout: Layout, version: str, packs: Mapping[str, PackDef]) -> Snapshot:
    """Read live version `version` into memory and select every named pack in it.

    DataError when the version's files are missing or unreadable. A pack that cannot be
    selected (e.g. a lookalike whose base is empty) is kept in `pack_errors`, not fatal.
    """
    started = time.perf_counter()
    try:
        manifest = read_json(layout.current("manifest.json", version))
        tags = pl.read_parquet(layout.current("tags.parquet", version), glob=False)
        map_path = layout.current("one_id_map.parquet", version)
        present = pl.read_parquet_schema(map_path)
        id_map = pl.read_parquet(
            map_path, columns=[c for c in MAP_COLUMNS if c in present], glob=False
        )
    except (OSError, pl.exceptions.PolarsError) as e:
        raise DataError(f"live version {version}: cannot be read: {str(e).splitlines()[0]}") from e
    tags = tags.with_columns(pl.col("one_id").cast(pl.String))
    if not tags.get_column("one_id").is_sorted():
        tags = tags.sort("one_id")
    id_map = id_map.with_columns(
        pl.col("one_id").cast(pl.String),
        pl.col("id_type").cast(pl.String),
        pl.col("id").cast(pl.String),
    ).sort("id_type", "id")
    counts = id_map.group_by("id_type", maintain_order=True).len()
    spans: dict[str, tuple[int, int]] = {}
    start = 0
    for id_type, n in counts.iter_rows():
        spans[id_type] = (start, start + n)
        start += n
    based_on = manifest.get("based_on_week")
    dict_path = layout.week_file(str(based_on), "tag_dictionary.parquet")
    dictionary = (
        pl.read_parquet(dict_path, glob=False)
        if based_on and dict_path.is_file()
        else tag_dictionary()
    )
    columns = set(tags.columns)
    entries = [
        {**json_value(row), "in_live_table": row.get("name") in columns}
        for row in dictionary.iter_rows(named=True)
    ]
    selections: dict[str, Selection] = {}
    errors: dict[str, SegmentsError] = {}
    lazy = tags.lazy()
    for name, pack in packs.items():
        try:
            selections[name] = select_pack(lazy, pack, packs)
        except SegmentsError as e:
            errors[name] = e
    breakdown, sources = _breakdown_keys(tags, id_map)
    if sources:  # the sources are in the breakdown keys: the map need not hold them twice
        id_map = id_map.drop("sources")
    return Snapshot(
        version=version,
        manifest=manifest,
        tags=tags,
        id_map=id_map,
        spans=spans,
        packs=dict(packs),
        selections=selections,
        pack_errors=errors,
        members=_pack_lists(tags, selections, "frame"),
        held_out=_pack_lists(tags, selections, "holdout"),
        dictionary=entries,
        breakdown=breakdown,
        sources=sources,
        one_id_keys=_one_id_keys(tags.get_column("one_id")),
        loaded_at=time.time(),
        load_seconds=round(time.perf_counter() - started, 3),
    )


class LiveHolder:
    """The snapshot in force, swapped to a new live version when `LIVE` names one.

    `current` is read once per request; `check()` loads a new version (if any) and swaps it in
    with one assignment; `start()` runs `check()` every `poll_seconds` in a daemon thread.
    """

    def __init__(
        self,
        layout: Layout,
        packs: Mapping[str, PackDef] | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self.layout = layout
        self.packs = dict(load_audiences() if packs is None else packs)
        self.poll_seconds = poll_seconds
        self.last_error: str | None = None
        self._snapshot: Snapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    @property
    def current(self) -> Snapshot | None:
        return self._snapshot

    def require(self) -> Snapshot:
        """The snapshot in force; DataError before the first refresh."""
        snap = self._snapshot
        if snap is None:
            raise DataError(
                f"{self.layout.root}: no live table yet; run `segments refresh` first "
                "(the server picks it up without a restart)."
            )
        return snap

    def check(self) -> bool:
        """Load and swap in the version `LIVE` names when it is not the one in force; True when
        a new version went in. A version that cannot be read is reported and tried again."""
        with self._check_lock:
            version = self.layout.live_version()
            snap = self._snapshot
            if version is None or (snap is not None and snap.version == version):
                return False
            try:
                new = load_snapshot(self.layout, version, self.packs)
            except SegmentsError as e:
                self.last_error = str(e).splitlines()[0]
                log.warning("live table: %s", self.last_error)
                return False
            self._snapshot = new  # the swap: one reference assignment
            self.last_error = None
            log.info(
                "live table: serving %s (as of %s, %d people, loaded in %.2fs)",
                new.version,
                new.as_of,
                new.people,
                new.load_seconds,
            )
            self._prune_served(keep={new.version, snap.version if snap else new.version})
            return True

    def _prune_served(self, keep: set[str]) -> None:
        """Remove the packs this server built for versions no longer in force or just before."""
        served = self.layout.exports_dir / "served"
        if not served.is_dir():
            return
        for pack_dir in served.iterdir():
            if not pack_dir.is_dir():
                continue
            for folder in pack_dir.iterdir():
                if folder.is_dir() and folder.name not in keep:
                    shutil.rmtree(folder, ignore_errors=True)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="live-table-poll", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.poll_seconds):
            try:
                self.check()
            except Exception as e:  # never let the poller die: report and try again
                self.last_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                log.error("live table: %s", self.last_error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


__all__ = [
    "LOOKUP_TYPES",
    "ONE_ID",
    "LiveHolder",
    "Snapshot",
    "json_value",
    "load_snapshot",
    "phone_key",
]
