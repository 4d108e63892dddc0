"""Batch-source files on any pyarrow filesystem: naming, listing and pruning them.

Every offline engine and ``ingest()`` name and select Parquet files here, so they agree exactly
on which files can hold wanted rows; which files a source holds at all is decided by its commit
log (:mod:`potluck.offline.commits`). Everything goes through ``pyarrow.fs``, so ``s3://``,
``gs://`` and ``hdfs://`` paths work like local folders.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import ValidationError

BATCH_SIZE = 122_880
"""Rows per batch read from input, and rows per Parquet row group written (DuckDB's row group
size, so a scan of one file runs on every core)."""

_PART_FILE = re.compile(
    r"part-(?P<id>\d{8}T\d{12}Z-[0-9a-f]{8})-\d{5}(?P<superseded>-superseded)?\.parquet"
)


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
) -> SourceFiles:
    """List the Parquet files in a folder, skipping those that cannot hold wanted rows.

    This is how a plain Parquet folder (written by other tools, no table log) is read; a table
    is read through its log (:mod:`potluck.offline.commits`). ``path`` is a folder (searched
    recursively) or one ``.parquet`` file. Files and folders whose name starts with ``_`` or
    ``.`` are skipped (temporary files of unfinished writes, logs). With ``partition_column``, a
    file under ``<partition_column>=YYYY-MM-DD/`` is skipped when that day is outside
    ``[first_day, last_day]``.
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
        paths.append(entry.path)
    return SourceFiles(fs, tuple(sorted(paths)))


def select_days(
    files: SourceFiles,
    root: str,
    partition_column: str | None,
    first_day: date | None,
    last_day: date | None,
) -> SourceFiles:
    """Keep the files whose partition day is within ``[first_day, last_day]``.

    The day is that of the ``<partition_column>=YYYY-MM-DD`` folder a file is in under ``root``
    (a path within the files' filesystem). Files outside such folders are kept; without
    ``partition_column`` every file is.
    """
    if not partition_column or (first_day is None and last_day is None):
        return files
    kept = tuple(
        path
        for path in files.paths
        if _day_wanted(
            path[len(root) :].strip("/").split("/")[:-1], partition_column, first_day, last_day
        )
    )
    return SourceFiles(files.filesystem, kept)


def ingestion_of(name: str) -> str | None:
    """Return the ingestion id in a file name ``ingest()`` gave, else ``None``."""
    match = _PART_FILE.fullmatch(name)
    return match["id"] if match else None


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


__all__ = [
    "BATCH_SIZE",
    "SourceFiles",
    "filesystem_for",
    "list_source_files",
    "may_tie",
    "part_file_name",
    "ingestion_of",
    "resolve_path",
    "select_days",
    "without_superseded",
    "write_atomically",
]
