"""`segments report` (the offline HTML report of a week) and `segments eval` (accuracy against
the demo's planted truth): parse -> library call -> echo."""

from __future__ import annotations

from pathlib import Path

import click

from segments.cli.options import (
    WEEK,
    WORKSPACE,
    echo_json,
    input_option,
    json_option,
    one_line_errors,
)


@click.command("report")
@WORKSPACE
@WEEK
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

    # the `segments` group prints errors as one line; this does too when run on its own
    with one_line_errors(ctx):
        data = collect_report(workspace, week)
        path = write_text(render_report(data), to)
    size = path.stat().st_size / 1e6
    since = f" (movement since {data.previous_week})" if data.previous_week else ""
    click.echo(
        f"report {data.week}{since} -> {path} ({size:.1f} MB, {data.summary['people']:,} people)"
    )


@click.command("eval")
@WORKSPACE
@click.option(
    "--truth",
    "truth",
    required=True,
    type=click.Path(path_type=Path),
    help="the truth/ folder of demo data",
)
@input_option(
    required=False, help="the input folder, to check RFM against an independent reference"
)
@WEEK
@json_option()
def eval_cmd(
    workspace: Path, truth: Path, input_dir: Path | None, week: str | None, as_json: bool
) -> None:
    """Accuracy of every planted tag against the demo generator's truth."""
    from segments.evaluate import evaluate, format_metrics, metrics_json

    metrics = evaluate(workspace, truth, input_dir, week)
    if as_json:
        echo_json(metrics_json(metrics))
    else:
        click.echo(format_metrics(metrics))
