"""`segments run`, `refresh`, `validate` and `demo-data`: build a workspace, keep its live table
fresh, check inputs, write demo data."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from segments.cli.options import (
    ADAPTER,
    AUDIENCES,
    CONFIG,
    ENCODING,
    WORKSPACE,
    config_of,
    echo_json,
    input_option,
    json_option,
    with_encoding,
)


@click.command()
@input_option()
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="workspace folder the run writes",
)
@click.option(
    "--as-of",
    help="a date or ISO week, e.g. 2026-11-22 or 2026-W47 (default: the latest complete week in the data)",
)
@click.option(
    "--weeks",
    "weeks",
    help="a range of weeks, e.g. 2026-W01..2026-W47: the RFM history of every week from the weekly panel, full tags for the last",
)
@click.option(
    "--full-history", is_flag=True, help="with --weeks: build the full tag table of every week"
)
@click.option(
    "--engine",
    type=click.Choice(["local", "spark"]),
    default="local",
    show_default=True,
    help="where the per-user buckets run",
)
@click.option(
    "--spark-master",
    default="local[2]",
    show_default=True,
    help="with --engine spark: the Spark master URL",
)
@CONFIG
@ADAPTER
@ENCODING
@json_option(
    "print a machine-readable summary on stdout instead of text (stage lines still go "
    "to stderr, for a scheduler's log)"
)
def run(
    input_dir: Path,
    out_dir: Path,
    as_of: str | None,
    weeks: str | None,
    full_history: bool,
    engine: str,
    spark_master: str,
    config_path: Path | None,
    adapter: str | None,
    encoding: str | None,
    as_json: bool,
) -> None:
    """Build identities, tags, clusters and packs for one week (or a range with --weeks)."""
    from segments import pipeline
    from segments.io import check_paths
    from segments.progress import Progress

    check_paths(input_dir, out_dir)  # before anything is loaded: a wrong path costs nothing
    cfg = with_encoding(config_of(config_path), encoding)
    progress = Progress()
    from segments.engine import get_executor

    executor = get_executor(engine, master=spark_master) if engine != "local" else None
    try:
        results = pipeline.run(
            cfg,
            input_dir,
            out_dir,
            as_of=as_of,
            weeks=weeks,
            adapter=adapter,
            progress=progress,
            executor=executor,
            full_history=full_history,
        )
    finally:
        if executor is not None:
            executor.close()
    if as_json:
        echo_json([r.summary() for r in results], sort_keys=True)
    else:
        for r in results:
            click.echo(r.describe())


@click.command()
@input_option()
@CONFIG
@ADAPTER
@ENCODING
@json_option("print a machine-readable summary")
def validate(
    input_dir: Path,
    config_path: Path | None,
    adapter: str | None,
    encoding: str | None,
    as_json: bool,
) -> None:
    """Check inputs against the contract without building anything."""
    from segments import pipeline
    from segments.io import check_paths

    check_paths(input_dir, None)
    cfg = with_encoding(config_of(config_path), encoding)
    report = pipeline.validate_inputs(cfg, input_dir, adapter=adapter)
    if as_json:
        echo_json(report, sort_keys=True)
    else:
        click.echo(describe_validation(report))
    if report["unusable"]:
        sys.exit(3)


def describe_validation(report: dict) -> str:
    """`segments validate`'s text: per-table counts and the top reject reasons."""
    lines = [f"{report['input']}:"]
    for name, c in report["tables"].items():
        lines.append(
            f"  {name:<10} files {c['files']:>3}  read {c['read']:>9,}  accepted {c['accepted']:>9,}  "
            f"rejected {c['rejected']:>7,}  duplicates {c['duplicates']:>6,}  skipped {c['skipped']:>6,}"
        )
        other = {e: n for e, n in c.get("encodings", {}).items() if e != "utf-8"}
        if other:
            read_as = ", ".join(f"{e} ({n} file{'s' if n != 1 else ''})" for e, n in other.items())
            lines.append(f"      text read as {read_as}")
        for reason, n in list(c["reasons"].items())[:5]:
            lines.append(f"      {n:>7,}  {reason}")
    if report["identifier_rejects"]:
        lines.append(f"  identifiers rejected on kept rows: {report['identifier_rejects']:,}")
    for name in report["unusable"]:
        lines.append(f"  {name}: no usable row")
    unknown = report.get("unknown_events") or {}
    if unknown:
        shown = ", ".join(f"{e} ({n:,})" for e, n in unknown.items())
        lines.append(
            f"  event names outside the contract's (kept; weighed where the config names them): {shown}"
        )
    lines += _describe_interests(report.get("interests", {}))
    return "\n".join(lines)


def _describe_interests(coverage: dict) -> list[str]:
    """The interest-coverage lines of `segments validate` (see `vocabulary_coverage`)."""

    def share(part: dict) -> str:
        rows = part["rows"]
        return f"{part['with_interest'] / rows:.1%}" if rows else "-"

    lines = ["  interests found by the taxonomy (categories, then search queries and chat text):"]
    for table, entry in coverage.items():
        bits = []
        cats = entry.get("categories")
        if cats:
            bits.append(
                f"categories {cats['rows']:,} rows, {share(cats)} with an interest "
                f"({cats['distinct_with_interest']:,} of {cats['distinct']:,} names)"
            )
        for key, label in (("queries", "search queries"), ("texts", "texts")):
            part = entry.get(key)
            if part:
                bits.append(f"{label} {part['rows']:,}, {share(part)} with an interest")
        if bits:
            lines.append(f"    {table:<9} " + "; ".join(bits))
        if cats and cats.get("top_without_interest"):
            lines.append("              most rows without one:")
            for c in cats["top_without_interest"]:
                lean = (
                    f": its people lean to {c['leans_to']}, {c['share']:.0%} of the "
                    f"{c['people_placed']:,} with a placed category ({c['lift']:.1f}x the rate)"
                    if c.get("leans_to")
                    else ""
                )
                if c.get("learned"):
                    lean += f"; a weekly build counts it for {c['learned']}"
                rows = f"{c['rows']:,} row{'s' if c['rows'] != 1 else ''}"
                lines.append(f"                {c['category']} ({rows}){lean}")
    return lines


@click.command()
@input_option()
@WORKSPACE
@CONFIG
@ADAPTER
@ENCODING
@AUDIENCES
@click.option(
    "--watch",
    "watch",
    type=click.FloatRange(min=1),
    help="keep refreshing: look for new input files every SECONDS (stop with Ctrl-C)",
)
@click.option(
    "--rounds", type=click.IntRange(min=1), hidden=True, help="with --watch: stop after N"
)
@click.option(
    "--everyone",
    is_flag=True,
    help="recompute every person's tags (a refresh otherwise recomputes only the people whose "
    "inputs changed, and on a new day ages the others from the day before; the table is the "
    "same)",
)
@json_option("print a machine-readable summary of each refresh (one JSON object per line)")
def refresh(
    input_dir: Path,
    workspace: Path,
    config_path: Path | None,
    adapter: str | None,
    encoding: str | None,
    audiences_path: Path | None,
    watch: float | None,
    rounds: int | None,
    everyone: bool,
    as_json: bool,
) -> None:
    """Fold the files that landed since the last build into the workspace and write the live
    table (current/) as of the newest data; re-export the packs marked `refresh`."""
    import json
    import time

    from segments import pipeline
    from segments.errors import SegmentsError
    from segments.io import check_paths
    from segments.progress import Progress

    check_paths(input_dir, workspace, "--workspace")
    cfg = with_encoding(config_of(config_path), encoding)
    done = 0
    while True:
        try:
            result = pipeline.refresh(
                cfg,
                input_dir,
                workspace,
                adapter=adapter,
                progress=Progress(quiet=as_json),
                audiences=audiences_path,
                touched_only=not everyone,
            )
        except SegmentsError as e:
            if watch is None:
                raise
            # a bad delivery must not stop the watch: say so, and look again next round
            click.echo(f"{type(e).__name__}: {e}", err=True)
        else:
            if as_json:
                click.echo(json.dumps(result.summary(), ensure_ascii=False, sort_keys=True))
            else:
                click.echo(result.describe())
        done += 1
        if watch is None or (rounds is not None and done >= rounds):
            return
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            return


@click.command("demo-data")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--users", default=3000, show_default=True, type=click.IntRange(10, 50_000_000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--end", default="2026-11-22", show_default=True, help="last day of the data (a Sunday)"
)
@click.option(
    "--vocabulary",
    default="a",
    show_default=True,
    type=click.Choice(["a", "b"]),
    help="the words people write and search: a, or b (a second list no tuning saw)",
)
def demo_data(out_dir: Path, users: int, seed: int, end: str, vocabulary: str) -> None:
    """Write a realistic demo population in the input layout, with its planted truth.

    The brand's constants are drawn per seed (truth/constants.json records them)."""
    from datetime import date

    from segments import demo
    from segments.errors import ConfigError

    try:
        end_day = date.fromisoformat(end)
    except ValueError:
        raise ConfigError(f"--end '{end}' is not a date like 2026-11-22.") from None
    summary = demo.generate(out_dir, users=users, seed=seed, end=end_day, vocabulary=vocabulary)
    click.echo(f"demo data for {users:,} people written to {out_dir}")
    for name, value in summary.as_dict().items():
        click.echo(f"  {name}: {value:,}" if isinstance(value, int) else f"  {name}: {value}")
