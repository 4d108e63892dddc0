"""The bytes an online store keeps per entity key, built from and read back into Arrow.

One job: turn a write batch into one *record* per key (every feature value, type-tagged) and
turn stored records back into Arrow columns. Every store uses it, so SQLite and Redis cannot
disagree on what a stored value is.

A **value** is empty for null, else a one-byte tag (the ``ValueType`` number) and a payload:

=====================  =================================================================
scalar                 payload
=====================  =================================================================
INT32 / FLOAT          4 bytes little-endian (two's complement / IEEE 754)
INT64 / DOUBLE         8 bytes little-endian
UNIX_TIMESTAMP         int64 little-endian, microseconds since the Unix epoch (UTC)
BOOL                   1 byte, 0 or 1
STRING / BYTES         the UTF-8 text / the bytes (the length is the value's length)
=====================  =================================================================

A list is ``tag, u32 count, elements``: fixed-width elements back to back, strings and bytes
each as ``u32 length, bytes``. A list holding null elements sets bit 0x80 in its tag and puts a
validity bitmap (``ceil(count / 8)`` bytes, least significant bit first, 1 = present) after the
count; a null element is zero bytes of its width (or length 0).

A **record** is ``u32 L, names, ends, values``: ``names`` is the feature names joined by ``,``
(``L`` bytes), ``ends`` one u32 per feature (where its value ends, counted from the start of
``values``), then the values back to back. Records name their features, so adding or removing
features never misreads stored data. A value whose tag does not match the feature's current type
(after a forced type change) reads as null.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import DataValidationError, FeatureRefError
from potluck.online.base import (
    CREATED_TIMESTAMP_COLUMN,
    ENTITY_KEY_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
)
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

NULL_CREATED = -(2**63)
"""The created time stored for a null created timestamp: it sorts before every real one."""
NEVER = 2**63 - 1
"""The expiry stored for a value that never expires (the table has no ``max_age``)."""
MAX_ABS_MICROS = 2**53 - 1
"""Timestamps must lie within this many microseconds of the epoch (years 1685 to 2255), so
they compare exactly as IEEE doubles (Redis compares them in Lua)."""

NULL_ELEMENTS_FLAG = 0x80
_EMPTY = pa.scalar(b"", pa.binary())
_U32 = struct.Struct("<I")
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_FIXED: dict[ValueType, str] = {
    ValueType.INT32: "<i4",
    ValueType.INT64: "<i8",
    ValueType.DOUBLE: "<f8",
    ValueType.FLOAT: "<f4",
    ValueType.BOOL: "u1",
    ValueType.UNIX_TIMESTAMP: "<i8",
}
_STRUCT: dict[ValueType, str] = {
    ValueType.INT32: "<i",
    ValueType.INT64: "<q",
    ValueType.DOUBLE: "<d",
    ValueType.FLOAT: "<f",
    ValueType.BOOL: "<B",
    ValueType.UNIX_TIMESTAMP: "<q",
}
_VARIABLE = frozenset({ValueType.STRING, ValueType.BYTES})

Int64s = npt.NDArray[np.int64]


def fixed_width_binary(data: npt.NDArray[Any]) -> pa.BinaryArray:
    """Return a binary array with one element per item of ``data`` (its raw bytes)."""
    lengths = np.full(len(data), data.dtype.itemsize, dtype=np.int64)
    return binary_from_lengths(lengths, np.ascontiguousarray(data).tobytes())


def binary_from_lengths(lengths: npt.NDArray[np.int64], data: bytes | pa.Buffer) -> pa.BinaryArray:
    """Cut ``data`` into consecutive binary elements of the given ``lengths``."""
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    buffer = data if isinstance(data, pa.Buffer) else pa.py_buffer(data)
    return pa.Array.from_buffers(pa.binary(), len(lengths), [None, pa.py_buffer(offsets), buffer])


def u32_prefixed(values: pa.Array) -> pa.BinaryArray:
    """Prefix each element of a binary or string array with its byte length (u32 LE)."""
    binary = values.cast(pa.binary())
    lengths = pc.binary_length(binary).fill_null(0).to_numpy().astype("<u4")
    return concat_elementwise([fixed_width_binary(lengths), binary])


def concat_elementwise(parts: Sequence[pa.Array | pa.Scalar]) -> pa.BinaryArray:
    """Concatenate binary arrays (and scalars, repeated) element by element."""
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _regroup(elements: pa.BinaryArray, counts: npt.NDArray[np.int64]) -> pa.BinaryArray:
    """Concatenate consecutive elements: row ``i`` gets the next ``counts[i]`` of them."""
    if len(elements) == 0:
        return binary_from_lengths(np.zeros(len(counts), dtype=np.int64), b"")
    _, offsets_buffer, data = elements.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, len(elements) + 1, 4 * elements.offset)
    bounds = offsets[np.concatenate([[0], np.cumsum(counts)])].astype(np.int64)
    return binary_from_lengths(
        np.diff(bounds), data.slice(int(bounds[0]), int(bounds[-1] - bounds[0]))
    )


def _numpy_values(values: pa.Array, value_type: ValueType) -> npt.NDArray[Any]:
    """Return the values of a non-null fixed-width array as numpy, in the payload's dtype."""
    if value_type is ValueType.UNIX_TIMESTAMP:
        values = values.cast(pa.int64())
    elif value_type is ValueType.BOOL:
        values = values.cast(pa.uint8())
    return np.asarray(values.to_numpy(zero_copy_only=False)).astype(_FIXED[value_type])


def _tag(value_type: ValueType) -> pa.Scalar:
    return pa.scalar(bytes([value_type.value]), pa.binary())


def _valid_mask(values: pa.Array) -> npt.NDArray[np.bool_]:
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def encode_values(values: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    """Encode one feature column; a null value becomes empty bytes.

    Args:
        values: The column, already of type ``to_arrow_type(value_type)``.
        value_type: The feature's type.

    Returns:
        A binary array without nulls, one encoded value per row.
    """
    if value_type in _FIXED:
        valid = _valid_mask(values)
        record = np.dtype([("tag", "u1"), ("value", _FIXED[value_type])])
        present = values.filter(pa.array(valid)) if values.null_count else values
        items = np.empty(len(present), dtype=record)
        items["tag"] = value_type.value
        items["value"] = _numpy_values(present, value_type)
        lengths = np.where(valid, record.itemsize, 0).astype(np.int64)
        return binary_from_lengths(lengths, items.tobytes())
    if value_type in _VARIABLE:
        return concat_elementwise([_tag(value_type), values.cast(pa.binary())]).fill_null(b"")
    return _encode_lists(values, value_type)


def _encode_lists(values: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    element = value_type.element_type
    flat = pc.list_flatten(values)
    if flat.null_count:
        return _encode_lists_with_nulls(values, element)
    if element in _FIXED:
        elements = fixed_width_binary(_numpy_values(flat, element))
    else:
        elements = u32_prefixed(flat)
    counts = pc.list_value_length(values).fill_null(0).to_numpy().astype(np.int64)
    joined = concat_elementwise(
        [_tag(value_type), fixed_width_binary(counts.astype("<u4")), _regroup(elements, counts)]
    )
    if values.null_count == 0:
        return joined
    return pc.if_else(values.is_valid(), joined, _EMPTY)


def _encode_lists_with_nulls(values: pa.Array, element: ValueType) -> pa.BinaryArray:
    """Encode list values that hold null elements, one by one (the rare, slow path)."""
    if element in (ValueType.UNIX_TIMESTAMP, ValueType.BOOL):
        values = values.cast(pa.list_(pa.int64()))
    tag = (element.value + 10) | NULL_ELEMENTS_FLAG
    width = np.dtype(_FIXED.get(element, "u1")).itemsize

    def one(item: Any) -> bytes:
        if element in _VARIABLE:
            data = b"" if item is None else item.encode() if isinstance(item, str) else item
            return _U32.pack(len(data)) + data
        return bytes(width) if item is None else struct.pack(_STRUCT[element], item)

    def encode(items: list[Any] | None) -> bytes:
        if items is None:
            return b""
        if all(item is not None for item in items):
            return (
                bytes([tag & ~NULL_ELEMENTS_FLAG])
                + _U32.pack(len(items))
                + b"".join(map(one, items))
            )
        bits = np.packbits([item is not None for item in items], bitorder="little").tobytes()
        return bytes([tag]) + _U32.pack(len(items)) + bits + b"".join(map(one, items))

    return pa.array([encode(items) for items in values.to_pylist()], pa.binary())


def encode_records(
    columns: Sequence[pa.Array], features: Sequence[Feature], prefix: pa.Array | None = None
) -> pa.BinaryArray:
    """Encode one record per row from one column per feature (same order as ``features``).

    Args:
        columns: One column per feature, typed as ``to_arrow_type`` says.
        features: The features, in the order their values are stored.
        prefix: Bytes to put before each row's record (a store's header), if any.
    """
    names = ",".join(f.name for f in features).encode()
    values = [encode_values(c, f.value_type) for c, f in zip(columns, features, strict=True)]
    lengths = np.stack([pc.binary_length(v).to_numpy() for v in values], axis=1)
    ends = np.ascontiguousarray(np.cumsum(lengths, axis=1).astype("<u4"))
    ends_per_row = ends.view(np.dtype((np.void, 4 * len(features)))).reshape(len(ends))
    head = pa.scalar(struct.pack("<I", len(names)) + names, pa.binary())
    parts = [head, fixed_width_binary(ends_per_row), *values]
    return concat_elementwise(parts if prefix is None else [prefix, *parts])


_Decoder = Callable[[bytes, int, int], Any]
"""Decode the value at ``blob[begin:end]`` (non-empty); ``None`` if its tag is not the type's."""


@lru_cache(maxsize=1024)
def _names(block: bytes) -> dict[str, int]:
    return {name: i for i, name in enumerate(block.decode().split(","))}


def decode_records(
    records: Sequence[bytes | None], start: int, features: Sequence[Feature]
) -> list[pa.Array]:
    """Read the given features out of stored records.

    Args:
        records: One stored blob per row; ``None`` for a row without a value.
        start: Where the record begins inside each blob (stores may put a header first).
        features: The features to return.

    Returns:
        One Arrow array per feature, typed as ``to_arrow_type`` says.
    """
    decoders = [_decoder(f.value_type) for f in features]
    columns: list[list[Any]] = [[None] * len(records) for _ in features]
    plans: dict[bytes, tuple[struct.Struct, int, list[tuple[list[Any], int, _Decoder]]]] = {}
    for row, blob in enumerate(records):
        if blob is None:
            continue
        (size,) = _U32.unpack_from(blob, start)
        names_end = start + 4 + size
        names = blob[start + 4 : names_end]
        plan = plans.get(names)
        if plan is None:
            index = _names(names)
            targets = [
                (column, index[f.name], decode)
                for column, f, decode in zip(columns, features, decoders, strict=True)
                if f.name in index
            ]
            plan = plans[names] = (struct.Struct(f"<{len(index)}I"), 4 * len(index), targets)
        ends_struct, ends_size, targets = plan
        ends = ends_struct.unpack_from(blob, names_end)
        base = names_end + ends_size
        for column, i, decode in targets:
            begin = base + ends[i - 1] if i else base
            end = base + ends[i]
            if end > begin:
                column[row] = decode(blob, begin, end)
    return [
        pa.array(column, _arrow_type(f.value_type))
        for column, f in zip(columns, features, strict=True)
    ]


@cache
def _arrow_type(value_type: ValueType) -> pa.DataType:
    return to_arrow_type(value_type)


@cache
def _decoder(value_type: ValueType) -> _Decoder:
    tag = value_type.value
    if value_type.is_list:
        decode_list = _list_decoder(value_type.element_type)

        def decode_a_list(b: bytes, s: int, e: int) -> Any:
            return decode_list(b[s:e]) if b[s] & ~NULL_ELEMENTS_FLAG == tag else None

        return decode_a_list
    if value_type is ValueType.STRING:
        return lambda b, s, e: b[s + 1 : e].decode() if b[s] == tag else None
    if value_type is ValueType.BYTES:
        return lambda b, s, e: b[s + 1 : e] if b[s] == tag else None
    if value_type is ValueType.BOOL:
        return lambda b, s, e: b[s + 1] != 0 if b[s] == tag else None
    unpack = struct.Struct(_STRUCT[value_type]).unpack_from
    return lambda b, s, e: unpack(b, s + 1)[0] if b[s] == tag else None


def _list_decoder(element: ValueType) -> Callable[[bytes], list[Any]]:
    def decode(b: bytes) -> list[Any]:
        (count,) = _U32.unpack_from(b, 1)
        pos = 5
        present: list[bool] | None = None
        if b[0] & NULL_ELEMENTS_FLAG:
            size = (count + 7) // 8
            bits = np.unpackbits(np.frombuffer(b, np.uint8, size, pos), bitorder="little")
            present = bits[:count].astype(bool).tolist()
            pos += size
        items: list[Any]
        if element in _VARIABLE:
            items = []
            for _ in range(count):
                (length,) = _U32.unpack_from(b, pos)
                data = b[pos + 4 : pos + 4 + length]
                items.append(data.decode() if element is ValueType.STRING else data)
                pos += 4 + length
        else:
            items = np.frombuffer(b, _FIXED[element], count, pos).tolist()
            if element is ValueType.BOOL:
                items = [item != 0 for item in items]
        if present is not None:
            items = [item if ok else None for item, ok in zip(items, present, strict=True)]
        return items

    return decode


@dataclass(frozen=True)
class PreparedRows:
    """A validated write batch, one row per key; records are encoded on demand, by range.

    Attributes:
        keys: The encoded entity keys, unique.
        event_us: Event times, microseconds since the epoch.
        created_us: Created times; :data:`NULL_CREATED` for null.
        expire_us: When each value expires; :data:`NEVER` if the table has no ``max_age``.
        columns: One validated column per feature of ``features``.
        features: The table's features.
        skipped: Rows of the batch dropped here: already expired, or losing to a newer row of
            the same key in the batch.
    """

    keys: pa.BinaryArray
    event_us: Int64s
    created_us: Int64s
    expire_us: Int64s
    columns: tuple[pa.Array, ...]
    features: tuple[Feature, ...]
    skipped: int

    def __len__(self) -> int:
        return len(self.keys)

    def records(
        self, start: int = 0, stop: int | None = None, prefix: pa.Array | None = None
    ) -> pa.BinaryArray:
        """Encode the records of rows ``[start, stop)``, each after its ``prefix`` if given.

        Encoding by range lets a store send one part while it encodes the next.
        """
        stop = len(self) if stop is None else min(stop, len(self))
        columns = [c.slice(start, stop - start) for c in self.columns]
        return encode_records(columns, self.features, prefix)


def prepare_rows(table: FeatureTable, rows: pa.RecordBatch, now_us: int) -> PreparedRows:
    """Validate a write batch: everything that can be wrong with it is found here.

    Rows already expired at ``now_us`` (``event_timestamp + max_age <= now``) are skipped; of
    rows sharing a key only the newest is kept (an exact tie keeps the first).

    Raises:
        DataValidationError: If a column is missing, null where it may not be, of a type that
            cannot be cast to the feature's type, or a timestamp is out of range; ``column``
            (and ``row`` where known) locate it. Nothing is written.
    """
    keys = _column(rows, ENTITY_KEY_COLUMN, table)
    if not (pa.types.is_binary(keys.type) or pa.types.is_large_binary(keys.type)):
        raise DataValidationError(
            f"column {ENTITY_KEY_COLUMN!r} must be binary (from potluck.online.codec), "
            f"got {keys.type}",
            column=ENTITY_KEY_COLUMN,
            row=None,
        )
    keys = keys.cast(pa.binary())
    _no_nulls(keys, ENTITY_KEY_COLUMN)
    event_us = _micros(_column(rows, EVENT_TIMESTAMP_COLUMN, table), EVENT_TIMESTAMP_COLUMN)
    _no_nulls(event_us, EVENT_TIMESTAMP_COLUMN)
    if CREATED_TIMESTAMP_COLUMN in rows.schema.names:
        created = _micros(rows.column(CREATED_TIMESTAMP_COLUMN), CREATED_TIMESTAMP_COLUMN)
    else:
        created = pa.nulls(rows.num_rows, pa.int64())
    columns = [_feature_column(rows, f, table) for f in table.features]
    event = np.asarray(event_us.to_numpy(zero_copy_only=False), dtype=np.int64)
    created_np = np.asarray(created.fill_null(NULL_CREATED).to_numpy(), dtype=np.int64)
    if table.max_age is None:
        expire = np.full(len(event), NEVER, dtype=np.int64)
    else:
        expire = event + table.max_age // _MICROSECOND
    keep = expire > now_us
    if pc.count_distinct(keys).as_py() != len(keys):
        keep &= _newest_per_key(keys, event, created_np)
    skipped = len(keep) - int(keep.sum())
    if skipped:
        mask = pa.array(keep)
        keys = keys.filter(mask)
        columns = [c.filter(mask) for c in columns]
        event, created_np, expire = event[keep], created_np[keep], expire[keep]
    return PreparedRows(
        keys=keys,
        event_us=event,
        created_us=created_np,
        expire_us=expire,
        columns=tuple(columns),
        features=table.features,
        skipped=skipped,
    )


def _column(rows: pa.RecordBatch, name: str, table: FeatureTable) -> pa.Array:
    if name not in rows.schema.names:
        raise DataValidationError(
            f"write to feature table {table.name!r}: column {name!r} is missing",
            column=name,
            row=None,
        )
    return rows.column(name)


def _no_nulls(values: pa.Array, name: str) -> None:
    if values.null_count:
        row = int(np.argmin(_valid_mask(values)))
        raise DataValidationError(
            f"column {name!r}: row {row} is null; it must not be", column=name, row=row
        )


def _micros(values: pa.Array, name: str) -> pa.Array:
    if not pa.types.is_timestamp(values.type):
        raise DataValidationError(
            f"column {name!r} must be a timestamp, got {values.type}", column=name, row=None
        )
    micros = values.cast(TIMESTAMP_ARROW_TYPE, safe=False).cast(pa.int64())
    bad = pc.greater(pc.abs(micros), MAX_ABS_MICROS).fill_null(False)
    if pc.any(bad).as_py():
        row = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
        raise DataValidationError(
            f"column {name!r}: row {row} holds {values[row]}, outside the supported range "
            "(years 1685 to 2255)",
            column=name,
            row=row,
        )
    return micros


def _feature_column(rows: pa.RecordBatch, feature: Feature, table: FeatureTable) -> pa.Array:
    values = _column(rows, feature.name, table)
    target = to_arrow_type(feature.value_type)
    if values.type == target:
        return values
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataValidationError(
            f"column {feature.name!r}: cannot cast {values.type} to {feature.value_type.name} "
            f"({target}): {exc}",
            column=feature.name,
            row=None,
        ) from None


def _newest_per_key(keys: pa.BinaryArray, event: Int64s, created: Int64s) -> npt.NDArray[np.bool_]:
    """Mark the newest row of each key (ties: the first in batch order)."""
    order = pc.sort_indices(
        pa.table({"k": keys, "e": event, "c": created}),
        sort_keys=[("k", "ascending"), ("e", "descending"), ("c", "descending")],
    )
    ordered = keys.take(order)
    first = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)
    keep = np.zeros(len(keys), dtype=bool)
    keep[order.to_numpy()[first]] = True
    return keep


def now_micros(now: datetime | None = None) -> int:
    """Return ``now`` (default: the current time; naive means UTC) in µs since the epoch."""
    if now is None:
        return time.time_ns() // 1000
    aware = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    return (aware - _EPOCH) // _MICROSECOND


def requested_features(table: FeatureTable, names: Sequence[str]) -> list[Feature]:
    """Return the features of ``table`` called ``names``, in that order.

    Raises:
        FeatureRefError: If the table has no feature of one of the names.
    """
    known = {f.name: f for f in table.features}
    for name in names:
        if name not in known:
            raise FeatureRefError(
                f"feature table {table.name!r} has no feature {name!r}", ref=f"{table.name}:{name}"
            )
    return [known[name] for name in names]
