"""OneID graph: edges, bad links, connected components, the hub cut and per-type limits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import polars as pl
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from segments.contract import TIMESTAMP
from segments.identity.gather import _display, _Labels, _node_hash
from segments.identity.schema import REJECTED_LINKS_SCHEMA
from segments.settings.identity import NODE_TYPES, IdentityConfig

_UNLIMITED = np.iinfo(np.int64).max // 4


# ---------------------------------------------------------------------------------------------
# Edges


def _edges(
    links: list[pl.LazyFrame],
    valid_keys: pl.DataFrame,
    rejected_h: pl.Series,
    seed: int,
    labels: _Labels,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Deduplicated edges between valid nodes, keyed `key` = u << 32 | v (u < v), with `ev`
    (the best evidence: source priority * K + K - 1 - label code, K labels, so the max is the
    strongest source and among equals the smallest label), `n_obs` (rows seen) and `last`
    (latest ts); and the link rows with an end that is not a valid node (ha, hb, code)."""
    edge_schema = {"key": pl.UInt64(), "ev": pl.Int64(), "n_obs": pl.UInt32(), "last": TIMESTAMP}
    bad_schema = {"ha": pl.UInt64(), "hb": pl.UInt64(), "code": pl.UInt16()}
    if not links:
        return pl.DataFrame(schema=edge_schema), pl.DataFrame(schema=bad_schema)
    k = len(labels.names)
    ev_of_code = {c: int(labels.priority[c]) * k + (k - 1 - c) for c in range(k)}
    rows = pl.concat(links, how="vertical").select(
        _node_hash(seed, "ta", "ra" if labels.raw else None, "ia").alias("ha"),
        _node_hash(seed, "tb", "rb" if labels.raw else None, "ib").alias("hb"),
        "ts",
        "code",
    )
    keys = valid_keys.lazy()
    lo = pl.min_horizontal("na", "nb").cast(pl.UInt64)
    hi = pl.max_horizontal("na", "nb").cast(pl.UInt64)
    good = (
        rows.join(keys.rename({"h": "ha", "nid": "na"}), on="ha", how="inner")
        .join(keys.rename({"h": "hb", "nid": "nb"}), on="hb", how="inner")
        .filter(pl.col("na") != pl.col("nb"))
        .select(
            (lo * (1 << 32) + hi).alias("key"),
            pl.col("code").replace_strict(ev_of_code, return_dtype=pl.Int64).alias("ev"),
            "ts",
        )
        .group_by("key")
        .agg(
            pl.col("ev").max(),
            pl.len().cast(pl.UInt32).alias("n_obs"),
            pl.col("ts").max().alias("last"),
        )
    )
    if rejected_h.len() == 0:
        return good.collect().cast(edge_schema), pl.DataFrame(schema=bad_schema)
    bad_h = rejected_h.implode()
    bad = (
        rows.filter(pl.col("ha").is_in(bad_h) | pl.col("hb").is_in(bad_h))
        .select("ha", "hb", "code")
        .unique()
    )
    edges, bad_rows = pl.collect_all([good, bad])
    return edges.cast(edge_schema), bad_rows.cast(bad_schema)


def _bad_links(
    bad_rows: pl.DataFrame,
    valid: pl.DataFrame,
    valid_h: pl.Series,
    rejected: pl.DataFrame,
    rejected_hash: pl.Series,
    labels: _Labels,
) -> pl.DataFrame:
    """rejected_links rows for links with an end that is not a valid identifier."""
    if bad_rows.height == 0:
        return pl.DataFrame(schema=REJECTED_LINKS_SCHEMA)
    wanted = pl.concat([bad_rows["ha"], bad_rows["hb"]]).unique().implode()
    id_type, shown = _display("t", "raw", "id")
    lookup_bad = rejected.with_columns(rejected_hash).select(
        "h", id_type.alias("id_type"), shown.alias("id"), "reason"
    )
    lookup_ok = (
        valid.select(pl.col("t").cast(pl.String).alias("id_type"), "id")
        .with_columns(valid_h)
        .filter(pl.col("h").is_in(wanted))
        .select("h", "id_type", "id", pl.lit(None, dtype=pl.String).alias("reason"))
    )
    ends = pl.concat([lookup_bad, lookup_ok])
    out = (
        bad_rows.join(
            ends.rename({"h": "ha", "id_type": "id_type_a", "id": "id_a", "reason": "ra"}),
            on="ha",
            how="left",
        )
        .join(
            ends.rename({"h": "hb", "id_type": "id_type_b", "id": "id_b", "reason": "rb"}),
            on="hb",
            how="left",
        )
        .select(
            "id_type_a",
            "id_a",
            "id_type_b",
            "id_b",
            pl.col("code")
            .replace_strict(dict(enumerate(labels.names)), return_dtype=pl.String)
            .alias("evidence"),
            pl.coalesce("ra", "rb").alias("reason"),
        )
    )
    return _order_pair(out).unique().cast(REJECTED_LINKS_SCHEMA)


def _order_pair(df: pl.DataFrame) -> pl.DataFrame:
    """Put the smaller (id_type, id) end of every link first."""
    swap = (pl.col("id_type_a") > pl.col("id_type_b")) | (
        (pl.col("id_type_a") == pl.col("id_type_b")) & (pl.col("id_a") > pl.col("id_b"))
    )
    return df.with_columns(
        pl.when(swap).then(pl.col("id_type_b")).otherwise(pl.col("id_type_a")).alias("id_type_a"),
        pl.when(swap).then(pl.col("id_b")).otherwise(pl.col("id_a")).alias("id_a"),
        pl.when(swap).then(pl.col("id_type_a")).otherwise(pl.col("id_type_b")).alias("id_type_b"),
        pl.when(swap).then(pl.col("id_a")).otherwise(pl.col("id_b")).alias("id_b"),
    )


# ---------------------------------------------------------------------------------------------
# Graph


# Connected components of n nodes and the edges (u[i], v[i]): (count, label of each node).
# `build_identity(components=...)` swaps the engine (segments.engine.spark runs it on Spark).
ComponentsFn = Callable[[int, np.ndarray, np.ndarray], tuple[int, np.ndarray]]


def scipy_components(n: int, u: np.ndarray, v: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of the undirected graph on nodes 0..n-1 (scipy, vectorised)."""
    if n == 0:
        return 0, np.zeros(0, dtype=np.int32)
    graph = csr_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n))
    count, labels = connected_components(graph, directed=False)
    return int(count), labels.astype(np.int32, copy=False)


def _limit_array(limits: dict[str, int], default: int) -> np.ndarray:
    return np.array([limits.get(t, default) for t in NODE_TYPES], dtype=np.int64)


def _over_limit(
    labels: np.ndarray, ncomp: int, codes: np.ndarray, limits: np.ndarray
) -> np.ndarray:
    """Boolean per component: it holds more identifiers of some type than that type's limit."""
    offending = np.zeros(ncomp, dtype=bool)
    for code in np.flatnonzero(limits < _UNLIMITED):  # a loop over id types, not nodes
        mask = codes == code
        if mask.any():
            offending |= np.bincount(labels[mask], minlength=ncomp) > limits[code]
    return offending


def _rebuild_with_limits(
    u: np.ndarray,
    v: np.ndarray,
    order: np.ndarray,
    codes: np.ndarray,
    limits: np.ndarray,
) -> tuple[np.ndarray, list[str | None]]:
    """Kruskal-like: add the edges (of the offending components only) strongest first with a
    union-find that skips an edge whose union would break a per-type limit.

    Returns a keep mask over the given edges and a reason per edge (None when kept)."""
    limited = [int(c) for c in np.flatnonzero(limits < _UNLIMITED)]
    lim = [int(limits[c]) for c in limited]
    names = [NODE_TYPES[c] for c in limited]
    local, inverse = np.unique(np.concatenate([u, v]), return_inverse=True)
    lu, lv = inverse[: len(u)].tolist(), inverse[len(u) :].tolist()
    pos = {c: j for j, c in enumerate(limited)}
    counts: list[list[int]] = []
    for code in codes[local].tolist():
        row = [0] * len(limited)
        if code in pos:
            row[pos[code]] = 1
        counts.append(row)
    parent = list(range(len(local)))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    keep = np.ones(len(u), dtype=bool)
    reasons: list[str | None] = [None] * len(u)
    for i in order.tolist():
        ra, rb = find(lu[i]), find(lv[i])
        if ra == rb:
            continue
        ca, cb = counts[ra], counts[rb]
        broken = next((j for j in range(len(lim)) if ca[j] + cb[j] > lim[j]), None)
        if broken is not None:
            keep[i] = False
            reasons[i] = f"limit:{names[broken]}>{lim[broken]}"
            continue
        parent[rb] = ra
        counts[ra] = [x + y for x, y in zip(ca, cb, strict=True)]
    return keep, reasons


def _guarded_components(
    valid: pl.DataFrame,
    codes: np.ndarray,
    edges: pl.DataFrame,
    labels: _Labels,
    cfg: IdentityConfig,
    components: ComponentsFn,
) -> tuple[np.ndarray, dict[int, str], int, np.ndarray]:
    """Cut hubs, then rebuild the components that break a per-type limit strongest evidence
    first. Returns the keep mask over `edges`, the reason of each cut edge (by position), the
    number of components and each node's component."""
    n = valid.height
    key = edges["key"].to_numpy()
    u = (key >> np.uint64(32)).astype(np.int32)
    v = (key & np.uint64(0xFFFFFFFF)).astype(np.int32)
    del key

    # Hubs: more distinct neighbours than allowed; every edge touching one is cut.
    degree = np.bincount(u, minlength=n) + np.bincount(v, minlength=n)
    max_deg = _limit_array(cfg.max_degree_by_type, cfg.max_degree)
    hub_deg = np.where(degree > max_deg[codes], degree, 0)
    del degree
    edge_hub = np.maximum(hub_deg[u], hub_deg[v])
    keep = edge_hub == 0
    cut = np.flatnonzero(~keep)
    reasons = {int(i): f"hub_degree:{d}" for i, d in zip(cut, edge_hub[cut].tolist(), strict=True)}
    del edge_hub, hub_deg

    # Per-type limits on the components left after the hub cut.
    limits = _limit_array(cfg.max_per_person, _UNLIMITED)
    ncomp, comp = components(n, u[keep], v[keep])
    offending = _over_limit(comp, ncomp, codes, limits)
    if offending.any():
        idx = np.flatnonzero(keep & offending[comp[u]])
        sub_u, sub_v = u[idx], v[idx]
        k = len(labels.names)
        ev = edges["ev"].gather(idx).to_numpy()
        type_prio = _limit_array(cfg.type_priority, 0)
        prio = ev // k + type_prio[codes[sub_u]] + type_prio[codes[sub_v]]
        last = edges["last"].gather(idx).dt.epoch("us").fill_null(np.iinfo(np.int64).min)
        n_obs = edges["n_obs"].gather(idx).to_numpy()
        order = _strength_order(valid, sub_u, sub_v, prio, n_obs, last.to_numpy())
        sub_keep, sub_reason = _rebuild_with_limits(sub_u, sub_v, order, codes, limits)
        keep[idx[~sub_keep]] = False
        for i in np.flatnonzero(~sub_keep).tolist():
            reasons[int(idx[i])] = sub_reason[i]
        del comp
        ncomp, comp = scipy_components(n, u[keep], v[keep])
    return keep, reasons, ncomp, comp


def _cut_links(
    valid: pl.DataFrame,
    edges: pl.DataFrame,
    keep: np.ndarray,
    reasons: dict[int, str],
    labels: _Labels,
) -> pl.DataFrame:
    """rejected_links rows for the edges cut by the graph guards."""
    cut = np.flatnonzero(~keep)
    key = edges["key"].gather(cut).to_numpy()
    ends = np.concatenate([key >> np.uint64(32), key & np.uint64(0xFFFFFFFF)]).astype(np.int64)
    id_type = valid["t"].gather(ends).cast(pl.String)
    id_ = valid["id"].gather(ends)
    m = len(cut)
    k = len(labels.names)
    ev_code = k - 1 - edges["ev"].gather(cut).to_numpy() % k
    out = pl.DataFrame(
        {
            "id_type_a": id_type.slice(0, m),
            "id_a": id_.slice(0, m),
            "id_type_b": id_type.slice(m, m),
            "id_b": id_.slice(m, m),
            "evidence": [labels.names[c] for c in ev_code.tolist()],
            "reason": [reasons[i] for i in cut.tolist()],
        },
        schema=REJECTED_LINKS_SCHEMA,
    )
    return _order_pair(out)


def _key(valid: pl.DataFrame, nids: np.ndarray) -> pl.Series:
    """The key `id_type:id` of the given nodes."""
    return valid.select(
        pl.concat_str(
            [pl.col("t").gather(nids).cast(pl.String), pl.col("id").gather(nids)], separator=":"
        )
    ).to_series()


def _strength_order(
    valid: pl.DataFrame,
    u: np.ndarray,
    v: np.ndarray,
    prio: np.ndarray,
    n_obs: np.ndarray,
    last: np.ndarray,
) -> np.ndarray:
    """Positions of the edges strongest first: priority, observations, most recent, then by
    their ends' keys (so the order never depends on input row order)."""
    ku, kv = _key(valid, u), _key(valid, v)
    frame = pl.DataFrame({"prio": prio, "n": n_obs, "last": last, "ku": ku, "kv": kv})
    return (
        frame.with_row_index("i")
        .sort(
            [
                "prio",
                "n",
                "last",
                pl.min_horizontal("ku", "kv"),
                pl.max_horizontal("ku", "kv"),
            ],
            descending=[True, True, True, False, False],
        )["i"]
        .to_numpy()
    )
