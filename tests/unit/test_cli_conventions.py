"""The CLI's conventions: --version, values printed as text (not Python reprs), confirmations
without a terminal, `entities delete`, `init --with-sample-data`, ports in use, and JSON reports.
"""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Iterator
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from potluck import Client
from potluck.cli._render import display_value, iso_utc, json_value
from potluck.cli._sample_data import sample_files
from potluck.cli.main import app
from potluck.types import ValueType

runner = CliRunner()


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def ok(*args: str, env: dict[str, str] | None = None) -> Result:
    result = runner.invoke(app, list(args), env=env)
    assert (result.exit_code, result.stderr) == (0, ""), (result.stdout, result.exception)
    return result


def error(result: Result) -> tuple[int, str]:
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: "), result.stderr
    return result.exit_code, result.stderr[len("error: ") : -1]


def test_version(workdir: Path) -> None:
    assert ok("--version").stdout == f"potluck {version('potluck')}\n"
    assert ok("--version", "entities", "list").stdout == f"potluck {version('potluck')}\n"


# ---- online get prints values, not reprs --------------------------------------------------------

TYPES = """\
entities:
  - {name: driver_id, value_type: INT64}
feature_tables:
  - name: t
    entities: [driver_id]
    features:
      - {name: f, value_type: FLOAT}
      - {name: d, value_type: DOUBLE}
      - {name: b, value_type: BYTES}
      - {name: ts, value_type: UNIX_TIMESTAMP}
      - {name: fl, value_type: FLOAT_LIST}
      - {name: bl, value_type: BYTES_LIST}
      - {name: flag, value_type: BOOL}
      - {name: s, value_type: STRING}
      - {name: n, value_type: INT64}
    batch_source: {path: data/t, event_timestamp_column: event_timestamp}
"""


@pytest.fixture()
def typed(workdir: Path) -> Path:
    (workdir / "potluck.yaml").write_text("project: default\n")
    (workdir / "defs.yaml").write_text(TYPES)
    ok("apply", "-f", "defs.yaml")
    moment = datetime(2024, 5, 1, 23, 0, tzinfo=timezone.utc)
    rows = pa.table(
        {
            "driver_id": pa.array([1001], pa.int64()),
            "event_timestamp": pa.array([moment], pa.timestamp("us", "UTC")),
            "f": pa.array([0.1894713044166565], pa.float32()),
            "d": pa.array([0.1], pa.float64()),
            "b": pa.array([b"\x00\xff"]),
            "ts": pa.array(
                [datetime(2024, 5, 1, 12, 30, 0, 250, tzinfo=timezone.utc)],
                pa.timestamp("us", "UTC"),
            ),
            "fl": pa.array([[0.5, 0.1, float("nan")]], pa.list_(pa.float32())),
            "bl": pa.array([[b"ab", b"\x01"]], pa.list_(pa.binary())),
            "flag": pa.array([True]),
            "s": pa.array(["a b"]),
            "n": pa.array([None], pa.int64()),
        }
    )
    with Client() as client:
        client.ingest("t", rows)
        client.start_offline_to_online_ingestion("t", None, None).wait()
    return workdir


def _cells(text: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in text.splitlines()
        if line.startswith("│")
    ]


NAMES = ["f", "d", "b", "ts", "fl", "bl", "flag", "s", "n"]


def test_online_get_prints_values_as_text(typed: Path) -> None:
    wide = {"COLUMNS": "200"}
    result = ok("online", "get", "t:*", "-e", "driver_id=1001", "-e", "driver_id=7", env=wide)
    header = [c.strip() for c in result.stdout.splitlines()[1].split("┃")[1:-1]]
    assert header == ["row", "column", "value", "status", "event time (UTC)"]
    at = "2024-05-01T23:00:00Z"
    assert _cells(result.stdout) == [
        ["0", "driver_id", "1001", "PRESENT", ""],
        ["0", "t__f", "0.1894713", "PRESENT", at],
        ["0", "t__d", "0.1", "PRESENT", at],
        ["0", "t__b", "AP8=", "PRESENT", at],
        ["0", "t__ts", "2024-05-01T12:30:00.000250Z", "PRESENT", at],
        ["0", "t__fl", '[0.5, 0.1, "NaN"]', "PRESENT", at],
        ["0", "t__bl", '["YWI=", "AQ=="]', "PRESENT", at],
        ["0", "t__flag", "true", "PRESENT", at],
        ["0", "t__s", "a b", "PRESENT", at],
        ["0", "t__n", "", "NULL_VALUE", at],
        ["1", "driver_id", "7", "PRESENT", ""],
        *[["1", f"t__{name}", "", "NOT_FOUND", ""] for name in NAMES],
    ]


def test_online_get_json_uses_the_http_forms(typed: Path) -> None:
    got = ok("online", "get", "t:b", "t:ts", "t:fl", "-e", "driver_id=1001", "-o", "json")
    data = json.loads(got.stdout)
    assert data == {
        "values": {
            "driver_id": [1001],
            "t__b": ["AP8="],
            "t__ts": ["2024-05-01T12:30:00.000250Z"],
            "t__fl": [[0.5, float(np.float32(0.1)), "NaN"]],
        },
        "statuses": {name: ["PRESENT"] for name in ("driver_id", "t__b", "t__ts", "t__fl")},
        "event_timestamps": {
            "driver_id": [None],
            "t__b": ["2024-05-01T23:00:00Z"],
            "t__ts": ["2024-05-01T23:00:00Z"],
            "t__fl": ["2024-05-01T23:00:00Z"],
        },
    }


finite_float32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@given(finite_float32)
def test_a_float_shows_the_shortest_text_of_its_float32(value: float) -> None:
    text = display_value(value, ValueType.FLOAT)
    assert np.float32(float(text)) == np.float32(value)
    widened = repr(float(np.float32(value)))
    assert ("e" in text) == ("e" in widened)  # the notation Python uses for the value
    assert _digits(text) <= _digits(widened)
    assert _digits(text) <= 9  # a float32 never needs more


def _digits(text: str) -> int:
    """Significant digits of a decimal text."""
    mantissa = text.lstrip("-").split("e")[0].replace(".", "")
    return max(len(mantissa.strip("0")), 1)


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_a_double_shows_the_text_that_reads_back_as_itself(value: float) -> None:
    assert float(display_value(value, ValueType.DOUBLE)) == value


@given(st.lists(st.one_of(finite_float32, st.just(math.inf), st.just(-math.inf)), max_size=5))
def test_a_float_list_shows_json_of_the_same_float32s(values: list[float]) -> None:
    shown = json.loads(display_value(values, ValueType.FLOAT_LIST))
    names = {"Infinity": math.inf, "-Infinity": -math.inf}
    assert [np.float32(names.get(v, v)) for v in shown] == [np.float32(v) for v in values]


@given(st.binary(max_size=20), st.datetimes(timezones=st.just(timezone.utc)))
def test_bytes_and_times_show_as_http_sends_them(data: bytes, moment: datetime) -> None:
    assert display_value(data, ValueType.BYTES) == json_value(data)
    assert display_value(moment, ValueType.UNIX_TIMESTAMP) == iso_utc(moment)
    assert datetime.fromisoformat(iso_utc(moment).replace("Z", "+00:00")) == moment


# ---- confirmations without a terminal, and entities delete ---------------------------------------

SIMPLE = """\
entities:
  - {name: driver_id, value_type: INT64}
  - {name: spare_id, value_type: STRING}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features: [{name: conv_rate, value_type: FLOAT}]
    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}
"""


@pytest.fixture()
def simple(workdir: Path) -> Path:
    (workdir / "potluck.yaml").write_text("project: default\n")
    (workdir / "defs.yaml").write_text(SIMPLE)
    ok("apply", "-f", "defs.yaml")
    return workdir


def _names(*args: str) -> list[str]:
    return [item["name"] for item in json.loads(ok(*args, "-o", "json").stdout)]


@pytest.mark.parametrize(
    ("args", "action"),
    [
        (["feature-tables", "delete", "driver_stats"], "delete feature table 'driver_stats'"),
        (["entities", "delete", "spare_id"], "delete entity 'spare_id'"),
        (
            ["online", "purge", "driver_stats"],
            "purge the online values of feature table 'driver_stats'",
        ),
    ],
    ids=["feature-tables", "entities", "purge"],
)
def test_a_confirmation_without_an_answer_tells_about_yes(
    simple: Path, args: list[str], action: str
) -> None:
    result = runner.invoke(app, args, input="")
    assert error(result) == (
        2,
        f"to {action} potluck asks for a confirmation, and stdin is not a terminal (it ended "
        f"without an answer); pass --yes to {action} without asking",
    )
    assert result.stdout == ""  # no terminal: the question is not asked
    assert _names("entities", "list") == ["driver_id", "spare_id"]
    assert _names("feature-tables", "list") == ["driver_stats"]


def test_entities_delete(simple: Path) -> None:
    assert error(runner.invoke(app, ["entities", "delete", "driver_id"], input="y\n")) == (
        2,
        "entity driver_id is used by feature table driver_stats in project default; delete "
        "those tables or change their entities first",
    )
    assert error(runner.invoke(app, ["entities", "delete", "nobody", "-y"])) == (
        2,
        "entity nobody not found in project default",
    )
    declined = runner.invoke(app, ["entities", "delete", "spare_id"], input="n\n")
    assert (declined.exit_code, declined.stderr) == (1, "error: aborted\n")
    confirmed = ok_input(["entities", "delete", "spare_id"], "y\n")
    assert confirmed.stdout == "Deleted entity 'spare_id' from project 'default'.\n"
    ok("feature-tables", "delete", "driver_stats", "--yes")
    assert ok("entities", "delete", "driver_id", "--yes").stdout == (
        "Deleted entity 'driver_id' from project 'default'.\n"
    )
    assert _names("entities", "list") == []


def ok_input(args: list[str], answer: str) -> Result:
    result = runner.invoke(app, args, input=answer)
    assert (result.exit_code, result.stderr) == (0, ""), result.output
    return result


# ---- init --with-sample-data --------------------------------------------------------------------


def test_sample_data_ends_at_the_last_full_hour() -> None:
    files = sample_files(datetime(2024, 5, 2, 10, 42, tzinfo=timezone.utc))
    rows = files["driver_stats.csv"].splitlines()
    assert rows[0] == "driver_id,event_timestamp,created,conv_rate,acc_rate,avg_daily_trips"
    assert len(rows) == 1 + 24 * 5
    assert rows[1].startswith("1001,2024-05-01T10:00:00Z,2024-05-01T10:05:00Z,")
    assert rows[-1].startswith("1005,2024-05-02T09:00:00Z,2024-05-02T09:05:00Z,")
    assert files == sample_files(datetime(2024, 5, 2, 10, 0, tzinfo=timezone.utc))
    assert files["entities.csv"].splitlines()[:3] == [
        "driver_id,event_timestamp",
        "1001,2024-05-02T10:00:00Z",
        "1001,2024-05-01T21:30:00Z",
    ]


def test_init_with_sample_data_makes_the_documented_commands_work(workdir: Path) -> None:
    result = ok("init", "proj", "--with-sample-data")
    assert result.stdout == (
        "Wrote proj/potluck.yaml, proj/definitions.yaml and proj/sample_data/. Next:\n"
        "  cd proj\n"
        "  potluck apply -f definitions.yaml\n"
        "  potluck ingest driver_stats sample_data/driver_stats.csv\n"
        "  potluck historical -f driver_stats:conv_rate,driver_stats:avg_daily_trips "
        "-e sample_data/entities.csv --out training.parquet\n"
        "  potluck ingest-online driver_stats\n"
        "  potluck online get driver_stats:conv_rate -e driver_id=1001\n"
    )
    os.chdir(workdir / "proj")
    ok("apply", "-f", "definitions.yaml")
    ingested = ok("ingest", "driver_stats", "sample_data/driver_stats.csv", "-o", "json")
    assert json.loads(ingested.stdout)["rows"] == 120
    built = ok(
        "historical",
        "-f",
        "driver_stats:conv_rate,driver_stats:avg_daily_trips",
        "-e",
        "sample_data/entities.csv",
        "--out",
        "training.parquet",
    )
    assert built.stdout == (
        "wrote 10 rows x 4 columns to training.parquet (source versions: driver_stats@1)\n"
    )
    training = pq.read_table("training.parquet")
    assert training.column("driver_stats__avg_daily_trips").null_count == 0
    job = json.loads(ok("ingest-online", "driver_stats", "-o", "json").stdout)
    assert (job["status"], job["rows_read"], job["rows_written"]) == ("SUCCEEDED", 120, 5)
    latest = [
        line.split(",")
        for line in (workdir / "proj" / "sample_data" / "driver_stats.csv").read_text().splitlines()
        if line.startswith("1001,")
    ][-1]
    read = ok("online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001", "-o", "json")
    got = json.loads(read.stdout)
    assert got["statuses"]["driver_stats__conv_rate"] == ["PRESENT"]
    assert got["values"]["driver_stats__conv_rate"] == [float(np.float32(latest[3]))]
    assert got["event_timestamps"]["driver_stats__conv_rate"] == [latest[1]]

    again = runner.invoke(app, ["init", ".", "--with-sample-data"])
    assert error(again) == (2, "potluck.yaml exists; init never overwrites files")


def test_init_refuses_to_overwrite_sample_data(workdir: Path) -> None:
    (workdir / "sample_data").mkdir()
    (workdir / "sample_data" / "entities.csv").write_text("mine\n")
    assert error(runner.invoke(app, ["init", "--with-sample-data"])) == (
        2,
        "sample_data/entities.csv exists; init never overwrites files",
    )
    assert sorted(p.name for p in workdir.iterdir()) == ["sample_data"]
    assert ok("init").stdout == (
        "Wrote potluck.yaml and definitions.yaml. Next: potluck apply -f definitions.yaml\n"
    )


# ---- ports in use, and reports as JSON ----------------------------------------------------------


@pytest.fixture()
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.mark.parametrize(
    ("args", "what", "option"),
    [
        (["serve", "--grpc-port", "{port}", "--http-port", "0"], "gRPC", "--grpc-port"),
        (["serve", "--grpc-port", "0", "--http-port", "{port}"], "HTTP", "--http-port"),
        (["serve", "--http-port", "{port}", "--workers", "2"], "HTTP", "--http-port"),
        (["core", "--port", "{port}"], "the Core service", "--port"),
    ],
    ids=["grpc", "http", "workers", "core"],
)
def test_a_port_in_use_names_the_option(
    workdir: Path, busy_port: int, args: list[str], what: str, option: str
) -> None:
    if args[:2] == ["serve", "--http-port"]:  # the gRPC port is free, checked first
        args = [*args, "--grpc-port", "0"]
    argv = [a.format(port=busy_port) for a in args]
    assert error(runner.invoke(app, argv)) == (
        1,
        f"cannot listen for {what} on 127.0.0.1:{busy_port}: Address already in use; choose a "
        f"free port with {option} (0 picks one), or stop the program using it",
    )
    assert not (workdir / ".potluck").exists()


def test_historical_reports_as_json(simple: Path) -> None:
    (simple / "entities.csv").write_text("driver_id,event_timestamp\n1,2024-01-01T00:00:00Z\n")
    (simple / "rows.csv").write_text("driver_id,event_timestamp,conv_rate\n1,2023-12-31,0.5\n")
    ok("ingest", "driver_stats", "rows.csv")
    report: dict[str, Any] = json.loads(
        ok(
            "historical",
            "-f",
            "driver_stats:conv_rate",
            "-e",
            "entities.csv",
            "-O",
            "out/t.parquet",
            "-o",
            "json",
        ).stdout
    )
    assert report == {
        "path": "out/t.parquet",
        "rows": 1,
        "columns": ["driver_id", "event_timestamp", "driver_stats__conv_rate"],
        "source_versions": {"driver_stats": 1},
    }
