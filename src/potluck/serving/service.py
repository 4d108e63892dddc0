"""ServingService: answers online reads from one online store, whatever transport asked.

It resolves feature references through the registry (definitions are cached, refreshed on an
interval and at once when a request names a table or feature the cache does not know), compiles
a read plan per requested feature set once and reuses it, encodes entity keys with
``online.codec``, reads the store once per table, and assigns each value its status
(``serving.status``). The gRPC and HTTP adapters and the embedded SDK all call
:meth:`ServingService.get_online_features`.

Every cache is bounded whatever clients send: the definitions cache holds only projects that
have definitions (plus the default project), so names of projects that do not exist are never
cached nor re-read at each refresh; reloads caused by unknown names are rationed per project
(``serving/_miss_budget.py``), so such names cannot make the server read the registry per
request; and the plan cache keeps the :data:`MAX_CACHED_PLANS` newest plans.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import pyarrow as pa

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.refs import FeatureRef
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE
from potluck.errors import FeatureRefError, ValidationError
from potluck.online.base import EVENT_TIMESTAMP_COLUMN, OnlineStore
from potluck.online.codec import encode_entity_key, encode_entity_keys
from potluck.registry.base import Registry
from potluck.serving._entity_values import check_entity_values
from potluck.serving._miss_budget import MissBudget
from potluck.serving.response import OnlineResponse
from potluck.serving.status import PRESENT, FieldStatus, row_statuses, value_statuses
from potluck.types import ValueType, to_arrow_type

logger = logging.getLogger(__name__)

DEFAULT_REFRESH_INTERVAL = 10.0
"""Seconds between two refreshes of the cached definitions."""

DEFAULT_MAX_ENTITIES = 10_000
"""Default limit on entity rows per request."""

DEFAULT_MAX_REQUEST_BYTES = 1_048_576
"""Default limit on a request's size in bytes (HTTP body, gRPC message): 1 MiB, about 10,000
entity rows of 100-character strings; ``potluck serve --max-request-bytes`` changes it."""

MAX_CACHED_PLANS = 1_024
"""Read plans kept; past this, the oldest plan is dropped (requests rarely vary)."""

MISS_RELOAD_BURST = 5
"""Reloads of one project's definitions that requests naming unknown tables or features may
cause at once (every project the cache does not hold shares one such budget)."""

MISS_RELOADS_PER_SECOND = 1.0
"""The rate at which that budget refills; beyond it, unknown names are answered from the
cache (a table applied meanwhile is then served within a second, or at the next refresh)."""

JOB_MAX_EVENT_KEY = "max_event_timestamp_us"
"""Key of a job record's body that holds the newest event time (microseconds) the job wrote."""

JOB_TABLE_KEY = "table"
"""Key of a job record's body that names the job's feature table."""

_MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True)
class TableRead:
    """The part of a read plan that reads one feature table.

    Attributes:
        project: The table's project.
        table: The table's definition.
        entity_names: The table's entities, in its order.
        entity_types: The value type of each of the table's entities.
        features: The features to read, in output order.
        columns: For each feature, its index among the response's columns.
        max_age_us: The table's ``max_age`` in microseconds (``None``: values never age out).
    """

    project: str
    table: FeatureTable
    entity_names: tuple[str, ...]
    entity_types: Mapping[str, ValueType]
    features: tuple[str, ...]
    columns: tuple[int, ...]
    max_age_us: int | None


@dataclass(frozen=True)
class ReadPlan:
    """Everything a request needs that depends only on its refs and entity names.

    Attributes:
        entity_names: The request's entity columns, in request order.
        entity_types: The value type of each entity column.
        names: The response's column names (entity columns first).
        value_types: The value type of each response column.
        reads: One :class:`TableRead` per table, in order of first reference.
    """

    entity_names: tuple[str, ...]
    entity_types: tuple[ValueType, ...]
    names: tuple[str, ...]
    value_types: tuple[ValueType, ...]
    reads: tuple[TableRead, ...]


@dataclass(frozen=True)
class _ProjectDefs:
    tables: Mapping[str, FeatureTable]
    entities: Mapping[str, Entity]


class ServingService:
    """Online reads over one online store, with definitions from a registry.

    Args:
        registry: Where definitions (and job records, for freshness) come from.
        online_store: The store to read.
        project: The project references without ``project/`` belong to.
        refresh_interval: Seconds between refreshes of the cached definitions.
        max_entities_per_request: The most entity rows one request may carry.

    Example:
        >>> service = ServingService(registry, store, "default")
        >>> service.get_online_features(["driver_stats:conv_rate"], {"driver_id": [1001]})
    """

    def __init__(
        self,
        registry: Registry,
        online_store: OnlineStore,
        project: str,
        *,
        refresh_interval: float = DEFAULT_REFRESH_INTERVAL,
        max_entities_per_request: int = DEFAULT_MAX_ENTITIES,
    ) -> None:
        self.registry = registry
        self.online_store = online_store
        self.project = project
        self.refresh_interval = refresh_interval
        self.max_entities_per_request = max_entities_per_request
        self._defs: dict[str, _ProjectDefs] = {}
        self._plans: dict[tuple[Any, ...], ReadPlan] = {}
        self._newest_event_us: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        self._plans_lock = threading.Lock()
        self._miss_budget = MissBudget(burst=MISS_RELOAD_BURST, per_second=MISS_RELOADS_PER_SECOND)
        self._next_refresh = time.monotonic() + refresh_interval

    # ---- reads ---------------------------------------------------------------------------------

    def get_online_features(
        self,
        refs: Sequence[str],
        entities: Mapping[str, Sequence[Any]],
        *,
        full_feature_names: bool = True,
        now_us: int | None = None,
    ) -> OnlineResponse:
        """Read the latest values of ``refs`` for each entity row.

        Args:
            refs: Feature references (``table:feature``, ``project/table:feature``,
                ``table:*``).
            entities: Columnar entity rows: ``{"driver_id": [1001, 1002]}``.
            full_feature_names: Name feature columns ``table__feature`` (else the bare name).
            now_us: When the max-age rule is evaluated, in microseconds since the epoch (default:
                the clock); the store hides expired rows by its own clock.

        Returns:
            The columnar response: entity columns first, then one column per feature.

        Raises:
            FeatureRefError: If a reference is malformed or names an unknown table or feature.
            ValidationError: If entity columns are missing, of unequal length, too many, or hold
                a value of the wrong type; the message names the entity.
            UnavailableError: If the online store (or, on a cache miss, the registry) cannot be
                reached.
        """
        if time.monotonic() >= self._next_refresh:
            self._refresh_in_background()
        n = self._row_count(entities)
        plan = self.plan(refs, entities, full_feature_names=full_feature_names)
        if now_us is None:
            now_us = time.time_ns() // 1_000
        columns: list[list[Any]] = []
        statuses: list[list[FieldStatus]] = []
        events: list[list[int | None]] = []
        no_events: list[int | None] = [None] * n
        for name, value_type in zip(plan.entity_names, plan.entity_types, strict=True):
            values = list(entities[name])
            check_entity_values(name, value_type, values)
            columns.append(values)
            statuses.append([PRESENT] * n)
            events.append(no_events)
        size = len(plan.names)
        columns.extend([] for _ in range(size - len(columns)))
        statuses.extend([] for _ in range(size - len(statuses)))
        events.extend(no_events for _ in range(size - len(events)))
        for read in plan.reads:
            self._read_table(read, entities, n, now_us, columns, statuses, events)
        return OnlineResponse(plan.names, plan.value_types, columns, statuses, events)

    def _read_table(
        self,
        read: TableRead,
        entities: Mapping[str, Sequence[Any]],
        n: int,
        now_us: int,
        columns: list[list[Any]],
        statuses: list[list[FieldStatus]],
        events: list[list[int | None]],
    ) -> None:
        if n == 1:
            keys = [
                encode_entity_key(
                    read.project,
                    read.table.name,
                    {name: entities[name][0] for name in read.entity_names},
                    read.entity_types,
                )
            ]
        else:
            arrays = {
                name: pa.array(entities[name], type=to_arrow_type(read.entity_types[name]))
                for name in read.entity_names
            }
            keys = encode_entity_keys(
                read.project, read.table.name, arrays, read.entity_types
            ).to_pylist()
        result = self.online_store.read(read.project, read.table, keys, read.features)
        event_us: list[int | None] = [
            us
            for chunk in result.column(EVENT_TIMESTAMP_COLUMN).chunks
            for us in chunk.view(pa.int64()).to_pylist()
        ]
        rows = row_statuses(event_us, read.max_age_us, now_us)
        all_live = rows.count(PRESENT) == n
        for feature, index in zip(read.features, read.columns, strict=True):
            column = result.column(feature)
            values = column.to_pylist()
            statuses[index] = value_statuses(
                values, rows, all_live=all_live, has_nulls=column.null_count > 0
            )
            columns[index] = values
            events[index] = event_us
        newest = (
            max(cast(list[int], event_us))
            if all_live
            else max((us for us in event_us if us is not None), default=None)
        )
        if newest is not None:
            key = (read.project, read.table.name)
            if newest > self._newest_event_us.get(key, -1):
                self._newest_event_us[key] = newest

    def _row_count(self, entities: Mapping[str, Sequence[Any]]) -> int:
        if not entities:
            raise ValidationError(
                "the request has no entity columns; pass e.g. {'driver_id': [1001]}",
                field="entities",
            )
        counts = {name: len(values) for name, values in entities.items()}
        n = next(iter(counts.values()))
        if any(c != n for c in counts.values()):
            lengths = ", ".join(f"{k}={v}" for k, v in counts.items())
            raise ValidationError(
                f"entity columns have different lengths ({lengths}); every entity column needs "
                "one value per entity row",
                field="entities",
            )
        if n > self.max_entities_per_request:
            raise ValidationError(
                f"the request has {n} entity rows; the limit is "
                f"max_entities_per_request={self.max_entities_per_request}",
                field="entities",
                rows=n,
                limit=self.max_entities_per_request,
            )
        if n == 0:
            raise ValidationError("the request has no entity rows", field="entities")
        return n

    # ---- plans ---------------------------------------------------------------------------------

    def plan(
        self,
        refs: Sequence[str],
        entity_names: Iterable[str],
        *,
        full_feature_names: bool = True,
    ) -> ReadPlan:
        """Return the read plan of a feature set, compiled on first use and cached.

        The cache is keyed by the references, the entity names (in order) and the naming;
        it holds at most :data:`MAX_CACHED_PLANS` plans and is emptied when a refresh finds
        changed definitions.

        Raises:
            FeatureRefError: If a reference is malformed or unknown (after reloading its
                project's definitions, when the miss budget allows).
            ValidationError: If the entity names do not fit the tables.
        """
        if isinstance(refs, str):
            raise FeatureRefError(
                f"feature references must be a list such as ['table:feature'], got {refs!r}",
                ref=refs,
            )
        key = (tuple(refs), tuple(entity_names), full_feature_names)
        plan = self._plans.get(key)
        return self._compile(key) if plan is None else plan

    def _compile(self, key: tuple[tuple[str, ...], tuple[str, ...], bool]) -> ReadPlan:
        refs, entity_names, full = key
        if not refs:
            raise FeatureRefError(
                "feature references must be a non-empty list of 'table:feature'", ref=""
            )
        parsed = [FeatureRef.parse(ref) for ref in refs]
        try:
            plan = self._build_plan(parsed, entity_names, full)
        except FeatureRefError:
            if not self._reload_on_miss({ref.project or self.project for ref in parsed}):
                raise
            plan = self._build_plan(parsed, entity_names, full)
        with self._plans_lock:
            plans = self._plans
            if len(plans) >= MAX_CACHED_PLANS:
                del plans[next(iter(plans))]
            plans[key] = plan
        return plan

    def _build_plan(
        self, refs: Sequence[FeatureRef], entity_names: tuple[str, ...], full: bool
    ) -> ReadPlan:
        names: list[str] = list(entity_names)
        value_types: list[ValueType | None] = [None] * len(entity_names)
        by_table: dict[tuple[str, str], list[tuple[str, int]]] = {}
        tables: dict[tuple[str, str], tuple[FeatureTable, dict[str, ValueType]]] = {}
        seen: dict[str, str] = {}
        for ref in refs:
            project = ref.project or self.project
            table, entity_types = self._table(project, ref)
            features = table.feature_names if ref.is_wildcard else (ref.feature,)
            if not ref.is_wildcard and ref.feature not in table.feature_names:
                raise FeatureRefError(
                    f"unknown feature {str(ref)!r}: feature table {table.name!r} has no feature "
                    f"{ref.feature!r}; it has {', '.join(table.feature_names)}",
                    ref=str(ref),
                )
            tables[(project, table.name)] = (table, entity_types)
            for feature in features:
                name = f"{table.name}__{feature}" if full else feature
                if name in seen:
                    raise FeatureRefError(
                        f"feature {str(ref)!r} is requested twice or clashes with "
                        f"{seen[name]!r} as output column {name!r}; request it once or use "
                        "full feature names",
                        ref=str(ref),
                    )
                seen[name] = str(ref)
                by_table.setdefault((project, table.name), []).append((feature, len(names)))
                names.append(name)
                value_types.append(table.feature(feature).value_type)
        reads: list[TableRead] = []
        for key, wanted in by_table.items():
            table, entity_types = tables[key]
            for entity in table.entities:
                if entity not in entity_names:
                    raise ValidationError(
                        f"missing entity {entity!r}: feature table {table.name!r} is keyed by "
                        f"{', '.join(table.entities)}; add a {entity!r} column to the entities",
                        field="entities",
                        entity=entity,
                    )
                index = entity_names.index(entity)
                known = value_types[index]
                if known is not None and known != entity_types[entity]:
                    raise ValidationError(
                        f"entity {entity!r} has type {known.name} in one requested table and "
                        f"{entity_types[entity].name} in {table.name!r}; request them separately",
                        field="entities",
                        entity=entity,
                    )
                value_types[index] = entity_types[entity]
            max_age = table.max_age
            reads.append(
                TableRead(
                    project=key[0],
                    table=table,
                    entity_names=table.entities,
                    entity_types={e: entity_types[e] for e in table.entities},
                    features=tuple(f for f, _ in wanted),
                    columns=tuple(i for _, i in wanted),
                    max_age_us=None if max_age is None else max_age // _MICROSECOND,
                )
            )
        for index, entity in enumerate(entity_names):
            if value_types[index] is None:
                keyed = ", ".join(sorted({e for r in reads for e in r.entity_names}))
                raise ValidationError(
                    f"unknown entity {entity!r}: no requested feature table is keyed by it "
                    f"(they are keyed by {keyed})",
                    field="entities",
                    entity=entity,
                )
        return ReadPlan(
            entity_names=entity_names,
            entity_types=tuple(t for t in value_types[: len(entity_names)] if t is not None),
            names=tuple(names),
            value_types=tuple(t for t in value_types if t is not None),
            reads=tuple(reads),
        )

    def _table(self, project: str, ref: FeatureRef) -> tuple[FeatureTable, dict[str, ValueType]]:
        defs = self._defs.get(project)
        table = None if defs is None else defs.tables.get(ref.table)
        if defs is None or table is None:
            where = "" if project == self.project else f" in project {project!r}"
            raise FeatureRefError(
                f"unknown feature {str(ref)!r}: there is no feature table {ref.table!r}{where}",
                ref=str(ref),
            )
        types: dict[str, ValueType] = {}
        for name in table.entities:
            entity = defs.entities.get(name)
            if entity is None:
                raise FeatureRefError(
                    f"feature table {table.name!r} names entity {name!r}, which is not defined "
                    f"in project {project!r}",
                    ref=str(ref),
                )
            types[name] = entity.value_type
        return table, types

    # ---- definitions ---------------------------------------------------------------------------

    def refresh(self) -> None:
        """Reload the definitions of every project in use now (normally done on an interval).

        The projects in use are the default one and those requests named that have
        definitions; names of projects without any are not kept, so the cost of a refresh
        does not grow with what clients ask for.

        Raises:
            UnavailableError: If the registry cannot be reached.
        """
        with self._lock:
            self._reload(set(self._defs) | {self.project})
            self._next_refresh = time.monotonic() + self.refresh_interval

    def cache_sizes(self) -> dict[str, int]:
        """Return the entries of each bounded cache: ``plans`` and ``projects``.

        ``plans`` is at most :data:`MAX_CACHED_PLANS`; ``projects`` counts the projects whose
        definitions are cached, which are the default one and those with definitions.
        """
        return {"plans": len(self._plans), "projects": len(self._defs)}

    def _reload_on_miss(self, projects: set[str]) -> bool:
        """Reload the definitions of ``projects`` a request missed in, as the budget allows.

        Returns:
            Whether any project was reloaded (else the request is answered from the cache).
        """
        with self._lock:
            known = self._defs
            allowed = {p for p in projects if self._miss_budget.take(p if p in known else None)}
            if allowed:
                self._reload(allowed)
        return bool(allowed)

    def _reload(self, projects: set[str]) -> None:
        """Load ``projects`` into the cache; the caller holds ``_lock``."""
        loaded = {project: self._load(project) for project in sorted(projects)}
        kept = {
            p: defs
            for p, defs in loaded.items()
            if defs.tables or defs.entities or p == self.project
        }
        gone = {p for p in loaded if p not in kept and p in self._defs}
        newest = self._load_job_freshness(kept)
        if gone or any(self._defs.get(p) != defs for p, defs in kept.items()):
            self._plans = {}
        self._defs = {p: d for p, d in {**self._defs, **kept}.items() if p not in gone}
        self._miss_budget.keep_only({*self._defs, None})
        for key, us in newest.items():
            if us > self._newest_event_us.get(key, -1):
                self._newest_event_us[key] = us
        for key in [k for k in list(self._newest_event_us) if k[0] in gone]:
            del self._newest_event_us[key]

    def _load(self, project: str) -> _ProjectDefs:
        tables = {
            t.name: t
            for t in self.registry.list(project, KIND_FEATURE_TABLE)
            if isinstance(t, FeatureTable)
        }
        entities = {
            e.name: e for e in self.registry.list(project, KIND_ENTITY) if isinstance(e, Entity)
        }
        return _ProjectDefs(tables=tables, entities=entities)

    def _load_job_freshness(
        self, projects: Mapping[str, _ProjectDefs]
    ) -> dict[tuple[str, str], int]:
        newest: dict[tuple[str, str], int] = {}
        for project in projects:
            for record in self.registry.list_jobs(project):
                table = record.body.get(JOB_TABLE_KEY)
                us = record.body.get(JOB_MAX_EVENT_KEY)
                if isinstance(table, str) and isinstance(us, int):
                    key = (project, table)
                    newest[key] = max(us, newest.get(key, -1))
        return newest

    def _refresh_in_background(self) -> None:
        if not self._lock.acquire(blocking=False):
            return
        self._next_refresh = time.monotonic() + self.refresh_interval
        self._lock.release()
        threading.Thread(target=self._refresh_quietly, daemon=True).start()

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except Exception:  # the next interval retries; requests keep the cached definitions
            logger.warning("refreshing definitions failed; serving cached ones", exc_info=True)

    # ---- freshness -----------------------------------------------------------------------------

    def freshness(self, now_us: int | None = None) -> dict[tuple[str, str], float]:
        """Return seconds since the newest event time known written, per (project, table).

        The newest event time is the greatest of what ingestion job records report having
        written (read at each refresh) and what reads have returned. Tables with neither are
        left out. An event time after now (clock skew) counts as 0 seconds, never less. Like a
        read, a call starts a background refresh when one is due (or none has run yet), so
        the job records reach the gauge within a refresh interval without any read.
        """
        if not self._defs or time.monotonic() >= self._next_refresh:
            self._refresh_in_background()
        now = time.time_ns() // 1_000 if now_us is None else now_us
        return {key: max(0.0, (now - us) / 1e6) for key, us in list(self._newest_event_us.items())}


def entity_columns(
    rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
) -> dict[str, Sequence[Any]]:
    """Return entity rows as columns: ``[{"a": 1}, {"a": 2}]`` gives ``{"a": [1, 2]}``.

    Columns (a mapping of sequences) pass through.

    Raises:
        ValidationError: If a row is not a mapping or has other keys than the first row.
    """
    if isinstance(rows, Mapping):
        for name, column in rows.items():
            if isinstance(column, (str, bytes)) or not isinstance(column, Sequence):
                raise ValidationError(
                    f"entity column {name!r} must be a list of values, got {column!r}",
                    field="entities",
                    entity=name,
                )
        return dict(rows)
    if isinstance(rows, (str, bytes)) or not isinstance(rows, Sequence) or not rows:
        raise ValidationError(
            f"entity_rows must be a non-empty list of mappings such as {{'driver_id': 1001}}, "
            f"got {rows!r}",
            field="entity_rows",
        )
    first = rows[0]
    if len(rows) == 1 and isinstance(first, Mapping):
        return {name: [value] for name, value in first.items()}
    names = list(first) if isinstance(first, Mapping) else []
    keys = first.keys() if isinstance(first, Mapping) else None
    width = len(names)
    for index, row in enumerate(rows):
        # dict rows with the first row's keys are the norm: check them without the ABC machinery
        if not (type(row) is dict and len(row) == width and row.keys() == keys) and (
            not isinstance(row, Mapping) or row.keys() != keys
        ):
            raise ValidationError(
                f"entity row {index} must be a mapping with the keys of row 0 "
                f"({', '.join(names)}), got {row!r}",
                field="entity_rows",
                row=index,
            )
    return {name: [row[name] for row in rows] for name in names}


__all__ = [
    "DEFAULT_MAX_ENTITIES",
    "DEFAULT_REFRESH_INTERVAL",
    "ReadPlan",
    "ServingService",
    "TableRead",
    "entity_columns",
]
