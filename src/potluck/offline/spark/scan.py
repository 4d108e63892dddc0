"""Reading batch-source files on Spark executors, as the declared types, exactly as DuckDB does.

Spark's own Parquet reader would disagree with potluck on other tools' files (it refuses
nanosecond timestamps, reads zoned and naive timestamps differently, casts where potluck refuses
a lossy value). So the files are listed on the driver (from the source's pinned version, see
:mod:`potluck.offline.snapshots`), spread over the cluster as a DataFrame of paths, and each
executor reads its files with pyarrow and converts every column by
:func:`potluck.offline.convert.to_type`, the rules ``ingest()`` and the DuckDB store apply. A
file that does not fit is named with the column and row, as
:func:`potluck.offline.file_columns.check_files` names it. Nothing is collected to the driver.

A scan task may go on with the rows it read in the same Python pass (a :class:`ScanStep`), so
that they cross into the JVM once, already reduced. A data error (a file that does not fit, a
value the step refuses) is not transient: raised out of the task, Spark would run the task again
``spark.task.maxFailures`` times to meet the same error. So the task records it in an
accumulator and ends without error (:data:`FileError`); the caller raises it on the driver once
the scan has run, before it uses the rows (see :func:`first_error`). Other failures (a storage
error) still fail the task, and Spark retries those.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import DataValidationError, ValidationError
from potluck.offline.convert import BadValue, can_hold, to_type
from potluck.offline.files import SourceFiles, ingestion_time
from potluck.offline.spark.session import executor_errors
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

try:
    from pyspark import Accumulator
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as st
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

BATCH_ROWS = 65_536
"""Rows per Arrow batch an executor reads from one file."""

_SPARK_TYPES: dict[ValueType, st.DataType] = {
    ValueType.BYTES: st.BinaryType(),
    ValueType.STRING: st.StringType(),
    ValueType.INT32: st.IntegerType(),
    ValueType.INT64: st.LongType(),
    ValueType.DOUBLE: st.DoubleType(),
    ValueType.FLOAT: st.FloatType(),
    ValueType.BOOL: st.BooleanType(),
    ValueType.UNIX_TIMESTAMP: st.TimestampType(),
}


def spark_type(value_type: ValueType) -> st.DataType:
    """Return the Spark SQL type that holds ``value_type`` (lists as arrays)."""
    if value_type.is_list:
        return st.ArrayType(_SPARK_TYPES[value_type.element_type], containsNull=True)
    return _SPARK_TYPES[value_type]


@dataclass(frozen=True)
class ScanColumn:
    """One column a scan returns.

    Attributes:
        output: Its name in the returned DataFrame.
        source: Its column in the files; ``None`` (or a file without it) gives nulls.
        value_type: The type it is read as.
        expected: What it holds, for errors (``"feature trips (INT64)"``).
        required: Whether a file without the column is an error (keys and event times).
    """

    output: str
    source: str | None
    value_type: ValueType
    expected: str
    required: bool = False


@dataclass(frozen=True)
class IngestionCreated:
    """Fill a created-time column from each row's ingestion id.

    See :func:`potluck.offline.files.ingestion_time`: a later ingestion wins an event-time tie.

    Attributes:
        output: The created-time column to fill (a ``UNIX_TIMESTAMP`` :class:`ScanColumn` with
            no source).
        ingestion_column: The files' column that holds the ingestion id.
    """

    output: str
    ingestion_column: str


FileError = tuple[int, ValidationError]
"""A data error a scan task met: the number of the file it was reading, the error."""


@dataclass(frozen=True)
class ScanStep:
    """What each scan task does with the rows it reads, in the same Python pass.

    Attributes:
        run: Takes the task's batches (the scan's columns, file after file) and yields the
            task's output; it runs on an executor, so it must pickle. A
            :class:`~potluck.errors.ValidationError` it raises is a data error (see
            :func:`scan_files`).
        schema: The Spark schema of what ``run`` yields.
    """

    run: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]
    schema: st.StructType


def scan_files(
    spark: SparkSession,
    files: SourceFiles,
    columns: Sequence[ScanColumn],
    *,
    table: str,
    errors: Accumulator[list[FileError]],
    ingestion_created: IngestionCreated | None = None,
    partitions: int | None = None,
    step: ScanStep | None = None,
) -> DataFrame:
    """Return the rows of ``files`` (one column per ``columns`` entry), or what ``step`` makes.

    Each task reads whole files, one after another. A file that does not fit (a
    :class:`DataValidationError` naming the file, column and row; a file that is not Parquet) or
    a row ``step`` refuses ends its task without error: the task adds ``(file number, error)``
    to ``errors`` and yields nothing more, so Spark does not run it again.

    Args:
        spark: The session.
        files: The files to read (already pinned to a version and pruned).
        columns: What to read, in output order.
        table: The feature table, for errors.
        errors: Receives the data errors; an accumulator of lists (see
            :class:`potluck.offline.spark.reading.Gathered`). Check it with
            :func:`first_error` once the DataFrame has been computed.
        ingestion_created: Fill a created column from ingestion ids, if given.
        partitions: How many tasks read the files; ``None`` gives one per file up to the
            session's default parallelism.
        step: What each task does with the rows it reads; ``None`` returns them.

    Returns:
        A lazy DataFrame of ``columns`` (or of ``step.schema``). Other errors (a file that
        cannot be opened) fail the task; run actions under
        :func:`potluck.offline.spark.session.spark_errors`.
    """
    schema = st.StructType([st.StructField(c.output, spark_type(c.value_type)) for c in columns])
    if step is not None:
        schema = step.schema
    if not files.paths:
        return spark.createDataFrame([], schema)
    count = max(1, partitions or min(len(files.paths), spark.sparkContext.defaultParallelism))
    # File numbers are spread over the tasks without a shuffle; each task finds its paths in
    # the (pickled) list.
    numbers = spark.range(0, len(files.paths), 1, count)
    filesystem, paths, wanted = files.filesystem, files.paths, tuple(columns)

    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        reading = -1

        def rows() -> Iterator[pa.RecordBatch]:
            nonlocal reading
            for batch in batches:
                for reading in batch.column(0).to_pylist():
                    path = paths[reading]
                    try:
                        yield from read_file(
                            filesystem,
                            path,
                            wanted,
                            table=table,
                            ingestion_created=ingestion_created,
                        )
                    except pa.ArrowInvalid as exc:  # not Parquet, or a damaged one
                        raise ValidationError(
                            f"cannot read file {path!r} of feature table {table!r}: {exc}",
                            path=path,
                            table=table,
                        ) from None

        with executor_errors():
            try:
                yield from rows() if step is None else step.run(rows())
            except ValidationError as exc:
                errors.add([(reading, exc)])

    return numbers.mapInArrow(task, schema)


def first_error(found: Sequence[FileError]) -> ValidationError | None:
    """Return the error recorded for the first file (in the scan's order) among ``found``.

    Each task reads its files in that order and stops at its first error, so the same error is
    returned at each run of the same scan. ``None`` if nothing was found.
    """
    return min(found, key=lambda item: item[0])[1] if found else None


def read_file(
    filesystem: pafs.FileSystem,
    path: str,
    columns: Sequence[ScanColumn],
    *,
    table: str,
    ingestion_created: IngestionCreated | None = None,
    batch_rows: int = BATCH_ROWS,
    row_groups: range | None = None,
) -> Iterator[pa.RecordBatch]:
    """Yield the rows of one Parquet file as batches of ``columns`` (see :func:`scan_files`).

    ``row_groups``, when given, reads only those row groups of the file (consecutive ones), so
    that several tasks can share a large file; rows in errors are still counted from the
    file's start.

    Raises:
        DataValidationError: If a required column is missing, or a column's type or a value
            does not fit its declared type; names the file, the column and the row in the file.
    """
    # INT96 timestamps are read as microseconds, as check_files reads them.
    parquet = pq.ParquetFile(path, filesystem=filesystem, coerce_int96_timestamp_unit="us")
    held = parquet.schema_arrow
    for column in columns:
        if column.source is None:
            continue
        if column.source not in held.names:
            if column.required:
                raise DataValidationError(
                    f"the batch source of feature table {table!r} has no column "
                    f"{column.source!r} in file {path!r}; its columns: "
                    f"{', '.join(sorted(held.names))}",
                    path=path,
                    column=column.source,
                    row=None,
                )
            continue
        kind = held.field(column.source).type
        if not can_hold(kind, to_arrow_type(column.value_type)):
            raise DataValidationError(
                f"file {path!r} column {column.source!r} holds {kind} values, which cannot "
                f"be read as {column.expected}; rewrite the file with that type or change "
                "the definition",
                path=path,
                column=column.source,
                row=None,
            )
    present = [c.source for c in columns if c.source is not None and c.source in held.names]
    if ingestion_created is not None and ingestion_created.ingestion_column in held.names:
        present.append(ingestion_created.ingestion_column)
    offset = 0
    if row_groups is not None:
        offset = sum(parquet.metadata.row_group(i).num_rows for i in range(row_groups.start))
    batches = parquet.iter_batches(
        batch_size=batch_rows, columns=sorted(set(present)), row_groups=row_groups
    )
    for batch in batches:
        arrays = [_column(batch, c, path, offset) for c in columns]
        if ingestion_created is not None:
            index = [c.output for c in columns].index(ingestion_created.output)
            arrays[index] = _ingestion_times(batch, ingestion_created.ingestion_column)
        offset += batch.num_rows
        yield pa.RecordBatch.from_arrays(arrays, names=[c.output for c in columns])


def _column(batch: pa.RecordBatch, column: ScanColumn, path: str, offset: int) -> pa.Array:
    target = to_arrow_type(column.value_type)
    if column.source is None or column.source not in batch.schema.names:
        return pa.nulls(batch.num_rows, target)
    try:
        return to_type(batch.column(column.source), target, column.expected)
    except BadValue as bad:
        row = bad.row + offset
        raise DataValidationError(
            f"file {path!r} column {column.source!r} row {row}: {bad.detail}",
            path=path,
            column=column.source,
            row=row,
        ) from None


def _ingestion_times(batch: pa.RecordBatch, column: str) -> pa.Array:
    if column not in batch.schema.names:
        return pa.nulls(batch.num_rows, TIMESTAMP_ARROW_TYPE)
    encoded = pc.dictionary_encode(batch.column(column))
    times = pa.array(
        [ingestion_time(i) for i in encoded.dictionary.to_pylist()], TIMESTAMP_ARROW_TYPE
    )
    return times.take(encoded.indices)


__all__ = [
    "BATCH_ROWS",
    "FileError",
    "IngestionCreated",
    "ScanColumn",
    "ScanStep",
    "first_error",
    "read_file",
    "scan_files",
    "spark_type",
]
