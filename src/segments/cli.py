"""The `segments` command: each command parses its options, calls the library, and prints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from segments.errors import SegmentsError


class _Group(click.Group):
    """Turns every SegmentsError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SegmentsError as e:
            click.echo(f"{type(e).__name__}: {e}", err=True)
            ctx.exit(e.exit_code)
        except (OSError, MemoryError) as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="segments")
def cli() -> None:
    """segments: OneID, weekly tags, clusters and audience packs from a brand's exports."""


def _config(path: str | None):
    from segments.config import load_config

    return load_config(path)


@cli.command()
@click.option(
    "--input",
    "input_dir",
    required=True,
    type=click.Path(path_type=Path),
    help="input folder: orders/, events/, messages/, identities/, consent/",
)
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
@click.option("--weeks", "weeks", help="build a range of weeks, e.g. 2026-W01..2026-W47")
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="config TOML (default configs/segments.toml)",
)
@click.option(
    "--adapter",
    help="read every file of the adapter's table with this source adapter, e.g. taobao_seller",
)
@click.option(
    "--json", "as_json", is_flag=True, help="print a machine-readable summary instead of text"
)
def run(
    input_dir: Path,
    out_dir: Path,
    as_of: str | None,
    weeks: str | None,
    config_path: Path | None,
    adapter: str | None,
    as_json: bool,
) -> None:
    """Build identities, tags, clusters and packs for one week (or a range with --weeks)."""
    from segments import pipeline
    from segments.progress import Progress

    cfg = _config(config_path)
    progress = Progress(quiet=as_json)
    results = pipeline.run(
        cfg, input_dir, out_dir, as_of=as_of, weeks=weeks, adapter=adapter, progress=progress
    )
    if as_json:
        click.echo(
            json.dumps([r.summary() for r in results], ensure_ascii=False, indent=2, sort_keys=True)
        )
    else:
        for r in results:
            click.echo(r.describe())


@cli.command()
@click.option("--input", "input_dir", required=True, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--adapter", help="source adapter for the files of its table")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable summary")
def validate(input_dir: Path, config_path: Path | None, adapter: str | None, as_json: bool) -> None:
    """Check inputs against the contract without building anything."""
    from segments import pipeline

    cfg = _config(config_path)
    report = pipeline.validate_inputs(cfg, input_dir, adapter=adapter)
    if as_json:
        click.echo(json.dumps(report, ensure_ascii=False, indent=2, sort_keys=True))
    else:
        click.echo(pipeline.describe_validation(report))
    if report["unusable"]:
        sys.exit(3)


@cli.command("demo-data")
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@click.option("--users", default=3000, show_default=True, type=click.IntRange(10, 50_000_000))
@click.option("--seed", default=7, show_default=True, type=int)
@click.option(
    "--end", default="2026-11-22", show_default=True, help="last day of the data (a Sunday)"
)
def demo_data(out_dir: Path, users: int, seed: int, end: str) -> None:
    """Write a realistic demo population in the input layout, with its planted truth."""
    from datetime import date

    from segments import demo
    from segments.errors import ConfigError

    try:
        end_day = date.fromisoformat(end)
    except ValueError:
        raise ConfigError(f"--end '{end}' is not a date like 2026-11-22.") from None
    summary = demo.generate(out_dir, users=users, seed=seed, end=end_day)
    click.echo(f"demo data for {users:,} people written to {out_dir}")
    for name, value in summary.as_dict().items():
        click.echo(f"  {name}: {value:,}" if isinstance(value, int) else f"  {name}: {value}")


def main() -> None:
    cli(prog_name="segments")


if __name__ == "__main__":  # pragma: no cover
    main()
