"""The `segments` command: each command parses its options, calls the library, and prints."""

from __future__ import annotations

import os

import click

from segments.cli.options import one_line_errors


class _Group(click.Group):
    """Turns every SegmentsError into one line on stderr and its exit code; never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            with one_line_errors(ctx):
                return super().invoke(ctx)
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


def _register() -> None:
    """One module per command group; the commands import the library only when they run."""
    from segments.cli import audience, build, identity, report, serve, tags

    for command in (
        build.run,
        build.refresh,
        build.validate,
        build.demo_data,
        tags.tags,
        identity.identity,
        audience.audience,
        report.report,
        report.eval_cmd,
        serve.serve,
    ):
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="segments")


__all__ = ["cli", "main"]
