"""Where the Spark store's training sets live: the staging folder, each set's Parquet files.

Spark writes a training set as Parquet files ``part-NNNNN-...parquet`` under a folder of its own,
partition ``N`` holding the ``N``-th range of rows, in order; :func:`read_back` streams them to
the driver in that order, with each column restored to its exact type. Everything here goes
through ``pyarrow.fs``, so a local folder and an object store are read and cleaned alike.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from potluck.config import setting_error
from potluck.errors import PotluckError, ValidationError
from potluck.offline.files import BATCH_SIZE, filesystem_for, os_error, resolve_path
from potluck.offline.spark.carry import CarriedColumn, restore


def staging_folder(location: str, root: Path | None) -> tuple[str, Path | None]:
    """Return ``location`` resolved against ``root``, and its local folder if it is one.

    A local folder (a path or a ``file://`` URL) is made and checked; a URL must name a
    filesystem pyarrow opens (the training sets are read back through it).

    Raises:
        ConfigError: If the URL is of no such filesystem, or the folder cannot be made or
            written.
    """
    resolved = resolve_path(location, root)
    try:
        filesystem, inner = filesystem_for(resolved)
    except ValidationError as exc:
        raise setting_error(
            "offline_store.staging_location",
            f"{exc.message}; give a folder or a URL pyarrow and Spark both read (file://, s3://, "
            "gs://, hdfs://)",
            value=location,
        ) from None
    if not isinstance(filesystem, pafs.LocalFileSystem):
        return resolved.rstrip("/"), None
    folder = Path(inner)
    problem = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = os_error(str(folder), exc, "make").message
    if problem is None and not os.access(folder, os.W_OK | os.X_OK):
        problem = f"cannot write {str(folder)!r}: permission denied"
    if problem is not None:
        raise setting_error(
            "offline_store.staging_location",
            f"{problem} (a relative folder is relative to the config file's folder; set it in "
            "potluck.yaml or POTLUCK_OFFLINE_STORE__STAGING_LOCATION)",
            value=location,
        )
    return (resolved.rstrip("/") if "://" in resolved else str(folder)), folder


def child(folder: str, name: str) -> str:
    """Return the location of ``name`` in ``folder`` (a local path or a URL)."""
    return f"{folder}/{name}" if "://" in folder else str(Path(folder) / name)


def spark_path(location: str) -> str:
    """The path Spark (Hadoop) writes ``location`` at: a ``file:`` URI for a local folder."""
    return location if "://" in location else Path(location).as_uri()


def write_empty(location: str, schema: pa.Schema) -> None:
    """Write the training set of no entity rows: one empty file, as Spark would.

    Raises:
        ValidationError: If the folder cannot be made or written.
        UnavailableError: If the storage fails.
    """
    fs, folder = filesystem_for(location)
    try:
        fs.create_dir(folder, recursive=True)
        pq.write_table(schema.empty_table(), f"{folder}/part-00000.parquet", filesystem=fs)
    except OSError as exc:
        raise os_error(location, exc, "write") from None


def remove(location: str) -> None:
    """Delete a training set's folder (a failed job's leftovers, or on cleanup); never raises."""
    with contextlib.suppress(OSError, PotluckError):
        fs, folder = filesystem_for(location)
        fs.delete_dir(folder)


def read_back(
    location: str, columns: tuple[CarriedColumn, ...], schema: pa.Schema, rows: int
) -> Iterator[pa.RecordBatch]:
    """Stream the training set at ``location`` in row order, restored to ``schema``.

    Args:
        location: The training set's folder.
        columns: How each entity column was carried (the first columns of the files).
        schema: The training set's exact columns and types.
        rows: How many rows were written there.

    Raises:
        ValidationError: If the folder is gone or no longer holds the rows written there.
        UnavailableError: If the storage fails.
    """
    fs, folder = filesystem_for(location)
    try:
        listed = fs.get_file_info(pafs.FileSelector(folder))
    except OSError as exc:
        raise os_error(location, exc, "read") from None
    parts = sorted(
        (int(info.base_name[5:].split("-")[0].split(".")[0]), info.path)
        for info in listed
        if info.base_name.startswith("part-") and info.base_name.endswith(".parquet")
    )
    count = 0
    for _, path in parts:
        try:
            for batch in pq.ParquetFile(path, filesystem=fs).iter_batches(batch_size=BATCH_SIZE):
                count += batch.num_rows
                yield _restored(batch, columns, schema)
        except OSError as exc:
            raise os_error(path, exc, "read") from None
    if count != rows:
        raise ValidationError(
            f"the training set at {location!r} holds {count} rows, not the {rows} written "
            "there; it was changed since: build it again",
            path=location,
        )


def _restored(
    batch: pa.RecordBatch, columns: tuple[CarriedColumn, ...], schema: pa.Schema
) -> pa.RecordBatch:
    carried = len(columns)
    arrays = [restore(batch.column(i), column) for i, column in enumerate(columns)]
    arrays += [batch.column(i).cast(schema.field(i).type) for i in range(carried, len(schema))]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


__all__ = ["child", "read_back", "remove", "spark_path", "staging_folder", "write_empty"]
