"""Converting an Arrow column to a potluck type without loss, or naming the first bad row.

``ingest()`` and every offline engine convert columns here, so they accept and reject exactly the
same values; a value that does not fit raises a :class:`DataValidationError` that names the column
and the first bad row. Text still to be parsed (CSV fields) and Python objects (DataFrame object
columns) are first read by :mod:`potluck.offline.csv_text` and :mod:`potluck.offline.objects`,
which end here too.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from potluck.errors import DataValidationError
from potluck.types import TIMESTAMP_ARROW_TYPE

MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)
"""Timestamps outside these bounds are rejected: Python, pandas and DuckDB cannot all hold them."""

_MIN_US = -62_135_596_800_000_000
_MAX_US = 253_402_300_799_999_999
"""MIN_TIMESTAMP and MAX_TIMESTAMP in microseconds since the epoch."""
_PER_SECOND = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}

_NUMERIC = ("int", "float", "decimal")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "int": _NUMERIC,
    "float": _NUMERIC,
    "bool": ("bool",),
    "string": ("string", "binary"),
    "binary": ("binary", "string"),
    "timestamp": ("timestamp", "date", "string"),
    "list": ("list",),
}
"""For each kind of target type, the kinds of source column that convert to it (text into a
timestamp is parsed as ISO 8601)."""


class BadValue(Exception):
    """A value that does not convert.

    Args:
        row: Its index within the array being converted.
        detail: What is wrong, starting with the value (``"1.5 cannot be stored as ..."``).
    """

    def __init__(self, row: int, detail: str) -> None:
        super().__init__(detail)
        self.row = row
        self.detail = detail

    def located(self, column: str, row_offset: int) -> DataValidationError:
        """Return the error users see: ``column 'c' row N: <detail>``, N counted from 0."""
        row = self.row + row_offset
        return DataValidationError(
            f"column {column!r} row {row}: {self.detail}", column=column, row=row
        )


def kind(arrow_type: pa.DataType) -> str:
    """Return the kind of ``arrow_type``.

    One of null, bool, int, float, decimal, string, binary, timestamp, date, list or other; a
    dictionary is of its value type's kind.
    """
    if pa.types.is_dictionary(arrow_type):
        return kind(arrow_type.value_type)
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
    for name, check in checks:
        if check(arrow_type):
            return name
    return "other"


def can_hold(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether some values of type ``source`` convert to ``target`` (so it is worth looking).

    A list converts when its element type does; a null column always converts.
    """
    source_kind, target_kind = kind(source), kind(target)
    if source_kind == "null":
        return True
    if source_kind not in _ACCEPTS.get(target_kind, ()):
        return False
    if target_kind == "list":
        return can_hold(source.value_type, target.value_type)
    return True


def always_fits(source: pa.DataType, target: pa.DataType) -> bool:
    """Whether every value of type ``source`` converts to ``target`` without looking at it.

    True for the same type, null columns, integers into wider integers, ``float32`` into
    ``float64``, timestamps of seconds, milliseconds or microseconds (any zone) and dates into
    ``TIMESTAMP_ARROW_TYPE`` (when their years are in range, which this does not check), and
    lists of such elements. Nanosecond timestamps need a look (digits below a microsecond).
    """
    if source == target or kind(source) == "null":
        return True
    source_kind, target_kind = kind(source), kind(target)
    if source_kind == "list" and target_kind == "list":
        return always_fits(source.value_type, target.value_type)
    if source_kind == "int" and target_kind == "int":
        low, high = _int_range(source)
        target_low, target_high = _int_range(target)
        return target_low <= low and high <= target_high
    if source_kind == "float" and target_kind == "float":
        return bool(source.bit_width <= target.bit_width)
    if target_kind == "timestamp":
        return source_kind == "date" or (source_kind == "timestamp" and source.unit != "ns")
    return False


def _int_range(arrow_type: pa.DataType) -> tuple[int, int]:
    bits = int(arrow_type.bit_width)
    if pa.types.is_unsigned_integer(arrow_type):
        return 0, 2**bits - 1
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def convert(
    values: pa.Array | pa.ChunkedArray,
    target: pa.DataType,
    *,
    column: str,
    expected: str,
    row_offset: int = 0,
) -> pa.Array:
    """Return ``values`` as ``target`` if that loses nothing, else raise naming the first bad row.

    Integers and floats convert to either when the value survives exactly (``1.0`` into INT64
    does, ``1.5`` does not, nor does ``2**53 + 1`` into DOUBLE or an overflow into FLOAT).
    Timestamps of any unit and zone, dates, and ISO 8601 text convert to UTC microseconds (naive
    ones are read as UTC); sub-microsecond digits and timestamps outside years 1-9999 are
    rejected. Strings and bytes convert into each other when valid; other text is refused (CSV
    text is parsed by :func:`potluck.offline.csv_text.read_csv_column`). Lists convert element
    by element.

    Args:
        values: The column, ``n`` values of any Arrow type.
        target: The Arrow type wanted (one of :func:`potluck.types.to_arrow_type`'s).
        column: The column's name, for errors.
        expected: What the column holds, for errors (``"feature trips (INT64)"``).
        row_offset: The row number of ``values[0]`` in the whole input, for errors.

    Returns:
        ``n`` values of type ``target``, nulls where ``values`` has nulls.

    Raises:
        DataValidationError: If a value does not convert; ``column`` and ``row`` (0-based,
            ``row_offset`` added) locate it.
    """
    try:
        return to_type(values, target, expected)
    except BadValue as bad:
        raise bad.located(column, row_offset) from None


def to_type(values: pa.Array | pa.ChunkedArray, target: pa.DataType, expected: str) -> pa.Array:
    """Like :func:`convert`, but raise :class:`BadValue` (a row within ``values``)."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == target:
        return _check_range(array)
    source_kind, target_kind = kind(array.type), kind(target)
    if source_kind == "null":
        return pa.nulls(len(array), target)
    if source_kind not in _ACCEPTS.get(target_kind, ()):
        raise BadValue(
            _first_index(pc.is_valid(array)),
            f"holds {array.type} values, which cannot be stored as {expected}",
        )
    if target_kind == "list":
        return _convert_list(array, target, expected)
    if target_kind == "timestamp":
        return _convert_timestamps(array, expected)
    result = _cast_or_locate(array, target, expected)
    if target_kind == "float":
        overflow = pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(array.cast(pa.float64()))))
        if pc.any(overflow).as_py():
            raise _bad_value(array, _first_index(overflow), expected, "cannot be stored")
    return result


def _convert_timestamps(array: pa.Array, expected: str) -> pa.Array:
    if kind(array.type) == "string":
        return _parse_timestamps(array, expected)
    if pa.types.is_date(array.type):
        array = array.cast(pa.timestamp("s"))
    _check_range(array)
    if array.type.unit == "ns":
        raw = array.cast(pa.int64())
        below = pc.not_equal(pc.multiply(pc.divide(raw, 1000), 1000), raw)
        if pc.any(below).as_py():
            row = _first_index(below)
            raise BadValue(
                row,
                f"{array[row]} has digits below a microsecond, so it cannot be stored as "
                f"{expected} without loss",
            )
    if array.type.tz is None:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    return _cast_or_locate(array, TIMESTAMP_ARROW_TYPE, expected)


def _parse_timestamps(array: pa.Array, expected: str) -> pa.Array:
    try:
        parsed = parse_iso(array)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = first_failure(len(array), lambda lo, hi: _parses(array[lo:hi]))
        _check_range(parse_iso(array[:row]))  # a row before it may be out of range
        raise BadValue(
            row,
            f"{array[row].as_py()!r} cannot be read as {expected}: expected ISO 8601 text such "
            "as 2024-05-01T12:00:00Z",
        ) from None
    return _check_range(parsed)


_ZONE = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$"
"""ISO 8601 text that ends in a zone designator (after a time of day)."""


def parse_iso(text: pa.Array) -> pa.Array:
    """Parse ISO 8601 text; values with a zone are converted to UTC, the others read as UTC.

    Raises:
        pyarrow.ArrowInvalid: If a value is not ISO 8601 text.
    """
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONE), False)
    none = pa.scalar(None, text.type)
    aware = pc.if_else(zoned, text, none).cast(TIMESTAMP_ARROW_TYPE)
    naive = pc.if_else(zoned, none, text).cast(pa.timestamp("us")).cast(TIMESTAMP_ARROW_TYPE)
    return pc.if_else(zoned, aware, naive)


def _parses(text: pa.Array) -> bool:
    try:
        parse_iso(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _convert_list(array: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    # flatten() skips what null lists hide and honours slices; offsets are rebuilt to match.
    lengths = pc.fill_null(pc.list_value_length(array), 0).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    try:
        values = to_type(array.flatten(), target.value_type, expected)
    except BadValue as bad:
        row = int(np.searchsorted(offsets, bad.row, side="right")) - 1
        raise BadValue(
            row, f"element {bad.row - int(offsets[row])} of the list: {bad.detail}"
        ) from None
    return pa.ListArray.from_arrays(
        pa.array(offsets, pa.int32()), values, type=target, mask=array.is_null()
    )


def _cast_or_locate(array: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = first_failure(len(array), lambda lo, hi: _casts(array[lo:hi], target))
        raise _bad_value(array, row, expected, "cannot be stored") from None


def _casts(array: pa.Array, target: pa.DataType) -> bool:
    try:
        array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _check_range(array: pa.Array) -> pa.Array:
    """Return ``array``; raise if it holds timestamps outside years 1-9999 (of any unit)."""
    if not pa.types.is_timestamp(array.type):
        return array
    unit = array.type.unit
    if unit == "ns":
        return array  # int64 nanoseconds span years 1677-2262 only
    raw = array.cast(pa.int64())
    per_unit = 1_000_000 // _PER_SECOND[unit]
    low, high = -(-_MIN_US // per_unit), _MAX_US // per_unit
    outside = pc.or_(pc.less(raw, low), pc.greater(raw, high))
    if pc.any(outside).as_py():
        row = _first_index(outside)
        raise BadValue(
            row,
            f"timestamp is outside years 1-9999 (raw value {raw[row].as_py()} {unit})",
        )
    return array


def _bad_value(array: pa.Array, row: int, expected: str, why: str) -> BadValue:
    value = array[row]
    shown = str(value) if pa.types.is_timestamp(value.type) else repr(value.as_py())
    return BadValue(row, f"{shown} {why} as {expected} without loss")


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


__all__ = [
    "MAX_TIMESTAMP",
    "MIN_TIMESTAMP",
    "BadValue",
    "always_fits",
    "can_hold",
    "convert",
    "first_failure",
    "kind",
    "parse_iso",
    "to_type",
]
