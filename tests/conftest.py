"""Fixtures for the real services the suite talks to, all on 127.0.0.1.

``make test`` starts them (``scripts/services.sh``) and exports their addresses as
``POTLUCK_TEST_*`` variables. A test that needs a service it cannot reach fails under
``CI=true`` and is skipped elsewhere.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(env_var: str, what: str) -> str:
    """Return the service address in ``env_var``, or fail (CI) / skip (elsewhere)."""
    value = os.environ.get(env_var, "")
    problem = None
    if not value:
        problem = f"{what}: {env_var} is not set (run `make test`, which starts it)"
    else:
        first = value.split(",")[0]
        parts = urlsplit(first if "://" in first else f"tcp://{first}")
        if not _reachable(parts.hostname or "127.0.0.1", parts.port or 0):
            problem = f"{what} at {first} is not reachable"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return value


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A SQLAlchemy URL of a live PostgreSQL database."""
    return require_service("POTLUCK_TEST_POSTGRES_URL", "PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A URL of a live standalone Redis."""
    return require_service("POTLUCK_TEST_REDIS_URL", "Redis")


@pytest.fixture(scope="session")
def redis_cluster_nodes() -> list[str]:
    """``host:port`` of each node of a live Redis Cluster."""
    return require_service("POTLUCK_TEST_REDIS_CLUSTER_NODES", "Redis Cluster").split(",")


@pytest.fixture()
def fresh_postgres_url(postgres_url: str) -> Iterator[str]:
    """A URL of a new, empty PostgreSQL database, dropped after the test."""
    import sqlalchemy as sa

    name = f"t_{os.getpid()}_{os.urandom(4).hex()}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    base = postgres_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def spark_master() -> str:
    """The ``spark://host:port`` URL of a live standalone Spark cluster (one worker, 2 cores).

    Every application the tests start asks for one core (``tests/spark/_spark_support.py``), so
    a training-set session in the test process and a ``spark-submit`` job run side by side.
    """
    return require_service("POTLUCK_TEST_SPARK_MASTER", "Spark master")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """``host:port`` of a live Kafka broker (KRaft, 4 partitions per new topic by default)."""
    return require_service("POTLUCK_TEST_KAFKA_BOOTSTRAP", "Kafka broker")
