"""The DuckDB point-in-time join equals the brute-force reference on random data.

The data is built to hit the edges: event times on a coarse grid (so ties are common, also
across files of separate ingestions), entity times exactly ``max_age`` after an event and one
microsecond more, entity rows before every feature row, unknown keys, duplicate entity rows,
composite keys through ``field_mapping``, a partitioned source, null created times, and several
tables with different entities and ``max_age`` in one request.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from potluck import Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.ingestion.ingest import ingest, provision_source
from potluck.notices import NoDataWarning
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore
from potluck.offline.pit import resolve_refs
from potluck.testing.reference import ReferenceTable, point_in_time_join

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
US = timedelta(microseconds=1)
SECOND = timedelta(seconds=1)
SIX_HOURS = timedelta(hours=6)
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer_id", value_type=ValueType.STRING)
ENTITIES = {"driver_id": DRIVER, "customer_id": CUSTOMER}
REFS = ("a:*", "a:a_val", "a:a_score", "b:b_val", "c:c_val", "c:*")


def _table(name: str, **kwargs: Any) -> FeatureTable:
    return FeatureTable(name=name, **kwargs)


def _tables(folder: str, max_ages: Sequence[timedelta | None]) -> dict[str, FeatureTable]:
    return {
        "a": _table(
            "a",
            entities=["driver_id"],
            features=[
                Feature(name="a_val", value_type=ValueType.INT64),
                Feature(name="a_score", value_type=ValueType.DOUBLE),
            ],
            max_age=max_ages[0],
            batch_source=FileSource(
                path=f"{folder}/a",
                event_timestamp_column="event_timestamp",
                created_timestamp_column="created",
            ),
        ),
        "b": _table(
            "b",
            entities=["customer_id", "driver_id"],
            features=[Feature(name="b_val", value_type=ValueType.STRING)],
            max_age=max_ages[1],
            batch_source=FileSource(
                path=f"{folder}/b",
                event_timestamp_column="ts",
                date_partition_column="day",
                field_mapping={"cust": "customer_id", "bv": "b_val"},
            ),
        ),
        "c": _table(
            "c",
            entities=["driver_id"],
            features=[Feature(name="c_val", value_type=ValueType.INT32)],
            max_age=max_ages[2],
            batch_source=FileSource(
                path=f"{folder}/c",
                event_timestamp_column="event_timestamp",
                created_timestamp_column="created",
            ),
        ),
    }


@st.composite
def _created_rows(draw: st.DrawFn, prefix: str, null_created: bool) -> list[dict[str, Any]]:
    """Rows keyed by driver on a one-second grid; created times unique per (key, event)."""
    cells = draw(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 6)), max_size=40))
    rows: list[dict[str, Any]] = []
    nulls_used: set[tuple[int, int]] = set()
    created_order = draw(st.permutations(range(len(cells))))
    for n, (driver, second) in enumerate(cells):
        created: datetime | None = T0 + created_order[n] * timedelta(milliseconds=1)
        if null_created and (driver, second) not in nulls_used and draw(st.booleans()):
            nulls_used.add((driver, second))
            created = None
        row = {
            "driver_id": driver,
            "event_timestamp": T0 + second * SECOND,
            "created": created,
            f"{prefix}_val": n,
        }
        if prefix == "a":
            row["a_score"] = draw(st.none() | st.floats(-1, 1, allow_nan=False))
        rows.append(row)
    return rows


@st.composite
def _composite_rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows keyed by (customer, driver) every six hours over days, with no created-timestamp
    column: rows that tie on (key, event) go to the later ingestion, then the later row."""
    cells = draw(
        st.lists(
            st.tuples(st.sampled_from("xy"), st.integers(0, 3), st.integers(0, 8)),
            max_size=20,
        )
    )
    return [
        {"cust": cust, "driver_id": driver, "ts": T0 + step * SIX_HOURS, "bv": f"v{n}"}
        for n, (cust, driver, step) in enumerate(cells)
    ]


def _entity_rows(
    draw: st.DrawFn,
    feature_rows: Sequence[tuple[int, str, datetime, timedelta]],
) -> list[dict[str, Any]]:
    """Entity rows: mostly placed at a feature row's event time plus an edge offset (0, -1 µs,
    max_age, max_age + 1 µs), the rest anywhere, with unknown keys too."""
    count = draw(st.integers(1, 90))
    rows: list[dict[str, Any]] = []
    for n in range(count):
        if feature_rows and draw(st.integers(0, 9)) < 8:
            driver, customer, event, max_age = draw(st.sampled_from(feature_rows))
            offset = draw(st.sampled_from([timedelta(0), -US, max_age, max_age + US, SECOND]))
            moment = event + offset
        else:
            driver, customer = draw(st.integers(0, 4)), draw(st.sampled_from("xyz"))
            unit = draw(st.sampled_from([SECOND, SIX_HOURS]))
            moment = T0 + draw(st.integers(-1, 8)) * unit
        rows.append(
            {"row": n, "driver_id": driver, "customer_id": customer, "event_timestamp": moment}
        )
    return rows


def _chunks(draw: st.DrawFn, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Split rows into one to three ingestions (so ties also span files)."""
    cuts = sorted(draw(st.lists(st.integers(0, len(rows)), max_size=2)))
    bounds = [0, *cuts, len(rows)]
    return [rows[lo:hi] for lo, hi in zip(bounds, bounds[1:], strict=False) if hi > lo]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    a_rows=_created_rows("a", null_created=False),
    b_rows=_composite_rows(),
    c_rows=_created_rows("c", null_created=True),
    max_ages=st.tuples(
        st.sampled_from([None, 3 * SECOND, 10 * SECOND]),
        st.sampled_from([None, timedelta(hours=12), timedelta(hours=30)]),
        st.sampled_from([None, SECOND, 5 * SECOND]),
    ),
    refs=st.lists(st.sampled_from(REFS), min_size=1, max_size=4),
    native=st.booleans(),
    data=st.data(),
)
def test_engine_matches_reference(
    a_rows: list[dict[str, Any]],
    b_rows: list[dict[str, Any]],
    c_rows: list[dict[str, Any]],
    max_ages: tuple[timedelta | None, ...],
    refs: list[str],
    native: bool,
    data: st.DataObject,
) -> None:
    anchors = [
        (row["driver_id"], row.get("cust", "x"), row.get("ts", row.get("event_timestamp")), age)
        for rows, age in ((a_rows, max_ages[0]), (b_rows, max_ages[1]), (c_rows, max_ages[2]))
        for row in rows
        if age is not None
    ] + [
        (row["driver_id"], row.get("cust", "x"), row.get("ts", row.get("event_timestamp")), SECOND)
        for row in (*a_rows, *b_rows, *c_rows)
    ]
    entity_rows = _entity_rows(data.draw, anchors)
    with tempfile.TemporaryDirectory() as folder:
        tables = _tables(folder, max_ages)
        schemas = {
            "a": pa.schema(
                [
                    ("driver_id", pa.int64()),
                    ("event_timestamp", pa.timestamp("us", "UTC")),
                    ("created", pa.timestamp("us", "UTC")),
                    ("a_val", pa.int64()),
                    ("a_score", pa.float64()),
                ]
            ),
            "b": pa.schema(
                [
                    ("cust", pa.string()),
                    ("driver_id", pa.int64()),
                    ("ts", pa.timestamp("us", "UTC")),
                    ("bv", pa.string()),
                ]
            ),
            "c": pa.schema(
                [
                    ("driver_id", pa.int64()),
                    ("event_timestamp", pa.timestamp("us", "UTC")),
                    ("created", pa.timestamp("us", "UTC")),
                    ("c_val", pa.int64()),
                ]
            ),
        }
        for name, rows in (("a", a_rows), ("b", b_rows), ("c", c_rows)):
            provision_source(tables[name], ENTITIES)  # as apply does
            for chunk in _chunks(data.draw, rows):
                report = ingest(
                    tables[name], ENTITIES, pa.Table.from_pylist(chunk, schema=schemas[name])
                )
                for row in chunk:
                    row["ingested_at"] = report.ingestion_time

        store = DuckDBOfflineStore(DuckDBConfig(native_local_reads=native))
        requests = resolve_refs(
            refs, "p", lambda _, name: tables[name], lambda _, name: ENTITIES[name]
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDataWarning)  # a table may get no rows
            result = store.get_historical_features(pa.Table.from_pylist(entity_rows), requests)
        actual = result.to_arrow().to_pylist()
        store.close()

    reference_tables = [
        _reference(request.table, request.features, {"a": a_rows, "b": b_rows, "c": c_rows})
        for request in requests
    ]
    assert actual == point_in_time_join(entity_rows, reference_tables)


def _reference(
    table: FeatureTable, features: Sequence[str], rows: dict[str, list[dict[str, Any]]]
) -> ReferenceTable:
    assert table.batch_source is not None
    names = table.batch_source.field_mapping
    renamed = [
        {
            **{names.get(k, k): v for k, v in row.items()},
            "event_timestamp": row[table.batch_source.event_timestamp_column],
            # A source without a created-timestamp column ranks ties by ingestion time.
            "created_timestamp": row["created"] if "created" in row else row["ingested_at"],
        }
        for row in rows[table.name]
    ]
    return ReferenceTable(table.name, table.entities, features, renamed, table.max_age)
