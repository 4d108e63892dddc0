"""Arrow data at the file boundary: user input in, Parquet files out, on any pyarrow filesystem.

Three things every offline engine and ``ingest()`` share, so they agree exactly:

- reading user input (a pandas DataFrame, an Arrow table, or a ``.parquet`` / ``.csv`` path or
  URL) as Arrow batches;
- converting a column to a potluck type *without loss*, raising a :class:`DataValidationError`
  that names the column and the first bad row;
- listing a batch source's Parquet files and writing new ones atomically (hidden temporary
  files, then rename), through ``pyarrow.fs`` so ``s3://``, ``gs://`` and ``hdfs://`` paths work
  like local folders.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import DataValidationError, ValidationError
from potluck.types import TIMESTAMP_ARROW_TYPE

if TYPE_CHECKING:
    import pandas as pd

InputData: TypeAlias = "pd.DataFrame | pa.Table | str | os.PathLike[str]"
"""What ``ingest()`` and ``get_historical_features()`` accept as rows."""

BATCH_SIZE = 122_880
"""Rows per batch read from input, and rows per Parquet row group written (DuckDB's row group
size, so a scan of one file runs on every core)."""

MIN_TIMESTAMP = datetime(1, 1, 1, tzinfo=timezone.utc)
MAX_TIMESTAMP = datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=timezone.utc)
"""Timestamps outside these bounds are rejected: Python, pandas and DuckDB cannot all hold them."""

_PART_FILE = re.compile(
    r"part-(?P<id>\d{8}T\d{12}Z-[0-9a-f]{8})-\d{5}(?P<superseded>-superseded)?\.parquet"
)


# ---- filesystems ---------------------------------------------------------------------------------


def resolve_path(path: str, root: Path | None) -> str:
    """Return ``path`` made absolute against ``root``; URLs (``scheme://``) are left alone."""
    if "://" in path or root is None:
        return path
    p = Path(path).expanduser()
    return str(p if p.is_absolute() else root / p)


def filesystem_for(path: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem that holds ``path`` and the path within it.

    Raises:
        ValidationError: If pyarrow cannot open a filesystem for the URL.
    """
    if "://" not in path:
        return pafs.LocalFileSystem(), str(Path(path).expanduser().absolute())
    try:
        fs, inner = pafs.FileSystem.from_uri(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        raise ValidationError(f"cannot open {path!r}: {exc}", path=path) from None
    return fs, str(inner)


@dataclass(frozen=True)
class SourceFiles:
    """The Parquet files of one batch source.

    Attributes:
        filesystem: The pyarrow filesystem that holds them.
        paths: Their paths within ``filesystem``, sorted.
    """

    filesystem: pafs.FileSystem
    paths: tuple[str, ...]

    @property
    def is_local(self) -> bool:
        """Whether the files are on the local filesystem (engines may then read them natively)."""
        return isinstance(self.filesystem, pafs.LocalFileSystem)


def list_source_files(
    path: str,
    *,
    partition_column: str | None = None,
    first_day: date | None = None,
    last_day: date | None = None,
    ingested_after: str | None = None,
) -> SourceFiles:
    """List a batch source's Parquet files, skipping those that cannot hold wanted rows.

    ``path`` is a folder (searched recursively) or one ``.parquet`` file. Files and folders whose
    name starts with ``_`` or ``.`` are skipped (temporary files of unfinished writes). With
    ``partition_column``, a file under ``<partition_column>=YYYY-MM-DD/`` is skipped when that day
    is outside ``[first_day, last_day]``; a file named by ``ingest()`` is skipped when its
    ingestion id is not greater than ``ingested_after``.
    """
    fs, root = filesystem_for(path)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.File:
        return SourceFiles(fs, (root,))
    if info.type == pafs.FileType.NotFound:
        return SourceFiles(fs, ())
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    paths: list[str] = []
    for entry in fs.get_file_info(selector):
        if entry.type != pafs.FileType.File or not entry.path.endswith(".parquet"):
            continue
        parts = entry.path[len(root) :].strip("/").split("/")
        if any(part.startswith(("_", ".")) for part in parts):
            continue
        if partition_column and not _day_wanted(parts[:-1], partition_column, first_day, last_day):
            continue
        if ingested_after is not None:
            match = _PART_FILE.fullmatch(parts[-1])
            if match and match["id"] <= ingested_after:
                continue
        paths.append(entry.path)
    return SourceFiles(fs, tuple(sorted(paths)))


def _day_wanted(
    folders: list[str], column: str, first_day: date | None, last_day: date | None
) -> bool:
    prefix = f"{column}="
    for folder in folders:
        if folder.startswith(prefix):
            try:
                day = date.fromisoformat(folder[len(prefix) :])
            except ValueError:
                return True
            return (first_day is None or day >= first_day) and (last_day is None or day <= last_day)
    return True


def part_file_name(ingestion_id: str, number: int, *, superseded: bool = False) -> str:
    """Return the name ``ingest()`` gives a file: ``part-<id>-NNNNN[-superseded].parquet``.

    An ingestion writes, per partition folder, the rows that win their (keys, event time) group
    within the ingestion, and separately (``-superseded``) the rows another row of the same
    ingestion beats: same keys and event time, and a greater created time (or equal and later in
    the input). Together they are every row ingested.
    """
    suffix = "-superseded" if superseded else ""
    return f"part-{ingestion_id}-{number:05d}{suffix}.parquet"


def without_superseded(files: SourceFiles) -> SourceFiles:
    """Drop the ``-superseded`` files of ``ingest()``.

    Their rows can never win a point-in-time join: a row of the same ingestion with the same keys
    and event time beats or equals each of them.
    """
    kept = []
    for path in files.paths:
        match = _PART_FILE.fullmatch(path.rpartition("/")[2])
        if match is None or not match["superseded"]:
            kept.append(path)
    return SourceFiles(files.filesystem, tuple(kept))


def may_tie(files: SourceFiles, event_column: str, partition_column: str | None) -> bool:
    """Whether two rows of ``files`` may share keys and event time.

    They cannot when every file is an ``ingest()`` file of winning rows (tie-free by
    construction, see :func:`part_file_name`) and no two of them overlap in event time: files in
    different ``<partition_column>=YYYY-MM-DD`` folders never do; others are compared by the
    min/max statistics of ``event_column`` in their footers. An engine may then join them
    without a created-time tie-break and still get the exact result.
    """
    groups: dict[str, list[str]] = {}
    for path in files.paths:
        folder, _, name = path.rpartition("/")
        match = _PART_FILE.fullmatch(name)
        if match is None or match["superseded"]:
            return True
        groups.setdefault(folder if partition_column else "", []).append(path)
    return any(
        len(group) > 1 and not _disjoint(files.filesystem, group, event_column)
        for group in groups.values()
    )


def _disjoint(fs: pafs.FileSystem, paths: list[str], column: str) -> bool:
    ranges: list[tuple[Any, Any]] = []
    for path in paths:
        metadata = pq.read_metadata(path, filesystem=fs)
        names = metadata.schema.names
        if column not in names or metadata.num_row_groups == 0:
            return False
        index = names.index(column)
        lows, highs = [], []
        for group in range(metadata.num_row_groups):
            stats = metadata.row_group(group).column(index).statistics
            if stats is None or not stats.has_min_max:
                return False
            lows.append(stats.min)
            highs.append(stats.max)
        ranges.append((min(lows), max(highs)))
    ranges.sort()
    return all(high < low for (_, high), (low, _) in zip(ranges, ranges[1:], strict=False))


class StagedParquetWriter:
    """Writes Parquet files under a folder invisibly, then publishes them all at once.

    Each file is written to a hidden ``_tmp-*`` file next to its final place; :meth:`commit`
    renames them all into place (atomic per file on local and HDFS filesystems; on object stores
    each file appears whole), :meth:`abort` deletes them.

    Args:
        root: The folder (path or URL) the files go under.
    """

    def __init__(self, root: str) -> None:
        self._fs, self._root = filesystem_for(root)
        self._staged: list[tuple[str, str]] = []
        self._created_dirs: list[str] = []

    def write(self, name: str, rows: pa.Table) -> None:
        """Stage ``rows`` as the file ``name`` (a path relative to the root)."""
        final = f"{self._root}/{name}"
        directory = final.rsplit("/", 1)[0]
        self._make_dirs(directory)
        temp = f"{directory}/_tmp-{uuid.uuid4().hex}.parquet"
        self._staged.append((temp, final))
        pq.write_table(rows, temp, filesystem=self._fs, row_group_size=BATCH_SIZE)

    def commit(self) -> list[str]:
        """Rename every staged file into place and return the final paths.

        On failure the files already renamed are removed again and the error is raised.
        """
        finals: list[str] = []
        try:
            for temp, final in self._staged:
                self._fs.move(temp, final)
                finals.append(final)
        except BaseException:
            for final in finals:
                self._delete(final)
            self.abort()
            raise
        self._staged.clear()
        return finals

    def abort(self) -> None:
        """Delete every staged file (and the folders this writer created, if left empty)."""
        for temp, _ in self._staged:
            self._delete(temp)
        self._staged.clear()
        for directory in reversed(self._created_dirs):
            with contextlib.suppress(OSError):
                if not self._fs.get_file_info(pafs.FileSelector(directory)):
                    self._fs.delete_dir(directory)
        self._created_dirs.clear()

    def _make_dirs(self, directory: str) -> None:
        missing: list[str] = []
        current = directory
        while current and self._fs.get_file_info(current).type == pafs.FileType.NotFound:
            missing.append(current)
            parent = current.rsplit("/", 1)[0]
            if parent == current:
                break
            current = parent
        self._fs.create_dir(directory, recursive=True)
        self._created_dirs.extend(reversed(missing))

    def _delete(self, path: str) -> None:
        with contextlib.suppress(OSError):
            self._fs.delete_file(path)


def write_atomically(table: pa.Table, path: str, *, file_format: Literal["parquet", "csv"]) -> None:
    """Write ``table`` as one Parquet or CSV file at ``path`` (local or URL).

    It is written to a temporary file and renamed, so readers never see half a file.

    Raises:
        ValidationError: If the table cannot be written in that format (lists into CSV).
    """
    fs, target = filesystem_for(path)
    directory, _, name = target.rpartition("/")
    fs.create_dir(directory or "/", recursive=True)
    temp = f"{directory}/_tmp-{uuid.uuid4().hex}-{name}"
    try:
        if file_format == "csv":
            with fs.open_output_stream(temp) as stream:
                pacsv.write_csv(table, stream)
        else:
            pq.write_table(table, temp, filesystem=fs, row_group_size=BATCH_SIZE)
        fs.move(temp, target)
    except pa.ArrowNotImplementedError as exc:
        with contextlib.suppress(OSError):
            fs.delete_file(temp)
        raise ValidationError(f"cannot write {path!r}: {exc}", path=path) from None
    except BaseException:
        with contextlib.suppress(OSError):
            fs.delete_file(temp)
        raise


# ---- reading input -------------------------------------------------------------------------------


@dataclass
class InputBatches:
    """User input as a stream of Arrow batches.

    Attributes:
        schema: The columns.
        num_rows: The row count when known up front (``None`` for CSV).
        batches: The rows, in order.
        from_csv: Whether the columns are CSV text still to be parsed (``convert`` parses
            numbers, booleans and timestamps from text only then).
    """

    schema: pa.Schema
    num_rows: int | None
    batches: Iterator[pa.RecordBatch]
    from_csv: bool = False


def open_input(data: InputData, *, csv_as_text: bool = True) -> InputBatches:
    """Open ``data`` (a DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL).

    Args:
        data: The rows.
        csv_as_text: Read every CSV column as text (so :func:`convert` reports the exact row of a
            bad value); otherwise let pyarrow infer CSV column types.

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
            row = _first_failure(len(values), lambda lo, hi, v=values: _converts(v[:hi]))
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


# ---- converting columns without loss -------------------------------------------------------------

_NUMERIC = ("int", "float", "decimal")
_ACCEPTS: dict[str, tuple[str, ...]] = {
    "int": _NUMERIC,
    "float": _NUMERIC,
    "bool": ("bool",),
    "string": ("string", "binary"),
    "binary": ("binary", "string"),
    "timestamp": ("timestamp", "date"),
    "list": ("list",),
}
"""For each kind of target type, the kinds of source column that convert to it."""


def _kind(arrow_type: pa.DataType) -> str:
    checks = (
        ("null", pa.types.is_null),
        ("bool", pa.types.is_boolean),
        ("int", pa.types.is_integer),
        ("float", pa.types.is_floating),
        ("decimal", pa.types.is_decimal),
        ("string", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("binary", lambda t: pa.types.is_binary(t) or pa.types.is_large_binary(t)),
        ("timestamp", pa.types.is_timestamp),
        ("date", pa.types.is_date),
        ("list", lambda t: pa.types.is_list(t) or pa.types.is_large_list(t)),
    )
    for kind, check in checks:
        if check(arrow_type):
            return kind
    return "other"


def convert(
    values: pa.Array | pa.ChunkedArray,
    target: pa.DataType,
    *,
    column: str,
    expected: str,
    row_offset: int = 0,
    from_csv: bool = False,
) -> pa.Array:
    """Return ``values`` as ``target`` if that loses nothing, else raise naming the first bad row.

    Integers and floats convert to either when the value survives exactly (``1.0`` into INT64
    does, ``1.5`` does not, nor does ``2**53 + 1`` into DOUBLE or an overflow into FLOAT).
    Timestamps of any unit and zone, dates, and ISO 8601 text convert to UTC microseconds (naive
    ones are read as UTC); sub-microsecond digits and timestamps outside years 1-9999 are
    rejected. Other text converts to numbers and booleans only when it came from CSV; strings
    and bytes convert into each other when valid. Lists convert element by element.

    Args:
        values: The column.
        target: The Arrow type wanted.
        column: The column's name, for errors.
        expected: What the column holds, for errors (``"feature trips (INT64)"``).
        row_offset: The row number of ``values[0]`` in the whole input, for errors.
        from_csv: Whether ``values`` is CSV text still to be parsed.

    Raises:
        DataValidationError: If a value does not convert; ``column`` and ``row`` locate it.
    """
    array = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.type == target:
        return _check_range(array, column, expected, row_offset)
    source_kind, target_kind = _kind(array.type), _kind(target)
    if source_kind == "null":
        return pa.nulls(len(array), target)
    accepted = _ACCEPTS.get(target_kind, ())
    parse_text = source_kind == "string" and (
        target_kind == "timestamp" or (from_csv and target_kind != "list")
    )
    if source_kind not in accepted and not parse_text:
        row = _first_index(pc.is_valid(array))
        raise DataValidationError(
            f"column {column!r} row {row + row_offset}: holds {array.type} values, which "
            f"cannot be stored as {expected}",
            column=column,
            row=row + row_offset,
        )
    if target_kind == "list":
        return _convert_list(array, target, column, expected, row_offset, from_csv)
    if target_kind == "timestamp":
        return _convert_timestamps(array, column, expected, row_offset)
    result = _cast_or_locate(array, target, column, expected, row_offset)
    if target_kind == "float":
        overflow = pc.and_(pc.is_inf(result), pc.invert(pc.is_inf(array.cast(pa.float64()))))
        if pc.any(overflow).as_py():
            row = _first_index(overflow)
            raise _bad_value(array, row, column, expected, row_offset, "is too large to be stored")
    return result


def _convert_timestamps(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    if _kind(array.type) == "string":
        return _parse_timestamps(array, column, expected, offset)
    if pa.types.is_date(array.type):
        array = array.cast(pa.timestamp("s"))
    if array.type.tz is None:
        array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
    result = _cast_or_locate(array, TIMESTAMP_ARROW_TYPE, column, expected, offset)
    return _check_range(result, column, expected, offset)


def _parse_timestamps(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    try:
        parsed = _parse_iso(array)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_failure(len(array), lambda lo, hi: _parses(array[lo:hi]))
        raise _bad_value(array, row, column, expected, offset, "cannot be read") from None
    return _check_range(parsed, column, expected, offset)


_ZONE = r"\d:\d\d(:\d\d(\.\d*)?)?\s*([Zz]|[+-]\d\d(:?\d\d)?)$"
"""ISO 8601 text that ends in a zone designator (after a time of day)."""


def _parse_iso(text: pa.Array) -> pa.Array:
    """Parse ISO 8601 text; values with a zone are converted to UTC, the others read as UTC."""
    zoned = pc.fill_null(pc.match_substring_regex(text, _ZONE), False)
    none = pa.scalar(None, text.type)
    aware = pc.if_else(zoned, text, none).cast(TIMESTAMP_ARROW_TYPE)
    naive = pc.if_else(zoned, none, text).cast(pa.timestamp("us")).cast(TIMESTAMP_ARROW_TYPE)
    return pc.if_else(zoned, aware, naive)


def _parses(text: pa.Array) -> bool:
    try:
        _parse_iso(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _convert_list(
    array: pa.Array, target: pa.DataType, column: str, expected: str, offset: int, from_csv: bool
) -> pa.Array:
    flat = array.flatten()
    try:
        values = convert(flat, target.value_type, column=column, expected=expected)
    except DataValidationError as exc:
        element = int(exc.attrs()["row"])
        offsets = array.offsets.to_numpy()
        row = int((offsets <= element + int(offsets[0])).sum()) - 1
        raise DataValidationError(
            f"column {column!r} row {row + offset}: element {element - int(offsets[row])} of "
            f"the list cannot be stored as {expected}",
            column=column,
            row=row + offset,
        ) from None
    rebased = pc.subtract(array.offsets, array.offsets[0]).cast(pa.int32())
    return pa.ListArray.from_arrays(rebased, values, type=target, mask=array.is_null())


def _cast_or_locate(
    array: pa.Array, target: pa.DataType, column: str, expected: str, offset: int
) -> pa.Array:
    try:
        return array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        row = _first_failure(len(array), lambda lo, hi: _casts(array[lo:hi], target))
        raise _bad_value(array, row, column, expected, offset, "cannot be stored") from None


def _casts(array: pa.Array, target: pa.DataType) -> bool:
    try:
        array.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _check_range(array: pa.Array, column: str, expected: str, offset: int) -> pa.Array:
    if not pa.types.is_timestamp(array.type):
        return array
    low, high = pa.scalar(MIN_TIMESTAMP, array.type), pa.scalar(MAX_TIMESTAMP, array.type)
    outside = pc.or_(pc.less(array, low), pc.greater(array, high))
    if pc.any(outside).as_py():
        row = _first_index(outside)
        raise DataValidationError(
            f"column {column!r} row {row + offset}: timestamp is outside years 1-9999 "
            f"(raw value {array.cast(pa.int64())[row].as_py()} {array.type.unit})",
            column=column,
            row=row + offset,
        )
    return array


def _bad_value(
    array: pa.Array, row: int, column: str, expected: str, offset: int, why: str
) -> DataValidationError:
    value = array[row]
    shown = str(value) if pa.types.is_timestamp(value.type) else repr(value.as_py())
    return DataValidationError(
        f"column {column!r} row {row + offset}: {shown} {why} as {expected} without loss",
        column=column,
        row=row + offset,
    )


def _first_index(mask: pa.Array | pa.ChunkedArray) -> int:
    """Return the index of the first true value of ``mask`` (its length when there is none)."""
    found = pc.index(pc.fill_null(mask, False), True).as_py()
    return len(mask) if found < 0 else int(found)


def _first_failure(length: int, ok: Any) -> int:
    """Binary-search the first index whose row makes ``ok(lo, hi)`` fail.

    ``ok(lo, hi)`` tells whether rows ``lo:hi`` are all fine; the whole range is known to fail.
    Costs about twice one full check.
    """
    lo, hi = 0, length
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(lo, mid):
            lo = mid
        else:
            hi = mid
    return lo


__all__ = [
    "BATCH_SIZE",
    "InputBatches",
    "SourceFiles",
    "StagedParquetWriter",
    "convert",
    "filesystem_for",
    "frame_to_table",
    "list_source_files",
    "open_input",
    "part_file_name",
    "read_table",
    "resolve_path",
    "may_tie",
    "without_superseded",
    "write_atomically",
]
