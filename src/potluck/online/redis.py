r"""Redis online stores: standalone and Cluster, sharing everything but how keys reach a node.

:class:`RedisOnlineStore` talks to one server, :class:`RedisClusterOnlineStore` to a Cluster.

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

**Newer wins, on the server.** Writes go through one Lua script (``EVALSHA``, loaded again by
itself on ``NOSCRIPT`` after a restart): it reads the current values of its keys with one
``MGET`` and sets only the rows whose ``(event, created)`` is greater, so concurrent writers and
any write order end with the newest row. Timestamps are compared as Lua doubles, exact within
2**53 µs of the epoch, the range ``online/_values.py`` accepts.

**Batching.** A write is validated whole, then encoded piece by piece (10,000 rows standalone)
and streamed: each script call carries up to 500 keys (consecutive rows standalone; in a Cluster
the rows of one hash slot, since a script's keys must share a slot, sent to that slot's master),
every call is sent before any reply is read, so Redis runs one piece while the next is encoded.
Calls that fail in a way a retry can fix (a dropped connection, ``NOSCRIPT``, a moved slot) are
sent again, which is safe because a write is idempotent.

**Expiry.** A value expires at ``event time + max_age``: ``SET ... PXAT`` with that instant
rounded up to the millisecond (Redis deletes it then), and reads also hide a value whose header
expiry is at or before ``now``. Without ``max_age`` the value is ``SET`` without expiry.

**Failures.** A connection, timeout or cluster error that outlasts the retries becomes
:class:`UnavailableError` naming the node (``host:port``). Connections are opened again on the
next call, so a store works again by itself when Redis is back.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import field_validator

from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import PluginDependencyError, UnavailableError
from potluck.online._values import (
    NEVER,
    PreparedRows,
    concat_elementwise,
    decode_records,
    fixed_width_binary,
    now_micros,
    prepare_rows,
    requested_features,
)
from potluck.online.base import EVENT_TIMESTAMP_COLUMN, OnlineStore, WriteResult
from potluck.online.codec import table_key_prefix
from potluck.types import TIMESTAMP_ARROW_TYPE

try:
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.cluster import ClusterNode, RedisCluster
    from redis.crc import key_slot
    from redis.exceptions import RedisClusterException
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised by a test that hides redis
    raise PluginDependencyError(
        "the redis online stores need the redis package, which is not installed; "
        "run: pip install 'potluck[redis]'",
        plugin="redis",
        extra="redis",
    ) from exc

WRITE_SCRIPT = """
local call, unpack_i8 = redis.call, struct.unpack
local keys = KEYS
local n = #keys
local current = call('MGET', unpack(keys))
local written = 0
for i = 1, n do
  local new, old = ARGV[i], current[i]
  local newer = true
  if old then
    local old_event, old_created = unpack_i8('<i8i8', old)
    local new_event, new_created = unpack_i8('<i8i8', new)
    newer = new_event > old_event or (new_event == old_event and new_created > old_created)
  end
  if newer then
    local at = ARGV[n + i]
    if at == '' then call('SET', keys[i], new) else call('SET', keys[i], new, 'PXAT', at) end
    written = written + 1
  end
end
return written
"""
"""KEYS: entity keys (one slot). ARGV: one value per key, then one PXAT (ms, '' = never) per key.
Returns how many keys it wrote."""
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT.encode()).hexdigest()
KEYS_PER_CALL = 500
"""Keys per script call: large enough that the call overhead vanishes, small enough that one
call never blocks Redis for long (about 1 ms)."""
HEADER = np.dtype([("event", "<i8"), ("created", "<i8"), ("expire", "<i8")])
"""The 24 bytes before each stored record: event, created and expiry times in µs."""
_HEADER = struct.Struct("<qqq")
_ATTEMPTS = 3
_CONNECT_TIMEOUT = 2.0
_SOCKET_TIMEOUT = 10.0
_GLOB_SPECIAL = re.compile(rb"([*?\[\]\\])")


@dataclass(frozen=True)
class _Call:
    """One script call, ready to send: its first key (for routing) and its RESP bytes."""

    first_key: bytes
    command: bytes


class RedisConfig(PluginConfig):
    """Config of :class:`RedisOnlineStore`."""

    type: Literal["redis"] = "redis"
    url: str = "redis://127.0.0.1:6379/0"
    """``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS)."""


class RedisClusterConfig(PluginConfig):
    """Config of :class:`RedisClusterOnlineStore`."""

    type: Literal["redis_cluster"] = "redis_cluster"
    startup_nodes: list[str]
    """``host:port`` of one or more cluster nodes; the rest are discovered."""

    @field_validator("startup_nodes")
    @classmethod
    def _check_nodes(cls, nodes: list[str]) -> list[str]:
        if not nodes:
            raise ValueError("give at least one node as 'host:port'")
        for node in nodes:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"{node!r} is not 'host:port'")
        return nodes


@contextmanager
def _unavailable(address: str) -> Iterator[None]:
    """Translate redis-py failures into :class:`UnavailableError` naming ``address``."""
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise UnavailableError(
            f"online store Redis at {address} is unavailable: {exc}", address=address
        ) from exc


class _RedisStore(OnlineStore):
    """Everything the standalone and Cluster stores share; subclasses say how to reach nodes."""

    address: str
    """Where the store lives, for error messages (``host:port``, comma-separated for Cluster)."""
    rows_per_piece: ClassVar[int]
    """Rows encoded and sent at a time: Redis runs one piece while the next is encoded."""

    @abstractmethod
    def _masters(self) -> list[tuple[str, redis.Redis]]:
        """Return ``(address, client)`` of every master node."""

    @abstractmethod
    def _plan(self, keys: pa.BinaryArray) -> tuple[pa.Array | None, list[tuple[int, int]]]:
        """Return a row order (``None``: as given) and the calls over rows in that order.

        Each call is ``[start, end)``: at most :data:`KEYS_PER_CALL` keys, all of one slot.
        """

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
            with _unavailable(address):
                client.script_load(WRITE_SCRIPT)

    def drop_table(self, project: str, table: FeatureTable) -> None:
        """UNLINK every key that starts with the table's prefix, on every master.

        Raises:
            UnavailableError: If a node cannot be reached.
        """
        pattern = _GLOB_SPECIAL.sub(rb"\\\1", table_key_prefix(project, table.name)) + b"*"
        for address, client in self._masters():
            with _unavailable(address):
                batch: list[bytes] = []
                for key in client.scan_iter(match=pattern, count=1000):
                    batch.append(key)
                    if len(batch) == KEYS_PER_CALL:
                        _unlink(client, batch)
                        batch = []
                _unlink(client, batch)

    def write(self, project: str, table: FeatureTable, rows: pa.RecordBatch) -> WriteResult:
        """Upsert ``rows`` through the newer-wins script; see :meth:`OnlineStore.write`.

        The whole batch is validated first; then pieces are encoded and streamed to Redis, which
        runs one piece while the next is encoded.

        Raises:
            DataValidationError: If ``rows`` do not fit ``table``; nothing is written.
            UnavailableError: If a node cannot be reached (after re-sending twice).
        """
        prepared = prepare_rows(table, rows, now_micros(None))
        stream = _Stream(self)
        try:
            for start in range(0, len(prepared), self.rows_per_piece):
                stop = start + self.rows_per_piece
                stream.send(self._calls(prepared, start, stop))
            written, failures = stream.finish()
        finally:
            stream.release()
        written += self._resend(failures)
        return WriteResult(written=written, skipped=prepared.skipped + len(prepared) - written)

    def _calls(self, prepared: PreparedRows, start: int, stop: int) -> list[_Call]:
        """Encode rows ``[start, stop)`` as script calls, vectorised.

        Each argument is framed as a RESP bulk string in Arrow; a call's keys (and values,
        and expiries) are then consecutive bytes of one buffer, so building a call's command
        is joining four slices, with no Python work per row.
        """
        keys, frames = _frames(prepared, start, stop)
        order, bounds = self._plan(keys)
        if order is not None:
            keys = keys.take(order)
            frames = [frame.take(order) for frame in frames]
        views = [_view(frame) for frame in frames]
        calls = []
        for begin, end in bounds:
            parts: list[bytes | memoryview] = [_command_head(end - begin)]
            parts.extend(data[offsets[begin] : offsets[end]] for data, offsets in views)
            calls.append(_Call(keys[begin].as_py(), b"".join(parts)))
        return calls

    def _resend(self, failures: list[_Failure]) -> int:
        """Re-send failed calls after fixing what a retry can fix; return rows they wrote.

        Re-sending is safe: a call that did run finds its rows stored and skips them.
        """
        written = 0
        for _ in range(_ATTEMPTS - 1):
            if not failures:
                return written
            refresh = False
            loaded: set[str] = set()
            for failure in failures:
                if isinstance(failure.error, redis.exceptions.NoScriptError):
                    if failure.address not in loaded:
                        with _unavailable(failure.address):
                            failure.client.script_load(WRITE_SCRIPT)
                        loaded.add(failure.address)
                elif isinstance(failure.error, _TRANSIENT):
                    refresh = True
                else:
                    with _unavailable(failure.address):
                        raise failure.error
            if refresh:
                self._refresh()
            stream = _Stream(self)
            try:
                stream.send([failure.call for failure in failures])
                more, failures = stream.finish()
            finally:
                stream.release()
            written += more
        if not failures:
            return written
        first = failures[0]
        raise UnavailableError(
            f"online store Redis at {first.address} is unavailable: {first.error}",
            address=first.address,
        ) from first.error

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
                event, _, expire = _HEADER.unpack_from(value)
                if expire > now_us:
                    events.append(event)
                    continue
                stored[i] = None
            events.append(None)
        columns = decode_records(stored, _HEADER.size, wanted)
        names = [*features, EVENT_TIMESTAMP_COLUMN]
        return pa.Table.from_arrays([*columns, pa.array(events, TIMESTAMP_ARROW_TYPE)], names=names)


_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""Failures a refresh and a re-send can fix: a dropped connection, a moved slot, a cluster
that is settling."""


def _frames(prepared: PreparedRows, start: int, stop: int) -> tuple[pa.BinaryArray, list[pa.Array]]:
    """Return the keys of rows ``[start, stop)`` and the RESP frames of the script arguments.

    The frames are of the keys, the values (header + record) and the PXAT milliseconds ('' when
    the value never expires).
    """
    event = prepared.event_us[start:stop]
    header = np.empty(len(event), dtype=HEADER)
    header["event"] = event
    header["created"] = prepared.created_us[start:stop]
    expire = prepared.expire_us[start:stop]
    header["expire"] = expire
    values = prepared.records(start, stop, prefix=fixed_width_binary(header))
    never = expire == NEVER
    millis = pa.array(-(-np.where(never, 0, expire) // 1000)).cast(pa.string())
    expire_at = pc.if_else(pa.array(never), "", millis).cast(pa.binary())
    keys = prepared.keys.slice(start, len(event))
    return keys, [_bulk_strings(keys), _bulk_strings(values), _bulk_strings(expire_at)]


_DOLLAR = pa.scalar(b"$", pa.binary())
_CRLF = pa.scalar(b"\r\n", pa.binary())


def _bulk_strings(values: pa.Array) -> pa.BinaryArray:
    """Frame each element as a RESP bulk string: ``$``, length, CRLF, bytes, CRLF."""
    lengths = pc.binary_length(values).cast(pa.string()).cast(pa.binary())
    return concat_elementwise([_DOLLAR, lengths, _CRLF, values, _CRLF])


def _view(frames: pa.BinaryArray) -> tuple[memoryview, npt.NDArray[np.int32]]:
    """The data buffer of a binary array and each element's start offset in it (and the end)."""
    _, offsets_buffer, data = frames.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int32, len(frames) + 1, 4 * frames.offset)
    return memoryview(data), offsets


def _command_head(keys: int) -> bytes:
    """RESP for ``EVALSHA <sha> <keys>``, the start of a call with ``keys`` keys."""
    count = str(keys).encode()
    return b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
        3 + 3 * keys,
        WRITE_SCRIPT_SHA.encode(),
        len(count),
        count,
    )


@dataclass(frozen=True)
class _Failure:
    """A script call that failed, where, and why."""

    call: _Call
    address: str
    client: redis.Redis
    error: Exception


@dataclass
class _Node:
    """One node's connection in a stream and the calls sent on it, in order."""

    client: redis.Redis
    connection: Any
    calls: list[_Call] = field(default_factory=list)
    error: Exception | None = None
    """Why the connection was given up, if it was."""


class _Stream:
    """Script calls streamed on one connection per node; :meth:`finish` reads every reply.

    Sending everything before reading lets Redis run the first calls while the rest are
    encoded and packed; the replies are small integers, so nothing blocks.
    """

    def __init__(self, store: _RedisStore) -> None:
        self._store = store
        self._nodes: dict[str, _Node] = {}
        self._failures: list[_Failure] = []

    def send(self, calls: list[_Call]) -> None:
        """Send ``calls``, each to the master of its slot, without waiting for replies."""
        for call in calls:
            address, client = self._store._node(call.first_key)
            node = self._nodes.get(address)
            if node is not None and node.error is not None:
                self._failures.append(_Failure(call, address, client, node.error))
                continue
            try:
                if node is None:
                    connection = client.connection_pool.get_connection()
                    node = self._nodes[address] = _Node(client, connection)
                node.connection.send_packed_command([call.command], check_health=False)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self._broken(address, client, exc)
                self._failures.append(_Failure(call, address, client, exc))
                continue
            node.calls.append(call)

    def _broken(self, address: str, client: redis.Redis, error: Exception) -> None:
        """Give up on a node's connection: every call sent on it and still unread failed."""
        node = self._nodes.setdefault(address, _Node(client, None))
        if node.connection is not None:
            node.connection.disconnect()
            client.connection_pool.release(node.connection)
            node.connection = None
        node.error = error
        self._failures.extend(_Failure(call, address, client, error) for call in node.calls)
        node.calls = []

    def finish(self) -> tuple[int, list[_Failure]]:
        """Read every reply; return rows written and the calls that failed."""
        written = 0
        for address, node in self._nodes.items():
            for i, call in enumerate(node.calls):
                try:
                    reply = node.connection.read_response()
                except redis.ResponseError as exc:
                    self._failures.append(_Failure(call, address, node.client, exc))
                    continue
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    node.calls = node.calls[i:]
                    self._broken(address, node.client, exc)
                    break
                written += int(reply)
            node.calls = []
        return written, self._failures

    def release(self) -> None:
        """Return the connections to their pools (closing any left with unread replies)."""
        for node in self._nodes.values():
            if node.connection is not None:
                if node.calls:
                    node.connection.disconnect()
                node.client.connection_pool.release(node.connection)
                node.connection = None


def _unlink(client: redis.Redis, keys: list[bytes]) -> None:
    """UNLINK ``keys`` one per command (a Cluster node refuses keys of several slots)."""
    if not keys:
        return
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.unlink(key)
    pipe.execute()


def _retry() -> Retry:
    """Retry a failed command twice, quickly: enough to reopen a connection Redis dropped."""
    return Retry(ExponentialBackoff(cap=0.1, base=0.01), 2)


class RedisOnlineStore(_RedisStore):
    """Online store on one Redis server.

    Example:
        >>> store = RedisOnlineStore(RedisConfig(url="redis://127.0.0.1:6379/0"))
    """

    config_class: ClassVar[type[PluginConfig]] = RedisConfig
    rows_per_piece: ClassVar[int] = 10_000

    def __init__(self, config: RedisConfig) -> None:
        super().__init__(config)
        self._client = redis.Redis.from_url(
            config.url,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_SOCKET_TIMEOUT,
            retry=_retry(),
        )
        kwargs = self._client.connection_pool.connection_kwargs
        self.address = str(kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}")

    def _masters(self) -> list[tuple[str, redis.Redis]]:
        return [(self.address, self._client)]

    def _plan(self, keys: pa.BinaryArray) -> tuple[pa.Array | None, list[tuple[int, int]]]:
        n = len(keys)
        return None, [(s, min(s + KEYS_PER_CALL, n)) for s in range(0, n, KEYS_PER_CALL)]

    def _node(self, key: bytes) -> tuple[str, redis.Redis]:
        return self.address, self._client

    def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        with _unavailable(self.address):
            return cast(list[bytes | None], self._client.mget(keys))

    def _refresh(self) -> None:
        self._client.connection_pool.disconnect(inuse_connections=False)

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
                with _unavailable(self.address):
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

    def _plan(self, keys: pa.BinaryArray) -> tuple[pa.Array | None, list[tuple[int, int]]]:
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
        with _unavailable(self.address):
            node = cluster.get_node_from_key(key)
            return node.name, cluster.get_redis_connection(node)

    def _mget(self, keys: Sequence[bytes]) -> list[bytes | None]:
        cluster = self._cluster
        with _unavailable(self.address):
            return list(cluster.mget_nonatomic(list(keys)))

    def _refresh(self) -> None:
        cluster = self._cluster
        with _unavailable(self.address):
            cluster.nodes_manager.initialize()

    def close(self) -> None:
        """Close every connection."""
        with self._lock:
            client, self._cluster_client = self._cluster_client, None
        if client is not None:
            client.close()


def _host_port(node: str) -> tuple[str, int]:
    host, _, port = node.rpartition(":")
    return host, int(port)


__all__ = [
    "KEYS_PER_CALL",
    "RedisClusterConfig",
    "RedisClusterOnlineStore",
    "RedisConfig",
    "RedisOnlineStore",
    "WRITE_SCRIPT",
]
