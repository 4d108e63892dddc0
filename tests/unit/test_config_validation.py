"""All of the settings are checked when they load: top-level values and each plug-in section
against its plug-in's config class. A bad value is one ConfigError (CLI: one ``error:`` line, exit
2) naming the key, the value and exactly the sources that were read; environment variables can
switch a plug-in's type beside a file that names another one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from potluck.cli.main import app
from potluck.cli.registry import default_config_yaml, example_definitions_yaml
from potluck.config import load_settings
from potluck.errors import ConfigError

runner = CliRunner()


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, without potluck settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def config_error(environ: dict[str, str], **kwargs: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ, **kwargs)
    return info.value


# ---- the corpus: each bad setting, its key and its exact message -------------------------------

FILE = "{file}"
"""Stands for the config file's absolute path in the expected messages."""

BAD_SETTINGS = [
    pytest.param(
        "online_store: {type: redis_cluser}\n",
        {},
        "online_store.type",
        "invalid setting 'online_store.type' = 'redis_cluser': unknown online_store type; known "
        "types: redis, redis_cluster, sqlite (read from {file})",
        id="unknown-type",
    ),
    pytest.param(
        "online_store: {type: redis}\n",
        {},
        "online_store.url",
        "invalid setting 'online_store.url': missing, and online_store type 'redis' requires it "
        "(read from {file})",
        id="redis-without-url",
    ),
    pytest.param(
        "offline_store: {type: duckdb, threads: many}\n",
        {},
        "offline_store.threads",
        "invalid setting 'offline_store.threads' = 'many': input should be a valid integer, "
        "unable to parse string as an integer (read from {file})",
        id="threads-many",
    ),
    pytest.param(
        "offline_store: {type: duckdb, threads: 0}\n",
        {},
        "offline_store.threads",
        "invalid setting 'offline_store.threads' = 0: input should be greater than or equal to 1 "
        "(read from {file})",
        id="threads-zero",
    ),
    pytest.param(
        None,
        {"POTLUCK_ENGINE__PROGRESS_INTERVAL": "-1"},
        "engine.progress_interval",
        "invalid setting 'engine.progress_interval' = -1: input should be greater than or equal "
        "to 0 (read from environment POTLUCK_ENGINE__PROGRESS_INTERVAL)",
        id="progress-interval-negative",
    ),
    pytest.param(
        "offline_store: {type: duckdb, memory_limit: lots}\n",
        {},
        "offline_store.memory_limit",
        "invalid setting 'offline_store.memory_limit' = 'lots': expected a number and a unit, "
        "such as 4GB or 512MiB (KB, MB, GB, TB for powers of 1000; KiB, MiB, GiB, TiB for powers "
        "of 1024), or a share of RAM such as 80% (read from {file})",
        id="memory-limit-no-number",
    ),
    pytest.param(
        "offline_store: {type: duckdb, memory_limit: '4'}\n",
        {},
        "offline_store.memory_limit",
        "invalid setting 'offline_store.memory_limit' = '4': expected a number and a unit, such "
        "as 4GB or 512MiB (KB, MB, GB, TB for powers of 1000; KiB, MiB, GiB, TiB for powers of "
        "1024), or a share of RAM such as 80% (read from {file})",
        id="memory-limit-no-unit",
    ),
    pytest.param(
        "offline_store: {type: duckdb, memory_limit: 0GB}\n",
        {},
        "offline_store.memory_limit",
        "invalid setting 'offline_store.memory_limit' = '0GB': must be more than 0 "
        "(read from {file})",
        id="memory-limit-zero",
    ),
    pytest.param(
        "offline_store: {type: duckdb, memory_limit: 150%}\n",
        {},
        "offline_store.memory_limit",
        "invalid setting 'offline_store.memory_limit' = '150%': a share of RAM is at most 100% "
        "(read from {file})",
        id="memory-limit-over-100-percent",
    ),
    pytest.param(
        "online_store: {type: sqlite, pth: x.db}\n",
        {},
        "online_store.pth",
        "invalid setting 'online_store.pth' = 'x.db': not a key of online_store type 'sqlite'; "
        "its keys: type, path (read from {file})",
        id="unknown-plugin-key",
    ),
    pytest.param(
        "engine: {progress_interval: 1}\n",
        {},
        "engine.type",
        "invalid setting 'engine.type': missing; every engine names its plug-in with type, one "
        "of: local, spark (read from {file})",
        id="missing-type",
    ),
    pytest.param(
        "registry: postgresql://potluck@db:five/features\n",
        {},
        "registry",
        "invalid setting 'registry' = 'postgresql://potluck@db:five/features': port 'five' is "
        "not a number from 1 to 65535 (read from {file})",
        id="registry-port",
    ),
    pytest.param(
        "registry: .potluck/registry.db\n",
        {},
        "registry",
        "invalid setting 'registry' = '.potluck/registry.db': expected a URL such as "
        "sqlite:///.potluck/registry.db or postgresql://user@host:5432/database (read from {file})",
        id="registry-not-a-url",
    ),
    pytest.param(
        "online_store: {type: redis, url: 'redis://cache:six/0'}\n",
        {},
        "online_store.url",
        "invalid setting 'online_store.url' = 'redis://cache:six/0': port 'six' is not a number "
        "from 1 to 65535 (read from {file})",
        id="redis-port",
    ),
    pytest.param(
        "online_store: {type: redis, url: 'cache:6379'}\n",
        {},
        "online_store.url",
        "invalid setting 'online_store.url' = 'cache:6379': expected redis://host:port/db "
        "(credentials as user:password@ before the host), rediss://... for TLS, or "
        "unix:///path/to/socket (read from {file})",
        id="redis-without-scheme",
    ),
    pytest.param(
        "online_store: {type: redis_cluster, startup_nodes: [nohost]}\n",
        {},
        "online_store.startup_nodes",
        "invalid setting 'online_store.startup_nodes' = ['nohost']: 'nohost': expected "
        "host:port, such as 127.0.0.1:6565 (read from {file})",
        id="cluster-node-without-port",
    ),
    pytest.param(
        "core_url: core:abc\n",
        {},
        "core_url",
        "invalid setting 'core_url' = 'core:abc': port 'abc' is not a number from 1 to 65535 "
        "(read from {file})",
        id="core-url-port",
    ),
    pytest.param(
        "serving_url: http://serving:6566\n",
        {},
        "serving_url",
        "invalid setting 'serving_url' = 'http://serving:6566': expected host:port without a "
        "scheme, such as 127.0.0.1:6565 (read from {file})",
        id="serving-url-scheme",
    ),
    pytest.param(
        "project: rides\n",
        {"POTLUCK_PROJECT": "Rides"},
        "project",
        "invalid setting 'project' = 'Rides': names match [a-z_][a-z0-9_]* (lower-case letters, "
        "digits and underscores, not starting with a digit) (read from {file}, then environment "
        "POTLUCK_PROJECT)",
        id="project-name",
    ),
]


@pytest.mark.parametrize(("text", "environ", "key", "message"), BAD_SETTINGS)
def test_a_bad_setting_fails_when_loaded_naming_key_value_and_sources(
    workdir: Path, text: str | None, environ: dict[str, str], key: str, message: str
) -> None:
    path = workdir / "potluck.yaml"
    if text is not None:
        path.write_text(text)
    error = config_error(environ)
    assert error.message == message.format(file=path)
    read = ((str(path),) if text is not None else ()) + tuple(
        f"environment {name}" for name in sorted(environ)
    )
    assert error.attrs() == {"key": key, "sources": read}


@pytest.mark.parametrize(("text", "environ", "key", "message"), BAD_SETTINGS)
def test_every_command_refuses_a_bad_setting_in_one_line_with_exit_2(
    workdir: Path, text: str | None, environ: dict[str, str], key: str, message: str
) -> None:
    path = workdir / "potluck.yaml"
    if text is not None:
        path.write_text(text)
    (workdir / "defs.yaml").write_text(example_definitions_yaml())
    expected = f"error: {message.format(file=path)}\n"
    for args in (["entities", "list"], ["apply", "-f", "defs.yaml"], ["jobs", "list"]):
        result = runner.invoke(app, args, env=environ)
        assert (result.exit_code, result.stderr, result.stdout) == (2, expected, ""), args
    assert not (workdir / ".potluck").exists()


def test_sources_are_only_those_read_in_order(workdir: Path) -> None:
    other = workdir / "conf" / "team.yaml"
    other.parent.mkdir()
    other.write_text("engine: {type: local, progress_interval: soon}\n")
    error = config_error(
        {
            "POTLUCK_CONFIG": str(other),
            "POTLUCK_PROJECT": "rides",
            "POTLUCK_TEST_REDIS_URL": "redis://127.0.0.1:1/0",  # not a setting: not read
            "OTHER": "x",
        }
    )
    assert error.message == (
        "invalid setting 'engine.progress_interval' = 'soon': input should be a valid number, "
        f"unable to parse string as a number (read from {other}, then environment "
        "POTLUCK_PROJECT)"
    )
    arguments = config_error({}, overrides={"project": "No Spaces", "core_url": None})
    assert arguments.message == (
        "invalid setting 'project' = 'No Spaces': names match [a-z_][a-z0-9_]* (lower-case "
        "letters, digits and underscores, not starting with a digit) (read from arguments)"
    )


def test_valid_forms_load(workdir: Path) -> None:
    (workdir / "potluck.yaml").write_text(
        "registry: 'postgresql://potluck:p%40ss@db.internal:5432/features'\n"
        "online_store: {type: redis, url: 'rediss://:pw@[::1]:6380/2?password=x'}\n"
        "offline_store: {type: duckdb, threads: 2, memory_limit: 512MiB}\n"
        "engine: {type: local, progress_interval: 0}\n"
        "core_url: '[::1]:6565'\n"
        "serving_url: serving.internal:6566\n"
    )
    loaded = load_settings(environ={})
    assert loaded.offline_store == {"type": "duckdb", "threads": 2, "memory_limit": "512MiB"}
    assert (loaded.core_url, loaded.serving_url) == ("[::1]:6565", "serving.internal:6566")
    for limit in ("4GB", "4 gb", "1.5GiB", ".5TB", "80%", "100%"):
        environ = {"POTLUCK_OFFLINE_STORE__MEMORY_LIMIT": limit}
        assert load_settings(environ=environ).offline_store["memory_limit"] == limit


# ---- environment variables and plug-in sections ------------------------------------------------


def test_environment_switches_the_type_beside_the_file_init_writes(workdir: Path) -> None:
    (workdir / "potluck.yaml").write_text(default_config_yaml())
    switched = load_settings(
        environ={
            "POTLUCK_ONLINE_STORE__TYPE": "redis",
            "POTLUCK_ONLINE_STORE__URL": "redis://cache:6379/0",
        }
    )
    assert switched.online_store == {"type": "redis", "url": "redis://cache:6379/0"}
    same_type = load_settings(environ={"POTLUCK_ONLINE_STORE__TYPE": "sqlite"})
    assert same_type.online_store == {"type": "sqlite", "path": ".potluck/online.db"}
    refined = load_settings(environ={"POTLUCK_ONLINE_STORE__PATH": "/data/online.db"})
    assert refined.online_store == {"type": "sqlite", "path": "/data/online.db"}
    leftover = config_error({"POTLUCK_ONLINE_STORE__URL": "redis://cache:6379/0"})
    assert leftover.message == (
        "invalid setting 'online_store.url' = 'redis://cache:6379/0': not a key of online_store "
        f"type 'sqlite'; its keys: type, path (read from {workdir / 'potluck.yaml'}, then "
        "environment POTLUCK_ONLINE_STORE__URL)"
    )


@pytest.mark.redis
def test_cli_runs_on_redis_switched_by_environment_beside_init_files(
    workdir: Path, redis_url: str
) -> None:
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["apply", "-f", "definitions.yaml"]).exit_code == 0
    environ = {"POTLUCK_ONLINE_STORE__TYPE": "redis", "POTLUCK_ONLINE_STORE__URL": redis_url}
    result = runner.invoke(
        app,
        ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1001", "-o", "json"],
        env=environ,
    )
    assert (result.exit_code, result.stderr) == (0, ""), result.stdout
    assert '"driver_stats__conv_rate": [\n      "NOT_FOUND"\n    ]' in result.stdout


SECTION_KEYS = {
    "sqlite": ("path", "a.db"),
    "redis": ("url", "redis://cache:6379/0"),
    "redis_cluster": ("startup_nodes", ["node:7000"]),
}
REQUIRED = {"redis": "url", "redis_cluster": "startup_nodes"}
TYPES = sorted(SECTION_KEYS)


def _reference(file_section: dict[str, Any] | None, env: dict[str, Any]) -> dict[str, Any]:
    """What the online_store section should be: the file's (else the built-in one), replaced
    when the environment names another type, then the environment's keys on top."""
    base = file_section or {"type": "sqlite", "path": ".potluck/online.db"}
    if "type" in env and env["type"] != base["type"]:
        base = {}
    return {**base, **env}


@settings(max_examples=60, deadline=None)
@given(
    file_type=st.sampled_from([None, *TYPES]),
    env_type=st.sampled_from([None, *TYPES]),
    env_sets_key=st.booleans(),
)
def test_environment_overlay_matches_the_reference(
    file_type: str | None, env_type: str | None, env_sets_key: bool, tmp_path_factory: Any
) -> None:
    folder = tmp_path_factory.mktemp("overlay")
    path = folder / "potluck.yaml"
    file_section = None
    if file_type is None:
        path.write_text("project: p\n")
    else:
        key, value = SECTION_KEYS[file_type]
        file_section = {"type": file_type, key: value}
        path.write_text(f"online_store: {file_section}\n")
    final_type = env_type or (file_type or "sqlite")
    env: dict[str, Any] = {} if env_type is None else {"type": env_type}
    environ = {} if env_type is None else {"POTLUCK_ONLINE_STORE__TYPE": env_type}
    if env_sets_key:
        key, value = SECTION_KEYS[final_type]
        env[key] = value
        shown = f"[{', '.join(value)}]" if isinstance(value, list) else value
        environ[f"POTLUCK_ONLINE_STORE__{key.upper()}"] = shown
    expected = _reference(file_section, env)
    required = REQUIRED.get(expected["type"])
    if required is not None and required not in expected:
        with pytest.raises(ConfigError) as info:
            load_settings(path, environ=environ)
        assert info.value.attrs()["key"] == f"online_store.{required}"
    else:
        assert load_settings(path, environ=environ).online_store == expected


# ---- memory_limit: what passes the check, DuckDB accepts ---------------------------------------

MEMORY_TEXT = st.builds(
    "{}{}{}{}".format,
    st.sampled_from(["1", "4", "0.5", ".5", "12.", "512", "0", "-1", "1e3", "x", ""]),
    st.sampled_from(["", " "]),
    st.sampled_from(["GB", "gb", "MiB", "mib", "KB", "TiB", "%", "G", "XB", "bytes", ""]),
    st.sampled_from(["", " "]),
)


@settings(max_examples=80, deadline=None)
@given(text=MEMORY_TEXT)
def test_a_memory_limit_that_passes_the_check_is_one_duckdb_accepts(
    text: str, tmp_path_factory: Any
) -> None:
    path = tmp_path_factory.mktemp("memory") / "potluck.yaml"
    path.write_text("project: p\n")
    try:
        load_settings(path, environ={"POTLUCK_OFFLINE_STORE__MEMORY_LIMIT": repr(text)})
    except ConfigError as exc:
        assert exc.attrs()["key"] == "offline_store.memory_limit"
        return
    with duckdb.connect(":memory:") as db:
        db.execute(f"SET GLOBAL memory_limit = '{text}'")
