"""User input as Arrow: a pandas DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL.

``ingest()`` and ``get_historical_features()`` read the rows they are given here, so both accept
the same kinds of input; files are read through ``pyarrow.fs`` (local paths and URLs alike).
The columns a caller needs are read by the types their definitions declare (see
:class:`DeclaredColumn`): CSV fields by :mod:`potluck.offline.csv_text`, DataFrame object
columns by :mod:`potluck.offline.objects`; typed columns are left for
:func:`potluck.offline.convert.convert`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import DataValidationError, ValidationError
from potluck.offline.convert import first_failure
from potluck.offline.csv_text import read_csv_column
from potluck.offline.files import BATCH_SIZE, filesystem_for, os_error
from potluck.offline.objects import from_objects

if TYPE_CHECKING:
    import pandas as pd

InputData: TypeAlias = "pd.DataFrame | pa.Table | str | os.PathLike[str]"
"""What ``ingest()`` and ``get_historical_features()`` accept as rows."""


@dataclass(frozen=True)
class DeclaredColumn:
    """A column the caller needs, and the type its definition declares for it.

    Attributes:
        name: The column's name in the input.
        arrow_type: The Arrow type of its declared value type.
        expected: What it holds, for errors (``"feature trips (INT64)"``).
    """

    name: str
    arrow_type: pa.DataType
    expected: str


@dataclass
class InputBatches:
    """User input as a stream of Arrow batches.

    Attributes:
        schema: The columns of the batches.
        num_rows: The row count when known up front (``None`` for CSV).
        batches: The rows, in order.
        columns: The names of every column of the input, for messages (the batches may hold
            fewer).
        from_csv: Whether the columns are CSV text still to be read by
            :func:`~potluck.offline.csv_text.read_csv_column`.
    """

    schema: pa.Schema
    num_rows: int | None
    batches: Iterator[pa.RecordBatch]
    columns: tuple[str, ...]
    from_csv: bool = False


def open_input(
    data: InputData, declared: Sequence[DeclaredColumn], *, keep_other_columns: bool = False
) -> InputBatches:
    """Open ``data`` (a DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL).

    Every CSV column is read as text (an unquoted empty field is null). A DataFrame's declared
    columns of object dtype are read by their declared types
    (:func:`~potluck.offline.objects.from_objects`), its other columns by pyarrow.

    Args:
        data: The rows.
        declared: The columns the caller needs, with their declared types; those missing from
            ``data`` are left out (the caller reports them).
        keep_other_columns: Keep the input's other columns too; otherwise they are never read
            (so a column the caller does not need cannot fail the read).

    Raises:
        ValidationError: If ``data`` is of another kind, or a file cannot be read.
        DataValidationError: If a DataFrame column holds a value that does not fit; names the
            column and its row (0-based).
    """
    wanted = None if keep_other_columns else {d.name for d in declared}
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        names = tuple(data.column_names)
        check_unique_columns(names, "the table")
        if wanted is not None:
            data = data.select([n for n in names if n in wanted])
        return InputBatches(data.schema, data.num_rows, iter(data.to_batches(BATCH_SIZE)), names)
    if isinstance(data, (str, os.PathLike)):
        return _open_file(os.fspath(data), wanted)
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        names = tuple(str(n) for n in data.columns)
        check_unique_columns(names, "the DataFrame")
        table = frame_to_table(data, declared, keep_other_columns=keep_other_columns)
        return InputBatches(table.schema, table.num_rows, iter(table.to_batches(BATCH_SIZE)), names)
    raise ValidationError(
        "rows must be a pandas DataFrame, a pyarrow Table, or the path of a .parquet or .csv "
        f"file, got {type(data).__name__}"
    )


def read_table(data: InputData, declared: Sequence[DeclaredColumn]) -> pa.Table:
    """Read ``data`` (as :func:`open_input` accepts it) whole, every column kept.

    The declared columns of a CSV file are read by their declared types; its other columns stay
    text. Other inputs are returned as :func:`open_input` gives them.

    Raises:
        ValidationError: If ``data`` cannot be read.
        DataValidationError: If a declared column holds a value that does not fit its type.
    """
    opened = open_input(data, declared, keep_other_columns=True)
    table = pa.Table.from_batches(list(opened.batches), schema=opened.schema)
    if not opened.from_csv:
        return table
    for column in declared:
        if column.name in table.column_names:
            index = table.column_names.index(column.name)
            values = read_csv_column(
                table.column(index),
                column.arrow_type,
                column=column.name,
                expected=column.expected,
            )
            table = table.set_column(index, column.name, values)
    return table


def _open_file(path: str, wanted: set[str] | None) -> InputBatches:
    fs, inner = filesystem_for(path)
    suffix = inner.rsplit(".", 1)[-1].lower() if "." in inner.rsplit("/", 1)[-1] else ""
    if suffix not in ("parquet", "csv"):
        raise ValidationError(f"cannot read {path!r}: expected a .parquet or .csv file", path=path)
    try:
        if suffix == "parquet":
            parquet = pq.ParquetFile(fs.open_input_file(inner))
            names = tuple(parquet.schema_arrow.names)
            check_unique_columns(names, repr(path))
            read = list(names) if wanted is None else [n for n in names if n in wanted]
            return InputBatches(
                pa.schema([parquet.schema_arrow.field(n) for n in read]),
                parquet.metadata.num_rows,
                read_errors(parquet.iter_batches(batch_size=BATCH_SIZE, columns=read), path),
                names,
            )
        return _open_csv(fs, inner, wanted, path)
    except FileNotFoundError:
        raise ValidationError(f"cannot read {path!r}: no such file", path=path) from None
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    except pa.ArrowInvalid as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}", path=path) from None


def check_unique_columns(names: Sequence[str], where: str) -> None:
    """Refuse input that names a column twice: which of the two to read would be a guess.

    Args:
        names: The input's column names, in order.
        where: The input, for the message (``"the DataFrame"``, ``"'rows.csv'"``).

    Raises:
        DataValidationError: Naming the first repeated column and its positions (0-based).
    """
    seen: dict[str, int] = {}
    for position, name in enumerate(names):
        if name in seen:
            raise DataValidationError(
                f"column {name!r} appears twice in {where} (columns {seen[name]} and "
                f"{position}, 0-based); rename or drop one of them",
                column=name,
                row=None,
            )
        seen[name] = position


def _open_csv(fs: pafs.FileSystem, path: str, wanted: set[str] | None, given: str) -> InputBatches:
    convert = pacsv.ConvertOptions(
        default_column_type=pa.string(),
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    reader = pacsv.open_csv(
        fs.open_input_stream(path),
        read_options=pacsv.ReadOptions(block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=convert,
    )
    names = tuple(reader.schema.names)
    check_unique_columns(names, f"the header of {given!r}")
    if wanted is None:
        return InputBatches(
            reader.schema, None, read_errors(iter(reader), given), names, from_csv=True
        )
    read = [n for n in names if n in wanted]
    schema = pa.schema([reader.schema.field(n) for n in read])
    batches = (batch.select(read) for batch in reader)
    return InputBatches(schema, None, read_errors(batches, given), names, from_csv=True)


def read_errors(batches: Iterator[pa.RecordBatch], path: str) -> Iterator[pa.RecordBatch]:
    """Yield ``batches``, turning a failure to read a later part of the file into our errors.

    A file is read batch by batch, so a malformed CSV line or a damaged Parquet page past the
    first block fails only as it is reached.
    """
    try:
        yield from batches
    except FileNotFoundError:
        raise ValidationError(f"cannot read {path!r}: no such file", path=path) from None
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    except pa.ArrowInvalid as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}", path=path) from None


def frame_to_table(
    frame: pd.DataFrame, declared: Sequence[DeclaredColumn], *, keep_other_columns: bool
) -> pa.Table:
    """Convert a pandas DataFrame to Arrow column by column (its index is dropped).

    A declared column of object dtype is read by its declared type
    (:func:`~potluck.offline.objects.from_objects`); every other column kept goes through
    ``pyarrow.array``.

    Args:
        frame: The rows.
        declared: The columns whose types the caller declares.
        keep_other_columns: Keep the undeclared columns; otherwise they are never converted.

    Raises:
        DataValidationError: If a column holds a value that does not fit: for a declared
            column, its declared type; for another, the type pyarrow infers from the rows
            before it. Names the column and the row (0-based).
    """
    targets = {d.name: d for d in declared}
    arrays: list[pa.Array] = []
    names: list[str] = []
    for label in frame.columns:
        name = str(label)
        target = targets.get(name)
        if target is None and not keep_other_columns:
            continue
        series = frame[label]
        if target is not None and series.dtype == object:
            arrays.append(
                from_objects(
                    series.to_numpy(), target.arrow_type, column=name, expected=target.expected
                )
            )
        else:
            arrays.append(_inferred(series, name))
        names.append(name)
    return pa.Table.from_arrays(arrays, names=names)


def _inferred(series: pd.Series[Any], name: str) -> pa.Array:
    try:
        return pa.array(series, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as exc:
        values = series.tolist()
        # The first row that does not fit the type pyarrow infers from the rows before it.
        row = first_failure(len(values), lambda lo, hi: _converts(values[:hi]))
        raise DataValidationError(
            f"column {name!r} row {row}: {values[row]!r} does not fit the column's type ({exc})",
            column=name,
            row=row,
        ) from None


def _converts(values: list[Any]) -> bool:
    try:
        pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
        return False
    return True


__all__ = [
    "DeclaredColumn",
    "InputBatches",
    "InputData",
    "check_unique_columns",
    "frame_to_table",
    "open_input",
    "read_errors",
    "read_table",
]
