"""Training sets through a Job Service: the entity rows staged for it, its output read back.

``Client.get_historical_features`` calls :func:`remote_historical_features` when
``job_service_url`` is set. Each call gets a new folder ``<staging_location>/<id>/``: in-memory
entity rows (a DataFrame or an Arrow table) are written there as ``entities.parquet`` (an entity
file given as a path or URL is passed as is, a relative path made absolute), and the Job Service
is asked to write the training set to ``<id>/output/``. The returned
:class:`~potluck.offline.retrieval.RetrievalJob` is staged: its first read polls the Job Service
until the job ends, then streams ``output/part-00000.parquet`` back; a job that failed or was
cancelled raises :class:`~potluck.errors.JobError`. The call's folder is deleted by
``cleanup()``, and at once when the job cannot be started or ends without a training set; it is
kept when the Job Service cannot be reached (the job may still run there and read it).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from potluck.errors import JobError, UnavailableError, ValidationError
from potluck.ingestion.jobs import JobStatus
from potluck.jobservice.remote import RemoteJob, RemoteJobService
from potluck.jobservice.retrieval import output_file
from potluck.offline.files import filesystem_for, resolve_path, write_atomically
from potluck.offline.inputs import InputData, frame_to_table
from potluck.offline.retrieval import RetrievalJob, StagedOutput

logger = logging.getLogger(__name__)

ENTITIES_FILE = "entities.parquet"
"""The name in a call's staging folder of the entity rows staged for the Job Service."""

OUTPUT_FOLDER = "output"
"""The name in a call's staging folder of the folder the Job Service writes the training set to."""


def missing_staging_location() -> ValidationError:
    """The error of a training set asked of a Job Service without ``staging_location``."""
    return ValidationError(
        "get_historical_features through the Job Service (job_service_url is set) needs the "
        "staging_location setting: a folder this client and the Job Service both read and "
        "write, such as s3://bucket/staging or a shared path; set staging_location (or "
        "POTLUCK_STAGING_LOCATION)",
        field="staging_location",
    )


def remote_historical_features(
    service: RemoteJobService,
    project: str,
    feature_refs: Sequence[str],
    entity_source: InputData,
    *,
    staging_location: str | None,
    root: Path,
    full_feature_names: bool = True,
) -> RetrievalJob:
    """Ask the Job Service for a training set; return a job that reads it back once written.

    Args:
        service: The Job Service client.
        project: The project of references that name none.
        feature_refs: ``table:feature``, ``project/table:feature`` or ``table:*``.
        entity_source: A DataFrame or an Arrow table (staged as Parquet), or a ``.parquet``/
            ``.csv`` path or URL the Job Service can read (a relative path is made absolute
            against ``root``).
        staging_location: The ``staging_location`` setting.
        root: The folder relative paths are relative to (the settings' ``root``).
        full_feature_names: Name feature columns ``table__feature`` (else the bare name).

    Returns:
        A staged :class:`RetrievalJob` (``source_versions`` is empty: the Job Service pins
        the versions it reads).

    Raises:
        ValidationError: If ``staging_location`` is not set.
        DataValidationError: If a DataFrame column cannot be converted to Arrow.
        FeatureRefError: If a reference is malformed or unknown (the Job Service checks).
        UnavailableError: If the Job Service or the staging location cannot be reached.
    """
    if staging_location is None:
        raise missing_staging_location()
    folder = resolve_path(staging_location, root).rstrip("/") + "/" + uuid.uuid4().hex
    if isinstance(entity_source, (str, os.PathLike)):
        source = resolve_path(os.fspath(entity_source), root)
    else:
        table = (
            entity_source
            if isinstance(entity_source, pa.Table)
            else frame_to_table(entity_source, (), keep_other_columns=True)
        )
        source = f"{folder}/{ENTITIES_FILE}"
        write_atomically(table, source, file_format="parquet")
    location = f"{folder}/{OUTPUT_FOLDER}"
    try:
        job = service.get_historical_features(
            project, feature_refs, source, location, full_feature_names=full_feature_names
        )
    except UnavailableError:
        raise
    except Exception:
        _remove(folder)
        raise
    handle = RemoteJob(service, job)

    def stage() -> StagedOutput:
        try:
            record = handle.wait()
            if record.status is JobStatus.CANCELLED:
                raise JobError(
                    f"job {record.id} was cancelled before it wrote the training set",
                    job_id=record.id,
                )
        except JobError:
            _remove(folder)
            raise
        path = output_file(location)
        filesystem, inner = filesystem_for(path)
        schema = pq.read_schema(inner, filesystem=filesystem)

        def batches() -> Iterator[pa.RecordBatch]:
            with filesystem.open_input_file(inner) as handle_:
                yield from pq.ParquetFile(handle_).iter_batches()

        return StagedOutput(location, schema, batches, lambda: _remove(folder))

    return RetrievalJob(stage=stage)


def _remove(folder: str) -> None:
    """Delete a call's staging folder; never raises (a leftover folder is only clutter)."""
    try:
        filesystem, inner = filesystem_for(folder)
        filesystem.delete_dir(inner)
    except FileNotFoundError:
        return  # nothing was staged (an entity file passed as is) or written
    except Exception:
        logger.warning("cannot delete the staging folder %s", folder, exc_info=True)


__all__ = [
    "ENTITIES_FILE",
    "OUTPUT_FOLDER",
    "missing_staging_location",
    "remote_historical_features",
]
