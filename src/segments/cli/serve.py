"""`segments serve`: the HTTP API over a workspace's live table (parse -> app -> uvicorn)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from segments.cli.options import AUDIENCES, CONFIG, WORKSPACE
from segments.errors import ConfigError

INSTALL_HINT = "segments serve needs the serve extra: pip install 'segments[serve]'"


@click.command()
@WORKSPACE
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--token-file",
    type=click.Path(path_type=Path),
    help="file whose first line is the bearer token (default: $SEGMENTS_API_TOKEN); "
    "without a token the server listens on loopback only",
)
@CONFIG
@AUDIENCES
@click.option(
    "--poll-seconds",
    default=2.0,
    show_default=True,
    type=click.FloatRange(0.05, 3600),
    help="how often to look for a new live version (a refresh is swapped in, no restart)",
)
@click.option(
    "--max-body-bytes", default=16_384, show_default=True, type=click.IntRange(256, 10_000_000)
)
@click.option(
    "--max-filter-chars",
    default=1_000,
    show_default=True,
    type=click.IntRange(10, 2_000),
    help="longest `where` filter a preview accepts",
)
@click.option(
    "--max-age-seconds",
    default=300.0,
    show_default=True,
    type=click.FloatRange(0),
    help="health reports fresh while the newest input row is at most this old",
)
@click.option(
    "--export-options",
    "export_options_path",
    type=click.Path(path_type=Path),
    help="TOML of exporter options per platform for packs built on request, e.g. "
    '[tencent] openid_app_id = "wx..." (a pack\'s refresh_options win)',
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
def serve(
    workspace: Path,
    host: str,
    port: int,
    token_file: Path | None,
    config_path: Path | None,
    audiences_path: Path | None,
    poll_seconds: float,
    max_body_bytes: int,
    max_filter_chars: int,
    max_age_seconds: float,
    export_options_path: Path | None,
    log_level: str,
) -> None:
    """Serve people, tags and audience packs over HTTP from the workspace's live table.

    Endpoints under /v1 (health, people/{id_type}/{id}, tags, packs, preview, pack exports);
    OpenAPI docs at /docs. A bearer token is required ($SEGMENTS_API_TOKEN or --token-file);
    without one it listens on loopback only. See docs/serve.md.
    """
    try:
        import uvicorn

        from segments.serve.app import ServeSettings, asgi_app
    except ImportError:
        raise click.ClickException(INSTALL_HINT) from None
    from segments.audiences import load_audiences
    from segments.cli.options import config_of
    from segments.layout import Layout
    from segments.serve import LiveHolder, check_bind, load_token

    token = load_token(token_file)
    warning = check_bind(host, token)
    if not Path(workspace).is_dir():
        raise ConfigError(f"--workspace {workspace}: no such folder.")
    cfg = config_of(config_path)
    export_options = _export_options(export_options_path)
    settings = ServeSettings(
        workspace=Path(workspace),
        token=token,
        timezone=cfg.run.timezone,
        poll_seconds=poll_seconds,
        max_body_bytes=max_body_bytes,
        max_filter_chars=max_filter_chars,
        max_age_seconds=max_age_seconds,
        export_options=export_options,
    )
    holder = LiveHolder(Layout(workspace), load_audiences(audiences_path), poll_seconds)
    _log_to_stderr(log_level)
    if warning:
        click.echo(warning, err=True)
    click.echo(
        f"serving {workspace} on http://{host}:{port}/v1 (docs: /docs)"
        + ("" if warning else ", bearer token required"),
        err=True,
    )
    uvicorn.run(
        asgi_app(settings, holder),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,  # uvicorn's would log paths; the app logs routes instead
        server_header=False,
        h11_max_incomplete_event_size=16_384,
    )


def _export_options(path: Path | None) -> dict[str, dict[str, Any]]:
    """`--export-options`: {platform: {option: value}}, platforms checked by name."""
    if path is None:
        return {}
    from segments.exporters import EXPORTERS
    from segments.settings.load import read_toml

    data = read_toml(path, "export options")
    problems = [
        f"[{name}]: " + ("not a table" if not isinstance(v, dict) else "unknown platform")
        for name, v in data.items()
        if not isinstance(v, dict) or name not in EXPORTERS
    ]
    if problems:
        raise ConfigError(
            f"--export-options {path}: {'; '.join(problems)}; platforms: {', '.join(sorted(EXPORTERS))}."
        )
    return data


def _log_to_stderr(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("segments.serve")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
