"""Selecting a pack's people in a week's tags: rules, suppression, holdouts, lookalikes."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl
import polars_hash  # noqa: F401  (registers `.chash` on expressions)

from segments.audiences.definitions import (
    PackDef,
    closure,
    load_audiences,
    lookalike_pack,
    rule_text,
)
from segments.audiences.filters import FilterError, check_filter, compile_filter, first_line
from segments.errors import ConfigError, DataError
from segments.exprs import div

# Tag columns the selection itself reads.
OPTED_OUT = "is_opted_out"
COUPON_HUNTER = "is_coupon_hunter"
RECENCY = "recency_days"
PREDICTED_VALUE = "predicted_value_52w"

# Counts of a Selection, in step order.
COUNT_KEYS = (
    "matched",
    "after_opted_out",
    "after_coupon_hunters",
    "after_recent_buyers",
    "after_exclude",
    "after_limit",
    "holdout",
    "final",
)


# ---------------------------------------------------------------------------------------------
# Rule expressions


def _where_expr(pack: PackDef, schema: Mapping[str, pl.DataType]) -> pl.Expr | None:
    if pack.where is None:
        return None
    try:
        expr = compile_filter(pack.where)
    except FilterError as e:
        raise FilterError(f"pack '{pack.name}': filter {pack.where!r}: {e}.") from None
    check_filter(expr, pack.where, schema, pack.name)
    return expr.fill_null(False)


def base_expr(
    pack: PackDef, packs: Mapping[str, PackDef], schema: Mapping[str, pl.DataType]
) -> pl.Expr:
    """True for people the pack's `where` or any included pack's rule matches (nulls: False)."""
    parts = [e for e in [_where_expr(pack, schema)] if e is not None]
    parts += [rule_expr(packs[i], packs, schema) for i in pack.include]
    if not parts:
        raise ConfigError(f"pack '{pack.name}': it has no `where` and includes no pack.")
    return pl.any_horizontal(parts) if len(parts) > 1 else parts[0]


def rule_expr(
    pack: PackDef, packs: Mapping[str, PackDef], schema: Mapping[str, pl.DataType]
) -> pl.Expr:
    """The pack's rule: `base_expr` and not any excluded pack's rule. No suppression, no limit:
    this is what `include` and `exclude` of other packs refer to."""
    closure(pack, packs)
    if pack.lookalike is not None:
        raise ConfigError(
            f"pack '{pack.name}' is a lookalike pack: it cannot be included or excluded."
        )
    expr = base_expr(pack, packs, schema)
    excluded = excluded_expr(pack, packs, schema)
    return expr if excluded is None else expr & ~excluded


def excluded_expr(
    pack: PackDef, packs: Mapping[str, PackDef], schema: Mapping[str, pl.DataType]
) -> pl.Expr | None:
    """True for people any pack in `pack.exclude` matches (None when it excludes nothing)."""
    parts = [rule_expr(packs[e], packs, schema) for e in pack.exclude]
    if not parts:
        return None
    return pl.any_horizontal(parts) if len(parts) > 1 else parts[0]


def holdout_score(one_id: str | pl.Expr, pack: str) -> pl.Expr:
    """`int(sha256(f"{pack}:{one_id}")[:8], 16) / 2**32`: a per-person number in [0, 1)."""
    oid = pl.col(one_id) if isinstance(one_id, str) else one_id
    prefix = (pl.lit(f"{pack}:") + oid.cast(pl.String)).chash.sha2_256().str.slice(0, 8)
    return div(prefix.str.to_integer(base=16).cast(pl.Float64), float(2**32))  # exact: 2^-32


def is_held_out(one_id: str | pl.Expr, pack: str, share: float) -> pl.Expr:
    """True for the people of `pack` held out at `share` (deterministic, per person)."""
    if share <= 0:
        return pl.lit(False)
    return holdout_score(one_id, pack) < share


# ---------------------------------------------------------------------------------------------
# Selection


@dataclass(frozen=True)
class Selection:
    """The people a pack selects in one tag table.

    frame: one_id (sorted), the people to target. holdout: one_id (sorted), selected but held
    out. counts: people left after each step (`COUNT_KEYS`). rule: the pack's rule as SQL.
    info: what else the selection learned (lookalike seed size, dominant interest, clusters).
    """

    pack: PackDef
    frame: pl.DataFrame
    holdout: pl.DataFrame
    counts: dict[str, int]
    rule: str
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return self.frame.height

    def removed(self) -> dict[str, int]:
        """People removed at each step: opted_out, coupon_hunters, recent_buyers, excluded,
        limit, holdout."""
        c = self.counts
        return {
            "opted_out": c["matched"] - c["after_opted_out"],
            "coupon_hunters": c["after_opted_out"] - c["after_coupon_hunters"],
            "recent_buyers": c["after_coupon_hunters"] - c["after_recent_buyers"],
            "excluded": c["after_recent_buyers"] - c["after_exclude"],
            "limit": c["after_exclude"] - c["after_limit"],
            "holdout": c["holdout"],
        }

    def describe(self) -> str:
        """One line: matched, what each step removed, final."""
        steps = ", ".join(f"{k.replace('_', ' ')} -{v:,}" for k, v in self.removed().items() if v)
        return (
            f"matched {self.counts['matched']:,}"
            + (f"; {steps}" if steps else "")
            + (f"; final {self.counts['final']:,}")
        )


def _require_column(schema: Mapping[str, pl.DataType], column: str, why: str) -> None:
    if column not in schema:
        raise DataError(f"the tag table has no '{column}' column: {why}.")


def select_pack(tags: pl.LazyFrame, pack: PackDef, packs: Mapping[str, PackDef]) -> Selection:
    """Select `pack`'s people from the week's tags.

    In: `tags` (one row per one_id; at least one_id, is_opted_out, the columns the rules
    name, is_coupon_hunter when coupon hunters are suppressed, recency_days when recent buyers
    are); `packs`, every pack `pack` may include or exclude. Out: a `Selection`.
    Opted-out people (is_opted_out true or null) are always removed. Raises ConfigError for a
    rule that names an unknown column or is not boolean; DataError when a needed column is
    missing.
    """
    schema = tags.collect_schema()
    _require_column(schema, "one_id", "it is the person key")
    _require_column(schema, OPTED_OUT, "without it nobody can be told apart from opted-out people")
    rule = rule_text(pack, packs)

    info: dict[str, Any] = {}
    sort_cols: list[pl.Expr] = []
    descending: list[bool] = []
    limit = pack.limit
    if pack.lookalike is not None:
        matched, keys, limit, info = _lookalike_terms(tags, schema, pack, packs)
        for k in keys:
            sort_cols.append(k)
            descending.append(True)
        where = _where_expr(pack, schema)
        if where is not None:
            matched = matched & where
    else:
        matched = base_expr(pack, packs, schema)
    if pack.order_by is not None:
        if pack.order_by not in schema:
            raise ConfigError(
                f"pack '{pack.name}': order_by names unknown column '{pack.order_by}'."
            )
        sort_cols.insert(0, pl.col(pack.order_by))
        descending.insert(0, pack.descending)

    opted = pl.col(OPTED_OUT).cast(pl.Boolean).fill_null(True)
    if pack.suppress_coupon_hunters:
        _require_column(schema, COUPON_HUNTER, f"pack '{pack.name}' suppresses coupon hunters")
        coupon = pl.col(COUPON_HUNTER).cast(pl.Boolean).fill_null(False)
    else:
        coupon = pl.lit(False)
    if pack.suppress_recent_buyers_days is not None:
        _require_column(schema, RECENCY, f"pack '{pack.name}' suppresses recent buyers")
        recent = (pl.col(RECENCY) <= pack.suppress_recent_buyers_days).fill_null(False)
    else:
        recent = pl.lit(False)
    excluded = excluded_expr(pack, packs, schema)
    if excluded is None:
        excluded = pl.lit(False)

    try:
        frame = (
            tags.select(
                pl.col("one_id").cast(pl.String),
                matched.alias("_matched"),
                opted.alias("_opted_out"),
                coupon.alias("_coupon"),
                recent.alias("_recent"),
                excluded.alias("_excluded"),
                *[c.alias(f"_sort{i}") for i, c in enumerate(sort_cols)],
            )
            .filter(pl.col("_matched") & pl.col("one_id").is_not_null())
            .collect()
        )
    except pl.exceptions.PolarsError as e:
        raise DataError(
            f"pack '{pack.name}': cannot select from the tag table: {first_line(e)}"
        ) from None
    step1 = ~pl.col("_opted_out")
    step2 = step1 & ~pl.col("_coupon")
    step3 = step2 & ~pl.col("_recent")
    step4 = step3 & ~pl.col("_excluded")
    sums = frame.select(
        step1.sum().alias("after_opted_out"),
        step2.sum().alias("after_coupon_hunters"),
        step3.sum().alias("after_recent_buyers"),
        step4.sum().alias("after_exclude"),
    ).row(0, named=True)
    kept = frame.filter(step4)
    if limit is not None and limit < kept.height:
        sort_names = [f"_sort{i}" for i in range(len(sort_cols))]
        kept = first_rows(kept, sort_names, descending, limit)
    kept = kept.select("one_id").with_columns(
        is_held_out("one_id", pack.name, pack.holdout).alias("_held")
    )
    chosen = kept.filter(~pl.col("_held")).select("one_id").sort("one_id")
    held = kept.filter(pl.col("_held")).select("one_id").sort("one_id")
    counts = {
        "matched": frame.height,
        **{k: int(v or 0) for k, v in sums.items()},
        "after_limit": kept.height,
        "holdout": held.height,
        "final": chosen.height,
    }
    return Selection(pack=pack, frame=chosen, holdout=held, counts=counts, rule=rule, info=info)


def first_rows(
    frame: pl.DataFrame, keys: list[str], descending: list[bool], limit: int
) -> pl.DataFrame:
    """The first `limit` rows of `frame` ordered by `keys` (nulls last), ties by `one_id`.

    Equal to `frame.sort([*keys, "one_id"], ...).head(limit)`, but only the rows whose first key
    is at least as good as the limit-th value of that key are sorted on every key.
    """
    if keys and limit < frame.height:
        threshold = (
            frame.get_column(keys[0])
            .sort(descending=descending[0], nulls_last=True)
            .gather(limit - 1)
            .item()
        )
        if threshold is not None:
            key = pl.col(keys[0])
            better = key >= threshold if descending[0] else key <= threshold
            frame = frame.filter(better.fill_null(False))
    return frame.sort([*keys, "one_id"], descending=[*descending, False], nulls_last=True).head(
        limit
    )


def interest_columns(schema: Mapping[str, pl.DataType]) -> list[str]:
    """Interest names with an `interest_<name>` float affinity column (not `_expanded`)."""
    return [
        c.removeprefix("interest_")
        for c, dt in schema.items()
        if c.startswith("interest_") and not c.endswith("_expanded") and dt.is_float()
    ]


def _lookalike_terms(
    tags: pl.LazyFrame,
    schema: Mapping[str, pl.DataType],
    pack: PackDef,
    packs: Mapping[str, PackDef],
) -> tuple[pl.Expr, list[pl.Expr], int, dict[str, Any]]:
    """(candidates, ranking keys, size, info) of a lookalike pack."""
    lk = pack.lookalike
    assert lk is not None
    base = packs[lk.base]
    if base.lookalike is not None:
        raise ConfigError(f"pack '{pack.name}': its base '{base.name}' is itself a lookalike pack.")
    seed_sel = select_pack(tags, base, packs)
    seed = pl.concat([seed_sel.frame, seed_sel.holdout]).get_column("one_id")
    in_base = rule_expr(base, packs, schema) | pl.col("one_id").cast(pl.String).is_in(
        seed.implode()
    )
    info: dict[str, Any] = {"base": base.name, "method": lk.method, "seed": seed.len()}
    if seed.len() == 0:
        raise DataError(f"lookalike of '{base.name}': the base pack selects nobody this week.")
    seed_rows = tags.filter(pl.col("one_id").cast(pl.String).is_in(seed.implode()))
    limit = lk.size if pack.limit is None else min(lk.size, pack.limit)
    predicted = [pl.col(PREDICTED_VALUE)] if PREDICTED_VALUE in schema else []
    if lk.method == "interest":
        names = interest_columns(schema)
        if not names:
            raise DataError(
                f"lookalike of '{base.name}' by interest: the tag table has no interest_<name> "
                "columns; use method cluster."
            )
        # Averaged as one contiguous chunk, so the same seed gives the same means in every run.
        means = (
            seed_rows.select([pl.col(f"interest_{k}").alias(k) for k in names])
            .collect()
            .rechunk()
            .mean()
        )
        row = {
            k: (v if v is not None and not math.isnan(v) else 0.0)
            for k, v in means.row(0, named=True).items()
        }
        dominant = max(names, key=lambda k: row[k])  # ties: the first column
        if row[dominant] <= 0:
            raise DataError(
                f"lookalike of '{base.name}' by interest: its {seed.len():,} people show no "
                "interest affinity; use method cluster."
            )
        score_cols = [pl.col(f"interest_{dominant}")]
        if f"interest_{dominant}_expanded" in schema:
            score_cols.append(pl.col(f"interest_{dominant}_expanded"))
        score = pl.max_horizontal(score_cols).fill_null(0.0).fill_nan(0.0)
        info.update(dominant_interest=dominant, seed_mean_affinity=round(row[dominant], 6))
        return ~in_base & (score > 0), [score, *predicted], limit, info
    _require_column(schema, "cluster", f"pack '{pack.name}' is a lookalike by cluster")
    clusters = (
        seed_rows.select(pl.col("cluster").drop_nulls().unique().sort())
        .collect()
        .get_column("cluster")
    )
    if clusters.len() == 0:
        raise DataError(
            f"lookalike of '{base.name}' by cluster: none of its {seed.len():,} people has a cluster."
        )
    info.update(clusters=clusters.to_list())
    same = pl.col("cluster").is_in(clusters.implode()).fill_null(False)
    return ~in_base & same, predicted, limit, info


def select_lookalike(
    tags: pl.LazyFrame,
    base_pack: str,
    size: int,
    method: Literal["interest", "cluster"] = "interest",
    packs: Mapping[str, PackDef] | None = None,
) -> Selection:
    """`size` people not in `base_pack`, most similar to it first (see `Lookalike`).

    In: the week's tags; the base pack's name; `packs` (default: the shipped audiences). Out:
    the Selection of the ad-hoc pack `<base>_lookalike_<method>_<size>` (suppressions apply).
    """
    packs = load_audiences() if packs is None else packs
    if base_pack not in packs:
        raise ConfigError(f"lookalike: unknown base pack {base_pack!r}; known: {', '.join(packs)}.")
    pack = lookalike_pack(packs[base_pack], size, method)
    return select_pack(tags, pack, {**packs, pack.name: pack})
