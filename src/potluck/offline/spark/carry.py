"""Carrying the entity rows' own columns through Spark with every value and type intact.

A training set starts with the entity rows' columns unchanged, whatever their Arrow types, as the
DuckDB store returns them. Spark holds fewer types: it has no unsigned integers, keeps
timestamps as UTC microseconds, knows no large or view strings. So each column is sent as the
nearest type Spark holds exactly (a lossless cast: ``uint32`` as ``int64``, any timestamp as
UTC microseconds, ``large_string`` as ``string``, a dictionary as its values), or, when values do
not fit that (nanosecond digits) or Spark has no such type (``uint64``, ``date64``, times,
durations), as the signed integers of the same width, bit for bit. Reading the Parquet files back,
:func:`restore` gives each column its original type again.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from potluck.errors import DataValidationError

_HELD = frozenset(
    [pa.null(), pa.bool_(), pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.float32()]
    + [pa.float64(), pa.string(), pa.binary(), pa.date32()]
)
"""Types Spark holds as they are."""
_WIDER = {pa.uint8(): pa.int16(), pa.uint16(): pa.int32(), pa.uint32(): pa.int64()}
_INTEGERS = {8: pa.int8(), 16: pa.int16(), 32: pa.int32(), 64: pa.int64()}
_SPARK_DECIMAL_DIGITS = 38


@dataclass(frozen=True)
class CarriedColumn:
    """How one column travels through Spark.

    Attributes:
        name: Its name in the entity rows.
        original: Its Arrow type there, which the training set gives back.
        carried: The Arrow type it is sent to Spark as.
        as_bits: Whether it is sent as the signed integers of the same width (restored by
            reinterpreting them), rather than cast.
    """

    name: str
    original: pa.DataType
    carried: pa.DataType
    as_bits: bool


def carry(table: pa.Table) -> tuple[pa.Table, tuple[CarriedColumn, ...]]:
    """Return ``table`` with each column as a type Spark holds exactly, and how to undo it.

    Args:
        table: The entity rows, as read.

    Returns:
        The same rows and names with carried types, and one :class:`CarriedColumn` per column.

    Raises:
        DataValidationError: If a column's type has no exact form in Spark (a nested column
            with such values, an interval, a union, a 256-bit decimal of more than 38 digits);
            names the column.
    """
    arrays: list[pa.Array] = []
    carried: list[CarriedColumn] = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        values = column.combine_chunks()
        array, how = _carried(values, name)
        arrays.append(array)
        carried.append(CarriedColumn(name, values.type, array.type, how))
    return pa.Table.from_arrays(arrays, names=table.column_names), tuple(carried)


def plan_carry(schema: pa.Schema) -> tuple[CarriedColumn, ...]:
    """Decide from ``schema`` alone how each column travels, for rows read on executors.

    As :func:`carry`, but without the values: a column that may hold a value its Spark type
    cannot (a nanosecond timestamp) goes as bits whenever it has a width, so every batch is
    sent alike; :func:`carry_batch` then sends the batches.

    Raises:
        DataValidationError: If a column's type has no exact form in Spark, as :func:`carry`.
    """
    planned: list[CarriedColumn] = []
    for field in schema:
        held = spark_held_type(field.type)
        lossy = held is None or (pa.types.is_timestamp(field.type) and field.type.unit == "ns")
        width = field.type.bit_width if pa.types.is_primitive(field.type) else 0
        if lossy and width in _INTEGERS:
            planned.append(CarriedColumn(field.name, field.type, _INTEGERS[width], True))
        elif held is not None:
            planned.append(CarriedColumn(field.name, field.type, held, False))
        else:
            raise _cannot_carry(field.name, field.type)
    return tuple(planned)


def carry_batch(batch: pa.RecordBatch, columns: tuple[CarriedColumn, ...]) -> list[pa.Array]:
    """Return ``batch``'s columns as :func:`plan_carry` decided to send them.

    Raises:
        DataValidationError: If a value does not fit its column's Spark type (a nested
            timestamp with nanosecond digits); names the column.
    """
    arrays: list[pa.Array] = []
    for values, column in zip(batch.columns, columns, strict=True):
        if column.as_bits:
            arrays.append(values.view(column.carried))
            continue
        try:
            arrays.append(values.cast(column.carried, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            raise _cannot_carry(column.name, column.original) from None
    return arrays


def restore(values: pa.Array | pa.ChunkedArray, column: CarriedColumn) -> pa.Array:
    """Return ``values`` (a carried column read back) as ``column``'s original type."""
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if column.as_bits:
        return array.view(column.original)
    return array.cast(column.original)


def spark_held_type(arrow_type: pa.DataType) -> pa.DataType | None:
    """Return the type Spark holds that every value of ``arrow_type`` may be cast to.

    ``None`` if there is none; a value may still not fit (a timestamp's nanosecond digits).
    """
    if pa.types.is_dictionary(arrow_type):
        return spark_held_type(arrow_type.value_type)
    if arrow_type in _HELD:
        return arrow_type
    if pa.types.is_decimal(arrow_type):
        fits = arrow_type.precision <= _SPARK_DECIMAL_DIGITS
        return pa.decimal128(arrow_type.precision, arrow_type.scale) if fits else None
    if pa.types.is_timestamp(arrow_type):
        return pa.timestamp("us", "UTC")
    simple = _simple(arrow_type)
    if simple is not None:
        return simple
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return _list(arrow_type.value_type)
    if pa.types.is_fixed_size_list(arrow_type):
        return _list(arrow_type.value_type)
    if pa.types.is_struct(arrow_type):
        fields = [arrow_type.field(i) for i in range(arrow_type.num_fields)]
        held = [spark_held_type(f.type) for f in fields]
        if any(h is None for h in held):
            return None
        return pa.struct(
            [pa.field(f.name, h, f.nullable) for f, h in zip(fields, held, strict=True)]
        )
    if pa.types.is_map(arrow_type):
        key, item = spark_held_type(arrow_type.key_type), spark_held_type(arrow_type.item_type)
        return None if key is None or item is None else pa.map_(key, item)
    return None


def _simple(arrow_type: pa.DataType) -> pa.DataType | None:
    if arrow_type in _WIDER:
        return _WIDER[arrow_type]
    if pa.types.is_float16(arrow_type):
        return pa.float32()
    if pa.types.is_large_string(arrow_type) or pa.types.is_string_view(arrow_type):
        return pa.string()
    binary = (pa.types.is_large_binary, pa.types.is_binary_view, pa.types.is_fixed_size_binary)
    if any(check(arrow_type) for check in binary):
        return pa.binary()
    return None


def _list(element: pa.DataType) -> pa.DataType | None:
    held = spark_held_type(element)
    return None if held is None else pa.list_(held)


def _carried(values: pa.Array, name: str) -> tuple[pa.Array, bool]:
    """Return ``values`` as sent to Spark, and whether they go as bits."""
    held = spark_held_type(values.type)
    if held is not None:
        try:
            return values.cast(held, safe=True), False
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass  # a value does not fit (digits below a microsecond): bits, if it has a width
    width = values.type.bit_width if pa.types.is_primitive(values.type) else 0
    if width in _INTEGERS:
        return values.view(_INTEGERS[width]), True
    raise _cannot_carry(name, values.type)


def _cannot_carry(name: str, arrow_type: pa.DataType) -> DataValidationError:
    return DataValidationError(
        f"the entity rows' column {name!r} holds {arrow_type} values, which Spark cannot carry "
        "exactly; cast the column to another type or drop it (the duckdb offline store keeps "
        "any type)",
        column=name,
        row=None,
    )


__all__ = [
    "CarriedColumn",
    "carry",
    "carry_batch",
    "plan_carry",
    "restore",
    "spark_held_type",
]
