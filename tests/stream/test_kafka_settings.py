"""The ``kafka:`` settings: librdkafka properties for every Kafka client, call-time ones on top.

Reading and checking the section needs no broker; that publish and the local stream job build
their clients from it (and that call-time options win) is checked against the shared broker.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from _stream_support import DRIVER, FAST_GROUP, finish, new_topic, stats_table, utc_now, wait_until
from confluent_kafka.admin import AdminClient

from potluck import Client
from potluck.config import load_settings
from potluck.errors import ConfigError, ValidationError
from potluck.ingestion.jobs import JobStatus

SECRET = "s3cr3t-Pa55"


def write_settings(root: Path, kafka: dict[str, Any], **more: Any) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "potluck.yaml"
    settings = {
        "project": f"p{uuid.uuid4().hex[:10]}",
        "registry": f"sqlite:///{root / 'registry.db'}",
        "kafka": kafka,
        **more,
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def test_the_file_and_the_environment_give_librdkafka_properties_as_text(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path,
        {
            "security.protocol": "SASL_SSL",
            "session.timeout.ms": 6000,
            "enable.ssl.certificate.verification": False,
        },
    )
    settings = load_settings(
        path,
        environ={
            "POTLUCK_KAFKA__SASL_PASSWORD": "0123",  # text as written: not the number 83
            "POTLUCK_KAFKA__SASL_MECHANISM": "PLAIN",
            "POTLUCK_KAFKA__SECURITY_PROTOCOL": "SSL",  # the environment wins over the file
        },
    )
    assert settings.kafka == {
        "security.protocol": "SSL",
        "session.timeout.ms": "6000",
        "enable.ssl.certificate.verification": "false",
        "sasl.password": "0123",
        "sasl.mechanism": "PLAIN",
    }
    assert load_settings(write_settings(tmp_path / "none", {})).kafka == {}


def test_secret_properties_are_masked_in_the_settings_repr(tmp_path: Path) -> None:
    path = write_settings(
        tmp_path,
        {"sasl.username": "potluck", "sasl.password": SECRET, "ssl.key.pem": "-----BEGIN KEY"},
    )
    shown = repr(load_settings(path))
    assert (
        "kafka={'sasl.password': '***', 'sasl.username': 'potluck', 'ssl.key.pem': '***'}" in shown
    )
    assert SECRET not in shown and "BEGIN KEY" not in shown


@pytest.mark.parametrize(
    ("kafka", "reason"),
    [
        (
            {"sasl.password": SECRET, "sasl.mechanism": ["PLAIN", "SCRAM"]},
            "property 'sasl.mechanism' must be text, a number or a boolean, not list; librdkafka "
            "takes one value per property (a list is one comma-separated text)",
        ),
        (
            {"sasl.password": SECRET, "sasl_password": SECRET},
            "property 'sasl.password' is given twice (as 'sasl_password' too); keep one",
        ),
        (
            {"sasl.password": SECRET, "group.id": "mine"},
            "property 'group.id' is set by potluck (the job's group_id names the consumer "
            "group); leave it out",
        ),
        (
            {"sasl.password": SECRET, "enable.auto.commit": True},
            "property 'enable.auto.commit' is set by potluck (a stream job commits offsets only "
            "after the online write); leave it out",
        ),
        (
            ["security.protocol=SSL"],
            "must be a mapping of librdkafka properties to values, such as "
            "{security.protocol: SASL_SSL, sasl.mechanism: PLAIN}, not list",
        ),
    ],
)
def test_a_bad_kafka_section_is_one_error_naming_the_property_and_hiding_secrets(
    tmp_path: Path, kafka: Any, reason: str
) -> None:
    path = write_settings(tmp_path, kafka)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = caught.value.message
    # a mapping is shown masked; a value of another shape (that may hold secrets) not at all
    shown = " = " if isinstance(kafka, dict) else ": "
    assert message.startswith(f"invalid setting 'kafka'{shown}")
    assert message.endswith(f": {reason} (read from {path})")
    assert SECRET not in message


def test_a_bad_call_time_property_is_refused_naming_it(tmp_path: Path) -> None:
    client = Client(write_settings(tmp_path, {}))
    try:
        with pytest.raises(ValidationError) as caught:
            client.publish("driver_stats", pd.DataFrame(), kafka_config={"bootstrap.servers": "x"})
    finally:
        client.close()
    assert caught.value.message == (
        "kafka_config: property 'bootstrap.servers' is set by potluck (the stream source's "
        "bootstrap_servers name the brokers); leave it out"
    )


# ---- on the broker -----------------------------------------------------------------------------


@pytest.fixture()
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        finish(client)


def rows(keys: list[int]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": keys,
            "conv_rate": [0.5] * len(keys),
            "trips": keys,
            "event_timestamp": [utc_now()] * len(keys),
        }
    )


@pytest.mark.kafka
@pytest.mark.redis
def test_publish_builds_its_producer_from_the_settings_under_call_time_options(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    topic = new_topic(kafka_bootstrap)
    path = write_settings(
        tmp_path,
        {"security.protocol": "nonsense", "sasl.password": SECRET},
        online_store={"type": "redis", "url": redis_url},
    )
    client = Client(path)
    clients.append(client)
    client.apply([DRIVER, stats_table(kafka_bootstrap, topic)])
    with pytest.raises(ValidationError) as caught:
        client.publish("driver_stats", rows([1, 2, 3]))
    assert caught.value.message == (
        "feature table 'driver_stats': the Kafka producer refused its settings: Invalid value "
        '"nonsense" for configuration property "security.protocol"; fix the kafka: settings or '
        "the call-time options (-k, kafka_config)"
    )
    report = client.publish(
        "driver_stats", rows([1, 2, 3]), kafka_config={"security.protocol": "plaintext"}
    )
    assert (report.topic, report.messages) == (topic, 3)


def member_client_ids(bootstrap: str, group: str) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_consumer_groups([group])[group].result(timeout=20)
    return sorted(member.client_id for member in described.members)


@pytest.mark.kafka
@pytest.mark.redis
def test_the_local_stream_job_builds_its_consumer_from_the_settings_under_call_time_options(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path, clients: list[Client]
) -> None:
    topic = new_topic(kafka_bootstrap)
    path = write_settings(
        tmp_path,
        {"client.id": "from-settings", **FAST_GROUP},
        online_store={"type": "redis", "url": redis_url},
    )
    client = Client(path)
    clients.append(client)
    client.apply([DRIVER, stats_table(kafka_bootstrap, topic)])
    first = client.start_stream_to_online_ingestion("driver_stats", group_id=f"a-{topic}")
    second = client.start_stream_to_online_ingestion(
        "driver_stats", group_id=f"b-{topic}", kafka_config={"client.id": "from-call"}
    )
    for job in (first, second):
        wait_until(lambda j=job: j.record().partitions == (0, 1, 2, 3), 60, "its partitions")
    assert member_client_ids(kafka_bootstrap, f"a-{topic}") == ["from-settings"]
    assert member_client_ids(kafka_bootstrap, f"b-{topic}") == ["from-call"]
    client.publish("driver_stats", rows([7]), kafka_config={"security.protocol": "plaintext"})
    for job in (first, second):  # both read it (one of them writes it: newer wins)
        wait_until(lambda j=job: j.record().stats.rows_read == 1, 60, "the message read")
    for job in (first, second):
        job.cancel()
        assert job.wait(60).status is JobStatus.CANCELLED
