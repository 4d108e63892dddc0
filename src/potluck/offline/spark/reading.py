"""Reading a training set's source files on executors, with bad files reported, not retried.

:func:`potluck.offline.spark.scan.read_file` reads each file on an executor, as the declared
types; a file of several row groups may be cut into pieces read by several tasks, so that few
large files still spread over the cluster (the footers are read on the driver to cut them).
A file that does not fit raises a :class:`~potluck.errors.PotluckError`; raised out of a
task, it would fail the task, and Spark would run the task again (``spark.task.maxFailures``
times, 4 on a cluster) to meet the same error, logging each failure. Data errors are not
transient, so here the executor records the error in an accumulator instead and goes on with
its other files; once the job has run, :meth:`SourceErrors.raise_first` raises the first error
(in plan, file and row order, so the same one each time) on the driver. No task fails, so nothing
is retried. Other failures (a storage error) still fail the task, and Spark retries those.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.errors import PotluckError, ValidationError
from potluck.offline.files import SourceFiles
from potluck.offline.spark.scan import IngestionCreated, ScanColumn, read_file, spark_type

try:
    from pyspark.accumulators import Accumulator, AccumulatorParam
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import types as st
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

ROWS_PER_TASK = 500_000
"""A scan task reads this many rows or more (if the source has them); two tasks a core at most."""

Found = tuple[int, int, int, PotluckError]
"""An error met in a file: the join's number in the plan, the file's number, the first row
group read, the error."""


@dataclass(frozen=True)
class _Piece:
    """Part of a file one task reads: consecutive row groups, or the whole file (``None``)."""

    file: int
    groups: range | None

    @property
    def first_group(self) -> int:
        return 0 if self.groups is None else self.groups.start


def _pieces(files: SourceFiles) -> tuple[list[_Piece], int]:
    """Cut ``files`` into one piece per row group, from their footers; count their rows.

    A file whose footer cannot be read is one piece: the task that reads it reports why.
    """
    pieces: list[_Piece] = []
    rows = 0
    for number, path in enumerate(files.paths):
        try:
            metadata = pq.read_metadata(path, filesystem=files.filesystem)
        except (OSError, pa.ArrowInvalid):
            pieces.append(_Piece(number, None))
            continue
        rows += metadata.num_rows
        groups = metadata.num_row_groups
        if groups <= 1:
            pieces.append(_Piece(number, None))
        else:
            pieces += [_Piece(number, range(group, group + 1)) for group in range(groups)]
    return pieces, rows


def _runs(pieces: Sequence[_Piece]) -> Iterator[_Piece]:
    """Merge consecutive pieces of one file, so it is opened once per task."""
    run: _Piece | None = None
    for piece in pieces:
        if (
            run is not None
            and run.file == piece.file
            and run.groups is not None
            and piece.groups is not None
            and run.groups.stop == piece.groups.start
        ):
            run = _Piece(run.file, range(run.groups.start, piece.groups.stop))
            continue
        if run is not None:
            yield run
        run = piece
    if run is not None:
        yield run


class Gathered(AccumulatorParam):  # type: ignore[type-arg]
    """Accumulates lists (of errors found on executors) by concatenation."""

    def zero(self, value: list[Any]) -> list[Any]:
        """Return an empty list."""
        return []

    def addInPlace(self, value1: list[Any], value2: list[Any]) -> list[Any]:  # noqa: N802
        """Append ``value2``'s items to ``value1``."""
        value1.extend(value2)
        return value1


class SourceErrors:
    """Scans of source files whose data errors are gathered on the driver.

    Args:
        spark: The session the scans run in.
    """

    def __init__(self, spark: SparkSession) -> None:
        self._spark = spark
        self._found: Accumulator[list[Found]] = spark.sparkContext.accumulator([], Gathered())

    def scan(
        self,
        files: SourceFiles,
        columns: Sequence[ScanColumn],
        *,
        table: str,
        number: int,
        ingestion_created: IngestionCreated | None = None,
    ) -> DataFrame:
        """Return the rows of ``files`` as a DataFrame with one column per ``columns`` entry.

        As :func:`potluck.offline.spark.scan.scan_files`, but a file that does not fit is
        recorded here (see :meth:`raise_first`) and its remaining rows are skipped.

        Args:
            files: The files to read (pinned and pruned); a file of several row groups may be
                shared by several tasks.
            columns: What to read, in output order.
            table: The feature table, for errors.
            number: The join's position in the plan (orders errors of several tables).
            ingestion_created: Fill a created column from ingestion ids, if given.
        """
        schema = st.StructType(
            [st.StructField(c.output, spark_type(c.value_type)) for c in columns]
        )
        if not files.paths:
            return self._spark.createDataFrame([], schema)
        pieces, rows = _pieces(files)
        cores = self._spark.sparkContext.defaultParallelism
        tasks = min(len(pieces), 2 * cores, -(-rows // ROWS_PER_TASK))
        # Piece numbers are spread over tasks without a shuffle; each task finds its pieces in
        # the (pickled) list.
        numbers = self._spark.range(0, len(pieces), 1, max(1, tasks))
        filesystem, paths, wanted, found = (
            files.filesystem,
            files.paths,
            tuple(columns),
            self._found,
        )

        def read(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for piece in _runs([pieces[i] for i in batch.column(0).to_pylist()]):
                    path = paths[piece.file]
                    try:
                        yield from read_file(
                            filesystem,
                            path,
                            wanted,
                            table=table,
                            ingestion_created=ingestion_created,
                            row_groups=piece.groups,
                        )
                    except PotluckError as exc:
                        found.add([(number, piece.file, piece.first_group, exc)])
                    except pa.ArrowInvalid as exc:  # not Parquet, or a damaged one
                        error = ValidationError(
                            f"cannot read file {path!r} of feature table {table!r}: {exc}",
                            path=path,
                            table=table,
                        )
                        found.add([(number, piece.file, piece.first_group, error)])

        return numbers.mapInArrow(read, schema)

    def raise_first(self) -> None:
        """Raise the first error the scans met, in plan, file and row order, if any.

        Raises:
            PotluckError: The error an executor met (a :class:`DataValidationError` naming the
                file, the column and the row, as :func:`read_file` raises it).
        """
        found = self._found.value
        if found:
            raise min(found, key=lambda item: item[:3])[3]


__all__ = ["Gathered", "SourceErrors"]
