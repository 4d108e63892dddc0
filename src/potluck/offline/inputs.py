"""User input as Arrow: a pandas DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL.

``ingest()`` and ``get_historical_features()`` read the rows they are given here, so both accept
the same kinds of input; files are read through ``pyarrow.fs`` (local paths and URLs alike).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import DataValidationError, ValidationError
from potluck.offline.convert import first_failure
from potluck.offline.files import BATCH_SIZE, filesystem_for

if TYPE_CHECKING:
    import pandas as pd

InputData: TypeAlias = "pd.DataFrame | pa.Table | str | os.PathLike[str]"
"""What ``ingest()`` and ``get_historical_features()`` accept as rows."""


@dataclass
class InputBatches:
    """User input as a stream of Arrow batches.

    Attributes:
        schema: The columns.
        num_rows: The row count when known up front (``None`` for CSV).
        batches: The rows, in order.
        from_csv: Whether the columns are CSV text still to be parsed
            (:func:`~potluck.offline.convert.convert` parses numbers, booleans and timestamps
            from text only then).
    """

    schema: pa.Schema
    num_rows: int | None
    batches: Iterator[pa.RecordBatch]
    from_csv: bool = False


def open_input(data: InputData, *, csv_as_text: bool = True) -> InputBatches:
    """Open ``data`` (a DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL).

    Args:
        data: The rows.
        csv_as_text: Read every CSV column as text (so
            :func:`~potluck.offline.convert.convert` reports the exact row of a bad value);
            otherwise let pyarrow infer CSV column types.

    Raises:
        ValidationError: If ``data`` is of another kind, or a file cannot be read.
        DataValidationError: If a DataFrame column mixes values of incompatible types.
    """
    if isinstance(data, pa.RecordBatch):
        data = pa.Table.from_batches([data])
    if isinstance(data, pa.Table):
        return InputBatches(data.schema, data.num_rows, iter(data.to_batches(BATCH_SIZE)))
    if isinstance(data, (str, os.PathLike)):
        return _open_file(os.fspath(data), csv_as_text=csv_as_text)
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        table = frame_to_table(data)
        return InputBatches(table.schema, table.num_rows, iter(table.to_batches(BATCH_SIZE)))
    raise ValidationError(
        "rows must be a pandas DataFrame, a pyarrow Table, or the path of a .parquet or .csv "
        f"file, got {type(data).__name__}"
    )


def read_table(data: InputData) -> pa.Table:
    """Read ``data`` (as :func:`open_input` accepts it, CSV types inferred) as one Arrow table."""
    opened = open_input(data, csv_as_text=False)
    return pa.Table.from_batches(list(opened.batches), schema=opened.schema)


def _open_file(path: str, *, csv_as_text: bool) -> InputBatches:
    fs, inner = filesystem_for(path)
    suffix = inner.rsplit(".", 1)[-1].lower() if "." in inner.rsplit("/", 1)[-1] else ""
    if suffix not in ("parquet", "csv"):
        raise ValidationError(f"cannot read {path!r}: expected a .parquet or .csv file", path=path)
    try:
        if suffix == "parquet":
            parquet = pq.ParquetFile(fs.open_input_file(inner))
            return InputBatches(
                parquet.schema_arrow,
                parquet.metadata.num_rows,
                parquet.iter_batches(batch_size=BATCH_SIZE),
            )
        return _open_csv(fs, inner, csv_as_text=csv_as_text)
    except FileNotFoundError:
        raise ValidationError(f"cannot read {path!r}: no such file", path=path) from None
    except (OSError, pa.ArrowInvalid) as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}", path=path) from None


def _open_csv(fs: pafs.FileSystem, path: str, *, csv_as_text: bool) -> InputBatches:
    with fs.open_input_stream(path) as probe:
        header = pacsv.open_csv(probe, read_options=pacsv.ReadOptions(block_size=1 << 16))
        names = header.schema.names
    read_options = pacsv.ReadOptions(block_size=1 << 24)
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()) if csv_as_text else None,
        strings_can_be_null=True,
        timestamp_parsers=[pacsv.ISO8601],
    )
    reader = pacsv.open_csv(
        fs.open_input_stream(path), read_options=read_options, convert_options=convert
    )
    return InputBatches(reader.schema, None, iter(reader), from_csv=csv_as_text)


def frame_to_table(frame: pd.DataFrame) -> pa.Table:
    """Convert a pandas DataFrame to Arrow column by column (its index is dropped).

    Raises:
        DataValidationError: If a column mixes values Arrow cannot hold in one type; names the
            column and the first row that does not fit.
    """
    arrays: list[pa.Array] = []
    names: list[str] = []
    for name in frame.columns:
        series = frame[name]
        try:
            arrays.append(pa.array(series, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
            values = series.tolist()
            row = first_failure(len(values), lambda lo, hi, v=values: _converts(v[:hi]))
            raise DataValidationError(
                f"column {str(name)!r} row {row}: {values[row]!r} does not fit the column's "
                f"type ({exc})",
                column=str(name),
                row=row,
            ) from None
        names.append(str(name))
    return pa.Table.from_arrays(arrays, names=names)


def _converts(values: list[Any]) -> bool:
    try:
        pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return False
    return True


__all__ = ["InputBatches", "InputData", "frame_to_table", "open_input", "read_table"]
