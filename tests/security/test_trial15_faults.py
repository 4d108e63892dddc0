"""Faults a tester found in the security work (trial 15), each fixed as a kind.

1. Core's ``RecordDenial`` accepts only what a server could have denied, bounded, and records the
   reporter in a field of its own; ``potluck audit`` lines stay short.
2. and 3. A batch source location is stored or refused by one rule on every route (the SDK,
   ``potluck apply``, Core's Apply and Plan, Feast 0.9's ApplyFeatureTable): control characters,
   over-long paths and other hosts are one DefinitionError naming the table and field, with or
   without isolation; ``file://`` URLs are decoded the same everywhere.
4. ``potluck projects describe`` through Core shows the roots Core enforces.
5. ``allow-location`` and the ``data_roots`` setting refuse locations naming everything.
6. Refusals of relative paths and of topics say what to do.
7. The CLI names the project of a denied first call; ``auth token create`` shows its project
   limit; ``describe`` shows ISO 8601 UTC times.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
from _security_support import DRIVER, table
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from potluck import Client
from potluck._proto.feast.core import CoreService_pb2 as feast_pb
from potluck._proto.feast.core import CoreService_pb2_grpc as feast_grpc
from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import core_service_pb2_grpc as pb_grpc
from potluck.auth.grpc import ClientSecurity
from potluck.auth.settings import AuthSettings
from potluck.auth.tokens import hash_token
from potluck.cli.audit import MAX_CELL_CHARS
from potluck.cli.main import app
from potluck.compat.feast09.core import add_core_service
from potluck.compat.feast09.definitions import entity_spec_to_feast, feature_table_spec_to_feast
from potluck.config import load_settings
from potluck.definitions.serde import entity_to_proto, feature_table_to_proto
from potluck.definitions.sources import resolve_source_path
from potluck.errors import ConfigError, DefinitionError, ValidationError
from potluck.registry.isolation import DataIsolation
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import CoreServer, start_core_server
from potluck.registry.sql import SqlRegistry

runner = CliRunner()

APPLY = "/potluck.core.v1.CoreService/Apply"
ARCHIVE = "/potluck.core.v1.CoreService/ArchiveProject"


def _token(name: str, permissions: list[str], projects: list[str] | None = None) -> dict:
    entry: dict = {"name": name, "hash": hash_token(f"plk_{name}"), "permissions": permissions}
    if projects is not None:
        entry["projects"] = projects
    return entry


TOKENS = [
    _token("admin", ["admin"]),
    _token("rd", ["record_denials"]),
    _token("onl", ["read_online"], ["alpha"]),
]


@dataclass(frozen=True)
class Core:
    server: CoreServer
    registry: SqlRegistry
    root: Path


def _core(folder: Path, isolation: DataIsolation | None, auth: AuthSettings | None) -> Core:
    registry = SqlRegistry(f"sqlite:///{folder / 'registry.db'}", isolation=isolation)
    for name in ("alpha", "beta"):
        registry.create_project(name)
    server = start_core_server(registry, services=[add_core_service], auth=auth)
    return Core(server, registry, folder)


@pytest.fixture(scope="module")
def open_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    """A Core with Feast's Core API, no authentication and no isolation."""
    core = _core(tmp_path_factory.mktemp("open-core"), None, None)
    yield core
    core.server.stop(None)
    core.registry.close()


@pytest.fixture(scope="module")
def authed_core(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Core]:
    """A Core with tokens and each project isolated under <root>/data/<project>."""
    folder = tmp_path_factory.mktemp("authed-core")
    isolation = DataIsolation(data_root=str(folder / "data"), data_roots={}, topic_prefixes={})
    core = _core(folder, isolation, AuthSettings(tokens=TOKENS))  # type: ignore[arg-type]
    yield core
    core.server.stop(None)
    core.registry.close()


def _bearer(name: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer plk_{name}"),)


def _abort(call: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    return call.code(), call.details()  # type: ignore[attr-defined]


# ---- 1. RecordDenial --------------------------------------------------------------------------


def _report(core: Core, **fields: str) -> tuple[grpc.StatusCode, str]:
    with grpc.insecure_channel(core.server.address) as channel:
        stub = pb_grpc.CoreServiceStub(channel)
        try:
            stub.RecordDenial(pb.RecordDenialRequest(**fields), metadata=_bearer("rd"), timeout=10)
        except grpc.RpcError as exc:
            return _abort(exc)
    return grpc.StatusCode.OK, ""


GOOD = {"actor": "token:onl", "project": "alpha", "permission": "apply", "method": APPLY}

REFUSED_REPORTS = [
    (
        {},
        "actor: '' is not a caller's identity; a denial names the caller as potluck's audit log "
        "does: token:NAME or jwt:SUBJECT",
    ),
    (
        {"actor": "admin"},
        "actor: 'admin' is not a caller's identity; a denial names the caller as potluck's audit "
        "log does: token:NAME or jwt:SUBJECT",
    ),
    (
        {"actor": "token:" + "a" * 100_000},
        f"actor: {'token:' + 'a' * 54!r}... (100006 characters) is 100006 characters; the most "
        "is 256",
    ),
    (
        {"actor": "token:a\nb"},
        "actor: 'token:a\\nb' cannot name a caller: it holds the control character '\\n'",
    ),
    (
        {"method": "/x.Y/" + "Z" * 1_000_000},
        f"method: {'/x.Y/' + 'Z' * 55!r}... (1000005 characters) is 1000005 characters; the "
        "most is 512",
    ),
    (
        {"method": "/x.Y/Z"},
        "method: '/x.Y/Z' is no call of a service potluck serves; give the gRPC method "
        "(/potluck.core.v1.CoreService/Apply) or the HTTP request (POST /get-online-features) "
        "that was denied",
    ),
    (
        {"method": "POST /x\n(reported by token:admin)"},
        "method: 'POST /x\\n(reported by token:admin)' is no call of a service potluck serves; "
        "give the gRPC method (/potluck.core.v1.CoreService/Apply) or the HTTP request (POST "
        "/get-online-features) that was denied",
    ),
    (
        {"permission": "bogus"},
        f"permission: 'bogus' is not the permission {APPLY} needs; a denial of {APPLY} reports "
        "'apply'",
    ),
    (
        {"method": ARCHIVE, "permission": "apply"},
        f"permission: 'apply' is not the permission {ARCHIVE} needs; a denial of {ARCHIVE} "
        "reports 'admin'",
    ),
    (
        {"project": ""},
        f"project: empty; {APPLY} acts on one project, so its denial must name it",
    ),
    (
        {"project": "nosuch"},
        "project: 'nosuch' does not exist; a denial is recorded for an existing project (or "
        "none, for a method that acts on no project)",
    ),
    (
        {"project": "Bad Name"},
        "project: invalid name 'Bad Name'; names match [a-z_][a-z0-9_]* (lower-case letters, "
        "digits and underscores, not starting with a digit)",
    ),
]


@pytest.mark.parametrize(("changes", "message"), REFUSED_REPORTS)
def test_record_denial_refuses_what_no_server_could_report(
    authed_core: Core, changes: dict[str, str], message: str
) -> None:
    fields = {} if not changes else {**GOOD, **changes}
    assert _report(authed_core, **fields) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def _denials(registry: SqlRegistry, actor: str) -> list[dict[str, object]]:
    return [
        {"project": e.project, "target": e.target, **e.change}
        for e in registry.audit_log(limit=1000)
        if e.actor == actor and e.action == "permission_denied"
    ]


def test_record_denial_keeps_the_reporter_apart_from_the_denied_caller(
    authed_core: Core,
) -> None:
    repeated = f"{APPLY} (denied 3 more times in 10 s)"
    for method, permission, project in [
        (APPLY, "apply", "alpha"),
        (repeated, "apply", "beta"),
        ("/potluck.core.v1.CoreService/ListProjects", "read_definitions", ""),
        ("POST /get-online-features", "read_online", "alpha"),
        ("GET /metrics", "read_online", ""),
    ]:
        fields = {"actor": "jwt:svc-1", "method": method}
        assert _report(authed_core, **fields, permission=permission, project=project) == (
            grpc.StatusCode.OK,
            "",
        )
    assert _denials(authed_core.registry, "jwt:svc-1") == [
        {"project": "", "target": "read_online", "method": "GET /metrics",
         "reported_by": "token:rd"},
        {"project": "alpha", "target": "read_online", "method": "POST /get-online-features",
         "reported_by": "token:rd"},
        {"project": "", "target": "read_definitions",
         "method": "/potluck.core.v1.CoreService/ListProjects", "reported_by": "token:rd"},
        {"project": "beta", "target": "apply", "method": repeated, "reported_by": "token:rd"},
        {"project": "alpha", "target": "apply", "method": APPLY, "reported_by": "token:rd"},
    ]  # fmt: skip


def test_audit_shows_the_reporter_and_cuts_long_cells(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("project: alpha\nregistry: sqlite:///registry.db\n")
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.record_denial("token:onl", "alpha", "apply", APPLY, reported_by="token:rd")
    registry.record_denial("token:" + "a" * 100_000, "alpha", "apply", "/x/" + "M" * 1_000_000)
    registry.close()
    shown = runner.invoke(app, ["audit", "--limit", "12"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert len(shown.stdout.splitlines()) < 30
    assert f"{APPLY}; reported by token:rd" in shown.stdout
    assert f"... ({1_000_003 - MAX_CELL_CHARS} more characters)" in shown.stdout.replace("│", "")
    whole = json.loads(runner.invoke(app, ["audit", "-o", "json"]).stdout)
    assert whole[1]["change"] == {"method": APPLY, "reported_by": "token:rd"}


# ---- 2 and 3. one rule for a source location on every route ----------------------------------


def _spec_proto(path: str) -> pb.ApplyRequest:
    msg = feature_table_to_proto(table("t", "/placeholder"))
    msg.batch_source.path = path
    return pb.ApplyRequest(
        project="alpha", entities=[entity_to_proto(DRIVER)], feature_tables=[msg]
    )


def _via_core(core: Core, path: str, method: str) -> str:
    """Apply (or plan) a table over ``path`` through Core; the stored path, or the refusal."""
    with grpc.insecure_channel(core.server.address) as channel:
        stub = pb_grpc.CoreServiceStub(channel)
        try:
            getattr(stub, method)(_spec_proto(path), metadata=_bearer("admin"), timeout=10)
        except grpc.RpcError as exc:
            code, details = _abort(exc)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            return details
    if method == "Plan":
        return "planned"
    return _stored(core.registry)


def _via_feast(core: Core, path: str) -> str:
    spec = feature_table_spec_to_feast(table("t", "/placeholder"))
    spec.batch_source.file_options.file_url = path
    with grpc.insecure_channel(core.server.address) as channel:
        stub = feast_grpc.CoreServiceStub(channel)
        try:
            stub.ApplyEntity(
                feast_pb.ApplyEntityRequest(
                    project="alpha",
                    spec=entity_spec_to_feast(DRIVER),
                ),
                metadata=_bearer("admin"),
                timeout=10,
            )
            stub.ApplyFeatureTable(
                feast_pb.ApplyFeatureTableRequest(project="alpha", table_spec=spec),
                metadata=_bearer("admin"),
                timeout=10,
            )
        except grpc.RpcError as exc:
            code, details = _abort(exc)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            return details.replace("batch_source.file_options.file_url", "batch_source.path")
    return _stored(core.registry)


def _stored(registry: SqlRegistry) -> str:
    stored = registry.get("alpha", "feature_table", "t")
    registry.delete("alpha", "feature_table", "t")
    assert stored.batch_source is not None  # type: ignore[union-attr]
    return stored.batch_source.path  # type: ignore[union-attr]


def _via_sdk(folder: Path, path: str) -> str:
    settings_ = load_settings(folder / "potluck.yaml", environ={})
    with Client(settings=settings_) as client:
        try:
            client.apply([DRIVER, table("t", path)])
        except DefinitionError as exc:
            return exc.message
        stored = client.get_feature_table("t")
        client.delete_feature_table("t")
    assert stored.batch_source is not None
    return stored.batch_source.path


def _via_cli(folder: Path, path: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(folder)
    (folder / "defs.yaml").write_text(
        "entities:\n  - {name: driver_id, value_type: INT64}\n"
        "feature_tables:\n  - name: t\n    entities: [driver_id]\n"
        "    features: [{name: trips, value_type: INT64}]\n"
        f"    batch_source: {{path: {json.dumps(path)}, event_timestamp_column: ts}}\n"
    )
    result = runner.invoke(app, ["apply", "defs.yaml"])
    if result.exit_code == 2:
        found = re.fullmatch(r"error: defs\.yaml, line \d+: (.*)\n", result.stderr, re.S)
        assert found, result.stderr
        return found[1]
    assert result.exit_code == 0, result.output
    return _via_sdk_stored(folder)


def _via_sdk_stored(folder: Path) -> str:
    with Client(settings=load_settings(folder / "potluck.yaml", environ={})) as client:
        stored = client.get_feature_table("t")
        client.delete_feature_table("t")
    assert stored.batch_source is not None
    return stored.batch_source.path


NUL = "holds the control character '\\x00'; a path cannot hold control characters (NUL, newline, tab ...): name the folder without them"  # noqa: E501

CORPUS = [
    ("file:///D/beta/%2e%2e/alpha/x", "/D/alpha/x"),
    ("file://localhost/D/a%20b/", "/D/a b"),
    ("/D/./x/../y/", "/D/y"),
    ("//D/y", "/D/y"),
    ("file:///tmp/x/beta/%00/x",
     f"feature table t: batch_source.path: 'file:///tmp/x/beta/%00/x' {NUL}"),
    ("/tmp/x/\x00/x", f"feature table t: batch_source.path: '/tmp/x/\\x00/x' {NUL}"),
    (
        "/tmp/x\ny",
        "feature table t: batch_source.path: '/tmp/x\\ny' holds the control character '\\n'; "
        "a path cannot hold control characters (NUL, newline, tab ...): name the folder without "
        "them",
    ),
    (
        "/tmp/" + "a" * 300,
        f"feature table t: batch_source.path: {'/tmp/' + 'a' * 75!r}... (305 characters) has a "
        f"part of 300 bytes ({'a' * 80!r}... (300 characters)); a file or folder name may be at "
        "most 255 bytes: use shorter names",
    ),
    (
        "/t" * 2100,
        f"feature table t: batch_source.path: {'/t' * 40!r}... (4200 characters) is 4200 bytes "
        "long; a path may be at most 4095 bytes: use a shorter path",
    ),
    (
        "file://nas/data",
        "feature table t: batch_source.path: 'file://nas/data' names the host 'nas'; a file URL "
        "must name a folder on this machine (file:///absolute/folder); use the mounted folder's "
        "path or an object store URL",
    ),
]  # fmt: skip


@pytest.fixture
def local_folder(tmp_path: Path) -> Path:
    (tmp_path / "potluck.yaml").write_text("project: alpha\nregistry: sqlite:///registry.db\n")
    return tmp_path


@pytest.mark.parametrize(("path", "expected"), CORPUS)
def test_every_route_stores_or_refuses_a_location_alike(
    open_core: Core,
    local_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    path: str,
    expected: str,
) -> None:
    results = {
        "sdk": _via_sdk(local_folder, path),
        "cli": _via_cli(local_folder, path, monkeypatch),
        "core Apply": _via_core(open_core, path, "Apply"),
        "core Plan": _via_core(open_core, path, "Plan"),
        "feast ApplyFeatureTable": _via_feast(open_core, path),
    }
    if expected.startswith("feature table"):
        assert results == dict.fromkeys(results, expected)
    else:
        assert results == {**dict.fromkeys(results, expected), "core Plan": "planned"}


def test_isolation_refuses_the_decoded_location_on_every_route(authed_core: Core) -> None:
    beta = authed_core.root / "data" / "beta"
    sneaky = f"file://{beta}/%2e%2e/alpha/x"
    inside = str(authed_core.root / "data" / "alpha" / "x")
    assert _via_core(authed_core, sneaky, "Apply") == _via_feast(authed_core, sneaky) == inside
    outside = f"file://{authed_core.root}/data/alpha/%2e%2e/beta/x"
    refusal = _via_core(authed_core, outside, "Apply")
    assert refusal == _via_feast(authed_core, outside)
    assert refusal.startswith(f"feature table t: batch_source.path '{beta}/x' is outside the ")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.sampled_from(["", "file://", "file://localhost", "s3://b"]))
def test_resolving_any_text_stores_a_path_or_refuses_it_as_a_definition_error(
    text: str, scheme: str
) -> None:
    try:
        resolved = resolve_source_path(scheme + text, "/root")
    except DefinitionError as exc:
        assert exc.field == "batch_source.path"
    else:
        assert "\x00" not in resolved
        assert resolve_source_path(resolved, "/root") == resolved


# ---- 4, 5 and 6. data roots, allowed locations, refusal texts ---------------------------------


def test_core_answers_the_roots_it_enforces_and_describe_shows_them(
    authed_core: Core, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = str(authed_core.root / "data" / "alpha")
    remote = RemoteRegistry(authed_core.server.address, security=ClientSecurity(token="plk_admin"))
    try:
        assert remote.data_roots("alpha") == (alpha, "kafka:alpha.")
    finally:
        remote.close()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text(
        f"project: alpha\ncore_url: {authed_core.server.address}\ntoken: plk_admin\n"
    )
    shown = json.loads(runner.invoke(app, ["projects", "describe", "alpha", "-o", "json"]).stdout)
    assert shown["data_roots"] == [alpha, "kafka:alpha."]
    created = datetime.strptime(shown["created_at"], "%Y-%m-%dT%H:%M:%S.%fZ")
    assert abs(created.replace(tzinfo=timezone.utc) - datetime.now(timezone.utc)) < timedelta(
        minutes=10
    )
    table_view = runner.invoke(app, ["projects", "describe", "alpha"], env={"COLUMNS": "200"})
    assert alpha in table_view.stdout
    assert shown["created_at"].replace(".", "")[:19] in table_view.stdout.replace(".", "")


@pytest.mark.parametrize(
    ("location", "message"),
    [
        (
            "s3://",
            "location: 's3://' names no bucket or host, so it would cover every bucket: give "
            "s3://BUCKET or s3://BUCKET/PREFIX",
        ),
        (
            "s3:///",
            "location: 's3:///' names no bucket or host, so it would cover every bucket: give "
            "s3://BUCKET or s3://BUCKET/PREFIX",
        ),
        (
            "file:///",
            "location: 'file:///' is the whole file system; allowing it would let the project's "
            "tables read and overwrite every project's data; allow the narrowest folder they need",
        ),
        (
            "/srv/\x00",
            "location: '/srv/\\x00' holds the control character '\\x00'; a path cannot hold "
            "control characters (NUL, newline, tab ...): name the folder without them",
        ),
        (
            "kafka:a b",
            "location: 'kafka:a b' is not kafka: and a topic prefix (1-249 letters, digits, '.', "
            "'_' or '-')",
        ),
    ],
)
def test_allow_location_refuses_what_names_everything_on_every_route(
    authed_core: Core,
    local_folder: Path,
    monkeypatch: pytest.MonkeyPatch,
    location: str,
    message: str,
) -> None:
    with pytest.raises(ValidationError) as direct:
        authed_core.registry.allow_location("beta", location)
    assert direct.value.message == message
    with grpc.insecure_channel(authed_core.server.address) as channel:
        stub = pb_grpc.CoreServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raw:
            stub.AllowLocation(
                pb.AllowLocationRequest(project="beta", location=location),
                metadata=_bearer("admin"),
                timeout=10,
            )
    assert _abort(raw.value) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    monkeypatch.chdir(local_folder)
    runner.invoke(app, ["projects", "create", "beta"])
    result = runner.invoke(app, ["projects", "allow-location", "beta", location])
    assert (result.exit_code, result.stderr.strip()) == (2, f"error: {message}")
    assert authed_core.registry.list_allowed_locations("beta") == []


def test_allowed_locations_are_stored_normalised_whoever_sends_them(authed_core: Core) -> None:
    allowed = authed_core.registry.allow_location("alpha", "file:///srv/x/../shared/")
    assert allowed.location == "/srv/shared"


@pytest.mark.parametrize(
    ("roots", "message"),
    [
        ("[/]", "data_roots.alpha: '/' is the whole file system"),
        ("[s3://]", "data_roots.alpha: 's3://' names no bucket or host"),
    ],
)
def test_the_data_roots_setting_follows_the_allow_location_rule(
    tmp_path: Path, roots: str, message: str
) -> None:
    (tmp_path / "potluck.yaml").write_text(
        f"project: alpha\ndata_isolation: on\ndata_roots: {{alpha: {roots}}}\n"
    )
    loaded = load_settings(tmp_path / "potluck.yaml", environ={})
    with pytest.raises(ConfigError) as info:
        DataIsolation.from_settings(loaded)
    assert info.value.message.startswith(message)
    assert info.value.attrs()["key"] == "data_roots.alpha"


def test_core_says_relative_paths_are_not_accepted_and_topics_name_their_prefix(
    authed_core: Core,
) -> None:
    relative = (
        "feature table t: batch_source.path: 'alpha/stats' is a relative path; Core and the "
        "other servers do not accept relative paths (they cannot know the client's project "
        "root): send an absolute folder or a URL (potluck apply and the SDK resolve relative "
        "paths against the project root)"
    )
    assert _via_core(authed_core, "alpha/stats", "Apply") == relative
    assert _via_core(authed_core, "alpha/stats", "Plan") == relative
    assert _via_feast(authed_core, "alpha/stats") == relative
    request = _spec_proto(str(authed_core.root / "data" / "alpha" / "t"))
    request.feature_tables[0].stream_source.CopyFrom(
        feature_table_to_proto(table("t", topic="beta.rides")).stream_source
    )
    with (
        grpc.insecure_channel(authed_core.server.address) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.CoreServiceStub(channel).Apply(request, metadata=_bearer("admin"), timeout=10)
    assert _abort(refused.value) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "feature table t: stream_source.topic 'beta.rides' does not start with a topic prefix "
        "of project alpha (alpha.); use a topic starting with 'alpha.', or ask an administrator "
        "to run: potluck projects allow-location alpha kafka:beta.rides",
    )


# ---- 7. messages ------------------------------------------------------------------------------


def test_a_denied_project_check_names_the_project_and_token_create_shows_its_limit(
    authed_core: Core, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text(
        f"project: alpha\ncore_url: {authed_core.server.address}\ntoken: plk_onl\n"
    )
    result = runner.invoke(app, ["jobs", "list"])
    # the in-process Core's own log line of the refusal comes first
    assert (result.exit_code, result.stderr.strip().splitlines()[-1]) == (
        1,
        "error: permission denied: 'onl' lacks the 'read_definitions' permission, which the "
        "command needs on project 'alpha' (it first checks that the project exists)",
    )
    tokens = tmp_path / "tokens.yaml"
    args = ["auth", "token", "create", "cia", "--permission", "apply"]
    created = runner.invoke(
        app, [*args, "--project", "alpha", "--project", "beta", "--tokens-file", str(tokens)]
    )
    assert created.exit_code == 0, created.stderr
    assert created.stderr.startswith(
        "created token 'cia' (apply; only on projects alpha, beta); its hash is in "
    )
