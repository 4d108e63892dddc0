"""Configuration faults a second new-user trial of issue 8 found, each fixed for its whole class:

1. Redis URLs: the database and every query parameter are checked when settings load;
2. a misspelt ``POTLUCK_*`` variable is an error naming the setting it meant;
3. ``offline_store.memory_limit`` beyond DuckDB's range is refused when settings load, and a
   query that outgrows the limit is a runtime error (exit 1) naming the setting;
4. a key given twice in one YAML mapping (config file, definitions, variables) is an error;
5. the SDK outside a project writes nothing until a call that writes.
"""

from __future__ import annotations

import os
import re
import typing
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pydantic
import pytest
import redis
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from potluck import Client, Entity, ValueType
from potluck import plugins as potluck_plugins
from potluck._env_names import NOT_SETTINGS, NOT_SETTINGS_PREFIXES
from potluck._redis_url import QUERY_PARAMETERS
from potluck._setting_forms import check_memory_limit, check_redis_url
from potluck._yaml import DuplicateKeyError
from potluck._yaml import load as read_yaml
from potluck.cli.main import app
from potluck.cli.registry import example_definitions_yaml
from potluck.config import SETTING_NAMES, Settings, load_settings
from potluck.definitions.loader import load_definitions
from potluck.errors import ConfigError, NotFoundError, TerminalError
from potluck.offline.duckdb import _setting_error as setting_error_of_duckdb

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]
MASKED_SECRET = "s3cretPW"


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, without potluck settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    return info.value


def one_error_line(args: list[str], environ: dict[str, str], code: int) -> str:
    """Run a command; assert it printed nothing but one ``error:`` line and exited ``code``."""
    result = runner.invoke(app, args, env=environ)
    assert (result.exit_code, result.stdout) == (code, ""), result.output
    assert re.fullmatch(r"error: [^\n]+\n", result.stderr), result.stderr
    return result.stderr[len("error: ") : -1]


# ---- 1. Redis URLs -----------------------------------------------------------------------------

REDIS_ENV = "environment POTLUCK_ONLINE_STORE__TYPE, then environment POTLUCK_ONLINE_STORE__URL"
TAKES = (
    "db, username, password, client_name, socket_timeout, socket_connect_timeout, "
    "socket_keepalive, retry_on_timeout, health_check_interval, max_connections, protocol"
)
NO_DATABASE = (
    "names no database: write redis://host:port/DB with DB a whole number from 0 (a server has "
    "databases 0 to 15 unless its 'databases' setting allows more)"
)

BAD_REDIS_URLS = [
    pytest.param(
        "redis://h:1/0?foo=1",
        f"unknown query parameter 'foo'; a redis:// URL takes {TAKES}",
        id="unknown-parameter",
    ),
    pytest.param(
        f"redis://:{MASKED_SECRET}@h:1/0?decode_responses=yes",
        f"unknown query parameter 'decode_responses'; a redis:// URL takes {TAKES}",
        id="unsupported-parameter-password-masked",
    ),
    pytest.param("redis://h:1/abc", f"the path '/abc' {NO_DATABASE}", id="db-not-a-number"),
    pytest.param("redis://h:1/-1", f"the path '/-1' {NO_DATABASE}", id="db-negative"),
    pytest.param("redis://h:1/0/1", f"the path '/0/1' {NO_DATABASE}", id="db-two-parts"),
    pytest.param(
        "redis://h:1?db=x",
        "query parameter 'db' = 'x' is not a whole number of at least 0",
        id="db-query-not-a-number",
    ),
    pytest.param(
        "redis://h:1/1?db=2",
        "the database is given twice, in the path and as ?db=; keep one (redis://host:port/DB)",
        id="db-twice",
    ),
    pytest.param(
        "redis://h:1/0?socket_timeout=abc",
        "query parameter 'socket_timeout' = 'abc' is not a number of seconds above 0, such as 2.5",
        id="timeout-not-a-number",
    ),
    pytest.param(
        "redis://h:1/0?socket_connect_timeout=-2",
        "query parameter 'socket_connect_timeout' = '-2' is not a number of seconds above 0, "
        "such as 2.5",
        id="timeout-negative",
    ),
    pytest.param(
        "redis://h:1/0?socket_timeout=",
        "query parameter 'socket_timeout' has no value; give one or leave it out",
        id="no-value",
    ),
    pytest.param(
        "redis://h:1/0?max_connections=5&max_connections=6",
        "query parameter 'max_connections' is given twice; keep one",
        id="parameter-twice",
    ),
    pytest.param(
        "redis://h:1/0?max_connections=0",
        "query parameter 'max_connections' = '0' is not a whole number of at least 1",
        id="no-connections",
    ),
    pytest.param(
        "redis://h:1/0?retry_on_timeout=maybe",
        "query parameter 'retry_on_timeout' = 'maybe' is not true or false (also yes/no, 1/0)",
        id="not-a-boolean",
    ),
    pytest.param(
        "redis://h:1/0?protocol=4",
        "query parameter 'protocol' = '4' is not one of 2, 3",
        id="protocol",
    ),
    pytest.param(
        "redis://h:1/0?ssl_ca_certs=/ca.pem",
        "query parameter 'ssl_ca_certs' needs a rediss:// URL, not redis://",
        id="tls-parameter-without-tls",
    ),
    pytest.param(
        "unix:///run/redis.sock?socket_keepalive=yes",
        "query parameter 'socket_keepalive' needs a redis:// or rediss:// URL, not unix://",
        id="tcp-parameter-on-a-socket",
    ),
    pytest.param(
        f"rediss://h:1/0?ssl_password={MASKED_SECRET}&ssl_cert_reqs=NONE",
        "query parameter 'ssl_cert_reqs' = 'NONE' is not one of none, optional, required",
        id="tls-choice-password-masked",
    ),
    pytest.param(
        "REDIS://h:1/0",
        "expected redis://host:port/db (credentials as user:password@ before the host), "
        "rediss://... for TLS, or unix:///path/to/socket",
        id="scheme-in-capitals",
    ),
]


@pytest.mark.parametrize(("url", "reason"), BAD_REDIS_URLS)
def test_a_bad_redis_url_is_refused_when_settings_load(
    workdir: Path, url: str, reason: str
) -> None:
    environ = {"POTLUCK_ONLINE_STORE__TYPE": "redis", "POTLUCK_ONLINE_STORE__URL": url}
    shown = url.replace(MASKED_SECRET, "***")
    expected = f"invalid setting 'online_store.url' = {shown!r}: {reason} (read from {REDIS_ENV})"
    error = config_error(environ)
    assert (error.message, error.attrs()["key"]) == (expected, "online_store.url")
    assert one_error_line(["entities", "list"], environ, 2) == expected
    assert list(workdir.iterdir()) == []


def test_a_url_is_no_cluster_node_and_a_cluster_has_only_db_0(workdir: Path) -> None:
    environ = {
        "POTLUCK_ONLINE_STORE__TYPE": "redis_cluster",
        "POTLUCK_ONLINE_STORE__STARTUP_NODES": f"['redis://:{MASKED_SECRET}@node:7000/3']",
    }
    assert config_error(environ).message == (
        "invalid setting 'online_store.startup_nodes' = ['redis://:***@node:7000/3']: "
        "'redis://:***@node:7000/3': a startup node is host:port, not a URL: redis_cluster "
        "supports only db 0 and takes no credentials or URL options; write node:7000 (read from "
        "environment POTLUCK_ONLINE_STORE__STARTUP_NODES, then environment "
        "POTLUCK_ONLINE_STORE__TYPE)"
    )


GOOD_VALUES = {
    "db": "3",
    "username": "potluck",
    "password": "pw",
    "client_name": "features",
    "socket_timeout": "2.5",
    "socket_connect_timeout": "1",
    "socket_keepalive": "yes",
    "retry_on_timeout": "false",
    "health_check_interval": "30",
    "max_connections": "8",
    "protocol": "3",
    "ssl_cert_reqs": "optional",
    "ssl_check_hostname": "0",
    "ssl_ca_certs": "/etc/ssl/ca.pem",
    "ssl_ca_path": "/etc/ssl/certs",
    "ssl_certfile": "/etc/ssl/client.pem",
    "ssl_keyfile": "/etc/ssl/client.key",
    "ssl_password": "keypw",
    "ssl_ciphers": "HIGH",
}


@pytest.mark.parametrize(
    ("name", "scheme"),
    [(name, scheme) for name, p in sorted(QUERY_PARAMETERS.items()) for scheme in p.schemes],
)
def test_every_parameter_potluck_takes_is_one_redis_py_takes(
    workdir: Path, name: str, scheme: str
) -> None:
    """A URL that passes the check builds a redis-py connection (no TypeError at first use)."""
    base = "unix:///run/redis.sock" if scheme == "unix" else f"{scheme}://h:1"
    url = f"{base}?{name}={GOOD_VALUES[name]}"
    environ = {"POTLUCK_ONLINE_STORE__TYPE": "redis", "POTLUCK_ONLINE_STORE__URL": url}
    assert load_settings(environ=environ).online_store["url"] == url
    connection = redis.Redis.from_url(url).connection_pool.make_connection()
    connection.disconnect()


def test_the_docs_list_every_query_parameter() -> None:
    documented = re.findall(r"`\?([a-z_]+)=`", (REPO / "docs" / "configuration.md").read_text())
    assert set(documented) == set(QUERY_PARAMETERS)


URL_PATHS = ["", "/", "/0", "/7", "/15", "/99", "/x", "/-1", "/1/2", "/%31"]
URL_PARAMETERS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "db",
                "socket_timeout",
                "retry_on_timeout",
                "protocol",
                "timeout",
                "decode_responses",
                "Socket_Timeout",
                "ssl_ca_certs",
            ]
        ),
        st.sampled_from(["", "0", "1", "2", "3", "2.5", "yes", "no", "abc", "-1"]),
    ),
    max_size=3,
)


@settings(max_examples=120, deadline=None)
@given(
    scheme=st.sampled_from(["redis", "rediss"]),
    path=st.sampled_from(URL_PATHS),
    parameters=URL_PARAMETERS,
)
def test_a_url_that_passes_means_to_redis_py_what_it_says(
    scheme: str, path: str, parameters: list[tuple[str, str]]
) -> None:
    """Brute force: whatever passes, redis-py builds a connection to the database written."""
    query = "&".join(f"{name}={value}" for name, value in parameters)
    url = f"{scheme}://h:1{path}" + (f"?{query}" if query else "")
    try:
        check_redis_url(url)
    except ValueError:
        return
    written = dict(parameters).get("db") or path.strip("/").replace("%31", "1") or "0"
    pool = redis.Redis.from_url(url).connection_pool
    pool.make_connection().disconnect()
    assert pool.connection_kwargs.get("db", 0) == int(written)


@pytest.mark.redis
def test_a_database_the_server_lacks_is_one_line_naming_the_setting(
    workdir: Path, redis_url: str
) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    address = redis_url.split("://", 1)[1].split("/", 1)[0]
    environ = {
        "POTLUCK_ONLINE_STORE__TYPE": "redis",
        "POTLUCK_ONLINE_STORE__URL": f"redis://{address}/99",
    }
    message = one_error_line(
        ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001"], environ, 2
    )
    assert message == (
        f"online store Redis at {address} has no database of the number online_store.url names "
        "(DB index is out of range); choose one the server has (0 to 15, unless its 'databases' "
        "setting allows more)"
    )


@pytest.mark.redis
def test_query_parameters_reach_a_real_server(workdir: Path, redis_url: str) -> None:
    assert runner.invoke(app, ["init", "--with-sample-data"]).exit_code == 0
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    ingested = runner.invoke(app, ["ingest", "driver_stats", "sample_data/driver_stats.csv"])
    assert ingested.exit_code == 0, ingested.output
    address = redis_url.split("://", 1)[1].split("/", 1)[0]
    url = (
        f"redis://{address}/3?protocol=3&socket_timeout=5&client_name=potluck_trial"
        "&health_check_interval=10&max_connections=4"
    )
    environ = {"POTLUCK_ONLINE_STORE__TYPE": "redis", "POTLUCK_ONLINE_STORE__URL": url}
    loaded = runner.invoke(app, ["ingest-online", "driver_stats"], env=environ)
    assert (loaded.exit_code, loaded.stderr) == (0, ""), loaded.output
    read = runner.invoke(
        app,
        ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001", "-o", "json"],
        env=environ,
    )
    assert (read.exit_code, read.stderr) == (0, ""), read.output
    assert '"PRESENT"' in read.stdout
    assert redis.Redis.from_url(url).dbsize() > 0


# ---- 2. misspelt POTLUCK_* variables -----------------------------------------------------------

MISSPELT = [
    pytest.param(
        "POTLUCK_ONLINE_STORE_TYPE",
        "redis",
        "did you mean POTLUCK_ONLINE_STORE__TYPE, with two underscores between nested keys?",
        id="single-underscore",
    ),
    pytest.param(
        "POTLUCK_REGISTRI", "sqlite:///x.db", "did you mean POTLUCK_REGISTRY?", id="registri"
    ),
    pytest.param("POTLUCK_PROJECTT", "rides", "did you mean POTLUCK_PROJECT?", id="projectt"),
    pytest.param(
        "POTLUCK_OFFLINE_STORE_MEMORY_LIMIT",
        "4GB",
        "did you mean POTLUCK_OFFLINE_STORE__MEMORY_LIMIT, with two underscores between nested "
        "keys?",
        id="nested-key",
    ),
    pytest.param(
        "POTLUCK_ONLINE_STORE____PATH",
        "x.db",
        "did you mean POTLUCK_ONLINE_STORE__PATH?",
        id="empty-key",
    ),
    pytest.param("POTLUCK_SERVING", "h:6566", "did you mean POTLUCK_SERVING_URL?", id="shortened"),
]


@pytest.mark.parametrize(("name", "value", "meant"), MISSPELT)
def test_a_misspelt_variable_names_the_setting_it_meant_and_what_was_read(
    workdir: Path, name: str, value: str, meant: str
) -> None:
    path = workdir / "potluck.yaml"
    path.write_text("project: rides\n")
    environ = {name: value, "POTLUCK_CORE_URL": "core:6565", "POTLUCK_DEBUG": "0"}
    expected = (
        f"unknown environment variable {name}: {meant} Rename or unset it (read from {path}, then "
        "environment POTLUCK_CORE_URL)"
    )
    error = config_error(environ)
    assert (error.message, error.attrs()) == (
        expected,
        {"key": name, "sources": (str(path), "environment POTLUCK_CORE_URL")},
    )
    assert one_error_line(["entities", "list"], environ, 2) == expected
    assert sorted(p.name for p in workdir.iterdir()) == ["potluck.yaml"]


def test_variables_that_are_not_settings_are_left_alone(workdir: Path) -> None:
    other = workdir / "other.yaml"
    other.write_text("project: rides\n")
    environ = {
        "POTLUCK_CONFIG": str(other),
        "POTLUCK_DEBUG": "1",
        "POTLUCK_SERVICES_PORT_OFFSET": "100",
        "POTLUCK_SERVICES_PYTHON": "/usr/bin/python3",
        "POTLUCK_TEST_ANYTHING_AT_ALL": "x",
        "POTLUCK_UNKNOWN": "x",  # close to no setting: another tool's
    }
    loaded = load_settings(environ=environ)
    assert (loaded.project, loaded.sources) == ("rides", (str(other),))


def _nested_spellings(prefix: str, annotation: Any) -> set[str]:
    """``prefix__KEY`` for every key of the settings model(s) ``annotation`` names, nested too."""
    names: set[str] = set()
    for model in (annotation, *typing.get_args(annotation)):
        if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
            for key, field in model.model_fields.items():
                name = f"{prefix}__{key.upper()}"
                names |= {name} | _nested_spellings(name, field.annotation)
    return names


def _setting_spellings() -> set[str]:
    names = {f"POTLUCK_{name.upper()}" for name in SETTING_NAMES}
    for name in SETTING_NAMES:  # sections that are settings models: auth.tokens, auth.jwt.issuer
        annotation = Settings.model_fields[name].annotation
        names |= _nested_spellings(f"POTLUCK_{name.upper()}", annotation)
    for interface in potluck_plugins.INTERFACES:
        for plugin in potluck_plugins.known_names(interface):
            fields = potluck_plugins.plugin_class(interface, plugin).config_class.model_fields
            names |= {f"POTLUCK_{interface.name}__{key}".upper() for key in fields}
    return names


def test_every_potluck_variable_the_repository_uses_is_a_setting_or_listed(workdir: Path) -> None:
    """The allow-list stays complete: a new non-setting variable must be added to it.

    The docs are left out: they show misspelt names in example errors.
    """
    spellings = _setting_spellings()
    sections = {f"POTLUCK_{name.upper()}__" for name in SETTING_NAMES}
    files = [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml"]
    for folder, pattern in [
        ("src", "*.py"),
        ("scripts", "*"),
        ("examples", "*"),
        ("benchmarks", "*.py"),
        (".github", "*"),
    ]:
        files += [p for p in (REPO / folder).rglob(pattern) if p.is_file()]
    unknown: set[str] = set()
    for file in files:
        try:
            text = file.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for name in set(re.findall(r"POTLUCK_[A-Z0-9_]*", text)):
            listed = name in NOT_SETTINGS or name.startswith(NOT_SETTINGS_PREFIXES)
            if name == "POTLUCK_" or listed or name in spellings or name in sections:
                continue
            unknown.add(f"{file.relative_to(REPO)}: {name}")
    assert sorted(unknown) == []
    documented = (REPO / "docs" / "configuration.md").read_text()
    for name in (*NOT_SETTINGS, *(f"{p}*" for p in NOT_SETTINGS_PREFIXES)):
        assert f"`{name}`" in documented, name


# ---- 3. offline_store.memory_limit -------------------------------------------------------------

BEYOND_DUCKDB = (
    "is beyond DuckDB's range: a memory limit is less than 2^64 bytes (18446744TB, "
    "16777216TiB); use a smaller one, such as 80%"
)


@pytest.mark.parametrize("limit", ["18446745TB", "16777216TiB", "99999999999GB"])
def test_a_memory_limit_beyond_duckdbs_range_is_refused_when_settings_load(
    workdir: Path, limit: str
) -> None:
    environ = {"POTLUCK_OFFLINE_STORE__MEMORY_LIMIT": limit}
    expected = (
        f"invalid setting 'offline_store.memory_limit' = {limit!r}: {BEYOND_DUCKDB} (read from "
        "environment POTLUCK_OFFLINE_STORE__MEMORY_LIMIT)"
    )
    assert config_error(environ).message == expected
    assert one_error_line(["entities", "list"], environ, 2) == expected


@pytest.fixture(scope="module")
def duckdb_db() -> Iterator[duckdb.DuckDBPyConnection]:
    with duckdb.connect(":memory:") as db:
        yield db


UNITS = {
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


@settings(max_examples=60, deadline=None)
@given(unit=st.sampled_from(sorted(UNITS)), scale=st.integers(-3, 3), decimals=st.integers(0, 12))
def test_the_range_check_agrees_with_duckdb_at_the_edge(
    duckdb_db: duckdb.DuckDBPyConnection, unit: str, scale: int, decimals: int
) -> None:
    number = f"{(2**64 / UNITS[unit]) * (1 + scale * 1e-9):.{decimals}f}"
    limit = f"{number}{unit}"
    try:
        check_memory_limit(limit)
        passes = True
    except ValueError as exc:
        assert str(exc) == BEYOND_DUCKDB
        passes = False
    try:
        duckdb_db.execute(f"SET memory_limit = '{limit}'")
        accepted = True
    except duckdb.ParserException:
        accepted = False
    assert passes == accepted, limit


OUT_OF_MEMORY = re.compile(
    r"(?P<doing>.+) ran out of memory in DuckDB \(Out of Memory Error: [^()\n]+ \([^()\n]+\)\); "
    r"raise offline_store\.memory_limit \(in potluck\.yaml or "
    r"POTLUCK_OFFLINE_STORE__MEMORY_LIMIT; unset, DuckDB uses 80% of RAM\)"
)


@pytest.fixture()
def sample_project(workdir: Path) -> Path:
    assert runner.invoke(app, ["init", "--with-sample-data"]).exit_code == 0
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    ingested = runner.invoke(app, ["ingest", "driver_stats", "sample_data/driver_stats.csv"])
    assert ingested.exit_code == 0, ingested.output
    return workdir


def test_a_query_that_outgrows_a_tiny_memory_limit_is_a_runtime_error(
    sample_project: Path,
) -> None:
    environ = {"POTLUCK_OFFLINE_STORE__MEMORY_LIMIT": "1MB"}
    with (
        Client(settings=load_settings(environ=environ)) as client,
        pytest.raises(TerminalError) as info,
    ):
        client.get_historical_features(
            ["driver_stats:conv_rate"], "sample_data/entities.csv"
        ).to_arrow()
    assert type(info.value) is TerminalError
    found = OUT_OF_MEMORY.fullmatch(info.value.message)
    assert found is not None, info.value.message
    assert found["doing"] == "joining the entity rows with driver_stats"
    assert info.value.attrs() == {"key": "offline_store.memory_limit"}
    message = one_error_line(
        [
            "historical",
            "-f",
            "driver_stats:conv_rate",
            "-e",
            "sample_data/entities.csv",
            "-O",
            "out.parquet",
        ],
        environ,
        1,
    )
    assert OUT_OF_MEMORY.fullmatch(message), message
    assert not (sample_project / "out.parquet").exists()


def test_a_limit_duckdb_cannot_even_set_is_the_same_runtime_error() -> None:
    """DuckDB may refuse ``SET memory_limit`` itself as out of memory (below what it holds)."""
    refused = duckdb.OutOfMemoryException(
        "Out of Memory Error: failed to allocate data of size 32.0 KiB (8.0 KiB/1000 bytes used)"
        "\n\nPossible solutions:\n* Reducing the number of threads (SET threads=X)"
    )
    error = setting_error_of_duckdb("memory_limit", "'1KB'", refused)
    assert type(error) is TerminalError
    assert error.message == (
        "setting offline_store.memory_limit = '1KB' ran out of memory in DuckDB (Out of Memory "
        "Error: failed to allocate data of size 32.0 KiB (8.0 KiB/1000 bytes used)); raise "
        "offline_store.memory_limit (in potluck.yaml or POTLUCK_OFFLINE_STORE__MEMORY_LIMIT; "
        "unset, DuckDB uses 80% of RAM)"
    )


# ---- 4. a key given twice in one YAML mapping --------------------------------------------------

DUPLICATED_CONFIG = [
    pytest.param(
        "project: a\nregistry: sqlite:///r.db\nproject: b\n", 3, "project", 1, id="top-level"
    ),
    pytest.param(
        "online_store:\n  type: sqlite\n  path: a.db\n  path: b.db\n",
        4,
        "path",
        3,
        id="plugin-section",
    ),
    pytest.param(
        "offline_store: {type: duckdb, threads: 2, threads: 4}\n",
        1,
        "threads",
        1,
        id="flow-mapping",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "first"), DUPLICATED_CONFIG)
def test_a_key_twice_in_the_config_file_names_file_line_and_key(
    workdir: Path, text: str, line: int, key: str, first: int
) -> None:
    path = workdir / "potluck.yaml"
    path.write_text(text)
    expected = (
        f"config file {path}, line {line}: duplicate key {key!r} (first at line {first}); a key "
        "may be given once in a mapping, keep one of them"
    )
    assert config_error({}).message == expected
    assert one_error_line(["entities", "list"], {}, 2) == expected


def test_a_key_twice_in_a_variables_yaml_value_is_refused(workdir: Path) -> None:
    error = config_error({"POTLUCK_ONLINE_STORE": "{type: sqlite, type: redis}"})
    assert error.message == (
        "invalid setting 'online_store': its value holds the key 'type' twice; keep one of them "
        "(read from environment POTLUCK_ONLINE_STORE)"
    )


def test_merge_keys_may_still_be_overridden(workdir: Path) -> None:
    (workdir / "potluck.yaml").write_text(
        "engine: &base {type: local, progress_interval: 1}\n"
        "offline_store: {type: duckdb}\n"
        "online_store:\n  type: sqlite\n  path: a.db\n"
    )
    assert load_settings(environ={}).engine == {"type": "local", "progress_interval": 1}
    assert read_yaml("a: &b {x: 1, y: 2}\nc: {<<: *b, x: 3}\n") == {
        "a": {"x": 1, "y": 2},
        "c": {"x": 3, "y": 2},
    }


DUPLICATED_DEFINITIONS = [
    pytest.param(
        "entities:\n  - name: driver_id\n    value_type: INT64\n    name: rider_id\n",
        4,
        "name",
        2,
        id="entity-field",
    ),
    pytest.param(
        "entities:\n  - {name: a, value_type: INT64}\n"
        "entities:\n  - {name: b, value_type: INT64}\n",
        3,
        "entities",
        1,
        id="top-level",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "first"), DUPLICATED_DEFINITIONS)
def test_a_key_twice_in_a_definitions_file_names_file_line_and_key(
    workdir: Path, text: str, line: int, key: str, first: int
) -> None:
    (workdir / "defs.yaml").write_text(text)
    expected = (
        f"defs.yaml, line {line}: duplicate key {key!r} (first at line {first}); a key may be "
        "given once in a mapping, keep one of them"
    )
    for command in ("plan", "apply"):
        assert one_error_line([command, "-f", "defs.yaml"], {}, 2) == expected
    assert sorted(p.name for p in workdir.iterdir()) == ["defs.yaml"]


KEYS = ["a", "b", "'a'", "1", "1.0", "true", "yes", "~", "null"]


@settings(max_examples=150, deadline=None)
@given(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=5), nested=st.booleans())
def test_duplicates_are_found_exactly_as_python_would_merge_keys(
    keys: list[str], nested: bool
) -> None:
    """Brute force: a mapping is refused iff two of its keys are equal once YAML reads them."""
    indent = "  " if nested else ""
    text = ("outer:\n" if nested else "") + "".join(
        f"{indent}{key}: {n}\n" for n, key in enumerate(keys)
    )
    parsed = [next(iter(yaml.safe_load(f"{key}: 0"))) for key in keys]
    second = next(
        (j for j in range(len(parsed)) if any(parsed[i] == parsed[j] for i in range(j))), None
    )
    if second is None:
        assert read_yaml(text) == yaml.safe_load(text)
        return
    with pytest.raises(DuplicateKeyError) as info:
        read_yaml(text)
    first = next(i for i in range(second) if parsed[i] == parsed[second])
    offset = 2 if nested else 1
    assert (info.value.line, info.value.first_line) == (second + offset, first + offset)
    assert info.value.key == parsed[second]


# ---- 5. the SDK outside a project --------------------------------------------------------------

WHEN = datetime(2024, 5, 1, tzinfo=timezone.utc)
READS: dict[str, Any] = {
    "list_projects": lambda c: c.list_projects(),
    "list_entities": lambda c: c.list_entities(),
    "get_entity": lambda c: c.get_entity("driver_id"),
    "list_feature_tables": lambda c: c.list_feature_tables(),
    "get_feature_table": lambda c: c.get_feature_table("driver_stats"),
    "feature_table_history": lambda c: c.feature_table_history("driver_stats"),
    "get_online_features": lambda c: c.get_online_features(
        ["driver_stats:conv_rate"], [{"driver_id": 1001}]
    ),
    "get_historical_features": lambda c: c.get_historical_features(
        ["driver_stats:conv_rate"],
        pd.DataFrame({"driver_id": [1001], "event_timestamp": [WHEN]}),
    ),
    "list_jobs": lambda c: c.list_jobs(),
    "get_job": lambda c: c.get_job("abc"),
    "cancel_job": lambda c: c.cancel_job("abc"),
    "serving_service": lambda c: c.serving_service(),
    "purge_online": lambda c: c.purge_online("driver_stats"),
    "delete_entity": lambda c: c.delete_entity("driver_id"),
    "archive_project": lambda c: c.archive_project("default"),
    "collect_garbage": lambda c: c.collect_garbage(),
    "ingest": lambda c: c.ingest(
        "driver_stats", pd.DataFrame({"driver_id": [1001], "event_timestamp": [WHEN]})
    ),
    "start_offline_to_online_ingestion": lambda c: c.start_offline_to_online_ingestion(
        "driver_stats"
    ),
}
"""Every SDK call that needs an applied project (ids: the method)."""


@pytest.mark.parametrize("call", sorted(READS))
def test_outside_a_project_the_sdk_says_so_and_creates_nothing(workdir: Path, call: str) -> None:
    with Client() as client, pytest.raises(NotFoundError) as info:
        READS[call](client)
    assert info.value.message == (
        f"no potluck project found: no potluck.yaml in {workdir} or its parents, and no registry "
        f"at {workdir}/.potluck/registry.db; apply definitions to start one here (Client.apply), "
        "run `potluck init`, or work in a project folder"
    )
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("call", sorted(set(READS) - {"list_projects"}))
def test_in_a_project_before_the_first_apply_the_sdk_creates_nothing(
    workdir: Path, call: str
) -> None:
    (workdir / "potluck.yaml").write_text("project: rides\n")
    with Client() as client:
        assert client.list_projects() == []
        with pytest.raises(NotFoundError) as info:
            READS[call](client)
    assert info.value.message == (
        f"project 'rides' does not exist (nothing was applied yet: no registry at "
        f"{workdir}/.potluck/registry.db); apply definitions to create it"
    )
    assert sorted(p.name for p in workdir.iterdir()) == ["potluck.yaml"]


def test_the_sdk_writes_on_the_first_call_that_writes(workdir: Path) -> None:
    driver = Entity(name="driver_id", value_type=ValueType.INT64)
    with Client() as client:
        planned = client.apply([driver], dry_run=True)
        assert [(c.name, c.action) for c in planned] == [("driver_id", "create")]
        assert list(workdir.iterdir()) == []
        applied = client.apply([driver])
        assert [(c.name, c.action) for c in applied] == [("driver_id", "create")]
        assert client.list_entities() == [driver]
        assert [p.name for p in client.list_projects()] == ["default"]
    assert sorted(p.name for p in (workdir / ".potluck").iterdir()) == ["registry.db"]


def test_create_project_creates_the_registry(workdir: Path) -> None:
    with Client() as client:
        client.create_project("rides")
        assert [p.name for p in client.list_projects()] == ["rides"]
    assert (workdir / ".potluck" / "registry.db").is_file()


def test_the_definitions_example_still_applies_from_the_sdk(workdir: Path) -> None:
    """The SDK's first apply in an empty folder works as before (what `potluck init` shows)."""
    (workdir / "definitions.yaml").write_text(example_definitions_yaml())
    with Client() as client:
        changes = client.apply(load_definitions(workdir / "definitions.yaml"))
    assert [(c.kind, c.action) for c in changes] == [
        ("entity", "create"),
        ("feature_table", "create"),
    ]
