"""`segments report`: write the offline HTML report of a workspace's week (parse -> library call -> echo)."""

from __future__ import annotations

from pathlib import Path

import click

from segments.errors import SegmentsError


@click.command("report")
@click.option(
    "--workspace",
    "workspace",
    required=True,
    type=click.Path(path_type=Path),
    help="workspace folder written by `segments run`",
)
@click.option(
    "--week", help="the week to report, e.g. 2026-W47 or 2026-11-22 (default: the latest built)"
)
@click.option(
    "--to",
    "to",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="the HTML file to write, e.g. report.html",
)
@click.pass_context
def report(ctx: click.Context, workspace: Path, week: str | None, to: Path) -> None:
    """Write one self-contained HTML report (charts of aggregates only; opens offline)."""
    from segments.io import write_text
    from segments.report import collect_report, render_report

    try:
        data = collect_report(workspace, week)
        path = write_text(render_report(data), to)
    except SegmentsError as e:  # the same one line the `segments` group prints
        click.echo(f"{type(e).__name__}: {e}", err=True)
        ctx.exit(e.exit_code)
    size = path.stat().st_size / 1e6
    since = f" (movement since {data.previous_week})" if data.previous_week else ""
    click.echo(
        f"report {data.week}{since} -> {path} ({size:.1f} MB, {data.summary['people']:,} people)"
    )


__all__ = ["report"]
