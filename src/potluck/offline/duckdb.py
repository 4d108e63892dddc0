"""The DuckDB offline store: point-in-time plans and range reads rendered to SQL over Parquet.

Local files are read by DuckDB's own Parquet reader (``read_parquet`` over the listed files,
columns matched by name across files); files on any other pyarrow filesystem are scanned as a
pyarrow dataset. Results come back as Arrow.

The point-in-time join is one ``ASOF LEFT JOIN`` per feature table. ASOF picks the greatest
event time ``<= ts`` but leaves ties among equal event times to chance. The join never reads the
rows each ingestion marked superseded (they cannot win), and when the remaining files cannot tie
(ingestions that do not overlap in event time, see :func:`potluck.offline.files.may_tie`) it
orders on event time alone. Otherwise it orders on one 128-bit key, ``event_us * 2**64 + created
rank``, where the created time is the source's created-timestamp column or, for a source without
one, the time of the ingestion that wrote the row (a null created time ranks lowest), which
makes the winner exact at some cost in speed. The
``max_age`` lower bound is applied to the match afterwards: if the newest row at or before
``ts`` is too old, so is every other candidate.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from pydantic import Field

from potluck.config import MemoryLimit, PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import FileSource
from potluck.errors import (
    ConfigError,
    DataValidationError,
    TerminalError,
    UnavailableError,
    ValidationError,
)
from potluck.offline.base import (
    CREATED_TIMESTAMP_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
    INGESTION_ID_COLUMN,
    OfflineStore,
    SourceVersion,
)
from potluck.offline.commits import SourceState
from potluck.offline.convert import convert
from potluck.offline.file_columns import DeclaredFileColumn, check_files
from potluck.offline.files import (
    SourceFiles,
    filesystem_for,
    ingestion_time,
    may_tie,
    select_days,
    without_superseded,
)
from potluck.offline.inputs import InputData
from potluck.offline.pit import (
    ENTITY_TIMESTAMP_COLUMN,
    FeatureRequest,
    PitPlan,
    PreparedRetrieval,
    TableJoin,
    prepare,
)
from potluck.offline.retrieval import RetrievalJob
from potluck.offline.snapshots import (
    current_version,
    pin_sources,
    range_files,
)
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

try:
    import duckdb
except ImportError as exc:  # pragma: no cover - duckdb is a core dependency
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the duckdb offline store needs duckdb; run: pip install duckdb", plugin="duckdb"
    ) from exc

# Internal names contain ":", which no entity or feature name can, so they never collide.
_ROW_NAME = "potluck:row"
_TS_NAME = "potluck:ts"
_ENTITIES_NAME = "potluck:entities"
_ROW = f'"{_ROW_NAME}"'
_TS = f'"{_TS_NAME}"'
_ENTITIES = f'"{_ENTITIES_NAME}"'
_ORDER = '"potluck:order"'
_EVENT = '"potluck:event"'
_TOP_RANK = (1 << 64) - 1
"""The created-rank part of an entity row's order key: above every feature row's."""
_CREATED_SHIFT = 1 << 63
"""Added to a created time's microseconds so every rank is positive; a null created time is 0."""
_INGESTION_TIME_FORMAT = "%Y%m%dT%H%M%S%fZ"
"""How an ingestion id begins: its UTC time (see ``potluck.ingestion.ingest.new_ingestion_id``)."""
_NO_LOWER_BOUND_US = 10**18
"""A max_age at least this long (31,700 years) cannot exclude any row: skip the bound."""

_DUCKDB_TYPES: dict[ValueType, str] = {
    ValueType.BYTES: "BLOB",
    ValueType.STRING: "VARCHAR",
    ValueType.INT32: "INTEGER",
    ValueType.INT64: "BIGINT",
    ValueType.DOUBLE: "DOUBLE",
    ValueType.FLOAT: "FLOAT",
    ValueType.BOOL: "BOOLEAN",
    ValueType.UNIX_TIMESTAMP: "TIMESTAMPTZ",
}


class DuckDBConfig(PluginConfig):
    """Settings of the DuckDB offline store (``offline_store: {type: duckdb}``)."""

    type: Literal["duckdb"] = "duckdb"
    """The plug-in's name."""
    threads: int | None = Field(default=None, ge=1)
    """Worker threads per query; ``None`` uses one per core."""
    memory_limit: MemoryLimit | None = None
    """DuckDB's memory limit, such as ``"4GB"``; ``None`` keeps DuckDB's default (80% of RAM)."""
    native_local_reads: bool = True
    """Read local files with DuckDB's own Parquet reader (fastest); ``False`` scans them as
    pyarrow datasets, the way files on other filesystems (``s3://``, ``gs://``, ``hdfs://``) are
    always read."""


class DuckDBOfflineStore(OfflineStore):
    """Reads batch sources with an in-process DuckDB database.

    Args:
        config: The store's settings.
        root: The folder relative source paths are resolved against.
    """

    config_class = DuckDBConfig

    config: DuckDBConfig

    def __init__(self, config: DuckDBConfig, *, root: Path | None = None) -> None:
        super().__init__(config, root=root)
        self._db = duckdb.connect(":memory:")
        settings = {
            "TimeZone": "'UTC'",
            "parquet_metadata_cache": "true",
            "preserve_insertion_order": "false",
        }
        if config.threads is not None:
            settings["threads"] = str(int(config.threads))
        if config.memory_limit is not None:
            settings["memory_limit"] = _literal(config.memory_limit)
        for name, value in settings.items():
            try:
                self._db.execute(f"SET GLOBAL {name} = {value}")
            except duckdb.Error as exc:
                self._db.close()
                raise _setting_error(name, value, exc) from None

    # ---- range reads ---------------------------------------------------------------------------

    def read_range(
        self,
        table: FeatureTable,
        start: datetime | None,
        end: datetime | None,
        *,
        version: int | None = None,
        since_version: int | None = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Stream rows of ``table``'s batch source in ``[start, end)``; see the base class."""
        read = range_files(
            table, self.root, start, end, version=version, since_version=since_version
        )
        return self._read_range(table, read.source, read.files, read.start, read.end, batch_size)

    def source_version(self, table: FeatureTable) -> SourceVersion:
        """Return ``table``'s batch source and its latest version; see the base class."""
        return current_version(table, self.root)

    def _read_range(
        self,
        table: FeatureTable,
        source: FileSource,
        files: SourceFiles,
        start: datetime | None,
        end: datetime | None,
        batch_size: int,
    ) -> Iterator[pa.RecordBatch]:
        if not files.paths:
            return
        names = {name: column for column, name in source.field_mapping.items()}
        cursor = self._cursor()
        try:
            relation, available = self._scan(cursor, files, "potluck:source")
            _check_differing(available, files, _range_columns(table, source))
            event = _require(
                available, source.event_timestamp_column, table.name, ValueType.UNIX_TIMESTAMP
            )
            selects = [
                f"{_require(available, names.get(e, e), table.name)} AS {_quote(e)}"
                for e in table.entities
            ]
            selects += [
                f"{_column_or_null(available, names.get(f.name, f.name), f.value_type)} "
                f"AS {_quote(f.name)}"
                for f in table.features
            ]
            # Without a created column, the ingestion time stands for it: parsed below, once
            # per distinct ingestion id of a batch rather than once per row in SQL.
            created = _column_or_null(
                available, source.created_timestamp_column, ValueType.UNIX_TIMESTAMP
            )
            ingestion = _column_or_null(available, INGESTION_ID_COLUMN, ValueType.STRING)
            selects += [
                f"{event} AS {EVENT_TIMESTAMP_COLUMN}",
                f"{created} AS {CREATED_TIMESTAMP_COLUMN}",
                f"{ingestion} AS {INGESTION_ID_COLUMN}",
            ]
            where: list[str] = []
            params: list[Any] = []
            if start is not None:
                where.append(f"{event} >= ?::TIMESTAMPTZ")
                params.append(start)
            if end is not None:
                where.append(f"{event} < ?::TIMESTAMPTZ")
                params.append(end)
            sql = f"SELECT {', '.join(selects)} FROM {relation}"
            if where:
                sql += f" WHERE {' AND '.join(where)}"
            types = {f.name: f.value_type for f in table.features}
            types[EVENT_TIMESTAMP_COLUMN] = types[CREATED_TIMESTAMP_COLUMN] = (
                ValueType.UNIX_TIMESTAMP
            )
            types[INGESTION_ID_COLUMN] = ValueType.STRING
            with _wrap_errors(f"reading feature table {table.name!r}"):
                reader = cursor.sql(sql, params=params).to_arrow_reader(batch_size)
                for batch in reader:
                    typed = _typed(batch, types)
                    if source.created_timestamp_column is None:
                        typed = _with_ingestion_times(typed)
                    yield typed
        finally:
            cursor.close()

    # ---- historical retrieval ------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_source: InputData,
        requests: Sequence[FeatureRequest],
        *,
        versions: Mapping[str, int] | None = None,
    ) -> RetrievalJob:
        """Return the point-in-time join of ``entity_source`` with ``requests``.

        See the base class and :mod:`potluck.offline.pit` for the exact semantics.
        """
        prepared = prepare(entity_source, requests, root=self.root)
        states = pin_sources(prepared.plan, versions or {})
        return RetrievalJob(
            lambda: self._retrieve(prepared, states),
            source_versions={name: state.version for name, state in states.items()},
        )

    def _retrieve(self, prepared: PreparedRetrieval, states: Mapping[str, SourceState]) -> pa.Table:
        plan, entities = prepared.plan, prepared.entities
        outputs = plan.output_columns
        if entities.num_rows == 0:
            columns = [pa.nulls(0, to_arrow_type(c.value_type)) for c in outputs]
        else:
            cursor = self._cursor()
            try:
                joined = self._join(cursor, prepared, states)
            finally:
                cursor.close()
            if joined.num_rows != entities.num_rows:
                raise AssertionError(
                    f"the join returned {joined.num_rows} rows for {entities.num_rows} entity rows"
                )
            columns = [
                convert(
                    joined.column(c.output),
                    to_arrow_type(c.value_type),
                    column=c.output,
                    expected=f"feature {c.feature} ({c.value_type.name})",
                )
                for c in outputs
            ]
        return pa.Table.from_arrays(
            [*entities.columns, *columns],
            names=[*entities.column_names, *(c.output for c in outputs)],
        )

    def _join(
        self,
        cursor: duckdb.DuckDBPyConnection,
        prepared: PreparedRetrieval,
        states: Mapping[str, SourceState],
    ) -> pa.Table:
        plan = prepared.plan
        rows = prepared.join_rows
        numbered = rows.rename_columns(
            [_TS_NAME if n == ENTITY_TIMESTAMP_COLUMN else n for n in rows.column_names]
        ).append_column(_ROW_NAME, pa.array(np.arange(rows.num_rows, dtype=np.int64)))
        cursor.register(_ENTITIES_NAME, numbered)
        sources: list[ScannedSource] = []
        for number, join in enumerate(plan.joins):
            first_day, last_day = join.event_range(plan.earliest, plan.latest)
            files = select_days(
                states[join.table].files,
                filesystem_for(join.path)[1],
                join.date_partition_column,
                first_day.date() if first_day else None,
                last_day.date() if last_day else None,
            )
            files = without_superseded(files)
            relation, columns = self._scan(cursor, files, f"potluck:source{number}", join=join)
            _check_differing(columns, files, _join_columns(join))
            ranks_ties = join.created_timestamp_column is not None or INGESTION_ID_COLUMN in columns
            tie_break = ranks_ties and may_tie(
                files, join.event_timestamp_column, join.date_partition_column
            )
            sources.append(ScannedSource(relation, columns, tie_break))
        sql = render_pit_sql(plan, sources)
        with _wrap_errors("joining the entity rows with " + ", ".join(j.table for j in plan.joins)):
            result: pa.Table = cursor.sql(sql).to_arrow_table()
        return result

    def _scan(
        self,
        cursor: duckdb.DuckDBPyConnection,
        files: SourceFiles,
        name: str,
        *,
        join: TableJoin | None = None,
    ) -> tuple[str, dict[str, str]]:
        """Return a SQL relation over ``files`` and the DuckDB type of each of its columns.

        The types are empty when there are no files (the relation is then an empty one with
        the columns the join reads).
        """
        if not files.paths:
            return _empty_relation(join), {}
        if files.is_local and self.config.native_local_reads:
            listed = ", ".join(_literal(p) for p in files.paths)
            # Columns come from the files only: a `name=value` folder (a date partition) must not
            # add or override a column, whatever it is called.
            relation = f"read_parquet([{listed}], union_by_name = true, hive_partitioning = false)"
        else:
            # One pyarrow dataset per distinct file schema (other tools' files may differ, e.g.
            # naive and zoned timestamps, which no single Arrow schema holds), by column name.
            groups: dict[pa.Schema, list[str]] = {}
            for path in files.paths:
                schema = pq.read_schema(path, filesystem=files.filesystem)
                groups.setdefault(schema, []).append(path)
            parts: list[str] = []
            for number, (schema, paths) in enumerate(groups.items()):
                part = f"{name}:{number}"
                dataset = pads.dataset(paths, schema=schema, filesystem=files.filesystem)
                cursor.register(part, dataset)
                parts.append(f"SELECT * FROM {_quote(part)}")
            relation = (
                _quote(f"{name}:0") if len(parts) == 1 else f"({' UNION ALL BY NAME '.join(parts)})"
            )
        with _wrap_errors(f"reading {files.paths[0]}"):
            described = cursor.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()
        return relation, {str(row[0]): str(row[1]) for row in described}

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        return self._db.cursor()

    def close(self) -> None:
        """Close the DuckDB database."""
        self._db.close()


@dataclass(frozen=True)
class ScannedSource:
    """How the query reads one join's source.

    Attributes:
        relation: The SQL relation that reads its files.
        columns: The DuckDB type of each of its columns, by name (empty when it reads no files).
        tie_break: Whether rows may tie on keys and event time, so the join must order on the
            created time too (see :func:`potluck.offline.files.may_tie`).
    """

    relation: str
    columns: Mapping[str, str]
    tie_break: bool


def render_pit_sql(plan: PitPlan, sources: Sequence[ScannedSource]) -> str:
    """Render ``plan`` as one DuckDB query.

    Args:
        plan: The join.
        sources: Per join, how its source is read.

    Returns:
        A query over the registered entity rows (``"potluck:entities"``: the join columns,
        ``"potluck:ts"`` and ``"potluck:row"``) that returns ``"potluck:row"`` and one column per
        output feature, ordered by ``"potluck:row"``.
    """
    any_tie_break = any(source.tie_break for source in sources)
    entity_order = f", {_order_key(_TS, None, top=True)} AS {_ORDER}" if any_tie_break else ""
    sql = [f"FROM (SELECT *{entity_order} FROM {_ENTITIES}) AS e"]
    selects = [f"e.{_ROW}"]
    for number, (join, source) in enumerate(zip(plan.joins, sources, strict=True)):
        alias = f"t{number}"
        sql.append(
            f"ASOF LEFT JOIN ({_source_sql(join, source, plan)}) AS {alias} ON "
            + " AND ".join(
                [f"e.{_quote(k.entity)} = {alias}.k{i}" for i, k in enumerate(join.keys)]
                + [
                    f"e.{_ORDER} >= {alias}.{_ORDER}"
                    if source.tie_break
                    else f"e.{_TS} >= {alias}.{_EVENT}"
                ]
            )
        )
        lower = _max_age_us(join)
        for i, feature in enumerate(join.features):
            value = f"{alias}.f{i}"
            if lower is not None:
                value = (
                    f"CASE WHEN epoch_us({alias}.{_EVENT}) >= epoch_us(e.{_TS}) - {lower} "
                    f"THEN {value} END"
                )
            selects.append(f"{value} AS {_quote(feature.output)}")
    return f"SELECT {', '.join(selects)} {' '.join(sql)} ORDER BY e.{_ROW}"


def _source_sql(join: TableJoin, source: ScannedSource, plan: PitPlan) -> str:
    relation, available = source.relation, source.columns
    event = _require(available, join.event_timestamp_column, join.table, ValueType.UNIX_TIMESTAMP)
    columns = [
        f"{_require(available, k.source, join.table, k.value_type)} AS k{i}"
        for i, k in enumerate(join.keys)
    ]
    columns.append(f"{event} AS {_EVENT}")
    if source.tie_break:
        created = _created(available, join.created_timestamp_column)
        columns.append(f"{_order_key(event, created, top=False)} AS {_ORDER}")
    columns += [
        f"{_column_or_null(available, f.source, f.value_type)} AS f{i}"
        for i, f in enumerate(join.features)
    ]
    first, last = join.event_range(plan.earliest, plan.latest)
    where = [f"{event} <= {_timestamp(last)}"] if last else []
    if first:
        where.append(f"{event} >= {_timestamp(first)}")
    return f"SELECT {', '.join(columns)} FROM {relation}" + (
        f" WHERE {' AND '.join(where)}" if where else ""
    )


def _created(available: Mapping[str, str], column: str | None) -> str:
    """Return the SQL of a row's created time, which breaks event-time ties.

    It is the source's created-timestamp column. A source without one uses the time of the
    ingestion that wrote the row (from its ``ingestion_id``), so a later ingestion wins a tie,
    in training sets and online alike; rows other tools wrote have none (null, lowest).
    """
    if column is not None or INGESTION_ID_COLUMN not in available:
        return _column_or_null(available, column, ValueType.UNIX_TIMESTAMP)
    ingestion = _read_as(available, INGESTION_ID_COLUMN, ValueType.STRING)
    return f"try_strptime(left({ingestion}, 22), '{_INGESTION_TIME_FORMAT}')::TIMESTAMPTZ"


def _with_ingestion_times(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Fill the created column with each row's ingestion time (see :func:`_created`)."""
    encoded = pc.dictionary_encode(batch.column(INGESTION_ID_COLUMN))
    times = pa.array(
        [ingestion_time(i) for i in encoded.dictionary.to_pylist()], TIMESTAMP_ARROW_TYPE
    ).take(encoded.indices)
    index = batch.schema.get_field_index(CREATED_TIMESTAMP_COLUMN)
    return batch.set_column(index, CREATED_TIMESTAMP_COLUMN, times)


def _order_key(event: str, created: str | None, *, top: bool) -> str:
    """Return the 128-bit key that orders rows by (event time, created time), nulls first."""
    rank = (
        str(_TOP_RANK) if top else f"COALESCE(epoch_us({created})::HUGEINT + {_CREATED_SHIFT}, 0)"
    )
    return f"((epoch_us({event})::HUGEINT << 64) + {rank})"


def _max_age_us(join: TableJoin) -> int | None:
    if join.max_age is None:
        return None
    micros = (join.max_age.days * 86_400 + join.max_age.seconds) * 1_000_000
    micros += join.max_age.microseconds
    return None if micros >= _NO_LOWER_BOUND_US else micros


def _empty_relation(join: TableJoin | None) -> str:
    # A source without files yet: no rows, but the columns the join reads.
    if join is None:
        return "(SELECT 1 WHERE false)"
    columns = [f"NULL::{_sql_type(k.value_type)} AS {_quote(k.source)}" for k in join.keys]
    columns.append(f"NULL::TIMESTAMPTZ AS {_quote(join.event_timestamp_column)}")
    return f"(SELECT {', '.join(columns)} WHERE false)"


def _check_differing(
    types: Mapping[str, str], files: SourceFiles, declared: Sequence[DeclaredFileColumn]
) -> None:
    """Check ``files`` when a declared column is read as another type than declared.

    That happens with files other tools wrote, or written before a type widening; the check
    (:func:`~potluck.offline.file_columns.check_files`) makes the casts of :func:`_read_as`
    exact.

    Raises:
        DataValidationError: If a file's column does not fit its declared type; names the file.
    """
    differing = [
        c
        for c in declared
        if c.column in types and types[c.column] != _described_type(c.value_type)
    ]
    if differing:
        check_files(files, differing)


def _range_columns(table: FeatureTable, source: FileSource) -> list[DeclaredFileColumn]:
    names = {name: column for column, name in source.field_mapping.items()}
    columns = [
        DeclaredFileColumn(
            names.get(f.name, f.name), f.value_type, f"feature {f.name} ({f.value_type.name})"
        )
        for f in table.features
    ]
    return columns + _timestamp_columns(
        source.event_timestamp_column, source.created_timestamp_column
    )


def _join_columns(join: TableJoin) -> list[DeclaredFileColumn]:
    columns = [
        DeclaredFileColumn(k.source, k.value_type, f"entity {k.entity} ({k.value_type.name})")
        for k in join.keys
    ]
    columns += [
        DeclaredFileColumn(f.source, f.value_type, f"feature {f.feature} ({f.value_type.name})")
        for f in join.features
    ]
    return columns + _timestamp_columns(join.event_timestamp_column, join.created_timestamp_column)


def _timestamp_columns(event: str, created: str | None) -> list[DeclaredFileColumn]:
    columns = [DeclaredFileColumn(event, ValueType.UNIX_TIMESTAMP, "an event timestamp")]
    if created:
        columns.append(DeclaredFileColumn(created, ValueType.UNIX_TIMESTAMP, "a created timestamp"))
    return columns


def _require(
    available: Mapping[str, str], column: str, table: str, value_type: ValueType | None = None
) -> str:
    if available and column not in available:
        raise DataValidationError(
            f"the batch source of feature table {table!r} has no column {column!r}; its "
            f"columns: {', '.join(sorted(available))}",
            column=column,
            row=None,
        )
    return _read_as(available, column, value_type)


def _column_or_null(available: Mapping[str, str], column: str | None, value_type: ValueType) -> str:
    if column is None or column not in available:
        return f"NULL::{_sql_type(value_type)}"
    return _read_as(available, column, value_type)


def _read_as(available: Mapping[str, str], column: str, value_type: ValueType | None) -> str:
    """Return the SQL that reads ``column`` as ``value_type`` (as it is when that is ``None``).

    A column of another type is cast: any timestamp (``TIMESTAMP``, ``TIMESTAMP_NS``,
    ``TIMESTAMPTZ_NS``, ``DATE`` ...; naive ones are UTC, the session's zone) to
    ``TIMESTAMPTZ``, integers and floats to the declared width, text and bytes into each other
    as UTF-8. :func:`_source_types` has checked that every value converts exactly.
    """
    quoted = _quote(column)
    held = available.get(column)
    if value_type is None or held is None or held == _described_type(value_type):
        return quoted
    element = value_type.element_type
    recoded = held.removesuffix("[]") != _sql_type(element)
    if element in (ValueType.STRING, ValueType.BYTES) and recoded:
        recode = "decode" if element is ValueType.STRING else "encode"
        if value_type.is_list:
            return f"list_transform({quoted}, lambda x: {recode}(x))"
        return f"{recode}({quoted})"
    return f"CAST({quoted} AS {_sql_type(value_type)})"


def _described_type(value_type: ValueType) -> str:
    """Return how ``DESCRIBE`` spells the DuckDB type of ``value_type``."""
    return _sql_type(value_type).replace("TIMESTAMPTZ", "TIMESTAMP WITH TIME ZONE")


def _sql_type(value_type: ValueType) -> str:
    if value_type.is_list:
        return _DUCKDB_TYPES[value_type.element_type] + "[]"
    return _DUCKDB_TYPES[value_type]


def _typed(batch: pa.RecordBatch, types: dict[str, ValueType]) -> pa.RecordBatch:
    arrays = [
        convert(
            column,
            to_arrow_type(types[name]),
            column=name,
            expected=f"{name} ({types[name].name})",
        )
        if name in types
        else column
        for name, column in zip(batch.schema.names, batch.columns, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _timestamp(value: datetime) -> str:
    return f"TIMESTAMPTZ {_literal(value.astimezone(timezone.utc).isoformat())}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _setting_error(name: str, value: str, exc: duckdb.Error) -> ConfigError | TerminalError:
    """The error of a store setting DuckDB refused (settings load checks their forms first).

    A memory limit below what DuckDB holds already is refused as out of memory: that is the
    runtime error of :func:`_out_of_memory`, as for a query.
    """
    key = f"offline_store.{name}"
    if isinstance(exc, duckdb.OutOfMemoryException):
        return _out_of_memory(f"setting {key} = {value}", exc)
    return ConfigError(
        f"setting {key} = {value} is refused by DuckDB: {' '.join(str(exc).split())}; fix "
        f"{key} in potluck.yaml (or POTLUCK_OFFLINE_STORE__{name.upper()})",
        key=key,
        sources=(),
    )


def _out_of_memory(doing: str, exc: duckdb.OutOfMemoryException) -> TerminalError:
    """The runtime error of a query that outgrew ``offline_store.memory_limit`` (exit code 1).

    DuckDB's own advice (``SET threads``...) is left out: potluck users set the limit in
    potluck's settings, which the message names.
    """
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TerminalError(
        f"{doing} ran out of memory in DuckDB ({reason}); raise offline_store.memory_limit (in "
        "potluck.yaml or POTLUCK_OFFLINE_STORE__MEMORY_LIMIT; unset, DuckDB uses 80% of RAM)",
        key="offline_store.memory_limit",
    )


_INTERRUPTED = "Query interrupted"
"""What DuckDB's Python client raises (as a ``RuntimeError``) when Ctrl-C stops a query."""


@contextlib.contextmanager
def _wrap_errors(doing: str) -> Iterator[None]:
    """Turn DuckDB errors into potluck errors at the plug-in boundary.

    A query stopped by Ctrl-C raises :class:`KeyboardInterrupt` again, as Python code would.
    """
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except RuntimeError as exc:
        if str(exc) == _INTERRUPTED:
            raise KeyboardInterrupt from None
        raise
    except duckdb.OutOfMemoryException as exc:
        raise _out_of_memory(doing, exc) from exc
    except duckdb.Error as exc:
        message = f"{doing} failed in DuckDB: {' '.join(str(exc).split())}"
        if isinstance(exc, (duckdb.IOException, duckdb.HTTPException)):
            raise UnavailableError(message) from exc
        raise ValidationError(message) from exc


__all__ = ["DuckDBConfig", "DuckDBOfflineStore", "ScannedSource", "render_pit_sql"]
