"""get_historical_features and read_range on the DuckDB engine, through the Client, with exact
values: ties, max_age edges, order, duplicates, several tables, and bad input."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import DataValidationError, FeatureRefError, ValidationError
from potluck.notices import NoDataWarning
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore
from potluck.offline.pit import resolve_refs
from potluck.testing.reference import ReferenceTable, point_in_time_join

UTC = timezone.utc
US = timedelta(microseconds=1)
# How a text column is refused where numbers are wanted: pandas 3 gives it a string dtype
# (refused as a whole); pandas 2 keeps Python objects (refused value by value).
TEXT_REFUSED = "holds large_string values, which" if pd.__version__ >= "3" else "'1' (str)"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
CUSTOMER = Entity(name="customer_id", value_type=ValueType.STRING)
DRIVER_STATS = FeatureTable(
    name="driver_stats",
    entities=["driver_id"],
    features=[
        Feature(name="conv_rate", value_type=ValueType.DOUBLE),
        Feature(name="trips", value_type=ValueType.INT64),
    ],
    max_age=timedelta(hours=2),
    batch_source=FileSource(
        path="data/driver_stats",
        event_timestamp_column="event_timestamp",
        created_timestamp_column="created",
    ),
)
CUSTOMER_DRIVER = FeatureTable(
    name="customer_driver",
    entities=["customer_id", "driver_id"],
    features=[Feature(name="rating", value_type=ValueType.FLOAT)],
    batch_source=FileSource(
        path="data/customer_driver",
        event_timestamp_column="ts",
        field_mapping={"cust": "customer_id", "stars": "rating"},
        date_partition_column="day",
    ),
)
DRIVER_FLAGS = FeatureTable(
    name="driver_flags",
    entities=["driver_id"],
    features=[Feature(name="flagged", value_type=ValueType.BOOL)],
    max_age=timedelta(days=1),
    batch_source=FileSource(path="data/ops_flags", event_timestamp_column="event_timestamp"),
)


def at(hour: int, minute: int = 0, *, day: int = 1) -> datetime:
    return datetime(2024, 1, day, hour, minute, tzinfo=UTC)


@pytest.fixture()
def client(tmp_path: Path) -> Iterator[Client]:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        client.apply([DRIVER, CUSTOMER, DRIVER_STATS, CUSTOMER_DRIVER])
        client.ingest(
            "driver_stats",
            pd.DataFrame(
                {
                    "driver_id": [1, 1, 1, 1, 2],
                    "event_timestamp": [at(10), at(10), at(12), at(12), at(9)],
                    "created": [at(10, 5), at(10, 6), None, at(11), at(9)],
                    "conv_rate": [0.1, 0.2, 0.3, 0.35, 0.5],
                    "trips": [1, 2, 3, 35, 5],
                }
            ),
        )
        client.ingest(
            "customer_driver",
            pd.DataFrame(
                {
                    "cust": ["c1", "c1", "c2"],
                    "driver_id": [1, 1, 1],
                    "ts": [at(8), at(11), at(9, day=2)],
                    "stars": [4.5, 3.0, 5.0],
                }
            ),
        )
        client.set_project("ops")
        client.apply([DRIVER, DRIVER_FLAGS])
        client.ingest(
            "driver_flags",
            pd.DataFrame({"driver_id": [1], "event_timestamp": [at(0)], "flagged": [True]}),
        )
        client.set_project("default")
        yield client


def test_point_in_time_semantics_are_exact(client: Client) -> None:
    entities = pd.DataFrame(
        {
            "driver_id": [1, 1, 2, 2, 1, 3, 1, 1, 1],
            "event_timestamp": [
                at(10, 30),  # the 10:00 tie goes to the greater created time
                at(10) - US,  # before the first row
                at(11),  # exactly max_age after 09:00
                at(11) + US,  # max_age + 1 µs
                at(13),  # 12:00 tie: a null created time sorts first
                at(12),  # unknown driver
                at(10, 30),  # a duplicate of the first row
                at(14),
                at(14) + US,
            ],
            "label": list("abcdefghi"),
        }
    )
    result = client.get_historical_features(["driver_stats:*"], entities).to_arrow()

    # The input columns come back unchanged (their Arrow types depend on the pandas version).
    assert result.schema == pa.Table.from_pandas(entities, preserve_index=False).schema.append(
        pa.field("driver_stats__conv_rate", pa.float64())
    ).append(pa.field("driver_stats__trips", pa.int64()))
    assert result.column("label").to_pylist() == list("abcdefghi")
    assert result.column("driver_stats__conv_rate").to_pylist() == [
        0.2,
        None,
        0.5,
        None,
        0.35,
        None,
        0.2,
        0.35,
        None,
    ]
    assert result.column("driver_stats__trips").to_pylist() == [
        2,
        None,
        5,
        None,
        35,
        None,
        2,
        35,
        None,
    ]


def test_several_tables_composite_keys_mapping_wildcard_and_projects(client: Client) -> None:
    entities = pa.table(
        {
            "customer_id": ["c1", "c1", "c2", "c1", "c2"],
            "driver_id": pa.array([1, 1, 1, 2, 1], pa.int32()),
            "event_timestamp": [at(10, 30), at(11), at(9, day=2) - US, at(12), at(23, day=5)],
        }
    )
    job = client.get_historical_features(
        [
            "customer_driver:rating",
            "driver_stats:*",
            "ops/driver_flags:flagged",
            "driver_stats:trips",
        ],
        entities,
    )
    result = job.to_arrow()
    assert result.column_names == [
        "customer_id",
        "driver_id",
        "event_timestamp",
        "customer_driver__rating",
        "driver_stats__conv_rate",
        "driver_stats__trips",
        "driver_flags__flagged",
    ]
    assert result.schema.field("customer_driver__rating").type == pa.float32()
    assert result.schema.field("driver_id").type == pa.int32()
    assert result.to_pydict() == {
        **entities.to_pydict(),
        "customer_driver__rating": [4.5, 3.0, None, None, 5.0],
        "driver_stats__conv_rate": [0.2, 0.2, None, None, None],
        "driver_stats__trips": [2, 2, None, None, None],
        "driver_flags__flagged": [True, True, None, None, None],
    }


def test_entity_sources_of_every_kind_and_job_outputs(client: Client, tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"driver_id": [2, 1], "event_timestamp": ["2024-01-01T10:00:00", "2024-01-01T10:30:00Z"]}
    )
    expected = [0.5, 0.2]
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "entities.parquet")
    frame.to_csv(tmp_path / "entities.csv", index=False)
    for source in (frame, tmp_path / "entities.parquet", str(tmp_path / "entities.csv")):
        job = client.get_historical_features(["driver_stats:conv_rate"], source)
        assert job.to_pandas()["driver_stats__conv_rate"].tolist() == expected
    job.to_parquet(tmp_path / "out" / "training.parquet")
    written = pq.read_table(tmp_path / "out" / "training.parquet")
    assert written.column("driver_stats__conv_rate").to_pylist() == expected
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["training.parquet"]


def test_empty_entity_source_gives_an_empty_typed_result(client: Client) -> None:
    empty = pd.DataFrame(
        {
            "driver_id": pd.Series([], dtype="int64"),
            "event_timestamp": pd.Series([], dtype="M8[us]"),
        }
    )
    result = client.get_historical_features(["driver_stats:*"], empty).to_arrow()
    assert result.num_rows == 0
    assert result.schema.names == [
        "driver_id",
        "event_timestamp",
        "driver_stats__conv_rate",
        "driver_stats__trips",
    ]
    assert result.schema.field("driver_stats__trips").type == pa.int64()


def test_sources_without_files_and_features_added_later(client: Client) -> None:
    client.apply(
        FeatureTable(
            name="driver_stats",
            entities=["driver_id"],
            features=[*DRIVER_STATS.features, Feature(name="rank", value_type=ValueType.INT32)],
            max_age=timedelta(hours=2),
            batch_source=DRIVER_STATS.batch_source,
        )
    )
    client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [3],
                "event_timestamp": [at(12)],
                "conv_rate": [0.9],
                "trips": [9],
                "rank": [7],
            }
        ),
    )
    client.apply(
        FeatureTable(
            name="empty",
            entities=["driver_id"],
            features=[Feature(name="x", value_type=ValueType.STRING_LIST)],
            batch_source=FileSource(path="data/empty", event_timestamp_column="ts"),
        )
    )
    entities = pd.DataFrame({"driver_id": [1, 3], "event_timestamp": [at(13), at(13)]})
    with pytest.warns(NoDataWarning, match="^feature table 'empty' has no data yet"):
        job = client.get_historical_features(["driver_stats:*", "empty:x"], entities)
    result = job.to_arrow()
    assert result.column("driver_stats__rank").to_pylist() == [None, 7]
    assert result.column("driver_stats__trips").to_pylist() == [35, 9]
    assert result.column("empty__x").type == pa.list_(pa.string())
    assert result.column("empty__x").to_pylist() == [None, None]


@pytest.mark.parametrize(
    ("refs", "entities", "error", "message"),
    [
        (
            ["nope:x"],
            {"driver_id": [1], "event_timestamp": [at(1)]},
            FeatureRefError,
            "unknown feature table 'nope' in project 'default' (in feature reference 'nope:x')",
        ),
        (
            ["driver_stats:nope"],
            {"driver_id": [1], "event_timestamp": [at(1)]},
            FeatureRefError,
            "feature table 'driver_stats' has no feature 'nope' (in feature reference "
            "'driver_stats:nope'); its features: conv_rate, trips",
        ),
        (
            ["driver_stats"],
            {"driver_id": [1], "event_timestamp": [at(1)]},
            FeatureRefError,
            "invalid feature reference 'driver_stats'; expected 'table:feature', "
            "'project/table:feature' or 'table:*'",
        ),
        (
            [],
            {"driver_id": [1], "event_timestamp": [at(1)]},
            FeatureRefError,
            "no feature references given; name at least one",
        ),
        (
            ["driver_stats:trips"],
            {"driver_id": [1], "ts": [at(1)]},
            DataValidationError,
            "the entity rows have no 'event_timestamp' column, which the join needs; their "
            "columns: driver_id, ts",
        ),
        (
            ["customer_driver:rating"],
            {"driver_id": [1], "event_timestamp": [at(1)]},
            DataValidationError,
            "the entity rows have no 'customer_id' column, which the join needs; their "
            "columns: driver_id, event_timestamp",
        ),
        (
            ["driver_stats:trips"],
            {"driver_id": ["1"], "event_timestamp": [at(1)]},
            DataValidationError,
            f"column 'driver_id' row 0: {TEXT_REFUSED} cannot be stored as "
            "entity driver_id (INT64)",
        ),
        (
            ["driver_stats:trips"],
            {"driver_id": [1, None], "event_timestamp": [at(1), at(2)]},
            DataValidationError,
            "column 'driver_id' row 1: is null; every entity row needs entity driver_id (INT64)",
        ),
        (
            ["driver_stats:trips"],
            {"driver_id": [1, 2], "event_timestamp": [at(1), None]},
            DataValidationError,
            "column 'event_timestamp' row 1: is null; every entity row needs a timestamp",
        ),
        (
            ["driver_stats:trips"],
            {"driver_id": [1], "event_timestamp": [at(1)], "driver_stats__trips": [0]},
            DataValidationError,
            "the entity rows already have a column 'driver_stats__trips', which the feature "
            "columns need; rename or drop it",
        ),
    ],
)
def test_bad_requests_fail_with_exact_errors(
    client: Client,
    refs: list[str],
    entities: dict[str, list[object]],
    error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error) as caught:
        client.get_historical_features(refs, pd.DataFrame(entities))
    assert caught.value.message == message  # type: ignore[attr-defined]


def test_same_output_column_from_two_projects_is_refused(client: Client) -> None:
    client.set_project("ops")
    client.apply(DRIVER_STATS)
    client.set_project("default")
    with pytest.raises(FeatureRefError) as caught:
        client.get_historical_features(
            ["driver_stats:trips", "ops/driver_stats:trips"],
            pd.DataFrame({"driver_id": [1], "event_timestamp": [at(1)]}),
        )
    assert caught.value.message == (
        "feature references 'default/driver_stats:trips' and 'ops/driver_stats:trips' both give "
        "output column 'driver_stats__trips'; request only one of them"
    )


def test_ties_across_overlapping_ingestions_use_the_created_time(client: Client) -> None:
    entities = pd.DataFrame({"driver_id": [1, 1], "event_timestamp": [at(10, 30), at(9)]})
    before = client.get_historical_features(["driver_stats:trips"], entities).to_arrow()
    assert before.column("driver_stats__trips").to_pylist() == [2, None]
    client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [1, 1],
                "event_timestamp": [at(10), at(8)],
                "created": [at(10, 7), at(8)],
                "conv_rate": [0.9, 0.8],
                "trips": [9, 8],
            }
        ),
    )
    after = client.get_historical_features(["driver_stats:trips"], entities).to_arrow()
    assert after.column("driver_stats__trips").to_pylist() == [9, 8]


def test_ties_are_ruled_out_only_when_provable(tmp_path: Path) -> None:
    table = FeatureTable(
        name="t",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        batch_source=FileSource(path=str(tmp_path / "t"), event_timestamp_column="ts"),
    )
    from potluck.ingestion.ingest import ingest
    from potluck.offline.files import list_source_files, may_tie, without_superseded

    def rows(*moments: datetime) -> pd.DataFrame:
        ones = [1] * len(moments)
        return pd.DataFrame({"driver_id": ones, "ts": moments, "v": ones})

    def winners() -> tuple[tuple[str, ...], bool]:
        files = without_superseded(list_source_files(str(tmp_path / "t")))
        return files.paths, may_tie(files, "ts", None)

    first = ingest(table, {"driver_id": DRIVER}, rows(at(1), at(1), at(2)))
    assert len(first.files) == 2
    assert winners() == ((first.files[0],), False)
    second = ingest(table, {"driver_id": DRIVER}, rows(at(3)))
    assert winners() == ((first.files[0], second.files[0]), False)
    third = ingest(table, {"driver_id": DRIVER}, rows(at(2), at(4)))
    assert winners() == ((first.files[0], second.files[0], third.files[0]), True)
    pq.write_table(pa.table({"driver_id": [2], "ts": [at(9)], "v": [2]}), tmp_path / "own.parquet")
    foreign = list_source_files(str(tmp_path / "own.parquet"))
    assert may_tie(foreign, "ts", None)


@pytest.mark.parametrize("native", [True, False], ids=["duckdb-reader", "pyarrow-dataset"])
def test_large_entity_sets_match_the_reference(tmp_path: Path, native: bool) -> None:
    # More than 64 entity rows, so DuckDB uses its ASOF operator (not its nested-loop plan).
    rng = random.Random(7)
    table = FeatureTable(
        name="t",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        max_age=timedelta(minutes=30),
        batch_source=FileSource(
            path=str(tmp_path / "t"),
            event_timestamp_column="event_timestamp",
            created_timestamp_column="created_timestamp",
        ),
    )
    rows = [
        {
            "driver_id": rng.randrange(20),
            "event_timestamp": at(0) + timedelta(minutes=rng.randrange(600)),
            "created_timestamp": at(0) + timedelta(seconds=n),
            "v": n,
        }
        for n in range(3000)
    ]
    entity_rows = [
        {
            "driver_id": rng.randrange(22),
            "event_timestamp": at(0) + timedelta(minutes=rng.randrange(-10, 640)),
        }
        for _ in range(500)
    ]
    from potluck.ingestion.ingest import ingest

    ingest(table, {"driver_id": DRIVER}, pa.Table.from_pylist(rows[:2000]))
    ingest(table, {"driver_id": DRIVER}, pa.Table.from_pylist(rows[2000:]))
    store = DuckDBOfflineStore(DuckDBConfig(native_local_reads=native))
    requests = resolve_refs(["t:v"], "p", lambda p, n: table, lambda p, n: DRIVER)
    result = store.get_historical_features(pa.Table.from_pylist(entity_rows), requests)
    expected = point_in_time_join(
        entity_rows,
        [ReferenceTable("t", ["driver_id"], ["v"], rows, timedelta(minutes=30))],
    )
    assert result.to_arrow().to_pylist() == expected
    store.close()


# ---- read_range ---------------------------------------------------------------------------------


def _rows(batches: Iterator[pa.RecordBatch]) -> list[dict[str, object]]:
    return sorted(
        pa.Table.from_batches(list(batches)).to_pylist(),
        key=lambda r: (str(r.get("customer_id")), r["driver_id"], r["event_timestamp"]),
    )


@pytest.mark.parametrize("native", [True, False], ids=["duckdb-reader", "pyarrow-dataset"])
def test_read_range_renames_types_and_bounds_rows(
    client: Client, tmp_path: Path, native: bool
) -> None:
    store = DuckDBOfflineStore(DuckDBConfig(native_local_reads=native), root=tmp_path)
    table = client.get_feature_table("customer_driver")
    batches = list(store.read_range(table, at(8), at(9, day=2)))
    assert batches[0].schema == pa.schema(
        [
            ("customer_id", pa.string()),
            ("driver_id", pa.int64()),
            ("rating", pa.float32()),
            ("event_timestamp", pa.timestamp("us", tz="UTC")),
            ("created_timestamp", pa.timestamp("us", tz="UTC")),
            ("ingestion_id", pa.string()),
        ]
    )
    rows = _rows(iter(batches))
    assert [(r["customer_id"], r["rating"], r["event_timestamp"]) for r in rows] == [
        ("c1", 4.5, at(8)),
        ("c1", 3.0, at(11)),
    ]
    # No created-timestamp column: the time of the ingestion that wrote a row stands for it.
    assert [r["created_timestamp"] for r in rows] == [
        datetime.strptime(r["ingestion_id"][:22], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=timezone.utc)
        for r in rows
    ]
    naive = list(store.read_range(table, datetime(2024, 1, 2, 9), None))
    assert [r["customer_id"] for r in _rows(iter(naive))] == ["c2"]
    with pytest.raises(ValidationError, match=r"^start \(.*\) must be before end"):
        store.read_range(table, at(9), at(9))
    store.close()


def test_read_range_since_a_version_and_in_small_batches(client: Client, tmp_path: Path) -> None:
    store = DuckDBOfflineStore(DuckDBConfig(), root=tmp_path)
    table = client.get_feature_table("driver_stats")
    before = store.source_version(table).version
    report = client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [7, 8, 9],
                "event_timestamp": [at(1)] * 3,
                "conv_rate": [1.0] * 3,
                "trips": [1, 2, 3],
            }
        ),
    )
    assert report.version == store.source_version(table).version == (before or 0) + 1
    batches = list(store.read_range(table, None, None, since_version=before, batch_size=2))
    assert [b.num_rows for b in batches] in ([2, 1], [1, 2], [1, 1, 1])
    rows = _rows(iter(batches))
    assert [(r["driver_id"], r["ingestion_id"]) for r in rows] == [
        (7, report.ingestion_id),
        (8, report.ingestion_id),
        (9, report.ingestion_id),
    ]
    assert rows[0]["created_timestamp"] == report.ingestion_time
    assert list(store.read_range(table, None, None, since_version=report.version)) == []
    # The version before the ingestion still reads as it was (time travel).
    old = _rows(store.read_range(table, None, None, version=before))
    assert report.ingestion_id not in {r["ingestion_id"] for r in old}
    store.close()


def test_read_range_of_an_empty_source_and_a_file_url(tmp_path: Path) -> None:
    store = DuckDBOfflineStore(DuckDBConfig())
    table = FeatureTable(
        name="t",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        batch_source=FileSource(path=f"file://{tmp_path}/t", event_timestamp_column="ts"),
    )
    with pytest.raises(ValidationError) as missing:
        list(store.read_range(table, None, None))
    assert missing.value.message == (
        f"the batch source of feature table 't' does not exist: nothing at 'file://{tmp_path}/t'; "
        "ingest rows into it (potluck ingest t FILE) or fix its batch_source.path"
    )
    (tmp_path / "t").mkdir()
    assert list(store.read_range(table, None, None)) == []
    from potluck.ingestion.ingest import ingest

    ingest(table, {"driver_id": DRIVER}, pd.DataFrame({"driver_id": [1], "ts": [at(1)], "v": [5]}))
    (row,) = _rows(store.read_range(table, None, None))
    assert (row["driver_id"], row["v"], row["event_timestamp"]) == (1, 5, at(1))
    store.close()


def test_read_range_refuses_a_source_without_its_key_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"ts": [at(1)], "v": [1]}), tmp_path / "x.parquet")
    table = FeatureTable(
        name="t",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        batch_source=FileSource(path=str(tmp_path / "x.parquet"), event_timestamp_column="ts"),
    )
    store = DuckDBOfflineStore(DuckDBConfig())
    with pytest.raises(DataValidationError) as caught:
        list(store.read_range(table, None, None))
    assert caught.value.message == (
        "the batch source of feature table 't' has no column 'driver_id'; its columns: ts, v"
    )
    store.close()


@pytest.mark.parametrize("native", [True, False])
def test_files_of_other_tools_with_different_timestamp_types_read_together(
    tmp_path: Path, native: bool
) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    naive = pd.DataFrame({"driver_id": [1], "ts": [pd.Timestamp("2024-05-01 10:00")], "v": [1]})
    naive.to_parquet(folder / "naive.parquet")  # pandas: nanoseconds, no zone
    zoned = pa.table(
        {
            "driver_id": pa.array([2], pa.int64()),
            "ts": pa.array([at(11)], pa.timestamp("ms", tz="Asia/Tokyo")),
            "v": pa.array([2], pa.int32()),
        }
    )
    pq.write_table(zoned, folder / "zoned.parquet")
    table = FeatureTable(
        name="t",
        entities=["driver_id"],
        features=[Feature(name="v", value_type=ValueType.INT64)],
        batch_source=FileSource(path=str(folder), event_timestamp_column="ts"),
    )
    store = DuckDBOfflineStore(DuckDBConfig(native_local_reads=native))
    rows = sorted(
        (r["driver_id"], r["v"], r["event_timestamp"])
        for r in _rows(store.read_range(table, None, None))
    )
    assert rows == [(1, 1, datetime(2024, 5, 1, 10, tzinfo=timezone.utc)), (2, 2, at(11))]
    store.close()


@pytest.mark.parametrize("partition", ["driver_id", "trips", "ingestion_id", "event_timestamp"])
def test_a_partition_folder_named_like_a_column_never_changes_that_column(
    tmp_path: Path, partition: str
) -> None:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        table = FeatureTable(
            name="t",
            entities=["driver_id"],
            features=[Feature(name="trips", value_type=ValueType.INT64)],
            batch_source=FileSource(
                path="data/t",
                event_timestamp_column="event_timestamp",
                date_partition_column=partition,
            ),
        )
        client.apply([DRIVER, table])
        client.ingest(
            "t", pd.DataFrame({"driver_id": [7], "event_timestamp": [at(1)], "trips": [3]})
        )
        entities = pd.DataFrame({"driver_id": [7], "event_timestamp": [at(2)]})
        result = client.get_historical_features(["t:trips"], entities).to_pandas()
        assert result["t__trips"].tolist() == [3]
        job = client.start_offline_to_online_ingestion("t").wait(60)
        assert job.stats.rows_written == 1


def test_ties_without_a_created_column_go_to_the_later_ingestion_offline_and_online(
    tmp_path: Path,
) -> None:
    settings = Settings(registry=f"sqlite:///{tmp_path}/registry.db", root=tmp_path)
    with Client(settings=settings) as client:
        table = FeatureTable(
            name="t",
            entities=["driver_id"],
            features=[Feature(name="trips", value_type=ValueType.INT64)],
            batch_source=FileSource(path="data/t", event_timestamp_column="event_timestamp"),
        )
        client.apply([DRIVER, table])
        for value in (10, 20, 30, 40, 50, 60):  # one key, one event time, six ingestions
            client.ingest(
                "t",
                pd.DataFrame(
                    {"driver_id": [7, 8], "event_timestamp": [at(1)] * 2, "trips": [value] * 2}
                ),
            )
            if value == 30:
                client.start_offline_to_online_ingestion("t").wait(60)
        entities = pd.DataFrame({"driver_id": [7, 8], "event_timestamp": [at(2)] * 2})
        for _ in range(8):
            result = client.get_historical_features(["t:trips"], entities).to_pandas()
            assert result["t__trips"].tolist() == [60, 60]
        client.start_offline_to_online_ingestion("t").wait(60)
        online = client.get_online_features(["t:trips"], [{"driver_id": 7}, {"driver_id": 8}])
        assert online.to_dict()["t__trips"] == [60, 60]
