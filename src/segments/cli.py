"""The `segments` command: each command parses its options, calls the library, and prints."""

from __future__ import annotations

import json
import os
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
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except (OSError, MemoryError) as e:
            click.echo(f"Error: {e}", err=True)
            ctx.exit(1)
        except Exception as e:  # a bug: one line, the traceback only on request
            if os.environ.get("SEGMENTS_DEBUG"):
                raise
            click.echo(
                f"InternalError: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                "(a bug in segments; rerun with SEGMENTS_DEBUG=1 for the traceback)",
                err=True,
            )
            ctx.exit(70)


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
    "--json",
    "as_json",
    is_flag=True,
    help="print a machine-readable summary on stdout instead of text (stage lines still go "
    "to stderr, for a scheduler's log)",
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
    as_json: bool,
) -> None:
    """Build identities, tags, clusters and packs for one week (or a range with --weeks)."""
    from segments import pipeline
    from segments.progress import Progress

    cfg = _config(config_path)
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


_WS = click.option(
    "--workspace",
    "workspace",
    required=True,
    type=click.Path(path_type=Path),
    help="the folder `segments run --out` wrote",
)
_WEEK = click.option("--week", help="ISO week or a date in it (default: the latest built week)")


@cli.group()
def tags() -> None:
    """Browse the tag registry and a week's tag table."""


def _taxonomy(config_path: Path | None):
    """The taxonomy the config names (its interests are the registry's interest tags)."""
    from segments.taxonomy import load_taxonomy

    cfg = _config(config_path)
    return load_taxonomy(cfg.resolve(cfg.paths.taxonomy))


_TAGS_CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="config TOML whose taxonomy gives the interest tags (default configs/segments.toml)",
)


@tags.command("list")
@click.option(
    "--family",
    help="only this family (rfm, behaviour, interest, community, promo, lifecycle, predicted, cluster, identity)",
)
@click.option("--markdown", is_flag=True, help="print the whole registry as docs/tags.md")
@_TAGS_CONFIG
def tags_list(family: str | None, markdown: bool, config_path: Path | None) -> None:
    """Every tag with its family, type and Chinese label."""
    from segments.tags import registry, registry_markdown

    taxonomy = _taxonomy(config_path)
    if markdown:
        click.echo(registry_markdown(taxonomy), nl=False)
        return

    for t in registry(taxonomy):
        if family and t.family != family:
            continue
        click.echo(f"{t.name:<36} {t.family:<10} {t.dtype:<9} {t.label_zh}")


@tags.command("describe")
@click.argument("name")
@_TAGS_CONFIG
def tags_describe(name: str, config_path: Path | None) -> None:
    """What one tag means, where it comes from, and what null means."""
    from segments.workspace import describe_tag

    t = describe_tag(name, _taxonomy(config_path))
    for key in (
        "name",
        "family",
        "dtype",
        "unit",
        "label_zh",
        "description",
        "sources",
        "window",
        "null_means",
    ):
        click.echo(f"{key + ':':<12} {getattr(t, key)}")


@tags.command("show")
@click.argument("one_id")
@_WS
@_WEEK
def tags_show(one_id: str, workspace: Path, week: str | None) -> None:
    """Every tag of one person."""
    from segments.workspace import open_workspace

    row = open_workspace(workspace).person(one_id, week)
    for key, value in row.items():
        click.echo(f"{key:<36} {value}")


@tags.command("diff")
@click.argument("w1")
@click.argument("w2")
@_WS
@click.option("--json", "as_json", is_flag=True)
def tags_diff(w1: str, w2: str, workspace: Path, as_json: bool) -> None:
    """What moved between two weeks: distribution shifts, flows and RFM-segment movement."""
    from segments.workspace import open_workspace

    d = open_workspace(workspace).diff(w1, w2)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "w1": d.w1,
                    "w2": d.w2,
                    "shifts": d.shifts.to_dicts(),
                    "flows": d.flows.to_dicts(),
                    "movement": d.movement.to_dicts(),
                },
                ensure_ascii=False,
                indent=2,
            )
        )
    else:
        click.echo(d.describe())


@cli.command("eval")
@_WS
@click.option(
    "--truth",
    "truth",
    required=True,
    type=click.Path(path_type=Path),
    help="the truth/ folder of demo data",
)
@click.option(
    "--input",
    "input_dir",
    type=click.Path(path_type=Path),
    help="the input folder, to check RFM against an independent reference",
)
@_WEEK
@click.option("--json", "as_json", is_flag=True)
def eval_cmd(
    workspace: Path, truth: Path, input_dir: Path | None, week: str | None, as_json: bool
) -> None:
    """Accuracy of every planted tag against the demo generator's truth."""
    from segments.evaluate import evaluate, format_metrics, metrics_json

    metrics = evaluate(workspace, truth, input_dir, week)
    if as_json:
        click.echo(json.dumps(metrics_json(metrics), ensure_ascii=False, indent=2))
    else:
        click.echo(format_metrics(metrics))


@cli.group()
def identity() -> None:
    """OneID statistics and lookups."""


@identity.command("stats")
@_WS
def identity_stats(workspace: Path) -> None:
    """Identifiers by type, people, linkage rate, component sizes, cuts by reason."""
    from segments.workspace import open_workspace

    click.echo(
        json.dumps(
            open_workspace(workspace).identity.stats(), ensure_ascii=False, indent=2, sort_keys=True
        )
    )


@identity.command("lookup")
@click.argument("id_type")
@click.argument("id_value", metavar="ID")
@_WS
def identity_lookup(id_type: str, id_value: str, workspace: Path) -> None:
    """Every identifier of the person holding ID (a raw phone is normalised and hashed first)."""
    from segments.workspace import open_workspace

    found = open_workspace(workspace).identity.lookup(id_type, id_value)
    if found.height == 0:
        click.echo(f"no person holds {id_type} {id_value if id_type != 'phone' else '(phone)'}")
        sys.exit(1)
    for row in found.iter_rows(named=True):
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))


def _register() -> None:
    from segments.cli_report import report

    cli.add_command(report)
    try:
        from segments.cli_audience import audience
    except ImportError:  # pragma: no cover - the module ships with the package
        return
    cli.add_command(audience)


_register()


def main() -> None:
    cli(prog_name="segments")


if __name__ == "__main__":  # pragma: no cover
    main()
