"""The HTTP adapter: a FastAPI app over a :class:`ServingService`.

- ``POST /get-online-features``: Feast's JSON shape (``serving/_json.py``).
- ``GET /health``: ``{"status": "ok", "version": ...}`` while the process serves (liveness; a
  store that is down shows as 503 on reads, not here).
- ``GET /metrics``: Prometheus text (``serving/metrics.py``).

Every error has one JSON shape, ``{"error": {"code": ..., "message": ...}}``, with the HTTP
status from :data:`HTTP_STATUS_BY_CODE`. The adapter only converts and maps errors.

``POST /get-online-features`` is answered by a plain ASGI layer in front of FastAPI's routing
(:class:`_ReadEndpoint`): routing, the request object and dependency solving cost about 75 µs a
request, as much as the Redis read of one key. Everything else (other routes, other methods on
that path, unknown routes) goes through FastAPI as usual.
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

from potluck.errors import PotluckError, ValidationError
from potluck.serving._json import parse_request, response_to_json
from potluck.serving.metrics import CONTENT_TYPE, ServingMetrics
from potluck.serving.service import ServingService

logger = logging.getLogger(__name__)

HTTP_STATUS_BY_CODE: Mapping[str, int] = {
    "invalid_argument": 422,
    "invalid_feature_ref": 422,
    "invalid_data": 422,
    "invalid_definition": 422,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "unavailable": 503,
    "transient": 503,
}
"""Error code to HTTP status; any other code is 500."""

_JSON = "application/json"
_READ_PATH = "/get-online-features"
_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _error_body(code: str, message: str) -> tuple[int, bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return HTTP_STATUS_BY_CODE.get(code, 500), body


def error_response(code: str, message: str) -> Response:
    """Return the canonical error envelope for ``code`` with its mapped HTTP status."""
    status, body = _error_body(code, message)
    return Response(body, status_code=status, media_type=_JSON)


async def _send(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _ReadEndpoint:
    """``/get-online-features`` as plain ASGI (POST, else 405); other paths go on to ``app``."""

    def __init__(self, app: ASGIApp, service: ServingService, metrics: ServingMetrics) -> None:
        self.app = app
        self._service = service
        self._metrics = metrics
        self._latency = metrics.latency(f"http:{_READ_PATH}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != _READ_PATH:
            await self.app(scope, receive, send)
            return
        if scope["method"] != "POST":
            status, body = _error_body("method_not_allowed", "Method Not Allowed")
            await _send(send, status, body, [(b"allow", b"POST")])
            return
        chunks = []
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        start = time.perf_counter()
        status, body = self._answer(b"".join(chunks))
        self._latency.observe(time.perf_counter() - start)
        await _send(send, status, body, [])

    def _answer(self, body: bytes) -> tuple[int, bytes]:
        try:
            request = parse_request(_loads(body))
            response = self._service.get_online_features(
                request.features,
                request.entities,
                full_feature_names=request.full_feature_names,
            )
            return 200, json.dumps(response_to_json(response), separators=(",", ":")).encode()
        except PotluckError as exc:
            self._metrics.error(f"http:{_READ_PATH}", exc.code)
            return _error_body(exc.code, exc.message)
        except Exception as exc:
            logger.exception("get-online-features failed")
            self._metrics.error(f"http:{_READ_PATH}", "internal")
            return _error_body("internal", f"internal error: {type(exc).__name__}: {exc}")


def create_app(service: ServingService, metrics: ServingMetrics, *, version: str) -> FastAPI:
    """Return the FastAPI app serving ``service``.

    Args:
        service: The service that answers reads.
        metrics: Where latencies and errors are recorded, and what ``/metrics`` renders.
        version: What ``/health`` reports.
    """
    app = FastAPI(title="potluck online serving", version=version, docs_url=None, redoc_url=None)
    app.add_middleware(_ReadEndpoint, service=service, metrics=metrics)
    health_latency = metrics.latency("http:/health")
    metrics_latency = metrics.latency("http:/metrics")
    health_body = json.dumps({"status": "ok", "version": version})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(_STARLETTE_CODES.get(exc.status_code, "internal"), str(exc.detail))

    @app.get("/health")
    async def health() -> Response:
        start = time.perf_counter()
        response = Response(health_body, media_type=_JSON)
        health_latency.observe(time.perf_counter() - start)
        return response

    @app.get("/metrics")
    async def prometheus() -> Response:
        start = time.perf_counter()
        response = Response(metrics.render(), media_type=CONTENT_TYPE)
        metrics_latency.observe(time.perf_counter() - start)
        return response

    return app


def _loads(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}", field="body") from None


__all__ = ["HTTP_STATUS_BY_CODE", "create_app", "error_response"]
