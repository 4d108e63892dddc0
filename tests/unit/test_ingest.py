"""ingest(): whole-input validation, exact errors, atomic Parquet files with ingestion ids."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import DataValidationError, NotFoundError, ValidationError
from potluck.ingestion.ingest import IngestionReport, ingest, new_ingestion_id
from potluck.offline.files import BATCH_SIZE

UTC = timezone.utc
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)

# How a text column is refused where numbers are wanted: pandas 3 gives it a string dtype
# (refused as a whole); pandas 2 keeps Python objects (refused value by value).
TEXT_REFUSED = "holds large_string values, which" if pd.__version__ >= "3" else "'1' (str)"


def _table(path: str = "data/driver_stats", **source: object) -> FeatureTable:
    return FeatureTable(
        name="driver_stats",
        entities=["driver_id"],
        features=[
            Feature(name="conv_rate", value_type=ValueType.DOUBLE),
            Feature(name="trips", value_type=ValueType.INT64),
        ],
        max_age=timedelta(hours=2),
        batch_source=FileSource(
            path=path,
            event_timestamp_column="event_timestamp",
            **source,  # type: ignore[arg-type]
        ),
    )


@pytest.fixture()
def client(tmp_path: Path) -> Client:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    client = Client(settings=settings)
    client.apply([DRIVER, _table(created_timestamp_column="created")])
    yield client
    client.close()


def _frame(**overrides: list[object]) -> pd.DataFrame:
    data: dict[str, list[object]] = {
        "driver_id": [1001, 1002, 1001],
        "event_timestamp": [
            datetime(2024, 1, 1, 10),
            datetime(2024, 1, 1, 11),
            datetime(2024, 1, 2, 9, 30),
        ],
        "created": [datetime(2024, 1, 1, 10, 5)] * 3,
        "conv_rate": [0.5, 0.25, 0.75],
        "trips": [10, 20, 30],
    }
    data.update(overrides)
    return pd.DataFrame(data)


def _files(folder: Path) -> list[str]:
    """The data files under ``folder`` (not the table log nor potluck's locks)."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and not str(p.relative_to(folder)).startswith(("_delta_log", "_potluck"))
    )


def _committed(folder: Path) -> int:
    """The number of versions committed to the table at ``folder`` (the first is the empty one
    ``apply`` creates)."""
    return len(list((folder / "_delta_log").glob("*.json")))


def _read(report: IngestionReport) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in report.files])


def test_ingest_writes_one_parquet_file_with_typed_columns_and_ingestion_id(
    client: Client, tmp_path: Path
) -> None:
    report = client.ingest("driver_stats", _frame())

    assert (report.table, report.rows) == ("driver_stats", 3)
    assert re.fullmatch(r"\d{8}T\d{12}Z-[0-9a-f]{8}", report.ingestion_id)
    assert report.ingestion_id.startswith(f"{report.ingestion_time:%Y%m%dT%H%M%S%f}Z-")
    folder = tmp_path / "data" / "driver_stats"
    assert _files(folder) == [f"part-{report.ingestion_id}-00000.parquet"]
    assert report.files == (str(folder / f"part-{report.ingestion_id}-00000.parquet"),)
    written = _read(report)
    assert written.schema == pa.schema(
        [
            ("driver_id", pa.int64()),
            ("conv_rate", pa.float64()),
            ("trips", pa.int64()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created", pa.timestamp("us", tz="UTC")),
            ("ingestion_id", pa.string()),
        ]
    )
    assert written.to_pydict() == {
        "driver_id": [1001, 1002, 1001],
        "conv_rate": [0.5, 0.25, 0.75],
        "trips": [10, 20, 30],
        "event_timestamp": [
            datetime(2024, 1, 1, 10, tzinfo=UTC),
            datetime(2024, 1, 1, 11, tzinfo=UTC),
            datetime(2024, 1, 2, 9, 30, tzinfo=UTC),
        ],
        "created": [datetime(2024, 1, 1, 10, 5, tzinfo=UTC)] * 3,
        "ingestion_id": [report.ingestion_id] * 3,
    }


def test_every_input_kind_gives_the_same_rows(client: Client, tmp_path: Path) -> None:
    frame = _frame()
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(arrow, tmp_path / "in.parquet")
    (tmp_path / "in.csv").write_text(
        "driver_id,event_timestamp,created,conv_rate,trips,ignored\n"
        "1001,2024-01-01T10:00:00,2024-01-01 10:05:00,0.5,10,x\n"
        "1002,2024-01-01T12:00:00+01:00,2024-01-01 10:05:00,0.25,20,y\n"
        "1001,2024-01-02T09:30:00Z,2024-01-01 10:05:00,0.75,30,z\n"
    )
    reports = [
        client.ingest("driver_stats", data)
        for data in (frame, arrow, str(tmp_path / "in.parquet"), tmp_path / "in.csv")
    ]
    expected = _read(reports[0]).drop_columns(["ingestion_id"])
    for report in reports[1:]:
        assert _read(report).drop_columns(["ingestion_id"]).equals(expected)
    assert len({r.ingestion_id for r in reports}) == 4
    assert [r.ingestion_id for r in reports] == sorted(r.ingestion_id for r in reports)


def test_naive_timestamps_are_utc_and_zoned_ones_are_converted(client: Client) -> None:
    zoned = pd.DatetimeIndex([datetime(2024, 1, 1, 11), datetime(2024, 7, 1, 12)]).tz_localize(
        "Europe/Berlin"
    )
    frame = _frame(
        driver_id=[1, 2],
        event_timestamp=list(zoned),
        created=[datetime(2024, 1, 1), None],
        conv_rate=[0.1, None],
        trips=[1.0, None],
    )
    written = _read(client.ingest("driver_stats", frame))
    assert written.column("event_timestamp").to_pylist() == [
        datetime(2024, 1, 1, 10, tzinfo=UTC),
        datetime(2024, 7, 1, 10, tzinfo=UTC),
    ]
    assert written.column("created").to_pylist() == [datetime(2024, 1, 1, tzinfo=UTC), None]
    assert written.column("trips").to_pylist() == [1, None]
    assert written.column("conv_rate").to_pylist() == [0.1, None]


def test_field_mapping_names_the_input_and_file_columns(tmp_path: Path) -> None:
    table = _table(
        str(tmp_path / "mapped"),
        field_mapping={"driver": "driver_id", "rate": "conv_rate", "n": "trips"},
    )
    frame = pd.DataFrame(
        {
            "driver": [7],
            "rate": [0.5],
            "n": [3],
            "event_timestamp": [datetime(2024, 1, 1)],
            "extra": ["dropped"],
        }
    )
    report = ingest(table, {"driver_id": DRIVER}, frame)
    assert _read(report).column_names == ["driver", "rate", "n", "event_timestamp", "ingestion_id"]
    with pytest.raises(DataValidationError) as caught:
        ingest(table, {"driver_id": DRIVER}, _frame())
    assert caught.value.message == (
        "the rows for feature table 'driver_stats' lack columns 'driver', 'rate', 'n'; their "
        "columns: driver_id, event_timestamp, created, conv_rate, trips"
    )
    assert caught.value.attrs() == {"column": "driver", "row": None}


def test_partitioned_source_gets_one_folder_per_utc_event_date(tmp_path: Path) -> None:
    table = _table(str(tmp_path / "parts"), date_partition_column="day")
    frame = _frame(
        event_timestamp=[
            datetime(2024, 1, 2, 0, 30),
            datetime(2024, 1, 1, 23, 59),
            datetime(2024, 1, 2, 23, 0),
        ],
        created=[None, None, None],
    )
    report = ingest(table, {"driver_id": DRIVER}, frame)
    stem = f"part-{report.ingestion_id}"
    assert _files(tmp_path / "parts") == [
        f"day=2024-01-01/{stem}-00000.parquet",
        f"day=2024-01-02/{stem}-00001.parquet",
    ]
    first, second = (pq.read_table(f) for f in report.files)
    assert first.column("driver_id").to_pylist() == [1002]
    assert sorted(second.column("driver_id").to_pylist()) == [1001, 1001]
    assert "day" not in first.column_names


def test_missing_created_column_gets_the_ingestion_time(client: Client) -> None:
    report = client.ingest("driver_stats", _frame().drop(columns=["created"]))
    assert _read(report).column("created").to_pylist() == [report.ingestion_time] * 3


def test_empty_input_writes_nothing(client: Client, tmp_path: Path) -> None:
    report = client.ingest("driver_stats", _frame().iloc[:0])
    assert (report.rows, report.files, report.version) == (0, (), None)
    assert _files(tmp_path / "data" / "driver_stats") == []
    assert _committed(tmp_path / "data" / "driver_stats") == 1


def test_progress_is_reported_per_batch(client: Client) -> None:
    rows = BATCH_SIZE + 5
    table = pa.table(
        {
            "driver_id": pa.array(range(rows), pa.int64()),
            "event_timestamp": pa.array([datetime(2024, 1, 1)] * rows, pa.timestamp("us")),
            "conv_rate": pa.array([0.5] * rows),
            "trips": pa.array([1] * rows),
        }
    )
    seen: list[tuple[int, int | None]] = []
    report = client.ingest("driver_stats", table, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(BATCH_SIZE, rows), (rows, rows)]
    (written,) = report.files
    assert pq.ParquetFile(written).metadata.num_row_groups == 2


def test_ties_within_an_ingestion_go_to_a_superseded_file(client: Client, tmp_path: Path) -> None:
    ten = datetime(2024, 1, 1, 10)
    frame = _frame(
        driver_id=[1, 1, 1, 2, 2, 3],
        event_timestamp=[ten, ten, ten, ten, ten, ten],
        created=[datetime(2024, 1, 1, 10, 6), None, datetime(2024, 1, 1, 10, 5), ten, ten, None],
        conv_rate=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
        trips=[1, 2, 3, 4, 5, 6],
    )
    report = client.ingest("driver_stats", frame)
    stem = f"part-{report.ingestion_id}-00000"
    assert _files(tmp_path / "data" / "driver_stats") == [
        f"{stem}-superseded.parquet",
        f"{stem}.parquet",
    ]
    winners, superseded = (
        pq.read_table(f"{tmp_path}/data/driver_stats/{stem}{s}.parquet")
        for s in ("", "-superseded")
    )
    # The greatest created time wins (null lowest); equal created times: the later input row.
    assert winners.column("trips").to_pylist() == [1, 5, 6]
    assert superseded.column("trips").to_pylist() == [2, 3, 4]
    assert report.rows == 6


@pytest.mark.parametrize(
    ("overrides", "message", "column", "row"),
    [
        (
            {"trips": [1.0, 2.0, 1.5]},
            "column 'trips' row 2: 1.5 cannot be stored as feature trips (INT64) without loss",
            "trips",
            2,
        ),
        (
            {"trips": ["1", "2", "3"]},
            f"column 'trips' row 0: {TEXT_REFUSED} cannot be stored as feature trips (INT64)",
            "trips",
            0,
        ),
        (
            {"driver_id": [1, None, 3]},
            "column 'driver_id' row 1: is null; every row needs entity driver_id (INT64)",
            "driver_id",
            1,
        ),
        (
            {"driver_id": [1, 2**63 - 1, 2.5]},
            "column 'driver_id' row 1: 9.223372036854776e+18 cannot be stored as entity "
            "driver_id (INT64) without loss",
            "driver_id",
            1,
        ),
        (
            {"event_timestamp": [datetime(2024, 1, 1), datetime(2024, 1, 1), None]},
            "column 'event_timestamp' row 2: is null; every row needs an event timestamp",
            "event_timestamp",
            2,
        ),
        (
            {"conv_rate": [0.5, "x", 0.25]},
            "column 'conv_rate' row 1: 'x' (str) cannot be stored as feature conv_rate (DOUBLE)",
            "conv_rate",
            1,
        ),
    ],
)
def test_bad_values_name_column_and_first_bad_row_and_write_nothing(
    client: Client,
    tmp_path: Path,
    overrides: dict[str, list[object]],
    message: str,
    column: str,
    row: int,
) -> None:
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", _frame(**overrides))
    assert caught.value.message == message
    assert caught.value.attrs() == {"column": column, "row": row}
    assert _files(tmp_path / "data" / "driver_stats") == []
    assert _committed(tmp_path / "data" / "driver_stats") == 1


def test_missing_event_timestamp_column(client: Client, tmp_path: Path) -> None:
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", _frame().drop(columns=["event_timestamp"]))
    assert caught.value.attrs() == {"column": "event_timestamp", "row": None}
    assert caught.value.message.startswith(
        "the rows for feature table 'driver_stats' lack column 'event_timestamp'; their columns: "
    )
    assert _files(tmp_path / "data" / "driver_stats") == []
    assert _committed(tmp_path / "data" / "driver_stats") == 1


def test_timestamps_outside_years_1_to_9999_are_rejected(client: Client) -> None:
    big = pa.array([0, 400 * 365 * 86_400 * 10**6, 10_000 * 366 * 86_400 * 10**6], pa.int64())
    table = pa.table(
        {
            "driver_id": [1, 2, 3],
            "event_timestamp": big.cast(pa.timestamp("us")),
            "conv_rate": [0.1, 0.2, 0.3],
            "trips": [1, 2, 3],
        }
    )
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", table)
    assert caught.value.attrs() == {"column": "event_timestamp", "row": 2}
    assert caught.value.message == (
        "column 'event_timestamp' row 2: timestamp is outside years 1-9999 (raw value "
        "316224000000000000 us)"
    )


def test_sub_microsecond_timestamps_are_rejected(client: Client) -> None:
    frame = _frame(event_timestamp=pd.to_datetime([1, 2_000, 3_001], unit="ns"))
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", frame)
    assert caught.value.attrs() == {"column": "event_timestamp", "row": 0}


def test_a_bad_row_in_a_later_batch_leaves_no_file_behind(client: Client, tmp_path: Path) -> None:
    rows = 2 * BATCH_SIZE + 10
    trips = pa.array([1.0] * rows)
    bad = 2 * BATCH_SIZE + 3
    trips = pa.concat_arrays([trips[:bad], pa.array([0.5]), trips[bad + 1 :]])
    table = pa.table(
        {
            "driver_id": pa.array([1] * rows, pa.int64()),
            "event_timestamp": pa.array([datetime(2024, 1, 1)] * rows, pa.timestamp("us")),
            "conv_rate": pa.array([0.5] * rows),
            "trips": trips,
        }
    )
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", table)
    assert caught.value.attrs() == {"column": "trips", "row": bad}
    assert _files(tmp_path / "data" / "driver_stats") == []


def test_bad_csv_value_is_located_in_the_file(client: Client, tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_text(
        "driver_id,event_timestamp,conv_rate,trips\n"
        "1,2024-01-01T00:00:00,0.5,3\n"
        "2,2024-01-01T00:00:00,0.5,3.5\n"
    )
    with pytest.raises(DataValidationError) as caught:
        client.ingest("driver_stats", path)
    assert caught.value.message == (
        "column 'trips' row 1: '3.5' cannot be stored as feature trips (INT64) without loss"
    )


def test_unreadable_inputs_and_tables_without_a_source(client: Client, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"^cannot read '.*nope\.parquet': no such file$"):
        client.ingest("driver_stats", tmp_path / "nope.parquet")
    with pytest.raises(ValidationError, match=r"expected a \.parquet or \.csv file"):
        client.ingest("driver_stats", tmp_path / "rows.json")
    with pytest.raises(ValidationError, match="rows must be a pandas DataFrame, a pyarrow"):
        client.ingest("driver_stats", [{"driver_id": 1}])  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        client.ingest("nope", _frame())
    sourceless = FeatureTable(
        name="t", entities=["driver_id"], features=[Feature(name="f", value_type="INT64")]
    )
    with pytest.raises(ValidationError) as caught:
        ingest(sourceless, {"driver_id": DRIVER}, _frame())
    assert caught.value.message == (
        "feature table 't' has no batch_source; give it a FileSource to ingest into"
    )


def test_ingestion_ids_sort_by_time() -> None:
    early = new_ingestion_id(datetime(2024, 1, 1, 23, 59, 59, 999_999, tzinfo=UTC))
    late = new_ingestion_id(datetime(2024, 1, 2, tzinfo=UTC))
    assert early.startswith("20240101T235959999999Z-")
    assert early < late
