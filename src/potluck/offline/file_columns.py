"""Whether a batch source's Parquet files hold the types their definitions declare.

Batch sources are folders other tools write too (pandas, Spark, DuckDB), and files potluck wrote
under an earlier definition stay after a type widening. A file column may differ from the
declared type and still fit it: any Parquet timestamp unit (s, ms, µs, ns, INT96), naive (read
as UTC) or with any zone, into UNIX_TIMESTAMP; narrower integers into INT64; whole floats into
INT32/INT64; and so on, by the rules of :func:`potluck.offline.convert.convert`, the ones
``ingest()`` applies. An engine asks :func:`check_files` about the columns whose type differs
before it reads them as their declared types; a file that does not fit is named with the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.errors import DataValidationError
from potluck.offline.convert import BadValue, always_fits, can_hold, to_type
from potluck.offline.files import SourceFiles
from potluck.types import ValueType, to_arrow_type


@dataclass(frozen=True)
class DeclaredFileColumn:
    """A source column an engine reads, and the type it must read it as.

    Attributes:
        column: The column's name in the files.
        value_type: Its declared value type.
        expected: What it holds, for errors (``"feature trips (INT64)"``).
    """

    column: str
    value_type: ValueType
    expected: str


def check_files(files: SourceFiles, columns: Sequence[DeclaredFileColumn]) -> None:
    """Check that every value of ``columns`` in ``files`` converts to its declared type.

    Per file, a column of the declared type (or absent) passes at once, and so does one whose
    type always converts (:func:`~potluck.offline.convert.always_fits`: a narrower integer, a
    timestamp of seconds, milliseconds or microseconds, INT96 read as microseconds); only the
    others are read (nanosecond timestamps for digits below a microsecond, wider or float
    numbers for their values).

    Args:
        files: The source's files.
        columns: The columns to check.

    Raises:
        DataValidationError: If a file's column holds a type or a value that does not convert;
            names the file (``path``), the column and, for a value, its row in the file.
    """
    for path in files.paths:
        with _open(files, path) as parquet:
            _check_file(parquet, path, columns)


def _check_file(parquet: pq.ParquetFile, path: str, columns: Sequence[DeclaredFileColumn]) -> None:
    schema = parquet.schema_arrow
    to_read: list[DeclaredFileColumn] = []
    for column in columns:
        if column.column not in schema.names:
            continue
        held = schema.field(column.column).type
        target = to_arrow_type(column.value_type)
        if not can_hold(held, target):
            raise DataValidationError(
                f"file {path!r} column {column.column!r} holds {held} values, which cannot "
                f"be read as {column.expected}; rewrite the file with that type or change "
                "the definition",
                path=path,
                column=column.column,
                row=None,
            )
        if not always_fits(held, target):
            to_read.append(column)
    if to_read:
        _check_values(parquet.read(columns=[c.column for c in to_read]), path, to_read)


def _open(files: SourceFiles, path: str) -> pq.ParquetFile:
    # INT96 timestamps are read as microseconds, as engines read them (Spark writes no digits
    # below a microsecond; int64 nanoseconds would overflow outside years 1677-2262).
    return pq.ParquetFile(path, filesystem=files.filesystem, coerce_int96_timestamp_unit="us")


def _check_values(table: pa.Table, path: str, columns: list[DeclaredFileColumn]) -> None:
    for column in columns:
        try:
            to_type(table.column(column.column), to_arrow_type(column.value_type), column.expected)
        except BadValue as bad:
            raise DataValidationError(
                f"file {path!r} column {column.column!r} row {bad.row}: {bad.detail}",
                path=path,
                column=column.column,
                row=bad.row,
            ) from None


__all__ = ["DeclaredFileColumn", "check_files"]
