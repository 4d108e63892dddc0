"""Entity key encoding: the canonical, language-neutral bytes that key the online store.

One job: turn ``(project, table, entity values)`` into the key bytes that every online store
uses, from Python values (one key) or from Arrow arrays (one key per row, vectorised). The format
is specified byte by byte in ``docs/entity-key.md``, whose golden vectors a test checks::

    key    = str(project) str(table) entity...      entities in sorted-name order
    str(s) = u32 LE byte length, UTF-8 bytes
    entity = str(name) u8 type tag (the ValueType number) value

    INT32 i32 LE | INT64 i64 LE | UNIX_TIMESTAMP i64 LE microseconds since the epoch (UTC)
    BOOL u8 0/1  | FLOAT f32 LE | DOUBLE f64 LE (-0.0 is written as 0.0; NaN is rejected)
    STRING u32 LE length, UTF-8 | BYTES u32 LE length, bytes

Every key of a table starts with :func:`table_key_prefix`, so a store can find (and drop) a
table's keys by prefix.
"""

from __future__ import annotations

import math
import numbers
import struct
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from potluck.errors import ValidationError
from potluck.online._binary import (
    STRUCT_FORMATS,
    concat_elementwise,
    fixed_width_binary,
    fixed_width_values,
    u32_prefixed,
    valid_mask,
)
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, from_arrow_type

_U32 = struct.Struct("<I")
_INT_RANGE: dict[ValueType, tuple[int, int]] = {
    ValueType.INT32: (-(2**31), 2**31 - 1),
    ValueType.INT64: (-(2**63), 2**63 - 1),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _str(text: str) -> bytes:
    data = text.encode()
    return _U32.pack(len(data)) + data


def table_key_prefix(project: str, table: str) -> bytes:
    """Return the bytes every entity key of ``project``'s ``table`` starts with."""
    return _str(project) + _str(table)


def _entity_head(name: str, value_type: ValueType) -> bytes:
    return _str(name) + bytes([value_type.value])


def _scalar_types(entity_types: Mapping[str, ValueType]) -> list[tuple[str, ValueType]]:
    out = []
    for name in sorted(entity_types):
        value_type = ValueType(entity_types[name])
        if value_type.is_list:
            raise ValidationError(
                f"entity {name}: {value_type.name} is a list type; entity keys must be scalar",
                entity=name,
            )
        out.append((name, value_type))
    return out


def encode_entity_key(
    project: str,
    table: str,
    values: Mapping[str, object],
    entity_types: Mapping[str, ValueType],
) -> bytes:
    """Encode one entity key from Python values.

    Args:
        project: The table's project.
        table: The feature table's name.
        values: One value per entity name; names not in ``entity_types`` are ignored.
        entity_types: The type of each of the table's entities.

    Returns:
        The key, as ``docs/entity-key.md`` specifies.

    Raises:
        ValidationError: If an entity is missing or its value has the wrong type or is out of
            range; ``entity`` names it, e.g. ``entity driver_id: expected INT64, got 'abc' (str)``.

    Example:
        >>> encode_entity_key("p", "t", {"id": 1}, {"id": ValueType.INT64}).hex()
        '01000000700100000074020000006964040100000000000000'
    """
    parts = [table_key_prefix(project, table)]
    for name, value_type in _scalar_types(entity_types):
        if name not in values:
            raise ValidationError(f"entity {name}: no value given", entity=name)
        parts.append(_entity_head(name, value_type))
        parts.append(_encode_scalar(name, value_type, values[name]))
    return b"".join(parts)


def _wrong_type(name: str, value_type: ValueType, value: object) -> ValidationError:
    return ValidationError(
        f"entity {name}: expected {value_type.name}, got {value!r} ({type(value).__name__})",
        entity=name,
        value=value,
    )


def _encode_scalar(name: str, value_type: ValueType, value: object) -> bytes:
    is_bool = isinstance(value, (bool, np.bool_))
    if value_type is ValueType.STRING:
        if not isinstance(value, str):
            raise _wrong_type(name, value_type, value)
        return _str(value)
    if value_type is ValueType.BYTES:
        if not isinstance(value, (bytes, bytearray)):
            raise _wrong_type(name, value_type, value)
        return _U32.pack(len(value)) + bytes(value)
    if value_type is ValueType.BOOL:
        if not is_bool:
            raise _wrong_type(name, value_type, value)
        return b"\x01" if value else b"\x00"
    if value_type is ValueType.UNIX_TIMESTAMP:
        if not isinstance(value, datetime):
            raise _wrong_type(name, value_type, value)
        aware = value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)
        return struct.pack("<q", (aware - _EPOCH) // _MICROSECOND)
    if value_type in _INT_RANGE:
        if is_bool or not isinstance(value, numbers.Integral):
            raise _wrong_type(name, value_type, value)
        low, high = _INT_RANGE[value_type]
        if not low <= int(value) <= high:
            raise ValidationError(
                f"entity {name}: {value} is out of range for {value_type.name}",
                entity=name,
                value=value,
            )
        return struct.pack(STRUCT_FORMATS[value_type], int(value))
    if is_bool or not isinstance(value, numbers.Real):
        raise _wrong_type(name, value_type, value)
    number = float(value)
    if math.isnan(number):
        raise ValidationError(
            f"entity {name}: NaN is not a valid {value_type.name} key", entity=name, value=value
        )
    return struct.pack(STRUCT_FORMATS[value_type], number + 0.0)


def encode_entity_keys(
    project: str,
    table: str,
    entity_columns: Mapping[str, pa.Array],
    entity_types: Mapping[str, ValueType],
) -> pa.BinaryArray:
    """Encode one entity key per row from Arrow columns, vectorised.

    Args:
        project: The table's project.
        table: The feature table's name.
        entity_columns: One column per entity name, all of the same length; names not in
            ``entity_types`` are ignored. Integer columns may be any integer type whose values
            fit the entity's type; FLOAT keys are rounded to float32.
        entity_types: The type of each of the table's entities.

    Returns:
        A binary array, one key per row, equal to :func:`encode_entity_key` of each row.

    Raises:
        ValidationError: If a column is missing, of the wrong type, holds a null, a NaN or a value
            out of range, or the lengths differ; ``entity`` names the column.
    """
    scalar_types = _scalar_types(entity_types)
    columns: list[tuple[str, ValueType, pa.Array]] = []
    for name, value_type in scalar_types:
        if name not in entity_columns:
            raise ValidationError(f"entity {name}: no column given", entity=name)
        column = entity_columns[name]
        if isinstance(column, pa.ChunkedArray):
            column = column.combine_chunks()
        columns.append((name, value_type, column))
    lengths = {len(column) for _, _, column in columns}
    if len(lengths) > 1:
        sizes = ", ".join(f"{name}={len(column)}" for name, _, column in columns)
        raise ValidationError(
            f"entity columns differ in length ({sizes})", entity=columns[0][0] if columns else ""
        )
    rows = lengths.pop() if lengths else 0
    parts: list[pa.Array | pa.Scalar] = [pa.scalar(table_key_prefix(project, table), pa.binary())]
    for name, value_type, column in columns:
        parts.append(pa.scalar(_entity_head(name, value_type), pa.binary()))
        parts.append(_encode_column(name, value_type, column))
    if not any(isinstance(part, pa.Array) for part in parts):
        return pa.array([parts[0].as_py()] * rows, pa.binary())
    return concat_elementwise(parts)


def _encode_column(name: str, value_type: ValueType, column: pa.Array) -> pa.Array:
    column = _cast_column(name, value_type, column)
    if column.null_count:
        row = int(np.argmin(valid_mask(column)))
        raise ValidationError(
            f"entity {name}: row {row} is null; entity keys must not be null",
            entity=name,
            row=row,
        )
    if value_type in (ValueType.STRING, ValueType.BYTES):
        return u32_prefixed(column)
    values = fixed_width_values(column, value_type)
    if value_type in (ValueType.FLOAT, ValueType.DOUBLE):
        if np.isnan(values).any():
            row = int(np.argmax(np.isnan(values)))
            raise ValidationError(
                f"entity {name}: row {row} is NaN, which is not a valid {value_type.name} key",
                entity=name,
                row=row,
            )
        values = values + values.dtype.type(0.0)
    return fixed_width_binary(values)


def _cast_column(name: str, value_type: ValueType, column: pa.Array) -> pa.Array:
    arrow_type = column.type
    try:
        given = from_arrow_type(arrow_type)
    except ValueError:
        given = None
    integer = pa.types.is_integer(arrow_type)
    accepted = (
        given is value_type
        or (value_type in _INT_RANGE and integer)
        or (value_type in (ValueType.FLOAT, ValueType.DOUBLE) and pa.types.is_floating(arrow_type))
    )
    if not accepted:
        raise ValidationError(
            f"entity {name}: expected {value_type.name}, got a column of type {arrow_type}",
            entity=name,
        )
    target = {
        ValueType.STRING: pa.string(),
        ValueType.BYTES: pa.binary(),
        ValueType.UNIX_TIMESTAMP: TIMESTAMP_ARROW_TYPE,
        ValueType.INT32: pa.int32(),
        ValueType.INT64: pa.int64(),
        ValueType.FLOAT: pa.float32(),
        ValueType.DOUBLE: pa.float64(),
        ValueType.BOOL: pa.bool_(),
    }[value_type]
    if column.type == target:
        return column
    try:
        return column.cast(target, safe=value_type is not ValueType.FLOAT)
    except pa.ArrowInvalid:
        low, high = pc.min_max(column).values()
        raise ValidationError(
            f"entity {name}: values from {low} to {high} do not fit {value_type.name}",
            entity=name,
        ) from None
