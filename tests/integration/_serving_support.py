"""Shared set-up of the serving and offline-to-online tests: definitions, stores, rows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from potluck import plugins
from potluck.definitions import Entity, Feature, FeatureTable
from potluck.online.base import OnlineStore
from potluck.online.codec import encode_entity_keys
from potluck.registry.sql import SqlRegistry
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer_id", value_type=ValueType.STRING)
DRIVER_STATS = FeatureTable(
    name="driver_stats",
    entities=("driver_id",),
    features=(
        Feature(name="conv_rate", value_type=ValueType.FLOAT),
        Feature(name="acc_rate", value_type=ValueType.DOUBLE),
        Feature(name="trips", value_type=ValueType.INT64),
        Feature(name="note", value_type=ValueType.STRING),
    ),
    max_age=timedelta(days=1),
)
PAIR_STATS = FeatureTable(
    name="pair_stats",
    entities=("driver_id", "customer_id"),
    features=(Feature(name="rides", value_type=ValueType.INT32),),
)
ENTITY_TYPES = {"driver_id": ValueType.INT64, "customer_id": ValueType.STRING}


def utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def new_project() -> str:
    return f"p_{uuid.uuid4().hex[:10]}"


def store_config(kind: str, tmp_path: Path, redis_url: str | None) -> dict[str, Any]:
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "online.db")}
    assert redis_url is not None
    return {"type": "redis", "url": redis_url}


def open_store(config: Mapping[str, Any]) -> OnlineStore:
    store = plugins.create(plugins.ONLINE_STORES, config)
    assert isinstance(store, OnlineStore)
    return store


@pytest.fixture(
    name="store_kind", params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)]
)
def store_kind_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="online_store")
def online_store_fixture(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OnlineStore]:
    redis_url = request.getfixturevalue("redis_url") if store_kind == "redis" else None
    store = open_store(store_config(store_kind, tmp_path, redis_url))
    yield store
    store.close()


@pytest.fixture(name="registry")
def registry_fixture(tmp_path: Path) -> Iterator[SqlRegistry]:
    reg = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    yield reg
    reg.close()


def write_rows(
    store: OnlineStore,
    project: str,
    table: FeatureTable,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Write ``rows`` (entity values, features, event_timestamp, optional created_timestamp)."""
    store.ensure_table(project, table)
    columns: dict[str, pa.Array] = {
        "entity_key": encode_entity_keys(
            project,
            table.name,
            {
                e: pa.array([r[e] for r in rows], to_arrow_type(ENTITY_TYPES[e]))
                for e in table.entities
            },
            {e: ENTITY_TYPES[e] for e in table.entities},
        ),
        "event_timestamp": pa.array([r["event_timestamp"] for r in rows], TIMESTAMP_ARROW_TYPE),
        "created_timestamp": pa.array(
            [r.get("created_timestamp") for r in rows], TIMESTAMP_ARROW_TYPE
        ),
    }
    for feature in table.features:
        columns[feature.name] = pa.array(
            [r.get(feature.name) for r in rows], to_arrow_type(feature.value_type)
        )
    store.write(project, table, pa.RecordBatch.from_pydict(columns))


def micros(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
