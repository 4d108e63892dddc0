"""Batch source locations resolve once, at apply time, and source column names are checked as
names: the resolution rules (potluck.yaml folder, definitions file folder, working folder, URLs,
``~``), idempotent re-applies, the plan of a table stored relative before, ``potluck apply -f``
from another folder, and the column and partition name corpus with exact messages."""

from __future__ import annotations

import json
import os
import posixpath
import unicodedata
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from potluck import Client, Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from potluck.cli.main import app
from potluck.config import Settings
from potluck.definitions._checks import (
    check_column_name,
    check_inside_source,
    check_partition_column,
)
from potluck.definitions.sources import resolve_source_path
from potluck.errors import DefinitionError
from potluck.registry.base import Change
from potluck.registry.sql import SqlRegistry

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)

COLUMN_RULE = (
    "a column name is non-empty, has no '/', '\\', '..', '=' or control characters (NUL "
    "included) and no leading or trailing whitespace; upper case, digits, inner spaces and other "
    "punctuation are fine"
)
PARTITION_RULE = (
    "a partition column name is a column name that is also a safe folder name: non-empty, no "
    "'/', '\\', '..', '=' or control characters, no leading or trailing whitespace, not starting "
    "with '_' or '.' (readers skip such folders), at most 244 bytes in UTF-8"
)


def table(path: str = "data/x", **source: Any) -> FeatureTable:
    return FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(Feature(name="conv_rate", value_type=ValueType.DOUBLE),),
        batch_source=FileSource(path=path, event_timestamp_column="event_timestamp", **source),
    )


def stored_path(client: Client) -> str:
    source = client.get_feature_table("driver_stats").batch_source
    assert source is not None
    return source.path


@pytest.fixture()
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No potluck settings from the environment (the test services' addresses stay)."""
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)


# ---- the resolution rule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/x", "/proj/data/x"),
        ("data/x/", "/proj/data/x"),
        ("./data/../other/x", "/proj/other/x"),
        ("../shared/x", "/shared/x"),
        ("/srv/features/./x/", "/srv/features/x"),
        ("s3://bucket/x/../y", "s3://bucket/x/../y"),
        ("gs://Bucket/Data", "gs://Bucket/Data"),
        ("hdfs://namenode:8020/data/x", "hdfs://namenode:8020/data/x"),
        ("file:///srv/features/x", "/srv/features/x"),
        ("file:///srv/my%20features/x/", "/srv/my features/x"),
        ("file://localhost/srv/x", "/srv/x"),
        ("FILE:///srv/x", "/srv/x"),
    ],
)
def test_a_path_resolves_to_one_absolute_place_and_urls_stay(path: str, expected: str) -> None:
    assert resolve_source_path(path, Path("/proj")) == expected
    assert resolve_source_path(expected, Path("/elsewhere")) == expected


def test_home_is_expanded_before_the_root_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/ana")
    assert resolve_source_path("~/features/x", "/proj") == "/home/ana/features/x"
    assert resolve_source_path("data/x", "~/proj") == "/home/ana/proj/data/x"


def test_a_relative_root_is_taken_from_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_source_path("data/x", "proj") == f"{tmp_path}/proj/data/x"


def test_a_file_url_of_another_host_is_refused() -> None:
    with pytest.raises(DefinitionError) as info:
        resolve_source_path("file://nas/srv/x", "/proj")
    assert info.value.message == (
        "batch_source.path: 'file://nas/srv/x' names the host 'nas'; a file URL must name a "
        "folder on this machine (file:///absolute/folder); use the mounted folder's path or an "
        "object store URL"
    )
    assert info.value.field == "batch_source.path"


def _reference_join(root: str, parts: list[str]) -> str:
    """The folder ``root/parts...`` names, walked one component at a time."""
    stack = [p for p in root.split("/") if p]
    for part in parts:
        if part == "..":
            if stack:
                stack.pop()
        elif part not in ("", "."):
            stack.append(part)
    return "/" + "/".join(stack)


@given(
    parts=st.lists(st.sampled_from(["a", "b c", ".", "..", "", "x.y", "é"]), min_size=1),
    root=st.sampled_from(["/", "/proj", "/proj/sub/", "/a/../b"]),
)
def test_resolution_walks_the_path_and_resolving_again_changes_nothing(
    parts: list[str], root: str
) -> None:
    path = "/".join(parts)
    if not path:
        path = "."
    resolved = resolve_source_path(path, root)
    root_folder = _reference_join("/", root.split("/"))
    if path.startswith("/"):
        expected = _reference_join("/", parts)
    else:
        expected = _reference_join(root_folder, parts)
    assert resolved == expected
    assert resolve_source_path(resolved, "/somewhere/else") == resolved
    assert resolve_source_path(f"file://{resolved}", "/somewhere/else") == resolved


# ---- Client.apply: where the root comes from ----------------------------------------------------


def test_apply_resolves_against_the_potluck_yaml_folder_from_any_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    config = project / "potluck.yaml"
    config.write_text("registry: sqlite:///.potluck/registry.db\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    with Client(config) as client:
        changes = client.apply([DRIVER, table("data/x")])
        assert changes[1] == Change(
            "feature_table", "driver_stats", "create", 1, ("+ feature conv_rate DOUBLE",)
        )
        assert stored_path(client) == f"{project}/data/x"
    monkeypatch.chdir(project)
    with Client() as client:  # ./potluck.yaml
        assert client.apply([DRIVER, table("data/x")], dry_run=True) == [
            Change("entity", "driver_id", "unchanged", 0),
            Change("feature_table", "driver_stats", "unchanged", 1),
        ]
        assert client.apply([DRIVER, table("./data/x/")])[1].action == "unchanged"
    assert not (elsewhere / ".potluck").exists()


def test_apply_with_embedded_defaults_resolves_against_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None
) -> None:
    monkeypatch.chdir(tmp_path)
    with Client() as client:
        client.apply([DRIVER, table("data/x")])
        assert stored_path(client) == f"{tmp_path}/data/x"
        assert client.apply(table("data/x"))[0].action == "unchanged"


def test_an_explicit_root_wins_and_urls_are_stored_as_given(tmp_path: Path) -> None:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        client.apply([DRIVER, table("data/x")], root=tmp_path / "defs")
        assert stored_path(client) == f"{tmp_path}/defs/data/x"
        planned = client.apply(table("s3://bucket/driver_stats"), dry_run=True)
        assert planned[0].details == (
            f"batch_source.path '{tmp_path}/defs/data/x' -> 's3://bucket/driver_stats'",
        )
        client.apply(table(f"file://{tmp_path}/driver%20stats"))
        assert stored_path(client) == f"{tmp_path}/driver stats"


def test_home_is_expanded_at_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        client.apply([DRIVER, table("~/features/x")])
        assert stored_path(client) == f"{tmp_path}/home/features/x"


def test_a_table_stored_relative_before_shows_the_change_to_absolute_in_plan(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path}/registry.db"
    old = SqlRegistry(url)  # as an apply from before this change stored it
    try:
        old.apply("default", [DRIVER, table("data/x")])
    finally:
        old.close()
    with Client(settings=Settings(registry=url, root=tmp_path)) as client:
        assert stored_path(client) == "data/x"
        detail = f"batch_source.path 'data/x' -> '{tmp_path}/data/x'"
        planned = client.apply(table("data/x"), dry_run=True)
        assert planned == [Change("feature_table", "driver_stats", "update", 2, (detail,))]
        assert stored_path(client) == "data/x"
        assert client.apply(table("data/x")) == planned
        assert stored_path(client) == f"{tmp_path}/data/x"
        assert client.apply(table("data/x"))[0].action == "unchanged"


# ---- potluck plan / apply -f ---------------------------------------------------------------------

DEFINITIONS = """\
entities:
  - {name: driver_id, value_type: INT64}
feature_tables:
  - name: driver_stats
    entities: [driver_id]
    features: [{name: conv_rate, value_type: DOUBLE}]
    batch_source: {path: data/x, event_timestamp_column: event_timestamp}
"""

runner = CliRunner()


def cli(*args: str) -> Result:
    return runner.invoke(app, list(args))


def cli_json(*args: str) -> Any:
    result = cli(*args, "--output", "json")
    assert (result.exit_code, result.stderr) == (0, ""), (result.stdout, result.exception)
    return json.loads(result.stdout)


def actions(changes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c["name"], c["action"]) for c in changes]


@pytest.fixture()
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_env: None) -> Iterator[Path]:
    """``defs/defs.yaml``, and two empty working folders ``a`` and ``b``."""
    (tmp_path / "defs").mkdir()
    (tmp_path / "defs" / "defs.yaml").write_text(DEFINITIONS)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.setenv("POTLUCK_REGISTRY", f"sqlite:///{tmp_path}/registry.db")
    yield tmp_path


def test_cli_apply_without_potluck_yaml_resolves_against_the_definitions_file_folder(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folders / "a")
    applied = cli_json("apply", "-f", "../defs/defs.yaml")
    assert actions(applied) == [("driver_id", "create"), ("driver_stats", "create")]
    described = cli_json("feature-tables", "describe", "driver_stats")
    assert described["batch_source"]["path"] == f"{folders}/defs/data/x"
    monkeypatch.chdir(folders / "b")
    again = cli_json("plan", "-f", str(folders / "defs" / "defs.yaml"))
    assert actions(again) == [("driver_id", "unchanged"), ("driver_stats", "unchanged")]
    assert actions(cli_json("apply", "-f", "../defs/defs.yaml"))[1] == ("driver_stats", "unchanged")


def test_cli_apply_with_potluck_yaml_resolves_against_its_folder(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = folders / "potluck.yaml"
    config.write_text("project: default\n")
    monkeypatch.chdir(folders / "a")
    cli_json("--config", str(config), "apply", "-f", "../defs/defs.yaml")
    described = cli_json("--config", str(config), "feature-tables", "describe", "driver_stats")
    assert described["batch_source"]["path"] == f"{folders}/data/x"
    monkeypatch.chdir(folders)  # ./potluck.yaml
    assert actions(cli_json("plan", "-f", "defs/defs.yaml"))[1] == ("driver_stats", "unchanged")


def test_cli_plan_shows_a_relative_stored_path_becoming_absolute(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = SqlRegistry(f"sqlite:///{folders}/registry.db")
    try:
        old.apply("default", [DRIVER, table("data/x")])
    finally:
        old.close()
    monkeypatch.chdir(folders / "a")
    assert cli_json("plan", "-f", "../defs/defs.yaml") == [
        {
            "kind": "entity",
            "name": "driver_id",
            "action": "unchanged",
            "revision": 0,
            "details": [],
        },
        {
            "kind": "feature_table",
            "name": "driver_stats",
            "action": "update",
            "revision": 2,
            "details": [f"batch_source.path 'data/x' -> '{folders}/defs/data/x'"],
        },
    ]


def test_cli_refuses_an_escaping_partition_column_naming_file_line_and_field(
    folders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(folders / "a")
    bad = DEFINITIONS.replace(
        "event_timestamp_column: event_timestamp}",
        "event_timestamp_column: event_timestamp,\n"
        "                   date_partition_column: ../../../ESCAPED/day}",
    )
    (folders / "a" / "bad.yaml").write_text(bad)
    result = cli("apply", "-f", "bad.yaml")
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (
        "error: bad.yaml, line 8: batch_source.date_partition_column: invalid partition column "
        f"name '../../../ESCAPED/day': it contains '/'; {PARTITION_RULE}\n"
    )
    assert not (folders / "registry.db").exists()  # nothing was written


# ---- column and partition names -----------------------------------------------------------------


def file_source(**overrides: Any) -> FileSource:
    spec: dict[str, Any] = {"path": "/data/x", "event_timestamp_column": "event_timestamp"}
    return FileSource(**{**spec, **overrides})


def kafka_source(**overrides: Any) -> KafkaSource:
    spec: dict[str, Any] = {
        "bootstrap_servers": "127.0.0.1:9092",
        "topic": "driver_stats",
        "message_format": "json",
        "event_timestamp_column": "event_timestamp",
    }
    return KafkaSource(**{**spec, **overrides})


COLUMN_FIELDS: dict[str, Callable[[str], object]] = {
    "batch_source.event_timestamp_column": lambda v: file_source(event_timestamp_column=v),
    "batch_source.created_timestamp_column": lambda v: file_source(created_timestamp_column=v),
    "stream_source.event_timestamp_column": lambda v: kafka_source(event_timestamp_column=v),
    "stream_source.created_timestamp_column": lambda v: kafka_source(created_timestamp_column=v),
}

BAD_NAMES = [
    ("../../../ESCAPED/day", "it contains '/'"),
    ("/etc", "it contains '/'"),
    ("day\\..\\x", "it contains '\\'"),
    ("..", "it contains '..'"),
    ("day..1", "it contains '..'"),
    ("day=2024-01-01", "it contains '='"),
    ("day\x00", "it contains the control character '\\x00'"),
    ("day\nx", "it contains the control character '\\n'"),
    ("day\tx", "it contains the control character '\\t'"),
    ("day\x7f", "it contains the control character '\\x7f'"),
    (" day", "it starts or ends with whitespace"),
    ("day ", "it starts or ends with whitespace"),
    ("day\u00a0", "it starts or ends with whitespace"),
]


@pytest.mark.parametrize(("value", "reason"), BAD_NAMES)
@pytest.mark.parametrize("field", COLUMN_FIELDS)
def test_a_bad_column_name_is_refused_naming_the_field(field: str, value: str, reason: str) -> None:
    with pytest.raises(DefinitionError) as info:
        COLUMN_FIELDS[field](value)
    assert info.value.message == f"{field}: invalid column name {value!r}: {reason}; {COLUMN_RULE}"
    assert info.value.field == field


@pytest.mark.parametrize(("value", "reason"), BAD_NAMES)
@pytest.mark.parametrize("source", ["batch_source", "stream_source"])
def test_a_bad_field_mapping_key_or_value_is_refused(source: str, value: str, reason: str) -> None:
    build = file_source if source == "batch_source" else kafka_source
    field = f"{source}.field_mapping"
    with pytest.raises(DefinitionError) as info:
        build(field_mapping={value: "conv_rate"})
    assert info.value.message == (
        f"{field} key: invalid column name {value!r}: {reason}; {COLUMN_RULE}"
    )
    assert info.value.field == field
    with pytest.raises(DefinitionError) as info:
        build(field_mapping={"rate": value})
    assert info.value.message == (
        f"{field}['rate']: invalid column name {value!r}: {reason}; {COLUMN_RULE}"
    )
    assert info.value.field == field


PARTITION_ONLY = [
    ("_day", "it starts with '_'"),
    (".day", "it starts with '.'"),
    ("é" * 122 + "x", "it is 245 bytes in UTF-8"),
]


@pytest.mark.parametrize(("value", "reason"), BAD_NAMES + PARTITION_ONLY)
def test_a_bad_partition_column_is_refused_saying_what_a_valid_one_is(
    value: str, reason: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        file_source(date_partition_column=value)
    assert info.value.message == (
        f"batch_source.date_partition_column: invalid partition column name {value!r}: "
        f"{reason}; {PARTITION_RULE}"
    )
    assert info.value.field == "batch_source.date_partition_column"


@pytest.mark.parametrize(
    "value", ["event_timestamp", "Event Time", "EVENT_TS", "évènement", "a.b", "ts-1", "x" * 300]
)
def test_names_from_other_tools_are_accepted(value: str) -> None:
    source = file_source(
        event_timestamp_column=value,
        created_timestamp_column=value,
        field_mapping={value: "conv_rate"},
    )
    assert (source.event_timestamp_column, source.field_mapping) == (value, {value: "conv_rate"})
    assert kafka_source(event_timestamp_column=value).event_timestamp_column == value


@pytest.mark.parametrize("value", ["day", "Day Of Event", "dt.day", "é" * 122, "d" * 244])
def test_good_partition_columns_are_accepted(value: str) -> None:
    assert file_source(date_partition_column=value).date_partition_column == value


def test_underscore_is_fine_for_a_column_but_not_for_a_partition_folder() -> None:
    assert file_source(created_timestamp_column="_created").created_timestamp_column == "_created"
    with pytest.raises(DefinitionError):
        file_source(date_partition_column="_created")


def _is_valid_column(text: str) -> bool:
    """The rule, written out character by character."""
    controls = {chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]}
    return (
        text != ""
        and not any(c in "/\\=" or c in controls for c in text)
        and ".." not in text
        and not text[0].isspace()
        and not text[-1].isspace()
    )


NAME_TEXT = st.text(
    alphabet=st.sampled_from(list("aZ9_ .-=/\\\x00\n\x85é\u00a0\u2028")), max_size=8
)


@given(NAME_TEXT)
def test_the_column_rule_matches_its_statement(text: str) -> None:
    try:
        check_column_name(text, "f")
    except DefinitionError:
        accepted = False
    else:
        accepted = True
    assert accepted == _is_valid_column(text)


@given(NAME_TEXT, st.dates(min_value=date(1970, 1, 1), max_value=date(2100, 12, 31)))
def test_every_accepted_partition_column_makes_one_visible_folder_inside_the_source(
    text: str, day: date
) -> None:
    try:
        check_partition_column(text, "f")
    except DefinitionError:
        assert not _is_valid_column(text) or text[0] in "_."
        return
    folder = f"{text}={day.isoformat()}"
    assert posixpath.dirname(posixpath.normpath(posixpath.join("/src", folder))) == "/src"
    assert not folder.startswith(("_", "."))
    assert all(unicodedata.category(c) != "Cc" for c in folder)
    relative = f"{folder}/part-1.parquet"
    assert check_inside_source(relative, "driver_stats") == relative


# ---- ingest's last check on the paths it writes ------------------------------------------------


@pytest.mark.parametrize(
    "relative",
    ["part-1.parquet", "day=2024-05-01/part-1.parquet", "Day Of Event=2024-05-01/p.parquet"],
)
def test_ingest_may_write_inside_the_source_folder(relative: str) -> None:
    assert check_inside_source(relative, "driver_stats") == relative


@pytest.mark.parametrize(
    ("relative", "problem"),
    [
        ("../../../ESCAPED/day=2024-05-01/p.parquet", "it has the path component '..'"),
        ("/etc/day=2024-05-01/p.parquet", "it is an absolute path"),
        ("day=2024-05-01//p.parquet", "it has the path component ''"),
        ("./p.parquet", "it has the path component '.'"),
        ("a\\..\\b=2024-05-01/p.parquet", "its component 'a\\\\..\\\\b=2024-05-01' contains '\\'"),
        (
            "d\x00=2024-05-01/p.parquet",
            "its component 'd\\x00=2024-05-01' contains the control character '\\x00'",
        ),
        (
            "_day=2024-05-01/p.parquet",
            "its folder '_day=2024-05-01' starts with '_', and readers skip such folders",
        ),
        (
            ".day=2024-05-01/p.parquet",
            "its folder '.day=2024-05-01' starts with '.', and readers skip such folders",
        ),
    ],
)
def test_ingest_refuses_a_path_that_leaves_or_hides_in_the_source_folder(
    relative: str, problem: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        check_inside_source(relative, "driver_stats")
    assert info.value.message == (
        f"feature table driver_stats: ingest refuses to write {relative!r}: {problem}; the "
        "partition folder comes from batch_source.date_partition_column, so apply the table "
        f"again with a valid one ({PARTITION_RULE})"
    )
    assert info.value.attrs() == {
        "field": "batch_source.date_partition_column",
        "table": "driver_stats",
        "path": relative,
    }


def test_the_docs_state_the_rules() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    text = " ".join(" ".join(line.removeprefix("> ") for line in docs.splitlines()).split())
    assert "## How source paths resolve" in docs
    assert "## Source column names" in docs
    for phrase in (
        "the folder of `potluck.yaml`",
        "the folder of the definitions file",
        "the working folder",
        "`file:///`",
        "`~`",
    ):
        assert phrase in text, phrase
    assert COLUMN_RULE in text
