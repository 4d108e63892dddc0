"""A password never leaves potluck in clear: every URL form, through every setting that takes one,
into config errors, connection errors, CLI stderr, logs and job records."""

from __future__ import annotations

import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from potluck import Client
from potluck._redact import redact_text, redact_url, url_secrets
from potluck.cli.main import app
from potluck.config import load_settings
from potluck.errors import ConfigError, JobError, PotluckError
from potluck.ingestion.jobs import describe

runner = CliRunner()

PASSWORD = "pA55:w@rd"
"""A password holding ':' and '@'."""
LEAKS = ("pA55", "w@rd", "w%40rd", "5%3Aw")
"""The password and its pieces, as written and percent-encoded: none may appear anywhere."""
CLOSED = "127.0.0.1:1"
"""Nothing listens here: connecting fails at once with a real 'connection refused'."""


# ---- the masking itself ------------------------------------------------------------------------

MASKED = [
    ("postgresql://potluck:s3cret@db:5432/features", "postgresql://potluck:***@db:5432/features"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://cache:6379/0?password=s3cret&db=1", "redis://cache:6379/0?password=***&db=1"),
    (
        "postgresql://u@db/x?sslmode=require&Token=abc",
        "postgresql://u@db/x?sslmode=require&Token=***",
    ),
    ("potluck:s3cret@cache:6379", "potluck:***@cache:6379"),
    ("redis://:p@ss:w@rd@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://u:pa/ss?x#y@cache:6379/0", "redis://u:***@cache:6379/0"),
    ("redis://u@cache:6379/0?password=p@ss", "redis://u@cache:6379/0?password=***"),
    ("sqlite:///data/a@b.db", "sqlite:///data/a@b.db"),
    ("redis://user@cache:6379/0", "redis://user@cache:6379/0"),
    ("127.0.0.1:6565", "127.0.0.1:6565"),
]


@pytest.mark.parametrize(("url", "masked"), MASKED)
def test_every_url_form_is_masked(url: str, masked: str) -> None:
    assert redact_url(url) == masked
    assert redact_text(f"cannot reach {url}: refused", url_secrets(url)) == (
        f"cannot reach {masked}: refused"
    )


def test_known_secrets_are_masked_anywhere_in_text() -> None:
    secrets = url_secrets("postgresql://u:p%40ss%3Aword@db/x")
    assert secrets == {"p%40ss%3Aword", "p@ss:word"}
    assert redact_text("server said: bad password p@ss:word for u", secrets) == (
        "server said: bad password *** for u"
    )


PASSWORD_TEXT = st.text(alphabet="abcdefXYZ0123456789@:/?#%+!$", min_size=4, max_size=16).filter(
    lambda p: p not in "potluck@cache.internal:6379/0"
)
QUERY_TEXT = st.text(alphabet="abcdefXYZ0123456789@:/?%+!$", min_size=4, max_size=16)


@settings(max_examples=200, deadline=None)
@given(password=PASSWORD_TEXT, query=QUERY_TEXT)
def test_no_password_survives_masking(password: str, query: str) -> None:
    host = "cache.internal:6379"
    forms = [
        (f"redis://potluck:{password}@{host}/0", password),
        (f"redis://:{password}@{host}/0", password),
        (f"redis://potluck@{host}/0?password={query}", query),
        (f"redis://potluck:{password}@{host}/0?db=1&password={query}", query),
    ]
    if not password.startswith("//"):  # else "potluck://..." reads as a scheme
        forms.append((f"potluck:{password}@{host}", password))
    for url, secret in forms:
        masked = redact_url(url)
        assert secret not in masked, (url, masked)
        assert secret not in redact_text(f"error at {url} (retrying)", url_secrets(url))


# ---- the sweep: URL forms x settings x outputs -------------------------------------------------


def url_forms(scheme: str, host_port: str, path: str) -> dict[str, str]:
    """The ways a password is written into a URL."""
    encoded = quote(PASSWORD, safe="")
    return {
        "user-password": f"{scheme}://potluck:{PASSWORD}@{host_port}{path}",
        "password-only": f"{scheme}://:{PASSWORD}@{host_port}{path}",
        "percent-encoded": f"{scheme}://potluck:{encoded}@{host_port}{path}",
        "query": f"{scheme}://potluck@{host_port}{path}?password={PASSWORD}",
        "encoded-query": f"{scheme}://potluck@{host_port}{path}?password={encoded}",
        "no-scheme": f"potluck:{PASSWORD}@{host_port}",
    }


SETTINGS = {
    "registry": ("postgresql", "/potluck", lambda url: {"POTLUCK_REGISTRY": url}),
    "online_store.url": (
        "redis",
        "/0",
        lambda url: {"POTLUCK_ONLINE_STORE__TYPE": "redis", "POTLUCK_ONLINE_STORE__URL": url},
    ),
    "online_store.startup_nodes": (
        "redis",
        "",
        lambda url: {
            "POTLUCK_ONLINE_STORE__TYPE": "redis_cluster",
            "POTLUCK_ONLINE_STORE__STARTUP_NODES": f"['{url}']",
        },
    ),
    "core_url": ("grpc", "", lambda url: {"POTLUCK_CORE_URL": url}),
    "serving_url": ("grpc", "", lambda url: {"POTLUCK_SERVING_URL": url}),
}
COMMAND = {
    "registry": ["entities", "list"],
    "online_store.url": ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001"],
    "online_store.startup_nodes": ["online", "purge", "driver_stats", "--yes"],
    "core_url": ["feature-tables", "list"],
    "serving_url": ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001"],
}
"""A command each setting is used by."""
SWEEP = [
    pytest.param(setting, form, id=f"{setting}-{form}")
    for setting in SETTINGS
    for form in url_forms("x", CLOSED, "")
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project (``potluck init`` files) with its definitions applied and one row ingested."""
    root = tmp_path_factory.mktemp("secrets")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(clean)
    cwd = Path.cwd()
    os.chdir(root)
    try:
        assert runner.invoke(app, ["init"]).exit_code == 0
        assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
        with Client() as client:
            when = datetime(2024, 5, 1, tzinfo=timezone.utc)
            client.ingest(
                "driver_stats",
                pd.DataFrame(
                    {
                        "driver_id": [1001],
                        "conv_rate": [0.5],
                        "acc_rate": [0.9],
                        "avg_daily_trips": [3],
                        "event_timestamp": [when],
                        "created": [when],
                    }
                ),
            )
    finally:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(saved)
    return root


@pytest.fixture()
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return project


def _exercise(setting: str, environ: dict[str, str]) -> list[str]:
    """Use the setting as the SDK does; return every message, record and repr it produced."""
    try:
        loaded = load_settings(environ=environ)
    except ConfigError as exc:
        return [exc.message]
    shown = [repr(loaded), str(loaded)]
    with Client(settings=loaded) as client:
        if setting == "registry":
            with pytest.raises(PotluckError) as failed:
                client.list_projects()
            return [*shown, failed.value.message]
        job = client.start_offline_to_online_ingestion("driver_stats")
        with pytest.raises(JobError) as job_failed:
            job.wait(60)
        record = client.get_job(job.id).record()
        assert record.error is not None
        return [*shown, job_failed.value.message, json.dumps(describe(record), default=str)]


@pytest.mark.parametrize(("setting", "form"), SWEEP)
def test_no_output_shows_the_password(
    in_project: Path, caplog: pytest.LogCaptureFixture, setting: str, form: str
) -> None:
    scheme, path, to_environ = SETTINGS[setting]
    environ = to_environ(url_forms(scheme, CLOSED, path)[form])
    caplog.set_level(logging.DEBUG)
    outputs = _exercise(setting, environ)
    result = runner.invoke(app, COMMAND[setting], env=environ)
    assert result.exit_code in (1, 2)
    assert re.fullmatch(r"error: [^\n]+\n", result.stderr), result.stderr
    outputs += [result.stdout, result.stderr, caplog.text]
    for output in outputs:
        for leak in LEAKS:
            assert leak not in output, (leak, output)


def test_the_sweep_reaches_the_drivers_and_the_job_records(
    in_project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The forms the drivers accept get past the checks and fail on the closed port."""
    caplog.set_level(logging.DEBUG)
    url = url_forms("redis", CLOSED, "/0")["user-password"]
    environ = SETTINGS["online_store.url"][2](url)
    outputs = _exercise("online_store.url", environ)
    assert outputs[2].startswith("job ")
    assert "online store Redis at 127.0.0.1:1 is unavailable" in outputs[2]
    assert "Connection refused" in caplog.text
    registry = url_forms("postgresql", CLOSED, "/potluck")["percent-encoded"]
    failed = _exercise("registry", {"POTLUCK_REGISTRY": registry})[-1]
    assert failed == (
        "cannot connect to registry postgresql://potluck:***@127.0.0.1:1/potluck: Connection "
        "refused"
    )


@pytest.mark.postgres
@pytest.mark.parametrize("form", ["percent-encoded", "encoded-query"])
def test_a_wrong_password_on_a_real_server_is_masked(
    in_project: Path, postgres_url: str, form: str
) -> None:
    host_port = re.search(r"@([^/]+)/", postgres_url).group(1)  # type: ignore[union-attr]
    url = url_forms("postgresql", host_port, "/potluck")[form]
    result = runner.invoke(app, ["entities", "list"], env={"POTLUCK_REGISTRY": url})
    masked = redact_url(url)
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: cannot connect to registry {masked}: password authentication failed for user "
        '"potluck"\n',
    )
