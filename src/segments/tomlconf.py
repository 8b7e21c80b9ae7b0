"""Reading a TOML settings file into a pydantic model, with every problem reported at once."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from segments.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The parsed file; ConfigError names the file when it is missing or not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such {what} file.") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: not a readable TOML file ({e}).") from None


def validated(model: type[M], data: dict[str, Any], where: str, what: str) -> M:
    """`model` from `data`; ConfigError lists every problem, `location: message`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            problems.append(f"{loc}: {msg}" if loc else msg)
        raise ConfigError(f"{where}: invalid {what}: " + "; ".join(problems)) from None
