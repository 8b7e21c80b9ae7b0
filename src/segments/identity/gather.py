"""OneID nodes: the tables surveyed, identifiers and links gathered, aggregated, validated."""

from __future__ import annotations

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers .chash / .nchash on expressions)

from segments.contract import (
    HASHED_ID_PREFIX,
    PHONE_ID_TYPES,
    REFUSED_ID_PREFIX,
    TIMESTAMP,
    sha256_hex,
)
from segments.errors import DataError, StageError
from segments.identity.schema import NODE_TYPE, REJECTED_IDS_SCHEMA
from segments.settings.identity import NODE_TYPES, IdentityConfig

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


def _plain_occurrence(
    lf: pl.LazyFrame, table: str, id_col: str, ts_col: str, labels: _Labels
) -> pl.LazyFrame:
    """The identifiers of a table with one id per row (`<id_col>_type`, `<id_col>`) and a time."""
    names = _names(lf)
    return _occurrence(
        lf,
        pl.col(f"{id_col}_type"),
        pl.col(id_col),
        _col_or_null(names, ts_col, TIMESTAMP),
        labels.expr(table, names),
        labels,
    )


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
        occ.append(_plain_occurrence(tables["events"], "events", "user_id", "ts", labels))

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
        occ.append(_plain_occurrence(tables["consent"], "consent", "id", "updated_at", labels))
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

    The regex of each type runs on that type's rows only (a loop over types, not rows). An id
    that held a phone was checked at ingest on its value as written (`contract.hide_phone_id`):
    its hashed form passes, its refused form fails."""
    codes = nodes["t"].to_physical().fill_null(255).to_numpy()
    fail = np.zeros(len(codes), dtype=bool)
    for code, name in enumerate(NODE_TYPES):
        pattern = cfg.patterns.get(name)
        if pattern is None:
            continue
        rows = np.flatnonzero(codes == code)
        if len(rows):
            ids = nodes["id"].gather(rows)
            ok = ids.str.contains(pattern).fill_null(False)
            if name not in PHONE_ID_TYPES:
                ok = (ok | ids.str.starts_with(HASHED_ID_PREFIX)) & ~ids.str.starts_with(
                    REFUSED_ID_PREFIX
                ).fill_null(False)
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


def _extend_hash(
    seed: int, kept_h: pl.Series, added: pl.DataFrame, rejected: pl.DataFrame
) -> tuple[int, pl.Series | None, pl.Series | None]:
    """`_unique_hash` of the kept nodes (hashes `kept_h` under `seed`, the first seed unique
    over them) followed by the `added` ones, and `rejected`, hashing the added and rejected
    identifiers only. The identifiers only grow, so every seed before `seed` still collides:
    when `seed` is still unique it is what `_unique_hash` finds. (seed, None, None) when it
    is not (the caller runs `_unique_hash`)."""
    ha = added.select(_node_hash(seed, raw=None)).to_series()
    hr = rejected.select(_node_hash(seed)).to_series()
    new = pl.concat([ha, hr]).sort()
    if (new.slice(1) == new.slice(0, max(new.len() - 1, 0))).any():
        return seed, None, None
    if kept_h.is_in(new.implode()).any():
        return seed, None, None
    return seed, pl.concat([kept_h, ha]).alias("h"), hr.alias("h")


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
