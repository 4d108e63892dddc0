"""The online store contract: the behaviour every :class:`OnlineStore` must show, as pytest tests.

Subclass :class:`OnlineStoreContract` in a test module and provide a ``store`` fixture that
returns a live store (on a real server); every ``test_*`` method then runs against it::

    from potluck.testing.online_store_contract import OnlineStoreContract

    class TestMyStore(OnlineStoreContract):
        @pytest.fixture()
        def store(self):
            store = MyStore(MyConfig(url=...))
            yield store
            store.close()

Each test works in a project of its own (``contract_<random>``) and drops the tables it wrote
when it ends, so the suites of several stores, or several runs, can share one server. The tests
assert exact values, timestamps and write counts: newer wins under any order, ties (skipped, or
rewritten in ``WriteMode.RELOAD``), null values, absent keys, expiry edges, expiry extended for a
raised or removed ``max_age``, values read after a definition change (features added or removed,
lossless type widenings), dropping tables, every value type, big writes, isolation and concurrent
writers.
"""

from __future__ import annotations

import itertools
import random
import struct
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
import pytest

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import DataValidationError, FeatureRefError
from potluck.online.base import (
    CREATED_TIMESTAMP_COLUMN,
    ENTITY_KEY_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
    OnlineStore,
    Pingable,
    WriteMode,
    WriteResult,
)
from potluck.online.codec import encode_entity_key, encode_entity_keys
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, is_lossless_widening, to_arrow_type

UTC = timezone.utc
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
"""The event time most tests write at (their tables have no max_age, so it never expires)."""
MINUTE = timedelta(minutes=1)

ENTITY_TYPES: dict[str, ValueType] = {
    "driver_id": ValueType.INT64,
    "customer_id": ValueType.STRING,
}
"""The types of the entities the contract's tables use."""


def stats_table(name: str = "driver_stats", max_age: timedelta | None = None) -> FeatureTable:
    """A table keyed by ``driver_id`` with ``conv_rate``, ``trips`` and ``city``."""
    return FeatureTable(
        name=name,
        entities=("driver_id",),
        features=(
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
            Feature(name="city", value_type=ValueType.STRING),
        ),
        max_age=max_age,
    )


STATS = stats_table()
ALL_TYPES = FeatureTable(
    name="all_types",
    entities=("driver_id",),
    features=tuple(Feature(name=f"f_{t.name.lower()}", value_type=t) for t in ValueType),
)
"""A table with one feature of every value type."""


@dataclass(frozen=True)
class Row:
    """One row to write: entity values, event time, feature values, created time."""

    entities: Mapping[str, object]
    event: datetime
    values: Mapping[str, object] = field(default_factory=dict)
    created: datetime | None = None


def stats_row(
    driver: int, event: datetime, trips: int | None, created: datetime | None = None
) -> Row:
    """A :data:`STATS` row whose values all derive from ``trips``."""
    values: dict[str, object] = {"conv_rate": None, "trips": None, "city": None}
    if trips is not None:
        values = {"conv_rate": trips / 4, "trips": trips, "city": f"city {trips}"}
    return Row({"driver_id": driver}, event, values, created)


def stats_value(trips: int | None, event: datetime | None) -> dict[str, Any]:
    """What reading all of :data:`STATS`'s features returns for a row written by stats_row."""
    if event is None:
        return {"conv_rate": None, "trips": None, "city": None, EVENT_TIMESTAMP_COLUMN: None}
    if trips is None:
        return {"conv_rate": None, "trips": None, "city": None, EVENT_TIMESTAMP_COLUMN: event}
    return {
        "conv_rate": trips / 4,
        "trips": trips,
        "city": f"city {trips}",
        EVENT_TIMESTAMP_COLUMN: event,
    }


def build_batch(project: str, table: FeatureTable, rows: Sequence[Row]) -> pa.RecordBatch:
    """Build the Arrow batch :meth:`OnlineStore.write` takes for ``rows``."""
    types = {name: ENTITY_TYPES[name] for name in table.entities}
    entity_columns = {
        name: pa.array([r.entities[name] for r in rows], to_arrow_type(types[name]))
        for name in table.entities
    }
    columns: dict[str, pa.Array] = {
        ENTITY_KEY_COLUMN: encode_entity_keys(project, table.name, entity_columns, types),
        EVENT_TIMESTAMP_COLUMN: pa.array([r.event for r in rows], TIMESTAMP_ARROW_TYPE),
        CREATED_TIMESTAMP_COLUMN: pa.array([r.created for r in rows], TIMESTAMP_ARROW_TYPE),
    }
    for feature in table.features:
        columns[feature.name] = pa.array(
            [r.values.get(feature.name) for r in rows], to_arrow_type(feature.value_type)
        )
    return pa.record_batch(columns)


class Session:
    """A store, a project of the test's own, and the tables to drop when the test ends."""

    def __init__(self, store: OnlineStore, project: str) -> None:
        self.store = store
        self.project = project
        self._touched: dict[tuple[str, str], FeatureTable] = {}
        self._lock = threading.Lock()

    def _touch(self, project: str, table: FeatureTable) -> None:
        with self._lock:
            if (project, table.name) not in self._touched:
                self.store.ensure_table(project, table)
                self._touched[project, table.name] = table

    def write(
        self,
        table: FeatureTable,
        rows: Sequence[Row],
        *,
        project: str | None = None,
        mode: WriteMode = WriteMode.NEWER,
    ) -> WriteResult:
        """Write ``rows`` to ``table`` (in the session's project unless told)."""
        project = project or self.project
        self._touch(project, table)
        return self.store.write(project, table, build_batch(project, table, rows), mode=mode)

    def keys(
        self, table: FeatureTable, entity_rows: Sequence[Mapping[str, object]], project: str
    ) -> list[bytes]:
        """Encode one key per entity row."""
        types = {name: ENTITY_TYPES[name] for name in table.entities}
        return [encode_entity_key(project, table.name, row, types) for row in entity_rows]

    def read_table(
        self,
        table: FeatureTable,
        entity_rows: Sequence[Mapping[str, object]],
        features: Sequence[str] | None = None,
        *,
        now: datetime | None = None,
        project: str | None = None,
    ) -> pa.Table:
        """Read ``features`` (default: all) of each entity row, as the store returns them."""
        project = project or self.project
        names = list(table.feature_names if features is None else features)
        keys = self.keys(table, entity_rows, project)
        return self.store.read(project, table, keys, names, now=now)

    def read(
        self,
        table: FeatureTable,
        entity_rows: Sequence[Mapping[str, object]],
        features: Sequence[str] | None = None,
        *,
        now: datetime | None = None,
        project: str | None = None,
    ) -> list[dict[str, Any]]:
        """Like :meth:`read_table`, as one dict per row."""
        result = self.read_table(table, entity_rows, features, now=now, project=project)
        rows: list[dict[str, Any]] = result.to_pylist()
        return rows

    def drop(self, table: FeatureTable, *, project: str | None = None) -> int:
        """Drop ``table``'s values; return how many live ones were removed."""
        return self.store.drop_table(project or self.project, table)

    def cleanup(self) -> None:
        """Drop every table the test wrote."""
        for (project, _), table in self._touched.items():
            self.store.drop_table(project, table)


def drivers(*ids: int) -> list[dict[str, object]]:
    """Entity rows for the given driver ids."""
    return [{"driver_id": i} for i in ids]


def _now() -> datetime:
    return datetime.now(UTC)


class OnlineStoreContract:
    """The behaviour every online store must show; subclasses provide a ``store`` fixture."""

    @pytest.fixture()
    def session(self, store: OnlineStore) -> Iterator[Session]:
        """The store under test with a project of the test's own, cleaned up afterwards."""
        session = Session(store, f"contract_{uuid.uuid4().hex[:12]}")
        yield session
        session.cleanup()

    # --- basics -----------------------------------------------------------------------------

    def test_a_fresh_table_reads_as_absent_and_ensure_table_is_idempotent(
        self, session: Session
    ) -> None:
        """ensure_table twice is fine; keys never written read as absent."""
        session.store.ensure_table(session.project, STATS)
        session.store.ensure_table(session.project, STATS)
        assert session.read(STATS, drivers(1, 2)) == [stats_value(None, None)] * 2

    def test_a_pingable_store_answers_a_ping_within_its_timeout(self, session: Session) -> None:
        """A store with the optional ``Pingable`` ability (serving's readiness) answers quickly."""
        if not isinstance(session.store, Pingable):
            return  # the ability is optional: serving then takes the store to be ready
        started = time.monotonic()
        session.store.ping(1.0)
        assert time.monotonic() - started < 1.0

    def test_written_rows_read_back_exactly_and_absent_keys_read_as_null(
        self, session: Session
    ) -> None:
        """Values and event times come back exactly, one row per key, in key order."""
        rows = [stats_row(1001, T, 1), stats_row(1002, T + MINUTE, 2), stats_row(1003, T, 3)]
        assert session.write(STATS, rows) == WriteResult(written=3, skipped=0)
        assert session.read(STATS, drivers(1003, 1001, 9999, 1002)) == [
            stats_value(3, T),
            stats_value(1, T),
            stats_value(None, None),
            stats_value(2, T + MINUTE),
        ]

    def test_read_returns_the_requested_features_in_order_typed(self, session: Session) -> None:
        """A read returns the requested features, in order and typed, then event_timestamp."""
        session.write(STATS, [stats_row(1, T, 8)])
        result = session.read_table(STATS, drivers(1, 2, 1), ["city", "trips"])
        assert result.schema == pa.schema(
            [
                ("city", pa.string()),
                ("trips", pa.int64()),
                (EVENT_TIMESTAMP_COLUMN, TIMESTAMP_ARROW_TYPE),
            ]
        )
        assert result.to_pylist() == [
            {"city": "city 8", "trips": 8, EVENT_TIMESTAMP_COLUMN: T},
            {"city": None, "trips": None, EVENT_TIMESTAMP_COLUMN: None},
            {"city": "city 8", "trips": 8, EVENT_TIMESTAMP_COLUMN: T},
        ]

    def test_empty_write_and_empty_read(self, session: Session) -> None:
        """Writing no rows and reading no keys work."""
        assert session.write(STATS, []) == WriteResult(written=0, skipped=0)
        result = session.read_table(STATS, [], ["trips"])
        assert result.num_rows == 0
        assert result.column_names == ["trips", EVENT_TIMESTAMP_COLUMN]

    def test_reading_an_unknown_feature_is_an_error(self, session: Session) -> None:
        """A feature the table does not have is a FeatureRefError naming it."""
        with pytest.raises(FeatureRefError) as info:
            session.read(STATS, drivers(1), ["trips", "nope"])
        assert info.value.message == "feature table 'driver_stats' has no feature 'nope'"
        assert info.value.attrs() == {"ref": "driver_stats:nope"}

    def test_composite_keys_do_not_depend_on_entity_order(self, session: Session) -> None:
        """Composite keys match whatever order the entity values come in."""
        table = FeatureTable(
            name="trips_by_pair",
            entities=("driver_id", "customer_id"),
            features=(Feature(name="trips", value_type=ValueType.INT64),),
        )
        rows = [
            Row({"driver_id": 1, "customer_id": "a"}, T, {"trips": 10}),
            Row({"driver_id": 1, "customer_id": "b"}, T, {"trips": 20}),
            Row({"driver_id": 2, "customer_id": "a"}, T, {"trips": 30}),
        ]
        assert session.write(table, rows) == WriteResult(written=3, skipped=0)
        entity_rows = [
            {"customer_id": "a", "driver_id": 2},
            {"customer_id": "b", "driver_id": 1},
            {"customer_id": "b", "driver_id": 2},
        ]
        assert [r["trips"] for r in session.read(table, entity_rows)] == [30, 20, None]

    # --- newer wins ---------------------------------------------------------------------------

    @pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
    def test_newer_event_wins_whatever_the_write_order(
        self, session: Session, order: tuple[int, ...]
    ) -> None:
        """Every order of three versions ends with the newest; counts say which writes won."""
        results = [session.write(STATS, [stats_row(1, T + v * MINUTE, v)]) for v in order]
        newest_so_far = list(itertools.accumulate(order, max))
        expected = [
            WriteResult(written=1, skipped=0)
            if i == 0 or v > newest_so_far[i - 1]
            else WriteResult(written=0, skipped=1)
            for i, v in enumerate(order)
        ]
        assert results == expected
        assert session.read(STATS, drivers(1)) == [stats_value(2, T + 2 * MINUTE)]

    def test_equal_timestamps_never_overwrite(self, session: Session) -> None:
        """A row with the same (event, created) as the stored one is skipped."""
        created = T + MINUTE
        assert session.write(STATS, [stats_row(1, T, 1), stats_row(2, T, 1, created)]) == (
            WriteResult(written=2, skipped=0)
        )
        assert session.write(STATS, [stats_row(1, T, 2), stats_row(2, T, 2, created)]) == (
            WriteResult(written=0, skipped=2)
        )
        assert session.read(STATS, drivers(1, 2)) == [stats_value(1, T)] * 2

    def test_reload_rewrites_equal_rows_but_never_replaces_a_newer_one(
        self, session: Session
    ) -> None:
        """In WriteMode.RELOAD a row equal to the stored one replaces it; an older one never."""
        created = T + MINUTE
        stored = [stats_row(1, T, 1), stats_row(2, T, 1, created), stats_row(3, T + MINUTE, 1)]
        assert session.write(STATS, stored) == WriteResult(written=3, skipped=0)
        reload = [
            stats_row(1, T, 2),
            stats_row(2, T, 2, created),
            stats_row(3, T, 2),
            stats_row(4, T, 2),
        ]
        assert session.write(STATS, reload, mode=WriteMode.RELOAD) == WriteResult(3, 1)
        assert session.read(STATS, drivers(1, 2, 3, 4)) == [
            stats_value(2, T),
            stats_value(2, T),
            stats_value(1, T + MINUTE),
            stats_value(2, T),
        ]
        older_created = stats_row(2, T, 3)
        assert session.write(STATS, [older_created], mode=WriteMode.RELOAD) == WriteResult(0, 1)
        assert session.write(STATS, reload, mode=WriteMode.RELOAD) == WriteResult(3, 1)
        assert session.write(STATS, reload) == WriteResult(0, 4)
        assert session.read(STATS, drivers(2)) == [stats_value(2, T)]

    def test_created_timestamp_breaks_ties_and_null_sorts_first(self, session: Session) -> None:
        """On equal event times the greater created time wins; a null one loses."""
        c1, c2 = T + MINUTE, T + 2 * MINUTE
        assert session.write(STATS, [stats_row(1, T, 1, c1), stats_row(2, T, 1)]) == (
            WriteResult(written=2, skipped=0)
        )
        assert session.write(STATS, [stats_row(1, T, 2, c2), stats_row(2, T, 2, c1)]) == (
            WriteResult(written=2, skipped=0)
        )
        assert session.write(STATS, [stats_row(1, T, 3, c1), stats_row(2, T, 3)]) == (
            WriteResult(written=0, skipped=2)
        )
        assert session.read(STATS, drivers(1, 2)) == [stats_value(2, T)] * 2

    def test_event_time_outranks_created_time(self, session: Session) -> None:
        """An older event never wins, however new its created time."""
        session.write(STATS, [stats_row(1, T + MINUTE, 1, T)])
        late_correction = stats_row(1, T, 2, T + 60 * MINUTE)
        assert session.write(STATS, [late_correction]) == WriteResult(written=0, skipped=1)
        assert session.read(STATS, drivers(1)) == [stats_value(1, T + MINUTE)]

    def test_the_newest_row_of_a_key_wins_within_one_batch(self, session: Session) -> None:
        """Of rows sharing a key in one batch the newest wins (an exact tie: the first)."""
        rows = [
            stats_row(1, T + MINUTE, 1),
            stats_row(1, T + 3 * MINUTE, 3),
            stats_row(2, T, 9),
            stats_row(1, T + 2 * MINUTE, 2),
            stats_row(1, T + 3 * MINUTE, 4),
        ]
        assert session.write(STATS, rows) == WriteResult(written=2, skipped=3)
        assert session.read(STATS, drivers(1, 2)) == [
            stats_value(3, T + 3 * MINUTE),
            stats_value(9, T),
        ]

    @pytest.mark.parametrize("modes", [(WriteMode.NEWER,), (WriteMode.NEWER, WriteMode.RELOAD)])
    def test_concurrent_writers_end_with_the_newest_row(
        self, session: Session, modes: tuple[WriteMode, ...]
    ) -> None:
        """Writers racing on the same keys in threads end with the newest row of each key.

        With reloading writers among them, a reload never replaces a newer row either.
        """
        keys, versions, writers = 50, 12, 4
        pairs = [(k, v) for k in range(keys) for v in range(versions)]
        session.store.ensure_table(session.project, STATS)
        results: list[WriteResult] = []
        errors: list[BaseException] = []

        def writer(seed: int) -> None:
            mine = pairs[:]
            random.Random(seed).shuffle(mine)
            try:
                for start in range(0, len(mine), 40):
                    rows = [stats_row(k, T + v * MINUTE, v) for k, v in mine[start : start + 40]]
                    results.append(session.write(STATS, rows, mode=modes[seed % len(modes)]))
            except BaseException as exc:  # surfaced by the assertion below
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert sum(r.written + r.skipped for r in results) == writers * len(pairs)
        newest = T + (versions - 1) * MINUTE
        assert (
            session.read(STATS, drivers(*range(keys))) == [stats_value(versions - 1, newest)] * keys
        )

    # --- values -------------------------------------------------------------------------------

    def test_null_values_round_trip_and_a_newer_null_replaces_a_value(
        self, session: Session
    ) -> None:
        """Null values read as null on a present row, and newer nulls replace values."""
        assert session.write(STATS, [stats_row(1, T, None)]) == WriteResult(1, 0)
        assert session.read(STATS, drivers(1)) == [stats_value(None, T)]
        session.write(STATS, [stats_row(1, T + MINUTE, 5)])
        assert session.read(STATS, drivers(1)) == [stats_value(5, T + MINUTE)]
        partly_null = Row({"driver_id": 1}, T + 2 * MINUTE, {"trips": 6})
        assert session.write(STATS, [partly_null]) == WriteResult(1, 0)
        assert session.read(STATS, drivers(1)) == [
            {"conv_rate": None, "trips": 6, "city": None, EVENT_TIMESTAMP_COLUMN: T + 2 * MINUTE}
        ]

    def test_every_value_type_round_trips(self, session: Session) -> None:
        """Every ValueType, including lists, empty values and null elements, round-trips."""
        stamp = datetime(2021, 4, 12, 10, 59, 42, 123456, tzinfo=UTC)
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        full: dict[str, object] = {
            "f_bytes": b"\x00\xffpotluck",
            "f_string": "naïve ☕",
            "f_int32": -(2**31),
            "f_int64": 2**63 - 1,
            "f_double": -1.25e300,
            "f_float": 0.25,
            "f_bool": True,
            "f_unix_timestamp": stamp,
            "f_bytes_list": [b"", b"\x01\x02"],
            "f_string_list": ["a", "", "☕"],
            "f_int32_list": [2**31 - 1, -1],
            "f_int64_list": [-(2**63), 0, None],
            "f_double_list": [0.1, float("inf")],
            "f_float_list": [1.5, -2.0],
            "f_bool_list": [True, False, True],
            "f_unix_timestamp_list": [epoch, stamp],
        }
        empty: dict[str, object] = {
            "f_bytes": b"",
            "f_string": "",
            "f_int32": 0,
            "f_int64": 0,
            "f_double": 0.0,
            "f_float": 0.0,
            "f_bool": False,
            "f_unix_timestamp": epoch,
            "f_bytes_list": [],
            "f_string_list": [None, "x"],
            "f_int32_list": [],
            "f_int64_list": [],
            "f_double_list": [],
            "f_float_list": [],
            "f_bool_list": [None],
            "f_unix_timestamp_list": [],
        }
        rows = [
            Row({"driver_id": 1}, T, full),
            Row({"driver_id": 2}, T, {}),
            Row({"driver_id": 3}, T, empty),
        ]
        assert session.write(ALL_TYPES, rows) == WriteResult(written=3, skipped=0)
        result = session.read_table(ALL_TYPES, drivers(1, 2, 3))
        assert result.schema.types == [
            *(to_arrow_type(f.value_type) for f in ALL_TYPES.features),
            TIMESTAMP_ARROW_TYPE,
        ]
        nulls = dict.fromkeys(ALL_TYPES.feature_names)
        assert result.to_pylist() == [
            {**full, EVENT_TIMESTAMP_COLUMN: T},
            {**nulls, EVENT_TIMESTAMP_COLUMN: T},
            {**empty, EVENT_TIMESTAMP_COLUMN: T},
        ]

    def test_many_keys_in_one_write(self, session: Session) -> None:
        """5,000 keys in one write are all stored; replaying the batch writes nothing."""
        count = 5_000
        rows = [stats_row(i, T + (i % 3) * MINUTE, i) for i in range(count)]
        assert session.write(STATS, rows) == WriteResult(written=count, skipped=0)
        ids = list(range(count))[::-1]
        expected = [stats_value(i, T + (i % 3) * MINUTE) for i in ids]
        assert session.read(STATS, drivers(*ids)) == expected
        assert session.write(STATS, rows) == WriteResult(written=0, skipped=count)

    def test_a_bad_batch_is_rejected_whole_and_writes_nothing(self, session: Session) -> None:
        """A missing column, a null event time or an uncastable value rejects the batch."""
        session.store.ensure_table(session.project, STATS)
        good = build_batch(session.project, STATS, [stats_row(1, T, 1), stats_row(2, T, 2)])
        with pytest.raises(DataValidationError) as info:
            session.store.write(session.project, STATS, good.drop_columns(["city"]))
        assert info.value.attrs() == {"column": "city", "row": None}
        assert info.value.message == (
            "write to feature table 'driver_stats': column 'city' is missing"
        )
        null_event = good.set_column(
            good.schema.get_field_index(EVENT_TIMESTAMP_COLUMN),
            EVENT_TIMESTAMP_COLUMN,
            pa.array([T, None], TIMESTAMP_ARROW_TYPE),
        )
        with pytest.raises(DataValidationError) as info:
            session.store.write(session.project, STATS, null_event)
        assert info.value.attrs() == {"column": EVENT_TIMESTAMP_COLUMN, "row": 1}
        text_trips = good.set_column(
            good.schema.get_field_index("trips"), "trips", pa.array(["1", "lots"])
        )
        with pytest.raises(DataValidationError) as info:
            session.store.write(session.project, STATS, text_trips)
        assert info.value.attrs() == {"column": "trips", "row": None}
        assert session.read(STATS, drivers(1, 2)) == [stats_value(None, None)] * 2

    # --- isolation and dropping -----------------------------------------------------------------

    def test_tables_and_projects_are_isolated(self, session: Session) -> None:
        """The same entity key in another table or project is another value."""
        other_table = stats_table("driver_stats_v2")
        other_project = session.project + "_b"
        session.write(STATS, [stats_row(1, T, 1)])
        session.write(other_table, [stats_row(1, T, 2)])
        session.write(STATS, [stats_row(1, T, 3)], project=other_project)
        assert session.read(STATS, drivers(1)) == [stats_value(1, T)]
        assert session.read(other_table, drivers(1)) == [stats_value(2, T)]
        assert session.read(STATS, drivers(1), project=other_project) == [stats_value(3, T)]
        session.drop(STATS)
        assert session.read(STATS, drivers(1)) == [stats_value(None, None)]
        assert session.read(other_table, drivers(1)) == [stats_value(2, T)]
        assert session.read(STATS, drivers(1), project=other_project) == [stats_value(3, T)]

    def test_drop_table_removes_every_value_and_the_table_can_be_written_again(
        self, session: Session
    ) -> None:
        """drop_table removes all of a table's values and counts them; the table stays usable."""
        session.write(STATS, [stats_row(i, T, i) for i in range(1200)])
        assert session.drop(STATS) == 1200
        assert session.read(STATS, drivers(0, 599, 1199)) == [stats_value(None, None)] * 3
        assert session.drop(STATS) == 0
        assert session.write(STATS, [stats_row(5, T - MINUTE, 7)]) == WriteResult(1, 0)
        assert session.read(STATS, drivers(5)) == [stats_value(7, T - MINUTE)]

    def test_drop_table_leaves_tables_whose_keys_look_alike(self, session: Session) -> None:
        """Dropping a table leaves tables with similar names and key prefixes alone."""
        # 42 and 63 are the byte values of '*' and '?': the length prefixes of these names
        # are glob characters, which a prefix scan must escape.
        names = ["t" * 42, "t" * 43, "t" * 63, "t" * 64]
        tables = [stats_table(name) for name in names]
        for i, table in enumerate(tables):
            session.write(table, [stats_row(1, T, i)])
        assert session.drop(tables[0]) == 1
        assert session.drop(tables[2]) == 1
        assert [session.read(table, drivers(1))[0]["trips"] for table in tables] == [
            None,
            1,
            None,
            3,
        ]

    # --- expiry ---------------------------------------------------------------------------------

    def test_rows_already_expired_when_written_are_skipped(self, session: Session) -> None:
        """Rows with event_timestamp + max_age < now are not written (counted skipped)."""
        table = stats_table(max_age=timedelta(hours=1))
        now = _now()
        rows = [stats_row(1, now - timedelta(hours=2), 1), stats_row(2, now - MINUTE, 2)]
        assert session.write(table, rows) == WriteResult(written=1, skipped=1)
        assert session.read(table, drivers(1, 2)) == [
            stats_value(None, None),
            stats_value(2, now - MINUTE),
        ]

    def test_a_newer_row_expired_already_removes_the_older_value_it_beats(
        self, session: Session
    ) -> None:
        """A row expired when written is not stored, but still outranks older stored values.

        A value kept by a longer max_age must not outlive a newer row that expired first under a
        shorter one, or raising max_age again would serve the older value as present.
        """
        now = _now()
        long, short = stats_table(max_age=2 * 60 * MINUTE), stats_table(max_age=30 * MINUTE)
        old, newer = now - 100 * MINUTE, now - 40 * MINUTE
        kept = [stats_row(1, old, 1), stats_row(2, old, 2), stats_row(3, newer, 3)]
        assert session.write(long, kept) == WriteResult(written=3, skipped=0)
        expired = [stats_row(1, newer, 10), stats_row(2, old - MINUTE, 20), stats_row(3, newer, 30)]
        assert session.write(short, expired) == WriteResult(written=0, skipped=3)
        assert session.read(long, drivers(1, 2, 3)) == [
            stats_value(None, None),
            stats_value(2, old),
            stats_value(3, newer),
        ]
        assert session.write(short, expired, mode=WriteMode.RELOAD) == WriteResult(0, 3)
        assert session.read(long, drivers(1, 2, 3)) == [
            stats_value(None, None),
            stats_value(2, old),
            stats_value(None, None),
        ]

    def test_a_value_expires_at_event_time_plus_max_age(self, session: Session) -> None:
        """A value reads as present up to event_timestamp + max_age included, absent after.

        A value exactly max_age old is still in a training set, so it is still read online.
        """
        max_age = timedelta(hours=1)
        table = stats_table(max_age=max_age)
        event = (_now() - 10 * MINUTE).replace(microsecond=123000)
        session.write(table, [stats_row(1, event, 1)])
        expires = event + max_age
        microsecond = timedelta(microseconds=1)
        assert session.read(table, drivers(1)) == [stats_value(1, event)]
        assert session.read(table, drivers(1), now=expires - microsecond) == [stats_value(1, event)]
        assert session.read(table, drivers(1), now=expires) == [stats_value(1, event)]
        assert session.read(table, drivers(1), now=expires + microsecond) == [
            stats_value(None, None)
        ]
        assert session.read(table, drivers(1), now=expires + timedelta(days=1)) == [
            stats_value(None, None)
        ]

    def test_a_value_disappears_when_it_expires_and_no_longer_blocks_older_rows(
        self, session: Session
    ) -> None:
        """Expiry happens by itself; an expired value no longer outranks older rows."""
        max_age = timedelta(seconds=2)
        short = stats_table(max_age=max_age)
        event = _now() - timedelta(milliseconds=500)
        assert session.write(short, [stats_row(1, event, 1)]) == WriteResult(1, 0)
        assert session.read(short, drivers(1)) == [stats_value(1, event)]
        expired = event + max_age + timedelta(milliseconds=100)
        time.sleep(max(0.0, (expired - _now()).total_seconds()))
        assert session.read(short, drivers(1)) == [stats_value(None, None)]
        longer = stats_table(max_age=timedelta(days=1))
        older = event - timedelta(milliseconds=100)
        assert session.write(longer, [stats_row(1, older, 2)]) == WriteResult(1, 0)
        assert session.read(longer, drivers(1)) == [stats_value(2, older)]

    def test_without_max_age_values_never_expire(self, session: Session) -> None:
        """A table without max_age keeps its values forever."""
        old = datetime(2000, 1, 1, tzinfo=UTC)
        session.write(STATS, [stats_row(1, old, 1)])
        far_future = datetime(2200, 1, 1, tzinfo=UTC)
        assert session.read(STATS, drivers(1), now=far_future) == [stats_value(1, old)]

    def test_extend_expiry_follows_a_raised_or_removed_max_age(self, session: Session) -> None:
        """Live values get event + the new max_age where later; expiry is never shortened."""
        hour = timedelta(hours=1)
        table = stats_table("extended", max_age=hour)
        neighbour = stats_table("extended_not", max_age=hour)
        event = (_now() - 10 * MINUTE).replace(microsecond=0)
        earlier = event - 5 * MINUTE
        session.write(table, [stats_row(1, event, 1), stats_row(2, earlier, 2)])
        session.write(neighbour, [stats_row(1, event, 3)])
        both = [stats_value(1, event), stats_value(2, earlier)]
        after_old_expiry = event + hour + MINUTE
        assert (
            session.read(table, drivers(1, 2), now=after_old_expiry)
            == [stats_value(None, None)] * 2
        )
        raised = stats_table("extended", max_age=2 * hour)
        assert session.store.extend_expiry(session.project, raised) == 2
        assert session.read(table, drivers(1, 2), now=after_old_expiry) == both
        assert session.read(neighbour, drivers(1), now=after_old_expiry) == [
            stats_value(None, None)
        ]
        expires = event + 2 * hour
        assert session.read(table, drivers(1, 2), now=expires) == [
            stats_value(1, event),
            stats_value(None, None),
        ]
        microsecond = timedelta(microseconds=1)
        assert session.read(table, drivers(1), now=expires + microsecond) == [
            stats_value(None, None)
        ]
        lowered = stats_table("extended", max_age=30 * MINUTE)
        assert session.store.extend_expiry(session.project, lowered) == 0
        assert session.store.extend_expiry(session.project, raised) == 0
        assert session.read(table, drivers(1, 2), now=after_old_expiry) == both
        removed = stats_table("extended")
        assert session.store.extend_expiry(session.project, removed) == 2
        assert session.read(table, drivers(1, 2), now=datetime(2200, 1, 1, tzinfo=UTC)) == both
        assert session.store.extend_expiry(session.project, removed) == 0
        assert session.store.extend_expiry(session.project, raised) == 0

    def test_extended_values_outlive_their_old_expiry_and_expired_ones_stay_gone(
        self, session: Session
    ) -> None:
        """In real time, an extended value outlives its old expiry; expired ones stay gone.

        A value that had expired before the extension is not restored.
        """
        # The doomed value expires 1 s after start, the other 3.8 s after: the extension has
        # 2.7 s to land between them, enough on a loaded machine.
        old = timedelta(seconds=4)
        raised, removed = stats_table("raised", max_age=old), stats_table("removed", max_age=old)
        start = _now()
        event = start - timedelta(milliseconds=200)
        doomed = start - timedelta(milliseconds=3000)
        for table in (raised, removed):
            rows = [stats_row(1, event, 1), stats_row(2, doomed, 2)]
            assert session.write(table, rows) == WriteResult(written=2, skipped=0)
        _sleep_until(doomed + old + timedelta(milliseconds=100))
        longer = stats_table("raised", max_age=timedelta(hours=1))
        assert session.store.extend_expiry(session.project, longer) == 1
        assert session.store.extend_expiry(session.project, stats_table("removed")) == 1
        _sleep_until(event + old + timedelta(milliseconds=200))
        expected = [stats_value(1, event), stats_value(None, None)]
        assert session.read(raised, drivers(1, 2)) == expected
        assert session.read(removed, drivers(1, 2)) == expected

    # --- definition changes ---------------------------------------------------------------------

    def test_values_follow_lossless_widenings_and_other_retyped_values_read_null(
        self, session: Session
    ) -> None:
        """Stored values follow lossless widenings; other retyped values read as null.

        A value written as a type that widens losslessly to the feature's current type reads as
        that type (exactly as a training set converts it).
        """
        pairs = [(a, b) for a in ValueType for b in ValueType if is_lossless_widening(a, b)]
        narrow_values: dict[ValueType, object] = {
            ValueType.INT32: -(2**31),
            ValueType.FLOAT: 0.1,
            ValueType.STRING: "naïve ☕",
            ValueType.INT32_LIST: [2**31 - 1, None, -1],
            ValueType.FLOAT_LIST: [1.5, None, 0.1],
            ValueType.STRING_LIST: ["a", None, ""],
        }
        float32_tenth = struct.unpack("<f", struct.pack("<f", 0.1))[0]
        wide_values: dict[tuple[ValueType, ValueType], object] = {
            (ValueType.INT32, ValueType.INT64): -(2**31),
            (ValueType.INT32, ValueType.DOUBLE): -(2.0**31),
            (ValueType.FLOAT, ValueType.DOUBLE): float32_tenth,
            (ValueType.STRING, ValueType.BYTES): "naïve ☕".encode(),
            (ValueType.INT32_LIST, ValueType.INT64_LIST): [2**31 - 1, None, -1],
            (ValueType.INT32_LIST, ValueType.DOUBLE_LIST): [2.0**31 - 1, None, -1.0],
            (ValueType.FLOAT_LIST, ValueType.DOUBLE_LIST): [1.5, None, float32_tenth],
            (ValueType.STRING_LIST, ValueType.BYTES_LIST): [b"a", None, b""],
        }
        assert set(wide_values) == set(pairs)
        names = [f"f_{a.name.lower()}_{b.name.lower()}" for a, b in pairs]
        written = FeatureTable(
            name="retyped",
            entities=("driver_id",),
            features=(
                *(Feature(name=n, value_type=a) for n, (a, _) in zip(names, pairs, strict=True)),
                Feature(name="narrowed", value_type=ValueType.INT64),
            ),
        )
        read_as = FeatureTable(
            name="retyped",
            entities=("driver_id",),
            features=(
                *(Feature(name=n, value_type=b) for n, (_, b) in zip(names, pairs, strict=True)),
                Feature(name="narrowed", value_type=ValueType.INT32),
            ),
        )
        values = {n: narrow_values[a] for n, (a, _) in zip(names, pairs, strict=True)}
        rows = [Row({"driver_id": 1}, T, {**values, "narrowed": 7}), Row({"driver_id": 2}, T)]
        assert session.write(written, rows) == WriteResult(written=2, skipped=0)
        result = session.read_table(read_as, drivers(1, 2))
        assert result.schema.types == [
            *(to_arrow_type(f.value_type) for f in read_as.features),
            TIMESTAMP_ARROW_TYPE,
        ]
        widened = {n: wide_values[pair] for n, pair in zip(names, pairs, strict=True)}
        nulls = dict.fromkeys(read_as.feature_names)
        assert result.to_pylist() == [
            {**widened, "narrowed": None, EVENT_TIMESTAMP_COLUMN: T},
            {**nulls, EVENT_TIMESTAMP_COLUMN: T},
        ]

    def test_added_features_read_null_on_old_rows_and_removed_ones_are_not_read(
        self, session: Session
    ) -> None:
        """Stored rows follow a table whose features were added, removed or reordered."""
        first = FeatureTable(
            name="evolving",
            entities=("driver_id",),
            features=(
                Feature(name="a", value_type=ValueType.INT64),
                Feature(name="b", value_type=ValueType.STRING),
            ),
        )
        second = FeatureTable(
            name="evolving",
            entities=("driver_id",),
            features=(
                Feature(name="c", value_type=ValueType.DOUBLE),
                Feature(name="a", value_type=ValueType.INT64),
            ),
        )
        session.write(first, [Row({"driver_id": 1}, T, {"a": 1, "b": "x"})])
        session.write(second, [Row({"driver_id": 2}, T, {"a": 2, "c": 0.5})])
        assert session.read(second, drivers(1, 2)) == [
            {"c": None, "a": 1, EVENT_TIMESTAMP_COLUMN: T},
            {"c": 0.5, "a": 2, EVENT_TIMESTAMP_COLUMN: T},
        ]
        with pytest.raises(FeatureRefError):
            session.read(second, drivers(1), ["b"])
        assert session.read(first, drivers(1, 2)) == [
            {"a": 1, "b": "x", EVENT_TIMESTAMP_COLUMN: T},
            {"a": 2, "b": None, EVENT_TIMESTAMP_COLUMN: T},
        ]


def _sleep_until(moment: datetime) -> None:
    time.sleep(max(0.0, (moment - _now()).total_seconds()))


__all__ = [
    "ALL_TYPES",
    "ENTITY_TYPES",
    "OnlineStoreContract",
    "Row",
    "STATS",
    "Session",
    "T",
    "build_batch",
    "drivers",
    "stats_row",
    "stats_table",
    "stats_value",
]
