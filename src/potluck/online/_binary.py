"""Byte-level building blocks shared by the key codec, the value codec and the Redis writer.

One job: the little-endian layouts of the fixed-width value types, and Arrow binary arrays built
and taken apart without Python work per element (``codec.py`` builds entity keys with them,
``_values.py`` records, ``_redis_writer.py`` RESP frames).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from potluck.types import ValueType

FIXED_DTYPES: dict[ValueType, str] = {
    ValueType.INT32: "<i4",
    ValueType.INT64: "<i8",
    ValueType.DOUBLE: "<f8",
    ValueType.FLOAT: "<f4",
    ValueType.BOOL: "u1",
    ValueType.UNIX_TIMESTAMP: "<i8",
}
"""The numpy dtype of each fixed-width type's bytes (timestamps: µs since the epoch)."""
STRUCT_FORMATS: dict[ValueType, str] = {
    ValueType.INT32: "<i",
    ValueType.INT64: "<q",
    ValueType.DOUBLE: "<d",
    ValueType.FLOAT: "<f",
    ValueType.BOOL: "<B",
    ValueType.UNIX_TIMESTAMP: "<q",
}
"""The same layouts as :data:`FIXED_DTYPES`, as ``struct`` formats (one value at a time)."""
_EMPTY = pa.scalar(b"", pa.binary())


def fixed_width_values(values: pa.Array, value_type: ValueType) -> npt.NDArray[Any]:
    """Return a non-null fixed-width column as numpy, in the dtype :data:`FIXED_DTYPES` says."""
    if value_type is ValueType.UNIX_TIMESTAMP:
        values = values.cast(pa.int64())
    elif value_type is ValueType.BOOL:
        values = values.cast(pa.uint8())
    return np.asarray(values.to_numpy(zero_copy_only=False)).astype(FIXED_DTYPES[value_type])


def valid_mask(values: pa.Array) -> npt.NDArray[np.bool_]:
    """Return, per element of ``values``, whether it is not null."""
    return np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


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


def binary_buffers(values: pa.BinaryArray) -> tuple[pa.Buffer, npt.NDArray[np.int32]]:
    """Return the data buffer of a binary array and each element's start offset in it.

    The offsets hold one more item than ``values``: where the last element ends.
    """
    _, offsets_buffer, data = values.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, len(values) + 1, 4 * values.offset)
    return data, offsets


def u32_prefixed(values: pa.Array) -> pa.BinaryArray:
    """Prefix each element of a binary or string array with its byte length (u32 LE)."""
    binary = values.cast(pa.binary())
    lengths = pc.binary_length(binary).fill_null(0).to_numpy().astype("<u4")
    return concat_elementwise([fixed_width_binary(lengths), binary])


def concat_elementwise(parts: Sequence[pa.Array | pa.Scalar]) -> pa.BinaryArray:
    """Concatenate binary arrays (and scalars, repeated) element by element."""
    return pc.binary_join_element_wise(*parts, _EMPTY)


def regroup(elements: pa.BinaryArray, counts: npt.NDArray[np.int64]) -> pa.BinaryArray:
    """Concatenate consecutive elements: row ``i`` gets the next ``counts[i]`` of them."""
    if len(elements) == 0:
        return binary_from_lengths(np.zeros(len(counts), dtype=np.int64), b"")
    data, offsets = binary_buffers(elements)
    bounds = offsets[np.concatenate([[0], np.cumsum(counts)])].astype(np.int64)
    return binary_from_lengths(
        np.diff(bounds), data.slice(int(bounds[0]), int(bounds[-1] - bounds[0]))
    )
