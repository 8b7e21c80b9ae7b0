"""Who may call the server: one bearer token, from the environment or a file, compared in
constant time; without a token the server binds to loopback only."""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path

from segments.errors import ConfigError

TOKEN_ENV = "SEGMENTS_API_TOKEN"
MIN_TOKEN_CHARS = 16


def load_token(token_file: Path | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: the first line of `token_file` when given, else `$SEGMENTS_API_TOKEN`;
    None when neither is set. ConfigError (one line) for an unreadable file or a token shorter
    than 16 characters (`openssl rand -hex 32` makes a good one)."""
    env = os.environ if env is None else env
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(
                f"--token-file {token_file}: cannot be read ({e.strerror})."
            ) from None
        token, where = (text.splitlines() or [""])[0].strip(), f"--token-file {token_file}"
    elif env.get(TOKEN_ENV):
        token, where = env[TOKEN_ENV].strip(), f"${TOKEN_ENV}"
    else:
        return None
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{where}: the token must be at least {MIN_TOKEN_CHARS} characters. Got "
            f"{len(token)} instead (make one with `openssl rand -hex 32`)."
        )
    return token


def token_matches(given: str | None, expected: str) -> bool:
    """Whether the bearer token a request gave is the server's (constant time)."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (None for any other shape)."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def is_loopback(host: str) -> bool:
    """Whether `host` is a loopback address (127.0.0.0/8, ::1) or `localhost`."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> str | None:
    """Refuse to serve without a token on anything but loopback (ConfigError); the warning to
    print when serving without one on loopback (None with a token)."""
    if token is not None:
        return None
    if not is_loopback(host):
        raise ConfigError(
            f"serve: no API token, so it binds to loopback only. Got --host {host} instead; "
            f"set ${TOKEN_ENV} or --token-file, or use --host 127.0.0.1."
        )
    return (
        f"serve: no API token (${TOKEN_ENV} or --token-file): requests are not authenticated, "
        f"so it listens on loopback ({host}) only."
    )


__all__ = [
    "MIN_TOKEN_CHARS",
    "TOKEN_ENV",
    "bearer",
    "check_bind",
    "is_loopback",
    "load_token",
    "token_matches",
]
