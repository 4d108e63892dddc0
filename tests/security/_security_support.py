"""Shared by the project-isolation and audit tests: registries on every backend, definitions, and
a `potluck core` process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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


POTLUCK = Path(sys.executable).parent / "potluck"
"""The CLI of this venv, for tests that run a server as its own process."""


@dataclass(frozen=True)
class CoreProcess:
    """A ``potluck core`` process: its address and, once it has stopped, everything on stderr."""

    address: str
    stderr: list[str]


@contextmanager
def core_process(folder: Path) -> Iterator[CoreProcess]:
    """Run ``potluck core --port 0`` in ``folder`` (its potluck.yaml) until the block ends.

    Once the block ends, the process is stopped with SIGTERM and ``stderr`` holds its lines.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    with subprocess.Popen(
        [str(POTLUCK), "core", "--port", "0"],
        cwd=folder,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stderr is not None
        lines: list[str] = []
        while not lines or " listening on " not in lines[-1]:
            line = proc.stderr.readline()
            assert line, f"potluck core stopped: {''.join(lines)}"
            lines.append(line.rstrip("\n"))
        address = lines[-1].split(" listening on ", 1)[1].split(" ", 1)[0]
        process = CoreProcess(address, lines)
        try:
            yield process
        finally:
            proc.terminate()
            _, rest = proc.communicate(timeout=30)
            lines.extend(rest.splitlines())
