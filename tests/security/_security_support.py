"""Shared by the project-isolation and audit tests: registries on every backend, definitions."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from potluck import Entity, Feature, FeatureTable, FileSource, KafkaSource, ValueType
from potluck.registry.base import Registry
from potluck.registry.isolation import DataIsolation
from potluck.registry.remote import RemoteRegistry
from potluck.registry.server import start_core_server
from potluck.registry.sql import SqlRegistry

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "core"]
"""SqlRegistry on SQLite and on PostgreSQL, and RemoteRegistry through a Core server."""

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)


def table(name: str, path: str | None = None, topic: str | None = None) -> FeatureTable:
    """A one-feature table over ``path`` and, when given, a JSON stream on ``topic``."""
    return FeatureTable(
        name=name,
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        batch_source=None if path is None else FileSource(path=path, event_timestamp_column="ts"),
        stream_source=None
        if topic is None
        else KafkaSource(
            bootstrap_servers="127.0.0.1:9092",
            topic=topic,
            message_format="json",
            event_timestamp_column="ts",
        ),
    )


@contextmanager
def open_registry(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path, isolation: DataIsolation | None
) -> Iterator[Registry]:
    """Yield a registry of ``backend`` whose applies follow ``isolation``."""
    if backend == "postgres":
        url = request.getfixturevalue("fresh_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    backing = SqlRegistry(url, isolation=isolation)
    if backend != "core":
        try:
            yield backing
        finally:
            backing.close()
        return
    server = start_core_server(backing, port=0)
    remote = RemoteRegistry(server.address)
    try:
        yield remote
    finally:
        remote.close()
        server.stop(0)
        backing.close()
