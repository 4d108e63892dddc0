"""The bytes an online store keeps per entity key, built from and read back into Arrow.

One job: turn feature columns into one *record* per key (every feature value, type-tagged) and
turn stored records back into Arrow columns, with the times stored beside them. Every store uses
it, so SQLite and Redis cannot disagree on what a stored value is.

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
features never misreads stored data. Values are decoded by the type they were *written* with
(their tag): a value written under a type that widens losslessly to the feature's current type
(:func:`potluck.types.is_lossless_widening`: INT32 to INT64 or DOUBLE, FLOAT to DOUBLE, STRING to
BYTES, and the same for lists) reads as the current type, as a training set converts it; a value
of any other type (after a forced type change that is not a widening) reads as null.

**Times** beside a record (event, created, expiry) are microseconds since the epoch
(:func:`now_micros`), within :data:`MAX_ABS_MICROS`; :data:`NULL_CREATED` stands for a null
created time and :data:`NEVER` for no expiry. A value expires at ``event + max_age``
(:func:`expiry_micros`), and one that would expire after :data:`MAX_ABS_MICROS` never does, so
every finite expiry is exact as an IEEE double too (Redis computes expiries in Lua).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from functools import cache, lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.feature import Feature
from potluck.online._binary import (
    FIXED_DTYPES,
    STRUCT_FORMATS,
    binary_from_lengths,
    concat_elementwise,
    fixed_width_binary,
    fixed_width_values,
    regroup,
    u32_prefixed,
    valid_mask,
)
from potluck.types import ValueType, is_lossless_widening, to_arrow_type

NULL_CREATED = -(2**63)
"""The created time stored for a null created timestamp: it sorts before every real one."""
NEVER = 2**63 - 1
"""The expiry stored for a value that never expires (the table has no ``max_age``)."""
MAX_ABS_MICROS = 2**53 - 1
"""Timestamps must lie within this many microseconds of the epoch (years 1685 to 2255), so
they compare exactly as IEEE doubles (Redis compares them in Lua)."""
MAX_AGE_CAP_MICROS = 2**62
"""A ``max_age`` longer than this (146,000 years) counts as this: event plus max_age then fits an
int64, and is past :data:`MAX_ABS_MICROS` anyway, so the value never expires."""

NULL_ELEMENTS_FLAG = 0x80
_NULL = pa.scalar(b"", pa.binary())
"""A null value: no bytes."""
_U32 = struct.Struct("<I")
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_VARIABLE = frozenset({ValueType.STRING, ValueType.BYTES})


def _tag(value_type: ValueType) -> pa.Scalar:
    return pa.scalar(bytes([value_type.value]), pa.binary())


def encode_values(values: pa.Array, value_type: ValueType) -> pa.BinaryArray:
    """Encode one feature column; a null value becomes empty bytes.

    Args:
        values: The column, already of type ``to_arrow_type(value_type)``.
        value_type: The feature's type.

    Returns:
        A binary array without nulls, one encoded value per row.
    """
    if value_type in FIXED_DTYPES:
        valid = valid_mask(values)
        record = np.dtype([("tag", "u1"), ("value", FIXED_DTYPES[value_type])])
        present = values.filter(pa.array(valid)) if values.null_count else values
        items = np.empty(len(present), dtype=record)
        items["tag"] = value_type.value
        items["value"] = fixed_width_values(present, value_type)
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
    if element in FIXED_DTYPES:
        elements = fixed_width_binary(fixed_width_values(flat, element))
    else:
        elements = u32_prefixed(flat)
    counts = pc.list_value_length(values).fill_null(0).to_numpy().astype(np.int64)
    joined = concat_elementwise(
        [_tag(value_type), fixed_width_binary(counts.astype("<u4")), regroup(elements, counts)]
    )
    if values.null_count == 0:
        return joined
    return pc.if_else(values.is_valid(), joined, _NULL)


def _encode_lists_with_nulls(values: pa.Array, element: ValueType) -> pa.BinaryArray:
    """Encode list values that hold null elements, one by one (the rare, slow path)."""
    if element in (ValueType.UNIX_TIMESTAMP, ValueType.BOOL):
        values = values.cast(pa.list_(pa.int64()))
    tag = (element.value + 10) | NULL_ELEMENTS_FLAG
    width = np.dtype(FIXED_DTYPES.get(element, "u1")).itemsize

    def one(item: Any) -> bytes:
        if element in _VARIABLE:
            data = b"" if item is None else item.encode() if isinstance(item, str) else item
            return _U32.pack(len(data)) + data
        return bytes(width) if item is None else struct.pack(STRUCT_FORMATS[element], item)

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
"""Decode the value at ``blob[begin:end]`` (non-empty) as a type: by its own tag when that is
the type or a type that widens losslessly to it; ``None`` for any other tag."""


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
    other = _other_tags(value_type)
    if value_type.is_list:
        decode_list = _list_decoder(value_type.element_type)

        def decode_a_list(b: bytes, s: int, e: int) -> Any:
            return decode_list(b[s:e]) if b[s] & ~NULL_ELEMENTS_FLAG == tag else other(b, s, e)

        return decode_a_list
    if value_type is ValueType.STRING:
        return lambda b, s, e: b[s + 1 : e].decode() if b[s] == tag else other(b, s, e)
    if value_type is ValueType.BYTES:
        return lambda b, s, e: b[s + 1 : e] if b[s] == tag else other(b, s, e)
    if value_type is ValueType.BOOL:
        return lambda b, s, e: b[s + 1] != 0 if b[s] == tag else other(b, s, e)
    unpack = struct.Struct(STRUCT_FORMATS[value_type]).unpack_from
    return lambda b, s, e: unpack(b, s + 1)[0] if b[s] == tag else other(b, s, e)


def _other_tags(value_type: ValueType) -> _Decoder:
    """Decode a value whose tag is not ``value_type``'s: widen it if its type allows, else null."""
    sources = {
        source.value: (_decoder(source), _widen(value_type))
        for source in ValueType
        if is_lossless_widening(source, value_type)
    }
    if not sources:
        return lambda b, s, e: None

    def widen(b: bytes, s: int, e: int) -> Any:
        found = sources.get(b[s] & ~NULL_ELEMENTS_FLAG)
        if found is None:
            return None
        decode, convert = found
        return convert(decode(b, s, e))

    return widen


def _widen(value_type: ValueType) -> Callable[[Any], Any]:
    """Return how a decoded value of a narrower type becomes a value of ``value_type``."""
    element = value_type.element_type
    one: Callable[[Any], Any] = (
        float if element is ValueType.DOUBLE else str.encode if element is ValueType.BYTES else int
    )
    if not value_type.is_list:
        return one
    return lambda items: [None if item is None else one(item) for item in items]


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
            items = np.frombuffer(b, FIXED_DTYPES[element], count, pos).tolist()
            if element is ValueType.BOOL:
                items = [item != 0 for item in items]
        if present is not None:
            items = [item if ok else None for item, ok in zip(items, present, strict=True)]
        return items

    return decode


def max_age_micros(max_age: timedelta | None) -> int | None:
    """Return ``max_age`` in whole microseconds, at most :data:`MAX_AGE_CAP_MICROS`."""
    if max_age is None:
        return None
    return min(max_age // _MICROSECOND, MAX_AGE_CAP_MICROS)


def expiry_micros(event_us: npt.NDArray[np.int64], max_age_us: int | None) -> npt.NDArray[np.int64]:
    """Return when values with these event times expire: ``event + max_age``, in µs.

    Args:
        event_us: Event times, µs since the epoch, within :data:`MAX_ABS_MICROS`.
        max_age_us: From :func:`max_age_micros`; ``None`` (no max_age) never expires.

    Returns:
        One expiry per event time; :data:`NEVER` where there is no max_age or the expiry would
        fall after :data:`MAX_ABS_MICROS`.
    """
    if max_age_us is None:
        return np.full(len(event_us), NEVER, dtype=np.int64)
    expire = event_us + np.int64(max_age_us)
    expire[expire > MAX_ABS_MICROS] = NEVER
    return expire


def now_micros(now: datetime | None = None) -> int:
    """Return ``now`` (default: the current time; naive means UTC) in µs since the epoch."""
    if now is None:
        return time.time_ns() // 1000
    aware = now if now.tzinfo is not None else now.replace(tzinfo=timezone.utc)
    return (aware - _EPOCH) // _MICROSECOND
