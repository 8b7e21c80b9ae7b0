"""The engine's exceptions: every failure a user can cause is one of these, printed as one line."""

from __future__ import annotations


class SegmentsError(Exception):
    """Base class: the CLI prints the message and exits non-zero, never a traceback."""

    exit_code = 1


class ConfigError(SegmentsError):
    """A config file or option is wrong; the message lists every problem found."""

    exit_code = 2


class DataError(SegmentsError):
    """Input data cannot be used: an unreadable file, a missing required column, no usable table."""

    exit_code = 3


class StageError(SegmentsError):
    """A stage failed; the message names the stage and the week."""

    exit_code = 4


class LockError(SegmentsError):
    """Another run holds the workspace lock."""

    exit_code = 5


class ExportError(SegmentsError):
    """An audience pack cannot be exported as asked (too small, unknown platform, ...)."""

    exit_code = 6


def format_problems(where: str, problems: list[str]) -> str:
    """The one shape of a settings or validation error, every problem at once:

    configs/segments.toml has 2 problems:
      - rfm.score_bins: Input should be less than or equal to 9. Got 12 instead.
      - clustering.k_rang: unknown key (not a setting; check the spelling).
    """
    n = len(problems)
    lines = "\n".join(f"  - {p}" for p in problems)
    return f"{where} has {n} problem{'s' if n != 1 else ''}:\n{lines}"
