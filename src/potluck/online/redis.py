r"""Redis online stores: standalone and Cluster, sharing everything but how keys reach a node.

:class:`RedisOnlineStore` talks to one server, :class:`RedisClusterOnlineStore` to a Cluster.
Writes go through ``online/_redis_writer.py``; this module holds the stores, their config, and
how each reaches its nodes.

**Key layout.** The Redis key *is* the entity key from ``online/codec.py``
(``str(project) str(table) entities...``), so every key of a table starts with
``table_key_prefix(project, table)``; ``drop_table`` SCANs each master with that prefix (glob
characters escaped) and UNLINKs what it finds. No hash tags: in a Cluster a table's keys spread
over every slot and node like any other keys. (A hash tag per table would make multi-key scripts
trivial but put a whole table on one node, which defeats sharding.)

**Value layout.** One string per key: a 24-byte header, then the record of ``online/_values.py``
(feature names, value ends, type-tagged values)::

    i64 LE event time (µs) | i64 LE created time (µs, INT64_MIN when null)
    | i64 LE expiry (µs, INT64_MAX when never) | record

One string rather than a hash with a field per feature because a write is then one ``SET`` per
key (value and expiry together, ``PXAT``) and a read one ``MGET`` for all keys: measured on this
machine, a Lua script doing ``HMGET`` + ``HSET`` + ``PEXPIREAT`` per key spends 4.2 µs per key in
Redis, one doing ``MGET`` + ``SET PXAT`` about 2.2 µs (``benchmarks/RESULTS.md``).

**Writes** are validated whole, then streamed to a newer-wins Lua script in calls of up to 500
keys (10,000 rows encoded at a time standalone, 100,000 in a Cluster, whose calls each hold the
keys of one hash slot); see ``online/_redis_writer.py``.

**Expiry.** A value expires at ``event time + max_age``: ``SET ... PXAT`` with that instant
rounded up to the millisecond (Redis deletes it after then), and reads also hide a value whose
header expiry is before ``now``. Without ``max_age`` the value is ``SET`` without expiry.
``extend_expiry`` SCANs each master for the table's keys and extends them in place
(``online/_redis_expiry.py``).

**Failures.** A connection, timeout or cluster error that outlasts the retries becomes
:class:`UnavailableError` naming the node (``host:port``). Connections are opened again on the
next call, so a store works again by itself when Redis is back.
"""

from __future__ import annotations

import re
import threading
from abc import abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any, ClassVar, Literal, cast
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
from pydantic import field_validator

from potluck._redact import redact_text, redact_url, url_secrets
from potluck._setting_forms import MAX_PORT, REDIS_SCHEMES, check_address, check_redis_url
from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import ConfigError, PluginDependencyError, UnavailableError
from potluck.online._inputs import prepare_rows, requested_features
from potluck.online._values import decode_records, max_age_micros, now_micros
from potluck.online.base import (
    EVENT_TIMESTAMP_COLUMN,
    OnlineStore,
    Pingable,
    WriteMode,
    WriteResult,
)
from potluck.online.codec import table_key_prefix
from potluck.types import TIMESTAMP_ARROW_TYPE

try:
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.crc import key_slot
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by a test that hides redis
    raise PluginDependencyError(
        "the redis online stores need the redis package, which is not installed; "
        "run: pip install 'potluck[redis]'",
        plugin="redis",
        extra="redis",
    ) from exc

# Imported after the check above: these modules import redis too.
from potluck.online._redis_expiry import extend_keys
from potluck.online._redis_writer import (
    HEADER_STRUCT,
    KEYS_PER_CALL,
    WRITE_SCRIPT,
    WRITE_SCRIPT_SHA,
    Plan,
    Routing,
    load_script,
    unavailable,
    write_rows,
)

_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 10.0
_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


class RedisConfig(PluginConfig):
    """Config of :class:`RedisOnlineStore`."""

    type: Literal["redis"] = "redis"
    url: str
    """``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS, ``unix://`` for a
    socket); required, checked when settings load (scheme, numeric port)."""

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        return check_redis_url(url)


class RedisClusterConfig(PluginConfig):
    """Config of :class:`RedisClusterOnlineStore`."""

    type: Literal["redis_cluster"] = "redis_cluster"
    startup_nodes: list[str]
    """``host:port`` of one or more cluster nodes; the rest are discovered. Not URLs: a Redis
    Cluster has only database 0, and this store takes no credentials or URL options."""

    @field_validator("startup_nodes")
    @classmethod
    def _check_nodes(cls, nodes: list[str]) -> list[str]:
        if not nodes:
            raise ValueError("give at least one node as 'host:port'")
        for node in nodes:
            try:
                if node.split("://", 1)[0] in REDIS_SCHEMES and "://" in node:
                    raise ValueError(_node_not_url(node))
                check_address(node)
            except ValueError as exc:
                raise ValueError(f"{redact_url(node)!r}: {exc}") from None
        return nodes


class _RedisStore(OnlineStore, Pingable):
    """Everything the standalone and Cluster stores share; subclasses say how to reach nodes."""

    address: str
    """Where the store lives, for error messages (``host:port``, comma-separated for Cluster)."""
    rows_per_piece: ClassVar[int]
    """Rows encoded and sent at a time: Redis runs one piece while the next is encoded."""

    @abstractmethod
    def _masters(self) -> list[tuple[str, redis.Redis]]:
        """Return ``(address, client)`` of every master node."""

    @abstractmethod
    def _plan(self, keys: pa.BinaryArray) -> Plan:
        """Cut a piece's keys into script calls; see :data:`Plan`."""

    @abstractmethod
    def _node(self, key: bytes) -> tuple[str, redis.Redis]:
        """Return ``(address, client)`` of the master that owns ``key``."""

    @abstractmethod
    def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Return the stored value of each key (``None`` if absent)."""

    @abstractmethod
    def _refresh(self) -> None:
        """Forget cached topology or connections after a failure."""

    def ensure_table(self, project: str, table: FeatureTable) -> None:
        """Load the write script on every master; no per-table setup is needed.

        Raises:
            UnavailableError: If a node cannot be reached.
        """
        for address, client in self._masters():
            load_script(address, client)

    def drop_table(self, project: str, table: FeatureTable) -> int:
        """UNLINK every key that starts with the table's prefix, on every master.

        Returns:
            How many keys were removed (Redis deletes expired keys by itself).

        Raises:
            UnavailableError: If a node cannot be reached.
        """
        pattern = _scan_pattern(project, table)
        removed = 0
        for address, client in self._masters():
            with unavailable(address):
                batch: list[bytes] = []
                for key in client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) == KEYS_PER_CALL:
                        removed += _unlink(client, batch)
                        batch = []
                removed += _unlink(client, batch)
        return removed

    def extend_expiry(self, project: str, table: FeatureTable) -> int:
        """Extend the expiry of the table's live values on every master.

        See :meth:`OnlineStore.extend_expiry`; each key is extended atomically by a script.

        Raises:
            UnavailableError: If a node cannot be reached.
        """
        pattern = _scan_pattern(project, table)
        max_age_us = max_age_micros(table.max_age)
        changed = 0
        for address, client in self._masters():
            with unavailable(address):
                keys = client.scan_iter(match=pattern, count=1000)
                changed += extend_keys(client, keys, max_age_us, self._plan)
        return changed

    def write(
        self,
        project: str,
        table: FeatureTable,
        rows: pa.RecordBatch,
        *,
        mode: WriteMode = WriteMode.NEWER,
    ) -> WriteResult:
        """Upsert ``rows`` through the newer-wins script; see :meth:`OnlineStore.write`.

        The whole batch is validated first; then pieces are encoded and streamed to Redis, which
        runs one piece while the next is encoded.

        Raises:
            DataValidationError: If ``rows`` do not fit ``table``; nothing is written.
            UnavailableError: If a node cannot be reached (after re-sending twice).
        """
        prepared = prepare_rows(table, rows, now_micros(None))
        routing = Routing(plan=self._plan, node=self._node, refresh=self._refresh)
        written = write_rows(prepared, routing, self.rows_per_piece, WriteMode(mode))
        return WriteResult(written=written, skipped=prepared.skipped + len(prepared) - written)

    def read(
        self,
        project: str,
        table: FeatureTable,
        keys: Sequence[bytes],
        features: Sequence[str],
        *,
        now: datetime | None = None,
    ) -> pa.Table:
        """Read the features of each key with one ``MGET`` (per slot in a Cluster).

        Raises:
            FeatureRefError: If ``table`` has no feature of a requested name.
            UnavailableError: If a node cannot be reached.
        """
        wanted = requested_features(table, features)
        now_us = now_micros(now)
        stored = self._mget(keys) if keys else []
        events: list[int | None] = []
        for i, value in enumerate(stored):
            if value is not None:
                event, _, expire = HEADER_STRUCT.unpack_from(value)
                if expire >= now_us:
                    events.append(event)
                    continue
                stored[i] = None
            events.append(None)
        columns = decode_records(stored, HEADER_STRUCT.size, wanted)
        names = [*features, EVENT_TIMESTAMP_COLUMN]
        return pa.Table.from_arrays([*columns, pa.array(events, TIMESTAMP_ARROW_TYPE)], names=names)


def _scan_pattern(project: str, table: FeatureTable) -> bytes:
    """The SCAN pattern of every key of the table: its prefix, glob characters escaped."""
    return _GLOB_SPECIAL.sub(rb"\\\1", table_key_prefix(project, table.name)) + b"*"


def _unlink(client: redis.Redis, keys: list[bytes]) -> int:
    """UNLINK ``keys`` one per command (a Cluster node refuses keys of several slots).

    Returns:
        How many of them existed.
    """
    if not keys:
        return 0
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    return sum(int(reply) for reply in pipe.execute())


def _retry() -> Retry:
    """Retry a failed command twice, quickly: enough to reopen a connection Redis dropped."""
    return Retry(ExponentialBackoff(cap=0.1, base=0.01), 2)


def _probe_options(timeout: float) -> dict[str, Any]:
    """Client options of a health probe: one try, connecting and answering within ``timeout``."""
    return {
        "socket_connect_timeout": timeout,
        "socket_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
    }


class RedisOnlineStore(_RedisStore):
    """Online store on one Redis server.

    Example:
        >>> store = RedisOnlineStore(RedisConfig(url="redis://127.0.0.1:6379/0"))
    """

    config_class: ClassVar[type[PluginConfig]] = RedisConfig
    rows_per_piece: ClassVar[int] = 10_000

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        try:
            self._client = redis.Redis.from_url(
                config.url,
                socket_connect_timeout=_CONNECT_TIMEOUT,
                socket_timeout=_SOCKET_TIMEOUT,
                retry=_retry(),
            )
        except ValueError as exc:  # settings check the form; a config built in code may not be
            raise ConfigError(
                f"invalid online_store.url {redact_url(config.url)!r}: "
                f"{redact_text(str(exc), url_secrets(config.url))}; use "
                "redis://[user:password@]host:port/db",
                key="online_store.url",
                sources=(),
            ) from None
        kwargs = self._client.connection_pool.connection_kwargs
        self.address = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")

    def _masters(self) -> list[tuple[str, redis.Redis]]:
        return [(self.address, self._client)]

    def _plan(self, keys: pa.BinaryArray) -> Plan:
        n = len(keys)
        return None, [(s, min(s + KEYS_PER_CALL, n)) for s in range(0, n, KEYS_PER_CALL)]

    def _node(self, key: bytes) -> tuple[str, redis.Redis]:
        return self.address, self._client

    def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with unavailable(self.address):
            return cast(list[bytes | None], self._client.mget(keys))

    def _refresh(self) -> None:
        self._client.connection_pool.disconnect(inuse_connections=False)

    def ping(self, timeout: float) -> None:
        """Send ``PING`` on a connection of its own, opened and answered within ``timeout``.

        Raises:
            UnavailableError: If the server does not answer in time.
            ConfigError: If it has no database of the number the URL names.
        """
        probe = redis.Redis.from_url(self.config.url, **_probe_options(timeout))
        try:
            with unavailable(self.address):
                probe.ping()
        finally:
            probe.close()

    def close(self) -> None:
        """Close every connection."""
        self._client.close()


class RedisClusterOnlineStore(_RedisStore):
    """Online store on a Redis Cluster; keys spread over every slot (no hash tags).

    The cluster client connects on first use, so a store can be built while the cluster is
    down and starts working when it is up.
    """

    config_class: ClassVar[type[PluginConfig]] = RedisClusterConfig
    rows_per_piece: ClassVar[int] = 100_000
    """Larger than standalone: pieces are cut into per-slot calls, which want many keys."""

    def __init__(self, config: RedisClusterConfig) -> None:
        super().__init__(config)
        self.address = ",".join(config.startup_nodes)
        node_class: Any = ClusterNode  # not typed in redis-py
        self._nodes = [node_class(*_host_port(node)) for node in config.startup_nodes]
        self._cluster_client: RedisCluster | None = None
        self._lock = threading.Lock()

    @property
    def _cluster(self) -> Any:
        """The cluster client, created on first use (typed ``Any``: redis-py's is not typed)."""
        with self._lock:
            if self._cluster_client is None:
                with unavailable(self.address):
                    self._cluster_client = RedisCluster(
                        startup_nodes=self._nodes,
                        socket_connect_timeout=_CONNECT_TIMEOUT,
                        socket_timeout=_SOCKET_TIMEOUT,
                        retry=_retry(),
                    )
            return self._cluster_client

    def _masters(self) -> list[tuple[str, redis.Redis]]:
        cluster = self._cluster
        return [(node.name, cluster.get_redis_connection(node)) for node in cluster.get_primaries()]

    def _plan(self, keys: pa.BinaryArray) -> Plan:
        slots = np.fromiter(map(key_slot, keys.to_pylist()), dtype=np.int64, count=len(keys))
        order = np.argsort(slots, kind="stable")
        ordered = slots[order]
        starts = np.flatnonzero(np.diff(ordered, prepend=-1)).tolist()
        ends = [*starts[1:], len(keys)]
        bounds = [
            (s, min(s + KEYS_PER_CALL, end))
            for start, end in zip(starts, ends, strict=True)
            for s in range(start, end, KEYS_PER_CALL)
        ]
        return pa.array(order), bounds

    def _node(self, key: bytes) -> tuple[str, redis.Redis]:
        cluster = self._cluster
        with unavailable(self.address):
            node = cluster.get_node_from_key(key)
            return node.name, cluster.get_redis_connection(node)

    def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        cluster = self._cluster
        with unavailable(self.address):
            return list(cluster.mget_nonatomic(list(keys)))

    def _refresh(self) -> None:
        cluster = self._cluster
        with unavailable(self.address):
            cluster.nodes_manager.initialize()

    def ping(self, timeout: float) -> None:
        """Ask the startup nodes in turn for ``CLUSTER INFO``; ready when one says ``ok``.

        The first node that answers decides (a cluster that lost a slot's every copy says
        ``fail`` on every node); the nodes share ``timeout``.

        Raises:
            UnavailableError: If no node answers in time, or the cluster's state is not ok.
        """
        share = timeout / len(self._nodes)
        problem: Exception | None = None
        for node in self._nodes:
            probe = redis.Redis(host=node.host, port=node.port, **_probe_options(share))
            try:
                info = probe.cluster("INFO")
            except redis.RedisError as exc:
                problem = exc
                continue
            finally:
                probe.close()
            state = _cluster_state(info)
            if state == "ok":
                return
            raise UnavailableError(
                f"online store Redis Cluster at {self.address} is unavailable: node "
                f"{node.host}:{node.port} says cluster_state:{state}",
                address=self.address,
            )
        raise UnavailableError(
            f"online store Redis Cluster at {self.address} is unavailable: no startup node "
            f"answered within {timeout:g}s ({problem})",
            address=self.address,
        )

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            client, self._cluster_client = self._cluster_client, None
        if client is not None:
            client.close()


def _cluster_state(info: Any) -> str:
    """The ``cluster_state`` of a ``CLUSTER INFO`` reply (redis-py parses it to a dict or not)."""
    if isinstance(info, dict):
        return str(info.get("cluster_state", "unknown"))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key == "cluster_state":
            return value.strip()
    return "unknown"


def _node_not_url(url: str) -> str:
    """The reason a Redis URL is refused as a cluster node, with the ``host:port`` to write."""
    try:
        parts = urlsplit(url)
        address = f"{parts.hostname}:{parts.port}" if parts.hostname and parts.port else None
    except ValueError:
        address = None
    return (
        "a startup node is host:port, not a URL: redis_cluster supports only db 0 and takes no "
        f"credentials or URL options; write {address or 'host:port'}"
    )


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= MAX_PORT:
        raise ConfigError(
            f"invalid online_store.startup_nodes entry {redact_url(node)!r}: expected host:port "
            f"with a port from 1 to {MAX_PORT}",
            key="online_store.startup_nodes",
            sources=(),
        )
    return host, int(port)


__all__ = [
    "KEYS_PER_CALL",
    "RedisClusterConfig",
    "RedisClusterOnlineStore",
    "RedisConfig",
    "RedisOnlineStore",
    "WRITE_SCRIPT",
    "WRITE_SCRIPT_SHA",
]
