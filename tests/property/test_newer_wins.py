"""Newer wins, checked by hypothesis against a brute-force reference on every built-in store.

Random write sequences (keys, event and created times with ties and nulls, values with nulls)
are cut into random batches and written to a real store and to
``potluck.testing.reference_online``; every batch's WriteResult and the final value of every
key must agree. A second property writes the same rows in two random orders (no exact ties)
and expects the same final state. Event times sit ten minutes apart and at least 30 s from the
max_age boundary, so the store's clock and the test's agree on what is expired.
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
from potluck.online.base import OnlineStore
from potluck.online.redis import (
    RedisClusterConfig,
    RedisClusterOnlineStore,
    RedisConfig,
    RedisOnlineStore,
)
from potluck.online.sqlite import SqliteConfig, SqliteOnlineStore
from potluck.testing.online_store_contract import Row, Session
from potluck.testing.reference_online import ReferenceOnlineStore, ReferenceRow
from potluck.types import ValueType

UTC = timezone.utc
KEYS = 4
MAX_AGE = timedelta(hours=1)
STEP = timedelta(minutes=10)

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

write = st.tuples(
    st.integers(0, KEYS - 1),  # key
    st.integers(0, 7),  # event step
    st.one_of(st.none(), st.integers(0, 2)),  # created step
    st.one_of(st.none(), st.integers(-3, 3)),  # value
)
batch_sizes = st.lists(st.integers(1, 6), min_size=1, max_size=12)


def _table(max_age: timedelta | None) -> FeatureTable:
    return FeatureTable(
        name="newer_wins",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        max_age=max_age,
    )


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
        path: Path = tmp_path_factory.mktemp("newer_wins") / "online.db"
        made = SqliteOnlineStore(SqliteConfig(path=str(path)))
    elif request.param == "redis":
        made = RedisOnlineStore(RedisConfig(url=request.getfixturevalue("redis_url")))
    else:
        nodes = request.getfixturevalue("redis_cluster_nodes")
        made = RedisClusterOnlineStore(RedisClusterConfig(startup_nodes=nodes))
    yield made
    made.close()


class _Run:
    """One example: a fresh project on the store, the reference, and the clock both share."""

    def __init__(
        self, store: OnlineStore, max_age: timedelta | None, now: datetime | None = None
    ) -> None:
        self.session = Session(store, f"prop_{uuid.uuid4().hex[:12]}")
        self.table = _table(max_age)
        self.reference = ReferenceOnlineStore(None if max_age is None else MAX_AGE // _US)
        self.now = now or datetime.now(UTC)
        # Step 0 is 70.5 min old, step 1 60.5 min (both past a 1 h max_age), step 2 50.5 min.
        self.base = self.now - timedelta(seconds=30) - 7 * STEP

    def event(self, step: int) -> datetime:
        return self.base + step * STEP

    def created(self, step: int | None) -> datetime | None:
        return None if step is None else self.base + step * timedelta(seconds=1)

    def write(self, writes: list[tuple[int, int, int | None, int | None]]) -> None:
        rows = [
            Row({"driver_id": k}, self.event(e), {"trips": v}, self.created(c))
            for k, e, c, v in writes
        ]
        expected = self.reference.write(
            [
                ReferenceRow(k, _micros(self.event(e)), _micros(self.created(c)), {"trips": v})
                for k, e, c, v in writes
            ],
            _micros(self.now),
        )
        assert self.session.write(self.table, rows) == expected

    def state(self) -> list[dict[str, Any]]:
        return self.session.read(self.table, [{"driver_id": k} for k in range(KEYS + 1)])

    def expected_state(self) -> list[dict[str, Any]]:
        out = []
        for key in range(KEYS + 1):
            row = self.reference.read(key, _micros(self.now))
            out.append(
                {"trips": None, "event_timestamp": None}
                if row is None
                else {"trips": row.values["trips"], "event_timestamp": _datetime(row.event_us)}
            )
        return out


_US = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(value: datetime | None) -> Any:
    return None if value is None else (value - _EPOCH) // _US


def _datetime(micros: int) -> datetime:
    return _EPOCH + micros * _US


def _batches(items: list[Any], sizes: list[int]) -> Iterator[list[Any]]:
    start = 0
    for size in sizes:
        if start >= len(items):
            return
        yield items[start : start + size]
        start += size
    if start < len(items):
        yield items[start:]


@pytest.mark.parametrize("max_age", [None, MAX_AGE], ids=["no_max_age", "max_age_1h"])
@SETTINGS
@given(writes=st.lists(write, min_size=1, max_size=30), sizes=batch_sizes)
def test_store_matches_the_reference(
    store: OnlineStore, max_age: timedelta | None, writes: list[Any], sizes: list[int]
) -> None:
    run = _Run(store, max_age)
    try:
        for batch in _batches(writes, sizes):
            run.write(batch)
        assert run.state() == run.expected_state()
    finally:
        run.session.cleanup()


@SETTINGS
@given(
    writes=st.lists(write, min_size=1, max_size=25, unique_by=lambda w: (w[0], w[1], w[2])),
    data=st.data(),
    sizes=batch_sizes,
)
def test_final_state_does_not_depend_on_write_order(
    store: OnlineStore, writes: list[Any], data: st.DataObject, sizes: list[int]
) -> None:
    shuffled = data.draw(st.permutations(writes))
    first = _Run(store, None)
    runs = [first, _Run(store, None, first.now)]
    try:
        for run, order in zip(runs, [writes, shuffled], strict=True):
            for batch in _batches(list(order), sizes):
                run.write(batch)
        assert runs[0].state() == runs[1].state() == runs[0].expected_state()
    finally:
        for run in runs:
            run.session.cleanup()
