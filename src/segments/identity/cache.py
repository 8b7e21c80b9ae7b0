"""OneID node cache: last build's aggregated identifiers, reused while its pieces are read."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from segments.contract import TABLES, TIMESTAMP
from segments.identity.gather import _Labels, _survey
from segments.identity.incremental import (
    EDGE_SCHEMA,
    REJECTED_SCHEMA,
    VALID_SCHEMA,
    GraphState,
)
from segments.identity.schema import CHANGES_SCHEMA, NODE_TYPE, REJECTED_LINKS_SCHEMA
from segments.io import atomic_path
from segments.settings.identity import IdentityConfig

# ---------------------------------------------------------------------------------------------
# Reusing last run's identifiers


NODE_CACHE_VERSION = 4
# what reading a missing, damaged or foreign cache file raises: the cache is then not used
_UNUSABLE = (OSError, ValueError, KeyError, TypeError, AttributeError, pl.exceptions.PolarsError)
# the files of the kept graph (`incremental.GraphState`), under `meta["graph"]`
_GRAPH_FILES = ("valid", "rejected", "edges", "bad_links")


def _package_source() -> bytes:
    """The source of every module of the identity package, sorted by name: the code that
    decides the nodes (a change to any of them invalidates the cache)."""
    return b"".join(p.read_bytes() for p in sorted(Path(__file__).parent.glob("*.py")))


@dataclass(frozen=True)
class NodeCache:
    """Where the aggregated identifiers of the last build are kept (`folder`), and this build's
    tables as `pieces`: per table, {key: rows}. A key names rows whose content cannot change
    under it (a validated file of the ingest cache, the slices read of it, the rows later rows
    replaced, and the week's cut when it falls inside the file).

    Each piece's identifiers are aggregated on their own and kept (`piece-<hash>.parquet`), and
    so is the graph of the last build (`graph-<hash>-<part>.parquet`: its nodes over all
    pieces, edges, cuts and one_ids, `incremental.GraphState`). The next build reads only the
    pieces whose key is new: when every piece of the last build is still here, its graph is
    reused whole (`graph`); when some left or changed (a replaced file, rows a later file
    replaced), the kept pieces' own nodes are. First/last seen and the source bits aggregate
    the same in any grouping, so the nodes are exactly those of a full read."""

    folder: Path
    pieces: dict[str, dict[str, pl.LazyFrame]]

    # each piece's survey, as `survey` found it: kept by `save`
    _surveys: dict[str, list] = field(default_factory=dict, compare=False)

    @staticmethod
    def _code() -> str:
        # this code and polars' (the validated files' keys already cover the readers)
        return hashlib.sha256(_package_source() + pl.__version__.encode()).hexdigest()[:20]

    def _meta(self, labels: _Labels, cfg: IdentityConfig) -> dict[str, Any]:
        return {
            "version": NODE_CACHE_VERSION,
            "code": self._code(),
            "labels": labels.names,
            "mention_id_type": cfg.mention_id_type,
        }

    def survey(self, present: dict[str, pl.LazyFrame]) -> tuple[list[str], bool, int]:
        """`gather._survey` of the tables, from each piece's own survey: kept ones are read
        from `surveys.json`, new ones surveyed (and kept by `save`)."""
        if set(present) - set(self.pieces):
            return _survey(present)
        try:
            kept = json.loads((self.folder / "surveys.json").read_text())
            if kept.get("code") != self._code():
                kept = {}
        except (OSError, ValueError):
            kept = {}
        known: dict[str, list] = kept.get("pieces", {})
        names: set[str] = set()
        unknown, rows = False, 0
        self._surveys.clear()
        for t in present:
            for key, lf in self.pieces[t].items():
                name = f"{t}/{key}"
                got = known.get(name)
                if not isinstance(got, list) or len(got) != 3:
                    labels, unk, n = _survey({t: lf})
                    got = [labels, unk, n]
                self._surveys[name] = got
                names |= set(got[0])
                unknown |= bool(got[1])
                rows += int(got[2])
        return sorted(names | set(_survey({})[0])), unknown, rows

    @staticmethod
    def usable(labels: _Labels) -> bool:
        """Nodes of unknown id types, or of over 64 source labels, are not kept."""
        return not labels.raw and bool(labels.bitmask)

    def reuse(
        self, present: dict[str, pl.LazyFrame], labels: _Labels, cfg: IdentityConfig
    ) -> tuple[list[pl.LazyFrame], dict[str, dict[str, pl.LazyFrame]], bool, dict]:
        """(the kept nodes as occurrences, the pieces to read: per table, key -> rows, whether
        the last build's pieces are all still here, the *grown* pieces: per table, key -> the
        cut the last build read the same file to). A piece grows when the last build cut its
        file at its week's end and this build cuts it later or not at all: it holds the rows
        it held, and those from the old cut on (`grown_rows`). With no usable cache (none,
        another code or label set), every piece is to read."""
        everything = {t: dict(self.pieces.get(t, {})) for t in present}
        if not self.usable(labels) or set(present) - set(self.pieces):
            return [], everything, False, {}
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            same = {k: meta.get(k) for k in self._meta(labels, cfg)} == self._meta(labels, cfg)
            stored: dict[str, dict[str, str]] = meta["piece_files"]
            if not same:
                return [], everything, False, {}
            here = {t: set(self.pieces.get(t, {})) for t in stored}
            kept = {
                t: {k: f for k, f in keys.items() if k in here[t]} for t, keys in stored.items()
            }
            grown = {
                t: _grown(set(keys) - here[t], here[t] - set(keys)) for t, keys in stored.items()
            }
            whole = all(len(kept[t]) + len(grown[t]) == len(keys) for t, keys in stored.items())
            # every piece of the last build is here: its graph's nodes stand for them all
            names = (
                [meta["graph"]["valid"], meta["graph"]["rejected"]]
                if whole
                else [f for t in sorted(kept) for _, f in sorted(kept[t].items())]
            )
            for name in names:  # a missing or damaged file: the cache cannot be used
                pq.read_metadata(self.folder / name)  # (no globbing: brackets in the path)
            occ = [_as_occurrences(pl.scan_parquet(self.folder / n, glob=False)) for n in names]
        except _UNUSABLE:
            return [], everything, False, {}  # no cache, or one this build cannot use
        fresh = {
            t: {key: lf for key, lf in self.pieces[t].items() if key not in kept.get(t, {})}
            for t in present
        }
        return occ, fresh, whole, ({t: g for t, g in grown.items() if g} if whole else {})

    def put_piece(self, table: str, key: str, nodes: pl.DataFrame) -> pl.LazyFrame:
        """Keep one new piece's own nodes (before the meta names them); returns them, scanned."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / _piece_file(table, key)
        _write_nodes(nodes, path)
        return pl.scan_parquet(path, glob=False)

    def graph(self, labels: _Labels, cfg: IdentityConfig) -> GraphState | None:
        """The last build's graph, when `reuse` found every one of its pieces here (call it
        after `reuse`); None when it is missing or unreadable (the nodes are then
        aggregated again and the guards run over everything)."""
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            if {k: meta.get(k) for k in self._meta(labels, cfg)} != self._meta(labels, cfg):
                return None
            graph = meta["graph"]
            frames = {
                part: pl.read_parquet(self.folder / graph[part], glob=False)
                for part in _GRAPH_FILES
            }
            return GraphState(
                valid=frames["valid"].cast(VALID_SCHEMA),
                rejected=frames["rejected"].cast(REJECTED_SCHEMA),
                edges=_packed(frames["edges"]),
                bad_links=frames["bad_links"].cast(REJECTED_LINKS_SCHEMA),
                previous_token=graph["previous_token"],
                token=graph["token"],
                covered=bool(graph["covered"]),
                seed=int(graph["seed"]),
                changes=(
                    pl.read_parquet(self.folder / graph["changes"], glob=False).cast(CHANGES_SCHEMA)
                    if graph.get("changes")
                    else None
                ),
                label=graph.get("label"),
                salt=graph.get("salt"),
            )
        except _UNUSABLE:
            return None

    def save(self, state: GraphState, labels: _Labels, cfg: IdentityConfig) -> None:
        """Keep this build's graph; the meta names it and every piece's own nodes
        (`put_piece`). Files are written before the meta that points at them: a crash leaves
        the last good set."""
        if not self.usable(labels):
            return
        files = {
            t: {key: _piece_file(t, key) for key in sorted(keys)}
            for t, keys in sorted(self.pieces.items())
        }
        if not all((self.folder / f).is_file() for keys in files.values() for f in keys.values()):
            return  # a piece whose own nodes were not kept: the cache cannot stand for it
        meta = self._meta(labels, cfg) | {"piece_files": files}
        name = hashlib.sha256(
            json.dumps([meta, state.token, state.previous_token], sort_keys=True).encode()
        ).hexdigest()[:20]
        graph: dict[str, Any] = {
            "previous_token": state.previous_token,
            "token": state.token,
            "covered": state.covered,
            "seed": state.seed,
            "label": state.label,
            "salt": state.salt,
        }
        parts = [*_GRAPH_FILES, *(["changes"] if state.changes is not None else [])]
        for part in parts:
            graph[part] = f"graph-{name}-{part}.parquet"
            with atomic_path(self.folder / graph[part]) as tmp:
                frame = getattr(state, part)
                (_unpacked(frame) if part == "edges" else frame).write_parquet(
                    tmp, compression="lz4"
                )
                tmp.chmod(0o600)
        meta["graph"] = graph
        if self._surveys:
            with atomic_path(self.folder / "surveys.json") as tmp:
                tmp.write_text(json.dumps({"code": self._code(), "pieces": self._surveys}))
                tmp.chmod(0o600)
        with atomic_path(self.folder / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, sort_keys=True))
            tmp.chmod(0o600)
        keep = {*(graph[p] for p in parts), *(f for k in files.values() for f in k.values())}
        for path in [
            *self.folder.glob("nodes-*.parquet"),
            *self.folder.glob("graph-*.parquet"),
            *self.folder.glob("piece-*.parquet"),
        ]:
            if path.name not in keep:
                path.unlink(missing_ok=True)


_CUT = re.compile(r"^(.*):(-|\d{4}-\d\d-\d\dT[\d:.]+)$", re.S)


def _grown(gone: set[str], new: set[str]) -> dict[str, str]:
    """New piece key -> the old cut, for each gone key whose file, slices and replaced rows a
    new key has with a later cut or none (`ingest.IngestResult.identity_pieces` ends a key
    with ':-' or ':<the cut, ISO>')."""
    old: dict[str, str] = {}
    for key in gone:
        m = _CUT.match(key)
        if m and m.group(2) != "-":
            old[m.group(1)] = m.group(2)
    out = {}
    for key in new:
        m = _CUT.match(key)
        if m and m.group(1) in old and (m.group(2) == "-" or m.group(2) > old[m.group(1)]):
            out[key] = old.pop(m.group(1))
    return out


def grown_rows(table: str, rows: pl.LazyFrame, cut: str) -> pl.LazyFrame:
    """The rows a grown piece holds that the last build did not read: those at or after its
    old cut (rows without a time were read then)."""
    col = TABLES[table].time_column
    if col is None:  # a table without a time is never cut
        raise ValueError(f"identity cache: table {table} has no time to cut")
    return rows.filter(pl.col(col) >= datetime.fromisoformat(cut))


def _unpacked(edges: pl.DataFrame) -> pl.DataFrame:
    """Edges as their two ends (u, v), not the packed key: a key written out could read
    like a number of any kind, and a file of ends compresses better."""
    return edges.select(
        (pl.col("key") // (1 << 32)).cast(pl.UInt32).alias("u"),
        (pl.col("key") % (1 << 32)).cast(pl.UInt32).alias("v"),
        pl.exclude("key"),
    )


def _packed(edges: pl.DataFrame) -> pl.DataFrame:
    key = pl.col("u").cast(pl.UInt64) * (1 << 32) + pl.col("v").cast(pl.UInt64)
    return edges.select(key.alias("key"), pl.exclude("u", "v")).cast(EDGE_SCHEMA)


def _piece_file(table: str, key: str) -> str:
    return f"piece-{hashlib.sha256(f'{table}/{key}'.encode()).hexdigest()[:24]}.parquet"


def _write_nodes(nodes: pl.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:  # in a fixed order: same inputs, same file
        _in_fixed_order(nodes).write_parquet(tmp, compression="lz4")
        tmp.chmod(0o600)


def _in_fixed_order(nodes: pl.DataFrame) -> pl.DataFrame:
    """`nodes` (distinct t, id) in the order of a 64-bit hash of (t, id), or sorted by them
    when two share a hash: an order that depends on the nodes alone, not on how the group-by
    that made them ran. Nothing reads the rows in an order; sorting by the two strings took
    1.4 s of a cold build's 2.1 s of writing the pieces' nodes at 400k people (0.6 s so)."""
    h = nodes.select(pl.struct("t", "id").hash(_ORDER_SEED)).to_series()
    if h.n_unique() != h.len():
        return nodes.sort("t", "id")
    return nodes.gather(h.arg_sort())


_ORDER_SEED = 20261208


def _as_occurrences(nodes: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Aggregated nodes (known id types, source bits) as occurrences, one at first seen and one
    at last seen, that aggregate back to themselves."""
    lf = nodes.lazy().select(
        pl.col("t").cast(NODE_TYPE),
        pl.col("id").cast(pl.String),
        pl.col("first_seen").cast(TIMESTAMP),
        pl.col("last_seen").cast(TIMESTAMP),
        pl.col("src").cast(pl.UInt64),
    )
    return pl.concat(
        [
            lf.select("t", "id", pl.col(seen).alias("ts"), "src")
            for seen in ("first_seen", "last_seen")
        ]
    )
