"""`segments serve`: an HTTP API for people, tags and audience packs over the live table.

Modules, each importing only those above it: `auth` (the bearer token, loopback binding),
`snapshot` (one live version in memory, and the holder that swaps to a new one when a refresh
lands), `packs` (a pack's export for a platform, from a refresh or built on request), `app`
(the FastAPI app; needs the `serve` extra: `pip install 'segments[serve]'`).

Importing this package loads neither FastAPI nor uvicorn; `segments.serve.app` does.
"""

from segments.serve.auth import TOKEN_ENV, check_bind, load_token
from segments.serve.snapshot import LiveHolder, Snapshot, load_snapshot, phone_key

__all__ = [
    "TOKEN_ENV",
    "LiveHolder",
    "Snapshot",
    "check_bind",
    "load_snapshot",
    "load_token",
    "phone_key",
]
