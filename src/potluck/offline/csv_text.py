"""CSV fields to Arrow by their declared type.

Every CSV column is read as text (:func:`potluck.offline.inputs.open_input`); the type declared
for its entity, feature or timestamp decides how each field is read. One null rule for every
type: **an empty field is null**, and nothing else is. For STRING and BYTES only an unquoted
empty field is null (``""`` is the empty value), and ``NA``, ``null``, ``N/A`` or ``NaN`` are
text like any other. Per type:

- **STRING**: the field's text; **BYTES**: its UTF-8 bytes;
- **INT32, INT64**: a decimal number whose value is a whole number within the type's range:
  ``42``, ``-7``, ``+7``, ``42.0``, ``4.2e1`` (so a pandas float column of whole numbers reads
  back); hexadecimal, spaces, ``nan`` and ``inf`` are refused;
- **DOUBLE, FLOAT**: a decimal number (``0.5``, ``-1e-3``, ``.5``) or ``inf``/``infinity`` with
  an optional sign, any case; ``nan`` is refused (a missing value is an empty field);
- **BOOL**: ``true``, ``false``, ``1`` or ``0``, any case;
- **UNIX_TIMESTAMP**: ISO 8601 text (``2024-05-01``, ``2024-05-01T12:00:00``,
  ``2024-05-01 12:00:00.5+02:00``); without a zone it is UTC;
- **lists**: a JSON array (``[1, 2]``, ``["a", null]``, ``["2024-05-01T00:00:00Z"]``), each
  element read by :mod:`potluck.offline.objects` as the element type.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from potluck.offline.convert import BadValue, first_failure, kind, to_type
from potluck.offline.objects import objects_to_type

_NUMBER_TEXT = r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
"""A decimal number, as CSV fields of numeric types spell it (no spaces, no hexadecimal)."""
_WHOLE = r"^[+-]?[0-9]+(\.0*)?$"
_NUMBER = f"^{_NUMBER_TEXT}$"
_INFINITY = r"(?i)^[+-]?inf(inity)?$"

_HINTS = {
    "int": "a whole decimal number such as 42, -7 or 42.0",
    "float": "a decimal number such as 0.5, -2 or 1e-3, or inf",
    "bool": "true, false, 1 or 0",
    "list": "a JSON array such as [1, 2]",
}


def read_csv_column(
    text: pa.Array | pa.ChunkedArray,
    target: pa.DataType,
    *,
    column: str,
    expected: str,
    row_offset: int = 0,
) -> pa.Array:
    """Read ``n`` CSV fields (text, null for an unquoted empty field) as ``target``.

    Args:
        text: The fields, as a string column.
        target: The Arrow type of the declared value type.
        column: The column's name, for errors.
        expected: What the column holds, for errors (``"feature trips (INT64)"``).
        row_offset: The row number of ``text[0]`` in the whole file (the header is not a row).

    Returns:
        ``n`` values of type ``target``.

    Raises:
        DataValidationError: If a field is not a value of the type; ``column`` and ``row``
            locate the first.
    """
    array = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    try:
        return _read(array.cast(pa.string()), target, expected)
    except BadValue as bad:
        raise bad.located(column, row_offset) from None


def _read(text: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    target_kind = kind(target)
    if target_kind in ("string", "binary"):
        return text.cast(target)
    blank = pc.fill_null(pc.equal(text, ""), False)
    if pc.any(blank).as_py():
        text = pc.if_else(blank, pa.scalar(None, pa.string()), text)
    if target_kind == "int":
        return _read_ints(text, target, expected)
    if target_kind == "float":
        return _read_floats(text, target, expected)
    if target_kind == "list":
        return _read_lists(text, target, expected)
    if target_kind == "bool":
        try:
            return text.cast(pa.bool_())
        except pa.ArrowInvalid:
            row = first_failure(len(text), lambda lo, hi: _casts(text[lo:hi], pa.bool_()))
            raise _unreadable(text, row, "bool", expected) from None
    return to_type(text, target, expected)


def _read_ints(text: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    # pyarrow's integer parser accepts decimal digits with a minus sign, and hexadecimal
    # (0x...), which must be refused; whole numbers written as 42.0 or +42 are rewritten for it.
    quick = _cast_or_none(text, pa.int64())
    if quick is None or any(pc.any(pc.match_substring(text, x)).as_py() for x in "xX"):
        quick = None
        if pc.all(pc.fill_null(pc.match_substring_regex(text, _WHOLE), True)).as_py():
            quick = _cast_or_none(pc.replace_substring_regex(text, r"^\+|\.0*$", ""), pa.int64())
    if quick is None:
        # Anything else, field by field and in order, so the first bad row is the one reported.
        bits = int(target.bit_width)
        fields = text.to_pylist()
        quick = pa.array([_whole(f, row, expected, bits) for row, f in enumerate(fields)])
    return _narrowed(text, quick.cast(pa.int64()), target, expected)


def _whole(field: str | None, row: int, expected: str, bits: int) -> int | None:
    """Return the whole number ``field`` spells exactly (any decimal notation), or raise."""
    if field is None:
        return None
    if not re.fullmatch(_NUMBER_TEXT, field):
        raise BadValue(row, _cannot_read(field, "int", expected))
    number = Decimal(field)
    half = 2 ** (bits - 1)
    if not (-half <= number < half and number == number.to_integral_value()):
        raise BadValue(row, f"{field!r} cannot be stored as {expected} without loss")
    return int(number)


def _read_floats(text: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    # pyarrow's parser accepts the documented spellings, and nan, which must be refused.
    quick = _cast_or_none(text, pa.float64())
    if quick is not None and not pc.any(pc.invert(pc.is_finite(quick))).as_py():
        return _narrowed(text, quick, target, expected)
    infinite = pc.fill_null(pc.match_substring_regex(text, _INFINITY), False)
    readable = pc.fill_null(pc.or_(pc.match_substring_regex(text, _NUMBER), infinite), True)
    values = pc.if_else(readable, text, pa.scalar(None, pa.string())).cast(pa.float64())
    narrowed = values.cast(target, safe=False)
    overflow = pc.fill_null(pc.and_(pc.is_inf(narrowed), pc.invert(infinite)), False)
    bad = pc.or_(pc.invert(readable), overflow)
    if pc.any(bad).as_py():
        row = pc.index(bad, True).as_py()
        if readable[row].as_py():
            raise _lossy(text, row, expected)
        raise _unreadable(text, row, "float", expected)
    return narrowed


def _narrowed(text: pa.Array, values: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    try:
        return to_type(values, target, expected)
    except BadValue as bad:
        raise _lossy(text, bad.row, expected) from None


def _cast_or_none(text: pa.Array, target: pa.DataType) -> pa.Array | None:
    try:
        return text.cast(target)
    except pa.ArrowInvalid:
        return None


def _read_lists(text: pa.Array, target: pa.DataType, expected: str) -> pa.Array:
    lists: list[Any] = []
    for row, field in enumerate(text.to_pylist()):
        if field is None:
            lists.append(None)
            continue
        try:
            value = json.loads(field, parse_constant=_no_constant)
        except ValueError:
            value = field
        if not isinstance(value, list):
            objects_to_type(lists, target, expected)  # a bad element in an earlier row first
            raise _unreadable(text, row, "list", expected)
        lists.append(value)
    return objects_to_type(lists, target, expected)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _casts(text: pa.Array, target: pa.DataType) -> bool:
    try:
        text.cast(target)
    except pa.ArrowInvalid:
        return False
    return True


def _cannot_read(field: str, target_kind: str, expected: str) -> str:
    return (
        f"{field!r} cannot be read as {expected}: expected {_HINTS[target_kind]} (an empty "
        "field is null)"
    )


def _unreadable(text: pa.Array, row: int, target_kind: str, expected: str) -> BadValue:
    return BadValue(row, _cannot_read(text[row].as_py(), target_kind, expected))


def _lossy(text: pa.Array, row: int, expected: str) -> BadValue:
    return BadValue(row, f"{text[row].as_py()!r} cannot be stored as {expected} without loss")


__all__ = ["read_csv_column"]
