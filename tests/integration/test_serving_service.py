"""ServingService on real stores (SQLite and Redis): statuses, plans, errors."""

from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest
from _serving_support import (  # noqa: F401 - fixtures used by name
    CUSTOMER,
    DRIVER,
    DRIVER_STATS,
    PAIR_STATS,
    micros,
    new_project,
    online_store_fixture,
    registry_fixture,
    store_kind_fixture,
    utc_now,
    write_rows,
)

from potluck.definitions import Feature, FeatureTable
from potluck.errors import FeatureRefError, ValidationError
from potluck.online.base import OnlineStore
from potluck.registry.sql import SqlRegistry
from potluck.serving.service import ServingService
from potluck.types import ValueType

REFS = ["driver_stats:conv_rate", "driver_stats:trips", "driver_stats:note"]


@pytest.fixture()
def project(registry: SqlRegistry) -> str:
    name = new_project()
    registry.apply(name, [DRIVER, CUSTOMER, DRIVER_STATS, PAIR_STATS])
    return name


@pytest.fixture()
def service(registry: SqlRegistry, online_store: OnlineStore, project: str) -> ServingService:
    return ServingService(registry, online_store, project)


def test_statuses_present_null_not_found(
    service: ServingService, online_store: OnlineStore, project: str
) -> None:
    now = utc_now()
    write_rows(
        online_store,
        project,
        DRIVER_STATS,
        [
            {"driver_id": 1, "conv_rate": 0.5, "trips": 7, "note": "a", "event_timestamp": now},
            {"driver_id": 2, "conv_rate": None, "trips": 3, "event_timestamp": now},
        ],
    )
    resp = service.get_online_features(REFS, {"driver_id": [1, 2, 3]})
    assert resp.to_dict() == {
        "driver_id": [1, 2, 3],
        "driver_stats__conv_rate": [0.5, None, None],
        "driver_stats__trips": [7, 3, None],
        "driver_stats__note": ["a", None, None],
    }
    assert resp.statuses() == {
        "driver_id": ["PRESENT", "PRESENT", "PRESENT"],
        "driver_stats__conv_rate": ["PRESENT", "NULL_VALUE", "NOT_FOUND"],
        "driver_stats__trips": ["PRESENT", "PRESENT", "NOT_FOUND"],
        "driver_stats__note": ["PRESENT", "NULL_VALUE", "NOT_FOUND"],
    }
    assert resp.event_timestamps()["driver_stats__trips"] == [now, now, None]
    assert resp.event_timestamps()["driver_id"] == [None, None, None]


def test_outside_max_age_when_max_age_shrinks_after_the_write(
    service: ServingService, registry: SqlRegistry, online_store: OnlineStore, project: str
) -> None:
    two_hours_ago = utc_now() - timedelta(hours=2)
    write_rows(
        online_store,
        project,
        DRIVER_STATS,
        [{"driver_id": 1, "conv_rate": 0.25, "trips": 1, "event_timestamp": two_hours_ago}],
    )
    assert service.get_online_features(REFS[:1], {"driver_id": [1]}).statuses() == {
        "driver_id": ["PRESENT"],
        "driver_stats__conv_rate": ["PRESENT"],
    }
    shorter = dataclasses.replace(DRIVER_STATS, max_age=timedelta(hours=1))
    registry.apply(project, [shorter])
    service.refresh()
    resp = service.get_online_features(REFS[:1], {"driver_id": [1]})
    assert resp.statuses() == {
        "driver_id": ["PRESENT"],
        "driver_stats__conv_rate": ["OUTSIDE_MAX_AGE"],
    }
    assert resp.to_dict()["driver_stats__conv_rate"] == [None]
    assert resp.event_us[1] == [micros(two_hours_ago)]


def test_composite_keys_wildcard_and_short_names(
    service: ServingService, online_store: OnlineStore, project: str
) -> None:
    now = utc_now()
    write_rows(
        online_store,
        project,
        PAIR_STATS,
        [
            {"driver_id": 1, "customer_id": "a", "rides": 5, "event_timestamp": now},
            {"driver_id": 1, "customer_id": "b", "rides": 6, "event_timestamp": now},
        ],
    )
    resp = service.get_online_features(
        ["pair_stats:*"],
        {"customer_id": ["b", "a", "c"], "driver_id": [1, 1, 1]},
        full_feature_names=False,
    )
    assert resp.to_dict() == {
        "customer_id": ["b", "a", "c"],
        "driver_id": [1, 1, 1],
        "rides": [6, 5, None],
    }
    assert resp.statuses()["rides"] == ["PRESENT", "PRESENT", "NOT_FOUND"]


def test_one_plan_per_feature_set_reused(service: ServingService) -> None:
    service.get_online_features(REFS, {"driver_id": [1]})
    plan = service.plan(REFS, ("driver_id",), full_feature_names=True)
    service.get_online_features(REFS, {"driver_id": [2, 3]})
    assert service.plan(REFS, ("driver_id",), full_feature_names=True) is plan
    assert [r.features for r in plan.reads] == [("conv_rate", "trips", "note")]
    assert service.plan(REFS, ("driver_id",), full_feature_names=False) is not plan


def test_unknown_feature_is_named(service: ServingService) -> None:
    with pytest.raises(FeatureRefError) as err:
        service.get_online_features(["driver_stats:speed"], {"driver_id": [1]})
    assert err.value.message == (
        "unknown feature 'driver_stats:speed': feature table 'driver_stats' has no feature "
        "'speed'; it has conv_rate, acc_rate, trips, note"
    )
    assert err.value.ref == "driver_stats:speed"
    with pytest.raises(FeatureRefError) as err:
        service.get_online_features(["nope:x"], {"driver_id": [1]})
    assert err.value.message == "unknown feature 'nope:x': there is no feature table 'nope'"


def test_a_table_applied_later_is_found_at_once(
    service: ServingService, registry: SqlRegistry, online_store: OnlineStore, project: str
) -> None:
    service.get_online_features(REFS, {"driver_id": [1]})
    late = FeatureTable(
        name="late_stats",
        entities=("driver_id",),
        features=(Feature(name="x", value_type=ValueType.BOOL),),
    )
    registry.apply(project, [late])
    write_rows(
        online_store, project, late, [{"driver_id": 4, "x": True, "event_timestamp": utc_now()}]
    )
    resp = service.get_online_features(["late_stats:x"], {"driver_id": [4]})
    assert resp.to_dict() == {"driver_id": [4], "late_stats__x": [True]}


def test_wrong_entity_type_is_named(service: ServingService) -> None:
    with pytest.raises(ValidationError) as err:
        service.get_online_features(REFS, {"driver_id": [1, "2"]})
    assert err.value.message == "entity 'driver_id' has type INT64, but row 1 holds str '2'"
    assert (err.value.entity, err.value.row) == ("driver_id", 1)
    with pytest.raises(ValidationError) as err:
        service.get_online_features(REFS, {"driver_id": [True]})
    assert err.value.entity == "driver_id"


def test_missing_and_unknown_entities(service: ServingService) -> None:
    with pytest.raises(ValidationError) as err:
        service.get_online_features(["pair_stats:rides"], {"driver_id": [1]})
    assert err.value.message == (
        "missing entity 'customer_id': feature table 'pair_stats' is keyed by driver_id, "
        "customer_id; add a 'customer_id' column to the entities"
    )
    with pytest.raises(ValidationError) as err:
        service.get_online_features(REFS, {"driver_id": [1], "rider": [2]})
    assert err.value.entity == "rider"


def test_too_many_entities(service: ServingService) -> None:
    with pytest.raises(ValidationError) as err:
        service.get_online_features(REFS, {"driver_id": list(range(10_001))})
    assert err.value.message == (
        "the request has 10001 entity rows; the limit is max_entities_per_request=10000"
    )
    resp = service.get_online_features(REFS, {"driver_id": list(range(10_000))})
    assert len(resp) == 10_000
