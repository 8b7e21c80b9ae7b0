"""The one TOML loader: reads a settings file, finds the shipped configs, and turns pydantic's
validation errors into the engine's one error shape (`segments.errors.format_problems`)."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from segments.errors import ConfigError, format_problems

M = TypeVar("M", bound=BaseModel)

_REPO_CONFIGS = Path(__file__).resolve().parents[3] / "configs"
_PACKAGED_CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config_dir() -> Path:
    """Where the shipped configs live: the repo's `configs/` in a checkout, else the copy
    packaged inside `segments/configs/`."""
    return _REPO_CONFIGS if _REPO_CONFIGS.is_dir() else _PACKAGED_CONFIGS


def shipped(filename: str) -> Path:
    """A shipped config file, e.g. `shipped("taxonomy.toml")`."""
    return config_dir() / filename


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file; ConfigError names the file when it is missing or not TOML."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file.") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"{path}: not a readable TOML file ({first}).") from None


def _message(err: Mapping[str, Any], unknown_key: str) -> str:
    if err["type"] == "extra_forbidden":
        return f"unknown key ({unknown_key})"
    return str(err["msg"]).removeprefix("Value error, ")


def problems(
    e: ValidationError, prefix: str = "", unknown_key: str = "not a setting; check the spelling"
) -> list[str]:
    """Each of pydantic's errors as `location: what. Got X instead.` (`prefix` goes before the
    location, e.g. `[packs.high_value]`). An unknown key or a missing one shows no input."""
    out = []
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{prefix}.{loc}" if prefix and loc else prefix or loc
        text = _message(err, unknown_key)
        if not loc:  # a check of the whole model: its problems, joined by "; ", one per line
            out += [f"{where}: {p}." if where else f"{p}." for p in text.split("; ")]
            continue
        line = f"{where}: {text}"
        if err["type"] in ("extra_forbidden", "missing") or "input" not in err:
            out.append(f"{line}.")
        else:
            out.append(f"{line}. Got {err['input']!r} instead.")
    return out


def validated(model: type[M], data: Any, where: str) -> M:
    """`model` from `data`; ConfigError lists every problem in the engine's one shape."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(format_problems(where, problems(e))) from None


def load(model: type[M], path: Path, what: str) -> M:
    """Read the TOML file at `path` and validate it as `model` (the file names the errors)."""
    return validated(model, read_toml(path, what), str(path))
