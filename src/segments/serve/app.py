"""The HTTP API over the live table: a FastAPI app, versioned under `/v1`.

```
GET  /v1/health                                     built week, live version and as-of, data age
GET  /v1/people/{id_type}/{id}                      one person by any identifier (or one_id)
GET  /v1/tags                                       the tag dictionary
GET  /v1/packs                                      the named packs, with their size in this version
GET  /v1/packs/{name}/preview                       counts and breakdowns of a named pack
POST /v1/preview  {"pack": ...} | {"where": ...}    the same, or of an ad-hoc `where` filter
GET  /v1/packs/{name}/platforms/{platform}          the pack's export manifest for a platform
GET  /v1/packs/{name}/platforms/{platform}/files/{version}/{file}   one of its files, streamed
GET  /docs, /openapi.json                           the OpenAPI docs
```

Every answer names the live `version` it came from (body and `X-Segments-Version` header) and
is computed from that one snapshot. Errors are one-line JSON (`{"error": ..., "message": ...,
"status": ...}`) with a 4xx status; nothing a client sent as an identifier is echoed or logged
(the access log names the route, not the path).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from segments.audiences import pack_summaries
from segments.contract import id_forms
from segments.errors import ExportError, SegmentsError
from segments.layout import Layout
from segments.live import now as wall_clock_now
from segments.serve.auth import token_matches
from segments.serve.packs import find_export, pack_export
from segments.serve.snapshot import (
    LOOKUP_TYPES,
    ONE_ID,
    LiveHolder,
    Snapshot,
    json_value,
    phone_key,
)

log = logging.getLogger("segments.serve")
access_log = logging.getLogger("segments.serve.access")

API_VERSION = "v1"
VERSION_HEADER = "X-Segments-Version"
_VERSION = re.compile(r"^v\d{6}$")
_DIGITS = re.compile(r"\d{7,}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


@dataclass(frozen=True)
class ServeSettings:
    """What `segments serve` was started with (see `segments serve --help`)."""

    workspace: Path
    token: str | None = None
    timezone: str = "Asia/Shanghai"
    poll_seconds: float = 2.0
    max_body_bytes: int = 16_384
    max_filter_chars: int = 1_000
    max_id_chars: int = 256
    max_age_seconds: float = 300.0
    export_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


BEARER = HTTPBearer(auto_error=False, description="the server's API token")


class ApiError(Exception):
    """An answer that is an error: its status, its kind and one line saying what to do."""

    def __init__(
        self, status: int, kind: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.headers = status, kind, message, headers


def _dumps(content: Any) -> bytes:
    try:  # the common case: nothing to convert
        text = json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError):  # a time, a NaN or an infinity somewhere
        text = json.dumps(
            json_value(content), ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    return text.encode("utf-8")


class JSONLine(JSONResponse):
    """JSON on one line, non-ASCII text as it is, NaN as null, times as ISO text."""

    def render(self, content: Any) -> bytes:
        return _dumps(content)


def error_body(status: int, kind: str, message: str) -> dict[str, Any]:
    return {
        "error": kind,
        "message": message.splitlines()[0] if message else kind,
        "status": status,
    }


def error_response(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> JSONLine:
    return JSONLine(error_body(status, kind, message), status_code=status, headers=headers)


def _status_of(e: SegmentsError) -> int:
    if isinstance(e, ExportError):
        return 422
    return 400  # ConfigError (a bad pack or filter), DataError (a rule the table cannot run)


# ---------------------------------------------------------------------------------------------
# Middleware: plain ASGI, outermost first


class Guard:
    """Request size limit, an access log that names routes not paths, and one-line 500s.

    A body larger than `max_body_bytes` (by its Content-Length, or as it arrives) is refused
    with 413 before the app reads it. Each request is logged as `METHOD route status ms
    version`: the route template (`/v1/people/{id_type}/{id}`), never the path or query, so no
    identifier reaches a log. An exception the app did not turn into an answer becomes a
    one-line 500 (its type and first line logged, no traceback).
    """

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = {"status": None, "version": "-"}

        async def send_logged(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                for key, value in message.get("headers", []):
                    if key.decode("latin-1").lower() == VERSION_HEADER.lower():
                        state["version"] = value.decode("latin-1")
            await send(message)

        try:
            receive = await self._limit(scope, receive, send_logged)
            if receive is not None:
                await self.app(scope, receive, send_logged)
        except Exception as e:
            log.error("internal error: %s", masked(e))
            if state["status"] is None:
                await _send_json(
                    send_logged,
                    500,
                    error_body(500, "InternalError", "an internal error; see the server log."),
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _known_prefix(scope.get("path", ""))
            access_log.info(
                "%s %s %s %.1fms %s",
                scope.get("method", "-"),
                template,
                state["status"],
                (time.perf_counter() - started) * 1000,
                state["version"],
            )

    async def _limit(self, scope: Scope, receive: Receive, send: Send) -> Receive | None:
        """The request's `receive`, its body read up to the limit (None when refused)."""
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            return receive
        limit = self.max_body_bytes
        too_large = error_body(
            413, "PayloadTooLarge", f"the request body is over the limit of {limit:,} bytes."
        )
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit or declared < 0:
                    await _send_json(send, 413, too_large)
                    return None
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await _send_json(send, 413, too_large)
                return None
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return replay


def masked(e: BaseException) -> str:
    """An exception as one log line: its type and first line, runs of 7+ digits masked (a
    message must never carry a phone into the log)."""
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {_DIGITS.sub('<digits>', first)[:300]}"


def _known_prefix(path: str) -> str:
    """What the access log shows of a path that matched no route: the docs' paths as they are,
    anything else as `(unmatched)` (it may hold an identifier)."""
    return path if path in ("/docs", "/openapi.json", "/redoc", "/") else "(unmatched)"


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = _dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


# ---------------------------------------------------------------------------------------------
# Request bodies


class PreviewRequest(BaseModel):
    """A named pack or an ad-hoc filter (one of the two)."""

    pack: str | None = Field(default=None, max_length=80, description="a pack in audiences.toml")
    where: str | None = Field(
        default=None,
        description="an SQL boolean expression over tag columns, e.g. "
        "`frequency_52w >= 3 AND NOT is_coupon_hunter`",
    )

    model_config = {"extra": "forbid"}


# ---------------------------------------------------------------------------------------------
# The app


def create_app(settings: ServeSettings, holder: LiveHolder | None = None) -> FastAPI:
    """The app serving `settings.workspace`'s live table through `holder` (default: a new
    `LiveHolder` over the shipped audiences, polling every `settings.poll_seconds`)."""
    layout = Layout(settings.workspace)
    holder = holder or LiveHolder(layout, poll_seconds=settings.poll_seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # type: ignore[no-untyped-def]
        holder.check()
        if holder.current is None:
            log.warning("live table: none yet in %s; waiting for `segments refresh`", layout.root)
        holder.start()
        try:
            yield
        finally:
            holder.stop()

    app = FastAPI(
        title="segments",
        version=API_VERSION,
        summary="People, tags and audience packs over the live table of a segments workspace.",
        default_response_class=JSONLine,
        lifespan=lifespan,
    )
    app.state.holder = holder
    app.state.settings = settings

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONLine:
        return error_response(e.status, e.kind, e.message, e.headers)

    @app.exception_handler(SegmentsError)
    async def _segments_error(request: Request, e: SegmentsError) -> JSONLine:
        return error_response(_status_of(e), type(e).__name__, str(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, e: StarletteHTTPException) -> JSONLine:
        if e.status_code == 404:
            message = "no such endpoint; the endpoints are listed at /docs."
        elif e.status_code == 405:
            message = "this endpoint does not take that method; see /docs."
        else:
            message = str(e.detail)
        kind = "NotFound" if e.status_code == 404 else "HTTPError"
        return error_response(e.status_code, kind, message)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONLine:
        # the answer; `Guard` logs the error as one line (Starlette re-raises it there)
        return error_response(500, "InternalError", "an internal error; see the server log.")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONLine:
        problems = [
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg', 'invalid')}"
            for err in e.errors()
        ]  # never the input: it may be an identifier
        return error_response(422, "InvalidRequest", "; ".join(problems) + ".")

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        if settings.token is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if credentials is None:
            raise ApiError(
                401,
                "Unauthorized",
                "a bearer token is required: send `Authorization: Bearer <token>`.",
                challenge,
            )
        if not token_matches(credentials.credentials, settings.token):
            raise ApiError(401, "Unauthorized", "the bearer token is not valid.", challenge)

    def snapshot() -> Snapshot:
        """The request's one snapshot: every answer comes from it alone."""
        snap = holder.current
        if snap is None:
            raise ApiError(
                503,
                "NoLiveTable",
                f"no live table yet in the workspace; run `segments refresh` "
                f"(picked up within {settings.poll_seconds:g}s, no restart).",
            )
        return snap

    def answer(snap: Snapshot, body: dict[str, Any], status: int = 200) -> JSONLine:
        return JSONLine(body, status_code=status, headers={VERSION_HEADER: snap.version})

    v1 = APIRouter(prefix=f"/{API_VERSION}", dependencies=[Depends(authorized)])

    @v1.get("/health", summary="Health and freshness")
    def health() -> JSONLine:
        """The latest built week, the live version in force and its as-of, the newest input
        row's age now and the data's age at the refresh. 503 before the first refresh."""
        built = layout.built_weeks()
        snap = holder.current
        body: dict[str, Any] = {
            "built_week": built[-1] if built else None,
            "pointer": layout.live_version(),
            "last_error": holder.last_error,
        }
        if snap is None:
            body["status"] = "no_live_table"
            return JSONLine(body, status_code=503)
        m = snap.manifest
        newest = m.get("newest_row")
        age = None
        if newest:
            now = wall_clock_now(settings.timezone)
            age = round((now - datetime.fromisoformat(newest)).total_seconds(), 3)
        body |= {
            "status": "ok",
            "version": snap.version,
            "as_of": snap.as_of,
            "based_on_week": m.get("based_on_week"),
            "people": snap.people,
            "newest_row": newest,
            "newest_row_age_seconds": age,
            "refreshed_at": m.get("refreshed_at"),
            "data_age_at_refresh_seconds": m.get("data_age_seconds"),
            "fresh": age is not None and age <= settings.max_age_seconds,
            "max_age_seconds": settings.max_age_seconds,
            "loaded_at": datetime.fromtimestamp(snap.loaded_at).isoformat(timespec="seconds"),
            "load_seconds": snap.load_seconds,
        }
        return answer(snap, body)

    @v1.get("/people/{id_type}/{id:path}", summary="One person by any identifier")
    def person(id_type: str, id: str) -> JSONLine:
        """One person: one_id, cluster, the packs they are in (and held out of) and every tag.

        `id_type`: `one_id`, `phone` (any form: `13800138000`, `+86 138 0013 8000`,
        `138-0013-8000`; normalised and hashed at once, never echoed or logged), or an id type
        of the identity map (`openid`, `unionid`, `phone_sha256`, `member_id`, ...)."""
        snap = snapshot()
        if id_type not in LOOKUP_TYPES:
            raise ApiError(
                400,
                "UnknownIdType",
                f"people: unknown id type {id_type!r}; known: {', '.join(LOOKUP_TYPES)}.",
            )
        if not id or len(id) > settings.max_id_chars:
            raise ApiError(
                400,
                "InvalidIdentifier",
                f"people: the identifier must be 1 to {settings.max_id_chars} characters.",
            )
        if id_type == "phone":
            key = phone_key(id)
            del id  # the raw phone goes no further
            if key is None:
                raise ApiError(
                    400,
                    "InvalidPhone",
                    "people: the phone is not an 11-digit mainland mobile number (1[3-9] and "
                    "9 digits, optionally +86 / 0086, spaces or dashes).",
                )
            id_type, id = "phone_sha256", key
        forms = [id] if id_type in (ONE_ID, "phone_sha256") else id_forms(id_type, id)
        row = next((r for r in (snap.row_of(id_type, f) for f in forms) if r is not None), None)
        if row is None:
            shown = "phone" if id_type == "phone_sha256" else id_type
            raise ApiError(
                404,
                "PersonNotFound",
                f"people: nobody with that {shown} in live version {snap.version}.",
                {VERSION_HEADER: snap.version},
            )
        return answer(snap, snap.person(row))

    @v1.get("/tags", summary="The tag dictionary")
    def tags() -> JSONLine:
        """Every tag: name, family, dtype, unit, Chinese label, description, sources, window,
        what null means, and whether the live table has the column."""
        snap = snapshot()
        return answer(snap, {"version": snap.version, "tags": snap.dictionary})

    @v1.get("/packs", summary="The named packs")
    def packs() -> JSONLine:
        """The packs of audiences.toml with their rule and platforms, and how many people each
        selects in this version (or why it cannot be selected)."""
        snap = snapshot()
        out = []
        for summary in pack_summaries(snap.packs):
            name = summary["name"]
            if name in snap.selections:
                summary["count"] = snap.selections[name].counts["final"]
            else:
                summary["error"] = str(snap.pack_errors[name]).splitlines()[0]
            out.append(summary)
        return answer(snap, {"version": snap.version, "as_of": snap.as_of, "packs": out})

    @v1.get("/packs/{name}/preview", summary="Preview a named pack")
    def pack_preview(name: str) -> JSONLine:
        """Counts per selection step (opted-out people are always removed) and breakdowns by
        cluster, primary interest, lifecycle stage and source."""
        snap = snapshot()
        return answer(snap, snap.preview_pack(name))

    @v1.post("/preview", summary="Preview a named pack or a `where` filter")
    def preview(body: PreviewRequest) -> JSONLine:
        """`{"pack": "high_value"}` or `{"where": "frequency_52w >= 3"}`: counts and
        breakdowns, with the same safe filter compiler as `segments audience preview`."""
        snap = snapshot()
        if (body.pack is None) == (body.where is None):
            raise ApiError(400, "InvalidRequest", "preview: give `pack` or `where`, not both.")
        if body.pack is not None:
            return answer(snap, snap.preview_pack(body.pack))
        assert body.where is not None
        if len(body.where) > settings.max_filter_chars:
            raise ApiError(
                400,
                "FilterTooLong",
                f"where: the filter is {len(body.where):,} characters long (at most "
                f"{settings.max_filter_chars:,}).",
            )
        return answer(snap, snap.preview_where(body.where))

    @v1.get("/packs/{name}/platforms/{platform}", summary="A pack for a platform: its manifest")
    def pack_manifest(name: str, platform: str, request: Request) -> JSONLine:
        """The pack exported for `platform` from this live version: the refresh's export when
        it made one, else built now (once per version). The manifest lists each file with
        its size, digests and the URL to download it. Opted-out people are never in a pack."""
        snap = snapshot()
        found = pack_export(layout, snap, name, platform, settings.export_options)
        base = f"/{API_VERSION}/packs/{name}/platforms/{platform}/files/{snap.version}"
        return answer(
            snap,
            {
                "pack": name,
                "platform": platform,
                "version": snap.version,
                "as_of": snap.as_of,
                "source": found.source,
                "files": [{"path": f, "url": f"{base}/{f}"} for f in found.files()],
                "manifest": found.manifest,
            },
        )

    @v1.get(
        "/packs/{name}/platforms/{platform}/files/{version}/{file:path}",
        summary="A pack for a platform: one of its files",
        response_class=FileResponse,
    )
    def pack_file(name: str, platform: str, version: str, file: str) -> FileResponse:
        """One file the manifest lists, streamed. `version` is the one the manifest named:
        a file of the version before the one in force can still be fetched; 410 once a
        refresh removed it (ask for the manifest again)."""
        if not _VERSION.match(version):
            raise ApiError(400, "InvalidVersion", "version must look like v000042.")
        found = find_export(layout, name, platform, version)
        if found is None:
            raise ApiError(
                410,
                "VersionGone",
                f"pack '{name}' {platform}: no export of live version {version} is kept; "
                "ask for the manifest again.",
            )
        if file not in found.files():
            raise ApiError(404, "FileNotFound", f"pack '{name}' {platform}: no such file.")
        return FileResponse(
            found.folder / file,
            filename=Path(file).name,
            headers={VERSION_HEADER: version},
        )

    app.include_router(v1)
    return app


def asgi_app(settings: ServeSettings, holder: LiveHolder | None = None) -> Guard:
    """The app wrapped in the request-size limit and the access log (what uvicorn runs)."""
    return Guard(create_app(settings, holder), settings.max_body_bytes)


__all__ = ["API_VERSION", "ApiError", "ServeSettings", "asgi_app", "create_app"]
