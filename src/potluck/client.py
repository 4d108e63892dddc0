"""The Client facade: turns Settings into a registry, stores and engines, and delegates.

Every method checks its arguments and hands the work to one stage. No stage imports this module.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from potluck.config import Settings, load_settings
from potluck.definitions import Entity, FeatureTable
from potluck.definitions._checks import check_name
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, Definition
from potluck.errors import ValidationError
from potluck.registry.base import Change, Project, Registry, Revision

if TYPE_CHECKING:
    from datetime import datetime

    from potluck.ingestion.engines.base import Engine, IngestionJob
    from potluck.ingestion.ingest import IngestionReport, ProgressCallback
    from potluck.ingestion.jobs import Job
    from potluck.offline.base import OfflineStore
    from potluck.offline.inputs import InputData
    from potluck.offline.retrieval import RetrievalJob
    from potluck.online.base import OnlineStore
    from potluck.serving.remote import RemoteServing
    from potluck.serving.response import OnlineResponse
    from potluck.serving.service import ServingService


def open_registry(settings: Settings) -> Registry:
    """Return the registry the settings name.

    That is the Core service if ``core_url`` is set, else the SQL registry at ``registry``.
    """
    if settings.core_url:
        from potluck.registry.remote import RemoteRegistry

        return RemoteRegistry(settings.core_url)
    from potluck.registry.sql import SqlRegistry

    return SqlRegistry(settings.registry_url)


class Client:
    """The potluck SDK.

    Args:
        config_path: A ``potluck.yaml``; defaults to ``$POTLUCK_CONFIG`` or ``./potluck.yaml``,
            else embedded defaults (everything in local files under ``.potluck/``).
        core_url: ``host:port`` of a Core service; overrides the config.
        serving_url: ``host:port`` of an Online Serving gRPC endpoint; overrides the config.
        project: The project to work in; overrides the config.
        settings: Fully resolved settings; when given, the other arguments must be ``None``.

    Raises:
        ConfigError: If the settings are invalid.
        UnavailableError: If ``core_url`` cannot be reached.

    Example:
        >>> client = Client()
        >>> client.apply([driver, driver_stats])
    """

    def __init__(
        self,
        config_path: str | Path | None = None,
        *,
        core_url: str | None = None,
        serving_url: str | None = None,
        project: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            overrides = {"core_url": core_url, "serving_url": serving_url, "project": project}
            settings = load_settings(config_path, overrides=overrides)
        self.settings = settings
        self._project = check_name(settings.project, "project")
        self._registry: Registry = open_registry(settings)
        self._online_store: OnlineStore | None = None
        self._offline_store: OfflineStore | None = None
        self._engine: Engine | None = None
        self._readers: dict[str, ServingService | RemoteServing] = {}
        self._jobs: dict[str, IngestionJob] = {}

    # ---- projects ------------------------------------------------------------------------------

    @property
    def project(self) -> str:
        """The project this client works in."""
        return self._project

    def set_project(self, name: str) -> None:
        """Work in project ``name`` from now on (it is created on the first apply)."""
        self._project = check_name(name, "project")

    def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        """Return the projects, sorted by name."""
        return self._registry.list_projects(include_archived=include_archived)

    def create_project(self, name: str) -> Project:
        """Create project ``name``."""
        return self._registry.create_project(check_name(name, "project"))

    def archive_project(self, name: str) -> Project:
        """Archive project ``name``: its definitions stay readable, applies are refused."""
        return self._registry.archive_project(name)

    # ---- definitions ---------------------------------------------------------------------------

    def apply(
        self,
        objects: Definition | Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> list[Change]:
        """Apply entities and feature tables in one transaction; return what changed.

        Args:
            objects: One definition or a list of them, in any order.
            force: Allow changing a table's entities or a feature's type.
            dry_run: Return the plan without writing (``potluck plan``).

        Raises:
            DefinitionError: If a table references an unknown entity.
            IncompatibleChangeError: If a change needs ``force=True``.
            ConflictError: If a table read earlier was changed by someone else since.
        """
        items = [objects] if isinstance(objects, (Entity, FeatureTable)) else list(objects)
        for item in items:
            if not isinstance(item, (Entity, FeatureTable)):
                raise ValidationError(
                    f"apply takes Entity and FeatureTable objects, got {type(item).__name__}"
                )
        return self._registry.apply(self._project, items, force=force, dry_run=dry_run)

    def apply_entity(self, entity: Entity) -> list[Change]:
        """Apply one entity."""
        return self.apply([entity])

    def apply_feature_table(self, table: FeatureTable, *, force: bool = False) -> list[Change]:
        """Apply one feature table."""
        return self.apply([table], force=force)

    def get_entity(self, name: str) -> Entity:
        """Return entity ``name``.

        Raises:
            NotFoundError: If it does not exist in the current project.
        """
        return cast(Entity, self._registry.get(self._project, KIND_ENTITY, name))

    def list_entities(self, labels: Mapping[str, str] | None = None) -> list[Entity]:
        """Return the project's entities whose labels include ``labels``, sorted by name."""
        return [
            e for e in self._registry.list(self._project, KIND_ENTITY, labels)
            if isinstance(e, Entity)
        ]

    def get_feature_table(self, name: str) -> FeatureTable:
        """Return feature table ``name`` (with its ``revision``).

        Raises:
            NotFoundError: If it does not exist in the current project.
        """
        return cast(FeatureTable, self._registry.get(self._project, KIND_FEATURE_TABLE, name))

    def list_feature_tables(self, labels: Mapping[str, str] | None = None) -> list[FeatureTable]:
        """Return the project's feature tables whose labels include ``labels``."""
        return [
            t for t in self._registry.list(self._project, KIND_FEATURE_TABLE, labels)
            if isinstance(t, FeatureTable)
        ]

    def feature_table_history(self, name: str) -> list[Revision]:
        """Return every stored revision of feature table ``name``, oldest first."""
        return self._registry.history(self._project, KIND_FEATURE_TABLE, name)

    def delete_feature_table(self, name: str) -> None:
        """Delete feature table ``name`` from the registry (its history is kept)."""
        self._registry.delete(self._project, KIND_FEATURE_TABLE, name)

    def delete_entity(self, name: str) -> None:
        """Delete entity ``name``; refused while a feature table uses it."""
        self._registry.delete(self._project, KIND_ENTITY, name)

    # ---- offline: batch ingestion and training sets --------------------------------------------

    def ingest(
        self,
        table: FeatureTable | str,
        data: InputData,
        *,
        progress: ProgressCallback | None = None,
    ) -> IngestionReport:
        """Validate rows against a feature table and append them to its batch source.

        The whole input is checked before anything becomes visible; a bad row writes nothing
        (see :func:`potluck.ingestion.ingest.ingest` for the exact rules).

        Args:
            table: The feature table, or its name in the current project.
            data: A pandas DataFrame, a pyarrow Table, or a ``.parquet``/``.csv`` path or URL,
                with the batch source's columns.
            progress: Called after each batch with rows done and the total (if known).

        Returns:
            Rows and files written, and the ingestion's id and time.

        Raises:
            NotFoundError: If the table or one of its entities does not exist.
            DataValidationError: If a row does not fit; ``column`` and ``row`` name the first.
        """
        from potluck.ingestion.ingest import ingest

        resolved = table if isinstance(table, FeatureTable) else self.get_feature_table(table)
        entities = {name: self.get_entity(name) for name in resolved.entities}
        return ingest(resolved, entities, data, root=self.settings.root, progress=progress)

    def get_historical_features(
        self, feature_refs: Sequence[str], entity_source: InputData
    ) -> RetrievalJob:
        """Build a point-in-time-correct training set.

        For each entity row and each table, the value is the one with the greatest event time
        at or before the row's ``event_timestamp`` (and no older than the table's ``max_age``),
        ties broken by the greatest created time; no such value gives nulls. Rows keep their
        order, duplicates included; the result has every input column, then ``table__feature``.

        Args:
            feature_refs: ``"table:feature"``, ``"project/table:feature"`` or ``"table:*"``.
            entity_source: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL
                with ``event_timestamp`` and a column per entity joined on.

        Returns:
            A job: ``to_arrow()``, ``to_pandas()`` or ``to_parquet(path)`` runs the join.

        Raises:
            FeatureRefError: If a reference is malformed or names an unknown table or feature.
            DataValidationError: If the entity rows lack a column or hold a bad value.
        """
        from potluck.offline.pit import resolve_refs

        requests = resolve_refs(
            feature_refs,
            self._project,
            lambda project, name: cast(
                FeatureTable, self._registry.get(project, KIND_FEATURE_TABLE, name)
            ),
            lambda project, name: cast(Entity, self._registry.get(project, KIND_ENTITY, name)),
        )
        return self._offline().get_historical_features(entity_source, requests)

    # ---- online: ingestion jobs and reads ------------------------------------------------------

    def start_offline_to_online_ingestion(
        self,
        table: FeatureTable | str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        since_last: bool = False,
    ) -> IngestionJob:
        """Start copying the latest row per key of ``table``'s batch source to the online store.

        The job runs on the configured engine and returns at once; ``job.wait()`` blocks until
        it ends, ``job.status`` and ``job.stats`` follow it.

        Args:
            table: The feature table or its name.
            start: Copy rows with event time ``>= start`` (naive means UTC; ``None``: no bound).
            end: Copy rows with event time ``< end`` (``None``: no bound).
            since_last: Copy only rows ingested after the rows the previous successful run of
                this table read, so late-arriving rows are picked up.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If the range is empty or the table has no batch source.
        """
        from potluck.ingestion.engines.base import JobContext
        from potluck.ingestion.jobs import JobSpec

        name = table.name if isinstance(table, FeatureTable) else table
        spec = JobSpec(
            project=self._project, table=name, start=start, end=end, since_last=since_last
        )
        context = JobContext(self._registry, self._offline(), self._online())
        job = self._job_engine().submit(spec, context)
        self._jobs[job.id] = job
        return job

    def list_jobs(self, table: str | None = None) -> list[Job]:
        """Return the project's ingestion jobs (records), newest first."""
        from potluck.ingestion.jobs import list_jobs

        return list_jobs(self._registry, self._project, table=table)

    def get_job(self, job_id: str) -> IngestionJob:
        """Return a handle on job ``job_id`` (live if this client started it).

        Raises:
            NotFoundError: If there is no such job in the project.
        """
        from potluck.ingestion.engines.base import RecordedJob

        live = self._jobs.get(job_id)
        if live is not None:
            return live
        job = RecordedJob(self._registry, self._project, job_id)
        job.record()
        return job

    def cancel_job(self, job_id: str) -> IngestionJob:
        """Ask job ``job_id`` to stop at its next batch; return its handle.

        Raises:
            NotFoundError: If there is no such job in the project.
        """
        job = self.get_job(job_id)
        job.cancel()
        return job

    def get_online_features(
        self,
        feature_refs: Sequence[str],
        entity_rows: Sequence[Mapping[str, Any]] | Mapping[str, Sequence[Any]],
        *,
        full_feature_names: bool = True,
    ) -> OnlineResponse:
        """Read the latest feature values for each entity row.

        Reads the online store directly, or through Online Serving when ``serving_url`` is set.

        Args:
            feature_refs: ``table:feature``, ``project/table:feature`` or ``table:*``.
            entity_rows: ``[{"driver_id": 1001}, ...]``, or columns ``{"driver_id": [1001]}``.
            full_feature_names: Name feature columns ``table__feature`` (else the bare name).

        Returns:
            The response: ``to_dict()`` gives values, ``statuses()`` their statuses.

        Raises:
            FeatureRefError: If a reference is malformed or unknown.
            ValidationError: If entity rows are malformed or a value has the wrong type.
            UnavailableError: If the store or the serving endpoint cannot be reached.
        """
        from potluck.serving.service import entity_columns

        reader = self._readers.get(self._project) or self._reader()
        return reader.get_online_features(
            feature_refs, entity_columns(entity_rows), full_feature_names=full_feature_names
        )

    def serving_service(
        self,
        *,
        refresh_interval: float | None = None,
        max_entities_per_request: int | None = None,
    ) -> ServingService:
        """Return a new ServingService over this client's registry and online store.

        ``potluck serve`` serves it. Arguments left ``None`` keep the service's defaults.
        """
        from potluck.serving.service import (
            DEFAULT_MAX_ENTITIES,
            DEFAULT_REFRESH_INTERVAL,
            ServingService,
        )

        interval = DEFAULT_REFRESH_INTERVAL if refresh_interval is None else refresh_interval
        limit = max_entities_per_request
        limit = DEFAULT_MAX_ENTITIES if limit is None else limit
        return ServingService(
            self._registry,
            self._online(),
            self._project,
            refresh_interval=interval,
            max_entities_per_request=limit,
        )

    def _reader(self) -> ServingService | RemoteServing:
        reader: ServingService | RemoteServing
        if self.settings.serving_url:
            from potluck.serving.remote import RemoteServing

            reader = RemoteServing(self.settings.serving_url, project=self._project)
        else:
            reader = self.serving_service()
        self._readers[self._project] = reader
        return reader

    def _online(self) -> OnlineStore:
        if self._online_store is None:
            from potluck import plugins

            raw = dict(self.settings.online_store)
            if raw.get("type") == "sqlite" and isinstance(raw.get("path"), str):
                raw["path"] = str(self.settings.resolve_path(raw["path"]))
            self._online_store = plugins.create(plugins.ONLINE_STORES, raw)
        return self._online_store

    def _offline(self) -> OfflineStore:
        if self._offline_store is None:
            from potluck import plugins

            self._offline_store = plugins.create(
                plugins.OFFLINE_STORES, self.settings.offline_store, root=self.settings.root
            )
        return self._offline_store

    def _job_engine(self) -> Engine:
        if self._engine is None:
            from potluck import plugins

            self._engine = plugins.create(plugins.ENGINES, self.settings.engine)
        return self._engine

    # ---- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Wait for the ingestion jobs this client started, then close connections."""
        from potluck.errors import JobError
        from potluck.serving.remote import RemoteServing

        for job in self._jobs.values():
            with contextlib.suppress(JobError):  # its record says it failed, and why
                job.wait()
        for reader in self._readers.values():
            if isinstance(reader, RemoteServing):
                reader.close()
        if self._online_store is not None:
            self._online_store.close()
        if self._offline_store is not None:
            self._offline_store.close()
        self._registry.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
