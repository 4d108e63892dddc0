"""Feast 0.9's ``Job`` message of each potluck job kind and status, and entity source paths."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from potluck._proto.feast.core import DataSource_pb2 as source_pb
from potluck._proto.feast.core import JobService_pb2 as pb
from potluck.compat.feast09.jobs import entity_source_path, job_to_feast
from potluck.errors import ValidationError
from potluck.ingestion.jobs import (
    HISTORICAL_RETRIEVAL,
    STREAM_TO_ONLINE,
    Job,
    JobSpec,
    JobStatus,
)


def _job(spec: JobSpec, status: JobStatus, **changes: Any) -> Job:
    return replace(Job.new(spec, "local"), status=status, **changes)


STARTED = datetime(2026, 3, 1, 12, 30, 5, 250_000, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("status", "feast_status"),
    [
        (JobStatus.PENDING, pb.JOB_STATUS_PENDING),
        (JobStatus.RUNNING, pb.JOB_STATUS_RUNNING),
        (JobStatus.SUCCEEDED, pb.JOB_STATUS_DONE),
        (JobStatus.FAILED, pb.JOB_STATUS_ERROR),
        (JobStatus.CANCELLED, pb.JOB_STATUS_ERROR),
    ],
)
def test_job_message_per_kind_and_status(
    status: JobStatus, feast_status: pb.JobStatus.ValueType
) -> None:
    batch = _job(JobSpec(project="p", table="driver_stats"), status, started_at=STARTED)
    message = job_to_feast(batch)
    assert message == pb.Job(
        id=batch.id,
        type=pb.BATCH_INGESTION_JOB,
        status=feast_status,
        start_time=Timestamp(seconds=int(STARTED.timestamp()), nanos=250_000_000),
        batch_ingestion=pb.Job.OfflineToOnlineMeta(table_name="driver_stats"),
    )

    stream_spec = JobSpec(kind=STREAM_TO_ONLINE, project="p", table="trips", fingerprint="ab12")
    stream = _job(stream_spec, status, log_location="/logs/spark-1.log")
    assert job_to_feast(stream) == pb.Job(
        id=stream.id,
        type=pb.STREAM_INGESTION_JOB,
        status=feast_status,
        hash="ab12",
        start_time=job_to_feast(stream).start_time,
        stream_ingestion=pb.Job.StreamToOnlineMeta(table_name="trips"),
        log_uri="/logs/spark-1.log",
    )
    # A job that has not started yet carries the time it was submitted.
    assert job_to_feast(stream).start_time.ToDatetime(tzinfo=timezone.utc) == stream.created_at

    retrieval_spec = JobSpec(
        kind=HISTORICAL_RETRIEVAL,
        project="p",
        table="",
        feature_refs=("trips:n",),
        entity_source="/data/entities",
        output_location="/data/out/1",
    )
    retrieval = _job(retrieval_spec, status, started_at=STARTED)
    assert job_to_feast(retrieval) == pb.Job(
        id=retrieval.id,
        type=pb.RETRIEVAL_JOB,
        status=feast_status,
        start_time=job_to_feast(batch).start_time,
        retrieval=pb.Job.RetrievalJobMeta(output_location="file:///data/out/1"),
    )


def test_entity_source_paths() -> None:
    def source(url: str, parquet: bool = True) -> source_pb.DataSource:
        options = source_pb.DataSource.FileOptions(file_url=url)
        if parquet:
            options.file_format.parquet_format.SetInParent()
        return source_pb.DataSource(type=source_pb.DataSource.BATCH_FILE, file_options=options)

    assert entity_source_path(source("file:///staging/abc")) == "/staging/abc"
    assert entity_source_path(source("s3://bucket/staging/abc")) == "s3://bucket/staging/abc"
    assert entity_source_path(source("/staging/abc", parquet=False)) == "/staging/abc"
    with pytest.raises(ValidationError) as caught:
        entity_source_path(source("file://other-host/staging/abc"))
    assert caught.value.field == "entity_source.file_options.file_url"  # type: ignore[attr-defined]
    with pytest.raises(ValidationError) as caught:
        entity_source_path(source_pb.DataSource(type=source_pb.DataSource.BATCH_FILE))
    assert caught.value.message.startswith("entity_source.file_options.file_url is not set")
