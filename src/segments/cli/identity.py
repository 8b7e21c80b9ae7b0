"""`segments identity`: OneID statistics and lookups."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from segments.cli.options import WORKSPACE, echo_json


@click.group()
def identity() -> None:
    """OneID statistics and lookups."""


@identity.command("stats")
@WORKSPACE
def identity_stats(workspace: Path) -> None:
    """Identifiers by type, people, linkage rate, component sizes, cuts by reason."""
    from segments.workspace import open_workspace

    echo_json(open_workspace(workspace).identity.stats(), sort_keys=True)


@identity.command("lookup")
@click.argument("id_type")
@click.argument("id_value", metavar="ID")
@WORKSPACE
def identity_lookup(id_type: str, id_value: str, workspace: Path) -> None:
    """Every identifier of the person holding ID (a raw phone is normalised and hashed first)."""
    from segments.workspace import open_workspace

    found = open_workspace(workspace).identity.lookup(id_type, id_value)
    if found.height == 0:
        from segments.contract import mask_value

        shown = "(phone)" if id_type == "phone" else mask_value(id_value, False)
        click.echo(f"no person holds {id_type} {shown}")
        sys.exit(1)
    for row in found.iter_rows(named=True):
        click.echo("  ".join(f"{k}={v}" for k, v in row.items()))
