"""Project data isolation: a table may name only its own project's folders and topics.

The registry refuses, at apply time (the SDK, the CLI and Core alike), a source location outside
the project's data roots unless an administrator allowed it. Registries: SQLite, PostgreSQL, and
RemoteRegistry through a Core server.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from _security_support import BACKENDS, DRIVER, open_registry, table

from potluck import Client
from potluck.config import Settings, load_settings
from potluck.errors import ConfigError, DefinitionError, NotFoundError, ValidationError
from potluck.registry.base import Registry
from potluck.registry.isolation import DataIsolation, check_sources


def roots(tmp_path: Path, **settings: object) -> DataIsolation:
    isolation = DataIsolation.from_settings(
        Settings(root=tmp_path, data_root="data", **settings)  # type: ignore[arg-type]
    )
    assert isolation is not None
    return isolation


@pytest.fixture(params=BACKENDS)
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    with open_registry(request.param, request, tmp_path, roots(tmp_path)) as reg:
        yield reg


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


def test_a_table_naming_another_projects_folder_is_refused_at_apply(
    registry: Registry, tmp_path: Path
) -> None:
    a_folder = str(tmp_path / "data" / "a" / "stats")
    registry.apply("a", [DRIVER, table("stats", a_folder)])
    registry.create_project("b")
    for dry_run in (True, False):
        with pytest.raises(DefinitionError) as info:
            registry.apply("b", [DRIVER, table("steal", a_folder)], dry_run=dry_run)
        assert info.value.message == refusal(
            "b", "steal", "batch_source.path", a_folder, str(tmp_path / "data" / "b")
        )
        assert info.value.attrs() == {
            "field": "batch_source.path",
            "table": "steal",
            "location": a_folder,
            "project": "b",
        }
    assert registry.list("b", "feature_table") == []
    own = str(tmp_path / "data" / "b" / "stats")
    assert [c.action for c in registry.apply("b", [DRIVER, table("stats", own)])] == [
        "create",
        "create",
    ]


def test_an_allowed_location_is_accepted_listed_and_idempotent(
    registry: Registry, tmp_path: Path
) -> None:
    shared = str(tmp_path / "shared")
    registry.create_project("b")
    with pytest.raises(DefinitionError):
        registry.apply("b", [DRIVER, table("t", shared + "/t")])
    first = registry.allow_location("b", shared)
    again = registry.allow_location("b", shared)
    assert (first.project, first.location) == ("b", shared)
    assert again == first
    assert registry.list_allowed_locations("b") == [first]
    assert registry.list_allowed_locations("a") == []
    assert registry.apply("b", [DRIVER, table("t", shared + "/t")])[1].action == "create"
    with pytest.raises(NotFoundError) as info:
        registry.allow_location("nope", shared)
    assert info.value.message == (
        "project nope not found; create it first (potluck projects create nope)"
    )
    with pytest.raises(ValidationError) as bad:
        registry.allow_location("b", "relative/folder")
    assert bad.value.message == (
        "location: 'relative/folder' is relative; an allowed location is stored in the registry "
        "and holds for every client, so give an absolute folder (such as /srv/shared/stats), a "
        "URL such as s3://bucket/prefix, or kafka:PREFIX"
    )


def test_topics_must_start_with_the_projects_prefix(registry: Registry, tmp_path: Path) -> None:
    registry.create_project("b")
    with pytest.raises(DefinitionError) as info:
        registry.apply("b", [DRIVER, table("t", topic="a.rides")])
    assert info.value.message == topic_refusal("b", "t", "stream_source.topic", "a.rides", "b.")
    assert registry.apply("b", [DRIVER, table("t", topic="b.rides")])[1].action == "create"
    registry.allow_location("b", "kafka:shared.")
    assert registry.apply("b", [table("u", topic="shared.rides")])[0].action == "create"


def test_containment_is_by_whole_components_after_links_and_dots(tmp_path: Path) -> None:
    isolation = roots(tmp_path)
    a = tmp_path / "data" / "a"
    (tmp_path / "data" / "b").mkdir(parents=True)
    a.mkdir(parents=True)
    os.symlink(a, tmp_path / "data" / "b" / "link")

    def check(path: str) -> None:
        check_sources("b", [table("t", path)], isolation, [])

    check(str(tmp_path / "data" / "b" / "x"))
    for outside in (
        tmp_path / "data" / "bb" / "x",  # a sibling sharing the prefix
        tmp_path / "data" / "b" / ".." / "a" / "x",  # dots
        tmp_path / "data" / "b" / "link" / "x",  # a link into project a's folder
        tmp_path / "data",
    ):
        with pytest.raises(DefinitionError):
            check(str(outside))
    with pytest.raises(DefinitionError):
        check("data/b/x")  # relative: names no one place


def test_url_roots_compare_scheme_bucket_and_normalised_path(tmp_path: Path) -> None:
    isolation = roots(tmp_path, data_roots={"b": ["s3://bucket/b", str(tmp_path / "b")]})
    assert isolation.roots("b") == ("s3://bucket/b", str(tmp_path / "b"))
    assert isolation.roots("a") == (str(tmp_path / "data" / "a"),)
    check_sources("b", [table("t", "s3://bucket/b/t")], isolation, [])
    check_sources("b", [table("t", "S3://bucket/b/x/../t")], isolation, [])
    for outside in ("s3://bucket/a/t", "s3://other/b/t", "gs://bucket/b/t", "s3://bucket/b/../a"):
        with pytest.raises(DefinitionError):
            check_sources("b", [table("t", outside)], isolation, [])


def test_isolation_settings_need_isolation_on(tmp_path: Path) -> None:
    (tmp_path / "potluck.yaml").write_text("data_roots: {b: [/srv/b]}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "potluck.yaml", environ={})
    assert info.value.message == (
        "invalid setting 'data_roots' = {'b': ['/srv/b']}: it takes effect only with project "
        "data isolation on, and data_isolation: auto is on only when auth authenticates callers "
        "(tokens_file, tokens or jwt) or data_root is set; set data_isolation: on (or data_root) "
        f"too (read from {tmp_path / 'potluck.yaml'})"
    )
    assert DataIsolation.from_settings(Settings(root=tmp_path)) is None


# ---- the probe, end to end through the SDK ------------------------------------------------


def rows(value: int) -> pd.DataFrame:
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return pd.DataFrame({"driver_id": [1], "ts": [now], "trips": [value]})


def online_value(client: Client, name: str) -> object:
    client.start_offline_to_online_ingestion(name).wait()
    return client.get_online_features([f"{name}:trips"], [{"driver_id": 1}]).to_dict()[
        f"{name}__trips"
    ][0]


@pytest.fixture()
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def clients(folder: Path, config: str) -> tuple[Client, Client]:
    (folder / "potluck.yaml").write_text(config)
    settings = load_settings(folder / "potluck.yaml", environ={})
    a = Client(settings=settings.model_copy(update={"project": "a"}))
    b = Client(settings=settings.model_copy(update={"project": "b"}))
    a.apply([DRIVER, table("stats", "data/a/stats")])
    a.ingest("stats", rows(4242))
    return a, b


def test_without_isolation_the_probe_reads_and_overwrites_another_projects_value(
    folder: Path,
) -> None:
    a, b = clients(folder, "project: a\n")
    with a, b:
        b.apply([DRIVER, table("steal", str(folder / "data" / "a" / "stats"))])
        assert online_value(b, "steal") == 4242
        b.ingest("steal", rows(-1))
        assert online_value(a, "stats") == -1


def test_with_isolation_the_probe_is_refused_and_the_value_stays(folder: Path) -> None:
    a, b = clients(folder, "project: a\ndata_root: data\n")
    with a, b:
        location = str(folder / "data" / "a" / "stats")
        with pytest.raises(DefinitionError) as info:
            b.apply([DRIVER, table("steal", location)])
        assert info.value.message == refusal(
            "b", "steal", "batch_source.path", location, str(folder / "data" / "b")
        )
        assert online_value(a, "stats") == 4242


def test_online_keys_are_isolated_by_project(folder: Path) -> None:
    a, b = clients(folder, "project: a\ndata_root: data\n")
    with a, b:
        b.apply([DRIVER, table("stats", "data/b/stats")])
        b.ingest("stats", rows(7))
        assert online_value(b, "stats") == 7
        assert online_value(a, "stats") == 4242
