"""`segments tags`: browse the tag registry and a week's tag table."""

from __future__ import annotations

from pathlib import Path

import click

from segments.cli.options import CONFIG, WEEK, WORKSPACE, echo_json, json_option, taxonomy_of


@click.group()
def tags() -> None:
    """Browse the tag registry and a week's tag table."""


@tags.command("list")
@click.option(
    "--family",
    help="only this family (rfm, behaviour, interest, community, promo, lifecycle, predicted, cluster, identity)",
)
@click.option("--markdown", is_flag=True, help="print the whole registry as docs/tags.md")
@CONFIG
def tags_list(family: str | None, markdown: bool, config_path: Path | None) -> None:
    """Every tag with its family, type and Chinese label."""
    from segments.tags import registry, registry_markdown

    taxonomy = taxonomy_of(config_path)
    if markdown:
        click.echo(registry_markdown(taxonomy), nl=False)
        return

    for t in registry(taxonomy):
        if family and t.family != family:
            continue
        click.echo(f"{t.name:<36} {t.family:<10} {t.dtype:<9} {t.label_zh}")


@tags.command("describe")
@click.argument("name")
@CONFIG
def tags_describe(name: str, config_path: Path | None) -> None:
    """What one tag means, where it comes from, and what null means."""
    from segments.workspace import describe_tag

    t = describe_tag(name, taxonomy_of(config_path))
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
@WORKSPACE
@WEEK
def tags_show(one_id: str, workspace: Path, week: str | None) -> None:
    """Every tag of one person."""
    from segments.workspace import open_workspace

    row = open_workspace(workspace).person(one_id, week)
    for key, value in row.items():
        click.echo(f"{key:<36} {value}")


@tags.command("diff")
@click.argument("w1")
@click.argument("w2")
@WORKSPACE
@json_option()
def tags_diff(w1: str, w2: str, workspace: Path, as_json: bool) -> None:
    """What moved between two weeks: distribution shifts, flows and RFM-segment movement."""
    from segments.workspace import open_workspace

    d = open_workspace(workspace).diff(w1, w2)
    if as_json:
        echo_json(
            {
                "w1": d.w1,
                "w2": d.w2,
                "shifts": d.shifts.to_dicts(),
                "flows": d.flows.to_dicts(),
                "movement": d.movement.to_dicts(),
            }
        )
    else:
        click.echo(d.describe())
