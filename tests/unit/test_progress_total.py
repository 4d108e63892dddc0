"""The total of an offline-to-online job's progress: the rows of the files it reads, counted from
the Delta log's ``numRecords`` and Parquet footers only, on embedded stores (DuckDB, SQLite)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import load_settings
from potluck.ingestion.offline_to_online import rows_to_read, run_offline_to_online
from potluck.offline.commits import IngestionCommit, count_rows
from potluck.offline.files import part_file_name

DAY = [datetime(2024, 5, d, tzinfo=timezone.utc) for d in (1, 2, 3, 4)]
SIZES = (5, 7, 11)
"""Rows ingested on day 1, 2 and 3, one ingestion (and one table version) per day, at hours
0, 1, 2, ... of the day."""
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def _table(root: Path, partition: str | None) -> FeatureTable:
    return FeatureTable(
        name="trips",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        batch_source=FileSource(
            path=str(root / "data"),
            event_timestamp_column="event_timestamp",
            date_partition_column=partition,
        ),
    )


def _day(day: datetime, size: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "driver_id": pd.Series(range(size), dtype="int64"),
            "event_timestamp": [day + timedelta(hours=h) for h in range(size)],
            "trips": pd.Series(range(size), dtype="int64"),
        }
    )


@pytest.fixture(params=[None, "day"], ids=["flat", "partitioned"])
def client(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Client]:
    config = tmp_path / "potluck.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "registry": "sqlite:///registry.db",
                "online_store": {"type": "sqlite", "path": "online.db"},
            }
        )
    )
    c = Client(settings=load_settings(config))
    c.apply([DRIVER, _table(tmp_path, request.param)])
    for day, size in zip(DAY, SIZES, strict=False):
        c.ingest("trips", _day(day, size))
    yield c
    c.close()


def _total(
    client: Client,
    version: int | None = 3,
    since: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int | None:
    table = client.get_feature_table("trips")
    return rows_to_read(table, client._offline(), version, since, start, end)


def _read(client: Client, start: datetime | None, end: datetime | None) -> tuple[int | None, int]:
    """Run the job body; return its total and the rows it read."""
    progress = run_offline_to_online(
        client.project,
        client.get_feature_table("trips"),
        {"driver_id": ValueType.INT64},
        client._offline(),
        client._online(),
        start=start,
        end=end,
    )
    return progress.rows_total, progress.stats.rows_read


def test_without_a_range_the_total_is_every_committed_row(client: Client) -> None:
    assert _total(client) == 23
    assert _total(client, version=2) == 12  # the pinned version, not the latest
    assert _total(client, since=1) == 18  # only what was committed after version 1
    assert _total(client, since=3) == 0
    assert _read(client, None, None) == (23, 23)


@pytest.mark.parametrize(
    ("start", "end", "total", "read"),
    [
        (DAY[1], DAY[2], 7, 7),  # day 2's file only
        (None, DAY[1], 5, 5),
        (DAY[2], None, 11, 11),
        (DAY[1] + timedelta(hours=3), DAY[2], 7, 4),  # the range cuts day 2's row group
        (DAY[3], None, 0, 0),
    ],
)
def test_a_range_leaves_out_row_groups_wholly_outside_it(
    client: Client, start: datetime | None, end: datetime | None, total: int, read: int
) -> None:
    assert _total(client, start=start, end=end) == total
    assert _read(client, start, end) == (total, read)


def test_a_plain_parquet_folder_is_counted_from_footers(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    rows = pa.table(
        {
            "event_timestamp": pa.array([DAY[0]] * 4 + [DAY[2]] * 6, pa.timestamp("us", tz="UTC")),
            "driver_id": pa.array(range(10), pa.int64()),
        }
    )
    pq.write_table(rows, folder / "part-0.parquet", row_group_size=4)  # groups of 4, 4, 2
    naive = pa.table(
        {"event_timestamp": pa.array([DAY[2].replace(tzinfo=None)], pa.timestamp("us"))}
    )
    pq.write_table(naive, folder / "part-1.parquet")
    location = str(folder)
    assert count_rows(location, version=None) == 11
    count = count_rows(location, version=None, event_column="event_timestamp", start=DAY[2])
    assert count == 7  # the first group (all day 1) is left out; the second straddles
    no_stats = count_rows(location, version=None, event_column="nope", start=DAY[3])
    assert no_stats == 11  # without statistics nothing can be left out


def test_a_source_that_does_not_exist_counts_nothing(tmp_path: Path) -> None:
    assert count_rows(str(tmp_path / "nothing"), version=None) == 0


@settings(max_examples=20, deadline=None)
@given(
    ingestions=st.lists(
        st.lists(st.integers(0, 71), min_size=1, max_size=6), min_size=1, max_size=3
    ),
    bounds=st.tuples(st.none() | st.integers(0, 72), st.none() | st.integers(0, 72)),
)
def test_the_count_is_the_rows_of_files_that_overlap_the_range(
    ingestions: list[list[int]], bounds: tuple[int | None, int | None]
) -> None:
    start, end = (None if b is None else DAY[0] + timedelta(hours=b) for b in bounds)
    schema = pa.schema([("event_timestamp", pa.timestamp("us", tz="UTC"))])
    with tempfile.TemporaryDirectory() as folder:
        for number, hours in enumerate(ingestions):
            commit = IngestionCommit(
                folder, f"20240501T000000{number:06d}Z-0000000{number}", schema
            )
            commit.begin()
            times = [DAY[0] + timedelta(hours=h) for h in hours]
            commit.write(
                part_file_name(commit.ingestion_id, 0),
                pa.table({"event_timestamp": times}, schema=schema),
            )
            commit.commit()
        counted = count_rows(
            folder, version=None, event_column="event_timestamp", start=start, end=end
        )
    low = bounds[0] if bounds[0] is not None else -1
    high = bounds[1] if bounds[1] is not None else 10**6
    overlapping = [h for h in ingestions if max(h) >= low and min(h) < high]
    in_range = sum(low <= hour < high for hours in ingestions for hour in hours)
    assert counted == sum(len(h) for h in overlapping)  # one row group per file
    assert counted >= in_range
