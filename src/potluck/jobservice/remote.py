"""A client of potluck's Job Service (``potluck.jobservice.v1.JobService``) over gRPC.

The SDK (``Client`` with ``job_service_url``) and the CLI use it. A failed call raises the same
:class:`~potluck.errors.PotluckError` subclass the Job Service raised, with the same message and
fields (``registry/_errors.py``); a server that cannot be reached, or does not serve the Job
Service, raises :class:`~potluck.errors.UnavailableError` naming the address.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar, cast

import grpc

from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as pb
from potluck._proto.potluck.jobservice.v1 import job_service_pb2_grpc as pb_grpc
from potluck.auth.grpc import PLAIN, ClientSecurity, open_channel, plain_hint
from potluck.errors import PotluckError, UnavailableError
from potluck.ingestion.engines.base import POLL_INTERVAL, IngestionJob, raise_if_failed
from potluck.ingestion.jobs import Job
from potluck.jobservice._wire import (
    SERVICE_NAME,
    duration_to_proto,
    job_from_proto,
    schedule_from_proto,
)
from potluck.registry._errors import CODE_KEY, rebuild_error
from potluck.registry._wire import GRPC_OPTIONS, timestamp_to_proto
from potluck.registry.base import Schedule

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class RemoteJobService:
    """Calls a Job Service at ``address``.

    Args:
        address: ``host:port`` of the Job Service.
        timeout: Deadline in seconds for each call.
        security: TLS and the bearer token to send (``client_security(settings,
            "job_service")``); the default: plain, no token.

    Raises:
        ConfigError: If ``security.ca_file`` cannot be read.

    Example:
        >>> jobs = RemoteJobService("127.0.0.1:6568")
        >>> job = jobs.start_offline_to_online("default", "driver_stats")
    """

    def __init__(
        self, address: str, *, timeout: float = 30.0, security: ClientSecurity = PLAIN
    ) -> None:
        self.address = address
        self.timeout = timeout
        self._security = security
        self._channel = open_channel(address, security, GRPC_OPTIONS)
        self._stub = pb_grpc.JobServiceStub(self._channel)

    def start_offline_to_online(
        self,
        project: str,
        table: str,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        since_last: bool = False,
        full: bool = False,
    ) -> Job:
        """Start an offline-to-online job; see :meth:`JobService.start_offline_to_online`."""
        request = pb.StartOfflineToOnlineRequest(
            project=project, table=table, since_last=since_last, full=full
        )
        if start is not None:
            request.start.CopyFrom(timestamp_to_proto(start))
        if end is not None:
            request.end.CopyFrom(timestamp_to_proto(end))
        return job_from_proto(self._call(self._stub.StartOfflineToOnline, request).job)

    def start_stream_to_online(self, project: str, table: str) -> Job:
        """Start a stream-to-online job; see :meth:`JobService.start_stream_to_online`."""
        request = pb.StartStreamToOnlineRequest(project=project, table=table)
        return job_from_proto(self._call(self._stub.StartStreamToOnline, request).job)

    def get_historical_features(
        self,
        project: str,
        feature_refs: Sequence[str],
        entity_source: str,
        output_location: str,
        *,
        full_feature_names: bool = True,
    ) -> Job:
        """Start a historical retrieval; see :meth:`JobService.get_historical_features`."""
        request = pb.GetHistoricalFeaturesRequest(
            project=project,
            feature_refs=list(feature_refs),
            entity_source=entity_source,
            output_location=output_location,
            bare_feature_names=not full_feature_names,
        )
        return job_from_proto(self._call(self._stub.GetHistoricalFeatures, request).job)

    def list_jobs(
        self,
        project: str | None = None,
        *,
        table: str | None = None,
        include_terminated: bool = True,
    ) -> list[Job]:
        """Return jobs, newest first; see :meth:`JobService.list_jobs`."""
        request = pb.ListJobsRequest(
            project=project or "", table=table or "", active_only=not include_terminated
        )
        return [job_from_proto(j) for j in self._call(self._stub.ListJobs, request).jobs]

    def get_job(self, project: str, job_id: str) -> Job:
        """Return a job's record; see :meth:`JobService.get_job`."""
        request = pb.JobRequest(project=project, job_id=job_id)
        return job_from_proto(self._call(self._stub.GetJob, request).job)

    def cancel_job(self, project: str, job_id: str) -> Job:
        """Ask a job to stop; see :meth:`JobService.cancel_job`."""
        request = pb.JobRequest(project=project, job_id=job_id)
        return job_from_proto(self._call(self._stub.CancelJob, request).job)

    def schedule_offline_to_online(
        self, project: str, table: str, cron: str, look_back: timedelta
    ) -> Schedule:
        """Schedule a table's ingestion; see :meth:`JobService.schedule_offline_to_online`."""
        request = pb.ScheduleRequest(
            project=project, table=table, cron=cron, look_back=duration_to_proto(look_back)
        )
        return schedule_from_proto(self._call(self._stub.ScheduleOfflineToOnline, request))

    def unschedule(self, project: str, table: str) -> None:
        """Remove a table's schedule; see :meth:`JobService.unschedule`."""
        self._call(self._stub.Unschedule, pb.UnscheduleRequest(project=project, table=table))

    def list_schedules(self, project: str | None = None) -> list[Schedule]:
        """Return schedules; see :meth:`JobService.list_schedules`."""
        response = self._call(
            self._stub.ListSchedules, pb.ListSchedulesRequest(project=project or "")
        )
        return [schedule_from_proto(s) for s in response.schedules]

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, rpc: Callable[..., _Response], request: _Request) -> _Response:
        try:
            return rpc(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self._error(cast(grpc.Call, exc)) from None

    def _error(self, call: grpc.Call) -> PotluckError:
        metadata = {key: value for key, value in call.trailing_metadata() or ()}
        code = metadata.get(CODE_KEY)
        details = call.details() or ""
        if isinstance(code, str):
            return rebuild_error(code, details, metadata)
        status = call.code()
        if status == grpc.StatusCode.UNIMPLEMENTED:
            return UnavailableError(
                f"the server at {self.address} does not serve {SERVICE_NAME}; start "
                "`potluck jobservice` (or `potluck core --job-service`) and point "
                "job_service_url at it",
                address=self.address,
            )
        if status == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UnavailableError(
                f"the Job Service at {self.address} did not answer within {self.timeout:g} s",
                address=self.address,
            )
        hint = plain_hint(self._security, "job_service_secure", details)
        return UnavailableError(
            f"cannot reach the Job Service at {self.address}: {status.name}: {details}; is "
            f"`potluck jobservice` running?{hint}",
            address=self.address,
        )


class RemoteJob(IngestionJob):
    """A job followed through a Job Service (it runs there).

    Once the Job Service cannot be reached while the job is followed (it died, or the network
    failed), every call raises :class:`~potluck.errors.UnavailableError` naming the job: it
    keeps running there, or is marked ``FAILED`` once its heartbeat times out.

    Args:
        service: The Job Service client.
        job: The job's record as last read.
    """

    def __init__(self, service: RemoteJobService, job: Job) -> None:
        self._service = service
        self._job = job

    @property
    def id(self) -> str:
        """The job's id."""
        return self._job.id

    def record(self) -> Job:
        """Return the job's record as the Job Service reads it now.

        Raises:
            UnavailableError: If the Job Service cannot be reached; the message names the job.
        """
        try:
            self._job = self._service.get_job(self._job.spec.project, self._job.id)
        except UnavailableError as exc:
            raise self._lost(exc) from None
        return self._job

    def wait(self, timeout: float | None = None) -> Job:
        """Poll the Job Service until the job ends; see :meth:`IngestionJob.wait`.

        Raises:
            JobError: If the job failed; the message carries its error.
            TimeoutError: If it is still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.record()
            if job.status.is_terminal:
                return raise_if_failed(job)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job.id} is still {job.status.value}")
            time.sleep(POLL_INTERVAL)

    def cancel(self) -> None:
        """Ask the Job Service to stop the job at its next batch.

        Raises:
            UnavailableError: If the Job Service cannot be reached; the message names the job.
        """
        try:
            self._job = self._service.cancel_job(self._job.spec.project, self._job.id)
        except UnavailableError as exc:
            raise self._lost(exc) from None

    def _lost(self, error: UnavailableError) -> UnavailableError:
        job_id = self._job.id
        return UnavailableError(
            f"lost contact with the Job Service at {self._service.address} while following "
            f"job {job_id}; the job keeps running there (or is marked FAILED once its heartbeat "
            f"times out): potluck jobs describe {job_id}",
            address=self._service.address,
            job_id=job_id,
            cause=error.message,
        )


__all__ = ["RemoteJob", "RemoteJobService"]
