"""The point-in-time join plan: engine-neutral, frozen data built from definitions.

The semantics live here once, and every offline engine renders the same plan (DuckDB into SQL,
Spark into DataFrame operations):

- For each entity row ``(keys, ts)`` and each feature table, the candidates are the table's rows
  with the same keys and ``event_ts <= ts`` and, when the table has a ``max_age``,
  ``event_ts >= ts - max_age`` (both bounds inclusive). The winner has the greatest ``event_ts``;
  ties go to the greatest ``created_ts`` (a null one sorts first). No candidate gives nulls.
- The output keeps every entity row, in input order, duplicates included: every input column
  unchanged, then one column ``table__feature`` per requested feature, grouped by table in the
  order the tables were first referenced.

:func:`resolve_refs` turns feature references into :class:`FeatureRequest` objects (with lookups
the caller supplies, so this module never touches the registry); :func:`prepare` validates the
entity rows against them and builds the :class:`PitPlan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.refs import FeatureRef
from potluck.errors import (
    DataValidationError,
    FeatureRefError,
    NotFoundError,
    ValidationError,
)
from potluck.offline.convert import convert
from potluck.offline.files import resolve_path
from potluck.offline.inputs import DeclaredColumn, InputData, read_table
from potluck.types import TIMESTAMP_ARROW_TYPE, ValueType, to_arrow_type

ENTITY_TIMESTAMP_COLUMN = "event_timestamp"
"""The column of the entity rows that holds each row's point in time."""


@dataclass(frozen=True)
class FeatureRequest:
    """The features wanted from one feature table, resolved from feature references.

    Attributes:
        table: The feature table.
        features: The wanted features' names, without repeats.
        entity_types: The value type of each of the table's entities.
    """

    table: FeatureTable
    features: tuple[str, ...]
    entity_types: Mapping[str, ValueType]


@dataclass(frozen=True)
class KeyColumn:
    """One join key of a table.

    Attributes:
        entity: The entity, which is also the key's column in the entity rows.
        source: The key's column in the feature source (after ``field_mapping``).
        value_type: The entity's value type.
    """

    entity: str
    source: str
    value_type: ValueType


@dataclass(frozen=True)
class FeatureColumn:
    """One requested feature.

    Attributes:
        feature: The feature's name.
        source: Its column in the feature source (after ``field_mapping``).
        output: Its column in the result, ``table__feature``.
        value_type: Its value type; the result column has the matching Arrow type.
    """

    feature: str
    source: str
    output: str
    value_type: ValueType


@dataclass(frozen=True)
class TableJoin:
    """How one feature table joins the entity rows.

    Attributes:
        table: The table's name.
        path: Its batch source's folder or URL (made absolute).
        keys: The join keys, in the table's entity order.
        event_timestamp_column: The source column holding event times.
        created_timestamp_column: The source column that breaks event-time ties, if any.
        date_partition_column: The source's ``<column>=YYYY-MM-DD`` folder key, if any.
        max_age: The lookback bound, or ``None`` for none.
        features: The requested features.
    """

    table: str
    path: str
    keys: tuple[KeyColumn, ...]
    event_timestamp_column: str
    created_timestamp_column: str | None
    date_partition_column: str | None
    max_age: timedelta | None
    features: tuple[FeatureColumn, ...]

    def event_range(
        self, earliest: datetime | None, latest: datetime | None
    ) -> tuple[datetime | None, datetime | None]:
        """Return the event times any entity row in ``[earliest, latest]`` can match.

        ``None`` means unbounded (no entity rows, no ``max_age``, or a bound beyond year 1).
        """
        if earliest is None or self.max_age is None:
            return None, latest
        try:
            return earliest - self.max_age, latest
        except OverflowError:
            return None, latest


@dataclass(frozen=True)
class PitPlan:
    """A point-in-time join of entity rows with one or more feature tables.

    Attributes:
        joins: One per feature table, in output order.
        earliest: The earliest entity timestamp (``None`` when there are no entity rows).
        latest: The latest entity timestamp.
    """

    joins: tuple[TableJoin, ...]
    earliest: datetime | None = None
    latest: datetime | None = None

    @property
    def output_columns(self) -> tuple[FeatureColumn, ...]:
        """The feature columns the result gets after the input columns, in order."""
        return tuple(f for join in self.joins for f in join.features)

    @property
    def key_columns(self) -> dict[str, ValueType]:
        """The entity columns the joins need, with their value types."""
        return {k.entity: k.value_type for join in self.joins for k in join.keys}


@dataclass(frozen=True)
class PreparedRetrieval:
    """Validated input of one historical retrieval.

    Attributes:
        entities: The entity rows as read (see :func:`potluck.offline.inputs.read_table`: a
            CSV file's join columns typed by their declarations, its other columns text); the
            result starts with these columns, unchanged.
        join_rows: The same rows, in the same order, with only the columns the join needs:
            ``event_timestamp`` as UTC microseconds and each key as its entity's type; no nulls.
        plan: The join to run.
    """

    entities: pa.Table
    join_rows: pa.Table
    plan: PitPlan


TableLookup = Callable[[str, str], FeatureTable]
"""``(project, name) -> FeatureTable``; raises NotFoundError when there is none."""
EntityLookup = Callable[[str, str], Entity]
"""``(project, name) -> Entity``; raises NotFoundError when there is none."""


def resolve_refs(
    refs: Sequence[str],
    project: str,
    lookup_table: TableLookup,
    lookup_entity: EntityLookup,
) -> tuple[FeatureRequest, ...]:
    """Resolve feature references into one request per feature table.

    Args:
        refs: ``"table:feature"``, ``"project/table:feature"`` or ``"table:*"``; repeats are
            ignored.
        project: The project of references that name none.
        lookup_table: Returns a table by project and name.
        lookup_entity: Returns an entity by project and name.

    Raises:
        FeatureRefError: If a reference is malformed, names an unknown table or feature, or two
            tables (of different projects) would give the same output column.
    """
    if isinstance(refs, str) or not isinstance(refs, Sequence):
        raise FeatureRefError(
            f"feature references must be a list of 'table:feature' strings, got {refs!r}",
            ref=refs,
        )
    if not refs:
        raise FeatureRefError("no feature references given; name at least one", ref="")
    groups: dict[tuple[str, str], tuple[FeatureTable, list[str]]] = {}
    for raw in refs:
        ref = FeatureRef.parse(raw)
        key = (ref.project or project, ref.table)
        if key not in groups:
            groups[key] = (_lookup_table(lookup_table, key, raw), [])
        table, names = groups[key]
        if ref.is_wildcard:
            wanted = table.feature_names
        elif ref.feature in table.feature_names:
            wanted = (ref.feature,)
        else:
            raise FeatureRefError(
                f"feature table {table.name!r} has no feature {ref.feature!r} (in feature "
                f"reference {raw!r}); its features: {', '.join(table.feature_names)}",
                ref=raw,
            )
        names.extend(name for name in wanted if name not in names)
    requests: list[FeatureRequest] = []
    outputs: dict[str, str] = {}
    for (table_project, _), (table, names) in groups.items():
        for name in names:
            column = f"{table.name}__{name}"
            if column in outputs:
                raise FeatureRefError(
                    f"feature references {outputs[column]!r} and "
                    f"'{table_project}/{table.name}:{name}' both give output column "
                    f"{column!r}; request only one of them",
                    ref=f"{table_project}/{table.name}:{name}",
                )
            outputs[column] = f"{table_project}/{table.name}:{name}"
        types = {e: lookup_entity(table_project, e).value_type for e in table.entities}
        requests.append(FeatureRequest(table=table, features=tuple(names), entity_types=types))
    return tuple(requests)


def _lookup_table(lookup: TableLookup, key: tuple[str, str], raw: str) -> FeatureTable:
    project, name = key
    try:
        return lookup(project, name)
    except NotFoundError:
        raise FeatureRefError(
            f"unknown feature table {name!r} in project {project!r} (in feature reference {raw!r})",
            ref=raw,
        ) from None


def build_plan(requests: Sequence[FeatureRequest], root: Path | None = None) -> PitPlan:
    """Build the join plan of ``requests`` (relative source paths are resolved against ``root``).

    Raises:
        ValidationError: If a table has no batch source.
        FeatureRefError: If two tables need the same entity column with different types.
    """
    joins: list[TableJoin] = []
    key_types: dict[str, tuple[ValueType, str]] = {}
    for request in requests:
        table = request.table
        source = table.batch_source
        if source is None:
            raise ValidationError(
                f"feature table {table.name!r} has no batch_source, so it has no history to "
                "join; give it a FileSource",
                table=table.name,
            )
        source_names = {name: column for column, name in source.field_mapping.items()}
        keys: list[KeyColumn] = []
        for entity in table.entities:
            value_type = request.entity_types[entity]
            seen = key_types.setdefault(entity, (value_type, table.name))
            if seen[0] != value_type:
                raise FeatureRefError(
                    f"feature tables {seen[1]!r} and {table.name!r} both join on entity column "
                    f"{entity!r} but with types {seen[0].name} and {value_type.name}",
                    ref=table.name,
                )
            keys.append(KeyColumn(entity, source_names.get(entity, entity), value_type))
        features = tuple(
            FeatureColumn(
                feature=name,
                source=source_names.get(name, name),
                output=f"{table.name}__{name}",
                value_type=table.feature(name).value_type,
            )
            for name in request.features
        )
        joins.append(
            TableJoin(
                table=table.name,
                path=resolve_path(source.path, root),
                keys=tuple(keys),
                event_timestamp_column=source.event_timestamp_column,
                created_timestamp_column=source.created_timestamp_column,
                date_partition_column=source.date_partition_column,
                max_age=table.max_age,
                features=features,
            )
        )
    return PitPlan(joins=tuple(joins))


def prepare(
    entity_source: InputData,
    requests: Sequence[FeatureRequest],
    *,
    root: Path | None = None,
) -> PreparedRetrieval:
    """Read and validate the entity rows, and build the plan that joins them.

    Args:
        entity_source: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL.
        requests: What to join, from :func:`resolve_refs`.
        root: The folder relative source paths are resolved against.

    Raises:
        DataValidationError: If the entity rows lack ``event_timestamp`` or a key column, a value
            has the wrong type, a key or timestamp is null, or a feature column's name is taken
            by an input column; ``column`` and ``row`` say where.
        ValidationError: If the rows cannot be read or a table has no batch source.
        FeatureRefError: If two tables need the same entity column with different types.
    """
    plan = build_plan(requests, root)
    declared = entity_columns(plan)
    entities = read_table(entity_source, declared)
    taken = taken_output_column(plan, entities.column_names)
    if taken is not None:
        raise taken
    if entities.num_rows == 0:
        empty = pa.table({ENTITY_TIMESTAMP_COLUMN: pa.array([], TIMESTAMP_ARROW_TYPE)})
        return PreparedRetrieval(entities, empty, plan)
    columns = {
        column.name: _entity_column(entities, column.name, column.arrow_type, column.expected)
        for column in declared
    }
    timestamps = columns[ENTITY_TIMESTAMP_COLUMN]
    bounds = pc.min_max(timestamps)
    plan = PitPlan(joins=plan.joins, earliest=bounds["min"].as_py(), latest=bounds["max"].as_py())
    return PreparedRetrieval(entities, pa.table(columns), plan)


def entity_columns(plan: PitPlan) -> list[DeclaredColumn]:
    """Return the entity rows' columns ``plan`` needs, in the order they are checked.

    ``event_timestamp`` first, then each key column the joins use.
    """
    declared = [DeclaredColumn(ENTITY_TIMESTAMP_COLUMN, TIMESTAMP_ARROW_TYPE, "a timestamp")]
    declared += [
        DeclaredColumn(entity, to_arrow_type(value_type), f"entity {entity} ({value_type.name})")
        for entity, value_type in plan.key_columns.items()
    ]
    return declared


def taken_output_column(plan: PitPlan, names: Sequence[str]) -> DataValidationError | None:
    """Return the error for the first feature column whose name an input column has, if any."""
    for column in plan.output_columns:
        if column.output in names:
            return DataValidationError(
                f"the entity rows already have a column {column.output!r}, which the feature "
                "columns need; rename or drop it",
                column=column.output,
                row=None,
            )
    return None


def missing_entity_column(name: str, names: Sequence[str]) -> DataValidationError:
    """Return the error for entity rows (with columns ``names``) that lack column ``name``."""
    return DataValidationError(
        f"the entity rows have no {name!r} column, which the join needs; their columns: "
        f"{', '.join(names) or '(none)'}",
        column=name,
        row=None,
    )


def null_entity_value(name: str, row: int, what: str) -> DataValidationError:
    """Return the error for a null in entity column ``name`` at ``row`` (0-based)."""
    return DataValidationError(
        f"column {name!r} row {row}: is null; every entity row needs {what}",
        column=name,
        row=row,
    )


def _entity_column(entities: pa.Table, name: str, target: pa.DataType, what: str) -> pa.Array:
    if name not in entities.column_names:
        raise missing_entity_column(name, entities.column_names)
    values = convert(entities.column(name), target, column=name, expected=what)
    if values.null_count:
        raise null_entity_value(name, pc.index(pc.is_null(values), True).as_py(), what)
    return values


__all__ = [
    "ENTITY_TIMESTAMP_COLUMN",
    "EntityLookup",
    "FeatureColumn",
    "FeatureRequest",
    "KeyColumn",
    "PitPlan",
    "PreparedRetrieval",
    "TableJoin",
    "TableLookup",
    "build_plan",
    "entity_columns",
    "missing_entity_column",
    "null_entity_value",
    "prepare",
    "resolve_refs",
    "taken_output_column",
]
