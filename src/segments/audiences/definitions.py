"""Pack definitions: the `[packs.NAME]` model, audiences files, pack references, rule text."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segments.audiences.filters import compile_filter
from segments.errors import ConfigError, format_problems
from segments.exporters import EXPORTERS
from segments.settings.load import problems as validation_problems
from segments.settings.load import read_toml, shipped

DEFAULT_MIN_SIZE = 1_000
AUDIENCES_FILE = "audiences.toml"

_PACK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}$")
_COLUMN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKALIKE_SPEC = re.compile(
    r"^lookalike\(\s*([A-Za-z0-9][A-Za-z0-9_.-]*)\s*,\s*(\d+)\s*(?:,\s*(interest|cluster)\s*)?\)$"
)


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
    # Re-exported by every `segments refresh` to these platforms, from the live table.
    refresh: tuple[str, ...] = ()
    # Exporter options per platform for those re-exports, e.g. {tencent = {openid_app_id = "wx.."}}.
    refresh_options: dict[str, dict[str, Any]] = Field(default_factory=dict)

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

    @field_validator("platforms", "refresh")
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
        if self.platforms:
            barred = [p for p in self.refresh if p != "parquet" and p not in self.platforms]
            if barred:
                raise ValueError(
                    f"refresh platform(s) {', '.join(barred)} are not among the pack's platforms"
                )
        unknown = [p for p in self.refresh_options if p not in self.refresh]
        if unknown:
            raise ValueError(f"refresh_options for platform(s) not refreshed: {', '.join(unknown)}")
        return self

    def filter_expr(self) -> pl.Expr | None:
        """The compiled `where` (None when the pack has none)."""
        return None if self.where is None else compile_filter(self.where)


_UNKNOWN_KEY = "not a pack setting; check the spelling"


def problems_line(where: str, e: ValidationError) -> str:
    """Validation problems as one line: `where: problem; problem`."""
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


def pack_and_packs(
    name: str, audiences: str | Path | Mapping[str, PackDef] | None
) -> tuple[PackDef, dict[str, PackDef]]:
    """Pack `name` resolved in `audiences` (a file, the packs themselves, or None for the
    shipped configs/audiences.toml), and the packs with it (an ad-hoc lookalike joins them)."""
    if audiences is None or isinstance(audiences, str | Path):
        packs = load_audiences(audiences)
    else:
        packs = dict(audiences)
    pack = resolve_pack(name, packs)
    return pack, {**packs, pack.name: pack}


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
        raise ConfigError(problems_line(f"lookalike of {base.name!r}", e)) from None


def closure(pack: PackDef, packs: Mapping[str, PackDef]) -> dict[str, PackDef]:
    """`pack` and every pack it depends on, by name; ConfigError on unknown packs and cycles."""
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
    """The pack's definition and those of every pack it depends on, by name (JSON-ready): who
    is in it. Where a refresh sends it (`refresh`, `refresh_options`) is not part of it."""
    used = closure(pack, packs)
    delivery = {"refresh", "refresh_options"}
    return {n: used[n].model_dump(mode="json", exclude=delivery) for n in sorted(used)}


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
    closure(pack, packs)  # unknown packs and cycles
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
