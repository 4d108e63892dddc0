"""Batch-source files on any pyarrow filesystem: naming, listing and pruning them.

Every offline engine and ``ingest()`` name and select Parquet files here, so they agree exactly
on which files can hold wanted rows; which files a source holds at all is decided by its commit
log (:mod:`potluck.offline.commits`). Everything goes through ``pyarrow.fs``, so ``s3://``,
``gs://`` and ``hdfs://`` paths work like local folders.

Storage errors become one short message here (:func:`os_error`, :func:`filesystem_for`): a
driver's detail is cut to :data:`MAX_DETAIL_CHARS`, an ``hdfs://`` path on a machine without
Java or libhdfs says so in one line, and a URL's credentials are masked (every
:class:`~potluck.errors.PotluckError` masks its message).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.errors import PotluckError, UnavailableError, ValidationError
from potluck.types import from_arrow_type

BATCH_SIZE = 122_880
"""Rows per batch read from input, and rows per Parquet row group written (DuckDB's row group
size, so a scan of one file runs on every core)."""

_PART_FILE = re.compile(
    r"part-(?P<id>\d{8}T\d{12}Z-[0-9a-f]{8})-\d{5}(?P<superseded>-superseded)?\.parquet"
)
_INGESTION_ID = re.compile(r"(?P<time>\d{8}T\d{12})Z-[0-9a-f]{8}")

MAX_DETAIL_CHARS = 300
"""The most characters of a storage driver's own message that an error quotes."""

_HDFS_LIBRARY = re.compile(r"(?:Unable to load|Prior attempt to load) (libjvm|libhdfs)")
"""How pyarrow says that HDFS cannot work here: the first time (the message then lists every path
it tried), and every later time in the same process."""
_URL_OPTION = re.compile(r"Unexpected query parameter in (S3|GCS) URI: '([^']*)'")
_URL_SYNTAX = re.compile(r"Cannot parse URI: .* syntax error at character '.' \(position (\d+)\)")
_CREDENTIALS_HINT = {
    "S3": "give the access key and secret key as the URL's user name and password "
    "(percent-encoded), or in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
    "AWS_SESSION_TOKEN)",
    "GCS": "credentials come from the environment (GOOGLE_APPLICATION_CREDENTIALS)",
}


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
        raise ValidationError(f"cannot open {path!r}: {_url_problem(exc)}", path=path) from None
    except OSError as exc:  # an object store's region or credentials could not be resolved
        raise os_error(path, exc, "open") from None
    return fs, str(inner)


def _url_problem(exc: Exception) -> str:
    """Say why pyarrow cannot open a URL, and what to do.

    An option it does not read and a character it cannot parse are named (pyarrow's own
    message for the latter quotes the whole URL).
    """
    syntax = _URL_SYNTAX.search(str(exc))
    if syntax is not None:
        return (
            f"it is not a valid URL (the character at position {syntax.group(1)} is not "
            "allowed there); percent-encode '/', '+', '@', ':', '?' and '#' in a user name or "
            "password (%2F, %2B, %40, %3A, %3F, %23)"
        )
    option = _URL_OPTION.search(str(exc))
    if option is None:
        return _detail(exc)
    store, name = option.groups()
    return (
        f"the URL option {name!r} is not one pyarrow's {store} filesystem reads; "
        f"{_CREDENTIALS_HINT[store]}"
    )


def _detail(exc: BaseException) -> str:
    """A driver's message on one line, at most :data:`MAX_DETAIL_CHARS` long."""
    text = " ".join(str(exc).split())
    if len(text) <= MAX_DETAIL_CHARS:
        return text
    return f"{text[:MAX_DETAIL_CHARS]}... ({len(text) - MAX_DETAIL_CHARS} more characters)"


def os_error(path: str, exc: OSError, doing: str) -> PotluckError:
    """Return the potluck error for ``exc``, raised while ``doing`` (read, write...) ``path``.

    Bad paths given by the user are a :class:`ValidationError` (no such file, a file where a
    folder must be, a folder where a file must be, no permission); on a URL, or for any other
    local failure (a full disk), the storage is the problem: :class:`UnavailableError`. An
    ``hdfs://`` path on a machine where pyarrow finds no Java runtime or libhdfs is one short
    :class:`UnavailableError` saying so (pyarrow's own lists every path it tried: 15 KB). A
    driver's message is quoted up to :data:`MAX_DETAIL_CHARS` characters.

    Args:
        path: The path or URL as the user gave it.
        exc: The error of Python or of ``pyarrow.fs``.
        doing: The verb for the message: ``"read"``, ``"write"``, ``"open"``.
    """
    library = _HDFS_LIBRARY.search(str(exc))
    if library is not None:
        return UnavailableError(
            f"cannot {doing} {path!r}: HDFS needs a Java runtime and Hadoop's libhdfs "
            f"({library.group(1).lower()} not found; set JAVA_HOME / HADOOP_HOME)",
            path=path,
            address=path,
        )
    if "://" in path and not path.startswith("file://"):
        detail = _detail(exc)
        return UnavailableError(
            f"cannot {doing} {path!r}: {detail}; check the URL, the network and the credentials",
            path=path,
            address=path,
        )
    reason = _local_reason(path, exc)
    if reason is None:
        text = os.strerror(exc.errno) if exc.errno else _detail(exc)
        return UnavailableError(f"cannot {doing} {path!r}: {text}", path=path)
    return ValidationError(f"cannot {doing} {path!r}: {reason}", path=path)


def _local_reason(path: str, exc: OSError) -> str | None:
    """Say what is wrong with a local ``path`` the user gave, or ``None`` if it is not the path."""
    local = Path(path.removeprefix("file://")).expanduser()
    if isinstance(exc, FileNotFoundError):
        return "no such file or folder"
    if isinstance(exc, IsADirectoryError) or exc.errno == errno.EISDIR or local.is_dir():
        return "it is a folder; give the path of a file"
    if isinstance(exc, PermissionError):
        return "permission denied"
    not_a_folder = isinstance(exc, NotADirectoryError) or exc.errno == errno.ENOTDIR
    exists = isinstance(exc, FileExistsError) or exc.errno == errno.EEXIST
    blocker = _file_in_the_way(local)
    if not_a_folder or (exists and blocker is not None):  # EEXIST: making a folder over a file
        where = f"{str(blocker)!r} is a file" if blocker else "a part of it is a file"
        return f"{where}, so no folder can be made there; choose another path"
    return None


def _file_in_the_way(path: Path) -> Path | None:
    """Return the first folder of ``path`` that is a file, if any."""
    for parent in reversed(path.parents):
        if parent.is_file():
            return parent
    return None


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


def ingestion_time(ingestion_id: str | None) -> datetime | None:
    """Return the UTC time an ingestion id starts with, or ``None`` if it is not one.

    ``ingest()`` makes ids as ``f"{utc_now:%Y%m%dT%H%M%S%fZ}-{8 hex digits}"``.
    """
    match = _INGESTION_ID.fullmatch(ingestion_id or "")
    if match is None:
        return None
    return datetime.strptime(match["time"], "%Y%m%dT%H%M%S%f").replace(tzinfo=timezone.utc)


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

    It is written to a temporary file and renamed, so readers never see half a file. Missing
    folders are created.

    Raises:
        ValidationError: If the table cannot be written in that format (a list column, or bytes
            that are not UTF-8 text, into CSV: the message names the column), or ``path``
            cannot be written (a file where a folder must be, a folder where the file must be,
            no permission).
        UnavailableError: If the storage fails: an object store that cannot be reached, a
            full disk.
    """
    if file_format == "csv":
        _check_csv_writable(table, path)
    with atomic_file(path) as (fs, temp):
        if file_format == "csv":
            with fs.open_output_stream(temp) as stream:
                pacsv.write_csv(table, stream)
        else:
            pq.write_table(table, temp, filesystem=fs, row_group_size=BATCH_SIZE)


@contextlib.contextmanager
def atomic_file(path: str) -> Iterator[tuple[pafs.FileSystem, str]]:
    """Give a temporary file beside ``path`` to write; rename it to ``path`` if all went well.

    Yields the filesystem and the temporary file's path in it. Missing folders are created; on
    any error the temporary file is deleted, so readers never see half a file.

    Raises:
        ValidationError: If Arrow cannot write the data in the file's format, or ``path``
            cannot be written (a file where a folder must be, a folder where the file must be,
            no permission).
        UnavailableError: If the storage fails: an object store that cannot be reached, a
            full disk.
    """
    fs, target = filesystem_for(path)
    directory, _, name = target.rpartition("/")
    temp = f"{directory}/_tmp-{uuid.uuid4().hex}-{name}"
    try:
        fs.create_dir(directory or "/", recursive=True)
        yield fs, temp
        fs.move(temp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            fs.delete_file(temp)
        if isinstance(exc, pa.ArrowNotImplementedError):
            raise ValidationError(f"cannot write {path!r}: {exc}", path=path) from None
        if isinstance(exc, OSError):
            raise os_error(path, exc, "write") from None
        raise


def _check_csv_writable(table: pa.Table, path: str) -> None:
    """Refuse what CSV cannot hold (and ``ingest`` could not read back), naming the column.

    Raises:
        ValidationError: For a list or other nested column, or a bytes value that is not UTF-8
            text (CSV fields of BYTES columns are read back as their UTF-8 bytes).
    """
    for field, column in zip(table.schema, table.columns, strict=True):
        kind = field.type
        if pa.types.is_nested(kind):
            what = "lists" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else kind
            raise ValidationError(
                f"cannot write {path!r}: column {field.name!r} holds {what} ({_type_name(kind)}), "
                "which CSV cannot store; write a .parquet file instead",
                path=path,
                column=field.name,
            )
        if (pa.types.is_binary(kind) or pa.types.is_large_binary(kind)) and not _is_utf8(column):
            row = next(i for i, v in enumerate(column.to_pylist()) if not _is_utf8_value(v))
            raise ValidationError(
                f"cannot write {path!r}: column {field.name!r} row {row} holds bytes that are not "
                "UTF-8 text, which CSV cannot store; write a .parquet file instead",
                path=path,
                column=field.name,
                row=row,
            )


def _is_utf8(column: pa.ChunkedArray) -> bool:
    try:
        column.cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _is_utf8_value(value: bytes | None) -> bool:
    if value is None:
        return True
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _type_name(arrow_type: pa.DataType) -> str:
    try:
        return from_arrow_type(arrow_type).name
    except ValueError:
        return str(arrow_type)


__all__ = [
    "BATCH_SIZE",
    "MAX_DETAIL_CHARS",
    "SourceFiles",
    "atomic_file",
    "filesystem_for",
    "list_source_files",
    "may_tie",
    "os_error",
    "part_file_name",
    "ingestion_of",
    "ingestion_time",
    "resolve_path",
    "select_days",
    "without_superseded",
    "write_atomically",
]
