"""The HTTP adapter: a FastAPI app over a :class:`ServingService`.

- ``POST /get-online-features``: Feast's JSON shape (``serving/_json.py``).
- ``GET /health``: readiness: ``{"status": "ok", "version": ...}`` while the online store
  answers a ping, else 503 with the error envelope naming the store (``serving/health.py``:
  one ping a second at most, with a short timeout).
- ``GET /health/live``: liveness: ``{"status": "ok", "version": ...}`` while the process serves,
  whatever the store.
- ``GET /metrics``: Prometheus text (``serving/metrics.py``).
- ``GET /openapi.json``: the OpenAPI document of the above (``serving/_openapi.py``).

Every error has one JSON shape, ``{"error": {"code": ..., "message": ...}}``, with the HTTP
status from :data:`HTTP_STATUS_BY_CODE`. The adapter only converts and maps errors.

``POST /get-online-features`` is answered by a plain ASGI layer in front of FastAPI's routing
(:class:`_ReadEndpoint`): routing, the request object and dependency solving cost about 75 µs a
request, as much as the Redis read of one key. Everything else (other routes, other methods on
that path, unknown routes) goes through FastAPI as usual.

Hostile input gets a 4xx, never a 500, and one log line (only a bug logs a traceback): a body
over the limit is refused with 413 before it is read (from its ``Content-Length``, or as soon as
the chunks read pass the limit) and the connection is closed, so the rest is never buffered; a
``Content-Type`` other than ``application/json``, one that names a charset other than UTF-8, or
none at all gets 415 (curl's ``-d`` sends ``application/x-www-form-urlencoded``: pass ``-H
'Content-Type: application/json'``); a body that is not UTF-8 JSON, nests too deeply to parse or
holds a lone surrogate gets 400. Messages are cut to 1,000 bytes, since they echo what
the client sent.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from potluck.auth.authenticator import Authenticator
from potluck.auth.denials import OnRefusal
from potluck.auth.http import AuthMiddleware
from potluck.auth.settings import AuthSettings
from potluck.errors import PotluckError
from potluck.registry._edge import log_line, shorten
from potluck.serving._json import MalformedBody, loads, parse_request, response_to_json
from potluck.serving._openapi import LIVE_PATH, READ_PATH, READY_PATH, openapi_document
from potluck.serving.health import StoreHealth
from potluck.serving.metrics import CONTENT_TYPE, ServingMetrics
from potluck.serving.service import DEFAULT_MAX_REQUEST_BYTES, ServingService

logger = logging.getLogger(__name__)

HTTP_STATUS_BY_CODE: Mapping[str, int] = {
    "malformed_body": 400,
    "body_too_large": 413,
    "unsupported_media_type": 415,
    "invalid_argument": 422,
    "invalid_feature_ref": 422,
    "invalid_data": 422,
    "invalid_definition": 422,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "unavailable": 503,
    "transient": 503,
}
"""Error code to HTTP status; any other code is 500."""

_JSON = "application/json"
_NO_CONTENT_TYPE = (
    "the request has no Content-Type header; send the request body as JSON with "
    "'Content-Type: application/json'"
)
_UTF8_NAMES = frozenset({"utf-8", "utf8"})
_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}
_CLOSE = [(b"connection", b"close")]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error_body(code: str, message: str) -> tuple[int, bytes]:
    body = json.dumps({"error": {"code": code, "message": shorten(message)}}).encode()
    return HTTP_STATUS_BY_CODE.get(code, 500), body


def error_response(code: str, message: str) -> Response:
    """Return the canonical error envelope for ``code`` with its mapped HTTP status."""
    status, body = _error_body(code, message)
    return Response(body, status_code=status, media_type=_JSON)


def _log_rejected(scope: Scope, status: int, code: str, message: str) -> None:
    client = scope.get("client")
    peer = f"{client[0]}:{client[1]}" if client else "unknown client"
    logger.warning(
        "rejected %s %s from %s: %d %s: %s",
        scope.get("method"),
        log_line(str(scope.get("path"))),  # a client's: "%0A" arrives as a newline
        peer,
        status,
        code,
        log_line(message),
    )


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refuse_content_type(value: bytes) -> str | None:
    """Return why a ``Content-Type`` header value is refused, or ``None`` if it is JSON in UTF-8.

    The media type must be ``application/json`` (any case). JSON is UTF-8 (RFC 8259), so a
    ``charset`` parameter, if there is one, must name UTF-8 (``utf-8`` or ``utf8``, any case,
    quoted or not); any other charset is refused rather than read as UTF-8. Other parameters are
    ignored. (A fixed set of names, not :func:`codecs.lookup`: its cache keeps every unknown name
    a client sends.)
    """
    shown = value.decode("latin-1")
    media, *params = shown.split(";")
    if media.strip().lower() != _JSON:
        return (
            f"unsupported Content-Type {shown!r}; send the request body as JSON with "
            "'Content-Type: application/json'"
        )
    for param in params:
        key, _, charset = param.partition("=")
        charset = charset.strip().strip('"')
        if key.strip().lower() == "charset" and charset.lower() not in _UTF8_NAMES:
            return (
                f"unsupported charset {charset!r} in Content-Type {shown!r}: JSON is UTF-8 "
                "(RFC 8259); send the request body encoded as UTF-8, with 'Content-Type: "
                "application/json' or 'application/json; charset=utf-8'"
            )
    return None


class _ReadEndpoint:
    """``/get-online-features`` as plain ASGI (POST, else 405); other paths go on to ``app``."""

    def __init__(
        self, app: ASGIApp, service: ServingService, metrics: ServingMetrics, max_body: int
    ) -> None:
        self.app = app
        self._service = service
        self._metrics = metrics
        self._max_body = max_body
        self._latency = metrics.latency(f"http:{READ_PATH}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != READ_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            await self._reject(scope, send, "method_not_allowed", "Method Not Allowed", allow=True)
            return
        refused = self._check_headers(scope["headers"])
        if refused is not None:
            await self._reject(scope, send, *refused)
            return
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self._max_body:
                await self._reject(scope, send, "body_too_large", self._too_large(None))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        start = time.perf_counter()
        status, body, code, error = self._answer(b"".join(chunks))
        self._latency.observe(time.perf_counter() - start)
        if code is not None:
            _log_rejected(scope, status, code, error)
        await _send(send, status, body, [])

    def _check_headers(self, headers: list[tuple[bytes, bytes]]) -> tuple[str, str] | None:
        """Return the error code and message that refuse the request from its headers alone."""
        typed = False
        for name, value in headers:
            if name == b"content-type":
                typed = True
                refused = _refuse_content_type(value)
                if refused is not None:
                    return "unsupported_media_type", refused
            elif name == b"content-length" and value.isdigit() and int(value) > self._max_body:
                return "body_too_large", self._too_large(int(value))
        if not typed:
            return "unsupported_media_type", _NO_CONTENT_TYPE
        return None

    def _too_large(self, size: int | None) -> str:
        what = "is larger than" if size is None else f"is {size} bytes, more than"
        return (
            f"the request body {what} the limit of {self._max_body} bytes; send fewer entity "
            "rows per request, or raise the limit with potluck serve --max-request-bytes"
        )

    async def _reject(
        self, scope: Scope, send: Send, code: str, message: str, *, allow: bool = False
    ) -> None:
        """Answer an error without reading the body; close the connection, so it is never read.

        A 405 (``allow``) keeps the connection: requests of other methods carry no body.
        """
        self._metrics.error(f"http:{READ_PATH}", code)
        status, body = _error_body(code, message)
        _log_rejected(scope, status, code, message)
        await _send(send, status, body, [(b"allow", b"POST")] if allow else _CLOSE)

    def _answer(self, body: bytes) -> tuple[int, bytes, str | None, str]:
        """Return the status and body of the answer, and a client error's code and message."""
        try:
            request = parse_request(loads(body))
            response = self._service.get_online_features(
                request.features,
                request.entities,
                full_feature_names=request.full_feature_names,
            )
            payload = json.dumps(response_to_json(response), separators=(",", ":"))
            return 200, payload.encode(), None, ""
        except MalformedBody as exc:
            code, message = "malformed_body", exc.message
        except PotluckError as exc:
            code, message = exc.code, exc.message
        except Exception as exc:
            logger.exception("get-online-features failed")
            self._metrics.error(f"http:{READ_PATH}", "internal")
            status, error = _error_body("internal", f"internal error: {type(exc).__name__}: {exc}")
            return status, error, None, ""
        self._metrics.error(f"http:{READ_PATH}", code)
        status, error = _error_body(code, message)
        return status, error, code, message


class _App(FastAPI):
    """FastAPI whose OpenAPI document also describes the read path it does not route."""

    def openapi(self) -> dict[str, Any]:
        """Return the OpenAPI document (``serving/_openapi.py``), built once."""
        if self.openapi_schema is None:
            self.openapi_schema = openapi_document(title=self.title, version=self.version)
        return self.openapi_schema


def create_app(
    service: ServingService,
    metrics: ServingMetrics,
    *,
    version: str,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    health: StoreHealth | None = None,
    auth: AuthSettings | None = None,
    on_refusal: OnRefusal | None = None,
) -> FastAPI:
    """Return the FastAPI app serving ``service``.

    Args:
        service: The service that answers reads.
        metrics: Where latencies and errors are recorded, and what ``/metrics`` renders.
        version: What ``/health`` reports.
        max_request_bytes: The largest request body accepted; a larger one gets 413 before
            it is read.
        health: The readiness check ``/health`` answers from (the gRPC health service shares
            it); default: one of the service's online store.
        auth: With a token source, every path but ``/health/live`` needs a bearer token with
            ``read_online`` (:mod:`potluck.auth.http`); ``None``: open.
        on_refusal: Told of every request refused for its token (``potluck.auth.denials``).

    Raises:
        ConfigError: If the tokens file or the JWKS is invalid.
        UnavailableError: If the JWKS cannot be read.
    """
    readiness = health if health is not None else StoreHealth(service.online_store)
    app = _App(title="potluck online serving", version=version, docs_url=None, redoc_url=None)
    app.add_middleware(_ReadEndpoint, service=service, metrics=metrics, max_body=max_request_bytes)
    if auth is not None and auth.authenticates:  # added last: it runs first
        app.add_middleware(
            AuthMiddleware,
            authenticator=Authenticator.from_settings(auth),
            read_path=READ_PATH,
            default_project=service.project,
            max_body=max_request_bytes,
            on_refusal=on_refusal,
        )
    ready_latency = metrics.latency(f"http:{READY_PATH}")
    live_latency = metrics.latency(f"http:{LIVE_PATH}")
    metrics_latency = metrics.latency("http:/metrics")
    health_body = json.dumps({"status": "ok", "version": version})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        code = _STARLETTE_CODES.get(exc.status_code, "internal")
        response = error_response(code, str(exc.detail))
        response.headers.update(exc.headers or {})
        _log_rejected(request.scope, response.status_code, code, str(exc.detail))
        return response

    @app.get(READY_PATH)
    def ready() -> Response:  # not async: a ping may wait, in the thread pool, not the loop
        start = time.perf_counter()
        answer = readiness.check()
        if answer.ready:
            response = Response(health_body, media_type=_JSON)
        else:
            metrics.error(f"http:{READY_PATH}", "unavailable")
            response = error_response("unavailable", f"not ready: {answer.reason}")
        ready_latency.observe(time.perf_counter() - start)
        return response

    @app.get(LIVE_PATH)
    async def live() -> Response:
        start = time.perf_counter()
        response = Response(health_body, media_type=_JSON)
        live_latency.observe(time.perf_counter() - start)
        return response

    @app.get("/metrics")
    async def prometheus() -> Response:
        start = time.perf_counter()
        response = Response(metrics.render(), media_type=CONTENT_TYPE)
        metrics_latency.observe(time.perf_counter() - start)
        return response

    return app


__all__ = ["HTTP_STATUS_BY_CODE", "create_app", "error_response"]
