"""The spec of a Spark application (batch or stream jobs): what the engine resolved, as JSON.

The Spark engine writes it to a file readable by its owner only (it holds the registry's and
the online store's URLs, which may carry passwords), passes the file's path to ``spark-submit``,
and the application's driver reads it and deletes it. Nothing in it is looked up again: each
load carries the table definition, the entity types and the pinned file list its job was
submitted with. This module imports no pyspark.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import feature_table_from_dict, to_dict
from potluck.errors import ValidationError
from potluck.offline.files import SourceFiles, filesystem_for
from potluck.offline.spark.settings import SparkSettings
from potluck.registry.base import Registry
from potluck.types import ValueType

FORMAT = 1
"""The version of the file's layout; a driver refuses any other."""


@dataclass(frozen=True)
class RegistryAddress:
    """How the driver reaches the registry: exactly one of the two is set.

    Attributes:
        url: A SQLAlchemy URL (a SQLite file or PostgreSQL).
        core_url: ``host:port`` of a Core service.
    """

    url: str | None = None
    core_url: str | None = None

    def open(self) -> Registry:
        """Return the registry this address names."""
        if self.core_url is not None:
            from potluck.registry.remote import RemoteRegistry

            return RemoteRegistry(self.core_url)
        from potluck.registry.sql import SqlRegistry

        return SqlRegistry(str(self.url))


@dataclass(frozen=True)
class TableLoad:
    """One offline-to-online job of the application.

    Attributes:
        job_id: The job's id; its record (``PENDING``, written by the engine) holds the rest of
            what it was asked (range, ``full``, batch size).
        project: The job's project.
        table: The feature table, as it was when the job was submitted.
        entity_types: The value type of each of the table's entities.
        location: The batch source's folder or URL.
        paths: The files to read, within ``location``'s filesystem: the source's pinned version
            (after the watermark for ``since_last``), less partition days outside the range and
            superseded rows' files.
        partitions: How many partitions the rows are spread over by entity key; ``None`` uses
            ``spark.sql.shuffle.partitions``.
    """

    job_id: str
    project: str
    table: FeatureTable
    entity_types: Mapping[str, ValueType]
    location: str
    paths: tuple[str, ...]
    partitions: int | None = None

    def files(self) -> SourceFiles:
        """Return the files to read, on their filesystem."""
        return SourceFiles(filesystem_for(self.location)[0], self.paths)


@dataclass(frozen=True)
class StreamLoad:
    """The stream-to-online job of a streaming application.

    Attributes:
        job_id: The job's id; its record (``PENDING``) holds the rest of what it was asked.
        project: The job's project.
        table: The feature table, as it was when the job was submitted; it has a stream source.
        entity_types: The value type of each of the table's entities.
        checkpoint_location: The folder of the query's checkpoint (its Kafka offsets).
        max_offsets_per_trigger: The most messages in one micro-batch.
        trigger_interval: Seconds between the starts of two micro-batches.
        offline_root: The folder a relative batch source path is resolved against, for the
            source's ``offline_sink``.
        kafka_config: librdkafka properties (the ``kafka`` settings and call-time options):
            the Kafka source's ``kafka.<property>`` options and the dead-letter producer's
            settings. They may hold secrets: the spec file is its owner's only, and deleted
            when read.
    """

    job_id: str
    project: str
    table: FeatureTable
    entity_types: Mapping[str, ValueType]
    checkpoint_location: str
    max_offsets_per_trigger: int
    trigger_interval: float
    offline_root: str | None = None
    kafka_config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ApplicationSpec:
    """Everything the driver needs.

    Attributes:
        name: The Spark application's name.
        settings: The cluster and Spark properties the session starts with.
        registry: Where the job records are.
        online_store: The online store's config section (``{"type": "redis", "url": ...}``),
            from which the driver and each executor build the store.
        progress_interval: Seconds between two writes of a running job's record (row counts,
            heartbeat) and two checks for cancel requests.
        heartbeat_timeout: Seconds; the jobs' heartbeat timeout once the driver has taken them
            (until then their records carry the engine's start timeout).
        loads: The jobs, run one after another.
        stream: The stream-to-online job of a streaming application (then ``loads`` is empty).
    """

    name: str
    settings: SparkSettings
    registry: RegistryAddress
    online_store: Mapping[str, Any]
    progress_interval: float
    heartbeat_timeout: float
    loads: tuple[TableLoad, ...]
    stream: StreamLoad | None = None


def write_spec(spec: ApplicationSpec, path: str) -> None:
    """Write ``spec`` as JSON to a new file at ``path``, readable and writable by its owner only.

    Raises:
        OSError: If the file exists or cannot be written.
    """
    data = {
        "format": FORMAT,
        "name": spec.name,
        "settings": spec.settings.model_dump(),
        "registry": {"url": spec.registry.url, "core_url": spec.registry.core_url},
        "online_store": dict(spec.online_store),
        "progress_interval": spec.progress_interval,
        "heartbeat_timeout": spec.heartbeat_timeout,
        "loads": [
            {
                "job_id": load.job_id,
                "project": load.project,
                "table": to_dict(load.table),
                "entity_types": {name: kind.name for name, kind in load.entity_types.items()},
                "location": load.location,
                "paths": list(load.paths),
                "partitions": load.partitions,
            }
            for load in spec.loads
        ],
    }
    if spec.stream is not None:
        stream = spec.stream
        data["stream"] = {
            "job_id": stream.job_id,
            "project": stream.project,
            "table": to_dict(stream.table),
            "entity_types": {name: kind.name for name, kind in stream.entity_types.items()},
            "checkpoint_location": stream.checkpoint_location,
            "max_offsets_per_trigger": stream.max_offsets_per_trigger,
            "trigger_interval": stream.trigger_interval,
            "offline_root": stream.offline_root,
            "kafka_config": dict(stream.kafka_config),
        }
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        json.dump(data, out)


def read_spec(path: str) -> ApplicationSpec:
    """Read the spec at ``path`` and delete the file.

    Raises:
        ValidationError: If the file is not a spec of this format.
        OSError: If it cannot be read.
    """
    with open(path, encoding="utf-8") as source:
        data = json.load(source)
    os.unlink(path)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValidationError(
            f"{path!r} is not a potluck Spark job spec of format {FORMAT}; the application was "
            "started by another potluck version",
            path=path,
        )
    registry = data["registry"]
    return ApplicationSpec(
        name=data["name"],
        settings=SparkSettings.model_validate(data["settings"]),
        registry=RegistryAddress(url=registry.get("url"), core_url=registry.get("core_url")),
        online_store=data["online_store"],
        progress_interval=float(data["progress_interval"]),
        heartbeat_timeout=float(data["heartbeat_timeout"]),
        loads=tuple(
            TableLoad(
                job_id=load["job_id"],
                project=load["project"],
                table=feature_table_from_dict(load["table"]),
                entity_types={name: ValueType[kind] for name, kind in load["entity_types"].items()},
                location=load["location"],
                paths=tuple(load["paths"]),
                partitions=load["partitions"],
            )
            for load in data["loads"]
        ),
        stream=_read_stream(data.get("stream")),
    )


def _read_stream(data: Mapping[str, Any] | None) -> StreamLoad | None:
    if data is None:
        return None
    return StreamLoad(
        job_id=data["job_id"],
        project=data["project"],
        table=feature_table_from_dict(data["table"]),
        entity_types={name: ValueType[kind] for name, kind in data["entity_types"].items()},
        checkpoint_location=data["checkpoint_location"],
        max_offsets_per_trigger=int(data["max_offsets_per_trigger"]),
        trigger_interval=float(data["trigger_interval"]),
        offline_root=data["offline_root"],
        kafka_config=dict(data.get("kafka_config") or {}),
    )


__all__ = [
    "FORMAT",
    "ApplicationSpec",
    "RegistryAddress",
    "StreamLoad",
    "TableLoad",
    "read_spec",
    "write_spec",
]
