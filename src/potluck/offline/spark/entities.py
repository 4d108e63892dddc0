"""The entity rows of a training set on Spark: sent from the driver, or read on executors.

Rows already in the driver's memory (a DataFrame, an Arrow table) are checked there by
:func:`potluck.offline.pit.prepare` and sent to the cluster from Arrow (:class:`InMemoryEntities`).

A ``.parquet`` or ``.csv`` file is only opened on the driver (its footer, or its header), never
read there (:class:`EntityFile`): executors read it, a Parquet file in slices of rows in several
tasks (a slice may start or end inside a row group), a CSV file in one task, and check every
batch as ``prepare`` checks the whole input, with the same functions
(:func:`potluck.offline.convert.convert`, :func:`potluck.offline.csv_text.read_csv_column`, the
messages of :mod:`potluck.offline.pit`); the join reads it again rather than caching its rows.
Each row's number is its position in the file, known from the footer's row-group sizes, so the
output keeps the input's order. An executor records what it finds in an accumulator instead of
failing its task (Spark would retry it); the driver then raises the error ``prepare`` would
raise first for the same file (same class, message, column and row), from the executors'
findings and what the footer or header says (a missing column, a type that cannot convert).
"""

from __future__ import annotations

import bisect
import itertools
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from potluck.errors import DataValidationError, PotluckError, ValidationError
from potluck.offline.convert import convert
from potluck.offline.csv_text import read_csv_column
from potluck.offline.files import BATCH_SIZE, filesystem_for, os_error
from potluck.offline.inputs import DeclaredColumn, open_input, read_errors
from potluck.offline.pit import (
    ENTITY_TIMESTAMP_COLUMN,
    PitPlan,
    PreparedRetrieval,
    entity_columns,
    missing_entity_column,
    null_entity_value,
    taken_output_column,
)
from potluck.offline.spark.carry import CarriedColumn, carry, carry_batch, plan_carry
from potluck.offline.spark.pit import ROW, TS, key_column
from potluck.offline.spark.reading import ROWS_PER_TASK, Gathered
from potluck.offline.spark.session import executor_errors

try:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.pandas.types import from_arrow_schema
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark plug-ins need pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

Finding = tuple[int, int, int, int, PotluckError]
"""An error in the entity rows and where ``prepare`` meets it, as a sort key: (phase, column,
step, row, error). Phases: 0 reading the file, 1 parsing a CSV column, 2 the output-name check,
3 checking columns one by one (steps: 0 missing, 1 converting, 2 a null), 4 carrying a column
through Spark (Spark's own check, after every ``prepare`` check)."""


@dataclass(frozen=True)
class LoadedEntities:
    """The entity rows on the cluster.

    Attributes:
        rows: :data:`ROW`, :data:`TS`, the key columns and the carried columns (see
            :func:`potluck.offline.spark.pit.render`); lazy: read again when the join runs.
        plan: The join, with the entity rows' earliest and latest timestamps.
        count: How many entity rows there are.
    """

    rows: DataFrame
    plan: PitPlan
    count: int


def carried_name(position: int) -> str:
    """The name of the entity rows' ``position``-th own column on the cluster."""
    return f"potluck:carried:{position}"


class InMemoryEntities:
    """Entity rows checked on the driver, sent to the cluster from Arrow.

    Args:
        prepared: The checked rows and the plan (from :func:`potluck.offline.pit.prepare`).

    Raises:
        DataValidationError: If a column's type has no exact form in Spark.
    """

    def __init__(self, prepared: PreparedRetrieval) -> None:
        self.plan = prepared.plan
        self.count = prepared.entities.num_rows
        self._prepared = prepared
        self._carried, self.columns = carry(prepared.entities)

    def load(self, spark: SparkSession) -> LoadedEntities:
        """Send the rows to the cluster."""
        rows = self._prepared.join_rows
        arrays = [
            pa.array(np.arange(rows.num_rows, dtype=np.int64)),
            rows.column(ENTITY_TIMESTAMP_COLUMN).cast(pa.int64()),
            *(rows.column(entity) for entity in self.plan.key_columns),
            *self._carried.columns,
        ]
        table = pa.Table.from_arrays(arrays, names=_names(self.plan, len(self.columns)))
        return LoadedEntities(spark.createDataFrame(table), self.plan, self.count)


@dataclass(frozen=True)
class _FileSpec:
    """What an executor needs to read and check an entity file (pickled to every task)."""

    path: str
    """The file as executors read it: absolute, or a URL."""
    given: str
    """The file as the caller named it, for messages (as ``prepare`` names it)."""
    from_csv: bool
    declared: tuple[DeclaredColumn, ...]
    converts: tuple[bool, ...]
    """Per declared column: whether the file's type can convert to it at all."""
    columns: tuple[CarriedColumn, ...]
    names: tuple[str, ...]
    group_rows: tuple[int, ...]
    """A Parquet file's row-group sizes; empty for CSV (one task reads it whole)."""


def slices(total: int, units: int) -> tuple[range, ...]:
    """Cut rows ``0 .. total - 1`` into ``units`` consecutive slices of (nearly) equal size.

    Args:
        total: How many rows there are.
        units: How many slices to make (at least 1).

    Returns:
        The slices in row order; their sizes differ by one row at most.
    """
    bounds = [total * unit // units for unit in range(units + 1)]
    return tuple(range(start, stop) for start, stop in itertools.pairwise(bounds))


class EntityFile:
    """Entity rows in a ``.parquet`` or ``.csv`` file, read and checked on executors.

    Opening reads the footer (Parquet) or the header (CSV) on the driver, no rows, so a file
    that is missing there fails before any Spark work. A relative path is the caller's: it is
    resolved against the working folder on the driver (as ``prepare`` reads it), and executors
    read the absolute path.

    A Parquet file is read in slices of consecutive rows, one task each: ``rows_per_task``
    rows or more per slice, two slices per core at most, whatever its row groups (a task reads
    the row groups that hold its slice and keeps only the slice's rows). A CSV file is read by
    one task.

    Args:
        path: The file (a path or a URL), as ``prepare`` accepts it.
        plan: The join, without the entity rows' time bounds (from
            :func:`potluck.offline.pit.build_plan`).
        rows_per_task: The fewest rows a task reads, if the file has them (default:
            :data:`potluck.offline.spark.reading.ROWS_PER_TASK`, as for source files).

    Raises:
        ValidationError: If the file cannot be read or is not ``.parquet``/``.csv``, as
            ``prepare`` says it.
        DataValidationError: If it names a column twice or, when Parquet, a column takes a
            feature column's name (``prepare``'s first checks), or a column's type has no exact
            form in Spark.
    """

    def __init__(
        self, path: str | os.PathLike[str], plan: PitPlan, *, rows_per_task: int | None = None
    ) -> None:
        self.plan = plan
        self._rows_per_task = rows_per_task
        declared = tuple(entity_columns(plan))
        given = os.fspath(path)
        opened = open_input(given, declared, keep_other_columns=True)
        names = opened.columns
        self._taken = taken_output_column(plan, names)
        if not opened.from_csv and self._taken is not None:
            raise self._taken  # prepare's first check once a Parquet file opens
        types = {d.name: d.arrow_type for d in declared}
        schema = pa.schema(
            [
                pa.field(f.name, types[f.name]) if opened.from_csv and f.name in types else f
                for f in opened.schema
            ]
        )
        self.columns = plan_carry(schema)
        self._schema = schema
        fs, inner = filesystem_for(given)
        group_rows: tuple[int, ...] = ()
        if not opened.from_csv:
            try:
                metadata = pq.read_metadata(inner, filesystem=fs)
            except OSError as exc:
                raise os_error(given, exc, "read") from None
            group_rows = tuple(
                metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)
            )
        self._spec = _FileSpec(
            # Executors run in folders of their own: a relative path is the caller's.
            path=given if "://" in given else inner,
            given=given,
            from_csv=opened.from_csv,
            declared=declared,
            converts=tuple(
                opened.from_csv
                or d.name not in schema.names
                or _converts(schema.field(d.name).type, d)
                for d in declared
            ),
            columns=self.columns,
            names=names,
            group_rows=group_rows,
        )

    def load(self, spark: SparkSession) -> LoadedEntities:
        """Check the file on executors; return its rows, read there again by the join.

        A first pass reads and checks every slice and sends the driver one row of counts and
        timestamp bounds per task, no entity row. The rows returned are a lazy DataFrame: the
        join's first stage reads and checks the file again (a Python pass of about 0.3 s per
        million rows), which costs much less than caching the rows in Spark's memory.

        Raises:
            ValidationError: If the file cannot be read, as ``prepare`` says it.
            DataValidationError: The error ``prepare`` raises first for this file (a missing
                column, a value that does not convert, a null key or timestamp, naming the
                column and the row), or a value Spark cannot carry.
        """
        spec = self._spec
        found = spark.sparkContext.accumulator([], Gathered())
        parts: tuple[range | None, ...] = (None,)  # a CSV file: one task reads it whole
        if not spec.from_csv:
            total = sum(spec.group_rows)
            per_task = self._rows_per_task or ROWS_PER_TASK
            cores = spark.sparkContext.defaultParallelism
            parts = slices(total, max(1, min(2 * cores, -(-total // per_task))))

        def check(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for rows in _assigned(parts, batches):
                findings: list[Finding] = []
                counted = [0]
                sent = 0
                bounds: list[int] = []
                for batch in _read(spec, rows, findings, counted):
                    sent += batch.num_rows
                    least, most = pc.min_max(batch.column(1)).as_py().values()
                    bounds += [t for t in (least, most) if t is not None]
                found.add(findings)
                yield pa.RecordBatch.from_pylist(
                    [
                        {
                            "read": counted[0],
                            "sent": sent,
                            "earliest": min(bounds, default=None),
                            "latest": max(bounds, default=None),
                        }
                    ],
                    schema=_COUNTS,
                )

        def send(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for rows in _assigned(parts, batches):
                findings: list[Finding] = []
                yield from _read(spec, rows, findings, [0])
                if findings:
                    with executor_errors():  # the driver raises it as itself
                        raise _changed(spec, min(findings, key=lambda finding: finding[:4])[4])

        tasks = spark.range(0, len(parts), 1, len(parts))
        counts = tasks.mapInArrow(check, from_arrow_schema(_COUNTS)).collect()
        read_rows = sum(int(row["read"]) for row in counts)
        count = sum(int(row["sent"]) for row in counts)
        error = self._first_error(list(found.value), read_rows)
        if error is not None:
            raise error
        types = {d.name: d.arrow_type for d in spec.declared}
        arrow = pa.schema(
            [pa.field(ROW, pa.int64()), pa.field(TS, pa.int64())]
            + [pa.field(key_column(e), types[e]) for e in self.plan.key_columns]
            + [pa.field(carried_name(i), c.carried) for i, c in enumerate(self.columns)]
        )
        rows = tasks.mapInArrow(send, from_arrow_schema(arrow, prefer_timestamp_ntz=False))
        if count == 0:
            return LoadedEntities(rows, self.plan, 0)
        sent = [row for row in counts if row["sent"]]
        plan = PitPlan(
            joins=self.plan.joins,
            earliest=_EPOCH + timedelta(microseconds=min(row["earliest"] for row in sent)),
            latest=_EPOCH + timedelta(microseconds=max(row["latest"] for row in sent)),
        )
        return LoadedEntities(rows, plan, count)

    def _first_error(self, found: list[Finding], rows: int) -> PotluckError | None:
        """The error ``prepare`` meets first, given what the executors found in ``rows`` rows."""
        if self._taken is not None:
            found.append((2, 0, 0, 0, self._taken))
        if rows:
            for number, column in enumerate(self._spec.declared):
                if column.name not in self._schema.names:
                    error = missing_entity_column(column.name, self._spec.names)
                    found.append((3, number, 0, 0, error))
                elif not self._spec.converts[number]:
                    # Every value was null: prepare names the row after the last.
                    found.append((3, number, 1, rows, _type_error(self._schema, column, rows)))
        if not found:
            return None
        return min(found, key=lambda finding: finding[:4])[4]


_COUNTS = pa.schema(
    [
        pa.field("read", pa.int64()),
        pa.field("sent", pa.int64()),
        pa.field("earliest", pa.int64()),
        pa.field("latest", pa.int64()),
    ]
)
"""What a task of the check pass tells the driver: rows read, rows that passed (sent on), and
their earliest and latest timestamps (UTC microseconds; null without rows)."""


def _assigned(
    parts: Sequence[range | None], batches: Iterator[pa.RecordBatch]
) -> list[range | None]:
    """The rows a task reads, from the slice numbers it was given.

    Consecutive slices make one range; ``None`` is a whole CSV file; no slice, nothing.
    """
    numbers = [n for batch in batches for n in batch.column(0).to_pylist()]
    if not numbers:
        return []
    first, last = parts[min(numbers)], parts[max(numbers)]
    return [None if first is None or last is None else range(first.start, last.stop)]


def _changed(spec: _FileSpec, error: PotluckError) -> ValidationError:
    """The error of a file that no longer passes the checks it passed before the join."""
    return ValidationError(
        f"the entity file {spec.given!r} changed while the training set was built "
        f"({error.message}); build it again",
        path=spec.given,
    )


def _names(plan: PitPlan, carried: int) -> list[str]:
    return [
        ROW,
        TS,
        *(key_column(e) for e in plan.key_columns),
        *(carried_name(i) for i in range(carried)),
    ]


def _converts(file_type: pa.DataType, column: DeclaredColumn) -> bool:
    """Whether a column of ``file_type`` converts to ``column``'s type at all (no values)."""
    try:
        convert(pa.nulls(0, file_type), column.arrow_type, column=column.name, expected="")
    except DataValidationError:
        return False
    return True


def _type_error(schema: pa.Schema, column: DeclaredColumn, rows: int) -> PotluckError:
    """The error of a column whose type cannot convert, as ``prepare`` names it."""
    try:
        convert(
            pa.nulls(0, schema.field(column.name).type),
            column.arrow_type,
            column=column.name,
            expected=column.expected,
            row_offset=rows,
        )
    except DataValidationError as exc:
        return exc
    raise AssertionError(f"column {column.name!r} converts")  # pragma: no cover


# ---- on executors --------------------------------------------------------------------------------


def _read(
    spec: _FileSpec, rows: range | None, findings: list[Finding], counted: list[int]
) -> Iterator[pa.RecordBatch]:
    """Read this task's part of the file: the Parquet rows ``rows``, or all of a CSV (``None``).

    Checks each batch; records at most one finding per (phase, column, step), the first, and
    yields no rows once anything is found.
    """
    first: dict[tuple[int, int, int], Finding] = {}
    offset = 0 if rows is None else rows.start
    try:
        for batch in _batches(spec, rows):
            checked = _checked(spec, batch, offset, first)
            counted[0] += batch.num_rows
            if checked is not None and not first:
                yield checked
            offset += batch.num_rows
    except PotluckError as exc:  # the file cannot be read from here on
        first.setdefault((0, 0, 0), (0, 0, 0, offset, _as_given(spec, exc)))
    findings.extend(first.values())


def _as_given(spec: _FileSpec, error: PotluckError) -> PotluckError:
    """``error`` naming the file as the caller named it, not as executors read it."""
    if spec.path == spec.given:
        return error
    attrs = error.attrs()
    if attrs.get("path") == spec.path:
        attrs["path"] = spec.given
    message = error.message.replace(repr(spec.path), repr(spec.given))
    return type(error)(message, **attrs)


def _batches(spec: _FileSpec, rows: range | None) -> Iterator[pa.RecordBatch]:
    if rows is None:
        return open_input(spec.path, spec.declared, keep_other_columns=True).batches
    fs, inner = filesystem_for(spec.path)
    try:
        parquet = pq.ParquetFile(fs.open_input_file(inner))
    except OSError as exc:
        raise os_error(spec.path, exc, "read") from None
    return read_errors(_sliced(parquet, spec.group_rows, rows), spec.path)


def _sliced(
    parquet: pq.ParquetFile, group_rows: Sequence[int], rows: range
) -> Iterator[pa.RecordBatch]:
    """The rows ``rows`` of ``parquet``, in batches: the row groups holding them, cut to them.

    A row group is decoded from its start (Parquet has no finer entry point), and reading
    stops after the slice's last row.
    """
    if not rows:
        return
    starts = list(itertools.accumulate(group_rows, initial=0))
    first = bisect.bisect_right(starts, rows.start) - 1
    stop = bisect.bisect_left(starts, rows.stop)
    position = starts[first]
    for batch in parquet.iter_batches(batch_size=BATCH_SIZE, row_groups=range(first, stop)):
        keep = range(max(rows.start, position), min(rows.stop, position + batch.num_rows))
        if keep:
            yield batch.slice(keep.start - position, len(keep))
        position += batch.num_rows
        if position >= rows.stop:
            return


def _checked(
    spec: _FileSpec,
    batch: pa.RecordBatch,
    offset: int,
    first: dict[tuple[int, int, int], Finding],
) -> pa.RecordBatch | None:
    """Check ``batch`` (rows ``offset``...) as ``prepare`` checks the input; the rows to send."""
    typed: dict[str, pa.Array] = {}
    for number, column in enumerate(spec.declared):
        if column.name not in batch.schema.names:
            continue  # the driver names a missing column
        raw = batch.column(column.name)
        if not spec.converts[number] and raw.null_count == len(raw):
            continue  # no value to name; the driver names the type
        where = (1, number, 0) if spec.from_csv else (3, number, 1)
        try:
            if spec.from_csv:
                values = read_csv_column(
                    raw,
                    column.arrow_type,
                    column=column.name,
                    expected=column.expected,
                    row_offset=offset,
                )
            else:
                values = convert(
                    raw,
                    column.arrow_type,
                    column=column.name,
                    expected=column.expected,
                    row_offset=offset,
                )
        except DataValidationError as exc:
            first.setdefault(where, (*where, int(exc.attrs().get("row") or 0), exc))
            continue
        if values.null_count:
            row = offset + int(pc.index(pc.is_null(values), True).as_py())
            error = null_entity_value(column.name, row, column.expected)
            first.setdefault((3, number, 2), (3, number, 2, row, error))
            continue
        typed[column.name] = values
    if len(typed) < len(spec.declared):
        return None
    own = batch
    if spec.from_csv:
        for name, values in typed.items():
            own = own.set_column(own.schema.get_field_index(name), name, values)
    try:
        carried = carry_batch(own, spec.columns)
    except DataValidationError as exc:
        first.setdefault((4, 0, 0), (4, 0, 0, offset, exc))
        return None
    keys = [typed[d.name] for d in spec.declared[1:]]
    arrays = [
        pa.array(np.arange(offset, offset + batch.num_rows, dtype=np.int64)),
        typed[ENTITY_TIMESTAMP_COLUMN].cast(pa.int64()),
        *keys,
        *carried,
    ]
    names = [ROW, TS, *(key_column(d.name) for d in spec.declared[1:])]
    names += [carried_name(i) for i in range(len(carried))]
    return pa.RecordBatch.from_arrays(arrays, names=names)


__all__ = [
    "EntityFile",
    "InMemoryEntities",
    "LoadedEntities",
    "carried_name",
    "slices",
]
