"""The OpenAPI document of the HTTP API (``GET /openapi.json``), written from the real shapes.

``POST /get-online-features`` is answered by a plain ASGI layer in front of FastAPI's routing
(``serving/http.py``), so FastAPI cannot describe it; this module describes every path from
pydantic models of the JSON that ``serving/_json.py`` reads and writes, with each status the
server answers and the one error envelope. ``tests/integration/test_serving_fuzz.py`` checks
real responses against it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from potluck.serving.metrics import CONTENT_TYPE

READ_PATH = "/get-online-features"
"""The path of the online read."""

READY_PATH = "/health"
"""Readiness: 200 while the online store answers, else 503."""

LIVE_PATH = "/health/live"
"""Liveness: 200 while the process serves."""

_REF = "#/components/schemas/{model}"
_JSON = "application/json"

EntityValue = Annotated[
    int | float | str | bool,
    Field(description="A JSON number, string or boolean (BYTES and UNIX_TIMESTAMP: use gRPC)."),
]
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
StatusName = Literal["PRESENT", "NULL_VALUE", "NOT_FOUND", "OUTSIDE_MAX_AGE"]


class GetOnlineFeaturesRequest(BaseModel):
    """An online read: feature references and columnar entity rows (Feast's JSON shape)."""

    model_config = ConfigDict(extra="forbid")

    features: list[str] = Field(
        min_length=1,
        description="Feature references: 'table:feature', 'project/table:feature', 'table:*'.",
        examples=[["driver_stats:conv_rate", "driver_stats:trips"]],
    )
    entities: dict[str, Annotated[list[EntityValue], Field(min_length=1)]] = Field(
        min_length=1,
        description="Each entity's values, one per entity row; every column the same length.",
        examples=[{"driver_id": [1001, 1002]}],
    )
    full_feature_names: bool = Field(
        default=False, description="Name feature columns 'table__feature' (else 'feature')."
    )


class FeatureVector(BaseModel):
    """One response column: a value, status and event time per entity row."""

    values: list[Any] = Field(
        description="The values (null unless PRESENT); bytes as base64, timestamps as RFC 3339, "
        "non-finite floats as 'NaN', 'Infinity', '-Infinity'."
    )
    statuses: list[StatusName]
    event_timestamps: list[Timestamp] = Field(
        description="RFC 3339 UTC; the epoch for entity columns and keys not found."
    )


class ResponseMetadata(BaseModel):
    """The response's column names, entity columns first."""

    feature_names: list[str]


class GetOnlineFeaturesResponse(BaseModel):
    """One column per entity, then one per requested feature."""

    metadata: ResponseMetadata
    results: list[FeatureVector]


class ErrorDetail(BaseModel):
    """What went wrong: a stable code and a message that says what to do."""

    code: str = Field(examples=["invalid_feature_ref"])
    message: str


class ErrorResponse(BaseModel):
    """The one error envelope of every failed request."""

    error: ErrorDetail


class Health(BaseModel):
    """The answer of ``/health`` (ready) and ``/health/live`` (live)."""

    status: Literal["ok"]
    version: str


_READ_ERRORS = {
    "400": "The body is not UTF-8 JSON, is nested too deeply to parse, or holds a lone "
    "surrogate (`malformed_body`).",
    "413": "The body is larger than the server's `--max-request-bytes` (`body_too_large`).",
    "415": "The Content-Type header is missing, is not application/json, or names a charset "
    "other than UTF-8 (`unsupported_media_type`).",
    "422": "The JSON is not a valid read: wrong shape, an unknown or malformed feature "
    "reference, missing or unknown entities, values of the wrong type, too many rows.",
    "503": "The online store (or the registry) cannot be reached (`unavailable`).",
}


def _content(model: type[BaseModel], media_type: str = _JSON) -> dict[str, Any]:
    return {media_type: {"schema": {"$ref": _REF.format(model=model.__name__)}}}


def openapi_document(*, title: str, version: str) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of the serving HTTP API.

    Args:
        title: The API's title.
        version: The server's version.
    """
    _, definitions = models_json_schema(
        [
            (GetOnlineFeaturesRequest, "validation"),
            (GetOnlineFeaturesResponse, "serialization"),
            (ErrorResponse, "serialization"),
            (Health, "serialization"),
        ],
        ref_template=_REF,
    )
    errors = {
        status: {"description": text, "content": _content(ErrorResponse)}
        for status, text in _READ_ERRORS.items()
    }
    read = {
        "summary": "Read the latest feature values of entity rows",
        "operationId": "get_online_features",
        "requestBody": {"required": True, "content": _content(GetOnlineFeaturesRequest)},
        "responses": {
            "200": {"description": "The values.", "content": _content(GetOnlineFeaturesResponse)},
            **errors,
        },
    }
    ready = {
        "summary": "Readiness: answers 200 while the online store answers a ping",
        "operationId": "health",
        "responses": {
            "200": {"description": "Ready.", "content": _content(Health)},
            "503": {
                "description": "The online store does not answer (`unavailable`); the message "
                "names it. Checked at most once a second.",
                "content": _content(ErrorResponse),
            },
        },
    }
    live = {
        "summary": "Liveness: answers while the process serves, whatever the store",
        "operationId": "health_live",
        "responses": {"200": {"description": "Serving.", "content": _content(Health)}},
    }
    metrics = {
        "summary": "Prometheus metrics of this process",
        "operationId": "metrics",
        "responses": {
            "200": {
                "description": "Prometheus text exposition format.",
                "content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {
            READ_PATH: {"post": read},
            READY_PATH: {"get": ready},
            LIVE_PATH: {"get": live},
            "/metrics": {"get": metrics},
        },
        "components": {"schemas": definitions["$defs"]},
    }


__all__ = [
    "LIVE_PATH",
    "READY_PATH",
    "READ_PATH",
    "ErrorResponse",
    "GetOnlineFeaturesRequest",
    "GetOnlineFeaturesResponse",
    "Health",
    "openapi_document",
]
