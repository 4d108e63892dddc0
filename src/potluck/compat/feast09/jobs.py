"""``feast.core.JobService`` (Feast 0.9) over potluck's Job Service.

Each RPC maps its request to one call of :class:`~potluck.jobservice.service.JobService` and
the returned :class:`~potluck.ingestion.jobs.Job` back to Feast's ``Job`` message
(:func:`job_to_feast`):

- ``type``: ``offline_to_online`` is ``BATCH_INGESTION_JOB``, ``stream_to_online``
  ``STREAM_INGESTION_JOB``, ``historical_retrieval`` ``RETRIEVAL_JOB``; the matching ``meta``
  field carries the table (``batch_ingestion``/``stream_ingestion.table_name``) or the training
  set's folder (``retrieval.output_location``, as a ``file://`` URL when it is local: Feast's
  SDK hands it out as the job's output URI).
- ``status``: ``PENDING`` and ``RUNNING`` as they are, ``SUCCEEDED`` is ``DONE``, ``FAILED``
  and ``CANCELLED`` are ``ERROR``. Feast 0.9 has no cancelled status (its SDK raises on any
  status but these four); its own launchers report a cancelled (killed) Spark job as failed,
  and a cancelled retrieval has no training set, which ``DONE`` would make the SDK hand out.
- ``start_time``: when the job started, or when it was submitted while it waits; ``hash``: the
  table definition's fingerprint of a stream job the control loop started, else empty;
  ``log_uri``: where its Spark driver's output goes, if it has one.

Start calls return as soon as the job is submitted. ``GetJob`` and ``CancelJob`` name no
project in Feast 0.9: the job is looked up in every project (ids are unique). An empty
``project`` means ``default``, as in Feast 0.9. Errors end the call as ``_calls.py`` says, with
the statuses of potluck's Core service (``registry/_errors.py``); Feast's SDK shows only the
details, which name the table, the job or the request field.
"""

from __future__ import annotations

import contextlib
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck._proto.feast.core import JobService_pb2 as pb
from potluck._proto.feast.core import JobService_pb2_grpc as pb_grpc
from potluck.auth.identity import Permission, current_caller
from potluck.compat.feast09._calls import required, rpc
from potluck.compat.feast09.core import DEFAULT_PROJECT
from potluck.compat.feast09.sources import file_url_of, path_of
from potluck.errors import DefinitionError, NotFoundError, ValidationError
from potluck.ingestion.jobs import (
    HISTORICAL_RETRIEVAL,
    OFFLINE_TO_ONLINE,
    STREAM_TO_ONLINE,
    Job,
    JobStatus,
)
from potluck.registry._errors import status_for

if TYPE_CHECKING:
    from potluck.jobservice.service import JobService

SERVICE_NAME = "feast.core.JobService"
"""The fully qualified gRPC service name."""

OUTPUT_FORMAT = "parquet"
"""The one ``output_format`` a historical retrieval writes (empty means it too)."""

TYPE_BY_KIND = {
    OFFLINE_TO_ONLINE: pb.BATCH_INGESTION_JOB,
    STREAM_TO_ONLINE: pb.STREAM_INGESTION_JOB,
    HISTORICAL_RETRIEVAL: pb.RETRIEVAL_JOB,
}
"""Feast 0.9's job type of each potluck job kind."""

STATUS_BY_STATUS = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.SUCCEEDED: pb.JOB_STATUS_DONE,
    JobStatus.FAILED: pb.JOB_STATUS_ERROR,
    JobStatus.CANCELLED: pb.JOB_STATUS_ERROR,
}
"""Feast 0.9's job status of each potluck job status (see the module docstring)."""

_call = rpc(status_for)

_TABLE_HINT = "name the feature table whose job to start"


def add_job_service(server: grpc.Server, service: JobService) -> None:
    """Serve ``feast.core.JobService`` from ``service`` on ``server`` (before it starts).

    Pass it to :func:`potluck.jobservice.server.run_jobservice` (``services``), so that Feast
    0.9's SDK can use potluck's Job Service as its ``job_service_url``.
    """
    pb_grpc.add_JobServiceServicer_to_server(_JobServicer(service), server)


def job_to_feast(job: Job) -> pb.Job:
    """Return Feast 0.9's ``Job`` message of ``job`` (see the module docstring)."""
    spec = job.spec
    out = pb.Job(
        id=job.id,
        type=TYPE_BY_KIND[spec.kind],
        status=STATUS_BY_STATUS[job.status],
        hash=spec.fingerprint or "",
        start_time=_timestamp(job.started_at or job.created_at),
        log_uri=job.log_location or "",
    )
    if spec.kind == OFFLINE_TO_ONLINE:
        out.batch_ingestion.table_name = spec.table
    elif spec.kind == STREAM_TO_ONLINE:
        out.stream_ingestion.table_name = spec.table
    else:
        out.retrieval.output_location = output_uri(job)
    return out


def output_uri(job: Job) -> str:
    """Return the URI of a historical retrieval's training set folder, as Feast hands it out."""
    return file_url_of(job.spec.output_location or "")


def entity_source_path(source: source_pb.DataSource) -> str:
    """Return the path or URL of the entity rows a ``GetHistoricalFeatures`` request names.

    Feast 0.9's file format has one choice, Parquet, so ``file_format`` is not read.

    Raises:
        ValidationError: If the source has no ``file_options.file_url``, or it is relative or
            names another host; the message names the field.
    """
    field = "entity_source.file_options.file_url"
    url = source.file_options.file_url
    if not url:
        raise ValidationError(
            f"{field} is not set: the entity rows must be a Parquet file source (Feast's SDK "
            "stages a dataframe as one when spark_staging_location is set)",
            field=field,
        )
    return _path(url, field)


def _path(url: str, field: str) -> str:
    try:
        return path_of(url, field)
    except DefinitionError as exc:
        raise ValidationError(exc.message, field=field) from None


def _timestamp(value: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value.astimezone(timezone.utc).replace(tzinfo=None))
    return stamp


def _datetime(stamp: Timestamp, present: bool) -> datetime | None:
    return stamp.ToDatetime(tzinfo=timezone.utc) if present else None


def _project(name: str) -> str:
    return name or DEFAULT_PROJECT


class _JobServicer:
    """The JobService methods, as the generated ``add_JobServiceServicer_to_server`` expects."""

    def __init__(self, service: JobService) -> None:
        self._service = service

    def _projects(self, permission: Permission) -> list[str]:
        """Return the projects whose jobs this call may see: every one when auth is off.

        Feast 0.9's job calls by id name no project, so the authentication check can only ask
        for the permission; a caller limited to some projects sees the other projects' jobs
        as if they did not exist.
        """
        names = [p.name for p in self._service.registry.list_projects(include_archived=True)]
        caller = current_caller()
        if caller is None:
            return names
        return [name for name in names if caller.may(permission, name)]

    def _find(self, job_id: str, permission: Permission) -> Job:
        """Return job ``job_id`` from whichever visible project holds it (Feast 0.9 names none).

        Raises:
            ValidationError: If ``job_id`` is empty.
            NotFoundError: If no project the caller may act on has such a job.
        """
        required(job_id, "job_id", "give the id the start call returned")
        for project in self._projects(permission):
            with contextlib.suppress(NotFoundError):
                return self._service.get_job(project, job_id)
        raise NotFoundError(f"job {job_id} not found in any project", job_id=job_id)

    @_call
    def StartOfflineToOnlineIngestionJob(  # noqa: N802
        self, request: pb.StartOfflineToOnlineIngestionJobRequest
    ) -> pb.StartOfflineToOnlineIngestionJobResponse:
        job = self._service.start_offline_to_online(
            _project(request.project),
            required(request.table_name, "table_name", _TABLE_HINT),
            start=_datetime(request.start_date, request.HasField("start_date")),
            end=_datetime(request.end_date, request.HasField("end_date")),
            since_last=False,
            full=False,
        )
        return pb.StartOfflineToOnlineIngestionJobResponse(
            id=job.id,
            job_start_time=_timestamp(job.created_at),
            table_name=job.spec.table,
            log_uri=job.log_location or "",
        )

    @_call
    def StartStreamToOnlineIngestionJob(  # noqa: N802
        self, request: pb.StartStreamToOnlineIngestionJobRequest
    ) -> pb.StartStreamToOnlineIngestionJobResponse:
        job = self._service.start_stream_to_online(
            _project(request.project), required(request.table_name, "table_name", _TABLE_HINT)
        )
        return pb.StartStreamToOnlineIngestionJobResponse(
            id=job.id,
            job_start_time=_timestamp(job.created_at),
            table_name=job.spec.table,
            log_uri=job.log_location or "",
        )

    @_call
    def GetHistoricalFeatures(  # noqa: N802
        self, request: pb.GetHistoricalFeaturesRequest
    ) -> pb.GetHistoricalFeaturesResponse:
        if request.output_format not in ("", OUTPUT_FORMAT):
            raise ValidationError(
                f"output_format {request.output_format!r} is not supported; training sets are "
                f"written as {OUTPUT_FORMAT!r}",
                field="output_format",
            )
        if not request.output_location:
            raise ValidationError(
                "output_location is not set: name the folder the training set is written to "
                "(Feast's SDK: the historical_feature_output_location option)",
                field="output_location",
            )
        job = self._service.get_historical_features(
            _project(request.project),
            list(request.feature_refs),
            entity_source_path(request.entity_source),
            _path(request.output_location, "output_location"),
            full_feature_names=True,
        )
        return pb.GetHistoricalFeaturesResponse(
            id=job.id,
            output_file_uri=output_uri(job),
            job_start_time=_timestamp(job.created_at),
            log_uri=job.log_location or "",
        )

    @_call
    def ListJobs(self, request: pb.ListJobsRequest) -> pb.ListJobsResponse:  # noqa: N802
        visible = set(self._projects(Permission.READ_DEFINITIONS))
        jobs = [
            job
            for job in self._service.list_jobs(
                None,
                table=request.table_name or None,
                include_terminated=request.include_terminated,
            )
            if job.spec.project in visible
        ]
        return pb.ListJobsResponse(jobs=[job_to_feast(job) for job in jobs])

    @_call
    def GetJob(self, request: pb.GetJobRequest) -> pb.GetJobResponse:  # noqa: N802
        job = self._find(request.job_id, Permission.READ_DEFINITIONS)
        return pb.GetJobResponse(job=job_to_feast(job))

    @_call
    def CancelJob(self, request: pb.CancelJobRequest) -> pb.CancelJobResponse:  # noqa: N802
        job = self._find(request.job_id, Permission.RUN_JOBS)
        self._service.cancel_job(job.spec.project, job.id)
        return pb.CancelJobResponse()


__all__ = [
    "OUTPUT_FORMAT",
    "SERVICE_NAME",
    "STATUS_BY_STATUS",
    "TYPE_BY_KIND",
    "add_job_service",
    "entity_source_path",
    "job_to_feast",
    "output_uri",
]
