"""Each stage of a cold build beside its floor: the least work that produces what it reads or writes.

    python benchmarks/floors.py --input benchmarks/data/demo-100000 --workspace WS \
        [--peer benchmarks/results/users-100000.json] [--json]

WS is the workspace of a cold `segments run` over INPUT (its latest run manifest gives the
engine's seconds per stage). The floors are measured here, one after the other, on the same
files (so run it right after the build, on the same machine):

- ingest:         every input file read with Polars and nothing else (CSV as text, Parquet,
                  JSON lines): a bare scan;
- person state:   the state's rows of every table read and written again as one Parquet file
                  a table (zstd), plus one group-by of events per identifier (the last time):
                  a bare rewrite and a bare group-by;
- stage 1 bucket: the state's rows joined with the identity map (one_id per identifier);
- pass 1 / 2:     one group-by per person of orders (count, sum, max) / of events and
                  messages (count, max);
- clusters:       one k-means fit (the week's k, 3 starts) on the tag table's cluster features;
- write tags:     the tag table written with `write_parquet`.

With --peer (a `benchmarks/run.py` results file, or the output of `benchmarks/peer.py --json`),
the DuckDB peer's step seconds of the same size are printed beside them. Nothing is asserted:
figures for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl

from segments.contract import TABLES
from segments.io import file_format, table_files

# engine stage -> the peer's steps doing the nearest work (their seconds are summed)
PEER_STEPS = {
    "ingest": ("ingest", "phones"),
    "identity": ("identity",),
    "pass 1: rfm features": ("rfm",),
    "pass 2: per-user stages (local)": ("affinity", "chat"),
    "write tags": ("write",),
}


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def latest_manifest(workspace: Path) -> dict:
    runs = sorted((workspace / "runs").glob("*/manifest.json"))
    if not runs:
        raise SystemExit(f"{workspace}: no run manifest; run `segments run` into it first.")
    return json.loads(runs[-1].read_text())


def read_input(path: Path) -> pl.DataFrame:
    fmt = file_format(path)
    if fmt == "parquet":
        return pl.read_parquet(path)
    if fmt == "jsonl":
        return pl.read_ndjson(path, infer_schema_length=None)
    return pl.read_csv(path, infer_schema=False)


def state_files(workspace: Path, table: str) -> list[Path]:
    state = workspace / "state"
    manifest = json.loads((state / (state / "CURRENT").read_text().strip()).read_text())
    weeks = manifest["tables"][table]["weeks"]
    return [state / "files" / f for w in sorted(weeks) for f in weeks[w]["files"]]


def floors(input_dir: Path, workspace: Path, k: int) -> dict[str, float]:
    out: dict[str, float] = {}
    files = [p for t in TABLES for p in table_files(input_dir, t)]
    out["ingest"] = sum(timed(lambda p=p: read_input(p)) for p in files)

    rows = {t: state_files(workspace, t) for t in ("orders", "events", "messages")}
    with tempfile.TemporaryDirectory(prefix="floors-") as tmp:

        def rewrite() -> None:
            for t, paths in rows.items():
                pl.read_parquet(paths).write_parquet(Path(tmp) / f"{t}.parquet", compression="zstd")

        out["person state"] = timed(rewrite) + timed(
            lambda: (
                pl.scan_parquet(rows["events"])
                .group_by("user_id_type", "user_id")
                .agg(pl.col("ts").max())
                .collect()
            )
        )
    id_map = pl.read_parquet(workspace / "identity" / "one_id_map.parquet").select(
        "one_id", "id_type", "id"
    )

    def joined(table: str, type_col: str, id_col: str) -> pl.LazyFrame:
        ids = id_map.lazy().rename({"id_type": type_col, "id": id_col})
        return pl.scan_parquet(rows[table]).join(ids, on=[type_col, id_col], how="inner")

    keys = {
        "orders": ("buyer_id_type", "buyer_id"),
        "events": ("user_id_type", "user_id"),
        "messages": ("sender_id_type", "sender_id"),
    }
    out["stage 1 bucket"] = timed(
        lambda: pl.collect_all([joined(t, *keys[t]) for t in ("orders", "events", "messages")])
    )
    out["pass 1: rfm features"] = timed(
        lambda: (
            joined("orders", *keys["orders"])
            .group_by("one_id")
            .agg(pl.len(), pl.col("amount").sum(), pl.col("paid_at").max())
            .collect()
        )
    )
    out["pass 2: per-user stages (local)"] = timed(
        lambda: pl.collect_all(
            [
                joined(t, *keys[t]).group_by("one_id").agg(pl.len(), pl.col("ts").max())
                for t in ("events", "messages")
            ]
        )
    )

    tags = pl.read_parquet(next((workspace / "weeks").glob("*/tags.parquet")))
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    from segments.clustering.stable import derived_features, resolve_features
    from segments.settings.clustering import ClusteringConfig

    cfg = ClusteringConfig()
    log, num, passthrough, _ = resolve_features(tags.schema, cfg)
    least = derived_features(tags.schema, cfg)  # a derived feature: the least of its columns

    def col(c: str) -> pl.Expr:
        return pl.min_horizontal(*(pl.col(s).cast(pl.Float64) for s in least.get(c, (c,))))

    X = tags.select(
        *(col(c).fill_null(0).abs().log1p().alias(c) for c in log),
        *(col(c).fill_null(0).alias(c) for c in (*num, *passthrough)),
    ).to_numpy()
    X = ((X - X.mean(axis=0)) / np.where(X.std(axis=0) > 0, X.std(axis=0), 1)).astype(np.float32)
    with threadpool_limits(1):
        out["clusters"] = timed(lambda: KMeans(k, n_init=3, random_state=0).fit(X))
    with tempfile.TemporaryDirectory(prefix="floors-") as tmp:
        out["write tags"] = timed(lambda: tags.write_parquet(Path(tmp) / "tags.parquet"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument(
        "--peer", type=Path, help="a benchmarks/run.py results file, or benchmarks/peer.py --json"
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    manifest = latest_manifest(args.workspace)
    engine = {s["name"]: s["seconds"] for s in manifest["stages"]}
    k = int(json.loads(next(args.workspace.glob("weeks/*/state/clustering.json")).read_text())["k"])
    floor = floors(args.input, args.workspace, k)
    peer_json = json.loads(args.peer.read_text()) if args.peer else {}
    peer = peer_json.get("peer", peer_json).get("seconds", {})  # a results file or peer.py --json
    rows = []
    for stage, seconds in engine.items():
        steps = PEER_STEPS.get(stage, ())
        peer_s = sum(peer[s] for s in steps) if peer and steps else None
        rows.append({"stage": stage, "engine": seconds, "floor": floor.get(stage), "peer": peer_s})
    if args.json:
        print(json.dumps({"run": manifest["run_id"], "stages": rows}, indent=1))
        return
    print(f"run {manifest['run_id']}, total {manifest['seconds']:.1f} s")
    print("| stage | engine s | floor s | peer s (its steps) |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        floor_s = f"{r['floor']:.2f}" if r["floor"] is not None else "-"
        peer_s = (
            f"{r['peer']:.2f} ({' + '.join(PEER_STEPS[r['stage']])})"
            if r["peer"] is not None
            else "-"
        )
        print(f"| {r['stage']} | {r['engine']:.2f} | {floor_s} | {peer_s} |")


if __name__ == "__main__":
    main()
