"""The registry contract: one behaviour spec run against every Registry implementation.

``sqlite``: SqlRegistry on a file in tmp_path. ``postgres``: SqlRegistry on a fresh PostgreSQL
database. ``core``: RemoteRegistry talking gRPC to a real Core server (port 0) over a SQLite
SqlRegistry. Every test asserts exact values, actions, revisions and error messages.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from potluck import (
    Entity,
    Feature,
    FeatureTable,
    FileSource,
    KafkaSource,
    ProtoFormat,
    ValueType,
)
from potluck.errors import (
    AlreadyExistsError,
    ConflictError,
    DefinitionError,
    IncompatibleChangeError,
    NotFoundError,
    PotluckError,
    ValidationError,
)
from potluck.registry.base import Change, JobRecord, Project, Registry

ENTITY = "entity"
TABLE = "feature_table"

DRIVER = Entity(
    name="driver_id", value_type=ValueType.INT64, description="a driver", labels={"team": "rides"}
)
CITY = Entity(name="city", value_type=ValueType.STRING)


def stats(**overrides: Any) -> FeatureTable:
    """driver_stats, with every field set; ``overrides`` replace fields."""
    spec: dict[str, Any] = {
        "name": "driver_stats",
        "entities": ["driver_id"],
        "features": [
            Feature(name="conv_rate", value_type=ValueType.DOUBLE, labels={"unit": "ratio"}),
            Feature(name="trips", value_type=ValueType.INT64),
        ],
        "max_age": timedelta(hours=2),
        "batch_source": FileSource(
            path="/data/driver_stats",
            event_timestamp_column="event_ts",
            created_timestamp_column="created_ts",
            field_mapping={"rate": "conv_rate"},
        ),
        "stream_source": KafkaSource(
            bootstrap_servers="127.0.0.1:9092",
            topic="driver_stats",
            message_format=ProtoFormat(class_path="events_pb2.DriverStats"),
            event_timestamp_column="event_ts",
        ),
        "labels": {"team": "rides"},
    }
    spec.update(overrides)
    return FeatureTable(**spec)


def feature(name: str, value_type: ValueType = ValueType.DOUBLE) -> Feature:
    return Feature(name=name, value_type=value_type)


def raised(call: Callable[[], object], cls: type[PotluckError] = PotluckError) -> PotluckError:
    with pytest.raises(cls) as info:
        call()
    return info.value


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "core"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    from potluck.registry.sql import SqlRegistry

    if request.param == "sqlite":
        reg: Registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
        yield reg
        reg.close()
    elif request.param == "postgres":
        reg = SqlRegistry(request.getfixturevalue("fresh_postgres_url"))
        yield reg
        reg.close()
    else:
        from potluck.registry.remote import RemoteRegistry
        from potluck.registry.server import start_core_server

        backing = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
        server = start_core_server(backing, port=0)
        reg = RemoteRegistry(server.address)
        yield reg
        reg.close()
        server.stop(0)
        backing.close()


def get_table(registry: Registry, name: str = "driver_stats", project: str = "p") -> FeatureTable:
    table = registry.get(project, TABLE, name)
    assert isinstance(table, FeatureTable)
    return table


# ---- apply ---------------------------------------------------------------------------------------


def test_apply_creates_objects_and_reapplying_changes_nothing(registry: Registry) -> None:
    changes = registry.apply("p", [DRIVER, stats()])
    assert changes == [
        Change(ENTITY, "driver_id", "create", 0, ()),
        Change(
            TABLE,
            "driver_stats",
            "create",
            1,
            ("+ feature conv_rate DOUBLE", "+ feature trips INT64"),
        ),
    ]
    again = registry.apply("p", [DRIVER, stats()])
    assert again == [
        Change(ENTITY, "driver_id", "unchanged", 0, ()),
        Change(TABLE, "driver_stats", "unchanged", 1, ()),
    ]
    assert registry.get("p", ENTITY, "driver_id") == DRIVER
    stored = get_table(registry)
    assert stored == stats()
    assert stored.revision == 1
    assert [r.revision for r in registry.history("p", TABLE, "driver_stats")] == [1]


def test_a_stored_table_reads_back_field_for_field(registry: Registry) -> None:
    registry.apply("p", [DRIVER, CITY, stats(entities=["driver_id", "city"])])
    stored = get_table(registry)
    expected = stats(entities=["driver_id", "city"])
    for field in dataclasses.fields(FeatureTable):
        if field.name != "revision":
            assert getattr(stored, field.name) == getattr(expected, field.name), field.name
    assert stored.entities == ("driver_id", "city")


def test_a_changed_table_gets_the_next_revision_and_its_old_spec_goes_to_history(
    registry: Registry,
) -> None:
    v1 = stats()
    v2 = stats(
        features=[*v1.features, feature("acc_rate", ValueType.INT64)],
        max_age=timedelta(hours=3),
        labels={"team": "rides", "tier": "gold"},
    )
    registry.apply("p", [DRIVER, v1])
    changes = registry.apply("p", [v2])
    assert changes == [
        Change(
            TABLE,
            "driver_stats",
            "update",
            2,
            (
                "+ feature acc_rate INT64",
                "max_age 2h -> 3h",
                "labels {'team': 'rides'} -> {'team': 'rides', 'tier': 'gold'}",
                "warning: raising max_age of driver_stats: values that already expired from the "
                "online store are not restored; run `potluck ingest-online driver_stats --full` to "
                "reload them",
            ),
        ),
    ]
    assert get_table(registry).revision == 2
    history = registry.history("p", TABLE, "driver_stats")
    assert [(r.revision, r.spec) for r in history] == [(1, v1), (2, v2)]
    assert all(r.applied_at.tzinfo is not None for r in history)
    assert history[0].applied_at <= history[1].applied_at
    assert abs(datetime.now(timezone.utc) - history[1].applied_at) < timedelta(minutes=1)
    assert registry.apply("p", [v2])[0].action == "unchanged"
    assert len(registry.history("p", TABLE, "driver_stats")) == 2


def test_source_changes_are_listed_line_by_line(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    moved = stats(
        batch_source=FileSource(path="/data/v2", event_timestamp_column="ts"),
        stream_source=None,
    )
    (change,) = registry.apply("p", [moved])
    assert change.details == (
        "batch_source.path '/data/driver_stats' -> '/data/v2'",
        "batch_source.event_timestamp_column event_ts -> ts",
        "batch_source.created_timestamp_column created_ts -> None",
        "batch_source.field_mapping {'rate': 'conv_rate'} -> {}",
        "stream_source removed",
    )


def test_changing_a_feature_type_needs_force(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    retyped = stats(
        features=[feature("conv_rate", ValueType.INT64), feature("trips", ValueType.INT64)]
    )
    error = raised(lambda: registry.apply("p", [retyped]), IncompatibleChangeError)
    assert error.message == (
        "feature table driver_stats: feature conv_rate changes type DOUBLE -> INT64; "
        "pass force=True (CLI --force) to allow it"
    )
    assert (error.table, error.feature) == ("driver_stats", "conv_rate")
    assert get_table(registry) == stats()
    assert get_table(registry).revision == 1
    (change,) = registry.apply("p", [retyped], force=True)
    assert change == Change(
        TABLE,
        "driver_stats",
        "update",
        2,
        (
            "~ feature conv_rate DOUBLE -> INT64 (forced)",
            "warning: feature conv_rate of driver_stats changes type DOUBLE -> INT64, which is "
            "not a lossless widening: values stored online as DOUBLE read as NULL_VALUE; run "
            "`potluck ingest-online driver_stats --full` to reload them",
            "~ feature conv_rate labels {'unit': 'ratio'} -> {}",
        ),
    )
    assert get_table(registry).feature("conv_rate").value_type is ValueType.INT64


def test_changing_a_tables_entities_needs_force(registry: Registry) -> None:
    registry.apply("p", [DRIVER, CITY, stats()])
    rekeyed = stats(entities=["driver_id", "city"])
    error = raised(lambda: registry.apply("p", [rekeyed]), IncompatibleChangeError)
    assert error.message == (
        "feature table driver_stats: entities change [driver_id] -> [driver_id, city]; "
        "pass force=True (CLI --force) to allow it"
    )
    (change,) = registry.apply("p", [rekeyed], force=True)
    assert change.details == (
        "entities [driver_id] -> [driver_id, city] (forced)",
        "warning: feature table driver_stats: its entities change, so values stored online under "
        "the old keys are no longer read (NOT_FOUND); run `potluck online purge driver_stats` to "
        "remove them and `potluck ingest-online driver_stats --full` to reload",
    )
    assert get_table(registry).entities == ("driver_id", "city")


def test_removed_features_are_archived_and_only_come_back_with_their_type(
    registry: Registry,
) -> None:
    registry.apply("p", [DRIVER, stats()])
    (change,) = registry.apply("p", [stats(features=[feature("conv_rate")])])
    assert change.details == (
        "~ feature conv_rate labels {'unit': 'ratio'} -> {}",
        "- feature trips (archived)",
    )
    back_as_double = stats(features=[feature("conv_rate"), feature("trips", ValueType.DOUBLE)])
    error = raised(lambda: registry.apply("p", [back_as_double]), IncompatibleChangeError)
    assert error.message == (
        "feature table driver_stats: feature trips was archived with type INT64 and cannot come "
        "back as DOUBLE; pass force=True (CLI --force) to allow it"
    )
    assert get_table(registry).revision == 2
    (change,) = registry.apply(
        "p", [stats(features=[feature("conv_rate"), feature("trips", ValueType.INT64)])]
    )
    assert change == Change(
        TABLE, "driver_stats", "update", 3, ("+ feature trips INT64 (restored from archive)",)
    )


def test_an_archived_feature_comes_back_with_another_type_when_forced(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats(features=[feature("a"), feature("b", ValueType.INT64)])])
    registry.apply("p", [stats(features=[feature("a")])])
    forced = stats(features=[feature("a"), feature("b", ValueType.STRING)])
    (change,) = registry.apply("p", [forced], force=True)
    assert change.details == (
        "+ feature b STRING (archived as INT64; forced)",
        "warning: feature b of driver_stats changes type INT64 -> STRING, which is not a lossless "
        "widening: values stored online as INT64 read as NULL_VALUE; run "
        "`potluck ingest-online driver_stats --full` to reload them",
    )
    # Once back, the archive no longer holds it: removing and re-adding as STRING is fine.
    registry.apply("p", [stats(features=[feature("a")])])
    (change,) = registry.apply("p", [forced])
    assert change.details == ("+ feature b STRING (restored from archive)",)


def test_a_table_naming_an_unknown_entity_is_rejected(registry: Registry) -> None:
    orphan = stats(entities=["driver_id", "rider_id"])
    error = raised(lambda: registry.apply("p", [DRIVER, orphan]), DefinitionError)
    assert error.message == (
        "feature table driver_stats: entity rider_id is not defined; apply it in the same call "
        "or before the table"
    )
    assert error.field == "feature_table.entities"
    assert error.entity == "rider_id"
    assert registry.list("p", ENTITY) == []
    assert registry.list_projects() == []


def test_an_entity_applied_earlier_is_known_to_later_applies(registry: Registry) -> None:
    registry.apply("p", [DRIVER])
    assert registry.apply("p", [stats()])[0].action == "create"


def test_changing_the_type_of_an_entity_in_use_needs_force(registry: Registry) -> None:
    registry.apply("p", [DRIVER, CITY, stats()])
    as_string = Entity(
        name="driver_id",
        value_type=ValueType.STRING,
        description="a driver",
        labels={"team": "rides"},
    )
    error = raised(lambda: registry.apply("p", [as_string]), IncompatibleChangeError)
    assert error.message == (
        "entity driver_id changes type INT64 -> STRING but feature table driver_stats uses it; "
        "pass force=True (CLI --force) to allow it"
    )
    (change,) = registry.apply("p", [as_string], force=True)
    assert change == Change(
        ENTITY,
        "driver_id",
        "update",
        0,
        (
            "value_type INT64 -> STRING",
            "warning: feature table driver_stats: entity driver_id changes type, so values stored "
            "online under the old keys are no longer read (NOT_FOUND); run "
            "`potluck online purge driver_stats` to remove them and "
            "`potluck ingest-online driver_stats --full` to reload",
        ),
    )
    # An entity no table uses changes type freely.
    (change,) = registry.apply("p", [Entity(name="city", value_type=ValueType.INT64)])
    assert change == Change(ENTITY, "city", "update", 0, ("value_type STRING -> INT64",))


def test_an_object_given_twice_is_rejected(registry: Registry) -> None:
    error = raised(lambda: registry.apply("p", [DRIVER, DRIVER]), ValidationError)
    assert error.message == "apply got entity driver_id twice; pass each object once"


# ---- transactions --------------------------------------------------------------------------------


def test_dry_run_returns_the_plan_and_writes_nothing(registry: Registry) -> None:
    planned = registry.apply("p", [DRIVER, stats()], dry_run=True)
    assert [(c.name, c.action, c.revision) for c in planned] == [
        ("driver_id", "create", 0),
        ("driver_stats", "create", 1),
    ]
    assert registry.list_projects() == []
    assert registry.list("p", TABLE) == []
    registry.apply("p", [DRIVER, stats()])
    planned = registry.apply("p", [stats(max_age=timedelta(hours=3))], dry_run=True)
    assert planned == [
        Change(
            TABLE,
            "driver_stats",
            "update",
            2,
            (
                "max_age 2h -> 3h",
                "warning: raising max_age of driver_stats: values that already expired from the "
                "online store are not restored; run `potluck ingest-online driver_stats --full` to "
                "reload them",
            ),
        )
    ]
    assert get_table(registry).revision == 1
    assert get_table(registry).max_age == timedelta(hours=2)


def test_dry_run_raises_what_apply_would_raise(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    retyped = stats(features=[feature("conv_rate", ValueType.STRING)])
    raised(lambda: registry.apply("p", [retyped], dry_run=True), IncompatibleChangeError)


def test_a_failing_apply_writes_nothing(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    good = FeatureTable(name="good", entities=["driver_id"], features=[feature("x")])
    updated = stats(max_age=timedelta(hours=5))
    bad = FeatureTable(name="bad", entities=["nobody"], features=[feature("x")])
    raised(lambda: registry.apply("p", [CITY, good, updated, bad]), DefinitionError)
    assert [t.name for t in registry.list("p", TABLE)] == ["driver_stats"]
    assert [e.name for e in registry.list("p", ENTITY)] == ["driver_id"]
    assert get_table(registry).revision == 1
    assert get_table(registry).max_age == timedelta(hours=2)
    # A failure in the middle of the batch (an incompatible change) rolls back the rest too.
    retyped = stats(features=[feature("conv_rate", ValueType.STRING)])
    raised(lambda: registry.apply("p", [CITY, good, retyped]), IncompatibleChangeError)
    assert [t.name for t in registry.list("p", TABLE)] == ["driver_stats"]
    assert [e.name for e in registry.list("p", ENTITY)] == ["driver_id"]


def test_a_new_project_is_not_created_by_a_failing_apply(registry: Registry) -> None:
    raised(lambda: registry.apply("fresh", [stats()]), DefinitionError)
    assert registry.list_projects() == []


# ---- optimistic concurrency ----------------------------------------------------------------------


def test_applying_a_table_read_before_someone_elses_change_is_a_conflict(
    registry: Registry,
) -> None:
    registry.apply("p", [DRIVER, stats()])
    mine = get_table(registry)
    theirs = get_table(registry)
    registry.apply("p", [dataclasses.replace(theirs, max_age=timedelta(hours=4))])
    stale = dataclasses.replace(mine, features=(*mine.features, feature("acc_rate")))
    error = raised(lambda: registry.apply("p", [stale]), ConflictError)
    assert error.message == (
        "feature table driver_stats was changed by someone else (revision 2, you had 1); "
        "re-read it and apply again"
    )
    assert get_table(registry).revision == 2
    fresh = get_table(registry)
    (change,) = registry.apply(
        "p", [dataclasses.replace(fresh, features=(*fresh.features, feature("acc_rate")))]
    )
    assert (change.action, change.revision) == ("update", 3)


def test_a_table_built_by_hand_replaces_whatever_is_stored(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    registry.apply("p", [stats(max_age=timedelta(hours=4))])
    (change,) = registry.apply("p", [stats(max_age=timedelta(hours=5))])
    assert (change.action, change.revision) == ("update", 3)


def test_applying_a_table_read_before_it_was_deleted_is_a_conflict(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    mine = get_table(registry)
    registry.delete("p", TABLE, "driver_stats")
    error = raised(lambda: registry.apply("p", [mine]), ConflictError)
    assert error.message == (
        "feature table driver_stats was deleted by someone else (you had revision 1); "
        "re-read it and apply again"
    )


# ---- get / list / delete -------------------------------------------------------------------------


def test_list_returns_objects_sorted_by_name_and_filters_on_every_label(
    registry: Registry,
) -> None:
    tables = [
        FeatureTable(
            name="zeta",
            entities=["driver_id"],
            features=[feature("x")],
            labels={"team": "rides", "tier": "gold"},
        ),
        FeatureTable(
            name="alpha", entities=["driver_id"], features=[feature("x")], labels={"team": "rides"}
        ),
        FeatureTable(
            name="mid",
            entities=["driver_id"],
            features=[feature("x")],
            labels={"team": "maps", "tier": "gold"},
        ),
    ]
    registry.apply("p", [DRIVER, CITY, *tables])

    def names(labels: dict[str, str] | None) -> list[str]:
        return [t.name for t in registry.list("p", TABLE, labels)]

    assert names(None) == ["alpha", "mid", "zeta"]
    assert names({}) == ["alpha", "mid", "zeta"]
    assert names({"team": "rides"}) == ["alpha", "zeta"]
    assert names({"tier": "gold"}) == ["mid", "zeta"]
    assert names({"team": "rides", "tier": "gold"}) == ["zeta"]
    assert names({"team": "rides", "tier": "silver"}) == []
    assert names({"owner": "x"}) == []
    assert [e.name for e in registry.list("p", ENTITY)] == ["city", "driver_id"]
    assert [e.name for e in registry.list("p", ENTITY, {"team": "rides"})] == ["driver_id"]
    assert [t.revision for t in registry.list("p", TABLE)] == [1, 1, 1]


def test_projects_are_separate_namespaces(registry: Registry) -> None:
    registry.apply("a", [DRIVER, stats()])
    registry.apply("b", [DRIVER, stats(features=[feature("other")])])
    assert get_table(registry, project="a").feature_names == ("conv_rate", "trips")
    assert get_table(registry, project="b").feature_names == ("other",)
    assert registry.list("c", TABLE) == []


def test_missing_objects_raise_not_found_with_exact_messages(registry: Registry) -> None:
    registry.apply("p", [DRIVER])
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: registry.get("p", TABLE, "nope"), "feature table nope not found in project p"),
        (lambda: registry.get("p", ENTITY, "nope"), "entity nope not found in project p"),
        (lambda: registry.get("q", ENTITY, "driver_id"), "entity driver_id not found in project q"),
        (lambda: registry.delete("p", TABLE, "nope"), "feature table nope not found in project p"),
        (lambda: registry.history("p", TABLE, "nope"), "feature table nope not found in project p"),
        (lambda: registry.get_job("p", "j1"), "job j1 not found in project p"),
        (lambda: registry.archive_project("nope"), "project nope not found"),
    ]
    for call, message in cases:
        assert raised(call, NotFoundError).message == message


def test_an_unknown_kind_is_rejected(registry: Registry) -> None:
    error = raised(lambda: registry.get("p", "view", "x"), ValidationError)
    assert error.message == "unknown kind 'view'; expected one of entity, feature_table"


def test_delete_removes_the_object_and_keeps_its_history(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    registry.apply("p", [stats(max_age=timedelta(hours=3))])
    registry.delete("p", TABLE, "driver_stats")
    assert raised(lambda: registry.get("p", TABLE, "driver_stats"), NotFoundError)
    assert registry.list("p", TABLE) == []
    assert [r.revision for r in registry.history("p", TABLE, "driver_stats")] == [1, 2]
    assert raised(lambda: registry.delete("p", TABLE, "driver_stats"), NotFoundError)
    # Re-creating continues the revision numbering; the features were archived by the delete.
    (change,) = registry.apply("p", [stats()])
    assert (change.action, change.revision) == ("create", 3)
    assert change.details == (
        "+ feature conv_rate DOUBLE (restored from archive)",
        "+ feature trips INT64 (restored from archive)",
    )
    assert [r.revision for r in registry.history("p", TABLE, "driver_stats")] == [1, 2, 3]


def test_a_deleted_tables_features_keep_their_types(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    registry.delete("p", TABLE, "driver_stats")
    retyped = stats(features=[feature("trips", ValueType.STRING)])
    error = raised(lambda: registry.apply("p", [retyped]), IncompatibleChangeError)
    assert error.message == (
        "feature table driver_stats: feature trips was archived with type INT64 and cannot come "
        "back as STRING; pass force=True (CLI --force) to allow it"
    )


def test_an_entity_in_use_cannot_be_deleted(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    error = raised(lambda: registry.delete("p", ENTITY, "driver_id"), ValidationError)
    assert error.message == (
        "entity driver_id is used by feature table driver_stats in project p; delete the table "
        "or change its entities first"
    )
    registry.delete("p", TABLE, "driver_stats")
    registry.delete("p", ENTITY, "driver_id")
    assert registry.list("p", ENTITY) == []
    error = raised(lambda: registry.apply("p", [stats()]), DefinitionError)
    assert error.field == "feature_table.entities"


# ---- projects ------------------------------------------------------------------------------------


def test_projects_are_created_listed_and_archived(registry: Registry) -> None:
    assert registry.list_projects() == []
    created = registry.create_project("beta")
    assert (created.name, created.archived) == ("beta", False)
    registry.apply("alpha", [DRIVER])  # apply creates its project
    assert [p.name for p in registry.list_projects()] == ["alpha", "beta"]
    error = raised(lambda: registry.create_project("beta"), AlreadyExistsError)
    assert error.message == "project beta already exists"
    archived = registry.archive_project("alpha")
    assert (archived.name, archived.archived) == ("alpha", True)
    assert [p.name for p in registry.list_projects()] == ["beta"]
    everything = registry.list_projects(include_archived=True)
    assert [(p.name, p.archived) for p in everything] == [("alpha", True), ("beta", False)]
    assert all(isinstance(p, Project) and p.created_at is not None for p in everything)
    assert raised(lambda: registry.create_project("alpha"), AlreadyExistsError)


def test_an_archived_project_is_readable_but_refuses_changes(registry: Registry) -> None:
    registry.apply("p", [DRIVER, stats()])
    registry.archive_project("p")
    error = raised(lambda: registry.apply("p", [CITY]), ValidationError)
    assert error.message == "project p is archived; it accepts no more changes"
    assert raised(lambda: registry.delete("p", TABLE, "driver_stats"), ValidationError)
    assert get_table(registry) == stats()
    assert [t.name for t in registry.list("p", TABLE)] == ["driver_stats"]
    assert registry.archive_project("p").archived is True


def test_a_project_name_must_be_a_valid_name(registry: Registry) -> None:
    error = raised(lambda: registry.create_project("Bad-Name"), DefinitionError)
    assert error.field == "project"
    assert raised(lambda: registry.apply("Bad-Name", [DRIVER]), DefinitionError)


# ---- jobs ----------------------------------------------------------------------------------------


def test_job_records_round_trip_and_list_newest_first(registry: Registry) -> None:
    body = {
        "kind": "offline_to_online",
        "status": "RUNNING",
        "stats": {"rows_read": 10},
        "tables": ["driver_stats"],
        "error": None,
        "ratio": 0.5,
    }
    registry.put_job(JobRecord(project="p", id="job_a", body=body))
    registry.put_job(JobRecord(project="p", id="job_b", body={"status": "PENDING"}))
    registry.put_job(JobRecord(project="other", id="job_c", body={}))
    got = registry.get_job("p", "job_a")
    assert (got.project, got.id, dict(got.body)) == ("p", "job_a", body)
    assert [j.id for j in registry.list_jobs("p")] == ["job_b", "job_a"]
    # Replacing a record keeps its place (creation time) and stores the new body.
    registry.put_job(JobRecord(project="p", id="job_a", body={**body, "status": "DONE"}))
    assert registry.get_job("p", "job_a").body["status"] == "DONE"
    assert [j.id for j in registry.list_jobs("p")] == ["job_b", "job_a"]
    assert [j.id for j in registry.list_jobs("other")] == ["job_c"]
    assert registry.list_jobs("none") == []


# ---- SqlRegistry specifics: connection errors, schema, speed -------------------------------------


def test_sql_registry_creates_a_missing_sqlite_folder(tmp_path: Path) -> None:
    from potluck.registry.sql import SqlRegistry

    path = tmp_path / "a" / "b" / "registry.db"
    reg = SqlRegistry(f"sqlite:///{path}")
    reg.apply("p", [DRIVER])
    reg.close()
    assert path.is_file()
    reopened = SqlRegistry(f"sqlite:///{path}")
    assert reopened.get("p", ENTITY, "driver_id") == DRIVER
    reopened.close()


@pytest.mark.postgres
def test_a_wrong_password_is_a_config_error_naming_the_masked_url(postgres_url: str) -> None:
    import sqlalchemy as sa

    from potluck.errors import ConfigError
    from potluck.registry.sql import SqlRegistry

    url = sa.engine.make_url(postgres_url).set(password="wrong-secret")
    reg = SqlRegistry(url.render_as_string(hide_password=False))
    error = raised(reg.list_projects, ConfigError)
    masked = url.render_as_string(hide_password=True)
    assert error.message == (
        f"cannot connect to registry {masked}: password authentication failed for user "
        f'"{url.username}"'
    )
    assert "wrong-secret" not in error.message
    reg.close()


@pytest.mark.postgres
def test_an_unreachable_database_is_unavailable(postgres_url: str) -> None:
    import socket

    import sqlalchemy as sa

    from potluck.errors import UnavailableError
    from potluck.registry.sql import SqlRegistry

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = sa.engine.make_url(postgres_url).set(host="127.0.0.1", port=port)
    reg = SqlRegistry(url.render_as_string(hide_password=False))
    error = raised(lambda: reg.apply("p", [DRIVER]), UnavailableError)
    assert error.message == (
        f"cannot connect to registry {url.render_as_string(hide_password=True)}: Connection refused"
    )
    reg.close()


def test_a_malformed_url_is_a_config_error() -> None:
    from potluck.errors import ConfigError
    from potluck.registry.sql import SqlRegistry

    error = raised(lambda: SqlRegistry("registry.db"), ConfigError)
    assert error.message == (
        "invalid registry URL 'registry.db'; expected sqlite:///path/to/registry.db or "
        "postgresql://user:password@host:port/database"
    )
    assert error.key == "registry"


def test_a_registry_written_by_a_newer_potluck_is_refused(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from potluck.errors import ConfigError
    from potluck.registry.sql import SqlRegistry

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    SqlRegistry(url).list_projects()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE potluck_schema SET version = 99"))
    engine.dispose()
    error = raised(SqlRegistry(url).list_projects, ConfigError)
    assert error.message == (
        f"registry {url} has schema version 99, newer than the 2 this potluck understands; "
        "upgrade potluck"
    )


def test_applying_many_tables_takes_as_many_statements_as_applying_few(tmp_path: Path) -> None:
    """One apply is a fixed number of SQL statements, not one round trip per table.

    Counted, not timed (speed is measured in benchmarks/registry.py): 10 and 1,000 tables, created
    and then updated, send the database the same number of statements.
    """
    from sqlalchemy import event

    from potluck.registry.sql import SqlRegistry

    def statements(size: int) -> tuple[int, int]:
        reg = SqlRegistry(f"sqlite:///{tmp_path / f'registry-{size}.db'}")
        tables = [
            FeatureTable(
                name=f"table_{i:04d}",
                entities=["driver_id"],
                features=[feature(f"f{j}") for j in range(10)],
                batch_source=FileSource(path=f"/data/table_{i:04d}", event_timestamp_column="ts"),
            )
            for i in range(size)
        ]
        reg.list_projects()  # the schema is created before counting
        sent: list[str] = []
        engine = reg._engine

        def count(*args: object) -> None:
            sent.append(str(args[2]))

        event.listen(engine, "before_cursor_execute", count)
        changes = reg.apply("p", [DRIVER, *tables])
        created = len(sent)
        assert [c.action for c in changes] == ["create"] * (size + 1)
        sent.clear()
        updated = reg.apply("p", [dataclasses.replace(t, labels={"v": "2"}) for t in tables])
        assert {(c.action, c.revision) for c in updated} == {("update", 2)}
        assert len(reg.list("p", TABLE, {"v": "2"})) == size
        changed = len(sent)
        event.remove(engine, "before_cursor_execute", count)
        reg.close()
        return created, changed

    assert statements(1000) == statements(10)
