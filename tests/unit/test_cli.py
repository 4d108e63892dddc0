"""The ``potluck`` command: registry commands in-process (CliRunner) on a SQLite registry in a
temporary folder, plus the real entry point and ``potluck core`` as subprocesses."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from potluck import Client, Entity, Feature, FeatureTable, ValueType
from potluck.cli.main import app
from potluck.cli.registry import EXAMPLE_DEFINITIONS, default_config_yaml
from potluck.config import SETTING_NAMES, Settings, load_settings
from potluck.definitions.loader import load_definitions
from potluck.definitions.serde import to_dict

POTLUCK = Path(sys.executable).parent / "potluck"

DEFINITIONS = """\
entities:
  - name: driver_id
    value_type: INT64
    description: A driver's id.
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features:
      - {name: conv_rate, value_type: FLOAT}
      - {name: avg_daily_trips, value_type: INT64}
    max_age: 1d
    batch_source: {path: data/driver_stats, event_timestamp_column: event_timestamp}
    labels: {team: drivers}
"""

runner = CliRunner()


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder without potluck settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def run(*args: str, input: str | None = None) -> Result:
    return runner.invoke(app, list(args), input=input)


def ok(*args: str) -> Result:
    result = run(*args)
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert result.stderr == ""
    return result


def ok_json(*args: str) -> Any:
    return json.loads(ok(*args, "--output", "json").stdout)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def registry_state(root: Path, project: str = "default") -> dict[str, Any]:
    """Everything the registry in ``root`` holds for ``project``, read through the SDK."""
    with Client(settings=Settings(root=root, project=project)) as client:
        return {
            "projects": [(p.name, p.archived) for p in client.list_projects(include_archived=True)],
            "entities": [to_dict(e) for e in client.list_entities()],
            "tables": [(to_dict(t), t.revision) for t in client.list_feature_tables()],
        }


def assert_error(result: Result, code: int, message: str) -> None:
    assert (result.exit_code, result.stderr) == (code, f"error: {message}\n")
    assert result.stdout == ""


# ---- bad input: exit code 2, one stderr line, nothing written -----------------------------------

INVALID_NAME_MESSAGE = (
    "entity.name: invalid name 'Driver'; names match [a-z_][a-z0-9_]* (lower-case letters, "
    "digits and underscores, not starting with a digit)"
)

BAD_YAML = [
    pytest.param(
        """\
        entities:
          - {name: driver_id, value_type: INT64}
          - {name: Driver, value_type: INT64}
        """,
        f"defs.yaml, line 3: {INVALID_NAME_MESSAGE}",
        id="invalid-name",
    ),
    pytest.param(
        """\
        entities:
          - {name: rider_id, value_type: INT64}
        feature_tables:
          - name: trips
            entities: [rider_id, nobody]
            features: [{name: trips, value_type: INT64}]
        """,
        "defs.yaml, line 5: feature table trips: entity nobody is not defined; apply it in the "
        "same call or before the table",
        id="unknown-entity",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: driver_stats
            entities: [driver_id]
            features:
              - {name: conv_rate, value_type: FLOAT}
              - {name: conv_rate, value_type: DOUBLE}
        """,
        "defs.yaml, line 6: feature table driver_stats: feature 'conv_rate' is defined twice",
        id="duplicate-feature",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: driver_stats
            entities: [driver_id]
            features: [{name: driver_id, value_type: INT64}]
        """,
        "defs.yaml, line 4: feature table driver_stats: feature 'driver_id' has the name of one "
        "of the table's entities; rename the feature",
        id="feature-named-like-entity",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: driver_stats
            entities: [driver_id]
            features: [{name: event_timestamp, value_type: UNIX_TIMESTAMP}]
        """,
        "defs.yaml, line 4: feature.name: 'event_timestamp' is reserved for potluck's own "
        "columns (created_timestamp, event_timestamp, ingestion_id); choose another name",
        id="reserved-feature-name",
    ),
    pytest.param(
        """\
        entities:
          - {name: ingestion_id, value_type: STRING}
        """,
        "defs.yaml, line 2: entity.name: 'ingestion_id' is reserved for potluck's own columns "
        "(created_timestamp, event_timestamp, ingestion_id); choose another name",
        id="reserved-entity-name",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: driver_stats
            entities: [driver_id]
            features: [{name: trips, value_type: INT64}]
            max_age: -1h
        """,
        "defs.yaml, line 5: feature table driver_stats: max_age must be positive, got "
        "-1:00:00; use None for values that never age out",
        id="negative-max-age",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: driver_stats
            entities: [driver_id]
            features: [{name: trips, value_type: INT64}]
            batch_source: {path: data/driver_stats}
        """,
        "defs.yaml, line 5: batch_source.event_timestamp_column: a batch source needs the name "
        "of its event timestamp column",
        id="batch-source-without-event-timestamp",
    ),
    pytest.param(
        """\
        entities:
          - name: driver_id
            value_type: INT64
           description: [oops
        """,
        "defs.yaml, line 4: malformed YAML: expected <block end>, but found "
        "'<block mapping start>'",
        id="malformed-yaml",
    ),
    pytest.param(
        "tables: []\n",
        "defs.yaml, line 1: unknown key 'tables'; a definitions file has the keys entities and "
        "feature_tables",
        id="unknown-top-level-key",
    ),
]


@pytest.fixture()
def applied(workdir: Path) -> dict[str, Any]:
    """A registry holding the driver definitions; returns its state."""
    ok("apply", "-f", str(write(workdir / "good.yaml", DEFINITIONS)))
    return registry_state(workdir)


@pytest.mark.parametrize(("text", "message"), BAD_YAML)
@pytest.mark.parametrize("command", ["apply", "plan"])
def test_bad_yaml_definitions_exit_2_and_write_nothing(
    workdir: Path, applied: dict[str, Any], command: str, text: str, message: str
) -> None:
    write(workdir / "defs.yaml", text)
    assert_error(run(command, "-f", "defs.yaml"), 2, message)
    assert registry_state(workdir) == applied


BAD_PYTHON = [
    pytest.param(
        """\
        from potluck import Entity

        rider = Entity(name="rider_id", value_type="INT64")
        raise RuntimeError("no rides today")
        """,
        "defs.py, line 4: raised RuntimeError: no rides today",
        id="raises",
    ),
    pytest.param(
        """\
        from potluck import Entity

        driver = Entity(name="Driver", value_type="INT64")
        """,
        f"defs.py, line 3: {INVALID_NAME_MESSAGE}",
        id="invalid-definition",
    ),
    pytest.param(
        "def broken(:\n", "defs.py, line 1: SyntaxError: invalid syntax", id="syntax-error"
    ),
    pytest.param(
        "import os\n", "defs.py: defines no entities or feature tables", id="defines-nothing"
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_PYTHON)
def test_bad_python_definitions_exit_2_and_write_nothing(
    workdir: Path, applied: dict[str, Any], text: str, message: str
) -> None:
    write(workdir / "defs.py", text)
    assert_error(run("apply", "-f", "defs.py"), 2, message)
    assert registry_state(workdir) == applied


def test_a_missing_or_unknown_kind_of_file_is_bad_input(
    workdir: Path, applied: dict[str, Any]
) -> None:
    assert_error(run("apply", "-f", "nope.yaml"), 2, "nope.yaml: no such file")
    write(workdir / "defs.json", "{}")
    assert_error(
        run("apply", "-f", "defs.json"),
        2,
        "defs.json: unknown kind of definitions file; use one of .yaml, .yml, .py",
    )
    assert registry_state(workdir) == applied


def test_an_incompatible_change_needs_force(workdir: Path, applied: dict[str, Any]) -> None:
    retyped = DEFINITIONS.replace(
        "{name: avg_daily_trips, value_type: INT64}", "{name: avg_daily_trips, value_type: DOUBLE}"
    )
    write(workdir / "retyped.yaml", retyped)
    assert_error(
        run("apply", "-f", "retyped.yaml"),
        2,
        "feature table driver_stats: feature avg_daily_trips changes type INT64 -> DOUBLE; "
        "pass force=True (CLI --force) to allow it",
    )
    assert registry_state(workdir) == applied

    changes = ok_json("apply", "-f", "retyped.yaml", "--force")
    assert [(c["name"], c["action"], c["revision"]) for c in changes] == [
        ("driver_id", "unchanged", 0),
        ("driver_stats", "update", 2),
    ]
    table = ok_json("feature-tables", "describe", "driver_stats")
    assert table["features"][1] == {"name": "avg_daily_trips", "value_type": "DOUBLE", "labels": {}}


def test_unreachable_core_url_fails_with_exit_1_naming_the_address(workdir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    write(workdir / "potluck.yaml", f"core_url: '{address}'\n")
    write(workdir / "good.yaml", DEFINITIONS)
    result = run("apply", "-f", "good.yaml")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot reach the Core service at {address}: ")
    assert result.stderr.endswith("; is `potluck core` running?\n")
    assert result.stderr.count("\n") == 1
    assert not (workdir / ".potluck").exists()


@pytest.mark.postgres
def test_postgres_url_with_a_wrong_password_is_bad_input(workdir: Path, postgres_url: str) -> None:
    wrong = re.sub(r"://([^:/@]+):[^@]*@", r"://\1:not-the-password@", postgres_url)
    assert wrong != postgres_url
    user = re.search(r"://([^:/@]+)", postgres_url).group(1)  # type: ignore[union-attr]
    masked = wrong.replace("not-the-password", "***")
    write(workdir / "potluck.yaml", f"registry: '{wrong}'\n")
    write(workdir / "good.yaml", DEFINITIONS)
    result = run("apply", "-f", "good.yaml")
    assert_error(
        result,
        2,
        f'cannot connect to registry {masked}: password authentication failed for user "{user}"',
    )
    assert "not-the-password" not in result.stderr


def test_an_invalid_config_file_names_the_key_and_the_file(workdir: Path) -> None:
    write(workdir / "potluck.yaml", "registri: sqlite:///x.db\n")
    assert_error(
        run("entities", "list"),
        2,
        f"unknown setting 'registri' in {workdir / 'potluck.yaml'}; known settings: "
        + ", ".join(SETTING_NAMES),
    )


def test_an_invalid_project_option_is_bad_input(workdir: Path) -> None:
    assert_error(
        run("--project", "Bad-Name", "entities", "list"),
        2,
        "invalid setting 'project' = 'Bad-Name': names match [a-z_][a-z0-9_]* (lower-case "
        "letters, digits and underscores, not starting with a digit) (read from arguments)",
    )


def test_usage_errors_are_one_line_with_exit_2(workdir: Path) -> None:
    assert_error(
        run("apply"),
        2,
        "give the definitions to apply: files or folders, as in potluck apply -f "
        "definitions.yaml or potluck apply DIR",
    )
    assert_error(run("nonsense"), 2, "No such command 'nonsense'. (see 'potluck --help')")
    assert_error(
        run("entities", "list", "--label", "team"), 2, "--label: expected key=value, got 'team'"
    )


# ---- init --------------------------------------------------------------------------------------


def test_init_writes_defaults_and_example_definitions_that_apply(workdir: Path) -> None:
    result = ok("init", "proj")
    assert result.stdout == (
        "Wrote proj/potluck.yaml and proj/definitions.yaml. Next: potluck apply -f "
        "proj/definitions.yaml\n"
    )
    config = workdir / "proj" / "potluck.yaml"
    assert config.read_text() == default_config_yaml()
    assert set(yaml.safe_load(config.read_text())) == set(SETTING_NAMES)
    settings = load_settings(config, environ={})
    defaults = Settings(root=(workdir / "proj").resolve())
    assert settings.model_dump(exclude={"sources", "config_file"}) == defaults.model_dump(
        exclude={"sources", "config_file"}
    )
    assert settings.config_file == config.resolve()
    assert load_definitions(workdir / "proj" / "definitions.yaml") == list(EXAMPLE_DEFINITIONS)

    changes = ok_json("--config", str(config), "apply", "-f", "proj/definitions.yaml")
    assert [(c["kind"], c["name"], c["action"]) for c in changes] == [
        ("entity", "driver_id", "create"),
        ("feature_table", "driver_stats", "create"),
    ]
    assert (workdir / "proj" / ".potluck" / "registry.db").is_file()


def test_init_never_overwrites(workdir: Path) -> None:
    write(workdir / "definitions.yaml", "mine\n")
    assert_error(run("init"), 2, "definitions.yaml exists; init never overwrites files")
    assert not (workdir / "potluck.yaml").exists()
    assert (workdir / "definitions.yaml").read_text() == "mine\n"


def test_init_reports_a_folder_it_cannot_create(workdir: Path) -> None:
    write(workdir / "afile", "")
    assert_error(run("init", "afile/sub"), 1, "cannot write afile/sub: Not a directory")
    assert_error(
        run("init", "afile"),
        2,
        "Invalid value for 'directory': dir 'afile' is a file. (see 'potluck init --help')",
    )


# ---- plan, apply, history ----------------------------------------------------------------------


def test_plan_shows_the_changes_and_writes_nothing(workdir: Path) -> None:
    write(workdir / "good.yaml", DEFINITIONS)
    changes = ok_json("plan", "-f", "good.yaml")
    assert [(c["kind"], c["name"], c["action"], c["revision"]) for c in changes] == [
        ("entity", "driver_id", "create", 0),
        ("feature_table", "driver_stats", "create", 1),
    ]
    table = ok("plan", "-f", "good.yaml").stdout
    assert table.startswith("Plan for project 'default' (nothing written)")
    assert re.search(r"feature_table\s+│\s+driver_stats\s+│\s+create\s+│\s+1", table)
    assert sorted(p.name for p in workdir.iterdir()) == ["good.yaml"]  # not even a registry


def test_apply_is_idempotent_and_keeps_history(workdir: Path) -> None:
    write(workdir / "good.yaml", DEFINITIONS)
    out = ok("apply", "-f", "good.yaml").stdout
    assert out.startswith("Applied to project 'default'")
    assert re.search(r"entity\s+│\s+driver_id\s+│\s+create", out)
    again = ok_json("apply", "-f", "good.yaml")
    assert [(c["action"], c["revision"]) for c in again] == [("unchanged", 0), ("unchanged", 1)]

    grown = DEFINITIONS.replace(
        "      - {name: avg_daily_trips, value_type: INT64}\n",
        "      - {name: avg_daily_trips, value_type: INT64}\n"
        "      - {name: acc_rate, value_type: FLOAT}\n",
    )
    write(workdir / "grown.yaml", grown)
    changes = ok_json("apply", "-f", "grown.yaml")
    assert [(c["name"], c["action"], c["revision"]) for c in changes] == [
        ("driver_id", "unchanged", 0),
        ("driver_stats", "update", 2),
    ]

    described = ok_json("feature-tables", "describe", "driver_stats", "--history")
    assert described["revision"] == 2
    assert [f["name"] for f in described["features"]] == [
        "conv_rate",
        "avg_daily_trips",
        "acc_rate",
    ]
    assert [h["revision"] for h in described["history"]] == [1, 2]
    assert [f["name"] for f in described["history"][0]["spec"]["features"]] == [
        "conv_rate",
        "avg_daily_trips",
    ]
    text = ok("feature-tables", "describe", "driver_stats", "--history").stdout
    assert "History" in text
    assert re.search(r"│\s+2\s+│", text)


def test_python_and_yaml_definitions_are_the_same_objects(workdir: Path) -> None:
    quickstart = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
    from_yaml = load_definitions(quickstart / "definitions.yaml")
    from_python = load_definitions(quickstart / "definitions.py")
    assert from_yaml == from_python == list(EXAMPLE_DEFINITIONS)
    # Copies: relative source paths resolve against the definitions file's folder, and applying
    # creates the batch source there, so applying the originals would write into the repository.
    for name in ("definitions.py", "definitions.yaml"):
        shutil.copy(quickstart / name, workdir / name)
    changes = ok_json("apply", "-f", "definitions.py")
    assert [c["action"] for c in changes] == ["create", "create"]
    changes = ok_json("apply", "-f", "definitions.yaml")
    assert [c["action"] for c in changes] == ["unchanged", "unchanged"]


def test_a_python_file_can_import_its_neighbours_and_names_are_collected_once(
    workdir: Path,
) -> None:
    write(
        workdir / "shared_driver_defs.py",
        """\
        from potluck import Entity
        driver = Entity(name="driver_id", value_type="INT64")
        """,
    )
    write(
        workdir / "defs.py",
        """\
        from potluck import Feature, FeatureTable
        from shared_driver_defs import driver
        also_driver = driver
        stats = FeatureTable(
            name="stats", entities=[driver], features=[Feature(name="trips", value_type="INT64")]
        )
        """,
    )
    assert load_definitions(workdir / "defs.py") == [
        Entity(name="driver_id", value_type=ValueType.INT64),
        FeatureTable(
            name="stats",
            entities=("driver_id",),
            features=(Feature(name="trips", value_type=ValueType.INT64),),
        ),
    ]
    assert str(workdir) not in sys.path


# ---- entities, feature tables, projects --------------------------------------------------------


def test_entities_list_and_describe(workdir: Path, applied: dict[str, Any]) -> None:
    expected = {
        "name": "driver_id",
        "value_type": "INT64",
        "description": "A driver's id.",
        "labels": {},
    }
    assert ok_json("entities", "list") == [expected]
    assert ok_json("entities", "describe", "driver_id") == expected
    text = ok("entities", "describe", "driver_id").stdout
    assert re.search(r"value type\s+│\s+INT64", text)
    assert_error(
        run("entities", "describe", "rider_id"), 2, "entity rider_id not found in project default"
    )


def test_feature_tables_list_filters_on_labels(workdir: Path, applied: dict[str, Any]) -> None:
    tables = ok_json("feature-tables", "list", "--label", "team=drivers")
    assert [(t["name"], t["revision"], t["max_age"]) for t in tables] == [("driver_stats", 1, "1d")]
    assert ok_json("feature-tables", "list", "--label", "team=riders") == []
    assert ok_json("feature-tables", "list", "-l", "team=drivers", "-l", "tier=gold") == []
    text = ok("feature-tables", "list").stdout
    assert re.search(r"driver_stats\s+│\s+driver_id\s+│", text)


def test_feature_tables_delete_asks_first(workdir: Path, applied: dict[str, Any]) -> None:
    declined = run("feature-tables", "delete", "driver_stats", input="n\n")
    assert declined.exit_code == 1
    assert declined.stderr == "error: aborted\n"
    assert registry_state(workdir) == applied

    assert_error(
        run("feature-tables", "delete", "nothing", "--yes"),
        2,
        "feature table nothing not found in project default",
    )

    confirmed = run("feature-tables", "delete", "driver_stats", input="y\n")
    assert confirmed.exit_code == 0
    assert confirmed.stdout == "Deleted feature table 'driver_stats' from project 'default'.\n"
    assert registry_state(workdir)["tables"] == []
    assert registry_state(workdir)["entities"] == applied["entities"]


def test_feature_tables_delete_with_yes(workdir: Path, applied: dict[str, Any]) -> None:
    result = ok("feature-tables", "delete", "driver_stats", "--yes")
    assert result.stdout == "Deleted feature table 'driver_stats' from project 'default'.\n"
    assert ok_json("feature-tables", "list") == []


def test_projects_create_list_archive(workdir: Path) -> None:
    assert ok("projects", "create", "fraud").stdout == "Created project 'fraud'.\n"
    assert_error(run("projects", "create", "fraud"), 2, "project fraud already exists")
    assert_error(run("projects", "archive", "nope"), 2, "project nope not found")
    assert [p["name"] for p in ok_json("projects", "list")] == ["fraud"]
    assert ok("projects", "archive", "fraud").stdout == "Archived project 'fraud'.\n"
    assert ok_json("projects", "list") == []
    listed = ok_json("projects", "list", "--all")
    assert [(p["name"], p["archived"]) for p in listed] == [("fraud", True)]
    assert re.search(r"fraud\s+│\s+yes", ok("projects", "list", "--all").stdout)


def test_project_and_config_options_choose_where_definitions_go(workdir: Path) -> None:
    write(workdir / "good.yaml", DEFINITIONS)
    other_root = workdir / "elsewhere"
    other_root.mkdir()
    config = write(other_root / "potluck.yaml", "registry: sqlite:///reg.db\nproject: team_a\n")

    ok("--config", str(config), "--project", "team_b", "apply", "-f", "good.yaml")
    assert (other_root / "reg.db").is_file()
    assert not (workdir / ".potluck").exists()
    assert ok_json("-c", str(config), "-p", "team_b", "entities", "list")[0]["name"] == "driver_id"
    assert_error(
        run("-c", str(config), "entities", "list"),
        2,
        "project 'team_a' does not exist (existing projects: team_b); apply definitions to "
        "create it, or choose another with --project",
    )
    assert [p["name"] for p in ok_json("-c", str(config), "projects", "list")] == ["team_b"]


# ---- the real entry point and the Core service ---------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    return {**env, **extra}


def test_entry_point_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    write(tmp_path / "defs.py", "raise ValueError('bad definitions')\n")
    proc = subprocess.run(
        [str(POTLUCK), "apply", "-f", "defs.py"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (
        2,
        "",
        "error: defs.py, line 1: raised ValueError: bad definitions\n",
    )
    assert not (tmp_path / ".potluck").exists()
    help_proc = subprocess.run(
        [str(POTLUCK), "--help"], env=_env(), capture_output=True, text=True, timeout=60
    )
    assert help_proc.returncode == 0
    assert "feature-tables" in help_proc.stdout


@pytest.fixture()
def core_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``potluck core --port 0`` on a SQLite registry in tmp_path; yields it and its address."""
    server_root = tmp_path / "server"
    server_root.mkdir()
    write(server_root / "potluck.yaml", "registry: sqlite:///core.db\n")
    proc = subprocess.Popen(
        [str(POTLUCK), "--config", str(server_root / "potluck.yaml"), "core", "--port", "0"],
        env=_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:
            seen.append(line)
            match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
            if match:
                break
        assert match, "".join(seen)
        yield proc, match.group(1)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


def test_core_serves_the_registry_to_the_cli(
    workdir: Path, core_process: tuple[subprocess.Popen[str], str]
) -> None:
    proc, address = core_process
    write(workdir / "potluck.yaml", f"core_url: '{address}'\n")
    write(workdir / "good.yaml", DEFINITIONS)
    changes = ok_json("apply", "-f", "good.yaml")
    assert [c["action"] for c in changes] == ["create", "create"]
    assert [t["name"] for t in ok_json("feature-tables", "list")] == ["driver_stats"]
    write(workdir / "bad.yaml", BAD_YAML[1].values[0])
    assert_error(
        run("apply", "-f", "bad.yaml"), 2, BAD_YAML[1].values[1].replace("defs.yaml", "bad.yaml")
    )
    assert not (workdir / ".potluck").exists()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
