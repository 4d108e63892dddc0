"""``potluck apply``/``plan`` take many files and folders as one transaction; definition errors
name the file and the line of the offending key; a Python file's prints go to stderr."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from potluck import Client
from potluck.cli.main import app
from potluck.config import Settings
from potluck.definitions.loader import load_paths
from potluck.errors import DefinitionError

runner = CliRunner()

ENTITY_YAML = """\
entities:
  - name: driver_id
    value_type: INT64
"""
TABLE_PY = """\
from potluck import Feature, FeatureTable, FileSource

print("building driver_stats")
stats = FeatureTable(
    name="driver_stats",
    entities=["driver_id"],
    features=[Feature(name="conv_rate", value_type="FLOAT")],
    batch_source=FileSource(path="data/stats", event_timestamp_column="event_timestamp"),
)
"""


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working folder, without potluck settings in the environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    return tmp_path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run(*args: str) -> Result:
    return runner.invoke(app, list(args))


def assert_error(result: Result, message: str) -> None:
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"error: {message}\n")


def stored(root: Path) -> dict[str, Any]:
    """What the registry in ``root`` holds for the default project."""
    if not (root / ".potluck" / "registry.db").exists():
        return {"entities": [], "tables": []}
    with Client(settings=Settings(root=root)) as client:
        return {
            "entities": [e.name for e in client.list_entities()],
            "tables": [
                (t.name, t.batch_source and t.batch_source.path)
                for t in client.list_feature_tables()
            ],
        }


def test_repeated_f_applies_every_file_in_one_transaction(workdir: Path) -> None:
    write(workdir / "a.yaml", ENTITY_YAML)
    write(workdir / "models" / "b.py", TABLE_PY)
    result = run("apply", "-f", "a.yaml", "-f", "models/b.py", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == "building driver_stats\n"
    changes = json.loads(result.stdout)
    assert [(c["name"], c["action"]) for c in changes] == [
        ("driver_id", "create"),
        ("driver_stats", "create"),
    ]
    # No potluck.yaml: a table's relative source path resolves beside the file defining it.
    assert stored(workdir) == {
        "entities": ["driver_id"],
        "tables": [("driver_stats", str(workdir / "models" / "data" / "stats"))],
    }


def test_a_folder_stands_for_its_definitions_files(workdir: Path) -> None:
    write(workdir / "defs" / "a.yaml", ENTITY_YAML)
    write(workdir / "defs" / "b.py", TABLE_PY.replace('print("building driver_stats")\n', ""))
    write(workdir / "defs" / "helpers.py", "TEAM = 'drivers'\n")  # defines nothing: fine
    write(workdir / "defs" / ".hidden.yaml", "not: definitions\n")
    write(workdir / "defs" / "potluck.yaml", "project: default\n")
    write(workdir / "defs" / "notes.txt", "ignored\n")
    write(workdir / "defs" / "sub" / "c.yaml", "ignored: subfolders are not read\n")
    planned = json.loads(run("plan", "defs", "-o", "json").stdout)
    assert [(c["name"], c["action"]) for c in planned] == [
        ("driver_id", "create"),
        ("driver_stats", "create"),
    ]
    assert stored(workdir) == {"entities": [], "tables": []}
    result = run("apply", "defs", "-o", "json")
    assert (result.exit_code, result.stderr) == (0, "")
    assert stored(workdir)["tables"] == [("driver_stats", str(workdir / "defs" / "data" / "stats"))]


def test_one_bad_file_writes_nothing(workdir: Path) -> None:
    write(workdir / "a.yaml", ENTITY_YAML)
    write(
        workdir / "b.yaml",
        """\
        feature_tables:
          - name: trips
            entities:
              - driver_id
              - rider_id
            features: [{name: trips, value_type: INT64}]
        """,
    )
    assert_error(
        run("apply", "-f", "a.yaml", "-f", "b.yaml"),
        "b.yaml, line 5: feature table trips: entity rider_id is not defined; apply it in the "
        "same call or before the table",
    )
    assert stored(workdir) == {"entities": [], "tables": []}


def test_an_object_defined_twice_differently_names_both_places(workdir: Path) -> None:
    write(workdir / "a.yaml", ENTITY_YAML)
    write(
        workdir / "b.py",
        """\
        from potluck import Entity

        # the same name, another type
        driver = Entity(name="driver_id", value_type="STRING")
        """,
    )
    assert_error(
        run("apply", "-f", "a.yaml", "-f", "b.py"),
        "b.py, line 4: entity 'driver_id' is defined twice, differently: also at a.yaml, line 2",
    )
    write(
        workdir / "c.py",
        "from potluck import Entity\nd = Entity(name='driver_id', value_type='INT64')\n",
    )
    result = run("apply", "-f", "a.yaml", "-f", "c.py", "-o", "json")
    assert [c["name"] for c in json.loads(result.stdout)] == ["driver_id"]
    assert_error(
        run("plan", "a.yaml", "c.py", "b.py"),
        "b.py, line 4: entity 'driver_id' is defined twice, differently: also at a.yaml, line 2",
    )


def test_paths_that_hold_nothing_are_bad_input(workdir: Path) -> None:
    (workdir / "empty").mkdir()
    write(workdir / "helpers" / "h.py", "X = 1\n")
    assert_error(run("apply", "empty"), "empty: holds no *.yaml, *.yml, *.py")
    assert_error(run("apply", "helpers"), "helpers: defines no entities or feature tables")
    assert_error(
        run("apply", "-f", "helpers/h.py"), "helpers/h.py: defines no entities or feature tables"
    )
    assert_error(run("apply", "nowhere"), "nowhere: no such file or folder")
    assert_error(
        run("plan"),
        "give the definitions to apply: files or folders, as in potluck apply -f "
        "definitions.yaml or potluck apply DIR",
    )


BAD_KEYS = [
    pytest.param(
        """\
        feature_tables:
          - name: stats
            entities: [driver_id]
            features:
              - {name: conv_rate, value_type: FLOAT}
            labels: {team: drivers}
            max_age: 0s
        """,
        "defs.yaml, line 7: feature table stats: max_age must be positive, got 0:00:00; use "
        "None for values that never age out",
        id="max-age",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: stats
            entities: [driver_id]
            features:
              - {name: conv_rate, value_type: FLOAT}
              - name: trips
                value_type: INT64
              - name: Bad
                value_type: INT64
        """,
        "defs.yaml, line 8: feature.name: invalid name 'Bad'; names match [a-z_][a-z0-9_]* "
        "(lower-case letters, digits and underscores, not starting with a digit)",
        id="third-feature-name",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: stats
            entities: [driver_id]
            features:
              - name: trips
                value_type: INT64
                lables: {a: b}
        """,
        "defs.yaml, line 7: feature: unknown key 'lables'; allowed keys are labels, name, "
        "value_type",
        id="unknown-feature-key",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: stats
            entities:
              - driver_id
              - driver_id
            features: [{name: trips, value_type: INT64}]
        """,
        "defs.yaml, line 5: feature table stats: entity 'driver_id' is listed twice",
        id="entity-listed-twice",
    ),
    pytest.param(
        """\
        feature_tables:
          - name: stats
            entities: [driver_id]
            features: [{name: trips, value_type: INT64}]
            batch_source:
              path: data/stats
              event_timestamp_column: ts
              date_partition_column: _day
        """,
        "defs.yaml, line 8: batch_source.date_partition_column: invalid partition column name "
        "'_day': it starts with '_'; a partition column name is a column name that is also a "
        "safe folder name: non-empty, no '/', '\\', '..', '=' or control characters, no leading "
        "or trailing whitespace, not starting with '_' or '.' (readers skip such folders), at "
        "most 244 bytes in UTF-8",
        id="partition-column",
    ),
    pytest.param(
        """\
        entities:
          - name: driver_id
            description: a driver
            value_type: INT65
        """,
        "defs.yaml, line 4: entity driver_id: value_type: unknown value type 'INT65'; expected "
        "one of BYTES, STRING, INT32, INT64, DOUBLE, FLOAT, BOOL, UNIX_TIMESTAMP, BYTES_LIST, "
        "STRING_LIST, INT32_LIST, INT64_LIST, DOUBLE_LIST, FLOAT_LIST, BOOL_LIST, "
        "UNIX_TIMESTAMP_LIST",
        id="entity-value-type",
    ),
]


@pytest.mark.parametrize(("text", "message"), BAD_KEYS)
def test_yaml_errors_point_at_the_offending_key(workdir: Path, text: str, message: str) -> None:
    write(workdir / "defs.yaml", text)
    with pytest.raises(DefinitionError) as info:
        load_paths(["defs.yaml"])
    assert info.value.message == message
    assert info.value.attrs()["line"] == int(message.split("line ")[1].split(":")[0])


def test_python_errors_point_at_the_keyword(workdir: Path) -> None:
    write(
        workdir / "defs.py",
        """\
        from datetime import timedelta

        from potluck import Feature, FeatureTable

        stats = FeatureTable(
            name="stats",
            entities=["driver_id"],
            features=[Feature(name="trips", value_type="INT64")],
            max_age=timedelta(0),
        )
        """,
    )
    assert_error(
        run("apply", "-f", "defs.py"),
        "defs.py, line 9: feature table stats: max_age must be positive, got 0:00:00; use None "
        "for values that never age out",
    )


def test_prints_in_python_files_go_to_stderr(workdir: Path) -> None:
    write(workdir / "a.yaml", ENTITY_YAML)
    write(workdir / "b.py", TABLE_PY)
    result = run("plan", "a.yaml", "b.py", "--output", "json")
    assert result.exit_code == 0
    assert [c["name"] for c in json.loads(result.stdout)] == ["driver_id", "driver_stats"]
    assert result.stderr == "building driver_stats\n"
