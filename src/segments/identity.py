"""OneID: the identity graph that groups every identifier seen into people (`one_id`)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers .chash / .nchash on expressions)
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components

from segments.contract import (
    COMMERCE_ID_TYPES,
    TIMESTAMP,
    WECHAT_ID_TYPES,
    normalize_phone,
    sha256_hex,
)
from segments.errors import DataError, StageError
from segments.io import atomic_path
from segments.settings.identity import (
    NODE_TYPES,
    IdentityConfig,
)

NODE_TYPE = pl.Enum(NODE_TYPES)
_UNLIMITED = np.iinfo(np.int64).max // 4


MAP_SCHEMA = {
    "one_id": pl.String(),
    "id_type": pl.String(),
    "id": pl.String(),
    "first_seen": TIMESTAMP,
    "last_seen": TIMESTAMP,
    "sources": pl.List(pl.String()),
}
REJECTED_LINKS_SCHEMA = {
    "id_type_a": pl.String(),
    "id_a": pl.String(),
    "id_type_b": pl.String(),
    "id_b": pl.String(),
    "evidence": pl.String(),
    "reason": pl.String(),
}
REJECTED_IDS_SCHEMA = {
    "id_type": pl.String(),
    "id": pl.String(),
    "table": pl.String(),
    "reason": pl.String(),
}
CHANGES_SCHEMA = {
    "week": pl.String(),
    "one_id": pl.String(),
    "event": pl.String(),
    "from_one_id": pl.String(),
    "to_one_id": pl.String(),
}


@dataclass(frozen=True)
class IdentityResult:
    """What `build_identity` returns; every frame has the documented columns even when empty.

    - `one_id_map`: one_id, id_type, id, first_seen, last_seen, sources (list of "table" or
      "table:source" labels where the identifier was seen)
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


# ---------------------------------------------------------------------------------------------
# Reading the tables


def _names(lf: pl.LazyFrame) -> list[str]:
    return lf.collect_schema().names()


def _require(lf: pl.LazyFrame, table: str, columns: tuple[str, ...]) -> list[str]:
    names = _names(lf)
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"identity: table '{table}' has no column {', '.join(missing)}")
    return names


def _col_or_null(names: list[str], name: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(name).cast(dtype) if name in names else pl.lit(None, dtype=dtype)


def _present(tables: dict[str, pl.LazyFrame | None]) -> dict[str, pl.LazyFrame]:
    required = {
        "orders": ("buyer_id_type", "buyer_id", "paid_at"),
        "events": ("user_id_type", "user_id"),
        "messages": ("sender_id",),
        "identities": ("id_type_a", "id_a", "id_type_b", "id_b"),
        "consent": ("id_type", "id"),
    }
    out = {}
    for name, columns in required.items():
        lf = tables.get(name)
        if lf is not None:
            _require(lf, name, columns)
            out[name] = lf
    return out


_TYPE_COLUMNS = {
    "orders": ("buyer_id_type",),
    "events": ("user_id_type",),
    "messages": ("sender_id_type",),
    "identities": ("id_type_a", "id_type_b"),
    "consent": ("id_type",),
}


def _survey(tables: dict[str, pl.LazyFrame]) -> tuple[list[str], bool, int]:
    """One cheap pass over the low-cardinality columns: every evidence/source label the tables
    can produce (sorted: 'events', 'messages', 'consent', and 'orders'/'identities' alone and
    with each distinct `source`), whether any id type outside the known ones occurs, and an
    upper bound of the number of identifier occurrences."""
    labels = {"events", "messages", "consent", "orders", "identities"}
    queries: list[tuple[str, str, pl.LazyFrame]] = []
    for name, lf in tables.items():
        names = _names(lf)
        queries.append(("rows", name, lf.select(pl.len())))
        if name in ("orders", "identities") and "source" in names:
            queries.append(("source", name, lf.select(pl.col("source").cast(pl.String).unique())))
        for col in _TYPE_COLUMNS[name]:
            if col in names:
                queries.append(("type", name, lf.select(pl.col(col).cast(pl.String).unique())))
    found = pl.collect_all([q for _, _, q in queries])
    unknown = False
    occurrences = 0
    per_row = {"orders": 2, "events": 1, "messages": 2, "identities": 2, "consent": 1}
    for (kind, name, _), frame in zip(queries, found, strict=True):
        if kind == "rows":
            occurrences += int(frame.item()) * per_row[name]
            continue
        values = [v for v in frame.to_series().to_list() if v is not None]
        if kind == "source":
            labels |= {f"{name}:{v}" for v in values}
        else:
            unknown |= any(v not in NODE_TYPES for v in values)
    return sorted(labels), unknown, occurrences


class _Labels:
    """Labels interned as small integers (their rank in the sorted universe)."""

    def __init__(self, names: list[str], cfg: IdentityConfig, raw: bool) -> None:
        self.names = names
        # whether unknown id types occur: then their raw name is kept in a `raw` column
        self.raw = raw
        self.code = {n: i for i, n in enumerate(names)}
        self.bitmask = len(names) <= 64
        # evidence priority of each label: exact 'table:source', else 'table', else default
        self.priority = np.array(
            [
                cfg.source_priority.get(
                    n, cfg.source_priority.get(n.split(":")[0], cfg.default_source_priority)
                )
                for n in names
            ],
            dtype=np.int64,
        )

    def expr(self, table: str, names: list[str]) -> pl.Expr:
        """The label code (UInt16) of each row of `table`."""
        if table not in ("orders", "identities") or "source" not in names:
            return pl.lit(self.code[table], dtype=pl.UInt16)
        mapping = {n.split(":", 1)[1]: c for n, c in self.code.items() if n.startswith(table + ":")}
        return (
            pl.col("source")
            .cast(pl.String)
            .replace_strict(mapping, default=self.code[table], return_dtype=pl.UInt16)
        )

    def mark(self, code: pl.Expr) -> pl.Expr:
        """Per occurrence, what is aggregated into `src`: a bit, or the code itself."""
        if self.bitmask:
            return code.replace_strict(
                {c: 1 << c for c in range(len(self.names))}, return_dtype=pl.UInt64
            )
        return code

    def aggregate(self) -> pl.Expr:
        if self.bitmask:
            return pl.col("src").bitwise_or()
        return pl.col("src").unique().sort()

    def sources(self, src: pl.Series) -> pl.Series:
        """The sorted list of label names for each aggregated `src` value."""
        if not self.bitmask:
            mapping = dict(enumerate(self.names))
            return src.list.eval(pl.element().replace_strict(mapping, return_dtype=pl.String))
        masks = src.unique().drop_nulls().to_list()
        table = pl.DataFrame(
            {
                "src": pl.Series(masks, dtype=pl.UInt64),
                "sources": [[n for i, n in enumerate(self.names) if m >> i & 1] for m in masks],
            },
            schema={"src": pl.UInt64, "sources": pl.List(pl.String)},
        )
        return (
            src.to_frame("src")
            .join(table, on="src", how="left", maintain_order="left")
            .get_column("sources")
        )


def _typed(type_expr: pl.Expr, name: str, raw_name: str, labels: _Labels) -> list[pl.Expr]:
    """The Enum id type (null when unknown) as `name`, and when unknown types occur, their raw
    name as `raw_name` (null for known types)."""
    raw = type_expr.cast(pl.String)
    t = raw.cast(NODE_TYPE, strict=False)
    if not labels.raw:
        return [t.alias(name)]
    return [t.alias(name), pl.when(t.is_null()).then(raw).alias(raw_name)]


def _occurrence(
    lf: pl.LazyFrame, id_type: pl.Expr, id_: pl.Expr, ts: pl.Expr, code: pl.Expr, labels: _Labels
) -> pl.LazyFrame:
    return lf.select(
        *_typed(id_type, "t", "raw", labels),
        id_.cast(pl.String).alias("id"),
        ts.cast(TIMESTAMP).alias("ts"),
        labels.mark(code).alias("src"),
    ).filter(pl.col("id").is_not_null())


def _link(
    lf: pl.LazyFrame,
    type_a: pl.Expr,
    id_a: pl.Expr,
    type_b: pl.Expr,
    id_b: pl.Expr,
    ts: pl.Expr,
    code: pl.Expr,
    labels: _Labels,
) -> pl.LazyFrame:
    return lf.select(
        *_typed(type_a, "ta", "ra", labels),
        id_a.cast(pl.String).alias("ia"),
        *_typed(type_b, "tb", "rb", labels),
        id_b.cast(pl.String).alias("ib"),
        ts.cast(TIMESTAMP).alias("ts"),
        code.alias("code"),
    ).filter(pl.col("ia").is_not_null() & pl.col("ib").is_not_null())


def _gather(
    tables: dict[str, pl.LazyFrame], cfg: IdentityConfig, labels: _Labels
) -> tuple[list[pl.LazyFrame], list[pl.LazyFrame]]:
    """Identifier occurrences (t, raw, id, ts, src) and link rows (ta, ra, ia, tb, rb, ib, ts,
    code) from every table present."""
    occ: list[pl.LazyFrame] = []
    links: list[pl.LazyFrame] = []

    if "orders" in tables:
        orders = tables["orders"]
        names = _names(orders)
        code = labels.expr("orders", names)
        paid = pl.col("paid_at")
        occ.append(
            _occurrence(orders, pl.col("buyer_id_type"), pl.col("buyer_id"), paid, code, labels)
        )
        if "phone_sha256" in names:
            phone_type = pl.lit("phone_sha256")
            occ.append(_occurrence(orders, phone_type, pl.col("phone_sha256"), paid, code, labels))
            links.append(
                _link(
                    orders,
                    pl.col("buyer_id_type"),
                    pl.col("buyer_id"),
                    phone_type,
                    pl.col("phone_sha256"),
                    paid,
                    code,
                    labels,
                )
            )

    if "events" in tables:
        events = tables["events"]
        names = _names(events)
        occ.append(
            _occurrence(
                events,
                pl.col("user_id_type"),
                pl.col("user_id"),
                _col_or_null(names, "ts", TIMESTAMP),
                labels.expr("events", names),
                labels,
            )
        )

    if "messages" in tables:
        messages = tables["messages"]
        names = _names(messages)
        ts = _col_or_null(names, "ts", TIMESTAMP)
        code = labels.expr("messages", names)
        sender_type = (
            pl.col("sender_id_type").cast(pl.String).fill_null("wecom_external_userid")
            if "sender_id_type" in names
            else pl.lit("wecom_external_userid")
        )
        occ.append(_occurrence(messages, sender_type, pl.col("sender_id"), ts, code, labels))
        if cfg.mention_id_type is not None and "mentions" in names:
            mentioned = messages.select(ts.alias("ts"), pl.col("mentions")).explode("mentions")
            occ.append(
                _occurrence(
                    mentioned,
                    pl.lit(cfg.mention_id_type),
                    pl.col("mentions"),
                    pl.col("ts"),
                    code,
                    labels,
                )
            )

    if "identities" in tables:
        identities = tables["identities"]
        names = _names(identities)
        code = labels.expr("identities", names)
        ts = _col_or_null(names, "observed_at", TIMESTAMP)
        for side in ("a", "b"):
            occ.append(
                _occurrence(
                    identities, pl.col(f"id_type_{side}"), pl.col(f"id_{side}"), ts, code, labels
                )
            )
        links.append(
            _link(
                identities,
                pl.col("id_type_a"),
                pl.col("id_a"),
                pl.col("id_type_b"),
                pl.col("id_b"),
                ts,
                code,
                labels,
            )
        )

    if "consent" in tables:
        consent = tables["consent"]
        names = _names(consent)
        occ.append(
            _occurrence(
                consent,
                pl.col("id_type"),
                pl.col("id"),
                _col_or_null(names, "updated_at", TIMESTAMP),
                labels.expr("consent", names),
                labels,
            )
        )
    return occ, links


# ---------------------------------------------------------------------------------------------
# Nodes


def _node_hash(seed: int, t: str = "t", raw: str | None = "raw", id_: str = "id") -> pl.Expr:
    """Hash of (t, raw, id); `raw` is the unknown-type string (null for known types)."""
    raw_expr = pl.col(raw) if raw else pl.lit(None, dtype=pl.String)
    return pl.struct(pl.col(t).alias("t"), raw_expr.alias("raw"), pl.col(id_).alias("id")).hash(
        seed=seed
    )


def _aggregate_nodes(occ: list[pl.LazyFrame], labels: _Labels, passes: int) -> pl.DataFrame:
    """Distinct (t, [raw,] id) with first/last seen and the aggregated sources `src`.

    With `passes` > 1 the identifiers are split by a hash of the id and aggregated one part
    at a time: the inputs are read once per pass, and the hash table is `passes` times
    smaller."""
    src_dtype = pl.UInt64() if labels.bitmask else pl.List(pl.UInt16())
    keys = ["t", "raw", "id"] if labels.raw else ["t", "id"]
    schema = {
        "t": NODE_TYPE,
        **({"raw": pl.String()} if labels.raw else {}),
        "id": pl.String(),
        "first_seen": TIMESTAMP,
        "last_seen": TIMESTAMP,
        "src": src_dtype,
    }
    if not occ:
        return pl.DataFrame(schema=schema)
    rows = pl.concat(occ, how="vertical")
    aggs = [
        pl.col("ts").min().alias("first_seen"),
        pl.col("ts").max().alias("last_seen"),
        labels.aggregate(),
    ]
    parts = []
    for part in range(passes):
        chosen = rows if passes == 1 else rows.filter(pl.col("id").hash(97) % passes == part)
        parts.append(chosen.group_by(keys).agg(aggs).collect().select(list(schema)).cast(schema))
    return pl.concat(parts, rechunk=False) if len(parts) > 1 else parts[0]


def _pattern_failures(nodes: pl.DataFrame, cfg: IdentityConfig) -> np.ndarray:
    """Boolean per row of `nodes`: the id fails its type's pattern.

    The regex of each type runs on that type's rows only (a loop over types, not rows)."""
    codes = nodes["t"].to_physical().fill_null(255).to_numpy()
    fail = np.zeros(len(codes), dtype=bool)
    for code, name in enumerate(NODE_TYPES):
        pattern = cfg.patterns.get(name)
        if pattern is None:
            continue
        rows = np.flatnonzero(codes == code)
        if len(rows):
            ok = nodes["id"].gather(rows).str.contains(pattern).fill_null(False)
            fail[rows] = ~ok.to_numpy()
    return fail


def _split_nodes(nodes: pl.DataFrame, cfg: IdentityConfig) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Valid nodes (t, id, first_seen, last_seen, src; a node's id in the graph is its row
    number), and the rejected identifiers (t, raw, id, src, reason)."""
    if "raw" not in nodes.columns:
        nodes = nodes.with_columns(pl.lit(None, dtype=pl.String).alias("raw"))
    blocked = pl.Series("blocked", cfg.blocked_set(), dtype=pl.String).implode()
    reason = (
        pl.when(pl.col("t").is_null())
        .then(pl.lit("unknown_id_type"))
        .when(pl.col("t") == "phone")
        .then(pl.lit("raw_phone"))
        .when(pl.col("id").str.strip_chars().str.to_lowercase().is_in(blocked))
        .then(pl.lit("blocked_value"))
        .when(pl.Series(_pattern_failures(nodes, cfg)))
        .then(pl.lit("pattern:") + pl.col("t").cast(pl.String))
    )
    reasons = nodes.select(reason.alias("reason")).to_series()
    ok = reasons.is_null()
    if ok.all():
        rejected = nodes.clear().with_columns(reasons.clear())
        return nodes.drop("raw"), rejected
    rejected = nodes.filter(~ok).with_columns(reasons.filter(~ok))
    valid = nodes.filter(ok).drop("raw")
    return valid, rejected


def _unique_hash(valid: pl.DataFrame, rejected: pl.DataFrame) -> tuple[int, pl.Series, pl.Series]:
    """A seed under which the hash of (t, raw, id) is unique over every node seen, and the
    hashes of `valid` and `rejected` under it. Joins on the hash are then exact."""
    for seed in (1597, 28657, 514229, 433494437, 2971215073):
        hv = valid.select(_node_hash(seed, raw=None)).to_series()
        hr = rejected.select(_node_hash(seed)).to_series()
        every = pl.concat([hv, hr]).sort()
        if not (every.slice(1) == every.slice(0, max(every.len() - 1, 0))).any():
            return seed, hv.alias("h"), hr.alias("h")
    raise StageError("identity: no collision-free hash of the identifiers was found")


def _display(t: str, raw: str, id_: str) -> tuple[pl.Expr, pl.Expr]:
    """The id_type string and the id to show for a rejected identifier (a raw phone is shown
    by its sha256, never its digits)."""
    id_type = pl.coalesce(pl.col(t).cast(pl.String), pl.col(raw))
    shown = pl.when(pl.col(t) == "phone").then(sha256_hex(pl.col(id_))).otherwise(pl.col(id_))
    return id_type, shown


def _rejected_ids(rejected: pl.DataFrame, labels: _Labels) -> pl.DataFrame:
    id_type, shown = _display("t", "raw", "id")
    return (
        rejected.select(
            id_type.alias("id_type"),
            shown.alias("id"),
            labels.sources(rejected["src"]).alias("sources"),
            "reason",
        )
        .explode("sources")
        .select(
            "id_type",
            "id",
            pl.col("sources").str.split(":").list.first().alias("table"),
            "reason",
        )
        .unique()
        .sort("id_type", "id", "table")
        .cast(REJECTED_IDS_SCHEMA)
    )


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
# `build_identity(components=...)` swaps the engine (segments.spark runs it on Spark).
ComponentsFn = Callable[[int, np.ndarray, np.ndarray], tuple[int, np.ndarray]]


def _components(n: int, u: np.ndarray, v: np.ndarray) -> tuple[int, np.ndarray]:
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


# ---------------------------------------------------------------------------------------------
# One ids


class _ContentIds:
    """Content ids: "U" + the first 16 hex of sha256 of a component's smallest key
    `id_type:id` (with a salt appended only to step around an id last week used)."""

    def __init__(self, valid: pl.DataFrame) -> None:
        self.valid = valid

    def __call__(self, first: pl.Series, salt: str = "") -> pl.Series:
        nids = first.to_numpy()
        text = pl.concat_str(
            [pl.col("t").gather(nids).cast(pl.String), pl.col("id").gather(nids)], separator=":"
        )
        if salt:
            text = text + pl.lit(salt)
        out = self.valid.select((pl.lit("U") + sha256_hex(text).str.slice(0, 16)).alias("one_id"))
        return out.to_series()


def _new_events(ids: pl.DataFrame, week_label: str) -> pl.DataFrame:
    return ids.select(
        pl.lit(week_label).alias("week"),
        "one_id",
        pl.lit("new").alias("event"),
        pl.lit(None, dtype=pl.String).alias("from_one_id"),
        pl.col("one_id").alias("to_one_id"),
    )


def _previous_map(previous: pl.DataFrame | pl.LazyFrame | None) -> pl.LazyFrame | None:
    """Last week's map as a LazyFrame (t, id, prev_id), or None when there is none."""
    if previous is None:
        return None
    lf = previous.lazy()
    missing = [c for c in ("one_id", "id_type", "id") if c not in _names(lf)]
    if missing:
        raise DataError(f"identity: previous one_id_map has no column {', '.join(missing)}")
    return lf.select(
        pl.col("id_type").cast(pl.String).cast(NODE_TYPE, strict=False).alias("t"),
        pl.col("id").cast(pl.String),
        pl.col("one_id").cast(pl.String).alias("prev_id"),
    ).drop_nulls()


def _previous_links(
    prev: pl.LazyFrame, valid: pl.DataFrame, valid_h: pl.Series, comp: np.ndarray, seed: int
) -> pl.DataFrame:
    """(comp, prev_id, n): how many of each component's nodes carried each old one_id.

    Matched on the collision-free node hash; a second, independent hash must agree too, so
    that an old identifier that is no node now cannot borrow a node's hash (no strings are
    compared, which keeps the join small)."""
    check_seed = seed ^ 0x5EED
    nodes = pl.DataFrame(
        [
            valid_h.alias("h"),
            valid.select(_node_hash(check_seed, raw=None).alias("h2")).to_series(),
            pl.Series("comp", comp),
        ]
    )
    return (
        prev.select(
            _node_hash(seed, raw=None).alias("h"),
            _node_hash(check_seed, raw=None).alias("h2_prev"),
            "prev_id",
        )
        .join(nodes.lazy(), on="h", how="inner")
        .filter(pl.col("h2") == pl.col("h2_prev"))
        .group_by("comp", "prev_id")
        .agg(pl.len().alias("n"))
        .collect()
    )


def _assign_ids(
    comps: pl.DataFrame,
    content: _ContentIds,
    links: pl.DataFrame | None,
    prev: pl.LazyFrame | None,
    week_label: str,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Final one_id per component (comp, one_id) and the change events.

    `comps` has comp, size, first (the node holding the smallest id_type:id); `links` (comp,
    prev_id, n) ties components to last week's one_ids (see `_previous_links`); `prev` is
    last week's map."""
    if links is None or prev is None:
        ids = comps.select("comp").with_columns(content(comps["first"]))
        return ids, _new_events(ids, week_label)

    links = links.with_columns(pl.len().over("prev_id").alias("parts"))
    # Where an old id that is now split lives on: the part holding most of its nodes, then
    # the larger component, then the smaller content id. (Only split ids are sorted.)
    contested = links.filter(pl.col("parts") > 1).join(comps, on="comp")
    contested = (
        contested.with_columns(content(contested["first"]).alias("content_id"))
        .sort(["prev_id", "n", "size", "content_id"], descending=[False, True, True, False])
        .group_by("prev_id", maintain_order=True)
        .first()
        .select("prev_id", pl.col("comp").alias("owner"))
    )
    links = links.join(contested, on="prev_id", how="left").with_columns(
        (pl.col("owner").is_null() | (pl.col("comp") == pl.col("owner"))).alias("owns")
    )
    # A component owning several old ids (a merge) keeps the one with most nodes here, then
    # the smallest id.
    owned = links.filter("owns").with_columns(pl.len().over("comp").alias("held"))
    survivor = pl.concat(
        [
            owned.filter(pl.col("held") == 1).select("comp", "prev_id"),
            owned.filter(pl.col("held") > 1)
            .sort(["comp", "n", "prev_id"], descending=[False, True, False])
            .group_by("comp", maintain_order=True)
            .first()
            .select("comp", "prev_id"),
        ]
    ).rename({"prev_id": "survivor"})

    # Components without an old id to keep get their content id, which must not take an id
    # that last week's map used.
    fresh = comps.join(survivor, on="comp", how="anti").select("comp", "first")
    fresh = fresh.with_columns(content(fresh["first"]))
    old_ids = prev.select(pl.col("prev_id").alias("one_id")).unique()
    for attempt in range(1, 6):
        clashing = fresh.lazy().join(old_ids, on="one_id", how="semi").collect()
        if clashing.height == 0:
            break
        salted = clashing.select(
            "comp", content(clashing["first"], f"#{week_label}#{attempt}").alias("salted")
        )
        fresh = (
            fresh.join(salted, on="comp", how="left")
            .with_columns(pl.coalesce("salted", "one_id").alias("one_id"))
            .drop("salted")
        )
    ids = pl.concat(
        [survivor.select("comp", pl.col("survivor").alias("one_id")), fresh.drop("first")]
    )

    with_ids = links.join(ids, on="comp")
    merged = with_ids.filter(pl.col("owns") & (pl.col("prev_id") != pl.col("one_id"))).select(
        "one_id", pl.lit("merged").alias("event"), pl.col("prev_id").alias("from_one_id")
    )
    split = with_ids.filter(~pl.col("owns")).select(
        "one_id", pl.lit("split").alias("event"), pl.col("prev_id").alias("from_one_id")
    )
    new = _new_events(fresh.join(links, on="comp", how="anti"), week_label)
    changes = pl.concat(
        [
            new,
            pl.concat([merged, split]).select(
                pl.lit(week_label).alias("week"),
                "one_id",
                "event",
                "from_one_id",
                pl.col("one_id").alias("to_one_id"),
            ),
        ]
    )
    return ids, changes


# ---------------------------------------------------------------------------------------------
# The stage


# ---------------------------------------------------------------------------------------------
# Reusing last run's identifiers


NODE_CACHE_VERSION = 1


@dataclass(frozen=True)
class NodeCache:
    """Where the aggregated identifiers of the last build are kept (`folder`), and this build's
    tables as `pieces`: per table, {key: rows}. A key names rows whose content cannot change
    under it (a validated file of the ingest cache, the slices read of it, the rows later rows
    replaced, and the week's cut when it falls inside the file).

    When every piece of the last build is still a piece of this one, the identifiers are last
    build's nodes plus those of the new pieces only: first/last seen and the source bits
    aggregate the same in any grouping, so the nodes are exactly those of a full read."""

    folder: Path
    pieces: dict[str, dict[str, pl.LazyFrame]]

    def _meta(self, labels: _Labels, cfg: IdentityConfig) -> dict[str, Any]:
        return {
            "version": NODE_CACHE_VERSION,
            # this code and polars' (the validated files' keys already cover the readers)
            "code": hashlib.sha256(
                Path(__file__).read_bytes() + pl.__version__.encode()
            ).hexdigest()[:20],
            "labels": labels.names,
            "mention_id_type": cfg.mention_id_type,
        }

    def reuse(
        self, present: dict[str, pl.LazyFrame], labels: _Labels, cfg: IdentityConfig
    ) -> tuple[pl.DataFrame, dict[str, pl.LazyFrame], int] | None:
        """(last build's nodes, the tables' new pieces, how many) when the last build's pieces
        are all still here; None when everything must be read (no usable cache, or unknown id
        types or over 64 source labels: those nodes are not kept)."""
        if labels.raw or not labels.bitmask or set(present) - set(self.pieces):
            return None
        try:
            meta = json.loads((self.folder / "meta.json").read_text())
            same = {k: meta.get(k) for k in self._meta(labels, cfg)} == self._meta(labels, cfg)
            stored: dict[str, list[str]] = meta["pieces"]
            if not same or set(stored) - set(present):
                return None
            if any(set(keys) - set(self.pieces[t]) for t, keys in stored.items()):
                return None  # a file left, changed, or lost rows to a later one
            nodes = pl.read_parquet(self.folder / meta["nodes"], glob=False)
        except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError):
            return None  # no cache, or one this build cannot use: read everything
        fresh = {
            t: [lf for key, lf in self.pieces[t].items() if key not in stored.get(t, ())]
            for t in present
        }
        new = sum(len(lfs) for lfs in fresh.values())
        return nodes, {t: pl.concat(lfs) for t, lfs in fresh.items() if lfs}, new

    def save(self, nodes: pl.DataFrame, labels: _Labels, cfg: IdentityConfig) -> None:
        """Keep this build's nodes for the next one. The nodes file is named by the pieces it
        covers and written before the meta that points at it: a crash leaves the last good
        pair."""
        if labels.raw or not labels.bitmask:
            return
        pieces = {t: sorted(keys) for t, keys in sorted(self.pieces.items())}
        meta = self._meta(labels, cfg) | {"pieces": pieces}
        name = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:20]
        meta["nodes"] = f"nodes-{name}.parquet"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with atomic_path(self.folder / meta["nodes"]) as tmp:  # sorted: same inputs, same file
            nodes.sort("t", "id").write_parquet(tmp, compression="lz4")
            tmp.chmod(0o600)
        with atomic_path(self.folder / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, sort_keys=True))
            tmp.chmod(0o600)
        for old in self.folder.glob("nodes-*.parquet"):
            if old.name != meta["nodes"]:
                old.unlink(missing_ok=True)


def _as_occurrences(nodes: pl.DataFrame) -> pl.LazyFrame:
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


def build_identity(
    tables: dict[str, pl.LazyFrame | None],
    cfg: IdentityConfig,
    previous: pl.DataFrame | pl.LazyFrame | None = None,
    week_label: str = "",
    components: ComponentsFn | None = None,
    node_cache: NodeCache | None = None,
) -> IdentityResult:
    """Group every identifier in `tables` into people.

    Input: the canonical `orders`, `events`, `messages`, `identities`, `consent` LazyFrames
    (any may be None or absent); `previous`, last week's `one_id_map` (one_id, id_type, id;
    a LazyFrame scan of its parquet is best), keeps one_ids stable. Nodes are the valid
    identifiers; edges are the identities rows and each order's buyer id <-> phone_sha256.
    Blocked or malformed identifiers are not nodes; hubs lose all their edges; a component
    that holds too many identifiers of one type is rebuilt strongest evidence first. This is
    the one global stage: it collects. Row order of the frames is not meaningful (sort them
    to compare); their content is deterministic whatever the input row order.
    With `node_cache`, the identifiers are last build's plus those of the new pieces only
    (`NodeCache`); the result is the same as a full read.
    Output: an `IdentityResult` (see there); `stats["seconds"]` and `stats["cpu_seconds"]`
    time each step, `stats["pieces"]` counts the pieces read and reused.
    """
    clock = _Clock()
    prev = _previous_map(previous)
    present = _present(tables)
    names, unknown_types, occurrences = _survey(present)
    labels = _Labels(names, cfg, raw=unknown_types)
    occ, links = _gather(present, cfg, labels)
    reuse = node_cache.reuse(present, labels, cfg) if node_cache else None
    if reuse is not None:  # last build's nodes plus the new pieces' identifiers only
        nodes_before, fresh, _ = reuse
        occ = [*_gather(fresh, cfg, labels)[0], _as_occurrences(nodes_before)]
    passes = max(1, -(-occurrences // cfg.rows_per_pass))
    nodes_raw = _aggregate_nodes(occ, labels, passes)
    pieces = None
    if node_cache:
        total = sum(len(p) for p in node_cache.pieces.values())
        read = total if reuse is None else reuse[2]
        pieces = {"read": read, "reused": total - read}
        if read:  # with nothing new, the cache already holds these nodes
            node_cache.save(nodes_raw, labels, cfg)
    clock.lap("nodes")
    valid, rejected = _split_nodes(nodes_raw, cfg)
    del nodes_raw
    seed, valid_h, rejected_h = _unique_hash(valid, rejected)
    rejected_ids = _rejected_ids(rejected, labels)
    clock.lap("validate")
    keys = pl.DataFrame([valid_h, pl.Series("nid", np.arange(valid.height, dtype=np.uint32))])
    edges, bad_rows = _edges(links, keys, rejected_h, seed, labels)
    del keys
    bad_links = _bad_links(bad_rows, valid, valid_h, rejected, rejected_h, labels)
    del rejected_h, bad_rows
    if prev is None:
        del valid_h
    clock.lap("edges")

    codes = valid["t"].to_physical().to_numpy().astype(np.int8)
    keep, cut_reasons, ncomp, comp = _guarded_components(
        valid, codes, edges, labels, cfg, components or _components
    )
    edges_kept = int(keep.sum())
    cut_graph = _cut_links(valid, edges, keep, cut_reasons, labels)
    del edges, keep, cut_reasons
    rejected_links = pl.concat([bad_links, cut_graph]).sort(
        "id_type_a", "id_a", "id_type_b", "id_b", "evidence", "reason"
    )
    clock.lap("graph")

    # One ids: content ids come from each component's smallest key.
    sizes = np.bincount(comp, minlength=ncomp)
    comps = pl.DataFrame(
        {
            "comp": np.arange(ncomp, dtype=np.int32),
            "size": sizes,
            "first": _min_nodes(valid, codes, comp, ncomp),
        }
    )
    links = None if prev is None else _previous_links(prev, valid, valid_h, comp, seed)
    ids, changes = _assign_ids(comps, _ContentIds(valid), links, prev, week_label)
    del comps, links
    one_id = ids.sort("comp")["one_id"].gather(comp)
    del ids
    on_order = _on_order(valid["src"], labels, codes)
    one_id_map = pl.DataFrame(
        [
            one_id,
            valid["t"].cast(pl.String).alias("id_type"),
            valid["id"],
            valid["first_seen"],
            valid["last_seen"],
            labels.sources(valid["src"]).alias("sources"),
        ]
    )
    del valid, one_id
    clock.lap("one_ids")

    stats = _stats(codes, on_order, comp, ncomp, sizes, rejected_links, rejected_ids, edges_kept)
    clock.lap("report")
    stats["seconds"] = clock.laps
    stats["cpu_seconds"] = clock.cpu
    if pieces is not None:
        stats["pieces"] = pieces
    return IdentityResult(
        one_id_map=one_id_map,
        rejected_links=rejected_links,
        rejected_ids=rejected_ids,
        changes=changes.cast(CHANGES_SCHEMA),
        stats=stats,
    )


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
        ncomp, comp = _components(n, u[keep], v[keep])
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


def _key(valid: pl.DataFrame, nids: np.ndarray) -> pl.Series:
    """The key `id_type:id` of the given nodes."""
    return valid.select(
        pl.concat_str(
            [pl.col("t").gather(nids).cast(pl.String), pl.col("id").gather(nids)], separator=":"
        )
    ).to_series()


def _min_nodes(valid: pl.DataFrame, codes: np.ndarray, comp: np.ndarray, ncomp: int) -> np.ndarray:
    """Per component, the node with its smallest key `id_type:id` (smallest type first: the
    Enum codes follow the types' lexical order; then the smallest id among that type's)."""
    tmin = np.full(ncomp, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(tmin, comp, codes)
    cand = np.flatnonzero(codes == tmin[comp])
    count = np.bincount(comp[cand], minlength=ncomp)
    best = np.zeros(ncomp, dtype=np.int64)
    single = cand[count[comp[cand]] == 1]
    best[comp[single]] = single
    multi = cand[count[comp[cand]] > 1]
    if len(multi):
        tie = (
            pl.DataFrame({"comp": comp[multi], "nid": multi, "id": valid["id"].gather(multi)})
            .group_by("comp")
            .agg(pl.col("nid").sort_by("id").first())
        )
        best[tie["comp"].to_numpy()] = tie["nid"].to_numpy()
    return best


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


# ---------------------------------------------------------------------------------------------
# Using the map


def attach_one_id(
    lf: pl.LazyFrame,
    id_map: pl.LazyFrame | pl.DataFrame,
    id_type_col: str,
    id_col: str,
) -> pl.LazyFrame:
    """`lf` with a `one_id` column from `id_map` (one_id, id_type, id), by a left join.

    Rows whose identifier is not in the map (rejected, or never seen) get a null one_id; the
    caller decides what to do with them. `id_type_col` names the column holding the id type,
    or is a known id type used as a literal when `lf` has no such column or it equals `id_col`
    (`attach_one_id(orders, m, "phone_sha256", "phone_sha256")`). An existing `one_id` is
    replaced.
    """
    names = _names(lf)
    if id_col not in names:
        raise DataError(f"attach_one_id: the table has no column '{id_col}'")
    if id_type_col in NODE_TYPES and (id_type_col not in names or id_type_col == id_col):
        type_expr = pl.lit(id_type_col)
    elif id_type_col in names:
        type_expr = pl.col(id_type_col).cast(pl.String)
    else:
        raise DataError(
            f"attach_one_id: the table has no column '{id_type_col}' and it is not an id type"
        )
    mapping = (id_map.lazy() if isinstance(id_map, pl.DataFrame) else id_map).select(
        pl.col("id_type").cast(pl.String).alias("__t"),
        pl.col("id").cast(pl.String).alias("__i"),
        pl.col("one_id").cast(pl.String).alias("one_id"),
    )
    base = lf.drop("one_id") if "one_id" in names else lf
    return (
        base.with_columns(type_expr.alias("__t"), pl.col(id_col).cast(pl.String).alias("__i"))
        .join(mapping, on=["__t", "__i"], how="left", maintain_order="left")
        .drop("__t", "__i")
    )


def lookup(one_id_map: pl.DataFrame, id_type: str, id: str) -> pl.DataFrame:
    """All rows of `one_id_map` for the person holding (id_type, id); empty when unknown.

    A raw `phone` is normalised and hashed first, and looked up as its `phone_sha256`.
    """
    if id_type == "phone":
        digits = pl.select(normalize_phone(pl.lit(id, dtype=pl.String))).item()
        if digits is None:
            raise DataError(
                f"lookup: '{id}' is not a valid mainland mobile number (11 digits, 1[3-9]...)"
            )
        id_type = "phone_sha256"
        id = pl.select(sha256_hex(pl.lit(digits))).item()
    person = one_id_map.filter((pl.col("id_type") == id_type) & (pl.col("id") == id)).select(
        "one_id"
    )
    return one_id_map.join(person.unique(), on="one_id", how="semi").sort("id_type", "id")


def bcubed(pred: pl.DataFrame, truth: pl.DataFrame) -> tuple[float, float]:
    """B-cubed (precision, recall) of the clustering `pred` (one_id, id_type, id) against
    `truth` (person_id, id_type, id), over the identifiers present in both.

    Precision averages, over identifiers, the share of its predicted cluster that shares its
    true person; recall, the share of its true person that shares its predicted cluster.
    """
    for name, frame, cluster in (("pred", pred, "one_id"), ("truth", truth, "person_id")):
        missing = [c for c in (cluster, "id_type", "id") if c not in frame.columns]
        if missing:
            raise DataError(f"bcubed: {name} has no column {', '.join(missing)}")
        if frame.select(pl.struct("id_type", "id").is_duplicated().any()).item():
            raise DataError(f"bcubed: {name} assigns some identifier to more than one cluster")
    both = pred.select("one_id", "id_type", "id").join(
        truth.select("person_id", "id_type", "id"), on=["id_type", "id"], how="inner"
    )
    total = both.height
    if total == 0:
        raise DataError("bcubed: no identifier is in both pred and truth")
    cells = both.group_by("one_id", "person_id").agg(pl.len().cast(pl.Float64).alias("n"))
    scored = cells.with_columns(
        pl.col("n").sum().over("one_id").alias("n_pred"),
        pl.col("n").sum().over("person_id").alias("n_true"),
    )
    precision, recall = scored.select(
        ((pl.col("n") ** 2 / pl.col("n_pred")).sum() / total).alias("precision"),
        ((pl.col("n") ** 2 / pl.col("n_true")).sum() / total).alias("recall"),
    ).row(0)
    return float(precision), float(recall)
