"""Project data isolation by default: on where callers authenticate, off for one user.

``data_isolation: auto`` (the default) isolates projects when ``auth`` authenticates callers or
``data_root`` is set; ``on`` always, with ``<root>/<project>`` as each project's root when
``data_root`` is unset; ``off`` never, and a Core with authentication then warns. The Core
service runs as its own process (``potluck core``), as deployed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pandas as pd
import pytest
from _security_support import DRIVER, CoreProcess, core_process, table
from typer.testing import CliRunner

from potluck import Client
from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck.auth.grpc import ClientSecurity
from potluck.auth.settings import AuthSettings
from potluck.auth.tokens import hash_token
from potluck.cli.main import app
from potluck.config import Settings, load_settings
from potluck.definitions.serde import entity_to_proto, feature_table_to_proto
from potluck.errors import ConfigError, DefinitionError
from potluck.registry.isolation import DataIsolation
from potluck.registry.remote import RemoteRegistry

runner = CliRunner()

TOKENS = [
    {
        "name": name,
        "hash": hash_token(f"plk_{name}"),
        "permissions": ["apply", "read_definitions", "run_jobs"],
        "projects": [name],
    }
    for name in ("alpha", "beta")
]

WARNING = (
    "warning: authentication is on but project data isolation is off (data_isolation: off): a "
    "feature table of one project may name another project's folder as its source and read or "
    "overwrite that project's data; remove data_isolation: off (docs/security.md)"
)


def refusal(project: str, name: str, field: str, location: str, allowed: str) -> str:
    return (
        f"feature table {name}: {field} {location!r} is outside the data roots of project "
        f"{project} ({allowed}); move the data under one of them, or ask an administrator to "
        f"run: potluck projects allow-location {project} {location}"
    )


def topic_refusal(project: str, name: str, field: str, topic: str, prefix: str) -> str:
    return (
        f"feature table {name}: {field} {topic!r} does not start with a topic prefix of project "
        f"{project} ({prefix}); use a topic starting with {prefix!r}, or ask an administrator "
        f"to run: potluck projects allow-location {project} kafka:{topic}"
    )


def server_folder(folder: Path, extra: str = "") -> Path:
    folder.mkdir()
    (folder / "potluck.yaml").write_text(
        f"project: alpha\nregistry: sqlite:///registry.db\nauth: {json.dumps({'tokens': TOKENS})}\n"
        + extra
    )
    return folder


@contextmanager
def remote(core: CoreProcess, project: str) -> Iterator[RemoteRegistry]:
    """A registry client of ``core`` sending ``project``'s token."""
    registry = RemoteRegistry(core.address, security=ClientSecurity(token=f"plk_{project}"))
    try:
        yield registry
    finally:
        registry.close()


def client_folder(folder: Path, core: CoreProcess, project: str) -> Path:
    folder.mkdir()
    (folder / "potluck.yaml").write_text(
        f"project: {project}\ncore_url: {core.address}\ntoken: plk_{project}\n"
    )
    return folder


# ---- auth on, data_root unset: isolated under <root>/<project> --------------------------------


@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CoreProcess, Path]]:
    root = server_folder(tmp_path_factory.mktemp("isolation") / "server")
    with core_process(root) as core:
        yield core, root


def test_core_with_auth_refuses_another_projects_folder_as_invalid_argument(
    authed: tuple[CoreProcess, Path],
) -> None:
    core, root = authed
    beta = str(root / "beta" / "stats")
    request = pb.ApplyRequest(
        project="alpha",
        entities=[entity_to_proto(DRIVER)],
        feature_tables=[feature_table_to_proto(table("steal", beta))],
    )
    with grpc.insecure_channel(core.address) as channel, pytest.raises(grpc.RpcError) as refused:
        pb_grpc.CoreServiceStub(channel).Apply(
            request, timeout=10, metadata=(("authorization", "Bearer plk_alpha"),)
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details() == refusal(
        "alpha", "steal", "batch_source.path", beta, str(root / "alpha")
    )
    with remote(core, "alpha") as alpha:
        own = str(root / "alpha" / "stats")
        assert [c.action for c in alpha.apply("alpha", [DRIVER, table("stats", own)])] == [
            "create",
            "create",
        ]
        assert [t.name for t in alpha.list("alpha", "feature_table")] == ["stats"]


def test_core_with_auth_keeps_topics_under_the_projects_prefix(
    authed: tuple[CoreProcess, Path],
) -> None:
    core, _ = authed
    with remote(core, "alpha") as alpha:
        with pytest.raises(DefinitionError) as info:
            alpha.apply("alpha", [DRIVER, table("rides", topic="beta.rides")])
        assert info.value.message == topic_refusal(
            "alpha", "rides", "stream_source.topic", "beta.rides", "alpha."
        )
        assert alpha.apply("alpha", [DRIVER, table("rides", topic="alpha.rides")])[-1].action == (
            "create"
        )


def test_the_cli_against_core_with_auth_exits_2_naming_the_projects_root(
    authed: tuple[CoreProcess, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    core, root = authed
    monkeypatch.chdir(client_folder(tmp_path / "client", core, "alpha"))
    beta = root / "beta" / "trips"
    (tmp_path / "client" / "defs.yaml").write_text(
        "entities:\n  - {name: driver_id, value_type: INT64}\n"
        "feature_tables:\n  - name: trips\n    entities: [driver_id]\n"
        "    features: [{name: trips, value_type: INT64}]\n"
        f"    batch_source: {{path: {beta}, event_timestamp_column: ts}}\n"
    )
    result = runner.invoke(app, ["apply", "defs.yaml"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: defs.yaml, line 5: " + refusal(
        "alpha", "trips", "batch_source.path", str(beta), str(root / "alpha")
    )


def rows(value: int) -> pd.DataFrame:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return pd.DataFrame({"driver_id": [1], "ts": [now], "trips": [value]})


def online_value(client: Client, name: str) -> object:
    client.start_offline_to_online_ingestion(name).wait()
    return client.get_online_features([f"{name}:trips"], [{"driver_id": 1}]).to_dict()[
        f"{name}__trips"
    ][0]


def test_the_probe_through_core_with_auth_is_refused_by_default(
    authed: tuple[CoreProcess, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    core, root = authed
    for project in ("alpha", "beta"):
        client_folder(tmp_path / project, core, project)
    monkeypatch.chdir(tmp_path / "alpha")
    alpha_folder = str(root / "alpha" / "probe")
    with (
        Client(settings=load_settings(tmp_path / "alpha" / "potluck.yaml", environ={})) as alpha,
        Client(settings=load_settings(tmp_path / "beta" / "potluck.yaml", environ={})) as beta,
    ):
        alpha.apply([DRIVER, table("probe", alpha_folder)])
        alpha.ingest("probe", rows(4242))
        assert online_value(alpha, "probe") == 4242
        with pytest.raises(DefinitionError) as info:
            beta.apply([DRIVER, table("steal", alpha_folder)])
        assert info.value.message == refusal(
            "beta", "steal", "batch_source.path", alpha_folder, str(root / "beta")
        )
        assert [t.name for t in beta.list_feature_tables()] == []
        assert online_value(alpha, "probe") == 4242


def test_core_with_auth_prints_no_isolation_warning(authed: tuple[CoreProcess, Path]) -> None:
    core, _ = authed
    assert (
        core.stderr[0]
        == "potluck core: authentication on (bearer tokens), plain connections, no TLS"
    )
    assert WARNING not in core.stderr


# ---- data_isolation: off with auth: allowed, with the warning ---------------------------------


def test_off_with_auth_allows_other_folders_and_core_warns(tmp_path: Path) -> None:
    root = server_folder(tmp_path / "server", "data_isolation: off\n")
    with core_process(root) as core, remote(core, "alpha") as alpha:
        beta = str(root / "beta" / "stats")
        assert alpha.apply("alpha", [DRIVER, table("steal", beta)])[-1].action == "create"
    listening = next(i for i, line in enumerate(core.stderr) if " listening on " in line)
    assert core.stderr[listening + 1] == WARNING


# ---- data_isolation: on without auth ---------------------------------------------------------


def test_on_without_auth_is_enforced_under_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("project: b\ndata_isolation: on\n")
    settings = load_settings(tmp_path / "potluck.yaml", environ={})
    with Client(settings=settings) as b:
        other = str(tmp_path / "a" / "stats")
        with pytest.raises(DefinitionError) as info:
            b.apply([DRIVER, table("steal", other)])
        assert info.value.message == refusal(
            "b", "steal", "batch_source.path", other, str(tmp_path / "b")
        )
        assert b.apply([DRIVER, table("stats", "b/stats")])[-1].action == "create"
    (tmp_path / "defs.yaml").write_text(
        "feature_tables:\n  - name: trips\n    entities: [driver_id]\n"
        "    features: [{name: trips, value_type: INT64}]\n"
        f"    batch_source: {{path: {other}, event_timestamp_column: ts}}\n"
    )
    result = runner.invoke(app, ["apply", "defs.yaml"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "error: defs.yaml, line 3: " + refusal(
        "b", "trips", "batch_source.path", other, str(tmp_path / "b")
    )


# ---- the setting ------------------------------------------------------------------------------

AUTH = AuthSettings(tokens=TOKENS)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "auth", "data_root", "isolated"),
    [
        ("auto", None, None, False),
        ("auto", AUTH, None, True),
        ("auto", AuthSettings(), None, False),  # an auth block without a token source
        ("auto", None, "data", True),
        ("auto", AUTH, "data", True),
        ("on", None, None, True),
        ("on", AUTH, None, True),
        ("on", None, "data", True),
        ("off", None, None, False),
        ("off", AUTH, None, False),
    ],
)
def test_which_settings_isolate_projects(
    tmp_path: Path, mode: str, auth: AuthSettings | None, data_root: str | None, isolated: bool
) -> None:
    settings = Settings(root=tmp_path, data_isolation=mode, auth=auth, data_root=data_root)  # type: ignore[arg-type]
    isolation = DataIsolation.from_settings(settings)
    assert settings.isolates_data is isolated
    if not isolated:
        assert isolation is None
        return
    assert isolation is not None
    expected = tmp_path / (data_root or "") / "alpha"
    assert isolation.roots("alpha") == (str(expected),)
    assert isolation.prefixes("alpha") == ("alpha.",)


def test_auto_without_auth_allows_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("project: b\n")
    with Client(settings=load_settings(tmp_path / "potluck.yaml", environ={})) as b:
        elsewhere = str(tmp_path / "a" / "stats")
        assert b.apply([DRIVER, table("t", elsewhere, topic="a.rides")])[-1].action == "create"


@pytest.mark.parametrize(
    ("text", "environ", "mode"),
    [
        ("data_isolation: off\n", {}, "off"),  # YAML reads a bare off as false
        ("data_isolation: on\n", {}, "on"),
        ("data_isolation: 'auto'\n", {}, "auto"),
        ("", {"POTLUCK_DATA_ISOLATION": "off"}, "off"),
        ("data_isolation: on\n", {"POTLUCK_DATA_ISOLATION": "auto"}, "auto"),
    ],
)
def test_the_setting_reads_from_yaml_and_the_environment(
    tmp_path: Path, text: str, environ: dict[str, str], mode: str
) -> None:
    (tmp_path / "potluck.yaml").write_text(text)
    assert load_settings(tmp_path / "potluck.yaml", environ=environ).data_isolation == mode


def load_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "potluck.yaml").write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "potluck.yaml", environ={})
    return info.value.message


def test_off_with_isolation_settings_is_a_load_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = f"(read from {tmp_path / 'potluck.yaml'})"
    reason = (
        "data_isolation is off, so it would be ignored; remove it, or set data_isolation to on "
        "or auto to keep each project's sources under its data roots"
    )
    assert load_error(tmp_path, "data_isolation: off\ndata_root: /srv\n") == (
        f"invalid setting 'data_root' = '/srv': {reason} {source}"
    )
    assert load_error(tmp_path, "data_isolation: off\ndata_roots: {b: [/srv/b]}\n") == (
        f"invalid setting 'data_roots' = {{'b': ['/srv/b']}}: {reason} {source}"
    )
    assert load_error(tmp_path, "data_isolation: off\ntopic_prefixes: {b: [b.]}\n") == (
        f"invalid setting 'topic_prefixes' = {{'b': ['b.']}}: {reason} {source}"
    )
    assert load_error(tmp_path, "data_isolation: sometimes\n") == (
        f"invalid setting 'data_isolation' = 'sometimes': input should be 'auto', 'on' or 'off' "
        f"{source}"
    )
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("data_isolation: off\ndata_root: /srv\n")
    result = runner.invoke(app, ["projects", "list"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: invalid setting 'data_root' = '/srv': {reason} {source}"
    )


def test_data_roots_and_topic_prefixes_need_isolation_on(tmp_path: Path) -> None:
    reason = (
        "it takes effect only with project data isolation on, and data_isolation: auto is on "
        "only when auth authenticates callers (tokens_file, tokens or jwt) or data_root is set; "
        "set data_isolation: on (or data_root) too"
    )
    assert load_error(tmp_path, "topic_prefixes: {b: [b.]}\n") == (
        f"invalid setting 'topic_prefixes' = {{'b': ['b.']}}: {reason} "
        f"(read from {tmp_path / 'potluck.yaml'})"
    )
    (tmp_path / "potluck.yaml").write_text(
        "data_isolation: on\ndata_roots: {b: [/srv/b]}\ntopic_prefixes: {b: [rides.]}\n"
    )
    on = DataIsolation.from_settings(load_settings(tmp_path / "potluck.yaml", environ={}))
    assert on is not None
    assert (on.roots("b"), on.prefixes("b")) == (("/srv/b",), ("rides.",))
    assert on.roots("a") == (str(tmp_path / "a"),)
    (tmp_path / "potluck.yaml").write_text(
        f"auth: {json.dumps({'tokens': TOKENS})}\ndata_roots: {{b: [/srv/b]}}\n"
    )
    authed = DataIsolation.from_settings(load_settings(tmp_path / "potluck.yaml", environ={}))
    assert authed is not None
    assert authed.roots("b") == ("/srv/b",)
