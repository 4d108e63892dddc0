"""The HTTP adapter: a FastAPI app over a :class:`ServingService`.

- ``POST /get-online-features``: Feast's JSON shape (``serving/_json.py``).
- ``GET /health``: ``{"status": "ok", "version": ...}`` while the process serves (liveness; a
  store that is down shows as 503 on reads, not here).
- ``GET /metrics``: Prometheus text (``serving/metrics.py``).

Every error has one JSON shape, ``{"error": {"code": ..., "message": ...}}``, with the HTTP
status from :data:`HTTP_STATUS_BY_CODE`. The adapter only converts and maps errors.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
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
_STARLETTE_CODES = {404: "not_found", 405: "method_not_allowed"}


def error_response(code: str, message: str) -> Response:
    """Return the canonical error envelope for ``code`` with its mapped HTTP status."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return Response(body, status_code=HTTP_STATUS_BY_CODE.get(code, 500), media_type=_JSON)


def create_app(service: ServingService, metrics: ServingMetrics, *, version: str) -> FastAPI:
    """Return the FastAPI app serving ``service``.

    Args:
        service: The service that answers reads.
        metrics: Where latencies and errors are recorded, and what ``/metrics`` renders.
        version: What ``/health`` reports.
    """
    app = FastAPI(title="potluck online serving", version=version, docs_url=None, redoc_url=None)
    read_latency = metrics.latency("http:/get-online-features")
    health_latency = metrics.latency("http:/health")
    metrics_latency = metrics.latency("http:/metrics")
    health_body = json.dumps({"status": "ok", "version": version})

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return error_response(_STARLETTE_CODES.get(exc.status_code, "internal"), str(exc.detail))

    @app.post("/get-online-features")
    async def get_online_features(http_request: Request) -> Response:
        start = time.perf_counter()
        try:
            request = parse_request(_loads(await http_request.body()))
            response = service.get_online_features(
                request.features,
                request.entities,
                full_feature_names=request.full_feature_names,
            )
            payload = json.dumps(response_to_json(response), separators=(",", ":"))
            return Response(payload, media_type=_JSON)
        except PotluckError as exc:
            metrics.error("http:/get-online-features", exc.code)
            return error_response(exc.code, exc.message)
        except Exception as exc:
            logger.exception("get-online-features failed")
            metrics.error("http:/get-online-features", "internal")
            return error_response("internal", f"internal error: {type(exc).__name__}: {exc}")
        finally:
            read_latency.observe(time.perf_counter() - start)

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
