"""potluck's Job Service messages <-> jobs and schedules; shared by the server and the client."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Literal

from google.protobuf.duration_pb2 import Duration

from potluck._proto.potluck.jobservice.v1 import job_service_pb2 as pb
from potluck.ingestion.jobs import Job, JobStatus
from potluck.jobservice.scheduler import next_tick
from potluck.registry._wire import timestamp_from_proto, timestamp_to_proto
from potluck.registry.base import JobRecord, Schedule

SERVICE_NAME = "potluck.jobservice.v1.JobService"
"""The gRPC service's full name (also its health-check name)."""

_STATUS = {
    JobStatus.PENDING: pb.JOB_STATUS_PENDING,
    JobStatus.RUNNING: pb.JOB_STATUS_RUNNING,
    JobStatus.SUCCEEDED: pb.JOB_STATUS_SUCCEEDED,
    JobStatus.FAILED: pb.JOB_STATUS_FAILED,
    JobStatus.CANCELLED: pb.JOB_STATUS_CANCELLED,
}


def job_to_proto(job: Job) -> pb.Job:
    """Return ``job`` as a message (``record_json`` carries the whole record)."""
    record = job.to_record()
    msg = pb.Job(
        id=job.id,
        project=job.spec.project,
        table=job.spec.table,
        kind=job.spec.kind,
        engine=job.engine,
        status=_STATUS[job.status],
        error=job.error or "",
        rows_read=job.stats.rows_read,
        rows_written=job.stats.rows_written,
        rows_skipped=job.stats.rows_skipped,
        rows_rejected=job.stats.rows_rejected,
        output_location=job.spec.output_location or "",
        record_json=json.dumps(dict(record.body), sort_keys=True),
    )
    for name in ("created_at", "started_at", "finished_at"):
        value = getattr(job, name)
        if value is not None:
            getattr(msg, name).CopyFrom(timestamp_to_proto(value))
    return msg


def job_from_proto(msg: pb.Job) -> Job:
    """Return the job a message carries (rebuilt from its ``record_json``)."""
    body = json.loads(msg.record_json) if msg.record_json else {}
    return Job.from_record(JobRecord(project=msg.project, id=msg.id, body=body))


def duration_to_proto(value: timedelta) -> Duration:
    """Return ``value`` as a Duration."""
    duration = Duration()
    duration.FromTimedelta(value)
    return duration


def schedule_to_proto(schedule: Schedule, now: datetime) -> pb.Schedule:
    """Return ``schedule`` as a message, with its next tick after ``now``."""
    msg = pb.Schedule(
        project=schedule.project,
        table=schedule.table,
        cron=schedule.cron,
        look_back=duration_to_proto(schedule.look_back),
        created_at=timestamp_to_proto(schedule.created_at),
        next_tick=timestamp_to_proto(next_tick(schedule.cron, now)),
    )
    if schedule.last_tick is not None:
        msg.last_tick.CopyFrom(timestamp_to_proto(schedule.last_tick))
    return msg


def schedule_from_proto(msg: pb.Schedule) -> Schedule:
    """Return the schedule a message carries."""
    return Schedule(
        project=msg.project,
        table=msg.table,
        cron=msg.cron,
        look_back=msg.look_back.ToTimedelta(),
        created_at=timestamp_from_proto(msg.created_at),
        last_tick=timestamp_from_proto(msg.last_tick) if msg.HasField("last_tick") else None,
    )


def optional_time(
    msg: pb.StartOfflineToOnlineRequest, name: Literal["start", "end"]
) -> datetime | None:
    """Return timestamp field ``name`` of ``msg``, or ``None`` if it is unset."""
    return timestamp_from_proto(getattr(msg, name)) if msg.HasField(name) else None


__all__ = [
    "SERVICE_NAME",
    "duration_to_proto",
    "job_from_proto",
    "job_to_proto",
    "optional_time",
    "schedule_from_proto",
    "schedule_to_proto",
]
