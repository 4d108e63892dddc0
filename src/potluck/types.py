"""Value types and the one mapping between them and Arrow types.

The enum numbers are Feast's (``feast.types.ValueType``), so protobuf values and definitions
exchanged with Feast tooling mean the same thing here.
"""

from __future__ import annotations

from enum import IntEnum

import pyarrow as pa


class ValueType(IntEnum):
    """The type of an entity or a feature value."""

    BYTES = 1
    STRING = 2
    INT32 = 3
    INT64 = 4
    DOUBLE = 5
    FLOAT = 6
    BOOL = 7
    UNIX_TIMESTAMP = 8
    BYTES_LIST = 11
    STRING_LIST = 12
    INT32_LIST = 13
    INT64_LIST = 14
    DOUBLE_LIST = 15
    FLOAT_LIST = 16
    BOOL_LIST = 17
    UNIX_TIMESTAMP_LIST = 18

    @property
    def is_list(self) -> bool:
        """Whether this is one of the ``_LIST`` types."""
        return self.value > 10

    @property
    def element_type(self) -> ValueType:
        """The scalar type of a list type's elements (the type itself for a scalar)."""
        return ValueType(self.value - 10) if self.is_list else self

    @classmethod
    def parse(cls, value: ValueType | str | int) -> ValueType:
        """Read a value type from its enum, its name (any case) or its number.

        Raises:
            ValueError: If ``value`` names no value type; the message lists the valid names.
        """
        if isinstance(value, ValueType):
            return value
        if isinstance(value, bool):
            raise ValueError(f"not a value type: {value!r}")
        if isinstance(value, int):
            try:
                return cls(value)
            except ValueError:
                pass
        elif isinstance(value, str) and value.upper() in cls.__members__:
            return cls[value.upper()]
        names = ", ".join(cls.__members__)
        raise ValueError(f"unknown value type {value!r}; expected one of {names}")


TIMESTAMP_ARROW_TYPE = pa.timestamp("us", tz="UTC")
"""Every timestamp potluck stores or returns: microseconds, UTC."""

_SCALAR_ARROW: dict[ValueType, pa.DataType] = {
    ValueType.BYTES: pa.binary(),
    ValueType.STRING: pa.string(),
    ValueType.INT32: pa.int32(),
    ValueType.INT64: pa.int64(),
    ValueType.DOUBLE: pa.float64(),
    ValueType.FLOAT: pa.float32(),
    ValueType.BOOL: pa.bool_(),
    ValueType.UNIX_TIMESTAMP: TIMESTAMP_ARROW_TYPE,
}


def to_arrow_type(value_type: ValueType) -> pa.DataType:
    """Return the Arrow type that holds values of ``value_type``."""
    if value_type.is_list:
        return pa.list_(_SCALAR_ARROW[value_type.element_type])
    return _SCALAR_ARROW[value_type]


def from_arrow_type(arrow_type: pa.DataType) -> ValueType:
    """Return the value type whose Arrow type is ``arrow_type`` (timestamps of any unit and zone).

    Raises:
        ValueError: If no value type maps to ``arrow_type``.
    """
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        element = from_arrow_type(arrow_type.value_type)
        if element.is_list:
            raise ValueError(f"nested lists are not supported: {arrow_type}")
        return ValueType(element.value + 10)
    if pa.types.is_timestamp(arrow_type):
        return ValueType.UNIX_TIMESTAMP
    if pa.types.is_large_string(arrow_type):
        return ValueType.STRING
    if pa.types.is_large_binary(arrow_type):
        return ValueType.BYTES
    for value_type, candidate in _SCALAR_ARROW.items():
        if candidate == arrow_type:
            return value_type
    raise ValueError(f"no potluck value type for Arrow type {arrow_type}")


_WIDER: dict[ValueType, frozenset[ValueType]] = {
    ValueType.INT32: frozenset({ValueType.INT64, ValueType.DOUBLE}),
    ValueType.FLOAT: frozenset({ValueType.DOUBLE}),
    ValueType.STRING: frozenset({ValueType.BYTES}),
}


def is_lossless_widening(old: ValueType, new: ValueType) -> bool:
    """Return whether every value of type ``old`` is exactly one value of type ``new``.

    These are the type changes stored values follow: INT32 -> INT64, INT32 -> DOUBLE,
    FLOAT -> DOUBLE, STRING -> BYTES (its UTF-8 bytes), and the same between the ``_LIST``
    forms. A type is not a widening of itself.
    """
    if old.is_list != new.is_list:
        return False
    return new.element_type in _WIDER.get(old.element_type, frozenset())


__all__ = [
    "TIMESTAMP_ARROW_TYPE",
    "ValueType",
    "from_arrow_type",
    "is_lossless_widening",
    "to_arrow_type",
]
