"""Settings of a run (`[run]`, `[ingest]`, `[paths]`): time zone, buckets, adapters, config paths."""

from __future__ import annotations

import zoneinfo
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_BUCKETS = 4096


ROWS_PER_BUCKET = 3_000_000  # rows (orders + events + messages) per bucket with buckets = "auto"


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "Asia/Shanghai"
    # hash(one_id) % buckets; "auto": one bucket per ~3M staged rows (one bucket up to 4M)
    buckets: int | Literal["auto"] = "auto"
    # Where a build's rows wait between its steps: "memory" (the in-process engine only),
    # "disk" (the staging folder), "auto": memory up to `memory_staging_rows` rows covered
    # (orders, messages, the counted weeks' events), and for a live build of the people it
    # touches. At 2M people (about 35M rows) a weekly build staged in memory peaked at 8.6 GiB
    # against 5.9 GiB on disk, which took 5 s more of 230 s (docs/benchmarks.md).
    staging: Literal["auto", "memory", "disk"] = "auto"
    memory_staging_rows: int = Field(12_000_000, ge=0)

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
    # How CSV and JSON lines text is read (`--encoding` overrides it): "auto" reads UTF-8, or
    # detects GBK/GB18030 (an adapter's encoding first); a name reads every file strictly in it.
    encoding: Literal["auto", "utf-8", "gbk", "gb18030"] = "auto"


class Paths(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    taxonomy: str | None = None
    promo_calendar: str | None = None
    audiences: str | None = None
