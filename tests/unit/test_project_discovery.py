"""Commands find potluck.yaml in the working folder or its parents (POTLUCK_CONFIG and --config
win); outside a project, commands that read say no project was found and create nothing; a
project or table that does not exist is an error, never an empty listing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from potluck.cli.main import app
from potluck.config import find_config_file, load_settings

runner = CliRunner()

DEFINITIONS = """\
entities:
  - {name: driver_id, value_type: INT64}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features: [{name: conv_rate, value_type: FLOAT}]
    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}
"""

READING_COMMANDS = [
    ["entities", "list"],
    ["entities", "describe", "driver_id"],
    ["feature-tables", "list"],
    ["feature-tables", "describe", "driver_stats"],
    ["feature-tables", "delete", "driver_stats", "--yes"],
    ["online", "get", "driver_stats:conv_rate", "-e", "driver_id=1"],
    ["online", "purge", "driver_stats", "--yes"],
    ["historical", "-f", "driver_stats:conv_rate", "-e", "rows.csv", "-O", "out.parquet"],
    ["ingest", "driver_stats", "rows.csv"],
    ["ingest-online", "driver_stats"],
    ["jobs", "list"],
    ["jobs", "describe", "abc"],
    ["jobs", "cancel", "abc"],
    ["gc"],
    ["projects", "list"],
    ["projects", "archive", "default"],
]
"""Every command that reads a project (ids: the command)."""


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, without potluck settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def ok(*args: str) -> Result:
    result = run(*args)
    assert (result.exit_code, result.stderr) == (0, ""), (result.stdout, result.exception)
    return result


def assert_error(result: Result, message: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


@pytest.fixture()
def project(workdir: Path) -> Path:
    """A project folder (potluck.yaml) with the definitions applied, and a subfolder."""
    (workdir / "potluck.yaml").write_text("project: rides\n")
    (workdir / "defs.yaml").write_text(DEFINITIONS)
    ok("apply", "-f", "defs.yaml")
    (workdir / "notebooks" / "deep").mkdir(parents=True)
    return workdir


# ---- finding the file --------------------------------------------------------------------------


def test_the_nearest_potluck_yaml_in_the_folder_or_a_parent_is_read(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "potluck.yaml").write_text("project: outer\n")
    inner = workdir / "team"
    (inner / "src" / "deep").mkdir(parents=True)
    (inner / "potluck.yaml").write_text("project: inner\n")
    monkeypatch.chdir(inner / "src" / "deep")
    assert find_config_file() == inner / "potluck.yaml"
    settings = load_settings(environ={})
    assert (settings.project, settings.root) == ("inner", inner)
    assert (settings.config_file, settings.sources) == (
        inner / "potluck.yaml",
        (str(inner / "potluck.yaml"),),
    )
    assert settings.registry_url == f"sqlite:///{inner}/.potluck/registry.db"
    other = workdir / "other.yaml"
    other.write_text("project: chosen\n")
    assert load_settings(environ={"POTLUCK_CONFIG": str(other)}).project == "chosen"
    assert load_settings(other, environ={}).project == "chosen"


def test_commands_work_from_any_subfolder_of_the_project(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(project / "notebooks" / "deep")
    entities = json.loads(ok("entities", "list", "-o", "json").stdout)
    assert [e["name"] for e in entities] == ["driver_id"]
    table = json.loads(ok("feature-tables", "describe", "driver_stats", "-o", "json").stdout)
    assert table["batch_source"]["path"] == str(project / "data" / "driver_stats")
    changes = json.loads(ok("apply", "-f", "../../defs.yaml", "-o", "json").stdout)
    assert [c["action"] for c in changes] == ["unchanged", "unchanged"]
    assert not (project / "notebooks" / "deep" / ".potluck").exists()
    assert sorted(p.name for p in (project / ".potluck").iterdir()) == ["registry.db"]


# ---- outside a project -------------------------------------------------------------------------


@pytest.mark.parametrize("args", READING_COMMANDS, ids=" ".join)
def test_outside_a_project_reading_commands_say_so_and_create_nothing(
    workdir: Path, args: list[str]
) -> None:
    (workdir / "rows.csv").write_text("driver_id,event_timestamp\n1,2024-01-01T00:00:00Z\n")
    assert_error(
        run(*args),
        f"no potluck project found: no potluck.yaml in {workdir} or its parents, and no "
        f"registry at {workdir}/.potluck/registry.db; run `potluck init` to start a project, "
        "or cd into one",
    )
    assert sorted(p.name for p in workdir.iterdir()) == ["rows.csv"]


def test_plan_runs_anywhere_and_creates_nothing(workdir: Path) -> None:
    (workdir / "defs.yaml").write_text(DEFINITIONS)
    changes = json.loads(ok("plan", "defs.yaml", "-o", "json").stdout)
    assert [(c["name"], c["action"]) for c in changes] == [
        ("driver_id", "create"),
        ("driver_stats", "create"),
    ]
    assert sorted(p.name for p in workdir.iterdir()) == ["defs.yaml"]


def test_in_a_project_before_the_first_apply_reading_creates_nothing(workdir: Path) -> None:
    ok("init")
    assert json.loads(ok("projects", "list", "-o", "json").stdout) == []
    assert_error(
        run("entities", "list"),
        "project 'default' does not exist (nothing was applied yet); apply definitions to "
        "create it, or choose another with --project",
    )
    assert sorted(p.name for p in workdir.iterdir()) == ["definitions.yaml", "potluck.yaml"]


# ---- a project or table that does not exist ----------------------------------------------------


@pytest.mark.parametrize("args", READING_COMMANDS[:-2], ids=" ".join)
def test_a_project_that_does_not_exist_is_an_error(project: Path, args: list[str]) -> None:
    (project / "rows.csv").write_text("driver_id,event_timestamp\n1,2024-01-01T00:00:00Z\n")
    assert_error(
        run("-p", "nosuch", *args),
        "project 'nosuch' does not exist (existing projects: rides); apply definitions to "
        "create it, or choose another with --project",
    )


def test_an_archived_project_stays_readable(project: Path) -> None:
    ok("projects", "archive", "rides")
    entities = json.loads(ok("entities", "list", "-o", "json").stdout)
    assert [e["name"] for e in entities] == ["driver_id"]


def test_jobs_list_of_a_table_that_does_not_exist_is_an_error(project: Path) -> None:
    assert_error(
        run("jobs", "list", "--table", "nope"), "feature table nope not found in project rides"
    )
    assert json.loads(ok("jobs", "list", "--table", "driver_stats", "-o", "json").stdout) == []
