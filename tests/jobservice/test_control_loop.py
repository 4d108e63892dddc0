"""The control loop on a real Kafka broker and one PostgreSQL registry shared by two Job
Services: a hypothesis state machine adds and changes tables, removes stream sources, kills
jobs and restarts replicas, and checks that exactly one stream job runs per table with a stream
source, with the table's current definition, and none for the others."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from _js_support import DRIVER, settings_for
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from potluck import Client, Feature, FeatureTable, KafkaSource, ValueType
from potluck.config import Settings
from potluck.ingestion.jobs import STREAM_TO_ONLINE, Job, list_jobs, request_cancel
from potluck.jobservice.control_loop import fingerprint
from potluck.jobservice.service import JobService

TABLES = ("t_a", "t_b")
SETTLE_TIMEOUT = 40.0


def _topic(bootstrap: str) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"potluck-js-{uuid.uuid4().hex[:12]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=20).values():
        future.result(timeout=30)
    return name


def _table(name: str, bootstrap: str, topic: str, max_age_hours: int) -> FeatureTable:
    return FeatureTable(
        name=name,
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        max_age=timedelta(hours=max_age_hours),
        stream_source=KafkaSource(
            bootstrap_servers=bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
        ),
    )


class ControlLoopMachine(RuleBasedStateMachine):
    """Two replicas, A and B, keep the stream jobs of up to two tables."""

    config: Settings
    bootstrap: str
    topic: str

    def __init__(self) -> None:
        super().__init__()
        self.client = Client(settings=self.config)
        self.client.set_project(f"p{uuid.uuid4().hex[:10]}")
        self.project = self.client.project
        self.client.apply([DRIVER])
        self.config = self.config.model_copy(update={"project": self.project})
        self.replicas = [self._replica(), self._replica()]
        self.defined: dict[str, FeatureTable] = {}

    def _replica(self) -> JobService:
        return JobService(self.config, control_loop_interval=1.0)

    @rule(name=st.sampled_from(TABLES), max_age=st.integers(1, 3))
    def apply_table(self, name: str, max_age: int) -> None:
        """Add a table with a stream source, or change one's max_age."""
        table = _table(name, self.bootstrap, self.topic, max_age)
        self.client.apply([table])
        self.defined[name] = self.client.get_feature_table(name)

    @precondition(lambda self: bool(self.defined))
    @rule(data=st.data())
    def remove_stream_source(self, data: st.DataObject) -> None:
        """Keep the table but drop its stream source (or delete the table)."""
        name = data.draw(st.sampled_from(sorted(self.defined)))
        if data.draw(st.booleans()):
            self.client.apply([replace(self.defined[name], stream_source=None, revision=None)])
        else:
            self.client.delete_feature_table(name)
        del self.defined[name]

    @rule()
    def kill_jobs(self) -> None:
        """Stop every running stream job from outside (its process is told to stop)."""
        for job in self._running():
            request_cancel(self.client._registry, self.project, job.id)

    @rule(which=st.sampled_from([0, 1]))
    def restart_replica(self, which: int) -> None:
        """Stop a replica (its jobs end) and start a new one in its place."""
        self.replicas[which].close()
        self.replicas[which] = self._replica()

    def _running(self) -> list[Job]:
        return [
            j
            for j in list_jobs(self.client._registry, self.project)
            if j.spec.kind == STREAM_TO_ONLINE and not j.status.is_terminal
        ]

    @invariant()
    def exactly_one_current_job_per_table_with_a_stream_source(self) -> None:
        wanted = {name: fingerprint(t) for name, t in self.defined.items()}
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            for replica in self.replicas:
                replica.control_loop.run_once()
            running = self._running()
            per_table: dict[str, list[str | None]] = {}
            for job in running:
                per_table.setdefault(job.spec.table, []).append(job.spec.fingerprint)
            assert all(len(prints) == 1 for prints in per_table.values()), per_table
            if per_table == {name: [p] for name, p in wanted.items()}:
                return
            assert time.monotonic() < deadline, (per_table, wanted)
            time.sleep(0.3)

    def teardown(self) -> None:
        for replica in self.replicas:
            replica.close()
        for job in self._running():  # jobs a replica's loop started are stopped by its close
            request_cancel(self.client._registry, self.project, job.id)
        self.client.close()


def test_the_control_loop_keeps_one_current_stream_job_per_table(
    tmp_path: Path, fresh_postgres_url: str, kafka_bootstrap: str
) -> None:
    pytest.importorskip("confluent_kafka")
    ControlLoopMachine.config = settings_for(
        tmp_path, fresh_postgres_url, engine={"type": "local", "heartbeat_timeout": "3s"}
    )
    ControlLoopMachine.bootstrap = kafka_bootstrap
    ControlLoopMachine.topic = _topic(kafka_bootstrap)
    run = ControlLoopMachine.TestCase
    run.settings = settings(
        max_examples=3,
        stateful_step_count=6,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    started = time.monotonic()
    run().runTest()
    assert time.monotonic() - started < 300
