"""SparkEngine: ingestion jobs as Spark applications, launched with ``spark-submit``.

The client side resolves each job exactly as the local engine does: the table and its entity
types, the batch source's latest version (pinned), the ``--since-last`` watermark
(:func:`potluck.ingestion.jobs.watermark`), and the files to read at that version
(:func:`potluck.offline.commits.read_source`, less partition days outside the range and the
files of superseded rows, as the offline store's range reads select them). It writes each job's
record (``PENDING``, with ``source_id``, ``source_version``, ``since_version``, ``rows_total``, the
log location, and ``start_timeout`` as its heartbeat timeout until the driver takes it over and
sets ``heartbeat_timeout``), writes the job spec (:mod:`potluck.ingestion.spark_jobs.spec`),
and hands the application to a launcher (:mod:`potluck.ingestion.launchers`). From then on
the driver (:mod:`potluck.ingestion.spark_jobs.offline_to_online`) keeps the records; the
handles (:class:`SparkJob`) follow them (see :mod:`potluck.ingestion.engines._spark_follow`).

Several jobs can share one application (:meth:`SparkEngine.submit_many`), which saves the
session start (several seconds) per table.

A stream-to-online job gets an application of its own, a Structured Streaming query
(:mod:`potluck.ingestion.spark_jobs.stream_to_online`) whose checkpoint is
``<checkpoint_location>/<project>/<table>/<group>``; it runs alone in its table's consumer group
(:mod:`potluck.ingestion.stream.running`); its record and handle work as above.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import timedelta, timezone
from importlib.util import find_spec
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from potluck.config import PluginConfig
from potluck.definitions._checks import NAME_PATTERN
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import (
    ConfigError,
    PotluckError,
    UnavailableError,
    ValidationError,
)
from potluck.ingestion.engines._spark_follow import SparkApplicationJobs, SparkJob
from potluck.ingestion.engines.base import (
    Engine,
    JobContext,
    RecordedJob,
    positive_duration,
    resolve_table,
)
from potluck.ingestion.jobs import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    STREAM_TO_ONLINE,
    Job,
    JobSpec,
    JobStats,
    JobStatus,
    save_job,
    utc_now,
    watermark,
)
from potluck.ingestion.launchers.base import SparkApplication
from potluck.ingestion.launchers.standalone import StandaloneLauncher
from potluck.ingestion.offline_to_online import rows_to_read
from potluck.ingestion.spark_jobs.spec import (
    ApplicationSpec,
    RegistryAddress,
    StreamLoad,
    TableLoad,
    write_spec,
)
from potluck.ingestion.stream.batch import StreamTable
from potluck.ingestion.stream.running import checkpoint_folder, refuse_second_job
from potluck.offline.commits import read_source
from potluck.offline.files import filesystem_for, resolve_path, select_days, without_superseded
from potluck.offline.snapshots import batch_source_of, require_existing
from potluck.offline.spark.settings import MasterUrl, SparkSettings
from potluck.online.sqlite import SqliteOnlineStore
from potluck.registry.base import Registry
from potluck.registry.remote import RemoteRegistry
from potluck.registry.sql import SqlRegistry
from potluck.types import ValueType

_MEMORY_FORMS = ("512m", "2g", "1536m", "1t")


def _check_memory(value: str) -> str:
    number, unit = value[:-1], value[-1:].lower()
    if not (number.isdigit() and int(number) > 0 and unit in "kmgt"):
        raise ValueError(
            f"expected a whole number and a unit k, m, g or t, as Spark reads "
            f"spark.executor.memory ({', '.join(_MEMORY_FORMS)})"
        )
    return value


SparkMemory = Annotated[str, AfterValidator(_check_memory)]
"""Memory as Spark reads ``spark.executor.memory``: ``512m``, ``2g``."""


class SparkTableConfig(BaseModel):
    """Spark settings of one feature table's jobs; unset keys take the engine's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    executor_memory: SparkMemory | None = None
    """Memory per executor (``spark.executor.memory``), such as ``2g``."""
    executor_cores: int | None = Field(default=None, ge=1)
    """Cores per executor (``spark.executor.cores``)."""
    partitions: int | None = Field(default=None, ge=1)
    """How many partitions the rows are spread over by entity key (each is written to the
    online store by one task); ``None`` uses ``spark.sql.shuffle.partitions``."""


class SparkEngineConfig(PluginConfig):
    """Config of the Spark engine (``engine: {type: spark, ...}``)."""

    type: Literal["spark"] = "spark"
    """The plug-in's name."""
    master: MasterUrl = "local[*]"
    """Where applications run: ``spark://HOST:PORT`` (a standalone cluster) or ``local[N]``."""
    conf: dict[str, str] = Field(default_factory=dict)
    """Spark properties of every application (``spark.executor.memory: 2g`` ...)."""
    python: str | None = None
    """The interpreter executors run (``PYSPARK_PYTHON``), with potluck installed; ``None``:
    the submitting process's. The driver always runs the submitting process's."""
    spark_submit: str | None = None
    """The ``spark-submit`` executable; ``None``: the pyspark package's ``bin/spark-submit``."""
    executor_memory: SparkMemory | None = None
    """Memory per executor for every table (``spark.executor.memory``), such as ``2g``."""
    executor_cores: int | None = Field(default=None, ge=1)
    """Cores per executor for every table (``spark.executor.cores``)."""
    partitions: int | None = Field(default=None, ge=1)
    """Partitions by entity key for every table; ``None``: ``spark.sql.shuffle.partitions``."""
    tables: dict[str, SparkTableConfig] = Field(default_factory=dict)
    """Per feature table (by name), settings that override the three above."""
    heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT
    """How old a running job's heartbeat may get before readers call it lost (``FAILED``);
    seconds, or text such as ``60s``, ``5m``. Its driver rewrites the record at least four
    times per timeout."""
    start_timeout: timedelta = timedelta(minutes=5)
    """How long an application may take to start, from spark-submit to its driver's first
    write of the records (JVM start, a busy machine), before readers call its jobs lost."""
    progress_interval: float = Field(default=1.0, gt=0)
    """Seconds between two writes of a running job's record by its driver (row counts,
    heartbeat) and two checks for a cancel request."""
    cancel_timeout: float = Field(default=30.0, ge=0)
    """Seconds the driver gets to stop after a cancel through the job's handle before the
    launcher kills the application."""
    log_dir: str | None = None
    """Folder of the applications' logs (spark-submit's output); ``None``: a ``potluck-spark``
    folder in the system's temporary folder."""
    checkpoint_location: str | None = None
    """Folder of stream jobs' checkpoints (their Kafka offsets): each table's and consumer
    group's is ``<checkpoint_location>/<project>/<table>/<group>``; ``None``: under ``log_dir``.
    A restarted job of the group resumes from its checkpoint."""
    jars: list[str] = Field(default_factory=list)
    """Jars (paths or URLs) every application loads (``spark.jars``): stream jobs need the
    Spark-Kafka connector (``scripts/jars/spark-kafka.pom.xml`` fetches it from Maven)."""

    @field_validator("master")
    @classmethod
    def _standalone_or_local(cls, master: str) -> str:
        if not master.startswith(("spark://", "local")):
            raise ValueError(
                "the spark engine submits to spark://HOST:PORT (a standalone cluster) or "
                "local[N]; other masters have no launcher yet"
            )
        return master

    @field_validator("tables")
    @classmethod
    def _table_names(cls, tables: dict[str, SparkTableConfig]) -> dict[str, SparkTableConfig]:
        for name in tables:
            if not NAME_PATTERN.fullmatch(name):
                raise ValueError(f"{name!r} is not a feature table name ([a-z_][a-z0-9_]*)")
        return tables

    @field_validator("heartbeat_timeout", "start_timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> timedelta:
        return positive_duration(value)

    def table_settings(self, table: str) -> SparkTableConfig:
        """Return the settings of ``table``'s jobs: its own where set, else the engine's."""
        own = self.tables.get(table, SparkTableConfig())
        return SparkTableConfig(
            executor_memory=own.executor_memory or self.executor_memory,
            executor_cores=own.executor_cores or self.executor_cores,
            partitions=own.partitions or self.partitions,
        )


class SparkEngine(Engine):
    """Runs offline-to-online jobs and stream-to-online jobs as Spark applications.

    Args:
        config: A :class:`SparkEngineConfig`.
    """

    config_class = SparkEngineConfig

    config: SparkEngineConfig

    def __init__(self, config: SparkEngineConfig) -> None:
        super().__init__(config)
        self._launcher = StandaloneLauncher(config.spark_submit)

    def submit(self, spec: JobSpec, context: JobContext) -> RecordedJob:
        """Record the job and launch its application; see :meth:`Engine.submit`.

        A ``stream_to_online`` spec launches a Structured Streaming application of its own
        (:mod:`potluck.ingestion.spark_jobs.stream_to_online`).

        Raises:
            ConfigError: If the online store is an embedded SQLite file and the master is not
                ``local[N]``, the registry cannot be shared with the driver, or there is no
                ``spark-submit``.
            UnavailableError: If the master cannot be reached or spark-submit cannot start.
            ValidationError: If a stream job's table has no stream source.
            AlreadyExistsError: If a stream job of the table and consumer group is running
                (see :mod:`potluck.ingestion.stream.running`).
        """
        if spec.kind == STREAM_TO_ONLINE:
            return self._submit_stream(spec, context)
        return self.submit_many([spec], context)[0]

    def _submit_stream(self, spec: JobSpec, context: JobContext) -> SparkJob:
        """Record a stream-to-online job and launch its streaming application."""
        self._check_store(context)
        registry = _registry_address(context.registry)
        table, entity_types = _resolve_stream(context, spec)
        refuse_second_job(context.registry, spec, self.config.type)
        self._check_master()
        self._launcher.executable()
        folder = self._log_folder()
        base = Path(self.config.checkpoint_location or folder)
        job = Job.new(spec, self.config.type, heartbeat_timeout=self.config.start_timeout)
        log = str(folder / f"{job.id}.log")
        job = replace(job, log_location=log)
        root = context.offline_store.root
        stream = StreamLoad(
            job_id=job.id,
            project=spec.project,
            table=table,
            entity_types=entity_types,
            checkpoint_location=str(checkpoint_folder(base, spec)),
            max_offsets_per_trigger=spec.batch_size,
            trigger_interval=spec.batch_interval,
            offline_root=None if root is None else str(root),
            kafka_config=dict(context.kafka_config),
        )
        application = ApplicationSpec(
            name=f"potluck stream-to-online {table.name}",
            settings=self.application_settings([table.name]),
            registry=registry,
            online_store=context.online_store.config.model_dump(mode="json"),
            progress_interval=self.config.progress_interval,
            heartbeat_timeout=self.config.heartbeat_timeout.total_seconds(),
            loads=(),
            stream=stream,
        )
        return self._launch(application, [job], _STREAM_ENTRY, context)[0]

    def submit_many(self, specs: Sequence[JobSpec], context: JobContext) -> list[RecordedJob]:
        """Record several jobs and launch one application that runs them one after another.

        Each job keeps its own record and can be cancelled alone. The jobs' tables must agree
        on ``executor_memory`` and ``executor_cores`` (properties of the whole application).
        A job with no file to read (an empty source, nothing committed since its watermark, no
        partition day in its range) is recorded ``SUCCEEDED`` with zero rows at once, as the
        local engine ends it, and gets no application (nor does a call whose jobs are all such);
        its handle is a plain :class:`RecordedJob`, the others are :class:`SparkJob`.

        Raises:
            ValidationError: If ``specs`` is empty or the tables' executor settings differ.
            ConfigError, UnavailableError, NotFoundError: As :meth:`submit`.
        """
        if not specs:
            raise ValidationError("give at least one job to submit", field="specs")
        self._check_store(context)
        registry = _registry_address(context.registry)
        self._check_master()
        self._launcher.executable()
        planned = [self._plan(spec, context) for spec in specs]
        settings = self.application_settings([spec.table for spec in specs])
        loads = [(job, load) for job, load in planned if load.paths]
        handles: dict[str, RecordedJob] = {
            job.id: _nothing_to_read(job, context) for job, load in planned if not load.paths
        }
        if loads:
            folder = self._log_folder()
            log = str(folder / f"{loads[0][0].id}.log")
            jobs = [replace(job, log_location=log) for job, _ in loads]
            tables = ", ".join(load.table.name for _, load in loads)
            application = ApplicationSpec(
                name=f"potluck offline-to-online {tables}",
                settings=settings,
                registry=registry,
                online_store=context.online_store.config.model_dump(mode="json"),
                progress_interval=self.config.progress_interval,
                heartbeat_timeout=self.config.heartbeat_timeout.total_seconds(),
                loads=tuple(load for _, load in loads),
            )
            launched = self._launch(application, jobs, _BATCH_ENTRY, context)
            handles.update((handle.id, handle) for handle in launched)
        return [handles[job.id] for job, _ in planned]

    def _launch(
        self, application: ApplicationSpec, jobs: list[Job], entry: str, context: JobContext
    ) -> list[SparkJob]:
        """Save the jobs' records and the spec, start the application, and follow it."""
        name, settings = application.name, application.settings
        folder = self._log_folder()
        first = jobs[0].id
        log = str(folder / f"{first}.log")
        for job in jobs:
            save_job(context.registry, job)
        spec_path = str(folder / f"{first}.json")
        try:
            try:
                write_spec(application, spec_path)
            except OSError as exc:
                raise UnavailableError(
                    f"cannot write the job spec {spec_path!r}: {exc.strerror or exc}; check "
                    "engine.log_dir"
                ) from None
            handle = self._launcher.submit(
                SparkApplication(name, _entry_point(entry), (spec_path,), settings, log)
            )
        except PotluckError as exc:
            for job in jobs:
                failed = job.evolve(
                    status=JobStatus.FAILED, error=exc.message, finished_at=utc_now()
                )
                save_job(context.registry, failed)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spec_path)
            raise
        follower = SparkApplicationJobs(
            self._launcher, handle, context.registry, jobs, self.config.cancel_timeout, spec_path
        )
        follower.start()
        return [SparkJob(context.registry, job.spec.project, job.id, follower) for job in jobs]

    def _plan(self, spec: JobSpec, context: JobContext) -> tuple[Job, TableLoad]:
        """Resolve one job as the local engine does: its record and what the driver reads."""
        table, entity_types = resolve_table(context, spec)
        source = batch_source_of(table)
        version = context.offline_store.source_version(table)
        since = watermark(context.registry, spec, version) if spec.since_last else None
        location = resolve_path(source.path, context.offline_store.root)
        state = require_existing(
            table, read_source(location, version=version.version, since_version=since)
        )
        start = None if spec.start is None else spec.start.astimezone(timezone.utc)
        end = None if spec.end is None else spec.end.astimezone(timezone.utc)
        files = without_superseded(
            select_days(
                state.files,
                filesystem_for(location)[1],
                source.date_partition_column,
                start.date() if start else None,
                end.date() if end else None,
            )
        )
        job = replace(
            Job.new(spec, self.config.type, heartbeat_timeout=self.config.start_timeout),
            since_version=since,
            source_id=version.source_id,
            source_version=version.version,
            rows_total=rows_to_read(
                table, context.offline_store, version.version, since, spec.start, spec.end
            ),
        )
        load = TableLoad(
            job_id=job.id,
            project=spec.project,
            table=table,
            entity_types=entity_types,
            location=location,
            paths=files.paths,
            partitions=self.config.table_settings(table.name).partitions,
        )
        return job, load

    def application_settings(self, tables: Sequence[str]) -> SparkSettings:
        """Return the settings of an application that runs jobs of ``tables``.

        ``conf`` is the engine's, with ``jars`` added to ``spark.jars``, and
        ``spark.executor.memory`` and ``spark.executor.cores`` set from ``executor_memory`` and
        ``executor_cores`` (a table's own, else the engine's) where given.

        Raises:
            ValidationError: If the tables differ in executor memory or cores.
        """
        chosen = {name: self.config.table_settings(name) for name in tables}
        first = chosen[tables[0]]
        for name, settings in chosen.items():
            for key in ("executor_memory", "executor_cores"):
                if getattr(settings, key) != getattr(first, key):
                    raise ValidationError(
                        f"feature tables {tables[0]!r} and {name!r} differ in {key} "
                        f"({getattr(first, key)} and {getattr(settings, key)}), a setting of "
                        "the whole application; submit them separately",
                        field=key,
                    )
        conf = dict(self.config.conf)
        if self.config.jars:
            conf["spark.jars"] = ",".join(
                [*filter(None, conf.get("spark.jars", "").split(",")), *self.config.jars]
            )
        if first.executor_memory is not None:
            conf["spark.executor.memory"] = first.executor_memory
        if first.executor_cores is not None:
            conf["spark.executor.cores"] = str(first.executor_cores)
        return SparkSettings(master=self.config.master, conf=conf, python=self.config.python)

    def _check_store(self, context: JobContext) -> None:
        store = context.online_store
        if isinstance(store, SqliteOnlineStore) and not self.config.master.startswith("local"):
            raise ConfigError(
                f"engine.master {self.config.master!r} cannot load the embedded SQLite online "
                f"store ({store.config.path}): executors on a cluster cannot write a file of "
                "this machine; use a Redis online store (online_store: {type: redis, url: ...}) "
                "or engine.master: local[N]",
                key="engine.master",
                sources=(),
            )

    def _check_master(self) -> None:
        master = self.config.master
        if not master.startswith("spark://"):
            return
        problems = []
        for address in master.removeprefix("spark://").split(","):
            host, _, port = address.rpartition(":")
            try:
                with socket.create_connection((host.strip("[]"), int(port)), timeout=3.0):
                    return
            except OSError as exc:
                problems.append(f"{address}: {exc.strerror or exc}")
        raise UnavailableError(
            f"the Spark master {master} cannot be reached ({'; '.join(problems)}); start it, or "
            "fix engine.master",
            address=master,
        )

    def _log_folder(self) -> Path:
        folder = Path(self.config.log_dir or Path(tempfile.gettempdir()) / "potluck-spark")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"engine.log_dir {str(folder)!r} cannot be created: {exc.strerror or exc}; "
                "choose a writable folder",
                key="engine.log_dir",
                sources=(),
            ) from None
        return folder


def _registry_address(registry: Registry) -> RegistryAddress:
    """Return how the driver reaches ``registry``.

    Raises:
        ConfigError: If the driver cannot open it (an in-memory database, another kind).
    """
    if isinstance(registry, RemoteRegistry):
        return RegistryAddress(core_url=registry.address)
    if isinstance(registry, SqlRegistry) and ":memory:" not in registry.url:
        return RegistryAddress(url=registry.url)
    raise ConfigError(
        "the spark engine's driver runs in a process of its own and must open the registry "
        "itself: use a SQLite file or PostgreSQL (registry), or a Core service (core_url)",
        key="registry",
        sources=(),
    )


def _nothing_to_read(job: Job, context: JobContext) -> RecordedJob:
    """Record ``job``, which has no file to read, ``SUCCEEDED`` with zero rows; its handle."""
    now = utc_now()
    done = job.evolve(
        status=JobStatus.SUCCEEDED, started_at=now, finished_at=now, stats=JobStats(), rows_total=0
    )
    save_job(context.registry, done)
    return RecordedJob(context.registry, job.spec.project, job.id)


def _resolve_stream(
    context: JobContext, spec: JobSpec
) -> tuple[FeatureTable, dict[str, ValueType]]:
    """Return the stream job's feature table and its entity types.

    Raises:
        NotFoundError: If the table does not exist.
        ValidationError: If it is not a feature table or has no stream source.
    """
    table, types = resolve_table(context, spec, batch_source=False)
    StreamTable(spec.project, table, types)  # refuses a table without a stream source
    return table, types


_BATCH_ENTRY = "potluck.ingestion.spark_jobs.offline_to_online"
_STREAM_ENTRY = "potluck.ingestion.spark_jobs.stream_to_online"


def _entry_point(module: str) -> str:
    spec = find_spec(module)
    assert spec is not None and spec.origin is not None  # part of this package
    return spec.origin


__all__ = ["SparkEngine", "SparkEngineConfig", "SparkJob", "SparkTableConfig"]
