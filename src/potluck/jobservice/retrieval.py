"""Historical retrieval jobs: a training set written as Parquet to a folder, with a job record.

The Job Service runs each in a thread of its process. The record is written ``RUNNING`` when the
join starts, rewritten (its heartbeat) every quarter of the heartbeat timeout while it runs, and
written ``SUCCEEDED`` (``rows_written``: the training set's rows) or ``FAILED`` (with the error)
when it ends. The join itself cannot be stopped half-way: a cancel request is honoured before it
starts and when it ends (the job ends ``CANCELLED`` and its output is left unnamed).

The training set is ``<output_location>/part-00000.parquet``: every entity-row column, then one
column per feature (``table__feature``, or the bare name without ``full_feature_names``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE
from potluck.errors import JobError, ValidationError
from potluck.ingestion.jobs import (
    Job,
    JobStats,
    JobStatus,
    cancel_requested,
    save_job,
    utc_now,
)
from potluck.offline.base import OfflineStore
from potluck.offline.files import filesystem_for, os_error, resolve_path, write_atomically
from potluck.offline.pit import FeatureRequest, resolve_refs
from potluck.registry.base import Registry

logger = logging.getLogger(__name__)

OUTPUT_FILE = "part-00000.parquet"
"""The name of the training set's file in its output folder."""

_READABLE_SUFFIXES = (".parquet", ".csv")


def output_file(output_location: str) -> str:
    """Return the path of the training set's file in ``output_location``."""
    return output_location.rstrip("/") + "/" + OUTPUT_FILE


class RetrievalRunner:
    """Runs one historical retrieval job in a thread and keeps its record.

    Args:
        job: The job's record, as saved ``PENDING``.
        registry: Where definitions are read and the record is kept.
        offline_store: Runs the join.
        root: The folder relative entity-source and output paths are resolved against.
    """

    def __init__(
        self, job: Job, registry: Registry, offline_store: OfflineStore, root: Path
    ) -> None:
        self._job = job
        self._registry = registry
        self._offline = offline_store
        self._root = root
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"potluck-retrieval-{job.id}")

    @property
    def id(self) -> str:
        """The job's id."""
        return self._job.id

    def record(self) -> Job:
        """Return the job's current record."""
        with self._lock:
            return self._job

    def start(self) -> None:
        """Start the join in its thread, and its heartbeat beside it."""
        self._thread.start()
        threading.Thread(target=self._beat, name=f"potluck-beat-{self.id}", daemon=True).start()

    def cancel(self) -> None:
        """Ask the job to stop (before the join starts, or when it ends)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job ends and return its record.

        Raises:
            TimeoutError: If it is still running after ``timeout`` seconds.
        """
        if not self._done.wait(timeout):
            raise TimeoutError(f"job {self.id} is still {self.record().status.value}")
        return self.record()

    def _stopping(self) -> bool:
        if not self._cancel.is_set():
            try:
                if cancel_requested(self._registry, self._job.spec.project, self.id):
                    self._cancel.set()
            except Exception:
                logger.warning("checking job %s for a cancel request failed", self.id)
        return self._cancel.is_set()

    def _beat(self) -> None:
        every = self._job.heartbeat_timeout.total_seconds() / 4
        while not self._done.wait(every):
            self._stopping()
            self._write()

    def _run(self) -> None:
        outcome: dict[str, Any]
        try:
            if self._stopping():
                outcome = {"status": JobStatus.CANCELLED, "cancel_requested": True}
            else:
                self._write(status=JobStatus.RUNNING, started_at=utc_now())
                rows = self._retrieve()
                stats = JobStats(rows_written=rows)
                if self._stopping():
                    outcome = {"status": JobStatus.CANCELLED, "cancel_requested": True}
                else:
                    outcome = {"status": JobStatus.SUCCEEDED, "stats": stats}
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            logger.debug("job %s failed", self.id, exc_info=True)
            outcome = {"status": JobStatus.FAILED, "error": message}
        try:
            self._write(finished_at=utc_now(), **outcome)
        finally:
            self._done.set()

    def _retrieve(self) -> int:
        spec = self._job.spec
        assert spec.entity_source is not None and spec.output_location is not None  # checked
        requests = resolve_requests(self._registry, spec.project, spec.feature_refs)
        source = resolve_path(spec.entity_source, self._root)
        entities: str | pa.Table = source
        if not source.lower().endswith(_READABLE_SUFFIXES):
            entities = _read_parquet(source)  # Feast 0.9's SDK stages files without a suffix
        retrieval = self._offline.get_historical_features(entities, requests)
        table = retrieval.to_arrow()
        if not spec.full_feature_names:
            bare = {f"{r.table.name}__{f}": f for r in requests for f in r.features}
            table = table.rename_columns([bare.get(name, name) for name in table.column_names])
        target = output_file(resolve_path(spec.output_location, self._root))
        write_atomically(table, target, file_format="parquet")
        return int(table.num_rows)

    def _write(self, **changes: Any) -> None:
        with self._lock:
            if self._job.status.is_terminal:
                return
            self._job = self._job.evolve(**changes)
            job = self._job
        try:
            save_job(self._registry, job)
        except Exception:
            logger.warning("writing the record of job %s failed", self.id, exc_info=True)


def resolve_requests(
    registry: Registry, project: str, feature_refs: Sequence[str]
) -> tuple[FeatureRequest, ...]:
    """Resolve feature references against the registry (one request per table).

    Raises:
        FeatureRefError: If a reference is malformed or names an unknown table or feature.
    """
    return resolve_refs(
        feature_refs,
        project,
        lambda p, name: _table(registry.get(p, KIND_FEATURE_TABLE, name)),
        lambda p, name: _entity(registry.get(p, KIND_ENTITY, name)),
    )


def _read_parquet(path: str) -> pa.Table:
    """Read a Parquet entity file without a suffix; errors as the in-process path words them.

    Raises:
        ValidationError: If there is no such file, or it is no Parquet file.
        UnavailableError: If its storage cannot be read.
    """
    try:
        filesystem, inner = filesystem_for(path)
        return pq.read_table(inner, filesystem=filesystem)
    except FileNotFoundError:
        raise ValidationError(f"cannot read {path!r}: no such file", path=path) from None
    except OSError as exc:
        raise os_error(path, exc, "read") from None
    except pa.ArrowInvalid as exc:
        raise ValidationError(f"cannot read {path!r}: {exc}", path=path) from None


def _table(obj: object) -> FeatureTable:
    if not isinstance(obj, FeatureTable):
        raise JobError(f"{obj!r} is not a feature table")
    return obj


def _entity(obj: object) -> Entity:
    if not isinstance(obj, Entity):
        raise JobError(f"{obj!r} is not an entity")
    return obj


__all__ = ["OUTPUT_FILE", "RetrievalRunner", "output_file", "resolve_requests"]
