"""The typed configuration: one loader, every problem reported at once, unknown keys rejected.

A config is a TOML file (default `configs/segments.toml`); every section is optional and every
setting has a default, so an empty file (or none) is a valid config. Each stage's section is a
pydantic model defined in the stage's own module.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import zoneinfo
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from segments.adapters import Adapter, builtin_adapters, load_adapter_file
from segments.clustering import ClusteringConfig
from segments.community import CommunityConfig
from segments.errors import ConfigError
from segments.identity import IdentityConfig
from segments.interests import InterestConfig
from segments.predict import PredictConfig
from segments.promo import PromoConfig
from segments.rfm import RfmConfig

REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "configs"


def config_dir() -> Path:
    """Where the shipped configs live: the repo's `configs/` in a checkout, else the package's."""
    return REPO_CONFIGS if REPO_CONFIGS.is_dir() else PACKAGED_CONFIGS


MAX_BUCKETS = 4096
ROWS_PER_BUCKET = 3_000_000  # rows (orders + events + messages) per bucket with buckets = "auto"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Shanghai"
    # hash(one_id) % buckets; "auto": one bucket per ~3M staged rows (one bucket up to 4M)
    buckets: int | Literal["auto"] = "auto"

    @field_validator("buckets")
    @classmethod
    def _buckets(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= MAX_BUCKETS:
            raise ValueError(f"must be 'auto' or a whole number from 1 to {MAX_BUCKETS}")
        return v

    def bucket_count(self, rows: int) -> int:
        """The number of buckets for a week whose per-user tables hold `rows` rows."""
        if isinstance(self.buckets, int):
            return self.buckets
        if rows <= 4_000_000:
            return 1
        return min(MAX_BUCKETS, -(-rows // ROWS_PER_BUCKET))

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            zoneinfo.ZoneInfo(v)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"'{v}' is not a time zone name such as Asia/Shanghai") from None
        return v


class IngestConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Extra adapter files (TOML), relative to the config file.
    adapter_files: list[str] = Field(default_factory=list)
    # Adapters defined inline: [ingest.adapters.NAME]
    adapters: dict[str, dict] = Field(default_factory=dict)


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    taxonomy: str | None = None
    promo_calendar: str | None = None
    audiences: str | None = None


class SegmentsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    run: RunConfig = RunConfig()
    ingest: IngestConfig = IngestConfig()
    paths: Paths = Paths()
    identity: IdentityConfig = IdentityConfig()
    rfm: RfmConfig = RfmConfig()
    predict: PredictConfig = PredictConfig()
    interests: InterestConfig = InterestConfig()
    community: CommunityConfig = CommunityConfig()
    promo: PromoConfig = PromoConfig()
    clustering: ClusteringConfig = ClusteringConfig()

    # Where the file came from, to resolve relative paths (not part of the hash).
    source: str | None = Field(default=None, exclude=True)

    def digest(self) -> str:
        """A short hash of every setting: recorded in manifests and Parquet metadata."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def resolve(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        path = Path(relative)
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        return path

    def adapters(self) -> dict[str, Adapter]:
        found = builtin_adapters()
        for rel in self.ingest.adapter_files:
            path = self.resolve(rel)
            assert path is not None
            adapter = load_adapter_file(path)  # its own paths are relative to its file
            found[adapter.name] = adapter
        for name, body in self.ingest.adapters.items():
            try:
                adapter = Adapter.model_validate({"name": name, **body})
            except ValidationError as e:
                raise ConfigError(_format_errors(f"[ingest.adapters.{name}]", e)) from None
            found[name] = adapter.relative_to(Path(self.source).parent if self.source else None)
        return found


def _format_errors(where: str, e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (not a setting; check the spelling)"
        lines.append(
            f"  - {loc}: {msg}. Got {err.get('input')!r} instead."
            if err["type"] != "extra_forbidden"
            else f"  - {loc}: {msg}."
        )
    n = len(lines)
    return f"{where} has {n} problem{'s' if n != 1 else ''}:\n" + "\n".join(lines)


def load_config(path: str | Path | None = None) -> SegmentsConfig:
    """Load and validate a config file; None gives the defaults (plus `configs/segments.toml`
    when it exists). Raises ConfigError listing every problem."""
    if path is None:
        default = config_dir() / "segments.toml"
        if not default.is_file():
            return SegmentsConfig()
        path = default
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file.") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML file ({e}).") from None
    try:
        cfg = SegmentsConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_errors(str(path), e)) from None
    return cfg.model_copy(update={"source": str(path)})
