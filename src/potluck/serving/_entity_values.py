"""Checks that request entity values fit their entity's type, naming the entity when not."""

from __future__ import annotations

import numbers
import reprlib
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from potluck.errors import ValidationError
from potluck.types import ValueType

_INT_RANGES = {ValueType.INT32: (-(2**31), 2**31 - 1), ValueType.INT64: (-(2**63), 2**63 - 1)}

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlong = 40
"""Messages quote a client's value at most about 80 characters long (a request may hold MBs)."""


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool) or type(v).__name__ == "bool_"


_FAST: dict[ValueType, frozenset[type]] = {
    ValueType.INT32: frozenset({int}),
    ValueType.INT64: frozenset({int}),
    ValueType.DOUBLE: frozenset({float, int}),
    ValueType.FLOAT: frozenset({float, int}),
    ValueType.STRING: frozenset({str}),
    ValueType.BYTES: frozenset({bytes}),
    ValueType.BOOL: frozenset({bool}),
    ValueType.UNIX_TIMESTAMP: frozenset({datetime}),
}
_SLOW: dict[ValueType, Callable[[Any], bool]] = {
    ValueType.INT32: _is_int,
    ValueType.INT64: _is_int,
    ValueType.DOUBLE: _is_real,
    ValueType.FLOAT: _is_real,
    ValueType.STRING: lambda v: isinstance(v, str),
    ValueType.BYTES: lambda v: isinstance(v, bytes),
    ValueType.BOOL: _is_bool,
    ValueType.UNIX_TIMESTAMP: lambda v: isinstance(v, datetime),
}


def check_entity_values(name: str, value_type: ValueType, values: Sequence[Any]) -> None:
    """Check every value of entity column ``name`` against the entity's ``value_type``.

    Raises:
        ValidationError: On a null, a value of another type or an integer out of range; the
            message and the ``entity`` and ``row`` fields locate it.
    """
    fast = _FAST[value_type]
    bounds = _INT_RANGES.get(value_type)
    for row, value in enumerate(values):
        if type(value) not in fast and (value is None or not _SLOW[value_type](value)):
            _raise(name, value_type, row, value)
        if bounds is not None and not bounds[0] <= value <= bounds[1]:
            raise ValidationError(
                f"entity {name!r}: value {_REPR.repr(value)} in row {row} does not fit "
                f"{value_type.name}",
                field="entities",
                entity=name,
                row=row,
            )


def _raise(name: str, value_type: ValueType, row: int, value: Any) -> None:
    if value is None:
        raise ValidationError(
            f"entity {name!r}: row {row} is null; every entity row needs a value",
            field="entities",
            entity=name,
            row=row,
        )
    raise ValidationError(
        f"entity {name!r} has type {value_type.name}, but row {row} holds "
        f"{type(value).__name__} {_REPR.repr(value)}",
        field="entities",
        entity=name,
        row=row,
    )


__all__ = ["check_entity_values"]
