"""The Client facade: turns Settings into a registry, stores and engines, and delegates.

Every method checks its arguments and hands the work to one stage. No stage imports this module.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from potluck._kafka_properties import merged_properties
from potluck.config import CONFIG_FILE_NAME, Settings, load_settings
from potluck.definitions import Entity, FeatureTable
from potluck.definitions._checks import check_name
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, Definition
from potluck.definitions.sources import resolve_source_path
from potluck.errors import NotFoundError, PermissionDeniedError, ValidationError
from potluck.registry.base import (
    AllowedLocation,
    AuditEntry,
    Change,
    Project,
    Registry,
    Revision,
    Schedule,
)

if TYPE_CHECKING:
    from datetime import datetime, timedelta

    from potluck.ingestion.engines.base import Engine, IngestionJob
    from potluck.ingestion.ingest import IngestionReport, ProgressCallback
    from potluck.ingestion.jobs import Job
    from potluck.ingestion.stream.publish import PublishReport
    from potluck.jobservice.remote import RemoteJobService
    from potluck.offline.base import OfflineStore
    from potluck.offline.commits import GarbageReport
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
        from potluck.auth.credentials import client_security
        from potluck.registry.remote import RemoteRegistry

        return RemoteRegistry(settings.core_url, security=client_security(settings, "core"))
    from potluck.registry.isolation import DataIsolation
    from potluck.registry.sql import SqlRegistry

    return SqlRegistry(settings.registry_url, isolation=DataIsolation.from_settings(settings))


_EMPTY_REGISTRY = "sqlite:///:memory:"
"""What a preview (``apply(..., dry_run=True)``) plans against while no registry file exists."""


def _apply_denied(error: PermissionDeniedError, project: str) -> PermissionDeniedError:
    """Say that an apply was refused, when it was its read of the stored definitions."""
    if error.attrs().get("permission") != "read_definitions":
        return error
    return PermissionDeniedError(
        f"{error.message}: applying to project {project!r} reads its definitions first, so it "
        "needs the 'apply' and 'read_definitions' permissions there",
        **error.attrs(),
    )


def _missing_registry_file(settings: Settings) -> Path | None:
    """Return the registry's SQLite file if the settings name one that does not exist yet."""
    path = settings.registry_file
    return path if path is not None and not path.exists() else None


def _raises_max_age(old: timedelta | None, new: timedelta | None) -> bool:
    """Whether a table's ``max_age`` going from ``old`` to ``new`` lets values live longer."""
    return old is not None and (new is None or new > old)


def _with_absolute_source(obj: Definition, root: str | Path) -> Definition:
    """Return ``obj`` with its batch source path resolved against ``root`` (a table), or as is."""
    if not isinstance(obj, FeatureTable) or obj.batch_source is None:
        return obj
    path = resolve_source_path(obj.batch_source.path, root)
    if path == obj.batch_source.path:
        return obj
    return dataclasses.replace(obj, batch_source=dataclasses.replace(obj.batch_source, path=path))


class Client:
    """The potluck SDK.

    Nothing is written until a call that writes: ``apply`` (not a dry run) and
    ``create_project`` create the registry (and ``.potluck/``). While the registry's SQLite file
    does not exist, every other call that needs the registry (reads, ingestion, jobs) raises
    :class:`~potluck.errors.NotFoundError`, as the ``potluck`` command does: outside any project
    folder "no potluck project found", in one "project ... does not exist" (nothing was applied
    yet); ``list_projects`` in a project folder is then ``[]``.

    Args:
        config_path: A ``potluck.yaml``; defaults to ``$POTLUCK_CONFIG``, else the nearest
            ``potluck.yaml`` in the working folder or its parents, else embedded defaults
            (everything in local files under ``.potluck/`` of the working folder).
        core_url: ``host:port`` of a Core service; overrides the config.
        serving_url: ``host:port`` of an Online Serving gRPC endpoint; overrides the config.
        job_service_url: ``host:port`` of a Job Service; overrides the config. When set, jobs,
            schedules and training sets go through it (see ``docs/jobservice.md``).
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
        job_service_url: str | None = None,
        project: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            overrides = {
                "core_url": core_url,
                "serving_url": serving_url,
                "job_service_url": job_service_url,
                "project": project,
            }
            settings = load_settings(config_path, overrides=overrides)
        self.settings = settings
        self._project = check_name(settings.project, "project")
        self._opened_registry: Registry | None = None
        if _missing_registry_file(settings) is None:
            self._opened_registry = open_registry(settings)
        self._online_store: OnlineStore | None = None
        self._offline_store: OfflineStore | None = None
        self._engine: Engine | None = None
        self._readers: dict[str, ServingService | RemoteServing] = {}
        self._jobs: dict[str, IngestionJob] = {}
        self._remote_jobs: RemoteJobService | None = None

    # ---- the registry: opened when it exists, created only by a call that writes ----------------

    @property
    def _registry(self) -> Registry:
        """The registry, to read; opened once its SQLite file exists (it never creates it).

        Raises:
            NotFoundError: While the registry's SQLite file does not exist (see the class).
        """
        if self._opened_registry is None:
            missing = _missing_registry_file(self.settings)
            if missing is not None:
                raise self._nothing_applied(missing)
            self._opened_registry = open_registry(self.settings)
        return self._opened_registry

    def _writable_registry(self) -> Registry:
        """The registry, for a call that writes: its SQLite file (and folder) created if missing."""
        if self._opened_registry is None:
            self._opened_registry = open_registry(self.settings)
        return self._opened_registry

    def _nothing_applied(self, registry_file: Path) -> NotFoundError:
        """The error of a read before anything was applied (the registry file is missing)."""
        if self.settings.config_file is None:
            return NotFoundError(
                f"no potluck project found: no {CONFIG_FILE_NAME} in {Path.cwd()} or its "
                f"parents, and no registry at {registry_file}; apply definitions to start one "
                "here (Client.apply), run `potluck init`, or work in a project folder",
                kind="project",
            )
        return NotFoundError(
            f"project {self._project!r} does not exist (nothing was applied yet: no registry at "
            f"{registry_file}); apply definitions to create it",
            kind="project",
            name=self._project,
        )

    # ---- projects ------------------------------------------------------------------------------

    @property
    def project(self) -> str:
        """The project this client works in."""
        return self._project

    def set_project(self, name: str) -> None:
        """Work in project ``name`` from now on (it is created on the first apply)."""
        self._project = check_name(name, "project")

    def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        """Return the projects, sorted by name (none in a project folder before the first apply).

        Raises:
            NotFoundError: Outside any project folder, if no registry exists (see the class).
        """
        missing = _missing_registry_file(self.settings)
        if self._opened_registry is None and missing is not None:
            if self.settings.config_file is None:
                raise self._nothing_applied(missing)
            return []
        return self._registry.list_projects(include_archived=include_archived)

    def create_project(self, name: str) -> Project:
        """Create project ``name`` (and the registry, if it does not exist yet)."""
        return self._writable_registry().create_project(check_name(name, "project"))

    def archive_project(self, name: str) -> Project:
        """Archive project ``name``: its definitions stay readable, applies are refused."""
        return self._registry.archive_project(name)

    def restore_project(self, name: str) -> Project:
        """Restore archived project ``name``: applies to it are accepted again (an admin's task).

        Raises:
            NotFoundError: If it does not exist.
        """
        return self._registry.restore_project(name)

    def allow_location(self, project: str, location: str) -> AllowedLocation:
        """Allow ``project``'s tables to name ``location`` outside its data roots (an admin's task).

        Args:
            project: An existing project.
            location: An absolute folder, a URL prefix such as ``s3://bucket/shared``, or
                ``kafka:PREFIX`` for topics.

        Raises:
            NotFoundError: If the project does not exist.
            ValidationError: If the location is empty, relative, ``/``, or a URL naming no
                bucket (:func:`potluck.registry.isolation.normalize_location`).
        """
        from potluck.registry.isolation import normalize_location

        resolved = normalize_location(location)
        return self._registry.allow_location(check_name(project, "project"), resolved)

    def data_roots(self, project: str | None = None) -> tuple[str, ...]:
        """Return the roots the registry holds ``project``'s sources to (default: this client's).

        Folders and URL prefixes, then topic prefixes as ``kafka:PREFIX``; through a Core
        service, the ones it enforces. Empty when project data isolation is off.
        """
        return self._registry.data_roots(project or self._project)

    def list_allowed_locations(self, project: str | None = None) -> list[AllowedLocation]:
        """Return the locations allowed for ``project`` (default: this client's), by location."""
        return self._registry.list_allowed_locations(project or self._project)

    def audit_log(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Return the registry's audit log, newest first (``potluck audit``).

        Args:
            project: Only this project's entries (default: every project).
            since: Only entries at or after this time (naive means UTC).
            limit: At most this many entries, 1 to 10,000.

        Raises:
            ValidationError: If ``limit`` is out of range.
        """
        return self._registry.audit_log(project=project, since=since, limit=limit)

    # ---- definitions ---------------------------------------------------------------------------

    def apply(
        self,
        objects: Definition | Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
        root: str | Path | None = None,
    ) -> list[Change]:
        """Apply entities and feature tables in one transaction; return what changed.

        Each table's batch source path is resolved here, once, and stored absolute (URLs as
        given), so every client of the registry, local or through Core, reads the same folder;
        see :func:`potluck.definitions.sources.resolve_source_path`. Applying the same
        definitions from the same root again changes nothing.

        Values in the online store follow the new definitions: before a table whose
        ``max_age`` is raised or removed is stored, the online store extends the expiry of its
        live values (:meth:`OnlineStore.extend_expiry`), and this client's own online reads
        use the new definitions at once. Changes stored values cannot follow are ``warning:``
        lines in the changes' details (``docs/serving.md``).

        Args:
            objects: One definition or a list of them, in any order.
            force: Allow changing a table's entities or a feature's type.
            dry_run: Return the plan without writing (``potluck plan``).
            root: The folder relative batch source paths are relative to. Default: the project
                root, ``settings.root`` (the folder of ``potluck.yaml``, else the working folder
                when the settings were read).

        Raises:
            DefinitionError: If a table references an unknown entity, or its batch source is a
                ``file://`` URL of another host.
            IncompatibleChangeError: If a change needs ``force=True``.
            ConflictError: If a table read earlier was changed by someone else since.
            UnavailableError: If ``max_age`` is raised and the online store cannot be reached
                (nothing is applied).
        """
        items = [objects] if isinstance(objects, (Entity, FeatureTable)) else list(objects)
        for item in items:
            if not isinstance(item, (Entity, FeatureTable)):
                raise ValidationError(
                    f"apply takes Entity and FeatureTable objects, got {type(item).__name__}"
                )
        folder = self.settings.root if root is None else root
        resolved = [_with_absolute_source(item, folder) for item in items]
        if dry_run and self._opened_registry is None and _missing_registry_file(self.settings):
            return self._preview(resolved, force=force)
        registry = self._writable_registry() if not dry_run else self._registry
        if not dry_run:
            try:
                self._follow_max_age(resolved, force=force)
            except PermissionDeniedError as exc:
                raise _apply_denied(exc, self._project) from None
        changes = registry.apply(self._project, resolved, force=force, dry_run=dry_run)
        if not dry_run:
            self._refresh_readers()
            self._provision_sources([t for t in resolved if isinstance(t, FeatureTable)])
        return changes

    def _preview(self, objects: Sequence[Definition], *, force: bool) -> list[Change]:
        """Plan ``objects`` against an empty registry in memory: nothing is created."""
        from potluck.registry.isolation import DataIsolation
        from potluck.registry.sql import SqlRegistry

        empty = SqlRegistry(_EMPTY_REGISTRY, isolation=DataIsolation.from_settings(self.settings))
        try:
            return empty.apply(self._project, list(objects), force=force, dry_run=True)
        finally:
            empty.close()

    def _follow_max_age(self, objects: Sequence[Definition], *, force: bool) -> None:
        """Extend online expiry for the tables whose ``max_age`` this apply raises or removes.

        It runs after a dry run has checked that the apply goes through and before the new
        definitions are stored, so no value expires in between (extending early is harmless:
        reads still judge age by the stored definition). An unreachable online store fails the
        apply with nothing changed.
        """
        stored = {t.name: t.max_age for t in self.list_feature_tables()}
        raised = [
            t
            for t in objects
            if isinstance(t, FeatureTable)
            and t.name in stored
            and _raises_max_age(stored[t.name], t.max_age)
        ]
        if not raised:
            return
        self._registry.apply(self._project, list(objects), force=force, dry_run=True)
        store = self._online()
        for table in raised:
            store.extend_expiry(self._project, table)

    def _refresh_readers(self) -> None:
        """Make this client's own online reads use the definitions just applied."""
        from potluck.serving.service import ServingService

        for reader in self._readers.values():
            if isinstance(reader, ServingService):
                reader.refresh()

    def _provision_sources(self, tables: list[FeatureTable]) -> None:
        """Create each applied table's batch source when nothing is at its location yet."""
        from potluck.ingestion.ingest import provision_source

        for table in tables:
            if table.batch_source is None:
                continue
            entities = {name: self.get_entity(name) for name in table.entities}
            provision_source(table, entities, root=self.settings.root)

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
            e
            for e in self._registry.list(self._project, KIND_ENTITY, labels)
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
            t
            for t in self._registry.list(self._project, KIND_FEATURE_TABLE, labels)
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
        self,
        feature_refs: Sequence[str],
        entity_source: InputData,
        *,
        versions: Mapping[str, int] | None = None,
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
            versions: The batch-source version to read per table name; by default each
                table's latest, pinned now. A job's ``source_versions`` given back here
                rebuilds the same training set later. Not with ``job_service_url``.

        Returns:
            A job: ``to_arrow()``, ``to_pandas()`` or ``to_parquet(path)`` runs the join;
            ``source_versions`` names the version of each table it reads. With
            ``job_service_url`` the Job Service builds the training set at once and the job
            reads it back when it is done (see :mod:`potluck.jobservice.staging`);
            ``source_versions`` is then empty.

        Raises:
            FeatureRefError: If a reference is malformed or names an unknown table or feature.
            DataValidationError: If the entity rows lack a column or hold a bad value.
            ValidationError: With ``job_service_url``: if ``staging_location`` is not set, or
                ``versions`` is given.
            JobError: With ``job_service_url``, when read: if the Job Service's job failed.
        """
        from potluck.offline.pit import resolve_refs

        remote = self._job_service()
        if remote is not None:
            from potluck.jobservice.staging import remote_historical_features

            if versions:
                raise ValidationError(
                    "versions cannot be given for a training set built through the Job Service "
                    "(job_service_url is set): it reads each table's latest version; drop "
                    "versions, or unset job_service_url to pin them here",
                    field="versions",
                )
            return remote_historical_features(
                remote,
                self._project,
                feature_refs,
                entity_source,
                staging_location=self.settings.staging_location,
                root=self.settings.root,
            )
        registry = self._registry
        requests = resolve_refs(
            feature_refs,
            self._project,
            lambda project, name: cast(
                FeatureTable, registry.get(project, KIND_FEATURE_TABLE, name)
            ),
            lambda project, name: cast(Entity, registry.get(project, KIND_ENTITY, name)),
        )
        return self._offline().get_historical_features(entity_source, requests, versions=versions)

    def collect_garbage(
        self,
        tables: Sequence[str] | None = None,
        *,
        grace: timedelta | None = None,
        dry_run: bool = False,
    ) -> list[GarbageReport]:
        """Delete what ingestions that died before committing left in batch sources.

        Files of an ingestion known dead (its lock is free: local folders) go at once; other
        uncommitted potluck files older than ``grace`` go too (object stores, older
        versions). Committed files and files of other tools are never touched; every
        ``ingest()`` already does the first part for its own table.

        Args:
            tables: Feature table names; default: every table of the project with a batch
                source.
            grace: How old an uncommitted file with no live owner must be to go; default
                :data:`potluck.offline.commits.DEFAULT_GRACE` (6 hours).
            dry_run: Report what would go without deleting.

        Returns:
            One report per table, in order.

        Raises:
            NotFoundError: If a table does not exist.
        """
        from potluck.offline.commits import DEFAULT_GRACE, collect_garbage
        from potluck.offline.files import resolve_path

        chosen = (
            [self.get_feature_table(name) for name in tables]
            if tables
            else self.list_feature_tables()
        )
        return [
            collect_garbage(
                resolve_path(table.batch_source.path, self.settings.root),
                grace=DEFAULT_GRACE if grace is None else grace,
                dry_run=dry_run,
            )
            for table in chosen
            if table.batch_source is not None
        ]

    # ---- online: ingestion jobs and reads ------------------------------------------------------

    def start_offline_to_online_ingestion(
        self,
        table: FeatureTable | str,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        since_last: bool = False,
        full: bool = False,
    ) -> IngestionJob:
        """Start copying the latest row per key of ``table``'s batch source to the online store.

        The job runs on the configured engine and returns at once; ``job.wait()`` blocks until
        it ends, ``job.status`` and ``job.stats`` follow it. With ``job_service_url`` it runs in
        the Job Service, and the handle follows it there.

        Args:
            table: The feature table or its name.
            start: Copy rows with event time ``>= start`` (naive means UTC; ``None``: no bound).
            end: Copy rows with event time ``< end`` (``None``: no bound).
            since_last: Copy every row committed to the batch source since the version the
                previous successful ``since_last`` jobs of this table read up to (all rows the
                first time), so late rows and slow ingestions are picked up. Not with ``start``,
                ``end`` or ``full``.
            full: Reload (``ingest-online --full``): rewrite stored values even when the rows
                read are not newer, so values stored under an older definition (a type change,
                a raised ``max_age``) follow the current one; a strictly newer stored value
                still wins. Not with ``since_last``.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If the range is empty, the table has no batch source, or
                ``since_last`` is combined with a range or ``full``.
        """
        from potluck.ingestion.engines.base import JobContext
        from potluck.ingestion.jobs import JobSpec

        name = table.name if isinstance(table, FeatureTable) else table
        remote = self._job_service()
        if remote is not None:
            from potluck.jobservice.remote import RemoteJob

            started = remote.start_offline_to_online(
                self._project, name, start=start, end=end, since_last=since_last, full=full
            )
            return RemoteJob(remote, started)
        spec = JobSpec(
            project=self._project,
            table=name,
            start=start,
            end=end,
            since_last=since_last,
            full=full,
        )
        context = JobContext(self._registry, self._offline(), self._online())
        job = self._job_engine().submit(spec, context)
        self._jobs[job.id] = job
        return job

    def start_stream_to_online_ingestion(
        self,
        table: FeatureTable | str,
        *,
        group_id: str | None = None,
        batch_size: int | None = None,
        batch_interval: float | None = None,
        kafka_config: Mapping[str, str] | None = None,
    ) -> IngestionJob:
        """Start consuming ``table``'s stream source into the online store; return the job.

        The job runs on the configured engine until it is stopped (``job.cancel()``,
        ``potluck jobs cancel``) and then ends ``CANCELLED``. It reads the topic in
        micro-batches, writes each with newer-wins (and appends it to the batch source when the
        source has ``offline_sink``), and commits the offsets only after that, so a restart
        resumes where it stopped and each key ends at its newest value. Bad messages are
        counted per reason in the job's record (and sent to the source's dead-letter topic);
        brokers or stores it cannot reach are retried, and reported in the record's
        ``warning``. Jobs of one ``group_id``, in any processes, share the topic's partitions.
        The job has its own connections to the registry and the online store, so it outlives
        :meth:`close`; stop it (``job.cancel(); job.wait()``) to end it. With
        ``job_service_url`` it runs in the Job Service (with that service's settings, so the
        options below cannot be given), and the handle follows it there.

        Args:
            table: The feature table or its name; it needs a stream source.
            group_id: The Kafka consumer group (default ``potluck.<project>.<table>``).
            batch_size: The most messages in one micro-batch (default 65,536).
            batch_interval: Seconds a micro-batch gathers messages once it has a first one
                (default 0.02).
            kafka_config: librdkafka properties over potluck's and the ``kafka`` settings
                (security settings, ``session.timeout.ms`` ...); not recorded.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If it has no stream source, or a setting is out of range, or an
                option is given with ``job_service_url``.
            DefinitionError: If its protobuf message class cannot be imported.
        """
        from potluck.ingestion.engines.base import JobContext
        from potluck.ingestion.jobs import STREAM_TO_ONLINE, JobSpec

        name = table.name if isinstance(table, FeatureTable) else table
        remote = self._job_service()
        if remote is not None:
            from potluck.jobservice.remote import RemoteJob

            given = {
                "group_id": group_id,
                "batch_size": batch_size,
                "batch_interval": batch_interval,
                "kafka_config": kafka_config or None,
            }
            for option, value in given.items():
                if value is not None:
                    raise ValidationError(
                        f"{option} cannot be given for a stream job started through the Job "
                        "Service (job_service_url is set): the job runs with the Job Service's "
                        f"settings; drop {option}, or unset job_service_url to run the job here",
                        field=option,
                    )
            return RemoteJob(remote, remote.start_stream_to_online(self._project, name))
        from potluck.ingestion.stream.brokers import default_group_id

        options = merged_properties(self.settings.kafka, kafka_config)
        group = default_group_id(self._project, name) if group_id is None else group_id
        spec = JobSpec(kind=STREAM_TO_ONLINE, project=self._project, table=name, group_id=group)
        if batch_size is not None or batch_interval is not None:
            spec = dataclasses.replace(
                spec,
                batch_size=spec.batch_size if batch_size is None else batch_size,
                batch_interval=spec.batch_interval if batch_interval is None else batch_interval,
            )
        store = self._online()
        context = JobContext(
            open_registry(self.settings),  # the job's own: it closes them when it ends
            self._offline(),
            type(store)(store.config),
            options,
        )
        return self._job_engine().submit(spec, context)

    def publish(
        self,
        table: FeatureTable | str,
        data: InputData,
        *,
        kafka_config: Mapping[str, str] | None = None,
    ) -> PublishReport:
        """Write rows to ``table``'s stream source (its Kafka topic), in the source's format.

        The frame is validated exactly as :meth:`ingest` validates it, under the stream
        source's column names, before anything is sent: a bad frame publishes nothing. Each row
        is one message keyed by its canonical entity key (one key stays in one partition), and
        all are sent in one Kafka transaction.

        Args:
            table: The feature table or its name; it needs a stream source.
            data: A pandas DataFrame, a pyarrow Table, or a ``.parquet``/``.csv`` path or URL.
            kafka_config: librdkafka properties over potluck's producer settings and the
                ``kafka`` settings.

        Returns:
            The table, topic and number of messages sent.

        Raises:
            NotFoundError: If the table or one of its entities does not exist.
            ValidationError: If it has no stream source or its topic does not exist.
            DataValidationError: If a row does not fit; ``column`` and ``row`` name the first.
            UnavailableError: If the brokers cannot be reached (nothing becomes visible).
        """
        from potluck.ingestion.stream.batch import StreamTable
        from potluck.ingestion.stream.publish import publish

        options = merged_properties(self.settings.kafka, kafka_config)
        resolved = table if isinstance(table, FeatureTable) else self.get_feature_table(table)
        entities = {name: self.get_entity(name) for name in resolved.entities}
        types = {name: entity.value_type for name, entity in entities.items()}
        stream = StreamTable(self._project, resolved, types)
        return publish(stream, entities, data, kafka_config=options)

    def list_jobs(self, table: str | None = None) -> list[Job]:
        """Return the project's jobs (records), newest first (through the Job Service if set).

        Args:
            table: Only this feature table's jobs.

        Raises:
            NotFoundError: If ``table`` has no jobs and is no feature table of the project (a
                typo never reads as "no jobs").
        """
        from potluck.ingestion.jobs import list_jobs

        remote = self._job_service()
        if remote is not None:
            return remote.list_jobs(self._project, table=table)
        jobs = list_jobs(self._registry, self._project, table=table)
        if table is not None and not jobs:
            self.get_feature_table(table)
        return jobs

    def get_job(self, job_id: str) -> IngestionJob:
        """Return a handle on job ``job_id`` (live if this client started it).

        With ``job_service_url`` the handle reads and cancels the job through the Job Service.

        Raises:
            NotFoundError: If there is no such job in the project.
        """
        from potluck.ingestion.engines.base import RecordedJob

        live = self._jobs.get(job_id)
        if live is not None:
            return live
        remote = self._job_service()
        if remote is not None:
            from potluck.jobservice.remote import RemoteJob

            return RemoteJob(remote, remote.get_job(self._project, job_id))
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

    def schedule_offline_to_online_ingestion(
        self, table: FeatureTable | str, cron: str, look_back: timedelta
    ) -> Schedule:
        """Have the Job Service load ``[tick - look_back, tick)`` online at each tick of ``cron``.

        Goes through the Job Service when ``job_service_url`` is set, else writes the schedule
        to the registry directly; either way only a running Job Service runs it. Setting a
        table's schedule again replaces it.

        Args:
            table: The feature table or its name; it needs a batch source.
            cron: A cron expression (UTC): 5 fields ``minute hour day month weekday``, or 6
                with seconds last.
            look_back: The span each tick's job loads, positive.

        Returns:
            The schedule as stored.

        Raises:
            NotFoundError: If the table does not exist.
            ValidationError: If ``cron`` or ``look_back`` is invalid, the table has no batch
                source, or the registry keeps no schedules (``core_url``).
        """
        from potluck.ingestion.jobs import utc_now
        from potluck.jobservice.scheduler import new_schedule

        name = table.name if isinstance(table, FeatureTable) else table
        remote = self._job_service()
        if remote is not None:
            return remote.schedule_offline_to_online(self._project, name, cron, look_back)
        registry = self._registry
        schedule = new_schedule(registry, self._project, name, cron, look_back, utc_now())
        return registry.put_schedule(schedule)

    def unschedule_offline_to_online_ingestion(self, table: FeatureTable | str) -> None:
        """Remove ``table``'s schedule (through the Job Service when ``job_service_url`` is set).

        Raises:
            NotFoundError: If the table has no schedule.
        """
        name = table.name if isinstance(table, FeatureTable) else table
        remote = self._job_service()
        if remote is not None:
            remote.unschedule(self._project, name)
            return
        self._registry.delete_schedule(self._project, name)

    def list_schedules(self) -> list[Schedule]:
        """Return the project's schedules by table (through the Job Service if it is set)."""
        remote = self._job_service()
        if remote is not None:
            return remote.list_schedules(self._project)
        return self._registry.list_schedules(self._project)

    def purge_online(self, table: FeatureTable | str) -> int:
        """Delete every value of ``table`` from the online store (``potluck online purge``).

        The table's definition and its batch source are left alone; a later
        ``start_offline_to_online_ingestion`` loads it again.

        Args:
            table: The feature table or its name in the current project.

        Returns:
            How many values were removed that a read would have returned.

        Raises:
            NotFoundError: If the table does not exist.
            UnavailableError: If the online store cannot be reached.
        """
        resolved = table if isinstance(table, FeatureTable) else self.get_feature_table(table)
        return self._online().drop_table(self._project, resolved)

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
            from potluck.auth.credentials import client_security
            from potluck.serving.remote import RemoteServing

            reader = RemoteServing(
                self.settings.serving_url,
                project=self._project,
                security=client_security(self.settings, "serving"),
            )
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

    def _job_service(self) -> RemoteJobService | None:
        """The Job Service client when ``job_service_url`` is set, else ``None``."""
        if self._remote_jobs is None and self.settings.job_service_url:
            from potluck.auth.credentials import client_security
            from potluck.jobservice.remote import RemoteJobService

            self._remote_jobs = RemoteJobService(
                self.settings.job_service_url,
                security=client_security(self.settings, "job_service"),
            )
        return self._remote_jobs

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
        if self._remote_jobs is not None:
            self._remote_jobs.close()
        if self._online_store is not None:
            self._online_store.close()
        if self._offline_store is not None:
            self._offline_store.close()
        if self._opened_registry is not None:
            self._opened_registry.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
