"""The faults a fresh tester found in stream ingestion (issue 10), each with its siblings."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
import typer
import yaml
from _stream_support import (
    DRIVER,
    POTLUCK,
    client_for,
    finish,
    new_topic,
    potluck_stream,
    stats_table,
    utc_now,
    wait_until,
)
from typer.testing import CliRunner

from potluck import Client, Feature, FeatureTable, KafkaSource, ProtoFormat, ValueType
from potluck.cli._help import reflow
from potluck.cli.main import app
from potluck.config import Settings
from potluck.errors import ConfigError, DataValidationError, DefinitionError
from potluck.ingestion.jobs import STREAM_TO_ONLINE, Job, JobSpec, save_job
from potluck.ingestion.stream.batch import StreamTable, decode_batch

TEN_YEARS = timedelta(days=3650)


def _frame(minutes_ahead: list[float], note: str | None = None) -> pd.DataFrame:
    now = utc_now()
    return pd.DataFrame(
        {
            "driver_id": list(range(1, len(minutes_ahead) + 1)),
            "conv_rate": [0.5] * len(minutes_ahead),
            "trips": [3] * len(minutes_ahead),
            "event_timestamp": [now + timedelta(minutes=m) for m in minutes_ahead],
        }
    )


@pytest.fixture()
def sqlite_client(tmp_path: Path) -> Iterator[Client]:
    """A project on SQLite whose table names a topic on a broker nobody listens on."""
    client = client_for(
        tmp_path,
        {"type": "sqlite", "path": str(tmp_path / "online.db")},
        stats_table("127.0.0.1:9", "trial-topic"),
    )
    yield client
    client.close()


# ---- 1, 2: freshness from job records, never negative --------------------------------------


def test_serving_freshness_comes_from_job_records_without_any_read(
    sqlite_client: Client,
) -> None:
    service = sqlite_client.serving_service(refresh_interval=0.2)
    newest = utc_now() - timedelta(seconds=30)
    spec = JobSpec(kind=STREAM_TO_ONLINE, project=sqlite_client.project, table="driver_stats")
    save_job(
        service.registry,
        Job.new(spec, "local", heartbeat_timeout=timedelta(seconds=60)).evolve(
            max_event_timestamp_us=int(newest.timestamp() * 1e6)
        ),
    )
    key = (sqlite_client.project, "driver_stats")
    seconds = wait_until(lambda: service.freshness().get(key), 5, "the freshness sample")
    assert 29 < seconds < 40
    future = utc_now() + TEN_YEARS
    save_job(
        service.registry,
        Job.new(spec, "local", heartbeat_timeout=timedelta(seconds=60)).evolve(
            max_event_timestamp_us=int(future.timestamp() * 1e6)
        ),
    )
    wait_until(lambda: service.freshness()[key] == 0.0, 5, "the clamped freshness sample")


def test_a_message_ten_years_ahead_is_bad_future_event_time_and_one_within_the_hour_is_good(
    sqlite_client: Client,
) -> None:
    table = sqlite_client.get_feature_table("driver_stats")
    stream = StreamTable(sqlite_client.project, table, {"driver_id": DRIVER.value_type})
    now = utc_now()
    values = [
        json.dumps(
            {"driver_id": k, "trips": 1, "event_timestamp": (now + ahead).isoformat()}
        ).encode()
        for k, ahead in ((1, TEN_YEARS), (2, timedelta(minutes=50)), (3, timedelta(hours=2)))
    ]
    raw = pa.table(
        {"value": values, "partition": [0, 0, 0], "offset": [0, 1, 2]},
        schema=pa.schema(
            [("value", pa.binary()), ("partition", pa.int32()), ("offset", pa.int64())]
        ),
    )
    decoded = decode_batch(raw, stream, now=now)
    assert decoded.counts == {"future_event_time": 2}
    assert decoded.rows.column("driver_id").to_pylist() == [2]
    details = decoded.bad.column("detail").to_pylist()
    assert details[0].startswith("event time ")
    assert f"is more than 1:00:00 after now ({now.isoformat()}); newer wins" in details[0]


def test_publish_refuses_a_future_event_time_naming_row_and_column(
    sqlite_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataValidationError) as caught:
        sqlite_client.publish("driver_stats", _frame([-5, 30, 600]))
    assert caught.value.message.startswith("column 'event_timestamp' row 2: event time ")
    assert "is more than 1:00:00 after now" in caught.value.message
    assert (caught.value.attrs()["column"], caught.value.attrs()["row"]) == ("event_timestamp", 2)
    path = tmp_path / "future.parquet"
    _frame([0, 10 * 365 * 24 * 60]).to_parquet(path)
    result = CliRunner().invoke(app, ["publish", "driver_stats", str(path)], catch_exceptions=False)
    assert result.exit_code == 2
    assert "error: column 'event_timestamp' row 1: event time " in result.output


# ---- 7, 8: apply refuses a missing protobuf class; secrets never shown -----------------------


def test_apply_refuses_a_protobuf_class_its_importable_module_lacks(
    sqlite_client: Client, proto_class: Any
) -> None:
    module = proto_class.__module__
    for name, expected in (
        (
            "Nope",
            f"feature table driver_stats: the protobuf module {module!r} has no class 'Nope' "
            f"(the stream source's class_path '{module}.Nope'); name a message class the "
            "module defines",
        ),
        ("DESCRIPTOR", f"feature table driver_stats: '{module}.DESCRIPTOR' is not a protobuf"),
    ):
        table = stats_table(
            "127.0.0.1:9", "t", message_format=ProtoFormat(class_path=f"{module}.{name}")
        )
        with pytest.raises(DefinitionError) as caught:
            sqlite_client.apply(table)
        assert caught.value.message.startswith(expected)
    absent = stats_table(
        "127.0.0.1:9", "t", message_format=ProtoFormat(class_path="not_here_pb2.Event")
    )
    sqlite_client.apply(absent)  # not importable here: checked where messages are read


def test_kafka_secrets_are_masked_in_repr_and_a_wrong_shape_is_named_not_echoed(
    tmp_path: Path,
) -> None:
    settings = Settings(kafka={"sasl.password": "hunter2", "security.protocol": "SASL_SSL"})
    assert repr(settings.kafka) == (
        "KafkaProperties({'sasl.password': '***', 'security.protocol': 'SASL_SSL'})"
    )
    assert settings.kafka["sasl.password"] == "hunter2"
    path = tmp_path / "potluck.yaml"
    for value in ("sasl.password=hunter2", ["sasl.password=hunter2"]):
        path.write_text(yaml.safe_dump({"kafka": value}))
        with pytest.raises(ConfigError) as caught:
            Client(path)
        kind = type(value).__name__
        assert caught.value.message == (
            "invalid setting 'kafka': must be a mapping of librdkafka properties to values, "
            f"such as {{security.protocol: SASL_SSL, sasl.mechanism: PLAIN}}, not {kind} "
            f"(read from {path})"
        )


# ---- 10: help text rewraps ------------------------------------------------------------------


def test_every_commands_help_paragraphs_rewrap_to_the_terminal() -> None:
    assert reflow("Run.\n\n    Stops it\n    cleanly.\n\n    \b\n    a\n    b") == (
        "Run.\n\nStops it cleanly.\n\n\b\na\nb"
    )
    result = CliRunner().invoke(app, ["stream", "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    assert " Ctrl-C stops it cleanly: the micro-batch in hand is written and committed," in (
        result.output
    )
    broken = []
    commands = [typer.main.get_command(app)]
    while commands:
        command = commands.pop()
        paragraphs = (command.help or "").split("\n\n")
        broken += [command.name for p in paragraphs if "\n" in p and not p.startswith("\b")]
        commands += getattr(command, "commands", {}).values()
    assert broken == []


# ---- on a broker: 3, 4, 5, 6, 9 -------------------------------------------------------------


@pytest.fixture()
def broker_project(kafka_bootstrap: str, tmp_path: Path) -> Iterator[tuple[Client, str]]:
    topic = new_topic(kafka_bootstrap, partitions=1)
    client = client_for(
        tmp_path,
        {"type": "sqlite", "path": str(tmp_path / "online.db")},
        stats_table(kafka_bootstrap, topic),
    )
    yield client, topic
    finish(client)


@pytest.mark.kafka
def test_an_oversized_message_is_named_with_its_row_size_and_limit(
    broker_project: tuple[Client, str],
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    client, topic = broker_project
    noted = FeatureTable(
        name="noted",
        entities=("driver_id",),
        features=(Feature(name="note", value_type=ValueType.STRING),),
        stream_source=KafkaSource(
            bootstrap_servers=kafka_bootstrap,
            topic=topic,
            message_format="json",
            event_timestamp_column="event_timestamp",
        ),
    )
    client.apply(noted)
    now = utc_now()
    rows = pd.DataFrame(
        {
            "driver_id": [1, 2],
            "note": ["small", "x" * 2_000_000],
            "event_timestamp": [now, now],
        }
    )
    with pytest.raises(DataValidationError) as caught:
        client.publish("noted", rows)
    message = caught.value.message
    assert message.startswith(f"feature table 'noted', topic '{topic}': row 1: its message is 2000")
    assert message.endswith(
        " bytes, larger than the Kafka limits allow (the producer's message.max.bytes is "
        "1000000; the topic's max.message.bytes, default 1048588, applies on the brokers); make "
        "the row smaller, or raise both limits (-k message.max.bytes=..., kafka-configs --alter "
        "--add-config max.message.bytes=...); nothing was published"
    )
    path = tmp_path / "big.parquet"
    rows.to_parquet(path)
    raised = ["-k", "message.max.bytes=5000000"]  # past the producer: the topic refuses it
    result = CliRunner().invoke(app, ["publish", "noted", str(path), *raised])
    assert result.exit_code == 2, result.output
    assert f"topic '{topic}': row 1: its message is 2000" in result.output
    assert "message.max.bytes is 5000000" in result.output


@pytest.mark.kafka
def test_the_default_group_is_recorded_and_bad_consumer_settings_record_nothing(
    broker_project: tuple[Client, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    client, _topic = broker_project
    job = client.start_stream_to_online_ingestion("driver_stats")
    try:
        assert job.record().spec.group_id == f"potluck.{client.project}.driver_stats"
    finally:
        job.cancel()
        job.wait()
    before = [j.id for j in client.list_jobs()]
    result = CliRunner().invoke(app, ["stream", "driver_stats", "-k", "fetch.wait.max.ms=nope"])
    assert result.exit_code == 2
    assert result.output.startswith(
        "error: feature table 'driver_stats': the Kafka consumer refused its settings: "
    )
    assert [j.id for j in client.list_jobs()] == before


@pytest.mark.kafka
def test_metrics_port_zero_is_announced_and_a_port_in_use_records_no_job(
    broker_project: tuple[Client, str], tmp_path: Path
) -> None:
    client, _topic = broker_project
    process = potluck_stream(tmp_path, "--metrics-port", "0")
    try:
        line = process.stderr.readline() if process.stderr else ""
        assert line.startswith("serving metrics on http://127.0.0.1:")
        url = line.strip().removeprefix("serving metrics on ")
        body = wait_until(lambda: _scrape(url), 30, "the job's metrics")
        assert "potluck_stream_up{" in body
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            before = [j.id for j in client.list_jobs()]
            blocked = subprocess.run(
                [str(POTLUCK), "stream", "driver_stats", "--metrics-port", str(port)],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=60,
            )
        assert blocked.returncode == 1
        assert blocked.stderr.startswith(f"error: cannot serve metrics on 127.0.0.1:{port}: ")
        assert "pick another --metrics-port (0: any free port)" in blocked.stderr
        assert [j.id for j in client.list_jobs()] == before
    finally:
        process.terminate()
        process.communicate(timeout=60)
    assert process.returncode == 0


def _scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        time.sleep(0.1)
        return None
