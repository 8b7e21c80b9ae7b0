"""The Spark engine gives the local engine's results: bucket tasks, connected components, OneID."""

from __future__ import annotations

import itertools
import json
import shutil
from datetime import datetime
from pathlib import Path

import networkx as nx
import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

pytest.importorskip("pyspark", reason="the spark engine needs pip install segments[spark]")
pytest.importorskip("pandas", reason="the spark engine needs pip install segments[spark]")
if shutil.which("java") is None:
    pytest.skip("the spark engine needs Java 17 on PATH", allow_module_level=True)

from segments import demo, pipeline
from segments.config import load_config
from segments.engine import LocalExecutor
from segments.engine import spark as spark_engine
from segments.engine.spark import (
    SparkExecutor,
    build_identity_spark,
    spark_connected_components,
)
from segments.errors import DataError
from segments.identity import IdentityConfig, IdentityResult, build_identity

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def executor():
    # Tiny data: adaptive query execution only adds planning rounds.
    conf = {"spark.sql.shuffle.partitions": "2", "spark.sql.adaptive.enabled": "false"}
    with SparkExecutor(master="local[2]", spark_conf=conf) as ex:
        yield ex


@pytest.fixture(scope="module")
def spark(executor: SparkExecutor):
    return executor.spark


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("spark_demo") / "input"
    demo.generate(out, users=300, seed=3)
    return out


def test_map_buckets_equals_local(executor: SparkExecutor) -> None:
    # Nested, so Spark ships it by value (the test module is not importable in the workers).
    def toy(ctx: dict, b: int) -> pl.DataFrame:
        n = ctx["rows"] * (b + 1)
        return pl.DataFrame(
            {
                "bucket": pl.Series([b] * n, dtype=pl.Int32),
                "x": pl.Series(np.arange(n) * ctx["scale"], dtype=pl.Float64),
                "name": [f"u{b}-{i}" for i in range(n)],
                "kind": pl.Series(
                    ["a", "b"] * (n // 2) + ["a"] * (n % 2), dtype=pl.Enum(["a", "b"])
                ),
                "tags": [[f"t{i % 3}"] * (i % 2) for i in range(n)],
            }
        )

    ctx = {"rows": 40, "scale": 0.5}
    buckets = [3, 0, 2, 1, 5]
    executor.chunk_bytes = 256  # every result travels in several chunks
    try:
        got = executor.map_buckets(toy, ctx, buckets)
    finally:
        executor.chunk_bytes = 64 * 1024 * 1024
    want = LocalExecutor().map_buckets(toy, ctx, buckets)
    assert len(got) == len(want) == 5
    for g, w in zip(got, want, strict=True):
        assert_frame_equal(g, w)
    assert [g["bucket"][0] for g in got] == buckets
    assert executor.map_buckets(toy, ctx, []) == []


def test_a_user_error_in_a_bucket_is_raised_as_itself(executor: SparkExecutor) -> None:
    def failing(ctx: None, b: int) -> pl.DataFrame:
        if b == 1:
            raise DataError(f"bucket {b}: bad rows")
        return pl.DataFrame({"b": [b]})

    with pytest.raises(DataError, match="bucket 1: bad rows"):
        executor.map_buckets(failing, None, [0, 1, 2])


def _with_buckets(buckets: int):
    cfg = load_config()
    return cfg.model_copy(update={"run": cfg.run.model_copy(update={"buckets": buckets})})


def test_pipeline_on_spark_equals_local(
    executor: SparkExecutor, demo_dir: Path, tmp_path: Path
) -> None:
    cfg = _with_buckets(4)
    local = pipeline.run(cfg, demo_dir, tmp_path / "local")
    on_spark = pipeline.run(cfg, demo_dir, tmp_path / "spark", executor=executor)
    week = local[0].week.label
    assert on_spark[0].week.label == week
    assert any("(spark)" in s["name"] for s in on_spark[0].stages)
    for rel in (f"weeks/{week}/tags.parquet", "identity/one_id_map.parquet"):
        a = pl.read_parquet(tmp_path / "local" / rel)
        b = pl.read_parquet(tmp_path / "spark" / rel)
        assert a.height > 250, rel
        assert_frame_equal(a, b)


def test_spark_identity_reads_only_the_new_files_and_equals_a_local_full_read(
    executor: SparkExecutor, demo_dir: Path, tmp_path: Path
) -> None:
    cfg = _with_buckets(2)
    inp = tmp_path / "input"
    shutil.copytree(demo_dir, inp)
    ws = tmp_path / "spark"
    pipeline.run(cfg, inp, ws, executor=executor)
    files = sum(1 for t in inp.iterdir() if t.name != "truth" for _ in t.iterdir())
    assert _last_manifest(ws)["identity_pieces"] == {"read": files, "reused": 0}
    (inp / "events" / "zz_new.csv").write_text(
        "user_id_type,user_id,ts,event,category,item_id,query,event_id\n"
        "openid,oNEWSPARK0000000000000000001,2026-11-21 09:00:00,view,帐篷,i1,,zz1\n",
        encoding="utf-8",
    )
    pipeline.run(cfg, inp, ws, executor=executor)
    assert _last_manifest(ws)["identity_pieces"] == {"read": 1, "reused": files}
    local = tmp_path / "local"
    results = pipeline.run(cfg, inp, local)
    week = results[0].week.label
    for rel in (f"weeks/{week}/tags.parquet", "identity/one_id_map.parquet"):
        assert (ws / rel).read_bytes() == (local / rel).read_bytes(), rel
    ids = pl.read_parquet(ws / "identity" / "one_id_map.parquet")
    assert ids.filter(pl.col("id") == "oNEWSPARK0000000000000000001").height == 1


def _last_manifest(ws: Path) -> dict:
    return json.loads(sorted((ws / "runs").glob("*/manifest.json"))[-1].read_text())


def _random_graph(seed: int) -> tuple[list[int], list[tuple[int, int]]]:
    """Sparse node ids (not 0..n-1), isolated nodes, self-loops, repeated edges, and one long
    path (the case that takes the most rounds)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 120))
    m = int(rng.integers(n // 2, n))
    ids = np.sort(rng.choice(10_000, size=n, replace=False)) * 7 + 3
    u, v = ids[rng.integers(0, n, m)], ids[rng.integers(0, n, m)]
    edges = [(int(a), int(b)) for a, b in zip(u, v, strict=True)]
    edges += [*edges[:5], (int(ids[0]), int(ids[0]))]
    path = [int(x) for x in rng.permutation(np.arange(100_000, 100_040))]
    edges += list(itertools.pairwise(path))
    return [int(x) for x in ids], edges


def test_connected_components_equal_networkx(spark) -> None:
    # Three random graphs side by side (one Spark run: startup and rounds are slow).
    nodes, edges = [], []
    for seed in (0, 1, 2):
        more_nodes, more_edges = _random_graph(seed)
        shift = seed * 1_000_000
        nodes += [x + shift for x in more_nodes]
        edges += [(a + shift, b + shift) for a, b in more_edges]
    graph = nx.Graph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    want = {node: min(c) for c in nx.connected_components(graph) for node in c}
    assert len(set(want.values())) > 15

    edges_df = spark.createDataFrame(edges, "a long, b long")
    nodes_df = spark.createDataFrame([(x,) for x in nodes], "id long")
    got = spark_connected_components(edges_df, nodes_df).collect()
    assert len(got) == len(want)
    assert {r["node"]: r["component"] for r in got} == want


def test_connected_components_of_no_edges(spark) -> None:
    edges_df = spark.createDataFrame([], "a long, b long")
    nodes_df = spark.createDataFrame([(5,), (2,)], "id long")
    got = spark_connected_components(edges_df, nodes_df).collect()
    assert sorted((r["node"], r["component"]) for r in got) == [(2, 2), (5, 5)]


def _sorted(frame: pl.DataFrame) -> pl.DataFrame:
    """Rows in the order the pipeline writes them (build_identity's own row order is that of
    a hash aggregation, which is not fixed from one call to the next)."""
    return frame.sort([c for c, t in frame.schema.items() if not isinstance(t, pl.List)])


def _assert_same(a: IdentityResult, b: IdentityResult) -> None:
    for name in ("one_id_map", "rejected_links", "rejected_ids", "changes"):
        assert_frame_equal(_sorted(getattr(a, name)), _sorted(getattr(b, name)))
    drop = {"seconds", "cpu_seconds"}  # timings
    assert {k: v for k, v in a.stats.items() if k not in drop} == {
        k: v for k, v in b.stats.items() if k not in drop
    }


def test_build_identity_spark_equals_local_on_demo(spark, demo_dir: Path) -> None:
    cfg = load_config()
    ingested = pipeline._ingest(cfg, demo_dir, None, None)
    tables = {k: v.lazy() for k, v in ingested.tables.items()}
    local = build_identity(tables, cfg.identity, week_label="2026-W47")
    on_spark = build_identity_spark(tables, cfg.identity, week_label="2026-W47", spark=spark)
    assert local.stats["cuts_by_reason"].get("hub_degree", 0) > 0
    _assert_same(local, on_spark)

    # Against last week's map (built without half the bridge rows): merges and splits.
    ids = ingested.tables["identities"]
    half = {**tables, "identities": ids.head(ids.height // 2).lazy()}
    previous = build_identity(half, cfg.identity, week_label="2026-W46").one_id_map
    local = build_identity(tables, cfg.identity, previous, "2026-W47")
    on_spark = build_identity_spark(tables, cfg.identity, previous, "2026-W47", spark=spark)
    assert "merged" in set(local.changes["event"])
    _assert_same(local, on_spark)


def test_build_identity_spark_applies_the_limits_like_local(spark, monkeypatch) -> None:
    on_spark_runs = []
    real = spark_engine._component_min
    monkeypatch.setattr(
        spark_engine,
        "_component_min",
        lambda *args: on_spark_runs.append(1) or real(*args),
    )
    ts = datetime(2026, 11, 1)
    rows = [
        # one member holding three unionids (limit 1): the strongest link wins
        ("member_id", "m1", "unionid", "unionA", "crm"),
        ("member_id", "m1", "unionid", "unionB", "crm"),
        ("member_id", "m1", "unionid", "unionC", "crm"),
        ("unionid", "unionA", "openid", "openid_a1", "crm"),
        ("unionid", "unionB", "openid", "openid_b1", "crm"),
        # a chain far from it
        ("member_id", "m2", "unionid", "unionD", "crm"),
        ("unionid", "unionD", "openid", "openid_d1", "crm"),
        ("unionid", "unionD", "openid", "openid_d2", "crm"),
        # a hub: one phone hash linked to 10 openids
        *[("phone_sha256", "f" * 64, "openid", f"openid_h{i:02d}", "crm") for i in range(10)],
        # a blocked value
        ("member_id", "null", "openid", "openid_x1", "crm"),
    ]
    identities = pl.DataFrame(
        rows, schema=["id_type_a", "id_a", "id_type_b", "id_b", "source"], orient="row"
    ).with_columns(pl.lit(ts).alias("observed_at"))
    # the link m1-unionB is seen twice: it is the strongest
    identities = pl.concat([identities, identities[1:2]])
    tables = {"identities": identities.lazy()}
    cfg = IdentityConfig()
    local = build_identity(tables, cfg, week_label="2026-W47")
    on_spark = build_identity_spark(tables, cfg, week_label="2026-W47", spark=spark)
    reasons = set(local.rejected_links["reason"])
    assert {"limit:unionid>1", "blocked_value"} <= reasons
    assert any(r.startswith("hub_degree") for r in reasons)
    _assert_same(local, on_spark)
    assert len(on_spark_runs) == 1  # the rebuild's components were re-split on the driver
    person = on_spark.one_id_map.filter(pl.col("id") == "m1")["one_id"].item()
    held = on_spark.one_id_map.filter(pl.col("one_id") == person)
    assert sorted(held["id"]) == ["m1", "openid_b1", "unionB"]
