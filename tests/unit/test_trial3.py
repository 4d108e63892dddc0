"""Faults a third new-user trial of issue 8 found, in-process: object-store credentials shown in
messages, descriptions and job records; ``--out`` judged with its query string; YAML nested deep
enough to crash; a ``.py`` definitions file that ends the process; registry URLs of databases
potluck does not support; SDK names in CLI errors; ``/health`` that says ok while the store is
down; HTTP bodies without a Content-Type; a 15 KB line for HDFS without Java; SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from potluck import Feature, FeatureTable, FileSource, ValueType
from potluck._redact import redact_text, redact_url
from potluck._yaml import MAX_DEPTH, TooDeepError, load
from potluck.cli._stderr import MAX_LINE_CHARS, one_line
from potluck.cli.main import app
from potluck.errors import PotluckError, UnavailableError
from potluck.ingestion.jobs import Job, JobSpec, JobStatus
from potluck.offline.files import MAX_DETAIL_CHARS, os_error
from potluck.online.redis import RedisConfig, RedisOnlineStore
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.registry._errors import ATTRS_KEY, error_metadata
from potluck.registry.base import JobRecord
from potluck.registry.sql import SqlRegistry
from potluck.serving.grpc import start_grpc_server
from potluck.serving.health import Readiness, StoreHealth
from potluck.serving.http import create_app
from potluck.serving.metrics import ServingMetrics
from potluck.serving.service import ServingService

runner = CliRunner()

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCY"
"""An AWS-style secret key: it holds '/' and '+'."""
LEAKS = (SECRET, quote(SECRET, safe=""), "wJalrXUtnFEMI", "bPxRfiCY")
"""The secret and its pieces, as written and percent-encoded: none may appear anywhere."""
CLOSED = "127.0.0.1:1"
"""Nothing listens here: connecting fails at once."""


def _clean_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``potluck init --with-sample-data``, applied and ingested, as the trial started."""
    root = tmp_path_factory.mktemp("trial3")
    saved, cwd = dict(os.environ), Path.cwd()
    os.environ.clear()
    os.environ.update(_clean_environment())
    os.chdir(root)
    try:
        for args in (
            ["init", "--with-sample-data"],
            ["apply", "-f", "definitions.yaml"],
            ["ingest", "driver_stats", "sample_data/driver_stats.csv"],
        ):
            done = runner.invoke(app, args)
            assert done.exit_code == 0, done.output
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    yield root


@pytest.fixture()
def project(sample: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(sample)
    for name in list(os.environ):
        if name.startswith("POTLUCK_"):
            monkeypatch.delenv(name)
    return sample


def error_of(result: Result) -> tuple[int, str]:
    """The exit code and the one stderr line (asserting there is exactly one)."""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return result.exit_code, lines[0].removeprefix("error: ")


def assert_no_leak(*outputs: str) -> None:
    for output in outputs:
        for leak in LEAKS:
            assert leak not in output, (leak, output)


# ---- 1. credentials in object-store URLs: masked in every output --------------------------------

URL_FORMS = {
    "s3 user info": f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/features/stats.parquet",
    "s3 access and secret key": (
        f"s3://bucket/features/stats.parquet?access_key=AKIAIOSFODNN7EXAMPLE&secret_key={SECRET}"
    ),
    "s3 session token": (
        f"s3://bucket/features/stats.parquet?region=us-east-1&session_token={SECRET}"
    ),
    "gs user info": f"gs://potluck:{SECRET}@bucket/features/stats.parquet",
    "hdfs user info": f"hdfs://potluck:{SECRET}@namenode:8020/features/stats.parquet",
    "signed https": (
        "https://bucket.s3.amazonaws.com/stats.parquet?X-Amz-Credential=AKIA%2F20240501"
        f"&X-Amz-Security-Token=token&X-Amz-Signature={SECRET}"
    ),
}
"""How users write object-store credentials; each fails without the network."""

MASKED_FORMS = {
    "s3 user info": "s3://AKIAIOSFODNN7EXAMPLE:***@bucket/features/stats.parquet",
    "s3 access and secret key": (
        "s3://bucket/features/stats.parquet?access_key=***&secret_key=***"
    ),
    "s3 session token": "s3://bucket/features/stats.parquet?region=us-east-1&session_token=***",
    "gs user info": "gs://potluck:***@bucket/features/stats.parquet",
    "hdfs user info": "hdfs://potluck:***@namenode:8020/features/stats.parquet",
    "signed https": (
        "https://bucket.s3.amazonaws.com/stats.parquet?X-Amz-Credential=***"
        "&X-Amz-Security-Token=***&X-Amz-Signature=***"
    ),
}


@pytest.mark.parametrize("form", URL_FORMS)
def test_every_object_store_url_form_is_masked(form: str) -> None:
    url = URL_FORMS[form]
    assert redact_url(url) == MASKED_FORMS[form]
    encoded = url.replace(SECRET, quote(SECRET, safe=""))
    assert_no_leak(redact_url(encoded), redact_text(f"cannot open {encoded!r}: refused"))
    assert redact_text(f"cannot open {url!r}: refused") == (
        f"cannot open {MASKED_FORMS[form]!r}: refused"
    )


def _store_table(project: Path, name: str, path: str) -> None:
    """Store a table whose batch source is ``path`` as apply would, without creating the source."""
    registry = SqlRegistry(f"sqlite:///{project / '.potluck' / 'registry.db'}")
    try:
        registry.apply(
            "default",
            [
                FeatureTable(
                    name=name,
                    entities=("driver_id",),
                    features=(Feature(name="conv_rate", value_type=ValueType.FLOAT),),
                    batch_source=FileSource(path=path, event_timestamp_column="event_timestamp"),
                )
            ],
        )
    finally:
        registry.close()


def _table_yaml(name: str, path: str) -> str:
    return (
        "feature_tables:\n"
        f"- name: {name}\n"
        "  entities: [driver_id]\n"
        "  features: [{name: conv_rate, value_type: FLOAT}]\n"
        f"  batch_source: {{path: '{path}', event_timestamp_column: event_timestamp}}\n"
    )


@pytest.mark.parametrize("form", URL_FORMS)
def test_no_command_output_shows_an_object_store_secret(project: Path, form: str) -> None:
    """The sweep: each URL form through every output a path or URL reaches."""
    url = URL_FORMS[form]
    shown = MASKED_FORMS[form]
    table = "store_" + re.sub(r"\W", "_", form)
    outputs: list[str] = []

    def run(*args: str, code: int | None = 0) -> Result:
        result = runner.invoke(app, list(args))
        outputs.extend([result.stdout, result.stderr])
        if code is not None:
            assert result.exit_code == code, result.output
        return result

    # error lines: the entity rows, the training set's output, a file to ingest
    for args in (
        ["historical", "-f", "driver_stats:conv_rate", "-e", url, "-O", "t.parquet"],
        ["historical", "-f", "driver_stats:conv_rate", "-e", "sample_data/entities.csv", "-O", url],
        ["ingest", "driver_stats", url],
    ):
        code, message = error_of(run(*args, code=None))
        assert code in (1, 2)
        assert message.startswith(f"cannot open {shown!r}: "), message
    # a table whose batch source is the URL: plan shows it; apply creates the source, so it
    # fails here (no object store): the table is stored through the registry instead
    (project / f"{table}.yaml").write_text(_table_yaml(table, url))
    planned = run("plan", f"{table}.yaml", "-o", "json")
    assert json.loads(planned.stdout)[0]["action"] == "create"
    code, message = error_of(run("apply", f"{table}.yaml", code=None))
    assert code in (1, 2)
    assert message.startswith(f"cannot open {shown!r}: "), message
    _store_table(project, table, url)
    described = json.loads(run("feature-tables", "describe", table, "-o", "json").stdout)
    assert described["batch_source"]["path"] == shown
    history = json.loads(run("feature-tables", "describe", table, "--history", "-o", "json").stdout)
    assert [r["spec"]["batch_source"]["path"] for r in history["history"]] == [shown]
    run("feature-tables", "describe", table, "--history")
    # a changed path shows in the plan's details, masked on both sides
    moved = url.replace("stats.parquet", "moved.parquet")
    (project / f"{table}.yaml").write_text(_table_yaml(table, moved))
    details = json.loads(run("plan", f"{table}.yaml", "-o", "json").stdout)[0]["details"]
    assert details == [
        f"batch_source.path {shown!r} -> {shown.replace('stats.parquet', 'moved.parquet')!r}"
    ]
    run("plan", f"{table}.yaml")
    # a job that reads it: its error line and its record
    code, message = error_of(run("ingest-online", table, code=1))
    assert message.startswith("job ") and f" failed: cannot open {shown!r}: " in message
    records = json.loads(run("jobs", "list", "-o", "json").stdout)
    record = next(r for r in records if r["table"] == table)
    assert record["error"].startswith(f"cannot open {shown!r}: ")
    run("jobs", "describe", record["id"])
    assert_no_leak(*outputs)


def test_a_table_described_as_a_table_shows_the_masked_path(project: Path) -> None:
    _store_table(project, "wide_store", URL_FORMS["s3 user info"])
    described = runner.invoke(
        app, ["feature-tables", "describe", "wide_store"], env={"COLUMNS": "200"}
    )
    assert described.exit_code == 0, described.output
    assert f"│ path                   │ {MASKED_FORMS['s3 user info']}" in described.stdout
    assert_no_leak(described.stdout)


def test_a_job_record_written_before_masking_is_masked_when_read(project: Path) -> None:
    """A record an older version wrote with the secret in clear is shown masked."""
    url = URL_FORMS["gs user info"]
    job = Job.new(JobSpec(project="default", table="driver_stats"), engine="local")
    record = job.evolve(status=JobStatus.FAILED).to_record()
    body = dict(record.body, error=f"cannot open {url!r}: refused", source_id=f"{url}#plain")
    registry = SqlRegistry(f"sqlite:///{project / '.potluck' / 'registry.db'}")
    try:
        registry.put_job(JobRecord(project=record.project, id=record.id, body=body))
    finally:
        registry.close()
    listed = runner.invoke(app, ["jobs", "list", "-o", "json"])
    described = runner.invoke(app, ["jobs", "describe", job.id, "-o", "json"])
    shown = json.loads(described.stdout)
    assert (shown["error"], shown["source_id"]) == (
        f"cannot open {MASKED_FORMS['gs user info']!r}: refused",
        f"{MASKED_FORMS['gs user info']}#plain",
    )
    assert_no_leak(listed.stdout, described.stdout, runner.invoke(app, ["jobs", "list"]).stdout)


PASSWORD_TEXT = st.text(alphabet="abcXYZ0123456789/+=@:?#%!$", min_size=6, max_size=24)


@settings(max_examples=300, deadline=None)
@given(secret=PASSWORD_TEXT.filter(lambda s: not s.startswith(("/", "@"))))
def test_no_object_store_secret_survives_masking(secret: str) -> None:
    """Against the reference "the secret is gone": every form, raw and percent-encoded."""
    encoded = quote(secret, safe="")
    for value in (secret, encoded):
        forms = [
            f"s3://AKIA:{value}@bucket/x.parquet",
            f"gs://u:{value}@bucket/x.parquet",
            f"hdfs://u:{value}@nn:8020/x",
            f"s3://bucket/x.parquet?secret_key={encoded}&region=eu",
            f"s3://bucket/x?session_token={encoded}",
            f"https://b.example/x?X-Amz-Signature={encoded}",
        ]
        for url in forms:
            for text in (redact_url(url), redact_text(f"cannot open '{url}': refused")):
                assert encoded not in text, (url, text)
                if "/" not in secret and "@" not in secret:
                    assert secret not in text, (url, text)


def test_masking_free_text_is_linear_in_its_length() -> None:
    """Messages quote what users give (a 100 KB value): masking must not backtrack."""
    hostile = ["a" * 200_000, "a:" * 100_000 + "@h", "x=" + "a" * 200_000 + ",@", "s3://" * 40_000]
    started = time.monotonic()
    for text in hostile:
        redact_text(text)
    assert time.monotonic() - started < 2


def test_an_error_is_masked_when_made_and_its_fields_on_the_wire() -> None:
    url = URL_FORMS["gs user info"]
    error = UnavailableError(f"cannot open {url!r}: refused", path=url, address=url)
    assert str(error) == error.message == f"cannot open {MASKED_FORMS['gs user info']!r}: refused"
    attrs = json.loads(dict(error_metadata(error))[ATTRS_KEY])
    assert attrs == {"address": MASKED_FORMS["gs user info"], "path": MASKED_FORMS["gs user info"]}
    assert error.attrs()["path"] == url  # in the process, the fields keep what was given


def test_placeholders_in_potluck_hints_are_not_masked() -> None:
    hint = "use postgresql://user:password@host:port/database or redis://[user:password@]host"
    assert redact_text(hint) == hint
    assert redact_url("postgresql://user:s3cret@db/x") == "postgresql://user:***@db/x"


# ---- 2. --out, -e and FILE are judged on the path, not the query string --------------------------


def test_out_with_a_query_string_is_judged_by_its_path(project: Path) -> None:
    base = ["historical", "-f", "driver_stats:conv_rate", "-e", "sample_data/entities.csv", "-O"]
    code, message = error_of(
        runner.invoke(app, [*base, "s3://bucket/t.parquet?access_key=A&secret_key=S3CR"])
    )
    assert (code, message) == (
        2,
        "cannot open 's3://bucket/t.parquet?access_key=***&secret_key=***': the URL option "
        "'secret_key' is not one pyarrow's S3 filesystem reads; give the access key and secret "
        "key as the URL's user name and password (percent-encoded), or in the environment "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)",
    )
    code, message = error_of(runner.invoke(app, [*base, "s3://bucket/t.json?x=y.parquet"]))
    assert (code, message) == (
        2,
        "--out must end in .parquet or .csv, got 's3://bucket/t.json?x=y.parquet'",
    )


@pytest.mark.parametrize(
    "args",
    [
        ["historical", "-f", "driver_stats:conv_rate", "-O", "t.parquet", "-e"],
        ["ingest", "driver_stats"],
    ],
    ids=["-e", "FILE"],
)
def test_inputs_with_a_query_string_are_judged_by_their_path(
    project: Path, args: list[str]
) -> None:
    url = "gs://bucket/rows.csv?access_token=S3CR"
    code, message = error_of(runner.invoke(app, [*args, url]))
    assert (code, message) == (
        2,
        "cannot open 'gs://bucket/rows.csv?access_token=***': the URL option 'access_token' is "
        "not one pyarrow's GCS filesystem reads; credentials come from the environment "
        "(GOOGLE_APPLICATION_CREDENTIALS)",
    )


def test_a_raw_slash_in_a_secret_key_names_the_way_out(project: Path) -> None:
    result = runner.invoke(app, ["ingest", "driver_stats", URL_FORMS["s3 user info"]])
    code, message = error_of(result)
    assert (code, message) == (
        2,
        f"cannot open {MASKED_FORMS['s3 user info']!r}: it is not a valid URL (the character "
        "at position 39 is not allowed there); percent-encode '/', '+', '@', ':', '?' and '#' in "
        "a user name or password (%2F, %2B, %40, %3A, %3F, %23)",
    )


# ---- 3. YAML nested too deeply; long values cut --------------------------------------------------

DEEP = 5_000


def test_deeply_nested_definitions_are_one_error_naming_the_line(project: Path) -> None:
    (project / "deep.yaml").write_text("entities: " + "[" * DEEP + "]" * DEEP + "\n")
    assert error_of(runner.invoke(app, ["plan", "deep.yaml"])) == (
        2,
        f"deep.yaml, line 1: nested too deeply (more than {MAX_DEPTH} levels)",
    )
    (project / "deep.yaml").write_text(
        "entities:\n- name: rider_id\n  value_type: INT64\n"
        "  description: " + "[" * DEEP + "]" * DEEP + "\n"
    )
    assert error_of(runner.invoke(app, ["apply", "deep.yaml"])) == (
        2,
        f"deep.yaml, line 4: nested too deeply (more than {MAX_DEPTH} levels)",
    )


def test_deeply_nested_settings_are_one_error_naming_the_source(
    project: Path, tmp_path: Path
) -> None:
    config = tmp_path / "potluck.yaml"
    config.write_text("project: " + "{a: " * DEEP + "1" + "}" * DEEP + "\n")
    assert error_of(runner.invoke(app, ["-c", str(config), "entities", "list"])) == (
        2,
        f"config file {config}, line 1: nested too deeply (more than {MAX_DEPTH} levels)",
    )
    deep = "[" * DEEP + "]" * DEEP
    environ = {
        "POTLUCK_ONLINE_STORE__TYPE": "redis_cluster",
        "POTLUCK_ONLINE_STORE__STARTUP_NODES": deep,
    }
    assert error_of(runner.invoke(app, ["entities", "list"], env=environ)) == (
        2,
        "invalid setting 'online_store.startup_nodes': its value is nested too deeply (more "
        f"than {MAX_DEPTH} levels) (read from {project / 'potluck.yaml'}, then environment "
        "POTLUCK_ONLINE_STORE__STARTUP_NODES)",
    )


def test_json_in_a_definition_nested_too_deeply_is_one_error_naming_it(project: Path) -> None:
    """An Avro schema is JSON text inside YAML: Python's JSON reader recurses too."""
    (project / "avro.yaml").write_text(
        "feature_tables:\n"
        "- name: streamed\n"
        "  entities: [driver_id]\n"
        "  features: [{name: conv_rate, value_type: FLOAT}]\n"
        "  stream_source:\n"
        "    type: kafka\n"
        "    bootstrap_servers: 127.0.0.1:9092\n"
        "    topic: t\n"
        "    event_timestamp_column: event_timestamp\n"
        f"    message_format: {{avro: '{'[' * DEEP + ']' * DEEP}'}}\n"
    )
    assert error_of(runner.invoke(app, ["plan", "avro.yaml"])) == (
        2,
        "avro.yaml, line 2: nested too deeply: a value of this definition (such as an Avro "
        "schema's JSON) nests deeper than can be read",
    )


def test_the_depth_limit_is_exact_and_counts_what_aliases_bring_in() -> None:
    assert load("[" * MAX_DEPTH + "]" * MAX_DEPTH) == _nested(MAX_DEPTH)
    with pytest.raises(TooDeepError) as deep:
        load("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    assert (deep.value.line, deep.value.problem) == (
        1,
        f"nested too deeply (more than {MAX_DEPTH} levels)",
    )
    chain = "a0: &a0 []\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 150))
    with pytest.raises(TooDeepError) as aliased:
        load(chain)
    # a{i}, on line i + 1, holds i + 1 levels: a{100} is the first collection past the limit
    assert aliased.value.line == MAX_DEPTH + 1


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


def test_a_long_value_in_an_error_line_is_cut(project: Path) -> None:
    (project / "long.yaml").write_text(
        "entities:\n- name: rider_id\n  value_type: " + "X" * 100_000 + "\n"
    )
    code, message = error_of(runner.invoke(app, ["plan", "long.yaml"]))
    assert code == 2
    assert len("error: " + message) <= MAX_LINE_CHARS + len("error: ")
    assert message.startswith("long.yaml, line 3: entity rider_id: value_type: unknown value type")
    assert message.endswith("BOOL_LIST, UNIX_TIMESTAMP_LIST")
    assert re.search(r" \.\.\. \(\d+ characters cut\) \.\.\. ", message)


def test_one_line_keeps_the_start_and_the_end_of_a_long_message() -> None:
    text = "cannot read x: " + "y" * 5_000 + "; run potluck gc"
    line = one_line(text)
    assert len(line) == MAX_LINE_CHARS
    assert line.startswith("cannot read x: yyy")
    assert line.endswith("yyy; run potluck gc")
    kept = len(line) - len(re.search(r" \.\.\. \(\d+ characters cut\) \.\.\. ", line).group(0))  # type: ignore[union-attr]
    cut = int(re.search(r"\((\d+) characters cut\)", line).group(1))  # type: ignore[union-attr]
    assert kept + cut == len(text)


# ---- 5. SIGTERM is handled like Ctrl-C -----------------------------------------------------------


def test_sigterm_while_apply_runs_a_definitions_file_is_one_line_and_exit_143(
    project: Path,
) -> None:
    (project / "slow.py").write_text(
        "import time\nfrom potluck import Entity, ValueType\n"
        "rider = Entity(name='rider_id', value_type=ValueType.INT64)\ntime.sleep(30)\n"
    )
    before = signal.getsignal(signal.SIGTERM)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    timer.start()
    started = time.monotonic()
    try:
        result = runner.invoke(app, ["apply", "slow.py"])
    finally:
        timer.cancel()
    assert time.monotonic() - started < 10
    assert (result.exit_code, result.stderr) == (143, "error: terminated\n")
    assert signal.getsignal(signal.SIGTERM) == before  # put back after the command
    assert "rider_id" not in runner.invoke(app, ["entities", "list"]).stdout


# ---- 6. HDFS without Java: one short line; every storage detail bounded --------------------------

HDFS_LINE = (
    "cannot open 'hdfs://h:1/t.parquet': HDFS needs a Java runtime and Hadoop's libhdfs ({} not "
    "found; set JAVA_HOME / HADOOP_HOME)"
)


@pytest.mark.parametrize(
    "args",
    [
        ["historical", "-f", "driver_stats:conv_rate", "-e", "sample_data/entities.csv", "-O"],
        ["ingest", "driver_stats"],
    ],
    ids=["historical -O", "ingest"],
)
def test_hdfs_without_java_is_one_short_line(project: Path, args: list[str]) -> None:
    code, message = error_of(runner.invoke(app, [*args, "hdfs://h:1/t.parquet"]))
    assert code == 1
    assert message in (HDFS_LINE.format("libjvm"), HDFS_LINE.format("libhdfs"))


def test_a_storage_drivers_long_message_is_cut() -> None:
    error = os_error("s3://bucket/x", OSError("AWS said: " + "z" * 1_000), "read")
    assert isinstance(error, UnavailableError)
    assert error.message == (
        "cannot read 's3://bucket/x': AWS said: "
        + "z" * (MAX_DETAIL_CHARS - 10)
        + f"... ({1_010 - MAX_DETAIL_CHARS} more characters); check the URL, the network and the "
        "credentials"
    )


# ---- 7. a .py definitions file that ends the process ---------------------------------------------

ENDED = "ended the process while being loaded"
SIGNALLED = "raised by the file or a signal it sent itself"
KILL = "import os, signal\nos.kill(os.getpid(), signal."
ENDINGS = [
    ("import sys\nsys.exit(0)", ", line 5: {} (sys.exit(0))", True),
    ("raise SystemExit", ", line 4: {} (sys.exit(None))", True),
    ("import os\nos._exit(0)", ": {} (it exited with status 0)", False),
    ("import os\nos._exit(3)", ": {} (it exited with status 3)", False),
    (f"{KILL}SIGKILL)", ": {} (it was killed by SIGKILL)", False),
    (f"{KILL}SIGTERM)", f", line 5: {{}} (Terminated, {SIGNALLED})", True),
    ("raise KeyboardInterrupt", f", line 4: {{}} (KeyboardInterrupt, {SIGNALLED})", True),
]
"""Each way a file ends the process, what the error says after the file name, and whether what
it printed before reaches an in-process runner (an abrupt end loses the child's copy of an
in-memory stream; a real process writes it to file descriptor 2 as it goes)."""


@pytest.mark.parametrize(("ending", "where", "printed"), ENDINGS, ids=[e for e, _, _ in ENDINGS])
@pytest.mark.parametrize("command", ["plan", "apply"])
def test_a_definitions_file_that_ends_the_process_is_an_error(
    project: Path, command: str, ending: str, where: str, printed: bool
) -> None:
    (project / "ending.py").write_text(
        "from potluck import Entity, ValueType\n"
        "rider = Entity(name='rider_id', value_type=ValueType.INT64)\n"
        "print('defined')\n" + ending + "\n"
    )
    result = runner.invoke(app, [command, "ending.py"])
    lines = result.stderr.splitlines()
    assert (result.exit_code, lines[-1]) == (
        2,
        f"error: ending.py{where.format(ENDED)}; a definitions file must only define objects: "
        "remove what exits or signals",
    )
    assert lines[:-1] == (["defined"] if printed else [])
    assert "rider_id" not in runner.invoke(app, ["entities", "list"]).stdout


def test_what_a_definitions_file_imports_stays_out_of_the_command(project: Path) -> None:
    (project / "helper_for_trial3.py").write_text("VALUE_TYPE = 'INT64'\n")
    (project / "uses_helper.py").write_text(
        "import helper_for_trial3\nfrom potluck import Entity, ValueType\n"
        "rider = Entity(name='rider_id', value_type=ValueType[helper_for_trial3.VALUE_TYPE])\n"
    )
    result = runner.invoke(app, ["plan", "uses_helper.py", "-o", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["name"] == "rider_id"
    assert "helper_for_trial3" not in sys.modules


# ---- 8. registry URLs: supported schemes only, checked at load -----------------------------------

REGISTRY_HINT = (
    "the registry is a SQLite file (sqlite:///path/to/registry.db) or a PostgreSQL database "
    "(postgresql://user@host:5432/database, or postgresql+psycopg://...)"
)


@pytest.mark.parametrize(
    ("url", "shown", "scheme"),
    [
        ("mysql://u:pw@h/db", "mysql://u:***@h/db", "mysql"),
        ("mysql+pymysql://h/db", "mysql+pymysql://h/db", "mysql+pymysql"),
        ("postgres://u@h/db", "postgres://u@h/db", "postgres"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("oracle://h/db", "oracle://h/db", "oracle"),
        ("mssql+pyodbc://h/db", "mssql+pyodbc://h/db", "mssql+pyodbc"),
    ],
)
def test_an_unsupported_registry_is_refused_when_settings_load(
    project: Path, url: str, shown: str, scheme: str
) -> None:
    result = runner.invoke(app, ["entities", "list"], env={"POTLUCK_REGISTRY": url})
    assert error_of(result) == (
        2,
        f"invalid setting 'registry' = {shown!r}: the scheme {scheme!r} is not supported; "
        f"{REGISTRY_HINT} (read from {project / 'potluck.yaml'}, then environment "
        "POTLUCK_REGISTRY)",
    )


def test_a_registry_scheme_in_capitals_is_read_in_lower_case(project: Path) -> None:
    result = runner.invoke(
        app, ["entities", "list"], env={"POTLUCK_REGISTRY": f"PostgreSQL+Psycopg://u@{CLOSED}/x"}
    )
    assert error_of(result) == (
        1,
        f"cannot connect to registry postgresql+psycopg://u@{CLOSED}/x: Connection refused",
    )


def test_a_missing_plugin_module_says_what_to_install_without_a_bogus_command() -> None:
    from potluck import plugins

    interface = plugins.Interface(
        name="online store",
        base="potluck.online.base:OnlineStore",
        group="potluck.trial3",
        builtins={"ghost": "potluck_trial3_no_such_module:Store"},
        extras={},
    )
    with pytest.raises(PotluckError) as missing:
        plugins.plugin_class(interface, "ghost")
    assert missing.value.message == (
        "online store 'ghost' needs potluck_trial3_no_such_module, which is not installed; "
        "install the package that provides it (the plug-in's package)"
    )


# ---- 9. HTTP: a body without a Content-Type is refused -------------------------------------------


@pytest.fixture()
def sqlite_service(tmp_path: Path) -> Iterator[ServingService]:
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    store = SqliteOnlineStore(SqliteConfig(path=str(tmp_path / "online.db")))
    yield ServingService(registry, store, "default")
    store.close()


def _request(app_: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    import asyncio

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app_)
        async with httpx.AsyncClient(transport=transport, base_url="http://serving") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


BODY = b'{"features": ["driver_stats:conv_rate"], "entities": {"driver_id": [1]}}'


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        (
            {},
            "the request has no Content-Type header; send the request body as JSON with "
            "'Content-Type: application/json'",
        ),
        (
            {"content-type": "application/x-www-form-urlencoded"},  # curl -d
            "unsupported Content-Type 'application/x-www-form-urlencoded'; send the request "
            "body as JSON with 'Content-Type: application/json'",
        ),
        (
            {"content-type": "text/plain"},
            "unsupported Content-Type 'text/plain'; send the request body as JSON with "
            "'Content-Type: application/json'",
        ),
    ],
    ids=["no content type", "curl's default", "text/plain"],
)
def test_a_read_needs_the_json_content_type(
    sqlite_service: ServingService, headers: dict[str, str], message: str
) -> None:
    app_ = create_app(sqlite_service, ServingMetrics(sqlite_service), version="9.9")
    resp = _request(app_, "POST", "/get-online-features", content=BODY, headers=headers)
    assert (resp.status_code, resp.json()) == (
        415,
        {"error": {"code": "unsupported_media_type", "message": message}},
    )
    typed = _request(
        app_,
        "POST",
        "/get-online-features",
        content=BODY,
        headers={"content-type": "application/json"},
    )
    assert typed.status_code != 415


# ---- 10. the CLI names its own options -----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--since-last", "--start", "2024-01-01"],
            "--since-last cannot be combined with --start or --end: a since-last run loads "
            "every row committed since the previous one, and a range would leave the rest "
            "behind for good; drop the range, or run a ranged load without --since-last",
        ),
        (
            ["--since-last", "--end", "2024-01-01"],
            "--since-last cannot be combined with --start or --end: a since-last run loads "
            "every row committed since the previous one, and a range would leave the rest "
            "behind for good; drop the range, or run a ranged load without --since-last",
        ),
        (
            ["--since-last", "--full"],
            "--full cannot be combined with --since-last: a full reload reads every row of the "
            "batch source (within --start and --end); drop one of them",
        ),
        (
            ["--start", "2024-02-01", "--end", "2024-01-01"],
            "--start (2024-02-01T00:00:00+00:00) must be before --end (2024-01-01T00:00:00+00:00)",
        ),
        (
            ["--end", "yesterday"],
            "--end 'yesterday' is not a date or time; use ISO 8601 such as 2024-05-01 or "
            "2024-05-01T12:00:00Z",
        ),
    ],
    ids=["since-last start", "since-last end", "since-last full", "empty range", "bad end"],
)
def test_ingest_online_errors_name_its_options(
    project: Path, args: list[str], message: str
) -> None:
    result = runner.invoke(app, ["ingest-online", "driver_stats", *args])
    assert error_of(result) == (2, message)


def test_historical_names_source_version_not_the_sdk_argument(project: Path) -> None:
    result = runner.invoke(
        app,
        [
            "historical",
            "-f",
            "driver_stats:conv_rate",
            "-e",
            "sample_data/entities.csv",
            "-O",
            "t.parquet",
            "--source-version",
            "nope=1",
        ],
    )
    assert error_of(result) == (
        2,
        "--source-version names feature table 'nope', which --features does not read; tables "
        "in --features: driver_stats",
    )


def test_online_get_names_entity_counts_that_differ(project: Path) -> None:
    (project / "rider.yaml").write_text("entities:\n- {name: rider_id, value_type: INT64}\n")
    assert runner.invoke(app, ["apply", "rider.yaml"]).exit_code == 0
    result = runner.invoke(
        app,
        [
            "online",
            "get",
            "driver_stats:conv_rate",
            "-e",
            "driver_id=1001",
            "-e",
            "driver_id=1002",
            "-e",
            "rider_id=7",
        ],
    )
    assert error_of(result) == (
        2,
        "--entity names driver_id 2 times, rider_id 1 time; a row needs one value of each "
        "entity of the key, so give each name as many times as there are rows",
    )


# ---- 11. readiness: /health and the gRPC health service follow the online store ----------------


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_health_answers_503_naming_the_store_while_it_is_down(
    sqlite_service: ServingService,
) -> None:
    down = RedisOnlineStore(RedisConfig(url=f"redis://{CLOSED}/0"))
    service = ServingService(sqlite_service.registry, down, "default")
    app_ = create_app(service, ServingMetrics(service), version="9.9")
    ready = _request(app_, "GET", "/health")
    assert (ready.status_code, ready.json()) == (
        503,
        {
            "error": {
                "code": "unavailable",
                "message": f"not ready: online store Redis at {CLOSED} is unavailable: Error 111 "
                f"connecting to 127.0.0.1:1. Connection refused.",
            }
        },
    )
    live = _request(app_, "GET", "/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "ok", "version": "9.9"})
    up = create_app(sqlite_service, ServingMetrics(sqlite_service), version="9.9")
    assert _request(up, "GET", "/health").json() == {"status": "ok", "version": "9.9"}
    down.close()


@pytest.fixture()
def silent_redis() -> Iterator[tuple[str, list[socket.socket]]]:
    """A port that accepts connections and never answers, as a hung Redis does; yields its
    address and the connections accepted so far."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}", accepted
    done.set()
    thread.join(5)
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_hung_store_is_asked_once_a_second_and_answers_within_the_timeout(
    silent_redis: tuple[str, list[socket.socket]],
) -> None:
    address, accepted = silent_redis
    store = RedisOnlineStore(RedisConfig(url=f"redis://{address}/0"))
    clock, seen = _Clock(), list[Readiness]()
    health = StoreHealth(store, timeout=0.2, clock=clock)
    health.on_change(seen.append)
    started = time.monotonic()
    answer = health.check()
    assert time.monotonic() - started < 2  # not the store's own 10 s socket timeout
    assert answer == Readiness(
        ready=False,
        reason=f"online store Redis at {address} is unavailable: Timeout reading from socket",
    )
    assert seen == [answer]
    for moment in (0.1, 0.5, 0.99):  # within the second: the same answer, no new ping
        clock.now = moment
        assert health.check() is answer
    assert len(accepted) == 1
    clock.now = 1.5
    assert health.check() == answer
    assert len(accepted) == 2
    assert seen == [answer]  # told once: it did not change
    store.close()


def test_grpc_health_has_readiness_and_liveness(sqlite_service: ServingService) -> None:
    down = RedisOnlineStore(RedisConfig(url=f"redis://{CLOSED}/0"))
    cases = [(sqlite_service, health_pb2.HealthCheckResponse.SERVING)]
    cases.append(
        (
            ServingService(sqlite_service.registry, down, "default"),
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
    )
    for service, readiness in cases:
        server, port = start_grpc_server(service, ServingMetrics(service), version="9.9")
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                statuses = {
                    name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                    for name in ("", "feast.serving.ServingService", "liveness")
                }
                assert statuses == {
                    "": readiness,
                    "feast.serving.ServingService": readiness,
                    "liveness": health_pb2.HealthCheckResponse.SERVING,
                }
                with pytest.raises(grpc.RpcError) as unknown:
                    stub.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=5)
                assert unknown.value.code() is grpc.StatusCode.NOT_FOUND
        finally:
            server.stop(None).wait()
    down.close()
