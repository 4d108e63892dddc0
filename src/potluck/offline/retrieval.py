"""RetrievalJob: a training set, computed in memory when read or staged as Parquet by an engine."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.offline.files import BATCH_SIZE, atomic_file, write_atomically

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class StagedOutput:
    """A training set an engine wrote as Parquet files under one folder.

    Attributes:
        location: The folder (a local path or a URL) that holds the files.
        schema: The training set's columns and their exact types.
        batches: Streams the rows back from the files, in row order, as batches of ``schema``.
        remove: Deletes the folder and its files; never raises.
    """

    location: str
    schema: pa.Schema
    batches: Callable[[], Iterator[pa.RecordBatch]]
    remove: Callable[[], None]


class RetrievalJob:
    """The result of ``get_historical_features``.

    An in-memory job (DuckDB) runs its join each time it is read. A staged job (Spark) runs
    once, when it is first read or its :attr:`output_location` is asked for: the engine writes
    the training set as Parquet under a folder of its own, and every read streams those files
    back. The entity rows and the plan were validated when the job was made, so a bad request
    fails there; an error in the feature data fails the run.

    Args:
        run: Computes the training set as one Arrow table (an in-memory job).
        stage: Writes the training set as Parquet and says where (a staged job); give either
            ``run`` or ``stage``.
        source_versions: The version of each feature table's batch source the job reads, by
            table name (``None`` for a plain Parquet folder, which has no versions). Pass them
            back as ``versions=`` to rebuild the same training set later.

    Attributes:
        source_versions: As given.

    Raises:
        TypeError: If neither or both of ``run`` and ``stage`` are given.

    Example:
        >>> job = client.get_historical_features(["driver_stats:*"], "entities.parquet")
        >>> job.to_pandas().head()
    """

    def __init__(
        self,
        run: Callable[[], pa.Table] | None = None,
        *,
        stage: Callable[[], StagedOutput] | None = None,
        source_versions: Mapping[str, int | None] | None = None,
    ) -> None:
        if (run is None) == (stage is None):
            raise TypeError("RetrievalJob needs exactly one of run and stage")
        self._run = run
        self._stage = stage
        self._staged: StagedOutput | None = None
        self._lock = threading.Lock()
        self.source_versions: dict[str, int | None] = dict(source_versions or {})

    @property
    def output_location(self) -> str | None:
        """The folder holding the training set's Parquet files, for a staged job.

        Asking runs a staged job that has not run yet. ``None`` for an in-memory job, which
        writes no files.
        """
        if self._stage is None:
            return None
        return self._staged_output().location

    def to_arrow(self) -> pa.Table:
        """Return the training set as an Arrow table (running the job if it must)."""
        if self._run is not None:
            return self._run()
        staged = self._staged_output()
        return pa.Table.from_batches(list(staged.batches()), schema=staged.schema)

    def to_pandas(self) -> pd.DataFrame:
        """Return the training set as a pandas DataFrame (running the job if it must)."""
        frame: pd.DataFrame = self.to_arrow().to_pandas()
        return frame

    def to_parquet(self, path: str | os.PathLike[str]) -> None:
        """Write the training set to one Parquet file (a local path or a URL).

        The file appears whole or not at all (written under a temporary name, then renamed). A
        staged job's rows are copied batch by batch, so memory does not grow with them.

        Raises:
            ValidationError: If ``path`` cannot be written (a file where a folder must be, a
                folder where the file must be, no permission).
            UnavailableError: If the storage fails (an object store out of reach, a full disk).
        """
        if self._run is not None:
            write_atomically(self._run(), os.fspath(path), file_format="parquet")
            return
        staged = self._staged_output()
        _write_batches(staged.schema, staged.batches(), os.fspath(path))

    def cleanup(self) -> None:
        """Delete a staged job's files under the engine's staging location.

        Nothing happens for an in-memory job, or a staged one that has not run. Reading the job
        afterwards runs it again (from the same source versions, into a new folder). A job used
        as a context manager (``with store.get_historical_features(...) as job:``) is cleaned
        up when the block ends.
        """
        with self._lock:
            staged, self._staged = self._staged, None
        if staged is not None:
            staged.remove()

    def __enter__(self) -> RetrievalJob:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    def _staged_output(self) -> StagedOutput:
        stage = self._stage
        if stage is None:
            raise TypeError("an in-memory RetrievalJob writes no files")
        with self._lock:
            if self._staged is None:
                self._staged = stage()
            return self._staged


def _write_batches(schema: pa.Schema, batches: Iterator[pa.RecordBatch], path: str) -> None:
    """Stream ``batches`` into one Parquet file at ``path`` (see :func:`atomic_file`)."""
    with atomic_file(path) as (fs, temp), pq.ParquetWriter(temp, schema, filesystem=fs) as writer:
        for batch in batches:
            writer.write_batch(batch, row_group_size=BATCH_SIZE)


__all__ = ["RetrievalJob", "StagedOutput"]
