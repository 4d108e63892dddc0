"""Converting an Arrow column to a potluck type without loss, or naming the first bad row.

``ingest()`` and every offline engine convert columns here, so they accept and reject exactly the
same values; a value that does not fit raises a :class:`DataValidationError` that names the column
and the first bad row.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from potluck.errors import DataValidationError
from potluck.types import TIMESTAMP_ARROW_TYPE

MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)
"""Timestamps outside these bounds are rejected: Python, pandas and DuckDB cannot all hold them."""

_NUMERIC = ("int", "float", "decimal")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "int": _NUMERIC,
    "float": _NUMERIC,
    "bool": ("bool",),
    "string": ("string", "binary"),
    "binary": ("binary", "string"),
    "timestamp": ("timestamp", "date"),
    "list": ("list",),
}
"""For each kind of target type, the kinds of source column that convert to it."""


def _kind(arrow_type: pa.DataType) -> str:
    checks = (
        ("null", pa.types.is_null),
        ("bool", pa.types.is_boolean),
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
        ("list", lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)),
    )
    for kind, check in checks:
        if check(arrow_type):
            return kind
    return "other"


def convert(
    values: pa.Array | pa.ChunkedArray,
    target: pa.DataType,
    *,
    column: str,
    expected: str,
    row_offset: int = 0,
    from_csv: bool = False,
) -> pa.Array:
    """Return ``values`` as ``target`` if that loses nothing, else raise naming the first bad row.

    Integers and floats convert to either when the value survives exactly (``1.0`` into INT64
    does, ``1.5`` does not, nor does ``2**53 + 1`` into DOUBLE or an overflow into FLOAT).
    Timestamps of any unit and zone, dates, and ISO 8601 text convert to UTC microseconds (naive
    ones are read as UTC); sub-microsecond digits and timestamps outside years 1-9999 are
    rejected. Other text converts to numbers and booleans only when it came from CSV; strings
    and bytes convert into each other when valid. Lists convert element by element.

    Args:
        values: The column.
        target: The Arrow type wanted.
        column: The column's name, for errors.
        expected: What the column holds, for errors (``"feature trips (INT64)"``).
        row_offset: The row number of ``values[0]`` in the whole input, for errors.
        from_csv: Whether ``values`` is CSV text still to be parsed.

    Raises:
        DataValidationError: If a value does not convert; ``column`` and ``row`` locate it.
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == target:
        return _check_range(array, column, expected, row_offset)
    source_kind, target_kind = _kind(array.type), _kind(target)
    if source_kind == "null":
        return pa.nulls(len(array), target)
    accepted = _ACCEPTS.get(target_kind, ())
    parse_text = source_kind == "string" and (
        target_kind == "timestamp" or (from_csv and target_kind != "list")
    )
    if source_kind not in accepted and not parse_text:
        row = _first_index(pc.is_valid(array))
        raise DataValidationError(
            f"column {column!r} row {row + row_offset}: holds {array.type} values, which "
            f"cannot be stored as {expected}",
            column=column,
            row=row + row_offset,
        )
    if target_kind == "list":
        return _convert_list(array, target, column, expected, row_offset, from_csv)
    if target_kind == "timestamp":
        return _convert_timestamps(array, column, expected, row_offset)
    result = _cast_or_locate(array, target, column, expected, row_offset)
    if target_kind == "float":
        overflow = pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(array.cast(pa.float64()))))
        if pc.any(overflow).as_py():
            row = _first_index(overflow)
            raise _bad_value(array, row, column, expected, row_offset, "is too large to be stored")
    return result


def _convert_timestamps(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    if _kind(array.type) == "string":
        return _parse_timestamps(array, column, expected, offset)
    if pa.types.is_date(array.type):
        array = array.cast(pa.timestamp("s"))
    if array.type.tz is None:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    result = _cast_or_locate(array, TIMESTAMP_ARROW_TYPE, column, expected, offset)
    return _check_range(result, column, expected, offset)


def _parse_timestamps(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    try:
        parsed = _parse_iso(array)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = first_failure(len(array), lambda lo, hi: _parses(array[lo:hi]))
        raise _bad_value(array, row, column, expected, offset, "cannot be read") from None
    return _check_range(parsed, column, expected, offset)


_ZONE = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$"
"""ISO 8601 text that ends in a zone designator (after a time of day)."""


def _parse_iso(text: pa.Array) -> pa.Array:
    """Parse ISO 8601 text; values with a zone are converted to UTC, the others read as UTC."""
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONE), False)
    none = pa.scalar(None, text.type)
    aware = pc.if_else(zoned, text, none).cast(TIMESTAMP_ARROW_TYPE)
    naive = pc.if_else(zoned, none, text).cast(pa.timestamp("us")).cast(TIMESTAMP_ARROW_TYPE)
    return pc.if_else(zoned, aware, naive)


def _parses(text: pa.Array) -> bool:
    try:
        _parse_iso(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _convert_list(
    array: pa.Array, target: pa.DataType, column: str, expected: str, offset: int, from_csv: bool
) -> pa.Array:
    flat = array.flatten()
    try:
        values = convert(flat, target.value_type, column=column, expected=expected)
    except DataValidationError as exc:
        element = int(exc.attrs()["row"])
        offsets = array.offsets.to_numpy()
        row = int((offsets <= element + int(offsets[0])).sum()) - 1
        raise DataValidationError(
            f"column {column!r} row {row + offset}: element {element - int(offsets[row])} of "
            f"the list cannot be stored as {expected}",
            column=column,
            row=row + offset,
        ) from None
    rebased = pc.subtract(array.offsets, array.offsets[0]).cast(pa.int32())
    return pa.ListArray.from_arrays(rebased, values, type=target, mask=array.is_null())


def _cast_or_locate(
    array: pa.Array, target: pa.DataType, column: str, expected: str, offset: int
) -> pa.Array:
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = first_failure(len(array), lambda lo, hi: _casts(array[lo:hi], target))
        raise _bad_value(array, row, column, expected, offset, "cannot be stored") from None


def _casts(array: pa.Array, target: pa.DataType) -> bool:
    try:
        array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _check_range(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    if not pa.types.is_timestamp(array.type):
        return array
    low, high = pa.scalar(MIN_TIMESTAMP, array.type), pa.scalar(MAX_TIMESTAMP, array.type)
    outside = pc.or_(pc.less(array, low), pc.greater(array, high))
    if pc.any(outside).as_py():
        row = _first_index(outside)
        raise DataValidationError(
            f"column {column!r} row {row + offset}: timestamp is outside years 1-9999 "
            f"(raw value {array.cast(pa.int64())[row].as_py()} {array.type.unit})",
            column=column,
            row=row + offset,
        )
    return array


def _bad_value(
    array: pa.Array, row: int, column: str, expected: str, offset: int, why: str
) -> DataValidationError:
    value = array[row]
    shown = str(value) if pa.types.is_timestamp(value.type) else repr(value.as_py())
    return DataValidationError(
        f"column {column!r} row {row + offset}: {shown} {why} as {expected} without loss",
        column=column,
        row=row + offset,
    )


def _first_index(mask: pa.Array | pa.ChunkedArray) -> int:
    """Return the index of the first true value of ``mask`` (its length when there is none)."""
    found = pc.index(pc.fill_null(mask, False), True).as_py()
    return len(mask) if found < 0 else int(found)


def first_failure(length: int, ok: Any) -> int:
    """Binary-search the first index whose row makes ``ok(lo, hi)`` fail.

    ``ok(lo, hi)`` tells whether rows ``lo:hi`` are all fine; the whole range is known to fail.
    Costs about twice one full check.
    """
    lo, hi = 0, length
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


__all__ = ["MAX_TIMESTAMP", "MIN_TIMESTAMP", "convert", "first_failure"]
