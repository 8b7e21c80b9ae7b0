"""The engine seam: what differs between running in this process and on Apache Spark.

A *bucket task* is a pure function `fn(context, bucket) -> pl.DataFrame` over the rows of one
bucket of people (`xxhash64(one_id) % buckets`), read from the staging folder. The context is a
small picklable object (settings, the week, learned state, the staging path), so the same task
runs unchanged in-process or inside a Spark executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import polars as pl

from segments.identity import ComponentsFn

BucketFn = Callable[[Any, int], pl.DataFrame]


class Executor(Protocol):
    """An engine: it runs bucket tasks and finds OneID's connected components. The pipeline
    asks it for both and never asks which engine it is (`name` is for progress lines)."""

    name: str
    # True when the bucket tasks run in this process: a build may then keep its staged rows in
    # memory instead of writing them to a folder every worker reads.
    in_process: bool

    def map_buckets(self, fn: BucketFn, context: Any, buckets: Sequence[int]) -> list[pl.DataFrame]:
        """Run `fn(context, b)` for every bucket; results in bucket order."""
        ...

    def components_finder(self) -> ComponentsFn | None:
        """The connected-components finder for one identity build (None: scipy here)."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a Spark session); a no-op in-process."""
        ...


class LocalExecutor:
    """Buckets one after another in this process: memory is bounded by the largest bucket."""

    name = "local"
    in_process = True

    def map_buckets(self, fn: BucketFn, context: Any, buckets: Sequence[int]) -> list[pl.DataFrame]:
        return [fn(context, b) for b in buckets]

    def components_finder(self) -> ComponentsFn | None:
        return None

    def close(self) -> None:
        return None
