"""How bucket work runs: in this process (the default) or on Apache Spark.

A *bucket task* is a pure function `fn(context, bucket) -> pl.DataFrame` over the rows of one
bucket of people (`xxhash64(one_id) % buckets`), read from the staging folder. The context is a
small picklable object (settings, the week, learned state, the staging path), so the same task
runs unchanged in-process or inside a Spark executor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import polars as pl

BucketFn = Callable[[Any, int], pl.DataFrame]


class Executor(Protocol):
    name: str

    def map_buckets(self, fn: BucketFn, context: Any, buckets: Sequence[int]) -> list[pl.DataFrame]:
        """Run `fn(context, b)` for every bucket; results in bucket order."""
        ...


class LocalExecutor:
    """Buckets one after another in this process: memory is bounded by the largest bucket."""

    name = "local"

    def map_buckets(self, fn: BucketFn, context: Any, buckets: Sequence[int]) -> list[pl.DataFrame]:
        return [fn(context, b) for b in buckets]


def get_executor(name: str, **options: Any) -> Executor:
    if name == "local":
        return LocalExecutor()
    if name == "spark":
        from segments.spark import SparkExecutor

        return SparkExecutor(**options)
    from segments.errors import ConfigError

    raise ConfigError(f"unknown engine '{name}'; use local or spark.")
