"""Where the work runs: in this process (`LocalExecutor`, the default) or on Apache Spark
(`segments.engine.spark.SparkExecutor`, imported only when asked for: it needs pyspark).

An `Executor` is the whole seam: it runs bucket tasks (`map_buckets`) and finds the identity
graph's connected components (`components_finder`). Nothing else in the engine depends on
which one runs.
"""

from __future__ import annotations

from typing import Any

from segments.engine.base import BucketFn, ComponentsFn, Executor, LocalExecutor
from segments.errors import ConfigError

ENGINES = ("local", "spark")


def get_executor(name: str, **options: Any) -> Executor:
    """The executor called `name` (`local` or `spark`; Spark takes `master=` and `spark_conf=`)."""
    if name == "local":
        return LocalExecutor()
    if name == "spark":
        from segments.engine.spark import SparkExecutor

        return SparkExecutor(**options)
    raise ConfigError(f"unknown engine '{name}'; use local or spark.")


__all__ = ["ENGINES", "BucketFn", "ComponentsFn", "Executor", "LocalExecutor", "get_executor"]
