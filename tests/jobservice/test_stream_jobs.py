"""Stream jobs and the Job Service on a real Kafka broker: the control loop adopts a job started
by hand, and ``potluck stream`` with ``job_service_url`` runs the job in the Job Service."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from _js_support import DRIVER, settings_for

from potluck import Client, Feature, FeatureTable, KafkaSource, ValueType
from potluck.ingestion.jobs import ADOPTED_SUFFIX, Job, JobStatus
from potluck.jobservice.control_loop import fingerprint
from potluck.jobservice.server import start_jobservice_server
from potluck.jobservice.service import JobService

POTLUCK = Path(sys.executable).parent / "potluck"


def _events(bootstrap: str) -> FeatureTable:
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"potluck-js-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    return FeatureTable(
        name="events",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        max_age=timedelta(hours=1),
        stream_source=KafkaSource(
            bootstrap_servers=bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
        ),
    )


def _running(client: Client) -> Job:
    """Wait until the job of ``events`` is recorded RUNNING in the registry; return it."""
    deadline = time.monotonic() + 30
    while True:
        listed = client.list_jobs("events")
        record = listed[0] if listed else None
        if record is not None and record.status is JobStatus.RUNNING:
            return record
        assert time.monotonic() < deadline, record
        time.sleep(0.1)


def test_the_control_loop_adopts_a_stream_job_started_by_hand(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    pytest.importorskip("confluent_kafka")
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    client = Client(settings=settings)
    table = _events(kafka_bootstrap)
    client.apply([DRIVER, table])
    service = JobService(settings, control_loop_interval=1.0)
    hand = client.start_stream_to_online_ingestion("events")
    try:
        _running(client)
        first = service.control_loop.run_once()
        assert ([j.id for j in first.adopted], first.started, first.cancelled) == (
            [hand.id],
            (),
            (),
        )
        adoption = client._registry.get_job(settings.project, hand.id + ADOPTED_SUFFIX)
        assert adoption.body["fingerprint"] == fingerprint(client.get_feature_table("events"))
        assert [j.id for j in client.list_jobs()] == [hand.id]  # the side record is no job
        second = service.control_loop.run_once()
        assert (second.adopted, second.started, second.cancelled) == ((), (), ())
        assert hand.record().status is JobStatus.RUNNING

        client.apply([replace(table, max_age=timedelta(hours=2))])  # matters to the job
        third = service.control_loop.run_once()
        assert ([j.id for j in third.cancelled], third.started) == ([hand.id], ())
        assert hand.wait(30).status is JobStatus.CANCELLED
        fourth = service.control_loop.run_once()
        assert [j.spec.fingerprint for j in fourth.started] == [
            fingerprint(client.get_feature_table("events"))
        ]
    finally:
        service.close()  # stops the job it started
        hand.cancel()
        client.close()


def test_the_stream_command_runs_its_job_in_the_job_service(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    pytest.importorskip("confluent_kafka")
    settings = settings_for(tmp_path, f"sqlite:///{tmp_path / 'registry.db'}")
    client = Client(settings=settings)
    client.apply([DRIVER, _events(kafka_bootstrap)])
    service = JobService(settings)
    server = start_jobservice_server(service)
    remote = Client(settings=settings.model_copy(update={"job_service_url": server.address}))
    process = subprocess.Popen(
        [str(POTLUCK), "stream", "events", "-o", "json"],
        cwd=tmp_path,
        env={**_clean_environment(), "POTLUCK_JOB_SERVICE_URL": server.address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        record = _running(remote)
        assert [j.id for j in service.list_jobs(settings.project)] == [record.id]
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        assert (process.returncode, err) == (0, "")
        assert '"status": "CANCELLED"' in out and record.id in out
        assert service.get_job(settings.project, record.id).status is JobStatus.CANCELLED
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        remote.close()
        server.stop(None)
        service.close()
        client.close()


def _clean_environment() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
