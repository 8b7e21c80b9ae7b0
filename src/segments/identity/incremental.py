"""OneID, incrementally: last build's graph kept, and only the components new rows touch
evaluated again.

Every guard works inside one *raw component* (the nodes joined by any valid edge, before
guards): a node's degree counts edges of its own raw component, and the per-type limits
rebuild components left after the hub cut, which lie inside one. So when a delivery only adds
rows, a raw component that gets no new node and no new or re-observed edge keeps its cut
edges, and every other component is the guards' work over the nodes of the raw components
the new edges touch (`touched_graph`). One_ids are then assigned over every component as a
full build does, from the old one_id each node carried in the previous map, which the state
keeps (`GraphState.previous_ids`) instead of reading and hashing that map again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from segments.contract import TIMESTAMP
from segments.identity.gather import _Labels, _node_hash
from segments.identity.graph import ComponentsFn, _guarded_components, scipy_components
from segments.identity.schema import NODE_TYPE, REJECTED_LINKS_SCHEMA
from segments.io import parquet_metadata
from segments.settings.identity import IdentityConfig

MAP_TOKEN_KEY = "segments.identity_map_token"

NODE_COLUMNS = {
    "t": NODE_TYPE,
    "id": pl.String(),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
    "src": pl.UInt64(),
}
VALID_SCHEMA = NODE_COLUMNS | {
    "h": pl.UInt64(),
    "rc": pl.UInt32(),
    "cc": pl.UInt32(),
    "one_id": pl.String(),
    "prev_id": pl.String(),
    "rank": pl.UInt32(),
}
REJECTED_SCHEMA = NODE_COLUMNS | {"raw": pl.String(), "reason": pl.String()}
EDGE_SCHEMA = {
    "key": pl.UInt64(),
    "ev": pl.Int64(),
    "n_obs": pl.UInt32(),
    "last": TIMESTAMP,
    "cut": pl.String(),
}


@dataclass(frozen=True)
class GraphState:
    """What a build leaves for the next one to start from.

    - `valid`: the valid nodes in graph order (a node's number is its row): the node columns,
      `h` (its node hash under `seed`, unique over every identifier: `gather._unique_hash`),
      `rc` (its raw component), `cc` (its component after the guards), `one_id` (what this
      build gave it), `prev_id` (the one_id it carried in the map this build was assigned
      against, null when none), `rank` (its row in the map this build wrote, sorted by
      one_id, id_type, id; null for a node new since)
    - `rejected`: the identifiers that are not nodes (node columns, raw, reason)
    - `edges`: every valid edge, `key` = u << 32 | v, with its evidence, observations, latest
      time and `cut` (the guard's reason, null when kept)
    - `bad_links`: rejected_links rows of links with an end that is not a node
    - `previous_token` / `token`: the map token of the previous map used and of this build's
      map (`map_token`); `covered`: every identifier of the previous map is a node here, so a
      new node never carried an old one_id.
    - `changes` / `label` / `salt`: the change events this build wrote (against the previous
      map), its week or day label, and the salt its new content ids were stepped with (the
      week's label): a later build of the same week against the same map takes the one_ids
      and events of the people it does not evaluate from here."""

    valid: pl.DataFrame
    rejected: pl.DataFrame
    edges: pl.DataFrame
    bad_links: pl.DataFrame
    previous_token: str | None
    token: str
    covered: bool
    seed: int = 0
    changes: pl.DataFrame | None = None
    label: str | None = None
    salt: str | None = None

    def previous_ids(self, previous_token: str | None) -> pl.Series | None:
        """The old one_id of each kept node in the map named `previous_token`, when this state
        knows it for every node of that map: the map this state wrote, or the one it was
        assigned against. None otherwise (the map is read again)."""
        if previous_token is None:
            return None
        if previous_token == self.token:
            return self.valid["one_id"].alias("prev_id")
        if previous_token == self.previous_token and self.covered:
            return self.valid["prev_id"]
        return None


def _token_parts(one_id: pl.Series, t: pl.Series, id_: pl.Series) -> list[int]:
    """The two XORs of `map_token` over the given rows: of each row's hash, under two seeds,
    taken over the row as a whole (type, id and one_id together). A hash made of one hash per
    column, XORed, would be blind to one_ids trading places: two identifiers of one type
    swapping their one_ids, or a merge that moves an even number of rows of each one_id,
    left every column's XOR, and so the token, as it was."""
    rows = pl.DataFrame(
        [t.cast(pl.String).alias("t"), id_.cast(pl.String).alias("id"),
         one_id.cast(pl.String).alias("one_id")]
    )  # fmt: skip
    parts = []
    for seed in (11, 1213):
        h = rows.select(pl.struct("t", "id", "one_id").hash(seed=seed)).to_series().to_numpy()
        parts.append(int(np.bitwise_xor.reduce(h)) if len(h) else 0)
    return parts


def _token(n: int, parts: list[int]) -> str:
    return f"{n}-" + "-".join(f"{p:016x}" for p in parts)


def map_token(one_id: pl.Series, t: pl.Series, id_: pl.Series) -> str:
    """A fingerprint of a map's (id_type, id, one_id) rows, in any order: under each of two
    seeds, the XOR over rows of the row's hash (rows are distinct, so none cancel)."""
    return _token(len(one_id), _token_parts(one_id, t, id_))


def map_token_update(
    token: str,
    n: int,
    gone: tuple[pl.Series, pl.Series, pl.Series],
    added: tuple[pl.Series, pl.Series, pl.Series],
) -> str:
    """`map_token` of a map of `n` rows that is the map of `token` without the rows `gone` and
    with the rows `added` (each: one_id, t, id): the XOR takes rows out as it puts them in, so
    only the rows that changed are hashed."""
    parts = [int(p, 16) for p in token.split("-")[1:]]
    for rows in (gone, added):
        parts = [p ^ q for p, q in zip(parts, _token_parts(*rows), strict=True)]
    return _token(n, parts)


def map_token_of(path: Path) -> str | None:
    """The `map_token` written into a one_id_map file's metadata; None when it has none (or
    cannot be read: the map is then read in full)."""
    try:
        meta = parquet_metadata(path)
    except (OSError, ValueError):
        return None
    return meta.get(MAP_TOKEN_KEY) or None


def merge_valid(old: pl.DataFrame, delta: pl.DataFrame, seed: int) -> pl.DataFrame:
    """The kept valid nodes with the new rows' first and last seen and sources folded in (in
    their order; only the rows the delta holds are written), then the nodes seen for the first
    time, their `h` the node hash under `seed` (`old`'s `h` is that hash).

    The delta is matched on the hash (integers: the kept ids are not hashed again), each match
    checked on (t, id); a hash shared by two different identifiers falls back to matching on
    (t, id) (the caller then finds another seed: `gather._unique_hash`)."""
    delta = delta.select(list(NODE_COLUMNS)).with_columns(
        delta.select(_node_hash(seed, raw=None)).to_series().alias("h")
    )
    hits = (
        old.select("h")
        .with_row_index("pos")
        .join(delta.with_row_index("dpos"), on="h", how="inner")
    )
    olds = old.select(pl.col("t", "id").gather(hits["pos"]))
    same = (olds["t"] == hits["t"]) & (olds["id"] == hits["id"])
    if not same.all():  # a hash collision with a kept node
        hits = (
            old.select("t", "id")
            .with_row_index("pos")
            .join(delta.with_row_index("dpos"), on=["t", "id"], how="inner")
        )
    pos = hits["pos"]
    at = old.select(pl.col("first_seen", "last_seen", "src").gather(pos))
    first = at.select(pl.min_horizontal(pl.col("first_seen"), hits["first_seen"])).to_series()
    last = at.select(pl.max_horizontal(pl.col("last_seen"), hits["last_seen"])).to_series()
    src = at["src"] | hits["src"]
    merged = old.with_columns(
        old["first_seen"].clone().scatter(pos, first),
        old["last_seen"].clone().scatter(pos, last),
        old["src"].clone().scatter(pos, src),
    )
    seen = np.zeros(delta.height, dtype=bool)
    seen[hits["dpos"].to_numpy()] = True
    added = delta.filter(pl.Series(~seen)).with_columns(
        pl.lit(None, dtype=pl.UInt32).alias("rc"),
        pl.lit(None, dtype=pl.UInt32).alias("cc"),
        pl.lit(None, dtype=pl.String).alias("one_id"),
        pl.lit(None, dtype=pl.String).alias("prev_id"),
        pl.lit(None, dtype=pl.UInt32).alias("rank"),
    )
    return pl.concat(
        [merged.select(list(VALID_SCHEMA)), added.select(list(VALID_SCHEMA)).cast(VALID_SCHEMA)]
    )


def merge_rejected(old: pl.DataFrame, delta: pl.DataFrame) -> pl.DataFrame:
    """Rejected identifiers of the kept state and of the new rows, aggregated."""
    if delta.height == 0:
        return old
    both = pl.concat([old, delta.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA)])
    return (
        both.group_by("t", "raw", "id", maintain_order=True)
        .agg(
            pl.col("first_seen").min(),
            pl.col("last_seen").max(),
            pl.col("src").bitwise_or(),
            pl.col("reason").first(),
        )
        .select(list(REJECTED_SCHEMA))
    )


def merge_edges(old: pl.DataFrame, new: pl.DataFrame) -> pl.DataFrame:
    """Old edges (with their cut) and the new rows' edges: an edge seen again takes the best
    evidence, the sum of observations and the latest time, and loses its old cut (its
    component is evaluated again)."""
    if new.height == 0:
        return old
    again = old.join(new.select("key"), on="key", how="semi")
    rest = old.join(new.select("key"), on="key", how="anti", maintain_order="left")
    grown = (
        pl.concat([again.drop("cut"), new.select("key", "ev", "n_obs", "last")])
        .group_by("key")
        .agg(pl.col("ev").max(), pl.col("n_obs").sum(), pl.col("last").max())
        .with_columns(pl.lit(None, dtype=pl.String).alias("cut"))
        .sort("key")
    )
    return pl.concat([rest, grown.cast(EDGE_SCHEMA)])


@dataclass(frozen=True)
class TouchedGraph:
    """The guards' answer over every edge: keep mask, the reason of each cut edge (by
    position), each node's raw component, and how many nodes and edges were evaluated."""

    keep: np.ndarray
    reasons: dict[int, str]
    rc: np.ndarray
    nodes_evaluated: int
    edges_evaluated: int
    # the nodes of the raw components evaluated (boolean per node)
    evaluated: np.ndarray | None = None
    # with `old_cc`: the components after the guards (count, each node's), numbered 0..count-1
    ncomp: int = 0
    comp: np.ndarray | None = None


def touched_graph(
    valid: pl.DataFrame,
    codes: np.ndarray,
    edges: pl.DataFrame,
    touched: np.ndarray,
    old_rc: np.ndarray,
    labels: _Labels,
    cfg: IdentityConfig,
    components: ComponentsFn,
    old_cc: np.ndarray | None = None,
) -> TouchedGraph:
    """Run the guards over the raw components holding a `touched` node (a new node or an end
    of a new edge) and keep every other edge's cut as stored.

    `old_rc` is each node's raw component (-1 for a new node); `edges` has `key` and `cut`,
    the stored reason (null when kept) that holds for the edges outside those components.
    With `old_cc`, each kept node's component after the guards (-1 for a new node), the
    components of every node are found from it and those of the evaluated part only."""
    n = valid.height
    key = edges["key"].to_numpy()
    u = (key >> np.uint64(32)).astype(np.int64)
    v = (key & np.uint64(0xFFFFFFFF)).astype(np.int64)
    hit = np.zeros(int(old_rc.max()) + 2 if n else 1, dtype=bool)  # [-1] is the last one
    hit[old_rc[touched & (old_rc >= 0)]] = True
    hit[-1] = False
    in_sub = touched | hit[old_rc]
    del hit
    sub_edge = in_sub[u]
    if not np.array_equal(sub_edge, in_sub[v]):  # every edge lies inside one raw component
        raise RuntimeError("identity: an edge joins two raw components of the kept graph")

    keep = edges["cut"].is_null().to_numpy().copy()
    cut_old = np.flatnonzero(~keep & ~sub_edge)
    reasons = dict(zip(cut_old.tolist(), edges["cut"].gather(cut_old).to_list(), strict=True))

    nodes = np.flatnonzero(in_sub)
    local = np.full(n, -1, dtype=np.int64)
    local[nodes] = np.arange(len(nodes))
    pos = np.flatnonzero(sub_edge)
    lu, lv = local[u[pos]], local[v[pos]]  # nodes keep their order, so lu < lv still
    sub_edges = edges[pos].with_columns(
        pl.Series("key", (lu.astype(np.uint64) << np.uint64(32)) | lv.astype(np.uint64))
    )
    sub_keep, sub_reasons, sub_ncomp, sub_comp = _guarded_components(
        valid[nodes], codes[nodes], sub_edges, labels, cfg, components
    )
    keep[pos] = sub_keep
    for i, reason in sub_reasons.items():
        reasons[int(pos[i])] = reason

    # raw components of the evaluated part, numbered after the kept ones
    count, sub_rc = scipy_components(len(nodes), lu.astype(np.int32), lv.astype(np.int32))
    rc = old_rc.copy()
    base = int(old_rc.max()) + 1 if n and old_rc.max() >= 0 else 0
    rc[nodes] = sub_rc.astype(np.int64) + base
    if count and rc.max() >= np.iinfo(np.uint32).max:  # numbers used up: count again from 0
        rc = np.unique(rc, return_inverse=True)[1]
    ncomp, comp = 0, None
    if old_cc is not None:
        # the components outside the evaluated part are the kept ones; numbered again 0..
        # in the order of their old number, then the evaluated part's
        cc = old_cc.astype(np.int64, copy=True)
        base = int(cc[~in_sub].max()) + 1 if (~in_sub).any() else 0
        cc[nodes] = np.asarray(sub_comp, dtype=np.int64) + base
        used = np.zeros(base + sub_ncomp, dtype=bool)
        used[cc] = True
        renumber = np.cumsum(used) - 1
        ncomp, comp = int(used.sum()), renumber[cc].astype(np.int32)
    return TouchedGraph(keep, reasons, rc, len(nodes), len(pos), in_sub, ncomp, comp)


def raw_components(n: int, edges: pl.DataFrame) -> np.ndarray:
    """Each node's raw component: connected by any valid edge, before guards."""
    key = edges["key"].to_numpy()
    u = (key >> np.uint64(32)).astype(np.int32)
    v = (key & np.uint64(0xFFFFFFFF)).astype(np.int32)
    return scipy_components(n, u, v)[1].astype(np.int64)


def empty_bad_links() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECTED_LINKS_SCHEMA)


__all__ = [
    "EDGE_SCHEMA",
    "MAP_TOKEN_KEY",
    "NODE_COLUMNS",
    "REJECTED_SCHEMA",
    "VALID_SCHEMA",
    "GraphState",
    "TouchedGraph",
    "map_token",
    "map_token_of",
    "map_token_update",
    "merge_edges",
    "merge_rejected",
    "merge_valid",
    "raw_components",
    "touched_graph",
]
