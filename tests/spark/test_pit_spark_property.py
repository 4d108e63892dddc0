"""The point-in-time corpus of ``tests/property/test_pit_join.py`` on Spark: equal to DuckDB and to
the brute-force reference, row for row.

Hypothesis draws the examples with the corpus's own strategies (coarse event-time grids so ties
are common, also across ingestions; entity rows at ``max_age`` and one microsecond past it;
unknown keys; duplicate entity rows; composite keys through ``field_mapping``; a partitioned
source; null created times; three tables with different entities and ``max_age``). Rather than one
Spark job per example, every example is put in its own namespace of one batch: its keys are
prefixed with its number, and its tables are the variants of ``a``, ``b`` and ``c`` with its
``max_age`` values. One training set over all of them is built once on Spark and once with
DuckDB; then each example's rows are checked against the reference join of its own rows.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pyarrow as pa
import pytest
from _spark_support import SPARK_TEST_CONF
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from potluck import FeatureTable
from potluck.ingestion.ingest import ingest, provision_source
from potluck.notices import NoDataWarning
from potluck.offline.duckdb import DuckDBConfig, DuckDBOfflineStore
from potluck.offline.pit import FeatureRequest, resolve_refs
from potluck.offline.spark.store import SparkOfflineConfig, SparkOfflineStore
from potluck.testing.reference import point_in_time_join

pytestmark = pytest.mark.spark


def _corpus() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "property" / "test_pit_join.py"
    spec = importlib.util.spec_from_file_location("pit_corpus", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CORPUS = _corpus()
SECOND = CORPUS.SECOND
AGES = {
    "a": [None, 3 * SECOND, 10 * SECOND],
    "b": [None, timedelta(hours=12), timedelta(hours=30)],
    "c": [None, SECOND, 5 * SECOND],
}
"""The max_age values the corpus draws per table, in order: variant ``a1`` has ``AGES["a"][1]``."""
EXAMPLES = 80
SCHEMAS = {
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


@dataclass
class Example:
    """One drawn example, its keys already in its own namespace."""

    number: int
    rows: dict[str, list[dict[str, Any]]]
    chunks: dict[str, list[list[dict[str, Any]]]]
    max_ages: tuple[timedelta | None, ...]
    refs: list[str]
    entity_rows: list[dict[str, Any]]

    def variant(self, kind: str) -> str:
        """The name of the table variant this example's ``kind`` rows go to."""
        return f"{kind}{AGES[kind].index(self.max_ages['abc'.index(kind)])}"


def _draw_examples(count: int, at_seed: int) -> list[Example]:
    """Draw ``count`` examples with the corpus's strategies (no Spark, no files)."""
    examples: list[Example] = []

    @seed(at_seed)
    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(
        a_rows=CORPUS._created_rows("a", null_created=False),
        b_rows=CORPUS._composite_rows(),
        c_rows=CORPUS._created_rows("c", null_created=True),
        max_ages=st.tuples(*(st.sampled_from(AGES[kind]) for kind in "abc")),
        refs=st.lists(st.sampled_from(CORPUS.REFS), min_size=1, max_size=4),
        data=st.data(),
    )
    def draw(
        a_rows: list[dict[str, Any]],
        b_rows: list[dict[str, Any]],
        c_rows: list[dict[str, Any]],
        max_ages: tuple[timedelta | None, ...],
        refs: list[str],
        data: st.DataObject,
    ) -> None:
        rows = {"a": a_rows, "b": b_rows, "c": c_rows}
        # The anchors of the corpus's test: feature rows entity rows are placed around.
        anchors = [
            (row["driver_id"], row.get("cust", "x"), row.get("ts", row.get("event_timestamp")), age)
            for kind, age in zip("abc", max_ages, strict=True)
            for row in rows[kind]
            if age is not None
        ] + [
            (
                row["driver_id"],
                row.get("cust", "x"),
                row.get("ts", row.get("event_timestamp")),
                SECOND,
            )
            for kind in "abc"
            for row in rows[kind]
        ]
        entity_rows = CORPUS._entity_rows(data.draw, anchors)
        chunks = {kind: CORPUS._chunks(data.draw, rows[kind]) for kind in "abc"}
        number = len(examples)
        for row in (*a_rows, *b_rows, *c_rows, *entity_rows):
            _namespace(row, number)
        examples.append(Example(number, rows, chunks, max_ages, refs, entity_rows))

    draw()
    return examples


def _namespace(row: dict[str, Any], number: int) -> None:
    """Move a row's keys into example ``number``'s namespace (drivers 0-4, customers x-z)."""
    row["driver_id"] += 1000 * number
    for key in ("cust", "customer_id"):
        if key in row:
            row[key] = f"{row[key]}{number}"


def _requests(example: Example) -> tuple[FeatureRequest, ...]:
    """What the example's references ask for, from the corpus's own tables ``a``, ``b``, ``c``."""
    definitions = CORPUS._tables("unused", example.max_ages)
    return resolve_refs(
        example.refs,
        "p",
        lambda _, name: definitions[name],
        lambda _, name: CORPUS.ENTITIES[name],
    )


@pytest.fixture(scope="module")
def spark_store(
    spark_master: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkOfflineStore]:
    config = SparkOfflineConfig(
        master=spark_master,
        conf=SPARK_TEST_CONF,
        python=os.environ.get("POTLUCK_TEST_SPARK_PYTHON"),
        staging_location=str(tmp_path_factory.mktemp("staging")),
    )
    store = SparkOfflineStore(config)
    yield store
    store.close()


def test_spark_equals_duckdb_and_the_reference_on_the_corpus(
    spark_store: SparkOfflineStore, tmp_path: Path
) -> None:
    at_seed = random.getrandbits(32)
    examples = _draw_examples(EXAMPLES, at_seed)
    tables: dict[str, FeatureTable] = {}
    for index in range(3):
        ages = tuple(AGES[kind][index] for kind in "abc")
        for kind, table in CORPUS._tables(str(tmp_path / f"v{index}"), ages).items():
            tables[f"{kind}{index}"] = dataclasses.replace(table, name=f"{kind}{index}")
    for table in tables.values():
        provision_source(table, CORPUS.ENTITIES)
    for example in examples:
        for kind in "abc":
            table = tables[example.variant(kind)]
            for chunk in example.chunks[kind]:
                report = ingest(
                    table, CORPUS.ENTITIES, pa.Table.from_pylist(chunk, schema=SCHEMAS[kind])
                )
                for row in chunk:
                    row["ingested_at"] = report.ingestion_time

    entity_rows = [
        {"example": example.number, **row} for example in examples for row in example.entity_rows
    ]
    requests = resolve_refs(
        [f"{name}:*" for name in tables],
        "p",
        lambda _, name: tables[name],
        lambda _, name: CORPUS.ENTITIES[name],
    )
    duckdb = DuckDBOfflineStore(DuckDBConfig())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDataWarning)  # a variant may get no rows
        expected = duckdb.get_historical_features(
            pa.Table.from_pylist(entity_rows), requests
        ).to_arrow()
        actual = spark_store.get_historical_features(
            pa.Table.from_pylist(entity_rows), requests
        ).to_arrow()
    duckdb.close()
    assert actual.equals(expected), f"Spark and DuckDB differ (seed {at_seed})"

    result = actual.to_pylist()
    start = 0
    for example in examples:
        rows = result[start : start + len(example.entity_rows)]
        start += len(example.entity_rows)
        wanted = _requests(example)
        reference = point_in_time_join(
            example.entity_rows,
            [CORPUS._reference(r.table, r.features, example.rows) for r in wanted],
        )
        got = [
            {
                **{k: row[k] for k in example.entity_rows[0]},
                **{
                    f"{r.table.name}__{f}": row[f"{example.variant(r.table.name)}__{f}"]
                    for r in wanted
                    for f in r.features
                },
            }
            for row in rows
        ]
        assert got == reference, f"example {example.number} (seed {at_seed}): {example}"
