"""Faults a fresh tester found in the Spark plug-ins that need no cluster (issue 9).

Master URLs are checked when settings load, for the offline store and the engine alike; a job
with no file to read ends at once without a Spark application; the log line that says why a
Spark JVM exited is read the same way by both plug-ins.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import yaml

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import load_settings
from potluck.errors import ConfigError
from potluck.ingestion.engines.spark import SparkJob
from potluck.ingestion.jobs import JobStats, JobStatus
from potluck.offline.spark.logs import (
    JavaException,
    java_exception,
    last_error_line,
    refused_setting,
)

FORMS = (
    "use spark://HOST:PORT (a standalone cluster; PORT 1-65535, several masters "
    "comma-separated), local, local[N] or local[N,F] (N >= 1 threads in this process, F >= 1 "
    "task attempts), local[*], yarn or k8s://URL"
)
SECTIONS = ("offline_store", "engine")


def _env(section: str, master: str) -> dict[str, str]:
    prefix = f"POTLUCK_{section.upper()}__"
    return {f"{prefix}TYPE": "spark", f"{prefix}MASTER": master}


def _sources(section: str) -> str:
    prefix = f"POTLUCK_{section.upper()}__"
    return f"(read from environment {prefix}MASTER, then environment {prefix}TYPE)"


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    ("master", "reason"),
    [
        (
            "spark://127.0.0.1:notaport",
            "'127.0.0.1:notaport' in 'spark://127.0.0.1:notaport' is not HOST:PORT",
        ),
        ("spark://127.0.0.1", "'127.0.0.1' in 'spark://127.0.0.1' is not HOST:PORT"),
        (
            "spark://127.0.0.1:99999",
            "the port 99999 in 'spark://127.0.0.1:99999' is not in 1-65535",
        ),
        ("spark://127.0.0.1:0", "the port 0 in 'spark://127.0.0.1:0' is not in 1-65535"),
        (
            "spark://a:7077,b:65536",
            "the port 65536 in 'spark://a:7077,b:65536' is not in 1-65535",
        ),
        ("local[0]", "the thread count N of 'local[0]' must be at least 1"),
        ("local[2,0]", "the task attempts F of 'local[2,0]' must be at least 1"),
        ("local[-1]", "'local[-1]' is not a Spark master URL"),
        ("local[two]", "'local[two]' is not a Spark master URL"),
        ("spark://", "'spark://' is not a Spark master URL"),
        ("mesos://h:5050", "'mesos://h:5050' is not a Spark master URL"),
    ],
)
def test_a_bad_master_url_is_refused_when_settings_load(
    section: str, master: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(environ=_env(section, master))
    assert err.value.message == (
        f"invalid setting '{section}.master' = {master!r}: {reason}; {FORMS} {_sources(section)}"
    )
    assert err.value.attrs()["key"] == f"{section}.master"


@pytest.mark.parametrize("section", SECTIONS)
@pytest.mark.parametrize(
    "master",
    [
        "local",
        "local[1]",
        "local[*]",
        "local[4,2]",
        "local[*,3]",
        "spark://127.0.0.1:7077",
        "spark://spark-master.example:1",
        "spark://a:7077,b:65535",
        "spark://[::1]:7077",
    ],
)
def test_a_good_master_url_loads(section: str, master: str) -> None:
    settings = load_settings(environ=_env(section, master))
    assert getattr(settings, section)["master"] == master


@pytest.mark.parametrize("master", ["yarn", "k8s://https://k8s.example:6443"])
def test_masters_without_a_launcher_load_for_the_offline_store_only(master: str) -> None:
    settings = load_settings(environ=_env("offline_store", master))
    assert settings.offline_store["master"] == master
    with pytest.raises(ConfigError) as err:
        load_settings(environ=_env("engine", master))
    assert err.value.message == (
        f"invalid setting 'engine.master' = {master!r}: the spark engine submits to "
        "spark://HOST:PORT (a standalone cluster) or local[N]; other masters have no launcher "
        f"yet {_sources('engine')}"
    )


# ---- the log line that says why a Spark JVM exited ----------------------------------------------


def test_a_setting_exception_is_read_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "driver.log"
    log.write_text(
        "WARNING: Using incubator modules: jdk.incubator.vector\n"
        'Exception in thread "main" org.apache.spark.SparkException: Executor memory must be a '
        "positive number\n"
        "\tat org.apache.spark.deploy.SparkSubmitArguments.error(SparkSubmitArguments.scala:1)\n"
        "\tat org.apache.spark.deploy.SparkSubmit.main(SparkSubmit.scala:2)\n"
    )
    line = last_error_line(str(log))
    assert line == (
        'Exception in thread "main" org.apache.spark.SparkException: Executor memory must be a '
        "positive number"
    )
    java = java_exception(line)
    assert java == JavaException("SparkException", "Executor memory must be a positive number")
    assert java.is_about_a_setting


@pytest.mark.parametrize(
    ("line", "expected", "about_a_setting"),
    [
        (
            "java.lang.IllegalArgumentException: spark.executor.cores must be a number",
            JavaException("IllegalArgumentException", "spark.executor.cores must be a number"),
            True,
        ),
        (
            'Exception in thread "main" java.lang.NumberFormatException: For input string: "x"',
            JavaException("NumberFormatException", 'For input string: "x"'),
            True,
        ),
        (
            "java.io.IOException: Failed to connect to /127.0.0.1:7077",
            JavaException("IOException", "Failed to connect to /127.0.0.1:7077"),
            False,
        ),
        (
            "Error: Could not find or load main class org.apache.spark.deploy.SparkSubmit",
            JavaException(
                "Error", "Could not find or load main class org.apache.spark.deploy.SparkSubmit"
            ),
            False,
        ),
        ("/usr/bin/java: No such file or directory", None, False),
    ],
)
def test_java_exception_lines(
    line: str, expected: JavaException | None, about_a_setting: bool
) -> None:
    java = java_exception(line)
    assert java == expected
    assert (java is not None and java.is_about_a_setting) is about_a_setting


def test_java_refusing_an_option_is_read_from_the_log(tmp_path: Path) -> None:
    log = tmp_path / "driver.log"
    log.write_text(
        "java.io.IOException: an earlier run's failure\n"
        "Invalid maximum heap size: -Xmxlots\n"
        "Error: Could not create the Java Virtual Machine.\n"
        "Error: A fatal exception has occurred. Program will exit.\n"
    )
    line = last_error_line(str(log))
    assert line == "Could not create the Java Virtual Machine: Invalid maximum heap size: -Xmxlots"
    assert refused_setting(line) == line


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (
            'Exception in thread "main" org.apache.spark.SparkException: Executor cores must be '
            "a positive number",
            "Executor cores must be a positive number (SparkException)",
        ),
        ("java.io.IOException: Failed to connect to /127.0.0.1:7077", None),
        ("Error: A fatal exception has occurred. Program will exit.", None),
    ],
)
def test_refused_setting(line: str, refused: str | None) -> None:
    assert refused_setting(line) == refused


def test_a_log_that_cannot_be_read_has_no_error_line(tmp_path: Path) -> None:
    assert last_error_line(str(tmp_path / "missing.log")) is None
    (tmp_path / "empty.log").write_text("")
    assert last_error_line(str(tmp_path / "empty.log")) is None


# ---- a job with no file to read ----------------------------------------------------------------

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def _client(tmp_path: Path) -> Client:
    config = tmp_path / "potluck.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "project": "trial",
                "registry": f"sqlite:///{tmp_path / 'registry.db'}",
                "online_store": {"type": "sqlite", "path": str(tmp_path / "online.db")},
                "engine": {
                    "type": "spark",
                    "master": "local[1]",
                    "log_dir": str(tmp_path / "logs"),
                },
            }
        )
    )
    return Client(settings=load_settings(config))


def _table(name: str, path: Path, *, partitioned: bool) -> FeatureTable:
    return FeatureTable(
        name=name,
        entities=["driver_id"],
        features=[Feature(name="trips", value_type=ValueType.INT64)],
        batch_source=FileSource(
            path=str(path),
            event_timestamp_column="event_timestamp",
            date_partition_column="day" if partitioned else None,
        ),
    )


def test_jobs_with_no_file_to_read_succeed_at_once_without_an_application(
    tmp_path: Path,
) -> None:
    client = _client(tmp_path)
    (tmp_path / "empty").mkdir()
    empty = _table("empty_source", tmp_path / "empty", partitioned=False)
    dated = _table("dated", tmp_path / "dated", partitioned=True)
    client.apply([DRIVER, empty, dated])
    when = datetime(2024, 5, 2, 12, tzinfo=timezone.utc)
    client.ingest(
        "dated",
        pd.DataFrame({"driver_id": [1, 2], "event_timestamp": [when, when], "trips": [3, 4]}),
    )
    later = when + timedelta(days=10)
    jobs = [
        client.start_offline_to_online_ingestion("empty_source"),
        client.start_offline_to_online_ingestion("empty_source", since_last=True),
        client.start_offline_to_online_ingestion("dated", later, later + timedelta(days=1)),
    ]
    for job in jobs:
        assert not isinstance(job, SparkJob)
        record = job.wait(0)
        assert (record.status, record.stats, record.rows_total, record.error) == (
            JobStatus.SUCCEEDED,
            JobStats(0, 0, 0, 0),
            0,
            None,
        )
        assert record.engine == "spark" and record.log_location is None
        assert record.started_at == record.finished_at is not None
    assert not (tmp_path / "logs").exists()  # no spark-submit, no log, no spec
