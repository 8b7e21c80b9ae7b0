"""Refreshes under random interleavings: deliveries (every table, or events alone), late
refunds in old files, weekly builds of the week in force, refreshes killed before they
publish, plain refreshes. After every refresh the live table must equal a refresh that
recomputes everyone from the same workspace (the oracle of the same-day tests), whatever
ran before it. Seeds are fixed; each sequence is printed on failure."""

from __future__ import annotations

import contextlib
import random
import shutil
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from segments import live, pipeline
from segments.config import load_config
from segments.demo.deliveries import gather, split
from segments.layout import Layout

pytestmark = pytest.mark.slow

CUTS = [
    datetime(2026, 11, 9),
    datetime(2026, 11, 16),
    datetime(2026, 11, 21, 12),
    datetime(2026, 11, 22),
    datetime(2026, 11, 22, 8),
    datetime(2026, 11, 22, 12),
    datetime(2026, 11, 22, 16),
]
OPS = ("deliver", "deliver", "events", "refund", "weekly", "kill", "refresh")


class _Killed(BaseException):
    """A kill: nothing after it runs."""


@pytest.fixture(scope="module")
def slices(demo_input: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return split(demo_input, tmp_path_factory.mktemp("slices"), CUTS)


# Seeds chosen by the sequences they draw (not by their outcome): 2 kills a refresh that
# folded a delivery of events alone; 8 builds the week over an unrefreshed delivery; 41
# refunds, delivers events alone and builds the week; 72 kills, then builds the week.
@pytest.mark.parametrize("seed", [2, 8, 41, 72])
def test_any_interleaving_of_refreshes_equals_a_refresh_of_everyone(
    seed: int, slices: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(seed)
    cfg = load_config()
    inputs, ws = tmp_path / "in", tmp_path / "ws"
    pipeline.run(cfg, gather(inputs, slices[0], slices[1]), ws, as_of="2026-W46")
    nxt, done = 2, []
    for step in range(6):
        op = rng.choice(OPS)
        if op in ("deliver", "events") and nxt < len(slices):
            if op == "events":  # that slice's other tables never come
                shutil.copytree(slices[nxt] / "events", inputs / "events", dirs_exist_ok=True)
            else:
                gather(inputs, slices[nxt])
            nxt += 1
        elif op == "refund":  # a late refund for an old order, in a file of its own
            old = pl.read_csv(inputs / "orders" / "orders-d0.csv", infer_schema=False)
            old.filter(pl.col("status") == "paid").sample(
                1, seed=rng.randrange(10**6)
            ).with_columns(pl.lit("refunded").alias("status")).write_csv(
                inputs / "orders" / f"orders-refund-{step}.csv"
            )
        elif op == "weekly":
            pipeline.run(cfg, inputs, ws, as_of="2026-W46")
        elif op == "kill":
            with monkeypatch.context() as m:
                m.setattr(live, "publish", lambda *a, **k: (_ for _ in ()).throw(_Killed()))
                with contextlib.suppress(_Killed):
                    pipeline.refresh(cfg, inputs, ws)
        done.append(op)
        if op == "refresh" or rng.random() < 0.6:
            everyone = tmp_path / f"everyone-{step}"
            shutil.copytree(ws, everyone)
            got = pipeline.refresh(cfg, inputs, ws)
            pipeline.refresh(cfg, inputs, everyone, touched_only=False)
            done.append(f"refresh ({got.recomputed} recomputed)")
            try:
                assert_frame_equal(
                    pl.read_parquet(Layout(ws).current("tags.parquet")),
                    pl.read_parquet(Layout(everyone).current("tags.parquet")),
                    check_exact=True,
                )
            except AssertionError as e:
                raise AssertionError(f"after {done}: {e}") from None
            shutil.rmtree(everyone)
