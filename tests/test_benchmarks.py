"""The CI-sized benchmark: runs `make bench` on a small population and records the ratios, so a
regression shows in benchmarks/results; it never fails on an absolute time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def _bench(tmp_path: Path, docs: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """benchmarks/run.py with `args`, its data, results and docs page under tmp_path."""
    return subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "run.py"),
            *args,
            *("--docs", str(docs), "--data", str(tmp_path / "data")),
            *("--results", str(tmp_path / "results")),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.slow
def test_ci_sized_benchmark_records_its_ratios(tmp_path: Path) -> None:
    docs = tmp_path / "benchmarks.md"
    page = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    docs.write_text(page, encoding="utf-8")
    done = _bench(tmp_path, docs, "--users", "1500")
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "users-1500.json").read_text())
    ratios = results["side_by_side"]["ratios"]
    assert all(v > 0 for v in ratios.values())
    stages = {s["name"] for s in results["run"]["manifest"]["stages"]}
    assert {"ingest", "identity", "tags"} <= stages
    # the same week again reads every input file from the ingest cache
    cold, warm = results["run"]["manifest"], results["rerun_cached"]["manifest"]
    assert cold["input_files_from_cache"] == 0
    assert warm["input_files_from_cache"] == len(warm["inputs"]) > 0
    assert warm["tables"] == cold["tables"]
    assert results["rerun_cached"]["same_outputs"] is True  # byte-identical tags and map
    # the same week again folds nothing into the person state; the next week only W47's files
    assert sum(warm["state"]["rows_added"].values()) == 0
    fresh = results["fresh"]
    added = fresh["next_week"]["state"]["pieces_added"]  # Mon-Sat, Sunday to 18:00, the evening
    assert added["events"] == added["messages"] == 3 and added["orders"] >= 3
    assert fresh["refresh_one_day"]["as_of"] == "2026-11-22"
    assert (
        0
        < sum(fresh["refresh_one_day"]["state"]["rows_added"].values())
        < sum(fresh["refresh_six_days"]["state"]["rows_added"].values())
    )
    # a new day recomputes everyone; the evening of the same day only the people it touched
    one, same = fresh["refresh_one_day"], fresh["refresh_same_day"]
    assert same["as_of"] == "2026-11-22" and one["people_recomputed"] == one["people"]
    assert 0 < same["people_recomputed"] < same["people"]
    # its own section of the page, before the component table; the other sizes' untouched
    new = docs.read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN make bench users-1500 -->", "<!-- END make bench users-1500 -->"
    assert new.count(begin) == 1 and new.count(end) == 1
    assert new.index(end) < new.index("## Components, measured separately")
    assert new.replace(new[new.index(begin) : new.index(end) + len(end) + 2], "") == page
    print(json.dumps(ratios, indent=2))  # the figures land in the CI log


@pytest.mark.slow
def test_a_cold_only_people_shaped_benchmark_says_what_it_left_out(tmp_path: Path) -> None:
    done = _bench(
        tmp_path,
        tmp_path / "benchmarks.md",
        *("--users", "600", "--shape", "people", "--cold-only"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((tmp_path / "results" / "people-600.json").read_text())
    assert results["shape"] == "people" and results["users"] == 600
    assert "rerun_cached" not in results and "side_by_side" not in results
    tables = results["run"]["manifest"]["tables"]
    # the people shape draws about 10 events per person (the demo's own mix: about 22)
    assert 4 * 600 < tables["events"]["read"] < 16 * 600
    page = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "`benchmarks/run.py --users 600 --shape people --cold-only`" in page
    assert "A cold build only" in page and "Side by side" not in page
    # the child's progress went to a log beside the workspace
    assert (tmp_path / "data" / "workspace-people-600.log").stat().st_size > 0
