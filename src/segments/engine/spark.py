"""Apache Spark engine: bucket tasks through `mapInArrow`, and OneID's connected components.

Two things run on Spark, and neither re-writes a stage:

- `SparkExecutor.map_buckets` runs the very `fn(context, bucket)` of the weekly build
  (`pass1_bucket`, `pass2_bucket`) inside Spark's Python workers, one bucket per partition. The
  result of a bucket travels back as Arrow IPC bytes in a binary column (schema-agnostic, dtypes
  exact), cut into chunks under Spark's 2 GiB cell limit; the driver reads and orders them.
- `SparkExecutor.components_finder` gives `segments.identity.build_identity` its
  connected-components core on Spark (`spark_connected_components`, large-star / small-star);
  gathering, validation, the hub cut, the per-type limit rebuild (on the few offending
  components, collected) and the one_id assignment are the identity package's own code, so the
  result is the same. `build_identity_spark` is that build on its own.

The staging folder that bucket tasks read must be reachable at the same path from the driver
(which writes it with ordinary file operations) and every executor (which scans it with
polars): a local folder with a `local[N]` master; on a cluster, shared storage mounted on every
node (NFS, HDFS through fuse/NFS gateway, S3/OSS through a POSIX mount). See docs/scale.md.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa

from segments import identity as ident
from segments.engine.base import BucketFn
from segments.errors import ConfigError, DataError, SegmentsError, StageError
from segments.identity.graph import scipy_components

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

# Each bucket's result is sent back in pieces of at most this many bytes (a Spark binary cell
# and an Arrow binary array both stop at 2 GiB).
CHUNK_BYTES = 64 * 1024 * 1024
_RESULT_DDL = "idx long, part int, payload binary"
_RESULT_ARROW = pa.schema([("idx", pa.int64()), ("part", pa.int32()), ("payload", pa.binary())])
_ERROR_PART = -1


def _pyspark() -> Any:
    try:
        import pandas  # noqa: F401  (pyspark's mapInArrow insists on it)
        import pyspark
    except ImportError as e:
        raise ConfigError(
            f"the spark engine needs {e.name}: pip install 'segments[spark]' "
            "(pyspark>=4 with pandas; Spark also needs Java 17)."
        ) from e
    return pyspark


def default_conf(master: str) -> dict[str, str]:
    """The settings `SparkExecutor` starts a session with (`spark_conf` overrides any)."""
    conf = {
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Small shuffles: the identity graph's joins; raise on a cluster (~2-3x total cores).
        "spark.sql.shuffle.partitions": "4",
        "spark.ui.showConsoleProgress": "false",
    }
    if master.startswith("local"):
        conf.update(
            {
                "spark.ui.enabled": "false",
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.pyspark.python": sys.executable,
                "spark.pyspark.driver.python": sys.executable,
            }
        )
    return conf


def spark_session(
    master: str = "local[2]", app_name: str = "segments", spark_conf: dict | None = None
) -> SparkSession:
    """A SparkSession for `master` with `default_conf` plus `spark_conf`.

    With a `local[...]` master the Python workers run this very interpreter
    (`PYSPARK_PYTHON=sys.executable`), so they import the same `segments`. On a cluster, ship
    the package (a wheel or `--py-files`) and point `spark.pyspark.python` at its environment.
    """
    _pyspark()
    from pyspark.sql import SparkSession

    conf = {**default_conf(master), **{k: str(v) for k, v in (spark_conf or {}).items()}}
    if master.startswith("local"):
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
        os.environ["PYSPARK_DRIVER_PYTHON"] = conf["spark.pyspark.driver.python"]
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("WARN")
    return session


# ---------------------------------------------------------------------------------------------
# Bucket tasks


class _BucketTask:
    """What runs in a Spark Python worker: `fn(context, bucket)` for each bucket index of its
    partition, the polars result written as Arrow IPC and sent in chunks. A `SegmentsError`
    (a user's error) is sent back pickled so the driver raises the same error."""

    def __init__(self, fn: BucketFn, context: Any, buckets: list[int], chunk_bytes: int) -> None:
        self.fn = fn
        self.context = context
        self.buckets = buckets
        self.chunk_bytes = chunk_bytes

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for idx in batch.column(0).to_pylist():
                yield from self._run(int(idx))

    def _run(self, idx: int) -> Iterator[pa.RecordBatch]:
        bucket = self.buckets[idx]
        try:
            result = self.fn(self.context, bucket)
            if not isinstance(result, pl.DataFrame):
                raise StageError(
                    f"bucket task {getattr(self.fn, '__name__', self.fn)!r} returned "
                    f"{type(result).__name__} for bucket {bucket}, not a polars DataFrame"
                )
        except SegmentsError as e:
            yield _result_batch(idx, _ERROR_PART, pickle.dumps(e))
            return
        buf = io.BytesIO()
        result.write_ipc(buf, compression="lz4")
        data = buf.getbuffer()
        for part, start in enumerate(range(0, max(len(data), 1), self.chunk_bytes)):
            yield _result_batch(idx, part, bytes(data[start : start + self.chunk_bytes]))


def _result_batch(idx: int, part: int, payload: bytes) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays(
        [
            pa.array([idx], pa.int64()),
            pa.array([part], pa.int32()),
            pa.array([payload], pa.binary()),
        ],
        schema=_RESULT_ARROW,
    )


def _assemble(table: pa.Table, n: int) -> list[pl.DataFrame]:
    """The chunks collected from the workers -> one DataFrame per bucket index, in order."""
    idx = table.column("idx").to_numpy()
    part = table.column("part").to_numpy()
    payload = table.column("payload")
    order = np.lexsort((part, idx))
    pieces: list[list[bytes]] = [[] for _ in range(n)]
    for i in order.tolist():
        if part[i] == _ERROR_PART:
            raise pickle.loads(payload[i].as_py())
        pieces[int(idx[i])].append(payload[i].as_py())
    missing = [i for i, p in enumerate(pieces) if not p]
    if missing:
        raise StageError(f"spark: no result came back for bucket index(es) {missing}")
    return [pl.read_ipc(io.BytesIO(b"".join(p))) for p in pieces]


class SparkExecutor:
    """Runs bucket tasks on Spark: one partition per bucket, the same `fn` as `LocalExecutor`.

    `master` is any Spark master URL (`local[2]`, `yarn`, `spark://host:7077`, `k8s://...`);
    `spark_conf` adds or overrides settings (see `default_conf`); `session` reuses an existing
    SparkSession (then `close()` leaves it running). The session starts on first use.
    The bucket tasks read `context.staging`: it must be reachable from every executor.
    """

    name = "spark"
    in_process = False

    def __init__(
        self,
        master: str = "local[2]",
        app_name: str = "segments",
        spark_conf: dict | None = None,
        session: SparkSession | None = None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:
        _pyspark()
        if chunk_bytes < 1:
            raise ConfigError(f"SparkExecutor: chunk_bytes must be >= 1, got {chunk_bytes}")
        self.master = master
        self.app_name = app_name
        self.spark_conf = dict(spark_conf or {})
        self.chunk_bytes = chunk_bytes
        self._session = session
        self._owned = False
        # seconds of each map_buckets call (wall clock, driver side), for run reports
        self.timings: list[float] = []

    @property
    def spark(self) -> SparkSession:
        """The SparkSession (started on first use)."""
        if self._session is None:
            self._session = spark_session(self.master, self.app_name, self.spark_conf)
            self._owned = True
        return self._session

    def map_buckets(self, fn: BucketFn, context: Any, buckets: Sequence[int]) -> list[pl.DataFrame]:
        """Run `fn(context, b)` for every bucket on Spark; results in the order of `buckets`."""
        chosen = [int(b) for b in buckets]
        if not chosen:
            return []
        started = time.perf_counter()
        n = len(chosen)
        task = _BucketTask(fn, context, chosen, self.chunk_bytes)
        # Exactly one bucket index per partition, without a shuffle.
        ids = self.spark.range(0, n, 1, numPartitions=n)
        table = ids.mapInArrow(task, _RESULT_DDL).toArrow()
        out = _assemble(table, n)
        self.timings.append(time.perf_counter() - started)
        return out

    def components_finder(self) -> _SparkComponents:
        """A connected-components finder on this session, for one identity build."""
        return _SparkComponents(self.spark)

    def close(self) -> None:
        """Stop the session if this executor started it."""
        if self._owned and self._session is not None:
            self._session.stop()
        self._session = None
        self._owned = False

    def __enter__(self) -> SparkExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------
# Connected components: large-star / small-star (Kiveris et al., SoCC 2014)


def _large_star(e: DataFrame) -> DataFrame:
    """Every node links its larger neighbours to the smallest node of its neighbourhood
    (itself included). In and out: distinct edges (src, dst) with src > dst."""
    from pyspark.sql import functions as F

    both = e.select(F.col("src").alias("a"), F.col("dst").alias("b")).unionByName(
        e.select(F.col("dst").alias("a"), F.col("src").alias("b"))
    )
    low = both.groupBy("a").agg(F.min("b").alias("m"))
    return (
        both.join(low, "a")
        .where(F.col("b") > F.col("a"))
        .select(F.col("b").alias("src"), F.least("m", "a").alias("dst"))
        .distinct()
    )


def _small_star(e: DataFrame) -> DataFrame:
    """Every node links itself and its smaller neighbours to its smallest neighbour.
    In and out: distinct edges (src, dst) with src > dst."""
    from pyspark.sql import functions as F

    low = e.groupBy("src").agg(F.min("dst").alias("m"))
    return (
        e.join(low, "src")
        .select(
            F.when(F.col("dst") == F.col("m"), F.col("src")).otherwise(F.col("dst")).alias("src"),
            F.col("m").alias("dst"),
        )
        .distinct()
    )


def _is_star_forest(e: DataFrame) -> bool:
    """Every node has at most one parent and no parent has one: then each star is a whole
    component (the steps keep connectivity) and its centre is the component's smallest node
    (every edge points to a smaller node)."""
    from pyspark.sql import functions as F

    parents = e.groupBy("src").agg(F.count("*").alias("k"), F.min("dst").alias("p"))
    children = parents.select(F.col("src").alias("p"), F.lit(True).alias("p_has_parent"))
    bad = parents.join(children, "p", "left").where(
        (F.col("k") > 1) | F.col("p_has_parent").isNotNull()
    )
    return bad.limit(1).count() == 0


def _truncate(df: DataFrame) -> DataFrame:
    """Materialise `df` and cut its lineage: a reliable checkpoint when the SparkContext has a
    checkpoint directory (survives lost executors), else a local one."""
    if df.sparkSession.sparkContext.getCheckpointDir():
        return df.checkpoint(eager=True)
    return df.localCheckpoint(eager=True)


def spark_connected_components(
    edges_df: DataFrame, nodes_df: DataFrame | None = None, *, max_iterations: int = 200
) -> DataFrame:
    """Connected components of an undirected graph, in Spark DataFrame operations.

    Input: `edges_df`, its first two columns the ends of each edge (integers; nulls and
    self-loops ignored, duplicates allowed); `nodes_df` (optional), its first column every node
    (isolated nodes get their own component; nodes that only appear in edges are kept too).
    Output: DataFrame(node long, component long), one row per node, `component` being the
    smallest node of its component. Large-star and small-star steps alternate until the edges
    form stars (O(log^2 n) rounds); each round is checkpointed to keep the lineage short.
    """
    from pyspark.sql import functions as F

    if len(edges_df.columns) < 2 or (nodes_df is not None and not nodes_df.columns):
        raise DataError(
            "spark_connected_components: edges_df needs two columns (the ends of each edge) "
            "and nodes_df one (the node)"
        )
    a, b = (F.col(c).cast("long") for c in edges_df.columns[:2])
    e = (
        edges_df.select(a.alias("a"), b.alias("b"))
        .where(F.col("a").isNotNull() & F.col("b").isNotNull() & (F.col("a") != F.col("b")))
        .select(F.greatest("a", "b").alias("src"), F.least("a", "b").alias("dst"))
        .distinct()
    )
    e = _truncate(e)
    rounds = 0
    while not _is_star_forest(e):
        if rounds == max_iterations:
            raise StageError(
                f"spark_connected_components: no convergence after {max_iterations} rounds"
            )
        e = _truncate(_small_star(_large_star(e)))
        rounds += 1
    labelled = e.select(F.col("src").alias("node"), F.col("dst").alias("component")).unionByName(
        e.select(F.col("dst").alias("node"), F.col("dst").alias("component")).distinct()
    )
    if nodes_df is None:
        return labelled
    nodes = nodes_df.select(F.col(nodes_df.columns[0]).cast("long").alias("node")).where(
        F.col("node").isNotNull()
    )
    return (
        nodes.distinct()
        .join(labelled, "node", "full")
        .select("node", F.coalesce("component", "node").alias("component"))
    )


def _component_min(spark: SparkSession, n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per node 0..n-1, the smallest node of its component, the components found on Spark
    (only nodes with an edge travel; the others are their own component)."""
    smallest = np.arange(n, dtype=np.int64)
    if len(u) == 0:
        return smallest
    edges = spark.createDataFrame(
        pa.table({"src": np.asarray(u, dtype=np.int64), "dst": np.asarray(v, dtype=np.int64)})
    )
    found = spark_connected_components(edges).toArrow()
    smallest[found.column("node").to_numpy()] = found.column("component").to_numpy()
    return smallest


def _dense(smallest: np.ndarray) -> tuple[int, np.ndarray]:
    """Component labels numbered by their smallest node, as scipy numbers them."""
    if len(smallest) == 0:
        return 0, np.zeros(0, dtype=np.int32)
    roots, labels = np.unique(smallest, return_inverse=True)
    return len(roots), labels.astype(np.int32)


def spark_components(
    spark: SparkSession, n: int, u: np.ndarray, v: np.ndarray
) -> tuple[int, np.ndarray]:
    """Drop-in for `segments.identity.graph.scipy_components` (count, label per node 0..n-1,
    labels in the order of each component's smallest node, as scipy numbers them), on Spark."""
    return _dense(_component_min(spark, n, u, v))


def _edge_keys(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    u, v = np.asarray(u, dtype=np.int64), np.asarray(v, dtype=np.int64)
    return (np.minimum(u, v) << np.int64(32)) | np.maximum(u, v)


class _SparkComponents:
    """Stands in for `identity.graph.scipy_components` during one build.

    The identity build finds components twice: after the hub cut, and again after the per-type limit
    rebuild has cut some edges of the few offending components. The first call runs on Spark.
    A later call over the same nodes whose edges are a subset of the previous call's only
    re-splits the components that lost an edge, on the driver (scipy, on that small subgraph):
    no other component can change. Anything else goes to Spark again."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.calls = 0
        self._last: tuple[int, np.ndarray, np.ndarray, np.ndarray] | None = None

    def __call__(self, n: int, u: np.ndarray, v: np.ndarray) -> tuple[int, np.ndarray]:
        self.calls += 1
        keys = _edge_keys(u, v)
        smallest = self._resplit(n, u, v, keys)
        if smallest is None:
            smallest = _component_min(self.spark, n, u, v)
        self._last = (n, keys, np.asarray(u, dtype=np.int64), smallest)
        return _dense(smallest)

    def _resplit(self, n: int, u: np.ndarray, v: np.ndarray, keys: np.ndarray) -> np.ndarray | None:
        if self._last is None or self._last[0] != n:
            return None
        _, old_keys, old_u, old_smallest = self._last
        if not np.isin(keys, old_keys).all():
            return None
        smallest = old_smallest.copy()
        lost = ~np.isin(old_keys, keys)
        if not lost.any():
            return smallest
        touched = np.zeros(n, dtype=bool)
        touched[np.unique(old_smallest[old_u[lost]])] = True
        members = np.flatnonzero(touched[old_smallest])
        local = np.full(n, -1, dtype=np.int64)
        local[members] = np.arange(len(members))
        inside = local[np.asarray(u, dtype=np.int64)] >= 0
        count, sub = scipy_components(
            len(members), local[np.asarray(u)[inside]], local[np.asarray(v)[inside]]
        )
        low = np.full(count, np.iinfo(np.int64).max, dtype=np.int64)
        np.minimum.at(low, sub, members)
        smallest[members] = low[sub]
        return smallest


def build_identity_spark(
    tables: dict[str, pl.LazyFrame | None],
    cfg: ident.IdentityConfig,
    previous: pl.DataFrame | None = None,
    week_label: str = "",
    spark: SparkSession | None = None,
    node_cache: ident.NodeCache | None = None,
) -> ident.IdentityResult:
    """`segments.identity.build_identity` with its connected components found on Spark.

    Same inputs, same output (`IdentityResult`: one_id_map, rejected_links, rejected_ids,
    changes, stats) and the same guards, because it is the identity package's own code: blocked values
    and patterns reject identifiers, hubs lose their edges, components over a per-type limit are
    rebuilt strongest evidence first (on the driver, over the few offending components), one_ids
    are content hashes kept stable against `previous`. Only the connected components of the
    graph left after the hub cut are found on Spark (`spark_connected_components`). Node and
    edge gathering reads `tables` with polars on the driver, and with a `node_cache` reads only
    the new files' identifiers, as a local build does. `spark` defaults to a `local[2]` session.
    """
    spark = spark if spark is not None else spark_session()
    components = _SparkComponents(spark)
    return ident.build_identity(
        tables, cfg, previous, week_label, components=components, node_cache=node_cache
    )


__all__ = [
    "SparkExecutor",
    "build_identity_spark",
    "default_conf",
    "spark_components",
    "spark_connected_components",
    "spark_session",
]
