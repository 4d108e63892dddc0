"""Settings resolve once: built-in defaults, then potluck.yaml, then POTLUCK_* environment
variables, then explicit arguments; bad input is a ConfigError naming the key and every source."""

from __future__ import annotations

from pathlib import Path

import pydantic
import pytest

from potluck.config import SETTING_NAMES, Settings, load_settings
from potluck.errors import ConfigError

KNOWN = (
    "project, registry, online_store, offline_store, engine, kafka, core_url, serving_url, "
    "job_service_url, staging_location, staging_max_age, auth, token, "
    "token_file, core_secure, serving_secure, job_service_secure, ca_file, client_cert_file, "
    "client_key_file, data_isolation, data_root, data_roots, topic_prefixes"
)


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder (no potluck.yaml) to run in."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def config_error(**kwargs: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_settings(**kwargs)
    return info.value


def test_without_a_file_every_setting_has_its_default(workdir: Path) -> None:
    settings = load_settings(environ={})
    assert settings.model_dump(exclude={"root", "config_file", "sources"}) == {
        "project": "default",
        "registry": "sqlite:///.potluck/registry.db",
        "online_store": {"type": "sqlite", "path": ".potluck/online.db"},
        "offline_store": {"type": "duckdb"},
        "engine": {"type": "local"},
        "kafka": {},
        "core_url": None,
        "serving_url": None,
        "job_service_url": None,
        "staging_location": None,
        "staging_max_age": None,
        "auth": None,
        "token": None,
        "token_file": None,
        "core_secure": False,
        "serving_secure": False,
        "job_service_secure": False,
        "ca_file": None,
        "client_cert_file": None,
        "client_key_file": None,
        "data_isolation": "auto",
        "data_root": None,
        "data_roots": {},
        "topic_prefixes": {},
    }
    assert (settings.sources, settings.config_file) == ((), None)
    assert settings.root == workdir
    assert settings.registry_url == f"sqlite:///{workdir}/.potluck/registry.db"
    assert set(SETTING_NAMES) == set(Settings.model_fields) - {"root", "config_file", "sources"}


def test_a_file_sets_values_and_becomes_the_root_for_relative_paths(workdir: Path) -> None:
    path = write(
        workdir / "conf" / "potluck.yaml",
        """
project: rides
registry: sqlite:///state/registry.db
online_store: {type: redis, url: "redis://127.0.0.1:6379/0"}
engine: {type: local, progress_interval: 2}
core_url: "core:6565"
""",
    )
    settings = load_settings(path, environ={})
    assert settings.project == "rides"
    assert settings.online_store == {"type": "redis", "url": "redis://127.0.0.1:6379/0"}
    assert settings.engine == {"type": "local", "progress_interval": 2}
    assert settings.core_url == "core:6565"
    assert settings.offline_store == {"type": "duckdb"}
    assert settings.root == workdir / "conf"
    assert (settings.sources, settings.config_file) == ((str(path),), path)
    assert settings.registry_url == f"sqlite:///{workdir}/conf/state/registry.db"
    assert settings.resolve_path("data") == workdir / "conf" / "data"
    assert settings.resolve_path("/abs/data") == Path("/abs/data")


def test_the_file_is_found_in_the_working_folder_or_through_potluck_config(
    workdir: Path,
) -> None:
    write(workdir / "potluck.yaml", "project: here\n")
    other = write(workdir / "elsewhere" / "custom.yaml", "project: there\n")
    assert load_settings(environ={}).project == "here"
    chosen = load_settings(environ={"POTLUCK_CONFIG": str(other)})
    assert (chosen.project, chosen.sources) == ("there", (str(other),))
    assert load_settings(other, environ={"POTLUCK_CONFIG": "ignored.yaml"}).project == "there"


def test_environment_variables_overlay_the_file_key_by_key(workdir: Path) -> None:
    path = write(
        workdir / "potluck.yaml",
        "project: rides\nonline_store: {type: redis, url: 'redis://a:1/0'}\n",
    )
    settings = load_settings(
        path,
        environ={
            "POTLUCK_ONLINE_STORE__URL": "redis://b:2/0",
            "POTLUCK_PROJECT": "maps",
            "POTLUCK_TEST_POSTGRES_URL": "postgresql://ignored",  # not a setting: ignored
            "POTLUCK_UNKNOWN": "x",
            "OTHER_PROJECT": "x",
        },
    )
    assert settings.online_store == {"type": "redis", "url": "redis://b:2/0"}
    assert settings.project == "maps"
    assert settings.sources == (
        str(path),
        "environment POTLUCK_ONLINE_STORE__URL",
        "environment POTLUCK_PROJECT",
    )


def test_environment_values_are_read_as_yaml_scalars(workdir: Path) -> None:
    settings = load_settings(
        environ={
            "POTLUCK_OFFLINE_STORE__THREADS": "4",
            "POTLUCK_OFFLINE_STORE__NATIVE_LOCAL_READS": "false",
            "POTLUCK_ONLINE_STORE": "{type: redis_cluster, startup_nodes: [a:7000, b:7001]}",
            "POTLUCK_CORE_URL": "null",
        }
    )
    assert settings.offline_store == {"type": "duckdb", "threads": 4, "native_local_reads": False}
    assert settings.online_store == {"type": "redis_cluster", "startup_nodes": ["a:7000", "b:7001"]}
    assert settings.core_url is None


def test_text_settings_keep_environment_text_that_yaml_would_change(workdir: Path) -> None:
    settings = load_settings(environ={"POTLUCK_PROJECT": "no", "POTLUCK_CORE_URL": "[::1]:6565"})
    assert (settings.project, settings.core_url) == ("no", "[::1]:6565")


def test_one_environment_key_refines_the_default_section(workdir: Path) -> None:
    path_only = load_settings(environ={"POTLUCK_ONLINE_STORE__PATH": "/tmp/online.db"})
    assert path_only.online_store == {"type": "sqlite", "path": "/tmp/online.db"}
    other_type = load_settings(
        environ={
            "POTLUCK_ONLINE_STORE__TYPE": "redis",
            "POTLUCK_ONLINE_STORE__URL": "redis://h:1/0",
        }
    )
    assert other_type.online_store == {"type": "redis", "url": "redis://h:1/0"}


def test_arguments_win_over_everything_and_none_means_not_given(workdir: Path) -> None:
    settings = load_settings(
        environ={"POTLUCK_PROJECT": "env", "POTLUCK_CORE_URL": "env:1"},
        overrides={"project": "arg", "core_url": None},
    )
    assert (settings.project, settings.core_url) == ("arg", "env:1")
    assert settings.sources[-1] == "arguments"


def test_settings_are_frozen(workdir: Path) -> None:
    settings = load_settings(environ={})
    with pytest.raises(pydantic.ValidationError):
        settings.project = "other"


def test_registry_urls_other_than_relative_sqlite_files_are_kept(workdir: Path) -> None:
    for url in (
        "sqlite:////abs/registry.db",
        "sqlite:///:memory:",
        "postgresql://potluck@db:5432/potluck",
    ):
        assert load_settings(environ={"POTLUCK_REGISTRY": url}).registry_url == url


def test_malformed_yaml_is_one_line_naming_the_file_and_position(workdir: Path) -> None:
    path = write(workdir / "potluck.yaml", "project: [unclosed\n")
    error = config_error(path=path, environ={})
    assert error.message == (
        f"config file {path} is not valid YAML: expected ',' or ']', but got '<stream end>' "
        "(line 2, column 1)"
    )
    assert (error.key, error.sources) == ("config", (str(path),))


def test_a_file_that_is_not_a_mapping_is_rejected(workdir: Path) -> None:
    path = write(workdir / "potluck.yaml", "- project\n")
    assert config_error(path=path, environ={}).message == (
        f"config file {path} must hold a mapping of settings, got list"
    )


def test_a_missing_file_is_named(workdir: Path) -> None:
    error = config_error(path=workdir / "nope.yaml", environ={})
    assert error.message == (
        f"cannot read config file {workdir / 'nope.yaml'}: No such file or directory"
    )


def test_an_unknown_key_is_named_with_the_known_ones(workdir: Path) -> None:
    path = write(workdir / "potluck.yaml", "projekt: rides\n")
    error = config_error(path=path, environ={})
    assert error.message == f"unknown setting 'projekt' in {path}; known settings: {KNOWN}"
    assert error.key == "projekt"


def test_an_invalid_value_lists_every_source_in_order(workdir: Path) -> None:
    path = write(workdir / "potluck.yaml", "project: rides\n")
    error = config_error(path=path, environ={"POTLUCK_ENGINE": "[local]"})
    assert error.message == (
        f"invalid setting 'engine' = ['local']: input should be a valid dictionary (read from "
        f"{path}, then environment POTLUCK_ENGINE)"
    )
    assert error.key == "engine"
    assert error.sources == (str(path), "environment POTLUCK_ENGINE")


def test_a_plugin_section_needs_a_type(workdir: Path) -> None:
    path = write(workdir / "potluck.yaml", "online_store: {path: x.db}\n")
    error = config_error(path=path, environ={})
    assert error.message == (
        "invalid setting 'online_store.type': missing; every online_store names its plug-in "
        f"with type, one of: redis, redis_cluster, sqlite (read from {path})"
    )
    assert error.key == "online_store.type"
