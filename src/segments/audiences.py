"""Audience packs: definitions, safe SQL filters, suppression, holdouts, lookalikes and export.

A pack is a rule over the week's tag table (`OUT/weeks/<WEEK>/tags.parquet`, one row per
one_id), defined in `configs/audiences.toml` as `[packs.NAME]`:

```toml
[packs.high_value]
description = "High value as the business defines it"
where = "is_high_value"          # an SQL boolean expression over tag columns
include = []                      # union with other packs' rules
exclude = ["coupon_hunters"]      # people matching these packs' rules are removed
suppress_coupon_hunters = true    # default
suppress_recent_buyers_days = 14  # drop people with recency_days <= 14
order_by = "predicted_value_52w"  # with `descending = true` (default), then `limit`
holdout = 0.1                     # share held out (0 to 0.5), deterministic per person
min_size = 1000                   # refuse to export fewer people (platform floors also apply)
max_size = 2000000                # refuse to export more people
platforms = ["tencent", "alimama"]
```

Selection, in order (`Selection.counts` holds the number of people left after each step):
`matched` (where ∪ include) → `after_opted_out` (ALWAYS: people with `is_opted_out` true or
unknown are dropped; no config turns this off) → `after_coupon_hunters` →
`after_recent_buyers` → `after_exclude` → `after_limit` (order_by, limit) → `holdout` (how
many were held out) → `final`.

Filters are parsed by Polars SQL (`pl.sql_expr`), never evaluated as Python: a filter must be
one boolean expression naming tag columns only; statements, subqueries and unknown functions
are refused with a ConfigError naming the pack. A column named like an SQL keyword is quoted:
`"cluster" = 3`.

API: `load_audiences`, `select_pack`, `select_lookalike`, `preview`, `pack_members`,
`export_pack` (and `export_pack_all`, one selection for several platforms), `preview_pack`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import polars as pl
import polars_hash  # noqa: F401  (registers `.chash` on expressions)
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segments.errors import ConfigError, DataError, ExportError, format_problems
from segments.exporters import EXPORTERS, ExportManifest, get_exporter
from segments.exprs import div
from segments.io import sha256_file, write_parquet
from segments.layout import Layout
from segments.settings.load import problems as validation_problems
from segments.settings.load import read_toml, shipped

DEFAULT_MIN_SIZE = 1_000
MAX_FILTER_CHARS = 2_000
AUDIENCES_FILE = "audiences.toml"

# Tag columns the selection itself reads.
OPTED_OUT = "is_opted_out"
COUPON_HUNTER = "is_coupon_hunter"
RECENCY = "recency_days"
PREDICTED_VALUE = "predicted_value_52w"

# Preview breakdowns (those present in the tag table are used).
BREAKDOWN_COLUMNS = ("cluster", "primary_interest", "lifecycle_stage")
NONE_KEY = "(none)"

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

_PACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SQL_STRING = re.compile(r"'(?:[^']|'')*'")
# Words that only appear in statements and subqueries, never in one boolean expression.
_STATEMENT_WORDS = re.compile(r"\b(select|values|with|table|exists)\b", re.IGNORECASE)
_LOOKALIKE_SPEC = re.compile(
    r"^lookalike\(\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*,\s*(\d+)\s*(?:,\s*(interest|cluster)\s*)?\)$"
)


# ---------------------------------------------------------------------------------------------
# Safe filters


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


class FilterError(ConfigError, ValueError):
    """A pack filter that cannot be used (a ConfigError; also a ValueError for pydantic)."""


def compile_filter(text: str) -> pl.Expr:
    """Parse `text`, an SQL boolean expression over tag columns, into a polars expression.

    Uses Polars SQL (`pl.sql_expr`); nothing is evaluated as Python. Refused with a one-line
    FilterError (a ConfigError): empty text, several statements (`;`), subqueries (`SELECT`,
    `VALUES`, `WITH`, `TABLE`, `EXISTS`), text that does not parse, unknown functions, and
    expressions that name no column. Whether the columns exist and the result is boolean is checked against
    the tag table by `check_filter`.

    >>> compile_filter("frequency_52w >= 3 AND NOT is_coupon_hunter").meta.root_names()
    ['frequency_52w', 'is_coupon_hunter']
    """
    if not isinstance(text, str) or not text.strip():
        raise FilterError("the filter is empty")
    if len(text) > MAX_FILTER_CHARS:
        raise FilterError(
            f"the filter is {len(text):,} characters long (at most {MAX_FILTER_CHARS:,})"
        )
    if "\x00" in text:
        raise FilterError("the filter holds a NUL character")
    bare = _SQL_STRING.sub("''", text)
    if ";" in bare:
        raise FilterError("the filter must be one expression: ';' is not allowed")
    word = _STATEMENT_WORDS.search(bare)
    if word:
        raise FilterError(
            f"subqueries and statements are not allowed in a filter (found {word.group(0).upper()})"
        )
    try:
        expr = pl.sql_expr(text)
    except Exception as e:  # polars raises several SQL error types
        reason = _first_line(e)
        keyword = re.search(r"found '(\w+)' clause", reason)
        if keyword:  # a column named like an SQL keyword, e.g. cluster
            word = keyword.group(1)
            reason += f'; a column called {word} must be quoted: "{word}"'
        raise FilterError(f"not a valid SQL expression: {reason}") from None
    if not isinstance(expr, pl.Expr):
        raise FilterError("the filter must be one expression")
    roots = expr.meta.root_names()
    if ".subplan" in str(expr) or any(r.startswith("_POLARS") for r in roots):
        raise FilterError("subqueries are not allowed in a filter")
    if not roots:
        raise FilterError("the filter names no tag column")
    return expr


def check_filter(expr: pl.Expr, text: str, schema: Mapping[str, pl.DataType], pack: str) -> None:
    """Check a compiled filter against the tag table's schema; ConfigError (one line) naming the
    pack when it names an unknown column, cannot be evaluated, or is not boolean."""
    unknown = [n for n in dict.fromkeys(expr.meta.root_names()) if n not in schema]
    if unknown:
        more = f" (also {', '.join(map(repr, unknown[1:]))})" if len(unknown) > 1 else ""
        raise ConfigError(
            f"pack '{pack}': filter {text!r} names unknown column '{unknown[0]}'{more}; "
            f"the tag table has no such column."
        )
    try:
        dtype = pl.DataFrame(schema=dict(schema)).select(expr.alias("_f")).schema["_f"]
    except Exception as e:
        raise ConfigError(
            f"pack '{pack}': filter {text!r} cannot be evaluated on the tag table: {_first_line(e)}"
        ) from None
    if dtype != pl.Boolean:
        raise ConfigError(
            f"pack '{pack}': filter {text!r} is not a true/false expression (it gives {dtype})."
        )


# ---------------------------------------------------------------------------------------------
# Pack definitions


class Lookalike(BaseModel):
    """A lookalike expansion of another pack: `size` people not in `base`, most similar first.

    method `interest`: ranked by affinity (`interest_<k>` or `interest_<k>_expanded`, the larger)
    for the base's dominant interest k (highest mean affinity among the base's members).
    method `cluster`: people in the clusters of the base's members, ranked by
    `predicted_value_52w`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    base: str
    size: int = Field(ge=1)
    method: Literal["interest", "cluster"] = "interest"


class PackDef(BaseModel):
    """One audience pack (`[packs.NAME]` in configs/audiences.toml); see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str = ""
    where: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    suppress_coupon_hunters: bool = True
    suppress_recent_buyers_days: int | None = Field(default=None, ge=0)
    order_by: str | None = None
    descending: bool = True
    limit: int | None = Field(default=None, ge=1)
    holdout: float = Field(default=0.0, ge=0.0, le=0.5)
    min_size: int = Field(default=DEFAULT_MIN_SIZE, ge=1)
    max_size: int | None = Field(default=None, ge=1)
    platforms: tuple[str, ...] = ()
    lookalike: Lookalike | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _PACK_NAME.match(v):
            raise ValueError(
                f"pack name {v!r} must be letters, digits, '_', '-' or '.' (starting with a "
                "letter or digit, at most 80 characters): it is used in file names"
            )
        return v

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is not None:
            compile_filter(v)
        return v

    @field_validator("order_by")
    @classmethod
    def _order_by(cls, v: str | None) -> str | None:
        if v is not None and not _COLUMN_NAME.match(v):
            raise ValueError(f"order_by must be one tag column name, got {v!r}")
        return v

    @field_validator("platforms")
    @classmethod
    def _platforms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in v if p not in EXPORTERS]
        if unknown:
            raise ValueError(
                f"unknown platform(s) {', '.join(map(repr, unknown))}; valid: {', '.join(EXPORTERS)}"
            )
        return v

    @model_validator(mode="after")
    def _check(self) -> PackDef:
        if self.where is None and not self.include and self.lookalike is None:
            raise ValueError("a pack needs `where`, `include` or `lookalike`")
        if self.lookalike is not None and self.include:
            raise ValueError("a lookalike pack cannot also `include` other packs")
        if self.max_size is not None and self.max_size < self.min_size:
            raise ValueError(f"max_size {self.max_size} is below min_size {self.min_size}")
        return self

    def filter_expr(self) -> pl.Expr | None:
        """The compiled `where` (None when the pack has none)."""
        return None if self.where is None else compile_filter(self.where)


_UNKNOWN_KEY = "not a pack setting; check the spelling"


def _one_line(where: str, e: ValidationError) -> str:
    return f"{where}: " + "; ".join(
        p.rstrip(".") for p in validation_problems(e, unknown_key=_UNKNOWN_KEY)
    )


def _deps(pack: PackDef) -> list[str]:
    out = [*pack.include, *pack.exclude]
    if pack.lookalike is not None:
        out.append(pack.lookalike.base)
    return out


def _find_cycles(packs: Mapping[str, PackDef]) -> list[list[str]]:
    """Every distinct cycle through include / exclude / lookalike base edges."""
    cycles: list[list[str]] = []
    seen_keys: set[tuple[str, ...]] = set()
    done: set[str] = set()

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycle = stack[stack.index(name) :]
            k = min(range(len(cycle)), key=lambda i: cycle[i])
            key = tuple(cycle[k:] + cycle[:k])
            if key not in seen_keys:
                seen_keys.add(key)
                cycles.append([*key, key[0]])
            return
        if name in done or name not in packs:
            return
        stack.append(name)
        for dep in _deps(packs[name]):
            visit(dep, stack)
        stack.pop()
        done.add(name)

    for name in packs:
        visit(name, [])
    return cycles


def reference_problems(packs: Mapping[str, PackDef]) -> list[str]:
    """Problems between packs: unknown names in include/exclude/lookalike, lookalike packs used
    in include/exclude (their members depend on a ranking, not a rule), and cycles."""
    problems = []
    for name, pack in packs.items():
        for key, refs in (("include", pack.include), ("exclude", pack.exclude)):
            for ref in refs:
                if ref not in packs:
                    problems.append(f"[packs.{name}].{key}: unknown pack {ref!r}.")
                elif packs[ref].lookalike is not None:
                    problems.append(
                        f"[packs.{name}].{key}: {ref!r} is a lookalike pack; only rule packs can "
                        "be included or excluded."
                    )
        if pack.lookalike is not None and pack.lookalike.base not in packs:
            problems.append(f"[packs.{name}].lookalike.base: unknown pack {pack.lookalike.base!r}.")
    for cycle in _find_cycles(packs):
        problems.append(f"include/exclude cycle: {' -> '.join(cycle)}.")
    return problems


def audiences_from_dict(data: Mapping[str, Any], where: str = "audiences") -> dict[str, PackDef]:
    """Validate a parsed audiences TOML (`{"packs": {NAME: {...}}}`) into pack definitions.

    Raises ConfigError listing every problem: unknown keys, bad values, filters that do not
    parse, unknown packs in include/exclude, cycles.
    """
    problems: list[str] = []
    for key in data:
        if key != "packs":
            problems.append(f"{key}: unknown top-level key; packs are tables [packs.NAME].")
    raw = data.get("packs", {})
    packs: dict[str, PackDef] = {}
    if not isinstance(raw, Mapping):
        problems.append("packs: must be tables [packs.NAME].")
        raw = {}
    for name, body in raw.items():
        if not isinstance(body, Mapping):
            problems.append(f"[packs.{name}]: must be a table of settings.")
            continue
        if "name" in body:
            problems.append(f"[packs.{name}].name: unknown key (the table name is the pack name).")
            continue
        try:
            packs[name] = PackDef.model_validate({**body, "name": name})
        except ValidationError as e:
            problems += validation_problems(e, f"[packs.{name}]", _UNKNOWN_KEY)
    if not problems:
        problems += reference_problems(packs)
    if problems:
        raise ConfigError(format_problems(where, problems))
    return packs


def load_audiences(path: str | Path | None = None) -> dict[str, PackDef]:
    """Load and validate an audiences file (default: the shipped configs/audiences.toml).

    Returns the packs by name. Raises ConfigError listing every problem found.
    """
    path = Path(path) if path is not None else shipped(AUDIENCES_FILE)
    return audiences_from_dict(read_toml(path, "audiences"), str(path))


def resolve_pack(name: str, packs: Mapping[str, PackDef]) -> PackDef:
    """The pack called `name`, or an ad-hoc lookalike from `lookalike(BASE, SIZE[, METHOD])`.

    >>> packs = {"hv": PackDef(name="hv", where="is_high_value")}
    >>> resolve_pack("lookalike(hv, 5000, cluster)", packs).name
    'hv_lookalike_cluster_5000'
    """
    if name in packs:
        return packs[name]
    m = _LOOKALIKE_SPEC.match(name.strip()) if isinstance(name, str) else None
    if m:
        base, size, method = m.group(1), int(m.group(2)), m.group(3) or "interest"
        if base not in packs:
            raise ConfigError(f"lookalike: unknown base pack {base!r}; known: {', '.join(packs)}.")
        parent = packs[base]
        return lookalike_pack(parent, size, method)  # type: ignore[arg-type]
    raise ConfigError(
        f"unknown pack {name!r}; known: {', '.join(packs)} "
        "(or lookalike(PACK, SIZE[, interest|cluster]))."
    )


def lookalike_pack(
    base: PackDef, size: int, method: Literal["interest", "cluster"] = "interest"
) -> PackDef:
    """An ad-hoc lookalike pack of `base` (same platforms; the engine's default min size)."""
    try:
        return PackDef(
            name=f"{base.name}_lookalike_{method}_{size}",
            description=f"lookalike of {base.name} by {method}, {size:,} people",
            lookalike=Lookalike(base=base.name, size=size, method=method),
            platforms=base.platforms,
        )
    except ValidationError as e:
        raise ConfigError(_one_line(f"lookalike of {base.name!r}", e)) from None


def _closure(pack: PackDef, packs: Mapping[str, PackDef]) -> dict[str, PackDef]:
    out: dict[str, PackDef] = {}

    def walk(p: PackDef, stack: tuple[str, ...]) -> None:
        if p.name in stack:
            raise ConfigError(
                f"pack '{p.name}': include/exclude cycle {' -> '.join((*stack, p.name))}."
            )
        out[p.name] = p
        for dep in _deps(p):
            if dep not in packs:
                raise ConfigError(
                    f"pack '{p.name}': unknown pack {dep!r} in include/exclude/lookalike."
                )
            walk(packs[dep], (*stack, p.name))

    walk(pack, ())
    return out


def definition(pack: PackDef, packs: Mapping[str, PackDef]) -> dict[str, Any]:
    """The pack's definition and those of every pack it depends on, by name (JSON-ready)."""
    closure = _closure(pack, packs)
    return {n: closure[n].model_dump(mode="json") for n in sorted(closure)}


def definition_hash(pack: PackDef, packs: Mapping[str, PackDef]) -> str:
    """A short hash of `definition(pack, packs)`: changes when any rule the pack uses changes."""
    blob = json.dumps(definition(pack, packs), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def rule_text(pack: PackDef, packs: Mapping[str, PackDef]) -> str:
    """The pack's rule as one SQL expression (includes and excludes expanded), for the record:
    as a filter it selects what `rule_expr` does (before suppression and limit).

    >>> packs = {"a": PackDef(name="a", where="x > 1"), "b": PackDef(name="b", where="y", exclude=("a",))}
    >>> rule_text(packs["b"], packs)
    '(y) AND NOT COALESCE((x > 1), FALSE)'
    """
    _closure(pack, packs)  # unknown packs and cycles
    if pack.lookalike is not None:
        lk = pack.lookalike
        head = f"lookalike({lk.base}, {lk.size}, {lk.method})"
        if pack.where:
            head += f" AND ({pack.where})"
    else:
        head = _base_text(pack, packs)
    return head + _not_text(pack, packs)


def _not_text(pack: PackDef, packs: Mapping[str, PackDef]) -> str:
    # A null rule is "not matched", so an excluded rule is COALESCEd before NOT.
    return "".join(f" AND NOT COALESCE({_rule_text(packs[e], packs)}, FALSE)" for e in pack.exclude)


def _base_text(pack: PackDef, packs: Mapping[str, PackDef]) -> str:
    parts = ([f"({pack.where})"] if pack.where else []) + [
        _rule_text(packs[i], packs) for i in pack.include
    ]
    return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"


def _rule_text(pack: PackDef, packs: Mapping[str, PackDef]) -> str:
    text = _base_text(pack, packs) + _not_text(pack, packs)
    return f"({text})" if pack.exclude else text


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
    _closure(pack, packs)
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
            f"pack '{pack.name}': cannot select from the tag table: {_first_line(e)}"
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


# ---------------------------------------------------------------------------------------------
# Preview


def _breakdown(frame: pl.DataFrame, key: pl.Expr) -> dict[str, int]:
    counts = frame.group_by(key.alias("key")).len().rows()
    items = [(NONE_KEY if k is None else str(k), int(n)) for k, n in counts]
    return dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))


def preview(
    selection: Selection, tags: pl.LazyFrame, one_id_map: pl.LazyFrame | None = None
) -> dict[str, Any]:
    """What a pack holds: counts per step and breakdowns of the final people.

    In: a Selection, the tags it came from (cluster, cluster_name, primary_interest,
    lifecycle_stage are used when present), and optionally the identity map (one_id, sources:
    the "table" or "table:source" labels each identifier was seen in). Out (JSON-ready):
    `pack`, `rule`, `count`, `holdout`, `counts`, `info`, and `breakdowns` {column: {value:
    people}} by cluster ("<cluster>: <cluster_name>"), primary_interest, lifecycle_stage and
    source (a person counts once for each source any of their identifiers was seen in).
    """
    schema = tags.collect_schema()
    ids = selection.frame.lazy()
    present = [c for c in BREAKDOWN_COLUMNS if c in schema]
    extra = ["cluster_name"] if "cluster" in present and "cluster_name" in schema else []
    breakdowns: dict[str, dict[str, int]] = {}
    if present:
        df = (
            tags.select(pl.col("one_id").cast(pl.String), *present, *extra)
            .join(ids, on="one_id", how="semi")
            .collect()
        )
        for col in present:
            key = pl.col(col)
            if col == "cluster" and extra:
                key = (
                    pl.when(pl.col("cluster").is_null())
                    .then(None)
                    .otherwise(
                        pl.concat_str(
                            [
                                pl.col("cluster").cast(pl.String),
                                pl.col("cluster_name").fill_null(""),
                            ],
                            separator=": ",
                        ).str.strip_chars_end(": ")
                    )
                )
            breakdowns[col] = _breakdown(df, key)
    if one_id_map is not None and "sources" in one_id_map.collect_schema():
        src = (
            one_id_map.select(pl.col("one_id").cast(pl.String), "sources")
            .join(ids, on="one_id", how="semi")
            .explode("sources")
            .drop_nulls("sources")
            .unique()
            .group_by(pl.col("sources").alias("key"))
            .len()
            .collect()
        )
        items = [(str(k), int(n)) for k, n in src.rows()]
        breakdowns["source"] = dict(sorted(items, key=lambda kv: (-kv[1], kv[0])))
    return {
        "pack": selection.pack.name,
        "description": selection.pack.description,
        "rule": selection.rule,
        "count": selection.counts["final"],
        "holdout": selection.counts["holdout"],
        "counts": dict(selection.counts),
        "info": dict(selection.info),
        "breakdowns": breakdowns,
    }


# ---------------------------------------------------------------------------------------------
# Members and export

PHONE_HASHES = ("phone_md5", "phone_cc_sha256", "phone_e164_sha256")


def pack_members(
    selection: Selection,
    one_id_map: pl.LazyFrame | pl.DataFrame,
    phone_hashes: pl.LazyFrame | pl.DataFrame | None = None,
    hash_columns: tuple[str, ...] = PHONE_HASHES,
) -> pl.DataFrame:
    """The members frame the exporters take: one row per (one_id, id_type, id) of the selected
    people (holdout excluded), in `one_id_map`'s row order (the exporters sort what they
    write), with `phone_md5`, `phone_cc_sha256`, `phone_e164_sha256` joined from `phone_hashes` on `phone_sha256` rows (null on other rows, or when unknown).

    `hash_columns`: the phone hash columns to read (the others stay null), e.g. only those one
    platform uses: `phone_hashes` is as long as the population, so reading less is faster.
    """
    ids = selection.frame.get_column("one_id").cast(pl.String)
    members = (
        one_id_map.lazy()
        .select(
            pl.col("one_id").cast(pl.String),
            pl.col("id_type").cast(pl.String),
            pl.col("id").cast(pl.String),
        )
        .filter(pl.col("one_id").is_in(ids.implode()))
        .collect()
    )
    wanted = [c for c in PHONE_HASHES if c in hash_columns]
    if phone_hashes is not None and wanted:
        ph = phone_hashes.lazy().select(
            pl.col("phone_sha256").cast(pl.String), *[pl.col(c).cast(pl.String) for c in wanted]
        )
        rows = members.height
        members = (
            members.lazy()
            .with_columns(
                pl.when(pl.col("id_type") == "phone_sha256").then(pl.col("id")).alias("_phone")
            )
            .join(ph, left_on="_phone", right_on="phone_sha256", how="left", maintain_order="left")
            .drop("_phone", strict=False)
            .collect()
        )
        if members.height != rows:  # a phone listed twice in phone_hashes (same hashes)
            members = members.unique(maintain_order=True)
    missing = [c for c in PHONE_HASHES if c not in members.columns]
    members = members.with_columns([pl.lit(None, pl.String).alias(c) for c in missing])
    return members.select("one_id", "id_type", "id", *PHONE_HASHES)


@dataclass(frozen=True)
class WeekTags:
    """Where one week's tags live in a workspace."""

    label: str
    path: Path


def week_tags(workspace: str | Path, week: str | None = None) -> WeekTags:
    """The tag file of `week` (an ISO week or a date) in `workspace`, default the latest week.

    Raises DataError when the workspace has no such week or no weeks at all.
    """
    layout = Layout(workspace)
    label = layout.resolve_week(week)
    return WeekTags(label, layout.tags(label))


def scan_tags(workspace: str | Path, week: str | None = None) -> tuple[str, pl.LazyFrame]:
    """(week label, lazy scan of that week's tags)."""
    wt = week_tags(workspace, week)
    return wt.label, pl.scan_parquet(wt.path, glob=False)


def _identity_file(
    workspace: Path, name: str, required: bool, week: str | None = None
) -> pl.LazyFrame | None:
    """An identity file; with `week`, that week's copy from identity/history when it exists
    (a pack of an older week holds that week's identifiers)."""
    path = Layout(workspace).identity_of_week(name, week)
    if not path.is_file():
        if required:
            raise DataError(f"{path}: missing; run `segments run` first.")
        return None
    return pl.scan_parquet(path, glob=False)


def _tags_metadata(path: Path) -> dict[str, str]:
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception:
        return {}
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in meta.items()}


def _packs(audiences: str | Path | Mapping[str, PackDef] | None) -> dict[str, PackDef]:
    if audiences is None or isinstance(audiences, str | Path):
        return load_audiences(audiences)
    return dict(audiences)


def append_log(workspace: str | Path, record: Mapping[str, Any]) -> Path:
    """Append one record to the workspace's export log."""
    return Layout(workspace).append_export_log(record)


def read_log(workspace: str | Path) -> list[dict[str, Any]]:
    """Every record of the workspace's export log, oldest first ([] when none)."""
    return Layout(workspace).read_export_log()


@dataclass(frozen=True)
class ExportPlan:
    """A pack selected for export in one workspace week, with every size and privacy check
    passed: what `export_pack` writes from."""

    workspace: Path
    pack: PackDef
    packs: dict[str, PackDef]
    week: WeekTags
    selection: Selection

    @property
    def tags(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.week.path, glob=False)


def plan_export(
    workspace: str | Path,
    name: str,
    platforms: tuple[str, ...] | list[str] = (),
    week: str | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> ExportPlan:
    """Resolve pack `name`, check it may go to `platforms`, select it in the week (default the
    latest) and check its size against `min_size` / `max_size` and that nobody opted out is in
    it. Raises ExportError (one line) when any check fails."""
    workspace = Path(workspace)
    packs = _packs(audiences)
    pack = resolve_pack(name, packs)
    packs = {**packs, pack.name: pack}
    for platform in platforms:
        get_exporter(platform)  # unknown platform: ExportError listing the valid ones
        if pack.platforms and platform != "parquet" and platform not in pack.platforms:
            raise ExportError(
                f"pack '{pack.name}' is not meant for {platform} (its platforms: "
                f"{', '.join(pack.platforms)}); nothing written."
            )
    wt = week_tags(workspace, week)
    tags = pl.scan_parquet(wt.path, glob=False)
    sel = select_pack(tags, pack, packs)
    final = sel.counts["final"]
    if final < pack.min_size:
        raise ExportError(
            f"pack '{pack.name}' {wt.label}: {final:,} people left ({sel.describe()}), below "
            f"its min_size of {pack.min_size:,}; nothing written."
        )
    if pack.max_size is not None and final > pack.max_size:
        raise ExportError(
            f"pack '{pack.name}' {wt.label}: {final:,} people ({sel.describe()}), above its "
            f"max_size of {pack.max_size:,}; nothing written."
        )
    # Defence in depth: nobody opted out may leave, whatever the selection did.
    leaked = (
        tags.select(pl.col("one_id").cast(pl.String), pl.col(OPTED_OUT).cast(pl.Boolean))
        .filter(pl.col(OPTED_OUT).fill_null(True))
        .filter(pl.col("one_id").is_in(sel.frame.get_column("one_id").implode()))
        .select(pl.len())
        .collect()
        .item()
    )
    if leaked:
        raise ExportError(
            f"pack '{pack.name}': {leaked:,} opted-out people selected; nothing written."
        )
    return ExportPlan(workspace, pack, packs, wt, sel)


def _hash_columns(platform: str, options: Mapping[str, Any]) -> tuple[str, ...]:
    exporter = get_exporter(platform)
    parsed = exporter.parse_options(dict(options))
    used = {s.column for o in exporter.selected_outputs(parsed) for s in o.sources}
    return tuple(c for c in PHONE_HASHES if c in used)


def plan_members(plan: ExportPlan, hash_columns: tuple[str, ...] = PHONE_HASHES) -> pl.DataFrame:
    """`pack_members` of a plan, from the workspace's identity files."""
    one_id_map = _identity_file(
        plan.workspace, "one_id_map.parquet", required=True, week=plan.week.label
    )
    phone_hashes = _identity_file(plan.workspace, "phone_hashes.parquet", required=False)
    assert one_id_map is not None
    return pack_members(plan.selection, one_id_map, phone_hashes, hash_columns)


def export_plan(
    plan: ExportPlan,
    platform: str,
    to: str | Path,
    options: Mapping[str, Any] | None = None,
    members: pl.DataFrame | None = None,
) -> ExportManifest:
    """Write a planned pack for `platform` into `to`, its holdout and a log record (see
    `export_pack`). `members`: the plan's members frame when already built (with every phone
    hash column the platform reads)."""
    pack, packs, wt, sel = plan.pack, plan.packs, plan.week, plan.selection
    exporter = get_exporter(platform)
    opts: dict[str, Any] = dict(options or {})
    parsed = exporter.parse_options(opts)
    if members is None:
        members = plan_members(plan, _hash_columns(platform, opts))
    opts["min_size"] = max(pack.min_size, exporter.effective_min_size(parsed))
    def_hash = definition_hash(pack, packs)
    config_hash = _tags_metadata(wt.path).get("segments.config_hash")
    if platform == "parquet":
        meta = {
            "segments.pack": pack.name,
            "segments.week": wt.label,
            "segments.definition": json.dumps(
                definition(pack, packs), sort_keys=True, ensure_ascii=False
            ),
            "segments.definition_hash": def_hash,
            "segments.filter": pack.where or "",
            "segments.rule": sel.rule,
            "segments.counts": json.dumps(sel.counts),
            "segments.holdout_share": repr(pack.holdout),
            "segments.holdout_size": str(sel.counts["holdout"]),
        }
        if sel.info:
            meta["segments.info"] = json.dumps(sel.info, sort_keys=True, default=str)
        if config_hash:
            meta["segments.config_hash"] = config_hash
        opts["metadata"] = {**dict(opts.get("metadata") or {}), **meta}

    out_dir = Path(to)
    manifest = exporter.export(members, pack.name, wt.label, out_dir, opts)

    holdout_file = None
    if sel.counts["holdout"]:
        holdout_file = Layout(plan.workspace).holdout(pack.name, wt.label)
        write_parquet(
            sel.holdout,
            holdout_file,
            metadata={
                "segments.pack": pack.name,
                "segments.week": wt.label,
                "segments.holdout_share": repr(pack.holdout),
            },
        )
    manifest_path = out_dir / f"{pack.name}_{wt.label}_{platform}_manifest.json"
    record = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "pack": pack.name,
        "week": wt.label,
        "platform": platform,
        "out_dir": str(out_dir.resolve()),
        "rule": sel.rule,
        "definition_hash": def_hash,
        "config_hash": config_hash,
        "counts": sel.counts,
        "info": sel.info,
        "holdout_share": pack.holdout,
        "holdout_size": sel.counts["holdout"],
        "holdout_file": str(holdout_file) if holdout_file else None,
        "people": manifest.people,
        "people_exportable": manifest.people_exportable,
        "min_size": manifest.min_size,
        "files": [
            {"path": f.path, "bytes": f.bytes, "sha256": f.sha256, "rows": f.rows}
            for f in manifest.files
        ],
        "manifest": {
            "path": manifest_path.name,
            "sha256": sha256_file(manifest_path) if manifest_path.is_file() else None,
        },
        "options": manifest.options,
        "warnings": list(manifest.warnings),
    }
    append_log(plan.workspace, record)
    return manifest


def export_pack(
    workspace: str | Path,
    name: str,
    platform: str,
    to: str | Path,
    week: str | None = None,
    options: Mapping[str, Any] | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> ExportManifest:
    """Select pack `name` in `workspace`'s week (default latest) and export it for `platform`.

    Writes the platform's files and manifest into `to`, the holdout one_ids to
    `OUT/exports/holdouts/<pack>_<week>.parquet` (when the pack holds people out), and appends a
    record (pack, week, platform, time, counts, files with sha256) to `OUT/exports/log.jsonl`.
    The `parquet` platform's file carries the definition, rule, week, counts, holdout and
    config hash as key-value metadata (no timestamp: re-exports are byte-identical).
    `audiences`: a file or the packs themselves (default: the shipped configs/audiences.toml).
    Raises ExportError (one line, nothing written) when the pack is not meant for `platform`,
    holds fewer than its `min_size` people (or the platform's minimum) or more than `max_size`.
    """
    plan = plan_export(workspace, name, (platform,), week, audiences)
    return export_plan(plan, platform, to, options)


def export_pack_all(
    workspace: str | Path,
    name: str,
    platforms: tuple[str, ...] | list[str],
    to: str | Path,
    week: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> dict[str, ExportManifest]:
    """`export_pack` to several platforms from one selection: `to/<platform>/` each.

    `options`: per platform, e.g. `{"tencent": {"openid_app_id": "wx..."}}`. Every platform is
    checked before anything is written; a platform whose own minimum is not met raises
    ExportError after the platforms before it were written (each has its log record).
    """
    plan = plan_export(workspace, name, tuple(platforms), week, audiences)
    options = options or {}
    needed = tuple(
        c for c in PHONE_HASHES if any(c in _hash_columns(p, options.get(p, {})) for p in platforms)
    )
    members = plan_members(plan, needed)
    return {
        p: export_plan(plan, p, Path(to) / p, options.get(p), members=members) for p in platforms
    }


def preview_pack(
    workspace: str | Path,
    name: str | None = None,
    where: str | None = None,
    week: str | None = None,
    audiences: str | Path | Mapping[str, PackDef] | None = None,
) -> dict[str, Any]:
    """Preview a named pack, or an ad-hoc `where` filter, in a workspace's week (default latest).

    Reads only the tag columns the rules and breakdowns need. Out: `preview()`'s dict plus
    `week`.
    """
    if (name is None) == (where is None):
        raise ConfigError("preview: give a pack name or --where, not both or neither.")
    workspace = Path(workspace)
    if where is not None:
        try:
            pack = PackDef(name="adhoc", description="ad-hoc filter", where=where, min_size=1)
        except ValidationError as e:
            raise ConfigError(_one_line("--where", e) + ".") from None
        packs: dict[str, PackDef] = {"adhoc": pack}
    else:
        assert name is not None
        packs = _packs(audiences)
        pack = resolve_pack(name, packs)
        packs = {**packs, pack.name: pack}
    label, tags = scan_tags(workspace, week)
    sel = select_pack(tags, pack, packs)
    one_id_map = _identity_file(workspace, "one_id_map.parquet", required=False, week=label)
    out = preview(sel, tags, one_id_map)
    return {"week": label, **out}


def pack_summaries(packs: Mapping[str, PackDef]) -> list[dict[str, Any]]:
    """One dict per pack (name, description, rule, holdout, platforms) for listings."""
    return [
        {
            "name": p.name,
            "description": p.description,
            "where": p.where,
            "rule": rule_text(p, packs),
            "holdout": p.holdout,
            "min_size": p.min_size,
            "platforms": list(p.platforms),
        }
        for p in packs.values()
    ]
