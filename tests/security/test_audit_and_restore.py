"""Restoring archived projects, and the audit log: who changed what, when, on every registry.

Registries: SQLite, PostgreSQL, and RemoteRegistry through a Core server (whose entries name the
peer, since authentication is off there). The CLI commands run in-process through CliRunner.
"""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from _security_support import BACKENDS, DRIVER, open_registry, table
from typer.testing import CliRunner

from potluck.auth.identity import Caller, acting_as
from potluck.cli.main import app
from potluck.errors import NotFoundError, ValidationError
from potluck.registry import _schema
from potluck.registry.audit import record_denial
from potluck.registry.base import JobRecord, Registry
from potluck.registry.sql import SqlRegistry

LOCAL = f"local:{getpass.getuser()}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture()
def registry(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with open_registry(backend, request, tmp_path, None) as reg:
        yield reg


def test_an_archived_project_is_restored_and_its_owner_applies_again(registry: Registry) -> None:
    registry.apply("p", [DRIVER])
    registry.archive_project("p")
    with pytest.raises(ValidationError) as info:
        registry.apply("p", [DRIVER, table("t", "/data/p/t")])
    assert info.value.message == "project p is archived; it accepts no more changes"
    restored = registry.restore_project("p")
    assert (restored.name, restored.archived) == ("p", False)
    assert registry.restore_project("p").archived is False  # idempotent
    assert [p.name for p in registry.list_projects()] == ["p"]
    assert registry.apply("p", [DRIVER, table("t", "/data/p/t")])[1].action == "create"
    with pytest.raises(NotFoundError) as missing:
        registry.restore_project("nope")
    assert missing.value.message == "project nope not found"


def test_every_change_is_in_the_audit_log_with_actor_time_and_change(
    registry: Registry, backend: str
) -> None:
    start = datetime.now(timezone.utc) - timedelta(seconds=1)
    registry.apply("p", [DRIVER, table("t", "/data/p/t")])
    registry.apply("p", [DRIVER, table("t", "/data/p/t")])  # nothing changes: still recorded
    registry.delete("p", "feature_table", "t")
    registry.allow_location("p", "/shared")
    registry.archive_project("p")
    registry.restore_project("p")
    registry.put_job(JobRecord("p", "j1", {"kind": "offline_to_online", "table": "t"}))
    registry.put_job(JobRecord("p", "j1", {"kind": "offline_to_online", "table": "t", "n": 1}))
    registry.put_job(JobRecord("p", "j1~cancel", {"cancel_for": "j1"}))
    registry.create_project("q")
    registry.record_denial("token:reader", "p", "apply", "/potluck.core.v1.CoreService/Apply")

    log = registry.audit_log()
    assert [(e.action, e.project, e.target) for e in log] == [
        ("permission_denied", "p", "apply"),
        ("create_project", "q", "q"),
        ("job_cancel", "p", "j1"),
        ("job_start", "p", "j1"),
        ("restore_project", "p", "p"),
        ("archive_project", "p", "p"),
        ("allow_location", "p", "/shared"),
        ("delete", "p", "feature_table t"),
        ("apply", "p", ""),
        ("apply", "p", ""),
    ]
    actor = re.compile(r"peer:ipv4:127\.0\.0\.1:\d+") if backend == "core" else None
    for entry in log[1:]:
        assert actor.fullmatch(entry.actor) if actor else entry.actor == LOCAL
        assert start <= entry.at <= datetime.now(timezone.utc)
    assert log[0].actor == "token:reader"
    method = "/potluck.core.v1.CoreService/Apply"
    assert log[0].change["method"].startswith(method)
    assert dict(log[-1].change) == {
        "changes": [
            {"kind": "entity", "name": "driver_id", "action": "create", "revision": 0,
             "details": []},
            {"kind": "feature_table", "name": "t", "action": "create", "revision": 1,
             "details": ["+ feature trips INT64"]},
        ]
    }  # fmt: skip
    assert dict(log[2].change) == {"job": "j1"}
    assert dict(log[3].change) == {"job": "j1", "kind": "offline_to_online", "table": "t"}
    assert dict(log[4].change) == {"archived": {"from": True, "to": False}}
    assert dict(log[7].change) == {
        "kind": "feature_table",
        "name": "t",
        "archived_features": ["t:trips"],
    }

    assert [e.action for e in registry.audit_log(project="q")] == ["create_project"]
    assert len(registry.audit_log(limit=3)) == 3
    assert registry.audit_log(since=datetime.now(timezone.utc) + timedelta(minutes=1)) == []
    with pytest.raises(ValidationError) as info:
        registry.audit_log(limit=0)
    assert info.value.message == "limit: must be a whole number from 1 to 10000, got 0"


def test_the_actor_is_the_authenticated_caller_and_denials_are_recorded(tmp_path: Path) -> None:
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        caller = Caller(subject="ci-bot", permissions=frozenset())
        with acting_as(caller):
            registry.apply("p", [DRIVER])
            record_denial(registry, "p", "admin", "/potluck.core.v1.CoreService/ArchiveProject")
        record_denial(registry, None, "read_definitions", "ListProjects")
        log = registry.audit_log()
        assert [(e.actor, e.action, e.project, e.target, dict(e.change)) for e in log] == [
            (LOCAL, "permission_denied", "", "read_definitions", {"method": "ListProjects"}),
            (
                "token:ci-bot",
                "permission_denied",
                "p",
                "admin",
                {"method": "/potluck.core.v1.CoreService/ArchiveProject"},
            ),
            ("token:ci-bot", "apply", "p", "", log[2].change),
        ]
    finally:
        registry.close()


def test_a_version_1_registry_is_upgraded_in_place(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = sa.create_engine(url)
    new_tables = {_schema.audit.name, _schema.allowed_locations.name}
    with engine.begin() as conn:
        _schema.metadata.create_all(
            conn, tables=[t for t in _schema.metadata.sorted_tables if t.name not in new_tables]
        )
        conn.execute(sa.insert(_schema.schema_version).values(version=1))
        conn.execute(
            sa.insert(_schema.projects).values(
                name="p", archived=True, created_at=datetime.now(timezone.utc)
            )
        )
    engine.dispose()
    registry = SqlRegistry(url)
    try:
        assert registry.restore_project("p").archived is False
        assert [e.action for e in registry.audit_log()] == ["restore_project"]
    finally:
        registry.close()
    check = sa.create_engine(url)
    with check.connect() as conn:
        versions = conn.execute(sa.select(_schema.schema_version.c.version)).scalars().all()
    check.dispose()
    assert sorted(versions) == [1, _schema.SCHEMA_VERSION]


# ---- the CLI -------------------------------------------------------------------------------------


runner = CliRunner()


def cli(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_cli_restores_allows_describes_and_reads_the_audit_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "potluck.yaml").write_text("project: p\ndata_root: data\n")
    assert cli("projects", "create", "p") == "Created project 'p'.\n"
    assert cli("projects", "archive", "p") == "Archived project 'p'.\n"
    assert cli("projects", "restore", "p") == "Restored project 'p'.\n"
    shared = tmp_path / "shared"
    assert cli("projects", "allow-location", "p", str(shared)) == (
        f"Project 'p' may now use {shared}.\n"
    )
    described = json.loads(cli("projects", "describe", "p", "-o", "json"))
    assert described["archived"] is False
    assert described["data_roots"] == [str(tmp_path / "data" / "p"), "kafka:p."]
    assert [a["location"] for a in described["allowed_locations"]] == [str(shared)]
    assert described["allowed_locations"][0]["allowed_by"] == LOCAL
    assert "allowed location" in cli("projects", "describe", "p")

    entries = json.loads(cli("audit", "-o", "json"))
    assert [(e["action"], e["target"], e["actor"]) for e in entries] == [
        ("allow_location", str(shared), LOCAL),
        ("restore_project", "p", LOCAL),
        ("archive_project", "p", LOCAL),
        ("create_project", "p", LOCAL),
    ]
    assert entries[1]["change"] == {"archived": {"from": True, "to": False}}
    assert len(json.loads(cli("audit", "--limit", "1", "-o", "json"))) == 1
    assert json.loads(cli("audit", "--project", "other", "-o", "json")) == []
    assert len(json.loads(cli("audit", "--since", "1h", "-o", "json"))) == 4
    wide = runner.invoke(app, ["audit", "--since", "2000-01-01T00:00:00Z"], env={"COLUMNS": "200"})
    assert re.search(rf"│ {re.escape(LOCAL)} +│ restore_project +│ p +│ p +│ ", wide.stdout)
    assert re.search(r"│ create_project +│ p +│ p +│ +│", wide.stdout)

    bad = runner.invoke(app, ["audit", "--since", "yesterday"])
    assert bad.exit_code == 2
    assert bad.stderr.strip() == (
        "error: --since: expected a duration such as 1h, 30m or 7d, or an ISO 8601 time such "
        "as 2024-05-01T12:00:00Z, got 'yesterday'"
    )
