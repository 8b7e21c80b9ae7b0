"""The options more than one command takes, each declared once, and the commands' shared helpers."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from segments.errors import SegmentsError

WORKSPACE = click.option(
    "--workspace",
    "workspace",
    required=True,
    type=click.Path(path_type=Path),
    help="the workspace folder `segments run --out` wrote",
)
WEEK = click.option(
    "--week",
    help="ISO week or a date in it, e.g. 2026-W47 or 2026-11-22 (default: the latest built week)",
)
CONFIG = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="config TOML; its taxonomy gives the interest tags (default configs/segments.toml)",
)
ADAPTER = click.option(
    "--adapter",
    help="read every file of the adapter's table with this source adapter, e.g. taobao_seller",
)
ENCODING = click.option(
    "--encoding",
    type=click.Choice(["auto", "utf-8", "gbk", "gb18030"]),
    help="how CSV and JSON lines text is read (default: the config's [ingest] encoding, auto: "
    "UTF-8, or GBK/GB18030 detected for a file that is not UTF-8)",
)
AUDIENCES = click.option(
    "--audiences",
    "audiences_path",
    type=click.Path(path_type=Path),
    help="audiences TOML (default configs/audiences.toml)",
)


def input_option(
    required: bool = True,
    help: str = "input folder: orders/, events/, messages/, identities/, consent/",
) -> Callable[[Any], Any]:
    """`--input`: the input folder (required by run and validate, optional for eval)."""
    return click.option(
        "--input", "input_dir", required=required, type=click.Path(path_type=Path), help=help
    )


def json_option(help: str = "print JSON instead of text") -> Callable[[Any], Any]:
    """`--json`: machine-readable output on stdout."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def config_of(path: Path | None):
    """The config `--config` names (the default config without it)."""
    from segments.config import load_config

    return load_config(path)


def with_encoding(cfg, encoding: str | None):
    """The config with `--encoding` in force (unchanged without the option)."""
    if encoding is None:
        return cfg
    return cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"encoding": encoding})})


def taxonomy_of(config_path: Path | None):
    """The taxonomy the config names (its interests are the registry's interest tags)."""
    from segments.taxonomy import load_taxonomy

    cfg = config_of(config_path)
    return load_taxonomy(cfg.resolve(cfg.paths.taxonomy))


def echo_json(
    obj: Any, *, sort_keys: bool = False, default: Callable[[Any], Any] | None = None
) -> None:
    """Print `obj` as indented JSON, non-ASCII text as it is."""
    click.echo(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=sort_keys, default=default))


@contextmanager
def one_line_errors(ctx: click.Context) -> Iterator[None]:
    """A SegmentsError becomes one line on stderr and its exit code, never a traceback."""
    try:
        yield
    except SegmentsError as e:
        click.echo(f"{type(e).__name__}: {e}", err=True)
        ctx.exit(e.exit_code)
