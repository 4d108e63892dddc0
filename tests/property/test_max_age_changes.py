"""Online values follow max_age changes: hypothesis against brute-force references.

Random programs of write batches (``WriteMode.NEWER`` or ``RELOAD``) and ``max_age`` changes
(each followed by ``extend_expiry``, as ``Client.apply`` does) run on every built-in store and on
``potluck.testing.reference_online``; every write count, extension count and read (now and at
later instants) must agree. Then the online read, with statuses by the current ``max_age``, is
compared with ``potluck.testing.reference.point_in_time_join`` over every row loaded, at the same
moment: they must agree exactly when ``max_age`` was never raised, and always after a full
reload (``ingest-online --full``), which is what the plan tells users to run after a raise.

Event times sit ten minutes apart and every ``max_age`` is a multiple of ten minutes, so every
expiry lies 30 s or more from the test's clock and the stores' clocks agree with it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.online.base import OnlineStore, WriteMode
from potluck.online.redis import (
    RedisClusterConfig,
    RedisClusterOnlineStore,
    RedisConfig,
    RedisOnlineStore,
)
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.serving.status import PRESENT, row_status
from potluck.testing.online_store_contract import Row, Session
from potluck.testing.reference import ReferenceTable, point_in_time_join
from potluck.testing.reference_online import ReferenceOnlineStore, ReferenceRow
from potluck.types import ValueType

UTC = timezone.utc
KEYS = 3
STEPS = 13
STEP = timedelta(minutes=10)
MAX_AGES = [None, 3 * STEP, 6 * STEP, 12 * STEP]
_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

rows_strategy = st.lists(
    st.tuples(
        st.integers(0, KEYS - 1),  # key
        st.integers(0, STEPS - 1),  # event step
        st.one_of(st.none(), st.integers(0, 2)),  # created step
        st.one_of(st.none(), st.integers(-3, 3)),  # value
    ),
    min_size=1,
    max_size=16,
    unique_by=lambda r: (r[0], r[1], r[2]),
)
op_strategy = st.one_of(
    st.tuples(
        st.just("write"),
        st.lists(st.integers(0, 15), min_size=1, max_size=8),
        st.sampled_from([WriteMode.NEWER, WriteMode.RELOAD]),
    ),
    st.tuples(st.just("max_age"), st.sampled_from(MAX_AGES)),
)


def _table(max_age: timedelta | None) -> FeatureTable:
    return FeatureTable(
        name="follows",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        max_age=max_age,
    )


def _micros(value: datetime | None) -> Any:
    return None if value is None else (value - _EPOCH) // _US


@pytest.fixture(
    scope="module",
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis_cluster", marks=pytest.mark.redis_cluster),
    ],
)
def store(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OnlineStore]:
    made: OnlineStore
    if request.param == "sqlite":
        path: Path = tmp_path_factory.mktemp("follows") / "online.db"
        made = SqliteOnlineStore(SqliteConfig(path=str(path)))
    elif request.param == "redis":
        made = RedisOnlineStore(RedisConfig(url=request.getfixturevalue("redis_url")))
    else:
        nodes = request.getfixturevalue("redis_cluster_nodes")
        made = RedisClusterOnlineStore(RedisClusterConfig(startup_nodes=nodes))
    yield made
    made.close()


class _Run:
    """One example: a fresh project, the table's current max_age, and the references."""

    def __init__(self, store: OnlineStore, max_age: timedelta | None) -> None:
        self.session = Session(store, f"follow_{uuid.uuid4().hex[:12]}")
        self.max_age = max_age
        self.model = ReferenceOnlineStore(None if max_age is None else max_age // _US)
        self.now = datetime.now(UTC)
        # Step 0 is 120.5 minutes old, step 12 half a minute.
        self.base = self.now - timedelta(seconds=30) - (STEPS - 1) * STEP
        self.loaded: list[tuple[int, int, int | None, int | None]] = []
        self.raised = False

    def _row(self, row: tuple[int, int, int | None, int | None]) -> Row:
        key, event, created, value = row
        created_at = None if created is None else self.base + created * timedelta(seconds=1)
        return Row({"driver_id": key}, self.base + event * STEP, {"trips": value}, created_at)

    def write(self, rows: list[tuple[int, int, int | None, int | None]], mode: WriteMode) -> None:
        written = [self._row(r) for r in rows]
        reference = [
            ReferenceRow(r.entities["driver_id"], _micros(r.event), _micros(r.created), r.values)
            for r in written
        ]
        expected = self.model.write(reference, _micros(self.now), mode)
        assert self.session.write(_table(self.max_age), written, mode=mode) == expected
        self.loaded.extend(r for r in rows if r not in self.loaded)

    def change_max_age(self, max_age: timedelta | None) -> None:
        old = self.max_age
        self.raised |= old is not None and (max_age is None or max_age > old)
        self.max_age = max_age
        max_age_us = None if max_age is None else max_age // _US
        expected = self.model.extend_expiry(max_age_us, _micros(self.now))
        changed = self.session.store.extend_expiry(self.session.project, _table(max_age))
        assert changed == expected

    def read(self, at: datetime) -> list[tuple[Any, Any]]:
        keys = [{"driver_id": k} for k in range(KEYS)]
        rows = self.session.read(_table(self.max_age), keys, now=at)
        return [(r["trips"], _micros(r["event_timestamp"])) for r in rows]

    def expected_read(self, at: datetime) -> list[tuple[Any, Any]]:
        out = []
        for key in range(KEYS):
            row = self.model.read(key, _micros(at))
            out.append((None, None) if row is None else (row.values["trips"], row.event_us))
        return out

    def online(self) -> list[Any]:
        """The value an online read serves per key now: ``None`` unless its row is PRESENT."""
        max_age_us = None if self.max_age is None else self.max_age // _US
        out = []
        for value, event in self.read(self.now):
            status = row_status(event, max_age_us, _micros(self.now))
            out.append(value if status is PRESENT else None)
        return out

    def training(self) -> list[Any]:
        table = ReferenceTable(
            name="follows",
            entities=["driver_id"],
            features=["trips"],
            rows=[
                {
                    "driver_id": row.entities["driver_id"],
                    "event_timestamp": row.event,
                    "created_timestamp": row.created,
                    "trips": row.values["trips"],
                }
                for row in map(self._row, self.loaded)
            ],
            max_age=self.max_age,
        )
        entity_rows = [{"driver_id": k, "event_timestamp": self.now} for k in range(KEYS)]
        return [r["follows__trips"] for r in point_in_time_join(entity_rows, [table])]


@SETTINGS
@given(
    first_max_age=st.sampled_from(MAX_AGES),
    pool=rows_strategy,
    program=st.lists(op_strategy, min_size=1, max_size=10),
)
def test_stores_follow_max_age_changes_and_agree_with_training_sets(
    store: OnlineStore,
    first_max_age: timedelta | None,
    pool: list[tuple[int, int, int | None, int | None]],
    program: list[tuple[Any, ...]],
) -> None:
    run = _Run(store, first_max_age)
    try:
        for op in program:
            if op[0] == "write":
                run.write([pool[i % len(pool)] for i in op[1]], op[2])
            else:
                run.change_max_age(op[1])
            assert run.read(run.now) == run.expected_read(run.now)
        for step in range(0, 2 * STEPS, 3):
            later = run.now + step * STEP
            assert run.read(later) == run.expected_read(later)
        if not run.raised:
            assert run.online() == run.training()
        run.write(run.loaded, WriteMode.RELOAD)
        assert run.online() == run.training()
    finally:
        run.session.cleanup()
