"""The CI-sized benchmark: runs `make bench` on a small population and records the ratios, so a
regression shows in benchmarks/results; it never fails on an absolute time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_ci_sized_benchmark_records_its_ratios(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            "--users",
            "1500",
            "--no-docs",
            "--data",
            str(tmp_path / "data"),
            "--results",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "users-1500.json").read_text())
    ratios = results["side_by_side"]["ratios"]
    assert all(v > 0 for v in ratios.values())
    stages = {s["name"] for s in results["run"]["manifest"]["stages"]}
    assert {"ingest", "identity", "tags"} <= stages
    print(json.dumps(ratios, indent=2))  # the figures land in the CI log
