"""`segments serve` under a bounded load: person lookups and previews, p50/p99 and throughput.

    python benchmarks/bench_serve.py --workspace benchmarks/data/serve100k/ws --seconds 20

Starts a real server (`segments serve`, a child process with a fresh token) on a free loopback
port over a workspace that has a live table, then runs three phases, each for `--seconds`
with `--clients` client threads on their own keep-alive connections:

- lookup: `GET /v1/people/{id_type}/{id}` for identifiers drawn from the live identity map
  (every id type, one_id included), plus phones typed as a client would (`+86 138 ...`) when
  `--phones` gives a file of raw numbers;
- preview_named: `GET /v1/packs/{name}/preview` over every named pack (memoised per version
  after the first ask: the figure is the steady state);
- preview_where: `POST /v1/preview` with ad-hoc filters whose thresholds change every request
  (never cached: the filter compiler, the selection and the breakdowns every time).

Figures: requests, errors, throughput (requests per second, all clients), p50/p90/p99/max
latency in ms as the client saw it, and the server's resident memory and load time. The
clients share the machine with the server (2 cores here), so latencies include the clients'
own CPU time: the figures are an upper bound. Nothing here asserts a time; results go to
`benchmarks/results/serve-<people>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402
import polars as pl  # noqa: E402

from segments.layout import Layout  # noqa: E402

WHERES = (
    "frequency_52w >= {k} AND NOT is_coupon_hunter",
    "recency_days <= {d} AND monetary_52w > {m}",
    "p_alive >= 0.{k} AND predicted_value_52w > {m}",
    "lifecycle_stage IN ('active', 'at_risk') AND events_13w >= {k}",
    "ARRAY_CONTAINS(interests, 'camping') AND recency_days <= {d}",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(workspace: Path, token: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {
        **os.environ,
        "SEGMENTS_API_TOKEN": token,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    cmd = [sys.executable, "-m", "segments.cli", "serve", "--workspace", str(workspace)]
    cmd += ["--port", str(port), "--log-level", "warning"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        try:
            r = httpx.get(base + "/v1/health", headers={"Authorization": f"Bearer {token}"})
            if r.status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start:\n" + log.read_text()[-2000:])
        time.sleep(0.2)


def percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    i = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return round(sorted_ms[i], 2)


def run_phase(
    pid: int,
    base: str,
    token: str,
    clients: int,
    seconds: float,
    make_request: Callable[[random.Random], tuple[str, str, Any]],
) -> dict[str, Any]:
    """`clients` threads ask `make_request(rng)` -> (method, path, json) for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors = [0] * clients
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        rng = random.Random(1000 + i)
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
            while time.monotonic() < stop:
                method, path, body = make_request(rng)
                t0 = time.perf_counter()
                r = c.request(method, path, json=body)
                _ = r.content
                latencies[i].append((time.perf_counter() - t0) * 1000)
                if r.status_code >= 500 or r.status_code in (401, 413, 422):
                    errors[i] += 1
                with lock:
                    statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    started, cpu = time.perf_counter(), _cpu_seconds(pid)
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    cpu = _cpu_seconds(pid) - cpu
    ms = sorted(x for part in latencies for x in part)
    return {
        "clients": clients,
        "seconds": round(wall, 2),
        "requests": len(ms),
        "errors": sum(errors),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "throughput_rps": round(len(ms) / wall, 1),
        "p50_ms": percentile(ms, 0.50),
        "p90_ms": percentile(ms, 0.90),
        "p99_ms": percentile(ms, 0.99),
        "max_ms": round(ms[-1], 2) if ms else None,
        # the server's own CPU per request: what the machine's other load does not change
        "server_cpu_ms_per_request": round(cpu * 1000 / len(ms), 3) if ms else None,
    }


def phone_forms(raw: str) -> list[str]:
    return [raw, f"+86 {raw[:3]} {raw[3:7]} {raw[7:]}", f"{raw[:3]}-{raw[3:7]}-{raw[7:]}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workspace", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=20.0, help="per phase")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--preview-clients", type=int, default=2)
    ap.add_argument("--sample", type=int, default=20_000, help="identifiers drawn for lookups")
    ap.add_argument("--phones", type=Path, help="a CSV with a `phone` column of raw numbers")
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--label", help="results file name (default serve-<people>)")
    args = ap.parse_args()

    layout = Layout(args.workspace)
    version = layout.live_version()
    if version is None:
        raise SystemExit(f"{args.workspace}: no live table; run `segments refresh` first.")
    id_map = pl.read_parquet(
        layout.current("one_id_map.parquet"), columns=["one_id", "id_type", "id"]
    )
    sample = id_map.sample(min(args.sample, id_map.height), seed=7)
    keys = [("one_id", o) for o in sample.get_column("one_id").head(args.sample // 5)]
    keys += list(sample.select("id_type", "id").iter_rows())
    phones: list[str] = []
    if args.phones:
        raw = pl.read_csv(args.phones, columns=["phone"], infer_schema=False)["phone"]
        phones = raw.drop_nulls().unique().sort().head(2_000).to_list()

    token = secrets.token_hex(24)
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_serve_{os.getpid()}.log"
    t0 = time.perf_counter()
    proc, base = start_server(args.workspace, token, log)
    startup = round(time.perf_counter() - t0, 2)
    auth = {"Authorization": f"Bearer {token}"}
    try:
        health = httpx.get(base + "/v1/health", headers=auth).json()
        packs = [
            p["name"]
            for p in httpx.get(base + "/v1/packs", headers=auth).json()["packs"]
            if "count" in p
        ]
        rss_loaded = _rss_mib(proc.pid)

        def lookup(rng: random.Random) -> tuple[str, str, Any]:
            if phones and rng.random() < 0.2:
                form = rng.choice(phone_forms(rng.choice(phones)))
                return "GET", "/v1/people/phone/" + httpx.URL(form).raw_path.decode(), None
            id_type, id_ = rng.choice(keys)
            return "GET", f"/v1/people/{id_type}/{httpx.URL(id_).raw_path.decode()}", None

        def named(rng: random.Random) -> tuple[str, str, Any]:
            return "GET", f"/v1/packs/{rng.choice(packs)}/preview", None

        def where(rng: random.Random) -> tuple[str, str, Any]:
            text = rng.choice(WHERES).format(
                k=rng.randint(1, 9), d=rng.randint(7, 365), m=rng.randint(50, 3000)
            )
            return "POST", "/v1/preview", {"where": text}

        load_before = [round(x, 2) for x in os.getloadavg()]
        for p in packs:  # the first ask of each named pack computes it; not timed
            httpx.get(f"{base}/v1/packs/{p}/preview", headers=auth, timeout=120)
        phases = {
            "lookup": run_phase(proc.pid, base, token, args.clients, args.seconds, lookup),
            "preview_named": run_phase(
                proc.pid, base, token, args.preview_clients, args.seconds, named
            ),
            "preview_where": run_phase(
                proc.pid, base, token, args.preview_clients, args.seconds, where
            ),
        }
        rss_after = _rss_mib(proc.pid)
        load_after = [round(x, 2) for x in os.getloadavg()]
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    results = {
        "people": health["people"],
        "identifiers": id_map.height,
        "version": version,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "polars": pl.__version__,
            "platform": platform.platform(),
            # 1/5/15-minute load averages: other work on the machine inflates the tails
            "load_average_before": load_before,
            "load_average_after": load_after,
        },
        "server": {
            "startup_seconds": startup,
            "snapshot_load_seconds": health["load_seconds"],
            "rss_mib_loaded": rss_loaded,
            "rss_mib_after": rss_after,
            "packs": len(packs),
        },
        "phases": phases,
    }
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{args.label or 'serve-' + str(health['people'])}.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(
        f"{health['people']:,} people, {id_map.height:,} identifiers; server load "
        f"{health['load_seconds']}s, RSS {rss_loaded} MiB"
    )
    print(
        f"{'phase':<15}{'clients':>8}{'req':>8}{'err':>5}{'req/s':>9}{'p50':>9}{'p99':>9}{'max':>9}"
    )
    for name, p in phases.items():
        print(
            f"{name:<15}{p['clients']:>8}{p['requests']:>8}{p['errors']:>5}"
            f"{p['throughput_rps']:>9}{p['p50_ms']:>9}{p['p99_ms']:>9}{p['max_ms']:>9}"
            f"{p['server_cpu_ms_per_request']:>9}"
        )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
