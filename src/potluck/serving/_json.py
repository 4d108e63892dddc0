"""The JSON shapes of ``POST /get-online-features`` (Feast's feature-server shape).

Request: ``{"features": ["table:feature", ...], "entities": {"driver_id": [1001]},
"full_feature_names": false}``. Response: ``{"metadata": {"feature_names": [...]}, "results":
[{"values": [...], "statuses": ["PRESENT", ...], "event_timestamps": ["...Z", ...]}]}``, one
result per column, entity columns first. Bytes travel as base64, timestamps as RFC 3339 UTC
strings (the epoch for entity columns and keys not found, as in Feast), and non-finite floats
as ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``.

:func:`loads` turns a body into JSON values or raises :class:`MalformedBody` (HTTP 400): the
body must be UTF-8 JSON that Python's parser can nest (it stops with ``RecursionError`` near
1,000 levels; a request needs 3) and free of lone surrogates (the escape of half a UTF-16
pair parses in Python, but no store or database can encode it).
"""

from __future__ import annotations

import base64
import json
import math
import re
import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from potluck.errors import ValidationError
from potluck.serving.response import OnlineResponse

_EPOCH_TEXT = "1970-01-01T00:00:00Z"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_REPR = reprlib.Repr()
_REPR.maxstring = 80


class MalformedBody(Exception):
    """The request body is not JSON potluck can read (not UTF-8, not JSON, too deep...).

    Attributes:
        message: What is wrong and what to send instead.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def loads(body: bytes) -> Any:
    """Return the JSON value of a request body.

    Raises:
        MalformedBody: If the body is not UTF-8, not JSON, nested too deeply to parse, or
            holds a lone surrogate; the message says where.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(
            f"the request body is not UTF-8: byte {exc.start} is {body[exc.start]:#04x}; "
            "send JSON encoded as UTF-8"
        ) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise MalformedBody(
            "the request body nests arrays and objects too deeply to parse (about 1,000 levels "
            'or more); a request needs 3: {"features": [...], "entities": {"driver_id": [...]}}'
        ) from None
    except ValueError as exc:
        raise MalformedBody(f"the request body is not valid JSON: {exc}") from None
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        where = _lone_surrogate(value)
        if where is not None:
            raise MalformedBody(
                f"the request body holds a lone surrogate (a \\ud800-\\udfff escape that is "
                f"not half of a pair) in {where}; JSON strings must be valid Unicode"
            )
    return value


def _lone_surrogate(value: Any) -> str | None:
    """Return where ``value`` holds a lone surrogate, or ``None``.

    Places read ``$.entities.driver_id[0]`` or ``a key of $.entities``. Iterative, since the
    value may nest about 1,000 levels deep.
    """
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key in item:
                if _SURROGATE.search(key):
                    return f"a key of {path}"
            stack.extend((v, f"{path}.{k}") for k, v in reversed(list(item.items())))
    return None


@dataclass(frozen=True)
class OnlineRequest:
    """A parsed ``POST /get-online-features`` body."""

    features: list[str]
    entities: dict[str, list[Any]]
    full_feature_names: bool


def parse_request(body: Any) -> OnlineRequest:
    """Check and unpack a request body.

    Raises:
        ValidationError: If the body is not of the documented shape; ``field`` names the part.
    """
    if not isinstance(body, dict):
        raise ValidationError(
            "the request body must be a JSON object with 'features' and 'entities'", field="body"
        )
    unknown = sorted(set(body) - {"features", "entities", "full_feature_names"})
    if "feature_service" in body:
        raise ValidationError(
            "feature services are not supported; list the features in 'features'",
            field="feature_service",
        )
    if unknown:
        raise ValidationError(
            f"unknown field {_REPR.repr(unknown[0])} in the request body; expected "
            "'features', 'entities' and 'full_feature_names'",
            field=unknown[0],
        )
    features = body.get("features")
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        raise ValidationError(
            "'features' must be a list of feature references such as 'driver_stats:conv_rate'",
            field="features",
        )
    entities = body.get("entities")
    if not isinstance(entities, dict) or not all(isinstance(v, list) for v in entities.values()):
        raise ValidationError(
            "'entities' must map each entity name to a list of values, e.g. "
            "{'driver_id': [1001, 1002]}",
            field="entities",
        )
    full = body.get("full_feature_names", False)
    if not isinstance(full, bool):
        raise ValidationError(
            "'full_feature_names' must be true or false", field="full_feature_names"
        )
    return OnlineRequest(features=features, entities=entities, full_feature_names=full)


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return _rfc3339(value)
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


_PLAIN = (int, str, bool)


def _json_column(values: Sequence[Any]) -> list[Any]:
    return [v if v is None or type(v) in _PLAIN else _json_value(v) for v in values]


def _rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    text = value.astimezone(timezone.utc).isoformat(timespec="microseconds")
    return text.replace("+00:00", "Z").replace(".000000Z", "Z")


def _timestamps(event_us: Sequence[int | None]) -> list[str]:
    out = []
    for us in event_us:
        if us is None:
            out.append(_EPOCH_TEXT)
        else:
            out.append(_rfc3339(_EPOCH + timedelta(microseconds=us)))
    return out


def response_to_json(response: OnlineResponse) -> dict[str, Any]:
    """Return the JSON-ready dict of ``response``."""
    timestamps: dict[int, list[str]] = {}
    results = []
    for values, statuses, event_us in zip(
        response.values, response.field_statuses, response.event_us, strict=True
    ):
        ts = timestamps.get(id(event_us))
        if ts is None:
            ts = timestamps[id(event_us)] = _timestamps(event_us)
        results.append(
            {
                "values": _json_column(values),
                "statuses": [s.name for s in statuses],
                "event_timestamps": ts,
            }
        )
    return {"metadata": {"feature_names": list(response.names)}, "results": results}


__all__ = ["MalformedBody", "OnlineRequest", "loads", "parse_request", "response_to_json"]
