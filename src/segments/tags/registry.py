"""The tag registry as data: `registry.toml` read, checked, and expanded for a taxonomy."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from segments.errors import ConfigError, format_problems
from segments.names import DEFAULT_INTERESTS
from segments.settings.load import read_toml, validated
from segments.stages.rfm import WINDOWS

if TYPE_CHECKING:
    from segments.taxonomy import Taxonomy

REGISTRY_FILE = Path(__file__).with_name("registry.toml")

INTERESTS = tuple(DEFAULT_INTERESTS.items())  # (name, Chinese label), taxonomy order


@dataclass(frozen=True)
class Tag:
    name: str
    family: (
        str  # identity, rfm, behaviour, interest, community, promo, lifecycle, predicted, cluster
    )
    dtype: str  # bool, int, float, str, date, datetime, list[str]
    unit: str
    description: str
    label_zh: str
    sources: str  # input tables
    window: str
    null_means: str
    fill: object = None  # the value for people the stage has no row for (None: stays null)


# What each template repeats over, and the placeholder its name must hold.
_PLACEHOLDER = {"interest": "{name}", "window": "{n}"}

# The Python types a fill may have, per dtype (a datetime tag has no fill).
_FILL_TYPES: dict[str, tuple[type, ...]] = {
    "bool": (bool,),
    "int": (int,),
    "float": (float,),
    "str": (str,),
    "list[str]": (list,),
}


class TagEntry(BaseModel):
    """One [[tag]] table of registry.toml: a tag, or with `each` a template repeated per
    interest ({name}, {label}) or per RFM window ({n})."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    each: Literal["interest", "window"] | None = None
    family: Literal[
        "identity",
        "rfm",
        "behaviour",
        "interest",
        "community",
        "promo",
        "lifecycle",
        "predicted",
        "cluster",
    ]
    dtype: Literal["bool", "int", "float", "str", "datetime", "list[str]"]
    unit: str
    description: str
    label_zh: str
    sources: str
    window: str
    null_means: str
    fill: Any = None

    @model_validator(mode="after")
    def _check(self) -> TagEntry:
        problems = []
        where = f"tag '{self.name}'"
        if self.each is not None and _PLACEHOLDER[self.each] not in self.name:
            problems.append(f"{where}: a per-{self.each} name must hold {_PLACEHOLDER[self.each]}")
        if not (self.description and self.label_zh and self.null_means):
            problems.append(f"{where}: description, label_zh and null_means may not be empty")
        if self.fill is not None:
            types = _FILL_TYPES.get(self.dtype, ())
            bad_bool = isinstance(self.fill, bool) and self.dtype != "bool"
            bad_list = isinstance(self.fill, list) and any(
                not isinstance(v, str) for v in self.fill
            )
            if not isinstance(self.fill, types) or bad_bool or bad_list:
                problems.append(f"{where}: fill {self.fill!r} does not fit dtype {self.dtype}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class RegistryFile(BaseModel):
    """registry.toml: its version and the [[tag]] tables in table order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    tag: tuple[TagEntry, ...]

    @model_validator(mode="after")
    def _check(self) -> RegistryFile:
        twice = _twice(t.name for t in self.tag)
        if twice:
            raise ValueError("; ".join(f"tag '{n}' listed twice" for n in twice))
        return self


def _twice(names: Iterable[str]) -> list[str]:
    return [name for name, n in Counter(names).items() if n > 1]


def _fill_in(value: Any, subs: dict[str, str]) -> Any:
    if not isinstance(value, str):
        return value
    for placeholder, text in subs.items():
        value = value.replace(placeholder, text)
    return value


def _expand(entry: TagEntry, interests: tuple[tuple[str, str], ...]) -> list[Tag]:
    fields = entry.model_dump(exclude={"each"})
    if entry.each is None:
        return [Tag(**fields)]
    if entry.each == "interest":
        each = [{"{name}": name, "{label}": label} for name, label in interests]
    else:
        each = [{"{n}": str(n)} for n in WINDOWS]
    return [Tag(**{k: _fill_in(v, subs) for k, v in fields.items()}) for subs in each]


_FILE = validated(RegistryFile, read_toml(REGISTRY_FILE, "tag registry"), str(REGISTRY_FILE))

REGISTRY_VERSION = _FILE.version


@cache
def _registry(interests: tuple[tuple[str, str], ...]) -> tuple[Tag, ...]:
    tags = tuple(t for entry in _FILE.tag for t in _expand(entry, interests))
    twice = _twice(t.name for t in tags)
    if twice:
        raise ConfigError(
            format_problems(
                "the tag registry with this taxonomy",
                [f"tag '{n}' comes twice (an interest's tag clashes with another)" for n in twice],
            )
        )
    return tags


def registry(taxonomy: Taxonomy | None = None) -> tuple[Tag, ...]:
    """Every tag in table order, the interest tags from `taxonomy` (default: the contract's
    taxonomy, the shipped `configs/taxonomy.toml`) and the window tags from the RFM windows."""
    if taxonomy is None:
        return _registry(INTERESTS)
    return _registry(tuple((it.name, it.label) for it in taxonomy.interests))


REGISTRY: tuple[Tag, ...] = registry()

BY_NAME: dict[str, Tag] = {t.name: t for t in REGISTRY}
CONTRACT_COLUMNS = (
    "one_id",
    "is_high_value",
    "is_coupon_hunter",
    "primary_interest",
    "interests",
    "cluster",
    "recency_days",
    "frequency_52w",
    "monetary_52w",
)
