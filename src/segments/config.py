"""The typed configuration: one loader, every problem reported at once, unknown keys rejected.

A config is a TOML file (default `configs/segments.toml`); every section is optional and every
setting has a default, so an empty file (or none) is a valid config. Each stage's section is a
pydantic model in `segments.settings`; this module composes them. Loading settings imports
pydantic and nothing of the engine (no polars, scikit-learn or Spark).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from segments.errors import ConfigError
from segments.settings.clustering import ClusteringConfig
from segments.settings.community import CommunityConfig
from segments.settings.identity import IdentityConfig
from segments.settings.interests import InterestConfig
from segments.settings.load import config_dir, read_toml, shipped, validated
from segments.settings.predict import PredictConfig
from segments.settings.promo import PromoConfig
from segments.settings.rfm import RfmConfig
from segments.settings.run import IngestConfig, Paths, RunConfig

if TYPE_CHECKING:
    from segments.ingest.adapters import Adapter


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

    def files_digest(self) -> str:
        """`digest` with the bytes of every file the settings name and the tags are made with:
        the taxonomy, the promotion calendar (the shipped ones when none is named) and the
        adapter files. A file edited in place changes no setting, so a refresh compares this
        with the live table's (`live.unchanged`, `live.increment`): a taxonomy edited between
        two refreshes of the same input was once ignored, and a calendar edited before a
        same-day refresh left the people it did not recompute on the old calendar."""
        h = hashlib.sha256(self.digest().encode())
        files = [
            (rel or default, self.resolve(rel) if rel else shipped(default))
            for rel, default in (
                (self.paths.taxonomy, "taxonomy.toml"),
                (self.paths.promo_calendar, "promo_calendar.toml"),
            )
        ]
        files += [(rel, self.resolve(rel)) for rel in self.ingest.adapter_files]
        for name, path in files:  # each file by the name the settings give (not where it is)
            h.update(b"\0" + name.encode() + b"\0")
            try:
                h.update(Path(path).read_bytes())  # type: ignore[arg-type]
            except OSError:  # a missing file: its loader names it in one line
                h.update(b"(missing)")
        return h.hexdigest()[:16]

    def resolve(self, relative: str | None) -> Path | None:
        if relative is None:
            return None
        path = Path(relative)
        if not path.is_absolute() and self.source:
            path = Path(self.source).parent / path
        return path

    def adapters(self) -> dict[str, Adapter]:
        from segments.ingest.adapters import Adapter, builtin_adapters, load_adapter_file

        found = builtin_adapters()
        for rel in self.ingest.adapter_files:
            path = self.resolve(rel)
            assert path is not None
            adapter = load_adapter_file(path)  # its own paths are relative to its file
            found[adapter.name] = adapter
        for name, body in self.ingest.adapters.items():
            adapter = validated(Adapter, {"name": name, **body}, f"[ingest.adapters.{name}]")
            found[name] = adapter.relative_to(Path(self.source).parent if self.source else None)
        return found


def load_config(path: str | Path | None = None) -> SegmentsConfig:
    """Load and validate a config file; None gives the defaults (plus `configs/segments.toml`
    when it exists). Raises ConfigError listing every problem."""
    if path is None:
        default = config_dir() / "segments.toml"
        if not default.is_file():
            return SegmentsConfig()
        path = default
    path = Path(path)
    cfg = validated(SegmentsConfig, read_toml(path, "config"), str(path))
    return cfg.model_copy(update={"source": str(path)})


__all__ = ["ConfigError", "SegmentsConfig", "config_dir", "load_config"]
