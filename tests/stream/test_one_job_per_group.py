"""Which stream jobs of one table and consumer group may run at once (local and Spark).

Local jobs of one group share its partitions (``test_stream_job.py`` runs two); a Spark job keeps
its offsets in the group's checkpoint, so it runs alone in its group. The running Spark job here
is a record in a real registry (the refusal reads nothing else); ``tests/spark`` refuses a second
job beside a real Spark application.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _stream_support import FAST_GROUP, client_for, finish, new_topic, stats_table, wait_until

from potluck import Client
from potluck.client import open_registry
from potluck.errors import AlreadyExistsError
from potluck.ingestion.jobs import STREAM_TO_ONLINE, Job, JobSpec, JobStatus, save_job
from potluck.ingestion.stream.running import checkpoint_folder, refuse_second_job
from potluck.registry.base import Registry


@pytest.fixture()
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        finish(client)


def record(
    registry: Registry,
    project: str,
    engine: str,
    *,
    group_id: str | None = None,
    status: JobStatus = JobStatus.RUNNING,
) -> Job:
    spec = JobSpec(kind=STREAM_TO_ONLINE, project=project, table="driver_stats", group_id=group_id)
    job = Job.new(spec, engine, heartbeat_timeout=timedelta(minutes=5))
    job = dataclasses.replace(job, status=status)
    save_job(registry, job)
    return job


@pytest.mark.kafka
@pytest.mark.redis
def test_a_local_job_is_refused_beside_a_running_spark_job_of_its_group(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    topic = new_topic(kafka_bootstrap)
    client = client_for(tmp_path, {"type": "redis", "url": redis_url})
    clients.append(client)
    client.apply([stats_table(kafka_bootstrap, topic)])
    registry = open_registry(client.settings)
    try:
        spark = record(registry, client.project, "spark")
        with pytest.raises(AlreadyExistsError) as caught:
            client.start_stream_to_online_ingestion("driver_stats", kafka_config=FAST_GROUP)
    finally:
        registry.close()
    group = f"potluck.{client.project}.driver_stats"
    assert caught.value.message == (
        f"feature table 'driver_stats' already has a running stream job {spark.id} (engine "
        f"spark) in consumer group '{group}'; a Spark stream job does not share the group's "
        f"partitions with another job, so both would read every message. Cancel it (potluck "
        f"jobs cancel {spark.id}) or pick another group (--group-id, group_id=)"
    )
    assert (caught.value.job_id, caught.value.group_id) == (spark.id, group)
    assert [j.id for j in client.list_jobs("driver_stats")] == [spark.id]  # nothing recorded
    job = client.start_stream_to_online_ingestion(
        "driver_stats", group_id="another", kafka_config=FAST_GROUP
    )
    wait_until(lambda: job.record().status is JobStatus.RUNNING, 30, "the job in another group")
    job.cancel()
    assert job.wait(60).status is JobStatus.CANCELLED


def test_a_spark_job_runs_alone_in_its_group_and_the_later_of_two_yields(tmp_path: Path) -> None:
    client = client_for(tmp_path, {"type": "sqlite", "path": str(tmp_path / "online.db")})
    registry = open_registry(client.settings)
    try:
        project = client.project
        spark = record(registry, project, "spark")
        local = record(registry, project, "local", status=JobStatus.PENDING)
        record(registry, project, "spark", group_id="other")
        record(registry, project, "spark", status=JobStatus.CANCELLED)
        spec = local.spec
        # Recorded at the same moment: the earlier job goes on, the later one yields.
        refuse_second_job(registry, spark.spec, "spark", own_id=spark.id)
        with pytest.raises(AlreadyExistsError) as caught:
            refuse_second_job(registry, spec, "local", own_id=local.id)
        assert caught.value.job_id == spark.id
        # A second Spark job is refused beside either; its message says why.
        with pytest.raises(AlreadyExistsError) as caught:
            refuse_second_job(registry, spec, "spark")
        assert caught.value.job_id == local.id  # the newest running one is named
        assert "(engine local)" in caught.value.message
        assert (
            "a Spark stream job does not share the group's partitions with another job, so both "
            "would read every message" in caught.value.message
        )
        save_job(registry, local.evolve(status=JobStatus.CANCELLED))
        with pytest.raises(AlreadyExistsError) as caught:
            refuse_second_job(registry, spec, "spark")
        assert caught.value.job_id == spark.id
        assert (
            "a Spark stream job keeps its offsets in the group's checkpoint, which two jobs must "
            "not share" in caught.value.message
        )
        # Local jobs of one group share its partitions.
        save_job(registry, spark.evolve(status=JobStatus.CANCELLED))
        record(registry, project, "local")
        refuse_second_job(registry, spec, "local")
        # A job whose heartbeat stopped is lost, not running.
        lost = record(registry, project, "spark", group_id="lost")
        old = lost.updated_at - timedelta(minutes=10)  # type: ignore[operator]
        save_job(registry, dataclasses.replace(lost, updated_at=old, created_at=old))
        refuse_second_job(registry, lost.spec, "spark")
    finally:
        registry.close()
        client.close()


def test_each_group_has_a_checkpoint_folder_of_its_own() -> None:
    def folder(group: str | None) -> Path:
        spec = JobSpec(kind=STREAM_TO_ONLINE, project="p", table="t", group_id=group)
        return checkpoint_folder(Path("/c"), spec)

    assert folder(None) == Path("/c/p/t/potluck.p.t")
    assert folder("etl-2") == Path("/c/p/t/etl-2")
    assert folder("a/b") == Path("/c/p/t/a_b-c14cddc033f6")
    assert folder("a_b") == Path("/c/p/t/a_b")
    assert folder("..") == Path("/c/p/t/..-5ec1f7e700f3")
    assert len({folder("a/b"), folder("a:b"), folder("a_b")}) == 3
