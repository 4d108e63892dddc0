"""The mapping between Python values and ``feast.types.Value`` protos, and response protos.

``UNIX_TIMESTAMP`` values travel as whole seconds since the epoch (``unix_timestamp_val``), as
in Feast; a null is an empty ``Value``. Event times travel as ``google.protobuf.Timestamp``
(the epoch for entity columns and keys that were not found, as in Feast).

Responses are built in place (``add()`` on repeated fields, never constructing a message and
copying it in), event times once per table, and columns of floats or doubles without nulls as
one block of bytes: building protos is most of a 100-entity response's cost.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, cast

import numpy as np

from potluck._proto.feast.serving import ServingService_pb2 as serving_pb
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.errors import ValidationError
from potluck.serving.response import OnlineResponse
from potluck.serving.status import FieldStatus
from potluck.types import ValueType

_VECTOR = serving_pb.GetOnlineFeaturesResponse.FeatureVector
_STATUS_BY_NUMBER = {int(s): s for s in FieldStatus}
_FIELD = {
    value_type: value_pb.Value.DESCRIPTOR.fields_by_number[value_type.value].name
    for value_type in ValueType
}
"""The ``Value`` oneof field of each value type (its field number is the type's number)."""
_TYPE_BY_FIELD = {field: value_type for value_type, field in _FIELD.items()}
_LIST_DEFAULTS: dict[ValueType, Any] = {
    ValueType.BYTES_LIST: b"",
    ValueType.STRING_LIST: "",
    ValueType.INT32_LIST: 0,
    ValueType.INT64_LIST: 0,
    ValueType.DOUBLE_LIST: 0.0,
    ValueType.FLOAT_LIST: 0.0,
    ValueType.BOOL_LIST: False,
    ValueType.UNIX_TIMESTAMP_LIST: 0,
}
_PACKED: dict[ValueType, tuple[bytes, str]] = {
    ValueType.DOUBLE: (b"\x0a\x09\x29", "<f8"),  # field 1, 9 bytes: double_val (5), fixed64
    ValueType.FLOAT: (b"\x0a\x05\x35", "<f4"),  # field 1, 5 bytes: float_val (6), fixed32
}
"""How a ``Value`` of a float or double is encoded inside a repeated field numbered 1."""
_PACKED_MIN_ROWS = 16
"""Below this many values, adding them one by one is cheaper than the numpy block."""
_MAX_CACHED_EPOCH_ROWS = 1_024


def _seconds(value: datetime | int) -> int:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return int(value.timestamp() // 1)
    return int(value)


def _add_values(parent: Any, field: str, values: Sequence[Any], value_type: ValueType) -> None:
    """Append one ``Value`` per Python value to ``parent``'s repeated field ``field`` (number 1)."""
    packed = _PACKED.get(value_type)
    if packed is not None and len(values) >= _PACKED_MIN_ROWS and None not in values:
        header, layout = packed
        block = np.empty(len(values), dtype=[("h", "S3"), ("v", layout)])
        block["h"] = header
        block["v"] = values
        parent.MergeFromString(block.tobytes())
        return
    add = getattr(parent, field).add
    name = _FIELD[value_type]
    if value_type.is_list:
        default = _LIST_DEFAULTS[value_type]
        stamps = value_type is ValueType.UNIX_TIMESTAMP_LIST
        for v in values:
            target = add()
            if v is not None:
                # A proto list cannot hold a null element: it travels as the zero value.
                items = [default if x is None else (_seconds(x) if stamps else x) for x in v]
                getattr(target, name).val.extend(items)
    elif value_type is ValueType.UNIX_TIMESTAMP:
        for v in values:
            target = add()
            if v is not None:
                target.unix_timestamp_val = _seconds(v)
    else:
        for v in values:
            target = add()
            if v is not None:
                setattr(target, name, v)


_PLAIN: dict[ValueType, Any] = {ValueType.BOOL: bool, ValueType.INT64: int, ValueType.DOUBLE: float}
"""Turn numpy scalars (from a DataFrame) into the Python values protos take."""


def _python_type(value: Any) -> ValueType:
    if isinstance(value, (bool, np.bool_)):
        return ValueType.BOOL
    if isinstance(value, numbers.Integral):
        return ValueType.INT64
    if isinstance(value, numbers.Real):
        return ValueType.DOUBLE
    if isinstance(value, str):
        return ValueType.STRING
    if isinstance(value, bytes):
        return ValueType.BYTES
    if isinstance(value, datetime):
        return ValueType.UNIX_TIMESTAMP
    raise TypeError(f"cannot send {type(value).__name__} {value!r} as a feast.types.Value")


def _from_value(value: Any) -> Any:
    which = value.WhichOneof("val")
    if which is None or which == "null_val":
        return None
    if which == "unix_timestamp_val":
        return datetime.fromtimestamp(value.unix_timestamp_val, tz=timezone.utc)
    if which == "unix_timestamp_list_val":
        seconds = value.unix_timestamp_list_val.val
        return [datetime.fromtimestamp(s, tz=timezone.utc) for s in seconds]
    if which.endswith("_list_val"):
        return list(getattr(value, which).val)
    return getattr(value, which)


def from_values(values: Iterable[Any]) -> list[Any]:
    """Return the Python value of each ``Value`` proto (``None`` for an empty one)."""
    return [_from_value(v) for v in values]


def _value_type_of(values: Iterable[Any]) -> ValueType | None:
    for value in values:
        which = value.WhichOneof("val")
        if which is not None and which != "null_val":
            return _TYPE_BY_FIELD[which]
    return None


def entities_from_proto(entities: Mapping[str, Any]) -> dict[str, list[Any]]:
    """Return columnar entity values from a request's ``map<string, RepeatedValue>``.

    Raises:
        ValidationError: If a timestamp is outside what a ``datetime`` holds (the years 1 to
            9999); the message, ``entity`` and ``row`` locate it.
    """
    out = {}
    for name, column in entities.items():
        try:
            out[name] = from_values(column.val)
        except (OverflowError, OSError, ValueError):
            _raise_bad_timestamp(name, column.val)
            raise
    return out


_SECONDS_RANGE = (-62_135_596_800, 253_402_300_799)
"""Seconds since the epoch of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z."""


def _raise_bad_timestamp(name: str, values: Sequence[Any]) -> None:
    low, high = _SECONDS_RANGE
    for row, value in enumerate(values):
        which = value.WhichOneof("val")
        if which == "unix_timestamp_val":
            seconds = [value.unix_timestamp_val]
        elif which == "unix_timestamp_list_val":
            seconds = list(value.unix_timestamp_list_val.val)
        else:
            continue
        for bad in (s for s in seconds if not low <= s <= high):
            raise ValidationError(
                f"entity {name!r}: row {row} holds the timestamp {bad} (seconds since the "
                f"epoch), outside the years 1 to 9999",
                field="entities",
                entity=name,
                row=row,
            )


def entities_to_proto(entities: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """Return a request's ``entities`` map from columnar Python values.

    Each value is typed by its own Python type (``int`` travels as ``INT64``, ``float`` as
    ``DOUBLE``); the server checks the values against the entities' types.
    """
    out = {}
    for name, column in entities.items():
        repeated = value_pb.RepeatedValue()
        for value in column:
            if value is None:
                repeated.val.add()
            else:
                value_type = _python_type(value)
                plain = _PLAIN.get(value_type)
                _add_values(repeated, "val", [plain(value) if plain else value], value_type)
        out[name] = repeated
    return out


def _event_times(event_us: Sequence[int | None]) -> Any:
    """Return a FeatureVector holding only the event times, to merge into each column's."""
    vector = _VECTOR()
    add = vector.event_timestamps.add
    for us in event_us:
        if us is None:
            add()
        else:
            add(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1_000)
    return vector


_EPOCHS: dict[int, Any] = {}


def _epochs(rows: int) -> Any:
    vector = _EPOCHS.get(rows)
    if vector is None:
        vector = _event_times([None] * rows)
        if rows <= _MAX_CACHED_EPOCH_ROWS:
            _EPOCHS[rows] = vector
    return vector


def response_to_proto(response: OnlineResponse) -> Any:
    """Return the ``GetOnlineFeaturesResponse`` proto of ``response`` (one vector per column)."""
    proto = serving_pb.GetOnlineFeaturesResponse(status=True)
    proto.metadata.feature_names.val.extend(response.names)
    times: dict[int, Any] = {}
    for value_type, values, statuses, event_us in zip(
        response.value_types,
        response.values,
        response.field_statuses,
        response.event_us,
        strict=True,
    ):
        vector = proto.results.add()
        if value_type is None:
            for _ in values:
                vector.values.add()
        else:
            _add_values(vector, "values", values, value_type)
        vector.statuses.extend(cast(list[Any], statuses))  # an IntEnum of the proto's numbers
        # The feature columns of one table share their event-time list: convert it once.
        stamps = times.get(id(event_us))
        if stamps is None:
            if all(us is None for us in event_us):
                stamps = _epochs(len(event_us))
            else:
                stamps = _event_times(event_us)
            times[id(event_us)] = stamps
        vector.MergeFrom(stamps)
    return proto


def _micros(ts: Any) -> int | None:
    return None if ts.seconds == 0 and ts.nanos == 0 else ts.seconds * 1_000_000 + ts.nanos // 1_000


def response_from_proto(proto: Any) -> OnlineResponse:
    """Return the :class:`OnlineResponse` a ``GetOnlineFeaturesResponse`` proto carries.

    Value types are read from the values themselves (``None`` for a column of nulls); event
    times at the epoch read as ``None``.
    """
    names = list(proto.metadata.feature_names.val)
    value_types, values, statuses, events = [], [], [], []
    for vector in proto.results:
        value_types.append(_value_type_of(vector.values))
        values.append(from_values(vector.values))
        statuses.append([_STATUS_BY_NUMBER[s] for s in vector.statuses])
        events.append([_micros(t) for t in vector.event_timestamps])
    return OnlineResponse(names, value_types, values, statuses, events)


__all__ = [
    "entities_from_proto",
    "entities_to_proto",
    "from_values",
    "response_from_proto",
    "response_to_proto",
]
