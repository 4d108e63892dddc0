"""The Spark offline store: training sets built on a Spark cluster and staged as Parquet.

A training set is one Spark job. Entity rows in the driver's memory are validated there
(:func:`potluck.offline.pit.prepare`) and sent to the cluster from Arrow, each with its row
number; an entity file is read and validated on executors, each row numbered by its place in the
file (:mod:`potluck.offline.spark.entities`); each table's source files, pinned to one version
(:func:`pin_sources`) and pruned (:func:`select_days`, :func:`without_superseded`), are read on
executors (:mod:`potluck.offline.spark.reading`); the join is the plan of :mod:`potluck.offline.pit`
rendered by :mod:`potluck.offline.spark.pit`. The result, ordered by row number, is written as
Parquet under ``staging_location/<id>/``, and the :class:`RetrievalJob` streams it back from there.
No step collects entity or feature rows to the driver.

Range reads (offline-to-online jobs) read the pinned files on the driver
(:mod:`potluck.offline.spark.ranges`); the Spark engine runs those jobs on the cluster.
"""

from __future__ import annotations

import functools
import os
import socket
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import pyarrow as pa
from pydantic import AfterValidator

from potluck.config import PluginConfig, setting_error
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import UnavailableError
from potluck.offline.base import (
    INGESTION_ID_COLUMN,
    OfflineStore,
    SourceVersion,
)
from potluck.offline.commits import SourceState
from potluck.offline.files import (
    filesystem_for,
    select_days,
    without_superseded,
)
from potluck.offline.inputs import InputData
from potluck.offline.pit import FeatureRequest, TableJoin, build_plan, prepare
from potluck.offline.retrieval import RetrievalJob, StagedOutput
from potluck.offline.snapshots import (
    current_version,
    pin_sources,
    range_files,
)
from potluck.offline.spark.entities import EntityFile, InMemoryEntities, carried_name
from potluck.offline.spark.order import partitions_for
from potluck.offline.spark.pit import CREATED, EVENT, feature_column, key_column, render
from potluck.offline.spark.ranges import read_files_in_range
from potluck.offline.spark.reading import ROWS_PER_TASK, SourceErrors
from potluck.offline.spark.scan import IngestionCreated, ScanColumn
from potluck.offline.spark.session import spark_errors, start_session
from potluck.offline.spark.settings import SparkSettings
from potluck.offline.spark.staging import (
    child,
    read_back,
    remove,
    spark_path,
    staging_folder,
    write_empty,
)
from potluck.types import ValueType, to_arrow_type

try:
    from pyspark import SparkContext
    from pyspark.sql import DataFrame, SparkSession
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the spark offline store needs pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

APP_NAME = "potluck-training-sets"
"""The Spark application's name, and the job group of every training-set job."""
SESSION_DEFAULTS: Mapping[str, str] = {"spark.sql.caseSensitive": "true"}
"""Spark properties the store sets unless ``conf`` does: entity columns may differ only in case."""
_CONNECT_TIMEOUT_S = 5.0


def _check_staging_location(value: str) -> str:
    if not value.strip():
        raise ValueError("must be a folder or a URL, such as .potluck/staging or s3://bucket/dir")
    return value


StagingLocation = Annotated[str, AfterValidator(_check_staging_location)]
"""A folder (relative to the config file's folder) or a URL where training sets are written."""


class SparkOfflineConfig(PluginConfig, SparkSettings):
    """Settings of the Spark offline store (``offline_store: {type: spark, ...}``).

    ``master``, ``conf`` and ``python`` are those of :class:`SparkSettings`.
    """

    type: Literal["spark"] = "spark"
    """The plug-in's name."""
    staging_location: StagingLocation = ".potluck/staging"
    """Where training sets are written, each as Parquet files in a folder of its own: a folder
    relative to the config file's folder, an absolute one, or a URL. The driver and every
    executor must reach it (a shared or object-store location for a cluster of machines)."""


class SparkOfflineStore(OfflineStore):
    """Builds training sets on a Spark cluster; reads ranges on the driver.

    The Spark session starts at the first training set (a few seconds) and is stopped by
    :meth:`close`, unless it was this process's session already (then it is only joined).

    Args:
        config: The store's settings.
        root: The folder relative source paths and ``staging_location`` are resolved against.
        rows_per_task: The fewest rows a task reads of an entity file or writes of a training
            set, when there are that many (default:
            :data:`potluck.offline.spark.reading.ROWS_PER_TASK`, as for source files).

    Raises:
        ConfigError: If ``staging_location`` is a local folder that cannot be made or written.
    """

    config_class = SparkOfflineConfig

    config: SparkOfflineConfig

    def __init__(
        self,
        config: SparkOfflineConfig,
        *,
        root: Path | None = None,
        rows_per_task: int | None = None,
    ) -> None:
        super().__init__(config, root=root)
        self._rows_per_task = rows_per_task
        self.staging_location, self._local_staging = staging_folder(config.staging_location, root)
        """Where training sets go: ``staging_location`` resolved against ``root``."""
        self._lock = threading.Lock()
        self._spark: SparkSession | None = None
        self._owns_session = False

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
        """Stream rows of ``table``'s batch source in ``[start, end)``; see the base class.

        Entity columns keep the files' type (the widest of them when files differ); the rows
        of one file come in order, the files in path order.
        """
        read = range_files(
            table, self.root, start, end, version=version, since_version=since_version
        )
        return read_files_in_range(table, read.source, read.files, read.start, read.end, batch_size)

    def source_version(self, table: FeatureTable) -> SourceVersion:
        """Return ``table``'s batch source and its latest version; see the base class."""
        return current_version(table, self.root)

    # ---- historical retrieval ------------------------------------------------------------------

    def get_historical_features(
        self,
        entity_source: InputData,
        requests: Sequence[FeatureRequest],
        *,
        versions: Mapping[str, int] | None = None,
    ) -> RetrievalJob:
        """Return the point-in-time join of ``entity_source`` with ``requests``.

        See the base class and :mod:`potluck.offline.pit` for the exact semantics. The job
        runs on the cluster when first read (or when its ``output_location`` is asked); the
        training set is then in a new folder under ``staging_location``, and every read
        streams it back from there.

        An entity file (a ``.parquet`` or ``.csv`` path) is only opened here; its rows are read
        and checked on the executors when the job runs, which then raises the error
        :func:`~potluck.offline.pit.prepare` would (see :mod:`potluck.offline.spark.entities`).

        Raises:
            DataValidationError: Also if an entity column has a type Spark cannot carry
                exactly (see :mod:`potluck.offline.spark.carry`).
        """
        entities: InMemoryEntities | EntityFile
        if isinstance(entity_source, (str, os.PathLike)):
            entities = EntityFile(
                entity_source, build_plan(requests, self.root), rows_per_task=self._rows_per_task
            )
        else:
            entities = InMemoryEntities(prepare(entity_source, requests, root=self.root))
        states = pin_sources(entities.plan, versions or {})
        schema = pa.schema(
            [pa.field(c.name, c.original) for c in entities.columns]
            + [
                pa.field(c.output, to_arrow_type(c.value_type))
                for c in entities.plan.output_columns
            ]
        )
        return RetrievalJob(
            stage=functools.partial(self._stage, entities, schema, states),
            source_versions={name: state.version for name, state in states.items()},
        )

    def _stage(
        self,
        entities: InMemoryEntities | EntityFile,
        schema: pa.Schema,
        states: Mapping[str, SourceState],
    ) -> StagedOutput:
        location = child(
            self.staging_location,
            f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}",
        )
        columns = entities.columns
        carried = pa.schema([pa.field(c.name, c.carried) for c in columns])
        try:
            if isinstance(entities, InMemoryEntities) and entities.count == 0:
                rows = 0
                write_empty(location, carried)
            else:
                rows = self._write(location, entities, carried, states)
        except BaseException:
            remove(location)
            raise
        return StagedOutput(
            location,
            schema,
            functools.partial(read_back, location, columns, schema, rows),
            functools.partial(remove, location),
        )

    def _write(
        self,
        location: str,
        entities: InMemoryEntities | EntityFile,
        carried: pa.Schema,
        states: Mapping[str, SourceState],
    ) -> int:
        """Run the join on the cluster and write its result under ``location``.

        Returns:
            How many rows were written (one per entity row).

        Raises:
            DataValidationError: If the entity file or a source file does not fit its
                declarations (file, column, row), as the executor that read it met it.
            ValidationError: If Spark fails the job.
        """
        spark = self._session()
        errors = SourceErrors(spark)
        doing = "building the training set of " + ", ".join(j.table for j in entities.plan.joins)
        with spark_errors(doing):
            spark.sparkContext.setJobGroup(APP_NAME, f"training set {location}")
            loaded = entities.load(spark)
            if loaded.count == 0:
                write_empty(location, carried)
                return 0
            plan = loaded.plan
            feature_rows = [
                _scan(errors, number, join, states[join.table], plan.earliest, plan.latest)
                for number, join in enumerate(plan.joins)
            ]
            own = [carried_name(i) for i in range(len(carried))]
            per_task = self._rows_per_task or ROWS_PER_TASK
            partitions = partitions_for(spark, loaded.count, per_task)
            joined = render(plan, loaded.rows, loaded.count, partitions, feature_rows, own)
            outputs = [c.output for c in plan.output_columns]
            result = joined.select(*own, *outputs).toDF(*carried.names, *outputs)
            result.write.parquet(spark_path(location))
        errors.raise_first()
        return loaded.count

    def _session(self) -> SparkSession:
        """Return the store's Spark session, starting (or joining) this process's first.

        Raises:
            UnavailableError: If the master cannot be reached or the session does not start.
            ConfigError: If this process runs a session on another master already, or Spark
                refuses a property of ``offline_store.conf``.
        """
        with self._lock:
            if self._spark is None:
                master = self.config.master
                _check_reachable(master)
                joined = SparkContext._active_spark_context is not None
                settings = SparkSettings(
                    master=master,
                    conf={**SESSION_DEFAULTS, **self.config.conf},
                    python=self.config.python,
                )
                try:
                    spark = start_session(
                        settings, APP_NAME, log_file=self._log_file(), conf_key="offline_store.conf"
                    )
                except UnavailableError as exc:
                    raise UnavailableError(
                        f"{exc.message} (offline_store.master)",
                        key="offline_store.master",
                        address=master,
                    ) from None
                running = spark.sparkContext.master
                if joined and running != master:
                    raise setting_error(
                        "offline_store.master",
                        f"this process runs a Spark session on {running} already, and a "
                        f"process has one; set offline_store.master to {running}, or build "
                        "training sets in another process",
                        value=master,
                    )
                self._spark, self._owns_session = spark, not joined
            return self._spark

    def _log_file(self) -> str:
        """Where the driver's Spark log goes: under ``staging_location/_logs/`` when local."""
        name = f"spark-driver-{os.getpid()}.log"
        if self._local_staging is None:
            return str(Path(tempfile.gettempdir()) / "potluck-spark" / name)
        return str(self._local_staging / "_logs" / name)

    def close(self) -> None:
        """Stop the Spark session if this store started it."""
        with self._lock:
            if self._spark is not None and self._owns_session:
                self._spark.stop()
            self._spark = None


# ---- the join's inputs ---------------------------------------------------------------------------


def _scan(
    errors: SourceErrors,
    number: int,
    join: TableJoin,
    state: SourceState,
    earliest: datetime | None,
    latest: datetime | None,
) -> DataFrame:
    """Read the files of ``join``'s source that can hold rows the entity rows may match."""
    first, last = join.event_range(earliest, latest)
    files = select_days(
        state.files,
        filesystem_for(join.path)[1],
        join.date_partition_column,
        first.date() if first else None,
        last.date() if last else None,
    )
    columns = [
        ScanColumn(
            key_column(k.entity),
            k.source,
            k.value_type,
            f"entity {k.entity} ({k.value_type.name})",
            required=True,
        )
        for k in join.keys
    ]
    columns += [
        ScanColumn(
            EVENT,
            join.event_timestamp_column,
            ValueType.UNIX_TIMESTAMP,
            "an event timestamp",
            required=True,
        ),
        ScanColumn(
            CREATED, join.created_timestamp_column, ValueType.UNIX_TIMESTAMP, "a created timestamp"
        ),
    ]
    columns += [
        ScanColumn(
            feature_column(i), f.source, f.value_type, f"feature {f.feature} ({f.value_type.name})"
        )
        for i, f in enumerate(join.features)
    ]
    # Without a created column, the time of the ingestion that wrote a row breaks ties.
    created = (
        None
        if join.created_timestamp_column is not None
        else IngestionCreated(CREATED, INGESTION_ID_COLUMN)
    )
    return errors.scan(
        without_superseded(files),
        columns,
        table=join.table,
        number=number,
        ingestion_created=created,
    )


def _check_reachable(master: str) -> None:
    """Fail fast when no master of a ``spark://`` URL accepts connections.

    Raises:
        UnavailableError: Naming ``offline_store.master``.
    """
    if not master.startswith("spark://"):
        return
    reason = ""
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), _CONNECT_TIMEOUT_S):
                return
        except OSError as exc:
            reason = exc.strerror or str(exc)
    raise UnavailableError(
        f"cannot reach the Spark master {master} (offline_store.master): {reason}; start the "
        "cluster, or set offline_store.master to a running one",
        key="offline_store.master",
        address=master,
    )


__all__ = ["APP_NAME", "SESSION_DEFAULTS", "SparkOfflineConfig", "SparkOfflineStore"]
