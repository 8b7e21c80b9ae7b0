"""OneID stage: `build_identity` runs gathering, graph and one_id assignment, and reports."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from segments.contract import COMMERCE_ID_TYPES, WECHAT_ID_TYPES
from segments.exprs import insert_positions_via, take_in_order
from segments.identity.assign import (
    _assign_ids,
    _ContentIds,
    _links_to,
    _min_nodes,
    _previous_ids,
    _previous_map,
)
from segments.identity.cache import NodeCache, _as_occurrences, grown_rows
from segments.identity.gather import (
    _aggregate_nodes,
    _extend_hash,
    _gather,
    _Labels,
    _present,
    _rejected_ids,
    _split_nodes,
    _survey,
    _unique_hash,
)
from segments.identity.graph import (
    ComponentsFn,
    _bad_links,
    _cut_links,
    _edges,
    _guarded_components,
    scipy_components,
)
from segments.identity.incremental import (
    EDGE_SCHEMA,
    NODE_COLUMNS,
    REJECTED_SCHEMA,
    VALID_SCHEMA,
    GraphState,
    map_token,
    map_token_update,
    merge_edges,
    merge_rejected,
    merge_valid,
    raw_components,
    touched_graph,
)
from segments.identity.schema import CHANGES_SCHEMA
from segments.settings.identity import NODE_TYPES, IdentityConfig


@dataclass(frozen=True)
class IdentityResult:
    """What `build_identity` returns; every frame has the documented columns even when empty.

    - `one_id_map`: one_id, id_type, id, first_seen, last_seen, sources (list of "table" or
      "table:source" labels where the identifier was seen), sorted by one_id, id_type, id
    - `rejected_links`: id_type_a, id_a, id_type_b, id_b, evidence, reason (one row per cut link)
    - `rejected_ids`: id_type, id, table, reason (identifiers that are not nodes)
    - `changes`: week, one_id, event (new / merged / split), from_one_id, to_one_id
    - `stats`: counts for the run report
    """

    one_id_map: pl.DataFrame
    rejected_links: pl.DataFrame
    rejected_ids: pl.DataFrame
    changes: pl.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)
    # the map's fingerprint (`incremental.map_token`), written into its file's metadata: the
    # next build knows from it whether its kept graph holds that map's one_ids
    map_token: str = ""
    # the identifiers whose one_id is not the previous map's: id_type, id, prev (null for an
    # identifier new since), one_id. None without a previous map, or when one of its
    # identifiers is no node here (then only a join of the two maps tells what moved)
    moved: pl.DataFrame | None = None
    # the kept graph being written (`build_identity(save_in_background=True)`)
    saving: Future[None] | None = field(default=None, compare=False, repr=False)

    def wait_saved(self) -> None:
        """Wait for the kept graph's files (a background save); its error, if any, is raised."""
        if self.saving is not None:
            self.saving.result()


# ---------------------------------------------------------------------------------------------
# The stage

# The background saves not yet done (`build_identity(save_in_background=True)`).
_SAVING: set[Future[None]] = set()


def wait_for_saves() -> None:
    """Wait for every background save of a kept graph still running, without raising: a build
    that failed waits for its save before it lets the workspace go (a save's own error is
    raised by `IdentityResult.wait_saved` on the way that succeeds)."""
    for saving in list(_SAVING):
        saving.exception()


def build_identity(
    tables: dict[str, pl.LazyFrame | None],
    cfg: IdentityConfig,
    previous: pl.DataFrame | pl.LazyFrame | None = None,
    week_label: str = "",
    components: ComponentsFn | None = None,
    node_cache: NodeCache | None = None,
    previous_token: str | None = None,
    salt: str | None = None,
    save_in_background: bool = False,
) -> IdentityResult:
    """Group every identifier in `tables` into people.

    Input: the canonical `orders`, `events`, `messages`, `identities`, `consent` LazyFrames
    (any may be None or absent); `previous`, last week's `one_id_map` (one_id, id_type, id;
    a LazyFrame scan of its parquet is best), keeps one_ids stable. Nodes are the valid
    identifiers; edges are the identities rows and each order's buyer id <-> phone_sha256.
    Blocked or malformed identifiers are not nodes; hubs lose all their edges; a component
    that holds too many identifiers of one type is rebuilt strongest evidence first. This is
    the one global stage: it collects. The map comes sorted by one_id, id_type, id; the row
    order of the other frames is not meaningful (sort them to compare); their content is
    deterministic whatever the input row order.
    With `node_cache`, the identifiers are last build's plus those of the new pieces only
    (`NodeCache`); when every piece of the last build is still here, last build's graph is
    kept and the guards run only over the components the new pieces touch, and with
    `previous_token` (the `map_token` in the previous map's file) naming a map the kept graph
    knows, `previous` is not read at all (`identity.incremental`). The result is the same as
    a full read.
    `salt` (default `week_label`) steps a new person's content id around one the previous map
    used; the refreshes of a week and its weekly build pass the week's label, so the same
    person gets the same one_id whichever of them assigns it, and a refresh can keep the
    one_ids of the components it does not evaluate from the build before it (`_same_map`).
    With `save_in_background`, the kept graph is written by a thread while the caller goes on
    (the Parquet writer runs without the GIL: at 2M people its 1 GB took 2-3 s of a refresh);
    the caller waits with `IdentityResult.wait_saved` before it ends. The files are written
    as they are otherwise: each whole before the meta names it.
    Output: an `IdentityResult` (see there); `stats["seconds"]` and `stats["cpu_seconds"]`
    time each step, `stats["pieces"]` counts the pieces read and reused, `stats["graph"]` the
    nodes and edges the guards evaluated.
    """
    clock = _Clock()
    salt = week_label if salt is None else salt
    prev = _previous_map(previous)
    present = _present(tables)
    names, unknown_types, occurrences = (
        node_cache.survey(present) if node_cache is not None else _survey(present)
    )
    labels = _Labels(names, cfg, raw=unknown_types)
    passes = max(1, -(-occurrences // cfg.rows_per_pass))
    pieces = None
    state: GraphState | None = None
    saving: Future[None] | None = None
    if node_cache is not None and node_cache.usable(labels):
        # each new piece's identifiers aggregated on their own (kept for the next build),
        # then with the kept ones: last build's graph, or its pieces' own nodes
        kept, fresh, whole, grown = node_cache.reuse(present, labels, cfg)
        new_nodes = [
            _as_occurrences(
                node_cache.put_piece(
                    t, key, _aggregate_nodes(_gather({t: lf}, cfg, labels)[0], labels, 1)
                )
            )
            for t, ps in fresh.items()
            for key, lf in ps.items()
        ]
        total = sum(len(p) for p in node_cache.pieces.values())
        pieces = {"read": len(new_nodes), "reused": total - len(new_nodes)}
        state = node_cache.graph(labels, cfg) if whole else None
        if state is not None:
            # the new pieces' rows; of a grown piece, those after the cut the last build read
            # it to (its identifiers aggregate the same read whole, its links would count twice)
            fresh_tables = {
                t: pl.concat(
                    [
                        grown_rows(t, lf, grown[t][key]) if key in grown.get(t, {}) else lf
                        for key, lf in ps.items()
                    ]
                )
                for t, ps in fresh.items()
                if ps
            }
            delta = _aggregate_nodes(new_nodes, labels, passes)
            clock.lap("nodes")
            result, new_state = _incremental(
                state, delta, _gather(fresh_tables, cfg, labels)[1], prev, previous_token,
                labels, cfg, components or scipy_components, week_label, clock, salt=salt,
            )  # fmt: skip
        else:
            nodes_raw = _aggregate_nodes([*kept, *new_nodes], labels, passes)
            clock.lap("nodes")
            result, new_state = _full(
                nodes_raw, _gather(present, cfg, labels)[1], prev, previous_token, labels,
                cfg, components or scipy_components, week_label, clock, salt=salt,
            )  # fmt: skip
        same = state is not None and (state.token, state.previous_token) == (
            new_state.token,
            new_state.previous_token,
        )
        if pieces["read"] or not whole or not same:
            if save_in_background:
                pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-save")
                saving = pool.submit(node_cache.save, new_state, labels, cfg)
                pool.shutdown(wait=False)
                _SAVING.add(saving)
                saving.add_done_callback(_SAVING.discard)
            else:
                node_cache.save(new_state, labels, cfg)
        clock.lap("save")
    else:
        occ, links = _gather(present, cfg, labels)
        nodes_raw = _aggregate_nodes(occ, labels, passes)
        clock.lap("nodes")
        result, _ = _full(
            nodes_raw, links, prev, previous_token, labels, cfg,
            components or scipy_components, week_label, clock, salt=salt,
        )  # fmt: skip
    stats = result.stats
    stats["seconds"] = clock.laps
    stats["cpu_seconds"] = clock.cpu
    if pieces is not None:
        stats["pieces"] = pieces
    return replace(result, saving=saving) if saving is not None else result


def _full(
    nodes_raw: pl.DataFrame,
    links: list[pl.LazyFrame],
    prev: pl.LazyFrame | None,
    previous_token: str | None,
    labels: _Labels,
    cfg: IdentityConfig,
    components: ComponentsFn,
    week_label: str,
    clock: _Clock,
    salt: str,
) -> tuple[IdentityResult, GraphState]:
    """Every identifier and link: validated, joined, guarded and given one_ids."""
    # sorted: the kept graph's files are the same for the same inputs
    valid, rejected = _split_nodes(nodes_raw.sort("t", "id"), cfg)
    del nodes_raw
    seed, valid_h, rejected_h = _unique_hash(valid, rejected)
    clock.lap("validate")
    keys = pl.DataFrame([valid_h, pl.Series("nid", np.arange(valid.height, dtype=np.uint32))])
    edges, bad_rows = _edges(links, keys, rejected_h, seed, labels)
    edges = edges.sort("key")
    del keys
    bad_links = _bad_links(bad_rows, valid, valid_h, rejected, rejected_h, labels)
    del rejected_h, bad_rows
    clock.lap("edges")

    codes = _codes(valid)
    keep, cut_reasons, ncomp, comp = _guarded_components(
        valid, codes, edges, labels, cfg, components
    )
    rc = raw_components(valid.height, edges)
    clock.lap("graph")
    prev_ids, old_ids, covered = _read_previous(prev, valid, valid_h, seed)
    graph = {"nodes_evaluated": valid.height, "edges_evaluated": edges.height}
    return _finish(
        valid.with_columns(valid_h), seed, rejected, edges, keep, cut_reasons, ncomp, comp,
        codes, rc, bad_links, prev_ids, old_ids, covered, previous_token, labels, week_label,
        graph, clock, salt=salt,
    )  # fmt: skip


def _incremental(
    state: GraphState,
    delta: pl.DataFrame,
    links: list[pl.LazyFrame],
    prev: pl.LazyFrame | None,
    previous_token: str | None,
    labels: _Labels,
    cfg: IdentityConfig,
    components: ComponentsFn,
    week_label: str,
    clock: _Clock,
    salt: str,
) -> tuple[IdentityResult, GraphState]:
    """Last build's graph with the new pieces' identifiers (`delta`) and links folded in; the
    guards run over the raw components they touch (`incremental.touched_graph`).

    The kept nodes are not hashed again (their hash is kept: `merge_valid`,
    `gather._extend_hash`), and their components are the kept ones outside the evaluated
    part. When the previous map is this state's own (the next week), a component outside the
    evaluated part is one of that map's, whole, and the only one holding its one_id: it keeps
    it with no change event, so one_ids are assigned over the evaluated part only and the
    map's token is updated from the rows that changed."""
    d_valid, d_rejected = _split_nodes(delta.sort("t", "id"), cfg)
    kept_nodes = state.valid.height
    valid = merge_valid(state.valid, d_valid, state.seed)
    rejected = merge_rejected(state.rejected, d_rejected)
    del delta, d_valid, d_rejected
    seed, valid_h, rejected_h = _extend_hash(
        state.seed, state.valid["h"], valid.slice(kept_nodes), rejected
    )
    if valid_h is None or rejected_h is None:
        seed, valid_h, rejected_h = _unique_hash(valid, rejected)
    old_cc = valid["cc"].fill_null(-1).cast(pl.Int64).to_numpy()
    clock.lap("validate")
    keys = pl.DataFrame([valid_h, pl.Series("nid", np.arange(valid.height, dtype=np.uint32))])
    new_edges, bad_rows = _edges(links, keys, rejected_h, seed, labels)
    del keys
    new_bad = _bad_links(bad_rows, valid, valid_h, rejected, rejected_h, labels)
    bad_links = pl.concat([state.bad_links, new_bad]).unique()
    del rejected_h, bad_rows
    edges = merge_edges(state.edges, new_edges.sort("key"))
    clock.lap("edges")

    codes = _codes(valid)
    touched = np.zeros(valid.height, dtype=bool)
    touched[kept_nodes:] = True
    key = new_edges["key"].to_numpy()
    touched[(key >> np.uint64(32)).astype(np.int64)] = True
    touched[(key & np.uint64(0xFFFFFFFF)).astype(np.int64)] = True
    old_rc = valid["rc"].fill_null(-1).cast(pl.Int64).to_numpy()
    part = touched_graph(
        valid, codes, edges, touched, old_rc, labels, cfg, components, old_cc=old_cc
    )
    del old_cc, old_rc, touched
    ncomp, comp = part.ncomp, part.comp
    assert comp is not None
    clock.lap("graph")

    known = state.previous_ids(previous_token) if prev is not None else None
    own_map = known is not None and previous_token == state.token
    if known is not None:
        # the old one_ids the kept nodes carried; a new node carried none (the map is covered)
        prev_ids = pl.concat([known, pl.Series("prev_id", [None] * (valid.height - kept_nodes),
                                                 dtype=pl.String)])  # fmt: skip
        old_ids = known
        covered = True
    else:
        prev_ids, old_ids, covered = _read_previous(prev, valid, valid_h, seed)
    graph = {"nodes_evaluated": part.nodes_evaluated, "edges_evaluated": part.edges_evaluated}
    only = own = kept_changes = None
    if own_map:
        only = part.evaluated
    elif _same_map(state, known, previous_token, salt):
        # A build against the map the kept graph was assigned against, under the same salt (a
        # later refresh of the same week, or the week's own build): every component outside
        # the evaluated part is as it was, and so is its one_id, once the part takes in every
        # component holding an old one_id it holds (they compete for it). Those components
        # keep the kept graph's one_ids and change events.
        assert prev_ids is not None and state.changes is not None
        only = _closed_over_old_ids(part.evaluated, comp, prev_ids)
        own = pl.concat([state.valid["one_id"], pl.Series("one_id", [None] * (valid.height - kept_nodes),
                                                           dtype=pl.String)])  # fmt: skip
        redone = own.filter(pl.Series(only)).drop_nulls().unique()
        kept_changes = state.changes.filter(~pl.col("one_id").is_in(redone.implode()))
    return _finish(
        valid.select(list(NODE_COLUMNS)).with_columns(valid_h), seed, rejected, edges,
        part.keep, part.reasons, ncomp, comp, codes, part.rc, bad_links, prev_ids, old_ids,
        covered, previous_token, labels, week_label, graph, clock,
        salt=salt,
        only=only,
        token=state.token if only is not None else None,
        own=own,
        kept_changes=kept_changes,
        rank=state.valid["rank"] if only is not None else None,
    )  # fmt: skip


def _same_map(
    state: GraphState, known: pl.Series | None, previous_token: str | None, salt: str
) -> bool:
    """The kept graph was assigned against this build's previous map, under the same salt
    (a content id stepped around an old one takes the salt), and kept its change events."""
    return (
        known is not None
        and previous_token is not None
        and previous_token == state.previous_token
        and state.salt == salt
        and state.changes is not None
    )


def _closed_over_old_ids(
    evaluated: np.ndarray, comp: np.ndarray, prev_ids: pl.Series
) -> np.ndarray:
    """`evaluated` (whole components) grown by every component holding an old one_id that a
    component of it holds, until none is added: one_ids are assigned per group of components
    that share old one_ids, so a group is evaluated whole or not at all."""
    only = evaluated.copy()
    while True:
        held = prev_ids.filter(pl.Series(only)).drop_nulls().unique()
        holds = prev_ids.is_in(held.implode()).fill_null(False).to_numpy() & ~only
        if not holds.any():
            return only
        only |= np.isin(comp, np.unique(comp[holds]))


def _read_previous(
    prev: pl.LazyFrame | None, valid: pl.DataFrame, valid_h: pl.Series, seed: int
) -> tuple[pl.Series | None, pl.DataFrame | None, bool]:
    """From the previous map itself: each node's old one_id, every old one_id, and whether
    every identifier of that map is a node here (`GraphState.covered`)."""
    if prev is None:
        return None, None, True
    prev_ids = _previous_ids(prev, valid, valid_h, seed)
    old_ids = prev.select(pl.col("prev_id").alias("one_id")).unique().collect().to_series()
    covered = int(prev_ids.is_not_null().sum()) == prev.select(pl.len()).collect().item()
    return prev_ids, old_ids, covered


def _codes(valid: pl.DataFrame) -> np.ndarray:
    return valid["t"].to_physical().to_numpy().astype(np.int8)


def _finish(
    valid: pl.DataFrame,
    seed: int,
    rejected: pl.DataFrame,
    edges: pl.DataFrame,
    keep: np.ndarray,
    cut_reasons: dict[int, str],
    ncomp: int,
    comp: np.ndarray,
    codes: np.ndarray,
    rc: np.ndarray,
    bad_links: pl.DataFrame,
    prev_ids: pl.Series | None,
    old_ids: pl.Series | None,
    covered: bool,
    previous_token: str | None,
    labels: _Labels,
    week_label: str,
    graph: dict[str, int],
    clock: _Clock,
    salt: str,
    only: np.ndarray | None = None,
    token: str | None = None,
    own: pl.Series | None = None,
    kept_changes: pl.DataFrame | None = None,
    rank: pl.Series | None = None,
) -> tuple[IdentityResult, GraphState]:
    """One_ids, the map, the rejects and the stats of a guarded graph; and the state the next
    build starts from. `valid` has the node columns and `h`, the node hash under `seed`.

    With `only` (boolean per node, whole components), one_ids are assigned over those nodes'
    components; every other node keeps its `prev_ids` one, with no event, and `token` is the
    previous map's (`incremental.map_token`), updated by the rows that changed. The caller
    knows that each other component holds one one_id of the previous map, wholly, and alone
    (`_incremental`). With `own` as well (a refresh the same day: the one_ids of the kept
    graph's own map, by node), every other node keeps its `own` one_id, the token is that
    map's, and the other components' change events are `kept_changes`. `rank` (with `only`):
    each kept node's row in the map that `token` is of, so the map is written in order by
    merging the reassigned nodes in rather than sorting it (`_map_order`)."""
    edges_kept = int(keep.sum())
    cut_graph = _cut_links(valid, edges, keep, cut_reasons, labels)
    rejected_links = pl.concat([bad_links, cut_graph]).sort(
        "id_type_a", "id_a", "id_type_b", "id_b", "evidence", "reason"
    )
    rejected_ids = _rejected_ids(rejected, labels)

    # One ids: content ids come from each component's smallest key.
    sizes = np.bincount(comp, minlength=ncomp)
    if only is None or prev_ids is None:
        nodes = None
        sub_comp, sub_n, sub_sizes = comp, ncomp, sizes
    else:
        # the components of `only`, numbered 0.. in their order
        nodes = np.flatnonzero(only)
        chosen = np.zeros(ncomp, dtype=bool)
        chosen[comp[nodes]] = True
        local = np.cumsum(chosen) - 1
        sub_comp = local[comp[nodes]].astype(np.int32)
        sub_n = int(chosen.sum())
        sub_sizes = sizes[chosen]
    sub_valid = valid if nodes is None else valid[nodes]
    sub_codes = codes if nodes is None else codes[nodes]
    comps = pl.DataFrame(
        {
            "comp": np.arange(sub_n, dtype=np.int32),
            "size": sub_sizes,
            "first": _min_nodes(sub_valid, sub_codes, sub_comp, sub_n),
        }
    )
    sub_prev = None if prev_ids is None else prev_ids if nodes is None else prev_ids.gather(nodes)
    links = None if sub_prev is None else _links_to(sub_prev, sub_comp)
    ids, changes = _assign_ids(comps, _ContentIds(sub_valid), links, old_ids, week_label, salt)
    del comps, links
    sub_one_id = ids.sort("comp")["one_id"].gather(sub_comp)
    del ids
    if kept_changes is not None:
        changes = pl.concat(
            [
                kept_changes.with_columns(pl.lit(week_label).alias("week")),
                changes.cast(CHANGES_SCHEMA),
            ]
        )
    base_ids = own if own is not None else prev_ids  # the ids of the map `token` is of
    if nodes is None:
        one_id = sub_one_id
    else:
        assert base_ids is not None
        one_id = base_ids.clone().scatter(nodes, sub_one_id).alias("one_id")
    on_order = _on_order(valid["src"], labels, codes)
    one_id_map = pl.DataFrame(
        [
            one_id,
            valid["t"].cast(pl.String).alias("id_type"),
            valid["id"],
            valid["first_seen"],
            valid["last_seen"],
            # the label mask, turned into the list of names once in order: a list column is
            # slow to reorder (2M people: about 4 of the 7 s the map's reordering took)
            valid["src"].alias("_src"),
        ]
    )
    # the other nodes keep the one_ids, and the rows, of the map `rank` is of
    merged_in = token is not None and nodes is not None and base_ids is not None
    if merged_in:
        assert nodes is not None and base_ids is not None and token is not None
        sub_old = base_ids.gather(nodes)
        kept = sub_old.is_not_null().to_numpy()  # the rows of these nodes in the old map
        at = nodes[kept]
        token = map_token_update(
            token,
            valid.height,
            (sub_old.filter(pl.Series(kept)), valid["t"].gather(at), valid["id"].gather(at)),
            (sub_one_id, sub_valid["t"], sub_valid["id"]),
        )
    else:
        token = map_token(one_id, valid["t"], valid["id"])
    merged = merged_in and rank is not None
    order = _map_order(one_id_map, nodes if merged_in else None, rank)
    moved = None
    if prev_ids is not None and covered:
        moved = one_id_map.select("id_type", "id", prev_ids.alias("prev"), pl.col("one_id")).filter(
            pl.col("prev").ne_missing(pl.col("one_id"))
        )
    one_id_map = take_in_order(one_id_map, order)  # as it is written: by one_id, id_type, id
    if merged and not one_id_map.get_column("one_id").is_sorted():
        # `_map_order` trusts `rank` for the kept rows' order (reading their one_ids to check
        # it first cost ~2 s at 2M people): rows out of order mean it was wrong, so sort
        again = one_id_map.select(pl.arg_sort_by(MAP_ORDER)).to_series().to_numpy()
        one_id_map, order = take_in_order(one_id_map, again), order[again]
    map_rank = np.empty(len(order), dtype=np.uint32)
    map_rank[order] = np.arange(len(order), dtype=np.uint32)
    del order
    clock.lap("one_ids")
    cut = pl.Series("cut", [None] * len(keep), dtype=pl.String)
    if cut_reasons:
        at = np.fromiter(cut_reasons, dtype=np.int64)
        cut = cut.scatter(at, [cut_reasons[int(i)] for i in at])
    state = GraphState(
        valid=valid.with_columns(
            pl.Series("rc", rc, dtype=pl.UInt32),
            pl.Series("cc", comp, dtype=pl.UInt32),
            one_id.alias("one_id"),
            (prev_ids if prev_ids is not None else pl.lit(None, dtype=pl.String)).alias("prev_id"),
            pl.Series("rank", map_rank, dtype=pl.UInt32),
        ).select(list(VALID_SCHEMA)),
        rejected=rejected.select(list(REJECTED_SCHEMA)).cast(REJECTED_SCHEMA),
        edges=edges.select("key", "ev", "n_obs", "last").with_columns(cut).cast(EDGE_SCHEMA),
        bad_links=bad_links.sort(pl.all()),
        previous_token=previous_token,
        token=token,
        covered=covered,
        seed=seed,
        changes=changes.cast(CHANGES_SCHEMA).sort(pl.all()),  # same events, same file
        label=week_label,
        salt=salt,
    )
    del valid, one_id
    one_id_map = one_id_map.with_columns(labels.sources(one_id_map["_src"]).alias("sources")).drop(
        "_src"
    )

    stats = _stats(codes, on_order, comp, ncomp, sizes, rejected_links, rejected_ids, edges_kept)
    stats["graph"] = graph
    clock.lap("report")
    result = IdentityResult(
        one_id_map=one_id_map,
        rejected_links=rejected_links,
        rejected_ids=rejected_ids,
        changes=changes.cast(CHANGES_SCHEMA),
        stats=stats,
        map_token=token,
        moved=moved,
    )
    return result, state


MAP_ORDER = ("one_id", "id_type", "id")  # the map's written order (id_type, id: one row each)


def _map_order(
    one_id_map: pl.DataFrame, changed: np.ndarray | None, rank: pl.Series | None
) -> np.ndarray:
    """The map's rows (one per node, in node order) in the order it is written: by
    `MAP_ORDER`. With `changed` (the nodes whose one_id was assigned again, every node new
    since among them) and `rank` (each kept node's row in the last map, whose one_ids the
    others keep), the other nodes keep their order and the changed ones are merged in: a
    binary search each instead of a sort of the map (8.7M rows at 2M people: about 4 s). A
    changed one_id that a kept node also holds (a component's one_id is its own, so none
    should), or a `rank` that is no permutation, gives the full sort. That `rank` orders the
    kept rows by one_id is trusted here and checked by the caller on the map as taken."""
    n = one_id_map.height

    def full() -> np.ndarray:
        return one_id_map.select(pl.arg_sort_by(MAP_ORDER)).to_series().to_numpy()

    if changed is None or rank is None or rank.null_count() or rank.len() > n:
        return full()
    kept_n = rank.len()
    if int((changed >= kept_n).sum()) != n - kept_n:  # a new node outside the changed ones
        return full()
    old_order = np.full(kept_n, -1, dtype=np.int64)
    at = rank.to_numpy().astype(np.int64)
    if at.size and (at.min() < 0 or at.max() >= kept_n):
        return full()
    old_order[at] = np.arange(kept_n)
    if (old_order < 0).any():  # two kept nodes on one row
        return full()
    keep = np.ones(kept_n, dtype=bool)
    keep[changed[changed < kept_n]] = False
    kept_order = old_order[keep[old_order]]
    sub = one_id_map.select(MAP_ORDER)[changed]
    fresh_order = changed[sub.select(pl.arg_sort_by(MAP_ORDER)).to_series().to_numpy()]
    one_ids = one_id_map.get_column("one_id")
    positions = insert_positions_via(one_ids, kept_order, one_ids.gather(fresh_order))
    if positions is None:
        return full()
    return np.insert(kept_order, positions, fresh_order)


def _on_order(src: pl.Series, labels: _Labels, codes: np.ndarray) -> np.ndarray:
    """Per node: a phone_sha256 that appeared on an order."""
    phone = codes == NODE_TYPES.index("phone_sha256")
    order_codes = [c for n, c in labels.code.items() if n.split(":")[0] == "orders"]
    if labels.bitmask:
        bits = sum(1 << c for c in order_codes)
        seen = ((src & bits) != 0).fill_null(False).to_numpy()
    else:
        seen = src.list.eval(pl.element().is_in(order_codes)).list.any().fill_null(False)
        seen = seen.to_numpy()
    return phone & seen


class _Clock:
    """Wall and CPU (all threads) seconds of each step."""

    def __init__(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        self.laps: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now, cpu = time.perf_counter(), time.process_time()
        self.laps[name] = round(now - self.t0, 3)
        self.cpu[name] = round(cpu - self.c0, 3)
        self.t0, self.c0 = now, cpu


def _stats(
    codes: np.ndarray,
    on_order: np.ndarray,
    comp: np.ndarray,
    ncomp: int,
    sizes: np.ndarray,
    rejected_links: pl.DataFrame,
    rejected_ids: pl.DataFrame,
    edges_kept: int,
) -> dict[str, Any]:
    code_of = {t: i for i, t in enumerate(NODE_TYPES)}
    by_type = np.bincount(codes.astype(np.int64), minlength=len(NODE_TYPES))
    commerce = np.isin(codes, [code_of[t] for t in COMMERCE_ID_TYPES]) | on_order
    wechat = np.isin(codes, [code_of[t] for t in WECHAT_ID_TYPES])
    has_c = np.bincount(comp[commerce], minlength=ncomp) > 0
    has_w = np.bincount(comp[wechat], minlength=ncomp) > 0
    linked = int((has_c & has_w).sum())
    hist = np.bincount(sizes) if ncomp else np.zeros(0, dtype=np.int64)

    def counts(df: pl.DataFrame) -> dict[str, int]:
        if df.height == 0:
            return {}
        short = df.select(pl.col("reason").str.replace(r"^hub_degree:\d+$", "hub_degree"))
        return {r: int(c) for r, c in sorted(short.group_by("reason").len().iter_rows())}

    distinct_rejected = rejected_ids.unique(["id_type", "id"])
    return {
        "identifiers": len(codes),
        "identifiers_by_type": {t: int(c) for t, c in zip(NODE_TYPES, by_type, strict=True) if c},
        "people": ncomp,
        "linked_people": linked,
        "linkage_rate": linked / ncomp if ncomp else 0.0,
        "component_sizes": {int(s): int(c) for s, c in enumerate(hist) if c},
        "singletons": int(hist[1]) if len(hist) > 1 else 0,
        "edges_kept": edges_kept,
        "links_cut": rejected_links.height,
        "cuts_by_reason": counts(rejected_links),
        "rejected_ids": distinct_rejected.height,
        "rejected_ids_by_reason": counts(distinct_rejected),
    }
