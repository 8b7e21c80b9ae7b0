"""Fresh data, measured: the next week and a one-day refresh beside a cold build.

    python benchmarks/fresh.py --input benchmarks/data/demo-100000 --work /tmp/fresh

The input (a demo folder ending 2026-11-22) is cut into five deliveries: d0 up to 2026-W46,
d1 Monday to Saturday of W47, d2 Sunday 2026-11-22 until 18:00, d3 until 23:00, d4 the
events of the last hour. Then,
each command a child process:

- cold: `segments run --as-of 2026-W47` over all files, in an empty workspace;
- next week: a workspace built for W46 from d0 gets d1 and d2 and runs W47;
- one-day refresh: a workspace built for W46 from d0 gets d1 and refreshes (everyone: the
  first refresh after a weekly build), then gets d2 (a day of data: the as-of moves to
  Sunday, so the people with a row on a window edge or in d2 are recomputed and the others
  aged: docs/state.md, "A new day") and refreshes again;
- same-day refresh: that workspace then gets d3 (Sunday 18:00 to 23:00) and refreshes: the
  as-of stays, so only the people it touches are recomputed;
- events-only refresh: then d4, the mini-program events of Sunday's last hour alone (the
  stream that lands every few minutes; that hour's other rows are left out of every step),
  which neither orders nor chat touch: the community graph and phone counts are reused.

Each figure is the child's wall time (imports included) with its per-stage seconds and peak
RSS from the run manifest or the refresh summary. Nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from segments.demo.deliveries import gather, split  # noqa: E402

CUTS = [
    datetime(2026, 11, 16),
    datetime(2026, 11, 22),
    datetime(2026, 11, 22, 18),
    datetime(2026, 11, 22, 23),
]
WEEK, BASE = "2026-W47", "2026-W46"


def _segments(args: list[str], log: Path) -> tuple[float, dict | list]:
    exe = Path(sys.executable).with_name("segments")
    env = dict(os.environ)
    t0 = time.perf_counter()
    with log.open("a") as err:
        done = subprocess.run(
            [str(exe), *args, "--json"], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        last = (log.read_text().strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"segments {args[0]} failed (exit {done.returncode}, log {log}): {last}")
    out = done.stdout.strip().splitlines()
    return round(wall, 2), json.loads(out[-1] if args[0] == "refresh" else done.stdout)


def _week(input_dir: Path, ws: Path, week: str, log: Path) -> dict:
    wall, summary = _segments(
        ["run", "--input", str(input_dir), "--out", str(ws), "--as-of", week], log
    )
    manifest = json.loads(Path(summary[0]["manifest"]).read_text())
    return {
        "wall_seconds": wall,
        "peak_rss_mib": manifest["peak_rss_mib"],
        "stages": manifest["stages"],
        "state": manifest.get("state"),
        "identity_pieces": manifest.get("identity_pieces"),
    }


def _refresh(input_dir: Path, ws: Path, log: Path) -> dict:
    wall, summary = _segments(["refresh", "--input", str(input_dir), "--workspace", str(ws)], log)
    assert isinstance(summary, dict)
    peak = max((s["peak_rss_mib"] for s in summary["stages"]), default=None)
    return {
        "wall_seconds": wall,
        "peak_rss_mib": peak,
        "stages": summary["stages"],
        "state": summary["state"],
        "as_of": summary["as_of"],
        "newest_row": summary["newest_row"],
        "people": summary["people"],
        "people_recomputed": summary.get("people_recomputed"),
        "aged_from": summary.get("aged_from"),
        "people_aged_with_state": summary.get("people_aged_with_state"),
    }


def measure(input_dir: Path, work: Path) -> dict:
    """The three figures (see the module docstring), in one run, on one machine."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = work / "segments.log"
    d0, d1, d2, d3, d4 = split(input_dir, work / "deliveries", CUTS)
    for table in d4.iterdir():  # the last hour's events only
        if table.is_dir() and table.name != "events":
            shutil.rmtree(table)
        elif table.is_file():
            table.unlink()
    out: dict = {}
    out["cold"] = _week(
        gather(work / "in-cold", d0, d1, d2, d3, d4, link=True), work / "ws-cold", WEEK, log
    )
    base_in, base = gather(work / "in-base", d0, link=True), work / "ws-base"
    out["base_w46"] = _week(base_in, base, BASE, log)
    for name in ("next", "live"):
        shutil.copytree(base, work / f"ws-{name}")
        gather(work / f"in-{name}", d0, link=True)
    out["next_week"] = _week(
        gather(work / "in-next", d1, d2, d3, d4, link=True), work / "ws-next", WEEK, log
    )
    out["refresh_six_days"] = _refresh(
        gather(work / "in-live", d1, link=True), work / "ws-live", log
    )
    out["refresh_one_day"] = _refresh(
        gather(work / "in-live", d2, link=True), work / "ws-live", log
    )
    out["refresh_same_day"] = _refresh(
        gather(work / "in-live", d3, link=True), work / "ws-live", log
    )
    out["refresh_events_only"] = _refresh(
        gather(work / "in-live", d4, link=True), work / "ws-live", log
    )
    cold = out["cold"]["wall_seconds"]
    out["ratios"] = {
        "next week / cold": out["next_week"]["wall_seconds"] / cold,
        "one-day refresh / cold": out["refresh_one_day"]["wall_seconds"] / cold,
        "same-day refresh / cold": out["refresh_same_day"]["wall_seconds"] / cold,
        "events-only refresh / cold": out["refresh_events_only"]["wall_seconds"] / cold,
    }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--input", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--out", type=Path, help="write the figures to this JSON file")
    args = ap.parse_args()
    figures = measure(args.input, args.work)
    text = json.dumps(figures, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
