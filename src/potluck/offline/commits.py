"""The commit protocol of batch sources: each ingestion is one commit of a Delta Lake table.

A batch source that ``ingest()`` writes is a `Delta Lake <https://delta.io>`_ table: Parquet
files plus a transaction log (``_delta_log/``) whose numbered entries each add a set of files.
An ingestion writes its files first (invisible: no reader lists files that the log does not
name), then commits them all in one log entry, which the log's storage makes atomic
(put-if-absent of ``_delta_log/<version>.json``). So:

- every reader sees an ingestion entirely or not at all, whatever crashes, and reads a
  consistent snapshot (one version) however long it reads;
- concurrent ingestions from many processes each get their own version (appends never
  conflict; ``deltalake`` retries the commit), so none loses a row;
- versions order ingestions by commit, not by start time or any clock: the watermark of
  ``--since-last`` jobs is a version (see :func:`read_source` with ``since_version``);
- a training set can name the versions it read and be rebuilt from them (time travel).

The table is created before any data file is written, so a reader never mistakes a first,
unfinished ingestion for a plain folder. A folder of Parquet files written by other tools (no
log) is read as it is, every file visible; the first ``ingest()`` into it turns it into a table
whose first version holds those files where they are.

An unfinished ingestion leaves files no version names. Each ingestion holds an exclusive lock
on ``_potluck/ingestions/<id>.lock`` in the source folder (local folders) while it runs; a lock
that can be taken belongs to a dead ingestion, whose files :func:`collect_garbage` deletes (the
next ``ingest()`` does so for its table, ``potluck gc`` for any). On object stores, where there
are no locks, files of ingestions older than a grace period are deleted instead.

Data files are named ``part-<ingestion id>-NNNNN[-superseded].parquet`` (see
:func:`potluck.offline.files.part_file_name`) under ``<date_partition_column>=YYYY-MM-DD/``
folders when the source is partitioned; the table itself has no Delta partition columns, so a
change of ``date_partition_column`` never conflicts with the table's metadata.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import IO
from urllib.parse import unquote

import deltalake
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake.exceptions import DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from potluck.errors import ConflictError, UnavailableError, ValidationError
from potluck.offline.files import (
    BATCH_SIZE,
    SourceFiles,
    filesystem_for,
    ingestion_of,
    list_source_files,
    select_days,
    without_superseded,
)

LOG_FOLDER = "_delta_log"
LOCK_FOLDER = "_potluck/ingestions"
_OLD_TEMP = re.compile(r"_tmp-[0-9a-f]{32}\.parquet")
"""How potluck before 0.2 named a file it was writing (renamed into place when done)."""
DEFAULT_GRACE = timedelta(hours=6)
"""How old files of an unfinished ingestion must be before they are deleted where no lock
tells whether their writer is alive (object stores)."""
_MAX_COMMIT_RETRIES = 1_000


@dataclass(frozen=True)
class SourceState:
    """What a batch source holds at one version.

    Attributes:
        location: The source's folder or URL, as given.
        exists: Whether anything is at the location.
        files: The files to read (all committed files, or those added after ``since_version``).
        version: The Delta version read; ``None`` for a plain Parquet folder (no log).
        since_version: The version ``files`` were added after, when asked and still known.
        reloaded: ``since_version`` was asked but its log entry is gone (log retention), so
            ``files`` are all the committed files.
        table_id: The table's id (Delta metadata id, new whenever the table is created again,
            e.g. after its folder was deleted); ``None`` for a plain Parquet folder.
    """

    location: str
    exists: bool
    files: SourceFiles
    version: int | None = None
    since_version: int | None = None
    reloaded: bool = False
    table_id: str | None = None


def is_table(location: str) -> bool:
    """Whether ``location`` holds a Delta table (a ``_delta_log`` folder)."""
    fs, root = filesystem_for(location)
    kind: pafs.FileType = fs.get_file_info(f"{root}/{LOG_FOLDER}").type
    return bool(kind == pafs.FileType.Directory)


def read_source(
    location: str, *, version: int | None = None, since_version: int | None = None
) -> SourceState:
    """Return the committed files of the batch source at ``location``.

    Args:
        location: A folder or URL (absolute).
        version: The table version to read; ``None`` reads the latest.
        since_version: Return only the files committed after this version (up to ``version``).

    Raises:
        ValidationError: If ``version`` is given but the location is not a table or has no such
            version.
        UnavailableError: If the log cannot be read.
    """
    fs, root = filesystem_for(location)
    if not is_table(location):
        if version is not None:
            raise ValidationError(
                f"{location!r} is a plain Parquet folder, not a table with versions: it cannot "
                f"be read at version {version}",
                path=location,
            )
        exists = fs.get_file_info(root).type != pafs.FileType.NotFound
        return SourceState(location, exists, list_source_files(location))
    table = _open(location, version)
    current = _committed(table, fs, root)
    table_id = str(table.metadata().id)
    files = SourceFiles(fs, current)
    if since_version is None or since_version >= table.version():
        if since_version is not None:
            files = SourceFiles(fs, ())
        return SourceState(location, True, files, table.version(), since_version, False, table_id)
    try:
        before = set(_committed(_open(location, since_version), fs, root))
    except ValidationError:
        return SourceState(location, True, files, table.version(), None, True, table_id)
    added = SourceFiles(fs, tuple(path for path in current if path not in before))
    return SourceState(location, True, added, table.version(), since_version, False, table_id)


def count_rows(
    location: str,
    *,
    version: int | None,
    since_version: int | None = None,
    partition_column: str | None = None,
    event_column: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """Count, from metadata only, the rows a range read of the source at ``location`` reads.

    The files are those :func:`read_source` gives for ``version`` and ``since_version``, less
    the ``<partition_column>=YYYY-MM-DD`` folders outside the range's days and the files of
    rows an ingestion superseded, as the offline store selects them. Without a range each
    file's rows come from the log's ``numRecords`` (its Parquet footer where the log has none,
    and for a plain folder); no data is read. With
    ``start`` or ``end``, each file's footer is read and row groups whose ``event_column``
    statistics lie wholly outside ``[start, end)`` are left out, so the count is an upper bound
    where a row group straddles a bound (or has no statistics).

    Args:
        location: The source's folder or URL (absolute).
        version: The table version read (``None``: the latest, or a plain folder).
        since_version: Count only files committed after this version.
        partition_column: The source's date partition column, if any.
        event_column: The event timestamp column in the files (used with a range).
        start: Inclusive lower bound on event time (naive means UTC), or ``None``.
        end: Exclusive upper bound on event time (naive means UTC), or ``None``.

    Returns:
        The number of rows, ``0`` when nothing is at ``location``.

    Raises:
        ValidationError: If ``version`` does not exist.
        UnavailableError: If the log cannot be read.
        OSError: If a footer cannot be read.
        pyarrow.ArrowInvalid: If a file is not Parquet.
    """
    start, end = _as_utc(start), _as_utc(end)
    state = read_source(location, version=version, since_version=since_version)
    fs, root = filesystem_for(location)
    files = without_superseded(
        select_days(
            state.files,
            root,
            partition_column,
            start.date() if start else None,
            end.date() if end else None,
        )
    )
    if start is not None or end is not None:
        return sum(_rows_in_range(fs, path, event_column, start, end) for path in files.paths)
    recorded = _recorded_rows(location, state.version, fs, root)
    total = 0
    for path in files.paths:
        count = recorded.get(_path_key(fs, path))
        total += pq.read_metadata(path, filesystem=fs).num_rows if count is None else count
    return total


def _path_key(fs: pafs.FileSystem, path: str) -> str:
    return os.path.normpath(path) if isinstance(fs, pafs.LocalFileSystem) else path


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def _recorded_rows(
    location: str, version: int | None, fs: pafs.FileSystem, root: str
) -> dict[str, int]:
    """Return ``{path: numRecords}`` of the files the log at ``version`` names with a count."""
    if version is None:
        return {}
    actions = pa.table(_open(location, version).get_add_actions(flatten=True))
    if "num_records" not in actions.column_names:
        return {}
    paths = actions.column("path").to_pylist()
    counts = actions.column("num_records").to_pylist()
    return {
        _path_key(fs, f"{root}/{unquote(path)}"): int(count)
        for path, count in zip(paths, counts, strict=True)
        if count is not None
    }


def _rows_in_range(
    fs: pafs.FileSystem,
    path: str,
    column: str | None,
    start: datetime | None,
    end: datetime | None,
) -> int:
    """Rows of the file's row groups that may hold event times in ``[start, end)``."""
    metadata = pq.read_metadata(path, filesystem=fs)
    names = [metadata.schema.column(i).path for i in range(metadata.num_columns)]
    index = names.index(column) if column in names else None
    total = 0
    for number in range(metadata.num_row_groups):
        group = metadata.row_group(number)
        stats = None if index is None else group.column(index).statistics
        low = high = None
        if stats is not None and stats.has_min_max:
            low, high = _as_moment(stats.min), _as_moment(stats.max)
        outside = (
            low is not None
            and high is not None
            and ((start is not None and high < start) or (end is not None and low >= end))
        )
        total += 0 if outside else group.num_rows
    return total


def _as_moment(value: object) -> datetime | None:
    return _as_utc(value) if isinstance(value, datetime) else None


def location_exists(location: str) -> bool:
    """Whether anything (a folder, a file) is at ``location``."""
    fs, root = filesystem_for(location)
    kind: pafs.FileType = fs.get_file_info(root).type
    return bool(kind != pafs.FileType.NotFound)


def _open(location: str, version: int | None) -> deltalake.DeltaTable:
    if version is not None and (
        isinstance(version, bool) or not isinstance(version, int) or version < 0
    ):
        raise ValidationError(
            f"a table version is a whole number from 0, got {version!r}", path=location
        )
    try:
        if version is None:
            return deltalake.DeltaTable(_uri(location))
        latest = deltalake.DeltaTable(_uri(location))
        if version > latest.version():
            raise ValidationError(
                f"the table at {location!r} has no version {version} yet: its latest is "
                f"{latest.version()}",
                path=location,
            )
        latest.load_as_version(version)
        return latest
    except TableNotFoundError:
        raise ValidationError(f"{location!r} is not a table", path=location) from None
    except DeltaError as exc:
        text = " ".join(str(exc).split())
        if version is not None:
            raise ValidationError(
                f"the table at {location!r} no longer has version {version}: log retention "
                f"removed it ({text})",
                path=location,
            ) from None
        raise UnavailableError(f"cannot read the table log at {location!r}: {text}") from None


def _committed(table: deltalake.DeltaTable, fs: pafs.FileSystem, root: str) -> tuple[str, ...]:
    if isinstance(fs, pafs.LocalFileSystem):
        return tuple(sorted(table.file_uris()))  # absolute local paths
    actions = pa.table(table.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist() if actions.num_rows else []
    return tuple(sorted(f"{root}/{unquote(p)}" for p in paths))


def _uri(location: str) -> str:
    return location if "://" in location else os.path.abspath(os.path.expanduser(location))


@dataclass
class _Written:
    path: str
    relative: str
    size: int
    rows: int


@dataclass(frozen=True)
class AppTransaction:
    """A Delta application transaction an ingestion commits: ``app_id`` moves to ``version``.

    Attributes:
        app_id: The application's id (a stream's offline sink: one per topic partition).
        version: The version committed (the sink: the last offset appended).
        expected: The version its writer read before deciding what to write (``None``: never
            committed); the commit fails if it changed meanwhile.
    """

    app_id: str
    version: int
    expected: int | None


@dataclass
class IngestionCommit:
    """One ingestion into a batch source: files written invisibly, then committed at once.

    Use :meth:`begin`, then :meth:`write` for each file, then :meth:`commit` (or :meth:`abort`
    on error). Until :meth:`commit` returns, no reader sees any of the files.

    Attributes:
        location: The source's folder or URL.
        ingestion_id: The ingestion's id (it names its files and its lock).
        schema: The Arrow schema of the files written.
        app_transactions: Delta application transactions committed with the files, in the
            same log entry (:func:`transaction_versions` reads them back). The commit happens
            only if each one's version is still the one its writer expected, checked on the
            snapshot the commit is built on; a concurrent commit of the same app id makes the
            later one fail too. So a writer that decides what to write from the versions it
            read writes each row once, whoever else writes.
    """

    location: str
    ingestion_id: str
    schema: pa.Schema
    app_transactions: tuple[AppTransaction, ...] = ()
    _fs: pafs.FileSystem = field(init=False, repr=False)
    _root: str = field(init=False, repr=False)
    _written: list[_Written] = field(default_factory=list, init=False, repr=False)
    _lock: IO[bytes] | None = field(default=None, init=False, repr=False)
    _lock_path: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._fs, self._root = filesystem_for(self.location)

    def begin(self) -> None:
        """Make sure the table exists, clean up after dead ingestions, and take this one's lock.

        Raises:
            ValidationError: If the location exists but is not a folder.
            UnavailableError: If the location cannot be written.
        """
        info = self._fs.get_file_info(self._root)
        if info.type == pafs.FileType.File:
            raise ValidationError(
                f"batch source {self.location!r} is a file; a batch source must be a folder",
                path=self.location,
            )
        ensure_table(self.location, self.schema)
        collect_garbage(self.location, grace=None)
        self._take_lock()

    def write(self, relative: str, rows: pa.Table) -> None:
        """Write ``rows`` as the file ``relative`` (a path under the source folder)."""
        path = f"{self._root}/{relative}"
        self._fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        self._written.append(_Written(path, relative, 0, rows.num_rows))
        pq.write_table(rows, path, filesystem=self._fs, row_group_size=BATCH_SIZE)
        self._written[-1].size = self._fs.get_file_info(path).size or 0

    @property
    def files(self) -> tuple[str, ...]:
        """The paths written so far."""
        return tuple(w.path for w in self._written)

    def commit(self) -> int | None:
        """Commit every file written in one table version, release the lock, return the version.

        The version is ``None`` only when nothing was written (an empty ingestion commits
        nothing).

        Raises:
            UnavailableError: If the commit fails; the files are then deleted.
            ConflictError: If an application transaction is no longer at the version its
                writer expected; the files are then deleted.
        """
        if not self._written:
            self._release()
            return None
        try:
            table = deltalake.DeltaTable(_uri(self.location))
            self._check_expected(table)
            _add_missing_columns(table, self.schema)
            before = table.version()
            now_ms = int(time.time() * 1000)
            actions: list[AddAction | RemoveAction] = [
                AddAction(w.relative, w.size, {}, now_ms, True, json.dumps({"numRecords": w.rows}))
                for w in self._written
            ]
            marker = {"potluck.ingestion_id": self.ingestion_id}
            table.create_write_transaction(
                actions,
                mode="append",
                schema=table.schema(),
                commit_properties=deltalake.CommitProperties(
                    custom_metadata=marker,
                    max_commit_retries=_MAX_COMMIT_RETRIES,
                    app_transactions=[
                        deltalake.Transaction(t.app_id, t.version) for t in self.app_transactions
                    ]
                    or None,
                ),
            )
        except DeltaError as exc:
            self.abort()
            text = " ".join(str(exc).split())
            raise UnavailableError(
                f"committing ingestion {self.ingestion_id} to {self.location!r} failed: {text}"
            ) from None
        self._release()
        return _version_of(self.location, self.ingestion_id, before)

    def _check_expected(self, table: deltalake.DeltaTable) -> None:
        for transaction in self.app_transactions:
            found = table.transaction_version(transaction.app_id)
            if found != transaction.expected:
                self.abort()
                raise ConflictError(
                    f"ingestion {self.ingestion_id} into {self.location!r} expected "
                    f"{transaction.app_id} at version {transaction.expected}, and another "
                    f"writer moved it to {found} first; nothing was committed",
                    path=self.location,
                )

    def abort(self) -> None:
        """Delete every file written and release the lock."""
        for written in self._written:
            with contextlib.suppress(OSError):
                self._fs.delete_file(written.path)
        self._written.clear()
        self._release()

    def _take_lock(self) -> None:
        if not isinstance(self._fs, pafs.LocalFileSystem):
            return
        folder = f"{self._root}/{LOCK_FOLDER}"
        os.makedirs(folder, exist_ok=True)
        # Locked under a hidden name, then renamed: a lock file that can be seen is held.
        temp = f"{folder}/.{self.ingestion_id}.lock"
        self._lock = open(temp, "wb")  # noqa: SIM115 - held until commit or abort
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        self._lock_path = f"{folder}/{self.ingestion_id}.lock"
        os.rename(temp, self._lock_path)

    def _release(self) -> None:
        if self._lock is not None and self._lock_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._lock_path)
            self._lock.close()
        self._lock = None
        self._lock_path = None


def transaction_versions(location: str, app_ids: Iterable[str]) -> dict[str, int | None]:
    """Return the version each application transaction of ``app_ids`` last committed.

    Args:
        location: The source's folder or URL.
        app_ids: The application ids (see :attr:`IngestionCommit.app_transactions`).

    Returns:
        ``{app id: version}``, ``None`` for an id never committed (or no table there yet).

    Raises:
        UnavailableError: If the log cannot be read.
    """
    ids = list(app_ids)
    if not is_table(location):
        return dict.fromkeys(ids)
    table = _open(location, None)
    return {app_id: table.transaction_version(app_id) for app_id in ids}


def ensure_table(location: str, schema: pa.Schema) -> None:
    """Create the Delta table at ``location`` unless there is one.

    Parquet files already there (written by other tools, or by an earlier potluck) become the
    table's first version, where they are. When several processes race, one creates the table
    and the others use it.
    """
    if is_table(location):
        return
    fs, root = filesystem_for(location)
    fs.create_dir(root, recursive=True)
    existing = list_source_files(location)
    actions = []
    for path in existing.paths:
        info = fs.get_file_info(path)
        rows = pq.read_metadata(path, filesystem=fs).num_rows
        actions.append(
            AddAction(
                path[len(root) + 1 :],
                info.size or 0,
                {},
                int((info.mtime_ns or 0) // 1_000_000),
                True,
                json.dumps({"numRecords": rows}),
            )
        )
    try:
        create_table_with_add_actions(
            _uri(location), deltalake.Schema.from_arrow(schema), actions, mode="error"
        )
    except DeltaError as exc:
        if not is_table(location):
            text = " ".join(str(exc).split())
            raise UnavailableError(f"cannot create the table at {location!r}: {text}") from None


def _add_missing_columns(table: deltalake.DeltaTable, schema: pa.Schema) -> None:
    """Add the columns of ``schema`` the table lacks (features added to the definition)."""
    present = {f.name for f in table.schema().fields}
    missing = [f for f in schema if f.name not in present]
    if not missing:
        return
    fields = deltalake.Schema.from_arrow(pa.schema(missing)).fields
    with contextlib.suppress(DeltaError):  # another ingestion added them first
        table.alter.add_columns(fields)
    table.update_incremental()


def _version_of(location: str, ingestion_id: str, after: int) -> int | None:
    """Return the version whose log entry commits ``ingestion_id`` (one after ``after``).

    Reads the log entries themselves (``_delta_log/<20-digit version>.json``, as the Delta
    protocol names them): ``DeltaTable.history`` was seen to mislabel versions of concurrent
    commits.
    """
    fs, root = filesystem_for(location)
    latest = deltalake.DeltaTable(_uri(location)).version()
    needle = json.dumps(ingestion_id)
    for version in range(after + 1, latest + 1):
        try:
            with fs.open_input_stream(f"{root}/{LOG_FOLDER}/{version:020d}.json") as entry:
                text = entry.read().decode()
        except FileNotFoundError:
            continue
        if f'"potluck.ingestion_id":{needle}' in text.replace(" ", ""):
            return version
    return None


@dataclass(frozen=True)
class GarbageReport:
    """What :func:`collect_garbage` found.

    Attributes:
        location: The source folder.
        deleted: Files deleted (or, for a dry run, that would be).
        kept_running: Ingestion ids still running (their lock is held).
    """

    location: str
    deleted: tuple[str, ...]
    kept_running: tuple[str, ...]


def collect_garbage(
    location: str, *, grace: timedelta | None = DEFAULT_GRACE, dry_run: bool = False
) -> GarbageReport:
    """Delete the files of ingestions that died before they committed.

    On a local folder, an ingestion whose lock can be taken is dead: its uncommitted files go
    at once. With ``grace`` set, every potluck data file no version names and no live
    ingestion owns, older than ``grace``, goes too (this finds leftovers on object stores, and
    the ``_tmp-<32 hex digits>.parquet`` files of potluck versions before 0.2). Only tables are
    cleaned: a plain Parquet folder (no log) is left alone, since all its files are data. Files
    of other tools are never touched.

    Args:
        location: The source folder or URL.
        grace: How old an unowned, uncommitted file must be to go; ``None`` deletes only the
            files of ingestions known dead (cheap: no full listing unless a dead lock exists).
        dry_run: Report without deleting.
    """
    fs, root = filesystem_for(location)
    if fs.get_file_info(root).type != pafs.FileType.Directory or not is_table(location):
        # A plain Parquet folder has no log saying what is committed: every file in it is data.
        return GarbageReport(location, (), ())
    dead, running = _dead_ingestions(fs, root)
    if not dead and grace is None:
        return GarbageReport(location, (), tuple(sorted(running)))
    cutoff = None if grace is None else time.time() - grace.total_seconds()
    candidates: list[tuple[str, str | None]] = []
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    for entry in fs.get_file_info(selector):
        relative = entry.path[len(root) + 1 :]
        if entry.type != pafs.FileType.File or relative.startswith((LOG_FOLDER, "_potluck/")):
            continue
        name = relative.rsplit("/", 1)[-1]
        owner = ingestion_of(name)
        old = cutoff is not None and (entry.mtime_ns or 0) / 1e9 < cutoff
        if (owner is not None and (owner in dead or old)) or (_OLD_TEMP.fullmatch(name) and old):
            candidates.append((entry.path, owner))
    # Read what is committed only now: a file listed above that an ingestion committed
    # meanwhile is in this snapshot, since commits are never undone.
    committed = set(read_source(location).files.paths) if is_table(location) else set()
    running |= _dead_ingestions(fs, root)[1]
    deleted = tuple(
        path for path, owner in candidates if path not in committed and owner not in running
    )
    if not dry_run:
        for path in deleted:
            with contextlib.suppress(OSError):
                fs.delete_file(path)
        for ingestion in dead:
            for name in (f"{ingestion}.lock", f".{ingestion}.lock"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{root}/{LOCK_FOLDER}/{name}")
    return GarbageReport(location, deleted, tuple(sorted(running)))


def _dead_ingestions(fs: pafs.FileSystem, root: str) -> tuple[set[str], set[str]]:
    """Return the ids of dead and of running ingestions, from their locks (local folders)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return set(), set()
    folder = f"{root}/{LOCK_FOLDER}"
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return set(), set()
    dead: set[str] = set()
    running: set[str] = set()
    for name in names:
        if not name.endswith(".lock"):
            continue
        ingestion = name.removeprefix(".")[: -len(".lock")]
        try:
            handle = open(f"{folder}/{name}", "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            continue
        with handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                running.add(ingestion)
                continue
            # Free: its owner died (a hidden name: before renaming its lock into place).
            dead.add(ingestion)
    return dead, running


__all__ = [
    "DEFAULT_GRACE",
    "LOCK_FOLDER",
    "LOG_FOLDER",
    "AppTransaction",
    "GarbageReport",
    "IngestionCommit",
    "SourceState",
    "collect_garbage",
    "count_rows",
    "ensure_table",
    "is_table",
    "location_exists",
    "read_source",
    "transaction_versions",
]
