"""Benchmark audience packs: preview on a 2M-person tag table, export of a 500k pack everywhere.

    python benchmarks/bench_audiences.py --people 2000000 --pack-size 500000

Synthesises a workspace (`weeks/<WEEK>/tags.parquet` with the tag columns the built-in packs
read, `identity/one_id_map.parquet` with phones, unionids, Taobao ids and device ids, and
`identity/phone_hashes.parquet`), then times:
  - `preview_pack(workspace, "high_value")`: selection (filter, suppression, counts) and
    breakdowns by cluster, primary interest, lifecycle stage and source (target < 1 s);
  - `select_pack` alone for high_value, and for the 500k pack;
  - `export_pack` of a pack of `--pack-size` people to every platform (target < 10 s total),
    with the time the exporter alone takes on the same members frame, and `export_pack_all`
    (one selection and members frame for every platform).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click
import numpy as np
import polars as pl
from click.testing import CliRunner

from segments.audiences import (
    PackDef,
    export_pack,
    export_pack_all,
    load_audiences,
    pack_members,
    preview_pack,
    select_pack,
)
from segments.cli.audience import audience
from segments.contract import phone_hash_columns
from segments.exporters import EXPORTERS, get_exporter

T = TypeVar("T")

WEEK = "2026-W47"
INTERESTS = (
    "camping",
    "hiking",
    "trail_running",
    "cycling",
    "fishing",
    "skiing",
    "water_sports",
    "climbing",
    "outdoor_cooking",
    "city_outdoor",
    "family_outdoor",
)
LIFECYCLE = ("new", "active", "at_risk", "lapsed", "churned", "prospect")
SOURCES = (
    ["orders:tmall"],
    ["orders:jd"],
    ["orders:tmall", "events"],
    ["messages"],
    ["events"],
    ["orders:miniprogram", "messages"],
)


def synthesise(root: Path, n: int, seed: int = 5) -> None:
    rng = np.random.default_rng(seed)
    one_id = pl.int_range(0, n, eager=True).cast(pl.String).str.zfill(9)
    one_id = ("u" + one_id).alias("one_id")
    freq = rng.poisson(1.6, n)
    monetary = np.round(freq * rng.gamma(3.0, 300.0, n), 2)
    primary = rng.integers(-1, len(INTERESTS), n)
    cols: dict[str, object] = {
        "one_id": one_id,
        "is_high_value": (freq >= 3) & (monetary / np.maximum(freq, 1) >= 800),
        "is_coupon_hunter": rng.random(n) < 0.12,
        "is_opted_out": rng.random(n) < 0.05,
        "primary_interest": pl.Series(primary).replace_strict(
            {-1: None} | dict(enumerate(INTERESTS)), return_dtype=pl.String
        ),
        "cluster": rng.integers(0, 8, n),
        "recency_days": pl.Series(np.where(freq > 0, rng.integers(0, 365, n), -1)).replace(
            -1, None
        ),
        "frequency_52w": freq,
        "frequency_lifetime": freq + rng.integers(0, 3, n),
        "monetary_52w": monetary,
        "predicted_value_52w": np.round(rng.gamma(1.5, 900.0, n), 2),
        "p_alive": np.round(rng.random(n), 4),
        "expected_purchases_52w": np.round(rng.gamma(1.0, 1.0, n), 3),
        "lifecycle_stage": pl.Series(rng.integers(0, 6, n)).replace_strict(
            dict(enumerate(LIFECYCLE)), return_dtype=pl.String
        ),
        "coupon_hunter_score": np.round(rng.random(n), 4),
        "koc_score": np.round(rng.random(n), 4),
    }
    for name in INTERESTS:
        a = np.round(rng.random(n) ** 3, 4)
        cols[f"interest_{name}"] = a
        cols[f"interest_{name}_expanded"] = np.minimum(1.0, a + 0.05)
    tags = pl.DataFrame(cols).with_columns(
        pl.when(pl.col("primary_interest").is_null())
        .then(pl.lit([], dtype=pl.List(pl.String)))
        .otherwise(pl.concat_list("primary_interest"))
        .alias("interests"),
        pl.format("cluster {}", pl.col("cluster")).alias("cluster_name"),
    )
    week_dir = root / "weeks" / WEEK
    week_dir.mkdir(parents=True)
    tags.write_parquet(week_dir / "tags.parquet")

    # Identity: every person a phone; some unionids, Taobao ids, IDFAs and OAIDs.
    idx = pl.int_range(0, n, eager=True)
    cn11 = ("13" + idx.cast(pl.String).str.zfill(9)).alias("cn11")
    phones = pl.DataFrame({"one_id": one_id, "cn11": cn11}).with_columns(
        phone_hash_columns(pl.col("cn11"))
    )
    src = pl.Series("sources", list(SOURCES), dtype=pl.List(pl.String))

    def ids(mask: np.ndarray, id_type: str, value: pl.Expr) -> pl.DataFrame:
        df = pl.DataFrame({"one_id": one_id, "i": idx}).filter(pl.Series(mask))
        return df.select("one_id", pl.lit(id_type).alias("id_type"), value.alias("id"))

    parts = [
        phones.select(
            "one_id", pl.lit("phone_sha256").alias("id_type"), pl.col("phone_sha256").alias("id")
        ),
        ids(rng.random(n) < 0.3, "unionid", "oU" + pl.col("i").cast(pl.String).str.zfill(20)),
        ids(rng.random(n) < 0.25, "taobao_ouid", "tb" + pl.col("i").cast(pl.String)),
        ids(
            rng.random(n) < 0.1,
            "idfa",
            pl.format(
                "{}-0000-4000-8000-000000000000",
                pl.col("i").cast(pl.String).str.zfill(8),
            ),
        ),
        ids(rng.random(n) < 0.1, "oaid", "oaid-" + pl.col("i").cast(pl.String).str.zfill(10)),
    ]
    one_id_map = pl.concat(parts)
    one_id_map = one_id_map.with_columns(
        src.gather(rng.integers(0, len(SOURCES), one_id_map.height)).alias("sources")
    )
    (root / "identity").mkdir()
    one_id_map.sort("one_id").write_parquet(root / "identity" / "one_id_map.parquet")
    phones.drop("one_id", "cn11").write_parquet(root / "identity" / "phone_hashes.parquet")


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """(result, wall seconds); the CPU seconds of the last call are kept in CPU[0]."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    CPU[0] = time.process_time() - c0
    return out, time.perf_counter() - t0


CPU = [0.0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--people", type=int, default=2_000_000)
    ap.add_argument("--pack-size", type=int, default=500_000)
    ap.add_argument("--workspace", type=Path, help="keep the synthetic workspace here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = args.workspace or Path(tmp) / "ws"
        if not (root / "weeks" / WEEK / "tags.parquet").is_file():
            _, t = timed(lambda: synthesise(root, args.people))
            print(f"synthesised a {args.people:,}-person workspace in {t:.1f}s")
        tags = pl.scan_parquet(root / "weeks" / WEEK / "tags.parquet")
        builtin = load_audiences()

        preview_pack(root, "high_value")  # warm the file cache
        runs = [timed(lambda: preview_pack(root, "high_value"))[1] for _ in range(3)]
        out = preview_pack(root, "high_value")
        print(
            f"preview high_value: {out['count']:,} people (matched {out['counts']['matched']:,}); "
            f"best {min(runs):.3f}s, median {sorted(runs)[1]:.3f}s, cpu {CPU[0]:.3f}s "
            "(target < 1 s)"
        )
        group = click.Group("segments")
        group.add_command(audience)
        args_cli = ["audience", "preview", "high_value", "--workspace", str(root), "--json"]
        res, t = timed(lambda: CliRunner().invoke(group, args_cli))
        assert res.exit_code == 0, res.output
        print(f"`segments audience preview high_value --json` (in process): {t:.3f}s")
        _, t = timed(lambda: select_pack(tags, builtin["high_value"], builtin))
        print(f"select_pack high_value: {t:.3f}s, cpu {CPU[0]:.3f}s")

        pack = PackDef(
            name="big",
            description="benchmark pack",
            where="frequency_52w >= 0",
            order_by="predicted_value_52w",
            limit=args.pack_size,
        )
        packs = {"big": pack}
        sel, t = timed(lambda: select_pack(tags, pack, packs))
        print(
            f"select_pack big: {sel.counts['final']:,} people (+{sel.counts['holdout']:,} held out) in {t:.3f}s"
        )

        one_id_map = pl.scan_parquet(root / "identity" / "one_id_map.parquet")
        phone_hashes = pl.scan_parquet(root / "identity" / "phone_hashes.parquet")
        members, t = timed(lambda: pack_members(sel, one_id_map, phone_hashes))
        print(f"pack_members (every phone hash): {members.height:,} rows in {t:.3f}s")

        total = total_exporter = cpu_total = 0.0
        for platform in EXPORTERS:
            m, t = timed(
                lambda p=platform: export_pack(
                    root, "big", p, Path(tmp) / "out" / p, audiences=packs
                )
            )
            cpu = CPU[0]
            _, t_exp = timed(
                lambda p=platform: get_exporter(p).export(
                    members, "big", WEEK, Path(tmp) / "exp" / p
                )
            )
            total += t
            total_exporter += t_exp
            cpu_total += cpu
            size = sum(f.bytes for f in m.files)
            print(
                f"  export {platform:<12} {t:6.2f}s (cpu {cpu:5.2f}s; exporter alone {t_exp:5.2f}s)  "
                f"{m.people_exportable:,} people, {len(m.files)} files, {size / 1e6:.1f} MB"
            )
        print(
            f"export_pack to each of the {len(EXPORTERS)} platforms: {total:.2f}s, cpu "
            f"{cpu_total:.2f}s (target < 10 s); the exporters alone: {total_exporter:.2f}s"
        )
        _, t = timed(
            lambda: export_pack_all(
                root, "big", list(EXPORTERS), Path(tmp) / "all", audiences=packs
            )
        )
        print(f"export_pack_all (one selection, every platform): {t:.2f}s, cpu {CPU[0]:.2f}s")


if __name__ == "__main__":
    main()
