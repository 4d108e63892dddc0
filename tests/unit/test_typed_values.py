"""Values are read by their declared type: CSV fields, DataFrame object columns, entity CSVs for
retrieval, and Parquet files other tools wrote into a batch source. Exact values, exact errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import DataValidationError
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore

UTC = timezone.utc
TEN = datetime(2024, 1, 1, 10, tzinfo=UTC)
USER = Entity(name="user_id", value_type=ValueType.STRING)
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
KINDS = FeatureTable(
    name="kinds",
    entities=["user_id"],
    features=[
        Feature(name="s", value_type=ValueType.STRING),
        Feature(name="b", value_type=ValueType.BYTES),
        Feature(name="i", value_type=ValueType.INT32),
        Feature(name="n", value_type=ValueType.INT64),
        Feature(name="d", value_type=ValueType.DOUBLE),
        Feature(name="f", value_type=ValueType.FLOAT),
        Feature(name="ok", value_type=ValueType.BOOL),
        Feature(name="at", value_type=ValueType.UNIX_TIMESTAMP),
        Feature(name="ns", value_type=ValueType.INT64_LIST),
        Feature(name="ss", value_type=ValueType.STRING_LIST),
        Feature(name="ts", value_type=ValueType.UNIX_TIMESTAMP_LIST),
    ],
    batch_source=FileSource(
        path="data/kinds", event_timestamp_column="event_ts", created_timestamp_column="created"
    ),
)
TRIPS = FeatureTable(
    name="trips",
    entities=["driver_id"],
    features=[
        Feature(name="trips", value_type=ValueType.INT64),
        Feature(name="rank", value_type=ValueType.INT32),
        Feature(name="rate", value_type=ValueType.DOUBLE),
        Feature(name="tag", value_type=ValueType.STRING),
    ],
    batch_source=FileSource(path="data/trips", event_timestamp_column="event_timestamp"),
)
HEADER = "user_id,event_ts,created,s,b,i,n,d,f,ok,at,ns,ss,ts"
ROW = "u,2024-01-01T10:00:00Z,,x,x,1,1,0.5,0.5,true,2024-01-01,[1],[],[]"
"""A valid CSV row of ``kinds``."""


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[Client]:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        client.apply([USER, DRIVER, KINDS, TRIPS])
        yield client


def _csv(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "rows.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def _stored(client: Client, table: str) -> dict[str, list[Any]]:
    """Every row of ``table``'s source, as read back by the offline store, by column."""
    store = DuckDBOfflineStore(DuckDBConfig(), root=client.settings.root)
    try:
        batches = list(store.read_range(client.get_feature_table(table), None, None))
    finally:
        store.close()
    rows = pa.Table.from_batches(batches).drop_columns(["ingestion_id"])
    return rows.sort_by(rows.column_names[0]).to_pydict()


def _refusal(client: Client, table: str, data: object) -> tuple[str, dict[str, Any]]:
    with pytest.raises(DataValidationError) as caught:
        client.ingest(table, data)  # type: ignore[arg-type]
    return caught.value.message, caught.value.attrs()


# ---- CSV: every column is text read by its declared type ----------------------------------------


def test_csv_fields_are_read_by_their_declared_types(client: Client, tmp_path: Path) -> None:
    path = _csv(
        tmp_path,
        'NA,2024-01-01T10:00:00Z,,NA,NA,+7,42.0,inf,0.1,True,2024-05-01,"[1, 2]","[""NA"", null]",'
        '"[""2024-01-01T00:00:00+01:00""]"',
        "null,2024-01-01 10:00:00,2024-01-01,null,,-0,4.2e1,-1e-3,-2,0,"
        "2024-05-01T12:30:00.5+02:00,[],[],",
        'N/A,2024-01-01,,N/A,"",9,9223372036854775807,.5,3,FALSE,,,,',
        'NaN,2024-01-01T10:00:00Z,,NaN,N/A,,-9223372036854775808,5.,,1,,"[null]","[""""]",[]',
        '"",2024-01-01T10:00:00Z,,"",,1,1,1,1,true,,[],[],[]',
    )
    report = client.ingest("kinds", path)
    assert report.rows == 5
    assert _stored(client, "kinds") == {
        "user_id": ["", "N/A", "NA", "NaN", "null"],
        "s": ["", "N/A", "NA", "NaN", "null"],
        "b": [None, b"", b"NA", b"N/A", None],
        "i": [1, 9, 7, None, 0],
        "n": [1, 2**63 - 1, 42, -(2**63), 42],
        "d": [1.0, 0.5, float("inf"), 5.0, -0.001],
        "f": [1.0, 3.0, float(np.float32(0.1)), None, -2.0],
        "ok": [True, False, True, True, False],
        "at": [
            None,
            None,
            datetime(2024, 5, 1, tzinfo=UTC),
            None,
            datetime(2024, 5, 1, 10, 30, 0, 500_000, tzinfo=UTC),
        ],
        "ns": [[], None, [1, 2], [None], []],
        "ss": [[], None, ["NA", None], [""], []],
        "ts": [[], None, [datetime(2023, 12, 31, 23, tzinfo=UTC)], [], None],
        "event_timestamp": [TEN, datetime(2024, 1, 1, tzinfo=UTC), TEN, TEN, TEN],
        "created_timestamp": [None, None, None, None, datetime(2024, 1, 1, tzinfo=UTC)],
    }


@pytest.mark.parametrize(
    ("column", "field", "message"),
    [
        (
            "i",
            "nan",
            "'nan' cannot be read as feature i (INT32): expected a whole decimal number such as "
            "42, -7 or 42.0 (an empty field is null)",
        ),
        (
            "i",
            "0x10",
            "'0x10' cannot be read as feature i (INT32): expected a whole decimal number such as "
            "42, -7 or 42.0 (an empty field is null)",
        ),
        (
            "i",
            " 5",
            "' 5' cannot be read as feature i (INT32): expected a whole decimal number such as "
            "42, -7 or 42.0 (an empty field is null)",
        ),
        ("i", "2147483648", "'2147483648' cannot be stored as feature i (INT32) without loss"),
        ("i", "3.5", "'3.5' cannot be stored as feature i (INT32) without loss"),
        ("n", "1e19", "'1e19' cannot be stored as feature n (INT64) without loss"),
        (
            "n",
            "9223372036854775808",
            "'9223372036854775808' cannot be stored as feature n (INT64) without loss",
        ),
        (
            "d",
            "NaN",
            "'NaN' cannot be read as feature d (DOUBLE): expected a decimal number such as 0.5, "
            "-2 or 1e-3, or inf (an empty field is null)",
        ),
        ("d", "1e400", "'1e400' cannot be stored as feature d (DOUBLE) without loss"),
        ("f", "1e39", "'1e39' cannot be stored as feature f (FLOAT) without loss"),
        (
            "ok",
            "yes",
            "'yes' cannot be read as feature ok (BOOL): expected true, false, 1 or 0 (an empty "
            "field is null)",
        ),
        (
            "at",
            "1714521600",
            "'1714521600' cannot be read as feature at (UNIX_TIMESTAMP): expected ISO 8601 text "
            "such as 2024-05-01T12:00:00Z",
        ),
        (
            "ns",
            "1;2",
            "'1;2' cannot be read as feature ns (INT64_LIST): expected a JSON array such as "
            "[1, 2] (an empty field is null)",
        ),
        (
            "ns",
            "[NaN]",
            "'[NaN]' cannot be read as feature ns (INT64_LIST): expected a JSON array such as "
            "[1, 2] (an empty field is null)",
        ),
        (
            "ns",
            "[1, 2.5]",
            "element 1 of the list: 2.5 cannot be stored as feature ns (INT64_LIST) without loss",
        ),
        (
            "ns",
            '[1, "2"]',
            "element 1 of the list: '2' (str) cannot be stored as feature ns (INT64_LIST)",
        ),
    ],
)
def test_a_csv_field_that_is_not_its_type_is_refused_at_its_true_row(
    client: Client, tmp_path: Path, column: str, field: str, message: str
) -> None:
    names = HEADER.split(",")
    cells = ROW.split(",")
    quoted = '"' + field.replace('"', '""') + '"'
    cells[names.index(column)] = quoted if "," in field or '"' in field else field
    bad = ",".join(cells)
    path = _csv(tmp_path, ROW, ROW, bad, ROW)
    assert _refusal(client, "kinds", path) == (
        f"column {column!r} row 2: {message}",
        {"column": column, "row": 2},
    )


def test_csv_nulls_in_required_columns_name_their_row(client: Client, tmp_path: Path) -> None:
    assert _refusal(client, "kinds", _csv(tmp_path, ROW, "," + ROW.split(",", 1)[1])) == (
        "column 'user_id' row 1: is null; every row needs entity user_id (STRING)",
        {"column": "user_id", "row": 1},
    )
    no_time = ROW.replace("2024-01-01T10:00:00Z", "")
    assert _refusal(client, "kinds", _csv(tmp_path, no_time)) == (
        "column 'event_ts' row 0: is null; every row needs an event timestamp",
        {"column": "event_ts", "row": 0},
    )


def test_entity_csv_for_retrieval_is_read_by_the_entities_types(
    client: Client, tmp_path: Path
) -> None:
    client.ingest(
        "kinds",
        _csv(
            tmp_path,
            "007,2024-01-01T10:00:00Z,,seven,,,,,,,,,,",
            "0042,2024-01-01T10:00:00Z,,forty-two,,,,,,,,,,",
            "NA,2024-01-01T10:00:00Z,,not available,,,,,,,,,,",
        ),
    )
    entities = tmp_path / "entities.csv"
    entities.write_text(
        "user_id,event_timestamp,label\n"
        "0042,2024-01-02,0042\n"
        "007,2024-01-02T00:00:00+01:00,NA\n"
        "7,2024-01-02,\n"
        "NA,2024-01-02,1.50\n"
    )
    result = client.get_historical_features(["kinds:s"], entities).to_arrow()
    assert result.schema == pa.schema(
        [
            ("user_id", pa.string()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("label", pa.string()),
            ("kinds__s", pa.string()),
        ]
    )
    assert result.to_pydict() == {
        "user_id": ["0042", "007", "7", "NA"],
        "event_timestamp": [
            datetime(2024, 1, 2, tzinfo=UTC),
            datetime(2024, 1, 1, 23, tzinfo=UTC),
            datetime(2024, 1, 2, tzinfo=UTC),
            datetime(2024, 1, 2, tzinfo=UTC),
        ],
        "label": ["0042", "NA", None, "1.50"],
        "kinds__s": ["forty-two", "seven", None, "not available"],
    }


def test_entity_csv_with_an_int_entity_and_bad_fields(client: Client, tmp_path: Path) -> None:
    client.ingest(
        "trips",
        pd.DataFrame({"driver_id": [7], "event_timestamp": [TEN], "trips": [3]}).assign(
            rank=None, rate=None, tag=None
        ),
    )
    entities = tmp_path / "entities.csv"
    entities.write_text("driver_id,event_timestamp\n007,2024-01-02\n7.0,2024-01-02\n")
    result = client.get_historical_features(["trips:trips"], entities).to_arrow()
    assert result.to_pydict() == {
        "driver_id": [7, 7],
        "event_timestamp": [datetime(2024, 1, 2, tzinfo=UTC)] * 2,
        "trips__trips": [3, 3],
    }
    entities.write_text("driver_id,event_timestamp\n7,2024-01-02\n0x7,2024-01-02\n")
    with pytest.raises(DataValidationError) as caught:
        client.get_historical_features(["trips:trips"], entities)
    assert caught.value.message == (
        "column 'driver_id' row 1: '0x7' cannot be read as entity driver_id (INT64): expected a "
        "whole decimal number such as 42, -7 or 42.0 (an empty field is null)"
    )
    entities.write_text("driver_id,event_timestamp\n7,2024-01-02\n8,\n")
    with pytest.raises(DataValidationError) as caught:
        client.get_historical_features(["trips:trips"], entities)
    assert caught.value.message == (
        "column 'event_timestamp' row 1: is null; every entity row needs a timestamp"
    )


# ---- DataFrame object columns: the declared type decides, never pyarrow's inference ------------


def _trips(**columns: object) -> pd.DataFrame:
    data: dict[str, object] = {
        "driver_id": [1, 2],
        "event_timestamp": [TEN, TEN],
        "trips": [10, 20],
        "rank": [1, 2],
        "rate": [0.5, 0.25],
        "tag": ["a", "b"],
    }
    data.update(columns)
    return pd.DataFrame(data)


def _objects(*values: object) -> pd.Series[Any]:
    return pd.Series(list(values), dtype=object)


@pytest.mark.parametrize(
    ("columns", "message", "column", "row"),
    [
        (
            {"event_timestamp": _objects(1714521600, 1714521601)},
            "1714521600 (int) cannot be stored as an event timestamp: a number has no unit; give "
            "datetimes or ISO 8601 text, or convert epoch numbers first, e.g. "
            "pandas.to_datetime(values, unit='s')",
            "event_timestamp",
            0,
        ),
        (
            {"event_timestamp": _objects(datetime(2024, 1, 1), 1714521600)},
            "1714521600 (int) cannot be stored as an event timestamp: a number has no unit; give "
            "datetimes or ISO 8601 text, or convert epoch numbers first, e.g. "
            "pandas.to_datetime(values, unit='s')",
            "event_timestamp",
            1,
        ),
        (
            {"trips": _objects(1, 2**70)},
            "1180591620717411303424 cannot be stored as feature trips (INT64) without loss",
            "trips",
            1,
        ),
        (
            {"trips": _objects(2**63, 1)},
            "9223372036854775808 cannot be stored as feature trips (INT64) without loss",
            "trips",
            0,
        ),
        (
            {"rank": _objects("q", 2)},
            "'q' (str) cannot be stored as feature rank (INT32)",
            "rank",
            0,
        ),
        ({"tag": _objects(1, "y")}, "1 (int) cannot be stored as feature tag (STRING)", "tag", 0),
        (
            {"rank": _objects(True, 2)},
            "True (bool) cannot be stored as feature rank (INT32)",
            "rank",
            0,
        ),
        (
            {"rate": _objects(0.5, 2**53 + 1)},
            "9007199254740993 cannot be stored as feature rate (DOUBLE) without loss",
            "rate",
            1,
        ),
        (
            {"trips": _objects(1.0, 2.5)},
            "2.5 cannot be stored as feature trips (INT64) without loss",
            "trips",
            1,
        ),
        (
            {"event_timestamp": _objects(TEN, pd.Timestamp("2024-01-01 10:00:00.000000001"))},
            "Timestamp('2024-01-01 10:00:00.000000001') has digits below a microsecond, so it "
            "cannot be stored as an event timestamp without loss",
            "event_timestamp",
            1,
        ),
        (
            {"tag": _objects("a", b"\xff")},
            "b'\\xff' is not valid UTF-8, so it cannot be stored as feature tag (STRING)",
            "tag",
            1,
        ),
    ],
)
def test_object_columns_are_read_by_the_declared_type(
    client: Client,
    tmp_path: Path,
    columns: dict[str, object],
    message: str,
    column: str,
    row: int,
) -> None:
    assert _refusal(client, "trips", _trips(**columns)) == (
        f"column {column!r} row {row}: {message}",
        {"column": column, "row": row},
    )


def test_object_columns_that_fit_are_stored_exactly(client: Client) -> None:
    berlin = timezone(timedelta(hours=1))
    frame = pd.DataFrame(
        {
            "driver_id": _objects(1, 2.0, Decimal(3), 4),
            "event_timestamp": _objects(
                datetime(2024, 1, 1, 11, tzinfo=berlin),
                "2024-01-01T10:00:00Z",
                date(2024, 1, 1),
                pd.Timestamp("2024-01-01 05:00", tz="America/New_York"),
            ),
            "trips": _objects(2**63 - 1, None, float("nan"), -(2**63)),
            "rank": _objects(1.0, pd.NA, 3, None),
            "rate": _objects(1, 0.5, None, 2**53),
            "tag": _objects("NA", b"bytes", None, ""),
            "ignored": _objects(1, "mixed", 2.5, None),
        }
    )
    report = client.ingest("trips", frame)
    assert _stored(client, "trips") == {
        "driver_id": [1, 2, 3, 4],
        "trips": [2**63 - 1, None, None, -(2**63)],
        "rank": [1, None, 3, None],
        "rate": [1.0, 0.5, None, 2.0**53],
        "tag": ["NA", "bytes", None, ""],
        "event_timestamp": [TEN, TEN, datetime(2024, 1, 1, tzinfo=UTC), TEN],
        # No created-timestamp column: reads give the ingestion time in its place.
        "created_timestamp": [report.ingestion_time] * 4,
    }


def test_extra_columns_are_never_converted(client: Client, tmp_path: Path) -> None:
    frame = _trips(extra=_objects(1, "a"), nested=_objects({"a": 1}, [1, "b"]))
    assert client.ingest("trips", frame).rows == 2
    arrow = pa.Table.from_pandas(_trips(), preserve_index=False).append_column(
        "extra", pa.array([{"x": 1}, None])
    )
    assert client.ingest("trips", arrow).rows == 2
    pq.write_table(arrow, tmp_path / "rows.parquet")
    assert client.ingest("trips", tmp_path / "rows.parquet").rows == 2


def test_timestamps_beyond_python_are_refused_not_overflowed(client: Client) -> None:
    huge = pa.array([0, 2**62], pa.int64()).cast(pa.timestamp("ms"))
    arrow = pa.Table.from_pandas(_trips(), preserve_index=False).set_column(
        1, "event_timestamp", huge
    )
    expected = (
        "column 'event_timestamp' row 1: timestamp is outside years 1-9999 (raw value "
        "4611686018427387904 ms)",
        {"column": "event_timestamp", "row": 1},
    )
    assert _refusal(client, "trips", arrow) == expected
    frame = _trips(event_timestamp=pd.Series([0, 2**62]).astype("datetime64[ms]"))
    assert _refusal(client, "trips", frame) == expected


def test_list_errors_name_a_row_that_exists(client: Client) -> None:
    # A null list that hides elements, and a slice: element positions are not row positions.
    lists = pa.ListArray.from_arrays(
        pa.array([0, 1, 3, 4, 7], pa.int32()),
        pa.array([0.0, 9.5, 9.5, 1.0, 1.0, 2.0, 2.5]),
        mask=pa.array([False, True, False, False]),
    )
    table = FeatureTable(
        name="lists",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64_LIST)],
        batch_source=FileSource(path="data/lists", event_timestamp_column="event_timestamp"),
    )
    client.apply(table)
    rows = pa.table({"driver_id": [1, 2, 3, 4], "event_timestamp": [TEN] * 4, "v": lists}).slice(1)
    assert _refusal(client, "lists", rows) == (
        "column 'v' row 2: element 2 of the list: 2.5 cannot be stored as feature v (INT64_LIST) "
        "without loss",
        {"column": "v", "row": 2},
    )
    frame = pd.DataFrame(
        {
            "driver_id": [1, 2, 3],
            "event_timestamp": [TEN] * 3,
            "v": _objects([1], None, (2, "x")),
        }
    )
    assert _refusal(client, "lists", frame) == (
        "column 'v' row 2: element 1 of the list: 'x' (str) cannot be stored as feature v "
        "(INT64_LIST)",
        {"column": "v", "row": 2},
    )
    not_a_list = pd.DataFrame(
        {"driver_id": [1, 2], "event_timestamp": [TEN] * 2, "v": _objects([1], "1, 2")}
    )
    assert _refusal(client, "lists", not_a_list) == (
        "column 'v' row 1: '1, 2' (str) cannot be stored as feature v (INT64_LIST)",
        {"column": "v", "row": 1},
    )


def test_entity_dataframe_object_columns_for_retrieval(client: Client) -> None:
    client.ingest(
        "kinds",
        pd.DataFrame({"user_id": ["7"], "event_ts": [TEN], "s": ["seven"]}).assign(
            **{name: None for name in ("b", "i", "n", "d", "f", "ok", "at", "ns", "ss", "ts")}
        ),
    )
    with pytest.raises(DataValidationError) as caught:
        client.get_historical_features(
            ["kinds:s"], pd.DataFrame({"user_id": _objects("7", 7), "event_timestamp": [TEN] * 2})
        )
    assert (caught.value.message, caught.value.attrs()) == (
        "column 'user_id' row 1: 7 (int) cannot be stored as entity user_id (STRING)",
        {"column": "user_id", "row": 1},
    )
    with pytest.raises(DataValidationError) as caught:
        client.get_historical_features(
            ["kinds:s"],
            pd.DataFrame({"user_id": ["7"], "event_timestamp": _objects(1714521600)}),
        )
    assert caught.value.attrs() == {"column": "event_timestamp", "row": 0}
    result = client.get_historical_features(
        ["kinds:s"],
        pd.DataFrame(
            {"user_id": _objects("7", b"7"), "event_timestamp": _objects(TEN, "2024-01-01T11:00")}
        ),
    ).to_arrow()
    assert result.column("kinds__s").to_pylist() == ["seven", "seven"]


# ---- Parquet files other tools wrote into a batch source ---------------------------------------

NAIVE = [datetime(2024, 1, 1, 10), datetime(2024, 1, 1, 11, 30, 0, 250)]
"""The event times of the foreign files, as UTC wall times."""


def _timestamps(unit: str, zone: str | None) -> pa.Array:
    values = pa.array(NAIVE, pa.timestamp("us")).cast(pa.timestamp(unit), safe=False)
    return values if zone is None else values.cast(pa.timestamp(unit, tz=zone))


def _foreign(
    client: Client, folder: Path, table: pa.Table, *, int96: bool = False, name: str = "foreign"
) -> FeatureTable:
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet", use_deprecated_int96_timestamps=int96)
    definition = FeatureTable(
        name=name,
        entities=["driver_id"],
        features=list(TRIPS.features),
        batch_source=FileSource(path=str(folder), event_timestamp_column="event_timestamp"),
    )
    client.apply(definition)
    return definition


def _foreign_rows(event_timestamp: pa.Array, **columns: pa.Array) -> pa.Table:
    data: dict[str, pa.Array] = {
        "driver_id": pa.array([1, 2], pa.int32()),
        "event_timestamp": event_timestamp,
        "trips": pa.array([10, 20], pa.int32()),
        "rank": pa.array([1, 2], pa.int64()),
        "rate": pa.array([0.5, 0.25], pa.float32()),
        "tag": pa.array([b"a", b"b"]),
    }
    data.update(columns)
    return pa.table(data)


@pytest.mark.parametrize("native", [True, False], ids=["duckdb-reader", "arrow-dataset"])
@pytest.mark.parametrize(
    ("unit", "zone", "int96"),
    [
        ("ns", None, False),
        ("ns", "UTC", False),
        ("ns", "Europe/Berlin", False),
        ("us", "Asia/Tokyo", False),
        ("ms", None, False),
        ("s", "America/New_York", False),
        ("ns", None, True),
    ],
)
def test_foreign_parquet_reads_as_the_declared_types(
    tmp_path: Path, unit: str, zone: str | None, int96: bool, native: bool
) -> None:
    settings = Settings(
        registry=f"sqlite:///{tmp_path}/registry.db",
        root=tmp_path,
        offline_store={"type": "duckdb", "native_local_reads": native},
    )
    rows = _foreign_rows(_timestamps(unit, zone))
    whole = unit == "s" or unit == "ms"
    second = datetime(2024, 1, 1, 11, 30, tzinfo=UTC)
    second = second if whole else second.replace(microsecond=250)
    with Client(settings=settings) as client:
        client.apply(DRIVER)
        table = _foreign(client, tmp_path / "written-by-pandas", rows, int96=int96)
        entities = pd.DataFrame(
            {
                "driver_id": [1, 2, 2, 3],
                "event_timestamp": [TEN, second - timedelta(microseconds=1), second, second],
            }
        )
        result = client.get_historical_features(["foreign:*"], entities).to_arrow()
        assert result.to_pydict() == {
            **pa.Table.from_pandas(entities, preserve_index=False).to_pydict(),
            "foreign__trips": [10, None, 20, None],
            "foreign__rank": [1, None, 2, None],
            "foreign__rate": [0.5, None, 0.25, None],
            "foreign__tag": ["a", None, "b", None],
        }
        store = DuckDBOfflineStore(DuckDBConfig(native_local_reads=native), root=tmp_path)
        read = pa.Table.from_batches(list(store.read_range(table, TEN, None)))
        store.close()
        assert read.select(["trips", "rank", "rate", "tag", "event_timestamp"]).to_pydict() == {
            "trips": [10, 20],
            "rank": [1, 2],
            "rate": [0.5, 0.25],
            "tag": ["a", "b"],
            "event_timestamp": [TEN, second],
        }
        job = client.start_offline_to_online_ingestion("foreign", TEN, TEN + timedelta(days=1))
        job.wait()
        online = client.get_online_features(
            ["foreign:trips", "foreign:tag"], entity_rows=[{"driver_id": 1}, {"driver_id": 2}]
        )
        assert online.to_dict() == {
            "driver_id": [1, 2],
            "foreign__trips": [10, 20],
            "foreign__tag": ["a", "b"],
        }


def test_foreign_numbers_that_fit_and_files_mixed_with_ingestions(
    client: Client, tmp_path: Path
) -> None:
    rows = _foreign_rows(
        pa.array(NAIVE[:1] * 2, pa.timestamp("ns")),
        trips=pa.array([1.0, 2.0**60]),
        rank=pa.array([2**31 - 1, -(2**31)], pa.int64()),
        rate=pa.array([3, 2**53], pa.int64()),
        tag=pa.array(["x", "NA"], pa.large_string()),
    )
    _foreign(client, tmp_path / "mixed", rows, name="mixed")
    client.ingest(
        "mixed",
        pd.DataFrame(
            {"driver_id": [3], "event_timestamp": [TEN], "trips": [7], "rank": [8], "rate": [0.5]}
        ).assign(tag="own"),
    )
    entities = pd.DataFrame({"driver_id": [1, 2, 3], "event_timestamp": [TEN] * 3})
    result = client.get_historical_features(["mixed:*"], entities).to_arrow()
    assert result.drop_columns(["driver_id", "event_timestamp"]).to_pydict() == {
        "mixed__trips": [1, 2**60, 7],
        "mixed__rank": [2**31 - 1, -(2**31), 8],
        "mixed__rate": [3.0, 2.0**53, 0.5],
        "mixed__tag": ["x", "NA", "own"],
    }


@pytest.mark.parametrize(
    ("columns", "message", "row"),
    [
        (
            {"event_timestamp": pa.array([0, 1_704_103_200_000_000_001], pa.timestamp("ns"))},
            "column 'event_timestamp' row 1: 2024-01-01 10:00:00.000000001 has digits below a "
            "microsecond, so it cannot be stored as an event timestamp without loss",
            1,
        ),
        (
            {"trips": pa.array([1.5, 2.0])},
            "column 'trips' row 0: 1.5 cannot be stored as feature trips (INT64) without loss",
            0,
        ),
        (
            {"rank": pa.array([1, 2**40])},
            "column 'rank' row 1: 1099511627776 cannot be stored as feature rank (INT32) without "
            "loss",
            1,
        ),
        (
            {"rate": pa.array([1, 2**53 + 1])},
            "column 'rate' row 1: 9007199254740993 cannot be stored as feature rate (DOUBLE) "
            "without loss",
            1,
        ),
        (
            {"tag": pa.array([b"ok", b"\xff"])},
            "column 'tag' row 1: b'\\xff' cannot be stored as feature tag (STRING) without loss",
            1,
        ),
        (
            {"trips": pa.array(["1", "2"])},
            "column 'trips' holds string values, which cannot be read as feature trips (INT64); "
            "rewrite the file with that type or change the definition",
            None,
        ),
        (
            {"event_timestamp": pa.array([1714521600, 1714521601])},
            "column 'event_timestamp' holds int64 values, which cannot be read as an event "
            "timestamp; rewrite the file with that type or change the definition",
            None,
        ),
    ],
)
def test_a_foreign_file_that_does_not_fit_is_named(
    client: Client, tmp_path: Path, columns: dict[str, pa.Array], message: str, row: int | None
) -> None:
    rows = _foreign_rows(**{"event_timestamp": _timestamps("us", None), **columns})
    table = _foreign(client, tmp_path / "bad", rows)
    path = str(tmp_path / "bad" / "part-0.parquet")
    column = message.split("'")[1]
    expected = (f"file {path!r} {message}", {"path": path, "column": column, "row": row})
    entities = pd.DataFrame({"driver_id": [1], "event_timestamp": [TEN]})
    with pytest.raises(DataValidationError) as caught:
        client.get_historical_features(["foreign:*"], entities).to_arrow()
    assert (caught.value.message, caught.value.attrs()) == expected
    store = DuckDBOfflineStore(DuckDBConfig(), root=tmp_path)
    with pytest.raises(DataValidationError) as caught:
        list(store.read_range(table, None, None))
    store.close()
    assert (caught.value.message, caught.value.attrs()) == expected
