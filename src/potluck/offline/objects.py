"""Python objects to Arrow by their declared type: DataFrame object columns and JSON lists.

pyarrow infers one type for a sequence of Python objects and bends the others to it (an ``int``
among ``datetime`` objects becomes microseconds since 1970; an ``int`` beyond int64 raises
``OverflowError``). Here the declared type decides instead, value by value:

- **null**: ``None``, ``float('nan')``, ``pandas.NA``, ``pandas.NaT`` and NumPy's NaN and NaT,
  for every type (pandas' missing values; elements of lists too);
- **INT32, INT64**: ``int`` and NumPy integers, and floats and ``Decimal`` values that are whole
  numbers, within the type's range (``bool`` is refused);
- **DOUBLE, FLOAT**: numbers: integers up to 2**53 (DOUBLE) or 2**24 (FLOAT) in magnitude,
  floats (a FLOAT rounds them to single precision, but refuses an overflow) and ``Decimal``
  values;
- **BOOL**: ``bool`` and ``numpy.bool_`` only;
- **STRING**: ``str``, and ``bytes`` that are valid UTF-8;
- **BYTES**: ``bytes``, ``bytearray``, and ``str`` (stored as its UTF-8 bytes);
- **UNIX_TIMESTAMP**: ``datetime`` (naive means UTC), ``pandas.Timestamp`` and
  ``numpy.datetime64`` without digits below a microsecond, ``date`` (midnight UTC) and ISO 8601
  text; an ``int`` or ``float`` is refused (it has no unit: convert epoch numbers with
  ``pandas.to_datetime(values, unit="s")`` first);
- **lists**: ``list``, ``tuple`` or a one-dimensional NumPy array, each element by the rule of
  the element type.

Columns whose values are all of one fitting kind go through pyarrow in one call; the others are
read value by value.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa

from potluck.offline.convert import BadValue, kind, to_type
from potluck.types import TIMESTAMP_ARROW_TYPE

_NUMBERS = frozenset({"integer", "floating", "mixed-integer-float", "decimal"})
_FAST_KINDS: dict[str, frozenset[str]] = {
    "int": _NUMBERS,
    "double": _NUMBERS,
    # pyarrow reads ints mixed with floats as doubles: fine for DOUBLE (it refuses the ints a
    # double cannot hold), not for FLOAT (an int beyond 2**24 would round instead of failing).
    "float": _NUMBERS - {"mixed-integer-float"},
    "bool": frozenset({"boolean"}),
    "string": frozenset({"string", "bytes"}),
    "binary": frozenset({"bytes", "string"}),
    # pyarrow reads an int among datetimes as microseconds: only text goes through it.
    "timestamp": frozenset({"string"}),
}
"""Per kind of scalar target, the ``pandas.api.types.infer_dtype`` results pyarrow reads
faithfully (the rest is read value by value)."""

_FLOAT_EXACT = {32: 2**24, 64: 2**53}
"""The largest integer magnitude a float of each width holds exactly (pyarrow's limit too)."""


def from_objects(
    values: Sequence[Any] | np.ndarray[Any, Any],
    target: pa.DataType,
    *,
    column: str,
    expected: str,
    row_offset: int = 0,
) -> pa.Array:
    """Read ``n`` Python objects as ``target`` by the rules of this module.

    Args:
        values: The objects (a list or an object-dtype array).
        target: The Arrow type of the declared value type.
        column: The column's name, for errors.
        expected: What the column holds, for errors (``"feature trips (INT64)"``).
        row_offset: The row number of ``values[0]`` in the whole input, for errors.

    Returns:
        ``n`` values of type ``target``.

    Raises:
        DataValidationError: If a value does not fit; ``column`` and ``row`` locate the first.
    """
    try:
        return objects_to_type(values, target, expected)
    except BadValue as bad:
        raise bad.located(column, row_offset) from None


def objects_to_type(
    values: Sequence[Any] | np.ndarray[Any, Any], target: pa.DataType, expected: str
) -> pa.Array:
    """Like :func:`from_objects`, but raise :class:`~potluck.offline.convert.BadValue`."""
    if kind(target) == "list":
        return _lists(values, target, expected)
    import pandas as pd  # imported when objects are read, not when the CLI starts

    inferred = pd.api.types.infer_dtype(values, skipna=True)
    if inferred == "empty":
        return pa.nulls(len(values), target)
    if inferred in _FAST_KINDS[_scalar_kind(target)]:
        try:
            array = pa.array(values, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
            pass
        else:
            return to_type(array, target, expected)
    read = [_value(v, target, expected, row) for row, v in enumerate(values)]
    # Floats are read as doubles, then rounded as the fast path rounds them.
    natural = pa.float64() if kind(target) == "float" else target
    return to_type(pa.array(read, natural), target, expected)


def _scalar_kind(target: pa.DataType) -> str:
    if kind(target) == "float":
        return "float" if target.bit_width == 32 else "double"
    return kind(target)


def _lists(
    values: Sequence[Any] | np.ndarray[Any, Any], target: pa.DataType, expected: str
) -> pa.Array:
    """Read lists: their elements together by the element type's rules, then the offsets."""
    nulls = [_is_null(v) for v in values]
    rows: list[Any] = []
    for row, (value, null) in enumerate(zip(values, nulls, strict=True)):
        if null:
            continue
        if not _is_list(value):
            _lists(values[:row], target, expected)  # a bad element in an earlier row comes first
            raise _wrong_kind(value, expected, row)
        rows.append(value)
    lengths = np.array([0 if null else len(v) for v, null in zip(values, nulls, strict=True)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    try:
        elements = _elements(rows, target.value_type, expected)
    except BadValue as bad:
        row = int(np.searchsorted(offsets, bad.row, side="right")) - 1
        raise BadValue(
            row, f"element {bad.row - int(offsets[row])} of the list: {bad.detail}"
        ) from None
    return pa.ListArray.from_arrays(
        pa.array(offsets), elements, type=target, mask=pa.array(nulls, pa.bool_())
    )


def _is_list(value: Any) -> bool:
    if isinstance(value, np.ndarray):
        return value.ndim == 1
    return isinstance(value, (list, tuple))


def _elements(rows: list[Any], target: pa.DataType, expected: str) -> pa.Array:
    dtypes = {row.dtype for row in rows if isinstance(row, np.ndarray)}
    if rows and len(dtypes) == 1 and all(isinstance(r, np.ndarray) for r in rows):
        (dtype,) = dtypes
        if dtype.kind != "O":
            # NumPy arrays of one dtype (embeddings): typed already, no Python objects to read.
            return to_type(pa.array(np.concatenate(rows), from_pandas=True), target, expected)
    return objects_to_type(list(itertools.chain.from_iterable(rows)), target, expected)


def _value(value: Any, target: pa.DataType, expected: str, row: int) -> Any:
    """Return scalar ``value`` as a Python value of ``target``, or raise BadValue at ``row``."""
    if _is_null(value):
        return None
    return _READERS[kind(target)](value, target, expected, row)


def _is_null(value: Any) -> bool:
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, (float, np.floating)):
        return math.isnan(value)
    return isinstance(value, (np.datetime64, np.timedelta64)) and bool(np.isnat(value))


def _read_int(value: Any, target: pa.DataType, expected: str, row: int) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise _wrong_kind(value, expected, row)
    number: int | float | np.floating[Any] | Decimal
    if isinstance(value, (int, np.integer)):
        number = int(value)
    elif isinstance(value, (float, np.floating, Decimal)):
        number = value  # compared exactly; made an int only once known to be in range
    else:
        raise _wrong_kind(value, expected, row)
    half = 2 ** (target.bit_width - 1)
    if not (-half <= number < half and number == int(number)):
        raise _lossy(value, expected, row)
    return int(number)


def _read_float(value: Any, target: pa.DataType, expected: str, row: int) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise _wrong_kind(value, expected, row)
    if isinstance(value, (int, np.integer)):
        if abs(int(value)) > _FLOAT_EXACT[target.bit_width]:
            raise _lossy(value, expected, row)
        return float(value)
    if not isinstance(value, (float, np.floating, Decimal)):
        raise _wrong_kind(value, expected, row)
    number = float(value)
    if target.bit_width == 32:
        with np.errstate(over="ignore"):
            single = np.float32(number)
        if math.isinf(single) and not math.isinf(number):
            raise _lossy(value, expected, row)
    return number


def _read_bool(value: Any, target: pa.DataType, expected: str, row: int) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _wrong_kind(value, expected, row)
    return bool(value)


def _read_string(value: Any, target: pa.DataType, expected: str, row: int) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise BadValue(
                row, f"{value!r} is not valid UTF-8, so it cannot be stored as {expected}"
            ) from None
    raise _wrong_kind(value, expected, row)


def _read_bytes(value: Any, target: pa.DataType, expected: str, row: int) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise _wrong_kind(value, expected, row)


def _read_timestamp(value: Any, target: pa.DataType, expected: str, row: int) -> datetime:
    if isinstance(value, (str, np.datetime64)):
        # One value through the column rules: ISO 8601 text, or a NumPy unit and range.
        array = pa.array([value], pa.string() if isinstance(value, str) else None)
        try:
            converted = to_type(array, TIMESTAMP_ARROW_TYPE, expected)
        except BadValue as bad:
            raise BadValue(row, bad.detail) from None
        result: datetime = converted[0].as_py()
        return result
    import pandas as pd

    if isinstance(value, pd.Timestamp) and value.nanosecond:
        raise BadValue(
            row,
            f"{value!r} has digits below a microsecond, so it cannot be stored as {expected} "
            "without loss",
        )
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return value.replace(tzinfo=timezone.utc)
        try:
            return value.astimezone(timezone.utc)
        except OverflowError:
            raise BadValue(
                row,
                f"{value!r} is outside years 1-9999 in UTC, so it cannot be stored as {expected}",
            ) from None
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    ):
        raise BadValue(
            row,
            f"{value!r} ({type(value).__name__}) cannot be stored as {expected}: a number has "
            "no unit; give datetimes or ISO 8601 text, or convert epoch numbers first, e.g. "
            "pandas.to_datetime(values, unit='s')",
        )
    raise _wrong_kind(value, expected, row)


_READERS = {
    "int": _read_int,
    "float": _read_float,
    "bool": _read_bool,
    "string": _read_string,
    "binary": _read_bytes,
    "timestamp": _read_timestamp,
}


def _wrong_kind(value: Any, expected: str, row: int) -> BadValue:
    return BadValue(row, f"{value!r} ({type(value).__name__}) cannot be stored as {expected}")


def _lossy(value: Any, expected: str, row: int) -> BadValue:
    return BadValue(row, f"{value!r} cannot be stored as {expected} without loss")


__all__ = ["from_objects", "objects_to_type"]
