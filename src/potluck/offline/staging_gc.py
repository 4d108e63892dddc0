"""The age limit of a staging location: find and delete training-set folders older than an age.

potluck writes three kinds of things under a staging location, each matched here by its exact
name; anything else (other tools' files and folders, a folder named otherwise) is never touched:

- ``<UTC time>-<8 hex digits>/`` (``20240501T120000123456Z-1a2b3c4d``): a training set an
  offline store wrote (the Spark store's ``staging_location``);
- ``<32 hex digits>/``: a call of ``get_historical_features`` through the Job Service (the
  ``staging_location`` setting): its staged entity rows and the training set written for it;
- ``_logs/spark-driver-<pid>.log``: the log of a Spark driver.

A folder's age is the time since its newest file was written (since its newest sub-folder
changed, for a folder that holds no file yet); a log's, since it was last written. What is at
least ``older_than`` old goes, except:

- a folder whose job still runs: one the caller names (``running``: for the Job Service's calls,
  the folder of each job whose registry record has not ended) or one holding ``_temporary``,
  the working folder a Hadoop output committer (Spark's) keeps inside its output folder from
  the start of a write until it commits or aborts, unless nothing in it was written for
  :data:`ABANDONED_WRITE` (a driver killed mid-write never removes it);
- the log of a driver process that still runs on this machine.

Everything goes through ``pyarrow.fs``, so a local folder, a ``file://`` URL and an object store
are collected alike: one recursive listing, then one ``delete_dir`` per folder.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Literal

import pyarrow.fs as pafs

from potluck.errors import PotluckError
from potluck.offline.files import filesystem_for, os_error

ItemKind = Literal["training_set", "staged_call", "driver_log"]
"""What a collected item is: an offline store's training set, a Job Service call's folder, or a
Spark driver's log."""

TRAINING_SET_FOLDER = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{8}")
"""The name of an offline store's training-set folder: its UTC start time and a random suffix."""

STAGED_CALL_FOLDER = re.compile(r"[0-9a-f]{32}")
"""The name of a Job Service call's folder: a random UUID in hex."""

LOG_FOLDER = "_logs"
"""The folder of Spark driver logs in a local staging location."""

DRIVER_LOG = re.compile(r"spark-driver-(\d+)\.log")
"""The name of a Spark driver's log; the number is the driver's process id."""

WRITE_IN_PROGRESS = "_temporary"
"""What a Hadoop output committer keeps in its output folder while a write runs."""

ABANDONED_WRITE = timedelta(hours=24)
"""A folder holding :data:`WRITE_IN_PROGRESS` with no file written for this long is a dead
write's (its driver was killed), not a running one's: it is judged by its age like any other."""


@dataclass(frozen=True)
class StagedItem:
    """A folder (or a driver log) collected from a staging location.

    Attributes:
        path: Its location: the staging location's form (a path or a URL) plus its name.
        kind: What it is.
        age: The time since its newest file was written.
        size: The bytes of its files.
    """

    path: str
    kind: ItemKind
    age: timedelta
    size: int


@dataclass(frozen=True)
class StagingReport:
    """What :func:`collect_staging` found in one staging location.

    Attributes:
        location: The staging location (a path or a URL).
        exists: Whether it exists (a local folder is made by the first training set).
        deleted: What was old enough and deleted (for a dry run: would be), oldest first.
        kept_running: Old enough, but kept: their job still runs (or their driver does).
        failed: What could not be deleted, and why.
        dry_run: Whether nothing was deleted on purpose.
    """

    location: str
    exists: bool
    deleted: tuple[StagedItem, ...] = ()
    kept_running: tuple[StagedItem, ...] = ()
    failed: tuple[tuple[StagedItem, str], ...] = ()
    dry_run: bool = False


@dataclass
class _Entry:
    kind: ItemKind
    inner: str
    newest_file: float | None = None
    newest_folder: float | None = None
    size: int = 0
    writing: bool = False
    files: int = 0

    def written(self) -> float | None:
        return self.newest_file if self.files else self.newest_folder


def collect_staging(
    location: str,
    *,
    older_than: timedelta,
    running: Callable[[], Collection[str]] | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> StagingReport:
    """Delete the potluck folders and driver logs under ``location`` older than ``older_than``.

    Args:
        location: The staging location, resolved: a local path or a URL (``file://``,
            ``s3://``...).
        older_than: How old an item must be to go (0 or more).
        running: Returns the names of folders whose job still runs (default: none); called
            after the listing, so a job that starts while the listing runs is seen.
        dry_run: Report what would go; delete nothing.
        now: The time ages are measured at (default: now).

    Returns:
        What was deleted, kept and not deletable; an empty report if ``location`` does not
        exist.

    Raises:
        ValidationError: If ``location`` is not a folder, cannot be read (no permission), or
            is a URL pyarrow cannot open.
        UnavailableError: If its storage cannot be reached.
    """
    fs, root = filesystem_for(location)
    try:
        kind = fs.get_file_info(root).type
        if kind == pafs.FileType.NotFound:
            return StagingReport(location, exists=False, dry_run=dry_run)
        listing = _list(fs, root)
    except OSError as exc:
        raise os_error(location, exc, "read") from None
    entries = _entries(root, listing)
    busy = set(running()) if running is not None else set()
    at = (now or datetime.now(timezone.utc)).timestamp()
    base = location.rstrip("/")
    old: list[tuple[StagedItem, _Entry]] = []
    kept: list[StagedItem] = []
    for name, entry in entries.items():
        written = entry.written()
        if written is None:
            continue  # no time known (an object store's empty folder): not judged
        item = StagedItem(
            f"{base}/{name}", entry.kind, timedelta(seconds=max(0.0, at - written)), entry.size
        )
        if item.age < older_than:
            continue
        writing = entry.writing and item.age < ABANDONED_WRITE
        if writing or name in busy or _driver_runs(entry, fs):
            kept.append(item)
        else:
            old.append((item, entry))
    old.sort(key=lambda pair: (-pair[0].age, pair[0].path))
    deleted: list[StagedItem] = []
    failed: list[tuple[StagedItem, str]] = []
    for item, entry in old:
        problem = None if dry_run else _delete(fs, entry, item)
        if problem is None:
            deleted.append(item)
        else:
            failed.append((item, problem))
    return StagingReport(
        location,
        exists=True,
        deleted=tuple(deleted),
        kept_running=tuple(sorted(kept, key=lambda i: i.path)),
        failed=tuple(failed),
        dry_run=dry_run,
    )


def _entries(root: str, listing: list[pafs.FileInfo]) -> dict[str, _Entry]:
    """Group a recursive listing of ``root`` by potluck item (``name`` or ``_logs/name``)."""
    entries: dict[str, _Entry] = {}
    for info in listing:
        relative = info.path[len(root) :].lstrip("/")
        parts = relative.split("/")
        if parts[0] == LOG_FOLDER:
            if (
                len(parts) == 2
                and info.type == pafs.FileType.File
                and DRIVER_LOG.fullmatch(parts[1])
            ):
                entries[relative] = _Entry(
                    "driver_log",
                    info.path,
                    newest_file=_seconds(info.mtime_ns),
                    size=info.size or 0,
                    files=1,
                )
            continue
        kind: ItemKind
        if TRAINING_SET_FOLDER.fullmatch(parts[0]):
            kind = "training_set"
        elif STAGED_CALL_FOLDER.fullmatch(parts[0]):
            kind = "staged_call"
        else:
            continue
        if len(parts) == 1 and info.type != pafs.FileType.Directory:
            continue  # a file named like a folder of ours: not ours
        entry = entries.setdefault(parts[0], _Entry(kind, f"{root.rstrip('/')}/{parts[0]}"))
        written = _seconds(info.mtime_ns)
        if len(parts) == 2 and parts[1] == WRITE_IN_PROGRESS:
            entry.writing = True
        if info.type == pafs.FileType.File:
            entry.files += 1
            entry.size += info.size or 0
            if written is not None:
                entry.newest_file = max(entry.newest_file or written, written)
        elif written is not None:
            entry.newest_folder = max(entry.newest_folder or written, written)
    return entries


def _list(fs: pafs.FileSystem, root: str) -> list[pafs.FileInfo]:
    """List what potluck's items under ``root`` hold.

    On a local file system only entries named as potluck names its items are walked, and a
    symbolic link is listed as itself (its own time and size), never followed: a link out of
    the location, or a loop, is neither walked nor judged by its target. Object stores have no
    links: one recursive listing.
    """
    if not isinstance(fs, pafs.LocalFileSystem):
        return list(fs.get_file_info(pafs.FileSelector(root, recursive=True)))
    found: list[pafs.FileInfo] = []
    with os.scandir(root) as tops:
        for top in tops:
            ours = TRAINING_SET_FOLDER.fullmatch(top.name) or STAGED_CALL_FOLDER.fullmatch(top.name)
            if not (ours or top.name == LOG_FOLDER):
                continue
            found.append(_info(top.path))
            if not top.is_dir(follow_symlinks=False):
                continue
            for folder, folders, files in os.walk(top.path, followlinks=False):
                if top.name == LOG_FOLDER:
                    folders.clear()  # logs lie right in _logs
                found.extend(_info(os.path.join(folder, n)) for n in folders + files)
    return found


def _info(path: str) -> pafs.FileInfo:
    """``path`` as ``pyarrow.fs`` lists it, a symbolic link as a file of its own."""
    stat = os.lstat(path)
    folder = os.path.isdir(path) and not os.path.islink(path)
    return pafs.FileInfo(
        path,
        type=pafs.FileType.Directory if folder else pafs.FileType.File,
        mtime_ns=stat.st_mtime_ns,
        size=None if folder else stat.st_size,
    )


def _seconds(mtime_ns: int | None) -> float | None:
    return None if mtime_ns is None else mtime_ns / 1e9


def _driver_runs(entry: _Entry, fs: pafs.FileSystem) -> bool:
    """Whether ``entry`` is the log of a driver that still runs on this machine."""
    if entry.kind != "driver_log" or not isinstance(fs, pafs.LocalFileSystem):
        return False
    match = DRIVER_LOG.fullmatch(entry.inner.rsplit("/", 1)[-1])
    assert match is not None  # entries hold only matching logs
    pid = int(match.group(1))
    if not 0 < pid < 2**31:  # 0 is this process group; beyond pid_t no process has it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it runs
        return True
    return True


def _delete(fs: pafs.FileSystem, entry: _Entry, item: StagedItem) -> str | None:
    """Delete ``entry``; return why it could not be, or ``None``."""
    try:
        if entry.kind == "driver_log":
            fs.delete_file(entry.inner)
        else:
            fs.delete_dir(entry.inner)
    except FileNotFoundError:
        return None  # deleted meanwhile (its job's own cleanup)
    except OSError as exc:
        if exc.errno and ("://" not in item.path or item.path.startswith("file://")):
            # os_error judges a path the user gave; here the path is fine, the deletion is not
            return f"cannot delete {item.path!r}: {os.strerror(exc.errno).lower()}"
        error: PotluckError = os_error(item.path, exc, "delete")
        return error.message
    return None


__all__ = [
    "DRIVER_LOG",
    "LOG_FOLDER",
    "STAGED_CALL_FOLDER",
    "TRAINING_SET_FOLDER",
    "WRITE_IN_PROGRESS",
    "ItemKind",
    "StagedItem",
    "StagingReport",
    "collect_staging",
]
