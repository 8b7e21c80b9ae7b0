"""Stage progress: a live display in a terminal, plain log lines otherwise; timings for the manifest."""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import click


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class StageRecord:
    name: str
    seconds: float = 0.0
    rows: int | None = None
    peak_rss_mib: float = 0.0

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "peak_rss_mib": round(self.peak_rss_mib, 1),
        }


@dataclass
class Progress:
    """Reports stages as they run. `quiet` prints nothing (library use)."""

    quiet: bool = False
    records: list[StageRecord] = field(default_factory=list)
    _status: object = None

    @property
    def live(self) -> bool:
        return not self.quiet and sys.stderr.isatty()

    def note(self, text: str) -> None:
        if not self.quiet:
            click.echo(f"  {text}", err=True)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(name)
        t0 = time.perf_counter()
        status = None
        if self.live:
            from rich.console import Console

            status = Console(stderr=True).status(f"[bold]{name}[/bold] …")
            status.start()
        elif not self.quiet:
            click.echo(f"[segments] {name} ...", err=True)
        try:
            yield record
        finally:
            if status is not None:
                status.stop()
            record.seconds = time.perf_counter() - t0
            record.peak_rss_mib = peak_rss_mib()
            self.records.append(record)
            if not self.quiet:
                rows = f", {record.rows:,} rows" if record.rows is not None else ""
                click.echo(f"[segments] {name} done in {record.seconds:.2f}s{rows}", err=True)
