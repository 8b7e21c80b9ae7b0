"""`segments audience`: list, preview and export audience packs (parse -> library call -> echo)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from segments.cli.options import AUDIENCES, WEEK, WORKSPACE, echo_json, json_option
from segments.errors import ConfigError


class _Platforms(click.Choice):
    """The export platforms, `segments.exporters.EXPORTERS`' names with parquet first, read when
    first needed: the CLI starts without importing the exporters (and polars)."""

    def __init__(self) -> None:
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        from segments.exporters import EXPORTERS

        return tuple(sorted(EXPORTERS, key=lambda name: name != "parquet"))


PLATFORMS = _Platforms()


def _option_value(text: str) -> Any:
    """`500` -> 500, `true` -> True, `["A","B"]` -> list; anything else stays text."""
    stripped = text.strip()
    if stripped[:1] in '[{"' or stripped in ("true", "false", "null") or _is_number(stripped):
        try:
            return json.loads(stripped)
        except ValueError:
            return text
    return text


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`("min_size=2000", "openid_app_id=wx1")` -> `{"min_size": 2000, "openid_app_id": "wx1"}`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--option {pair!r}: expected key=value, e.g. --option min_size=2000."
            )
        out[key.strip()] = _option_value(value)
    return out


def _format_preview(p: dict[str, Any], top: int = 12) -> str:
    c = p["counts"]
    lines = [
        f"{p['pack']}  {p['week']}" + (f"  {p['description']}" if p.get("description") else "")
    ]
    lines.append(f"  rule: {p['rule']}")
    steps = [
        ("matched", "matched", None),
        ("after_opted_out", "- opted out", "matched"),
        ("after_coupon_hunters", "- coupon hunters", "after_opted_out"),
        ("after_recent_buyers", "- recent buyers", "after_coupon_hunters"),
        ("after_exclude", "- excluded packs", "after_recent_buyers"),
        ("after_limit", "- order/limit", "after_exclude"),
    ]
    for key, label, prev in steps:
        if prev is None:
            lines.append(f"  {label:<20} {c[key]:>12,}")
        else:
            removed = f"-{c[prev] - c[key]:,}"
            lines.append(f"  {label:<20} {removed:>12}  {c[key]:>12,}")
    held = f"-{c['holdout']:,}"
    lines.append(f"  {'- holdout':<20} {held:>12}  {c['final']:>12,}")
    lines.append(f"  {'final':<20} {c['final']:>12,}")
    for k, v in p.get("info", {}).items():
        lines.append(f"  {k}: {v}")
    total = max(p["count"], 1)
    for col, counts in p["breakdowns"].items():
        lines.append(f"  by {col}:")
        items = list(counts.items())
        for value, n in items[:top]:
            lines.append(f"    {value:<28} {n:>12,}  {100 * n / total:5.1f}%")
        if len(items) > top:
            rest = sum(n for _, n in items[top:])
            lines.append(f"    {f'({len(items) - top} more)':<28} {rest:>12,}")
    return "\n".join(lines)


@click.group("audience")
def audience() -> None:
    """Audience packs: list the definitions, preview who a pack holds, export it for a platform."""


@audience.command("list")
@AUDIENCES
@json_option()
def list_packs(audiences_path: Path | None, as_json: bool) -> None:
    """List the packs with their description and rule."""
    from segments.audiences import load_audiences, pack_summaries

    rows = pack_summaries(load_audiences(audiences_path))
    if as_json:
        echo_json(rows, default=str)
        return
    for r in rows:
        click.echo(f"{r['name']}: {r['description']}")
        click.echo(f"    {r['rule']}")


@audience.command("preview")
@click.argument("name", required=False)
@click.option("--where", "where", help='an ad-hoc SQL filter instead of NAME, e.g. "is_high_value"')
@WORKSPACE
@WEEK
@AUDIENCES
@json_option()
def preview_cmd(
    name: str | None,
    where: str | None,
    workspace: Path,
    week: str | None,
    audiences_path: Path | None,
    as_json: bool,
) -> None:
    """Count a pack (NAME, or `lookalike(PACK, SIZE[, interest|cluster])`, or --where SQL) and
    break it down by cluster, primary interest, lifecycle stage and source."""
    from segments.audiences import preview_pack

    result = preview_pack(workspace, name=name, where=where, week=week, audiences=audiences_path)
    if as_json:
        echo_json(result, default=str)
    else:
        click.echo(_format_preview(result))


@audience.command("export")
@click.argument("name")
@WORKSPACE
@WEEK
@click.option("--platform", required=True, type=PLATFORMS, help="where the pack goes")
@click.option(
    "--to", "to", required=True, type=click.Path(path_type=Path), help="folder to write into"
)
@AUDIENCES
@click.option(
    "--option",
    "option_pairs",
    multiple=True,
    metavar="KEY=VALUE",
    help="exporter option, repeatable, e.g. --option openid_app_id=wx0123 --option min_size=2000",
)
@json_option("print the manifest as JSON")
def export_cmd(
    name: str,
    workspace: Path,
    week: str | None,
    platform: str,
    to: Path,
    audiences_path: Path | None,
    option_pairs: tuple[str, ...],
    as_json: bool,
) -> None:
    """Export pack NAME for a platform into --to, and log it in OUT/exports/log.jsonl."""
    from segments.audiences import export_pack

    manifest = export_pack(
        workspace,
        name,
        platform,
        to,
        week=week,
        options=parse_options(option_pairs),
        audiences=audiences_path,
    )
    if as_json:
        echo_json(manifest.to_dict(), default=str)
        return
    click.echo(
        f"{manifest.pack} {manifest.week} -> {platform}: {manifest.people:,} people, "
        f"{manifest.people_exportable:,} with a usable identifier"
    )
    for f in manifest.files:
        click.echo(f"  {to / f.path}  {f.rows:,} ids  sha256 {f.sha256[:16]}")
    for w in manifest.warnings:
        click.echo(f"  warning: {w}")
