r"""Writing to Redis: the newer-wins Lua script, and prepared rows streamed to it in batches.

One job: send :class:`PreparedRows` to the masters that own their keys as ``EVALSHA`` calls of
:data:`WRITE_SCRIPT`, and return how many rows Redis wrote. ``online/redis.py`` validates the
batch before and says where each key goes (:class:`Routing`); the stored value layout
(:data:`HEADER` then the record) is described there.

**Newer wins, on the server.** The script (loaded again by itself on ``NOSCRIPT`` after a
restart) reads the current values of its keys with one ``MGET`` and sets only the rows whose
``(event, created)`` is greater (or equal, in ``WriteMode.RELOAD``), so concurrent writers and
any write order end with the newest row; a row that expired already deletes the stored value it
beats instead (``PreparedRows.expired``). Timestamps are compared as Lua doubles, exact within
2**53 µs of the epoch, the range ``online/_values.py`` accepts.

**Batching.** Rows are encoded piece by piece (``rows_per_piece``) and streamed: each script call
carries up to :data:`KEYS_PER_CALL` keys (consecutive rows standalone; in a Cluster the rows of
one hash slot, since a script's keys must share a slot, sent to that slot's master), every call
is sent before any reply is read, so Redis runs one piece while the next is encoded. Each
argument is framed as a RESP bulk string in Arrow, so building a call is joining slices of a few
buffers, with no Python work per row.

**Re-sending.** Calls that fail in a way a retry can fix (a dropped connection, ``NOSCRIPT``, a
moved slot) are sent again, which is safe because a write is idempotent. A failure that outlasts
the retries becomes :class:`UnavailableError` naming the node.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.exceptions import RedisClusterException

from potluck.errors import ConfigError, UnavailableError
from potluck.online._binary import binary_buffers, concat_elementwise, fixed_width_binary
from potluck.online._inputs import PreparedRows
from potluck.online._values import NEVER
from potluck.online.base import WriteMode

WRITE_SCRIPT = """
local call, unpack_i8 = redis.call, struct.unpack
local keys = KEYS
local n = #keys
local reload = ARGV[2 * n + 1] == '1'
local current = call('MGET', unpack(keys))
local written = 0
for i = 1, n do
  local new, old = ARGV[i], current[i]
  local newer = true
  if old then
    local old_event, old_created = unpack_i8('<i8i8', old)
    local new_event, new_created = unpack_i8('<i8i8', new)
    newer = new_event > old_event or (new_event == old_event and (new_created > old_created
      or (reload and new_created == old_created)))
  end
  if newer then
    local at = ARGV[n + i]
    if at == '-' then
      if old then call('DEL', keys[i]) end
    else
      if at == '' then call('SET', keys[i], new) else call('SET', keys[i], new, 'PXAT', at) end
      written = written + 1
    end
  end
end
return written
"""
"""KEYS: entity keys (one slot). ARGV: one value per key, then one PXAT per key (ms; '' = never;
'-' = the row expired already, so where it wins the stored value is deleted and nothing is set),
then '1' to rewrite ties (``WriteMode.RELOAD``) or '0'. Returns how many keys it set."""
WRITE_SCRIPT_SHA = hashlib.sha1(WRITE_SCRIPT.encode()).hexdigest()
KEYS_PER_CALL = 500
"""Keys per script call: large enough that the call overhead vanishes, small enough that one
call never blocks Redis for long (about 1 ms)."""
HEADER = np.dtype([("event", "<i8"), ("created", "<i8"), ("expire", "<i8")])
"""The 24 bytes before each stored record: event, created and expiry times in µs."""
HEADER_STRUCT = struct.Struct("<qqq")
""":data:`HEADER` as a ``struct``, to read one value's header."""
_ATTEMPTS = 3
_TRANSIENT = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
)
"""Failures a refresh and a re-send can fix: a dropped connection, a moved slot, a cluster
that is settling."""
_NO_SUCH_DATABASE = "DB index is out of range"
"""What Redis answers to ``SELECT`` of a database it does not have."""

Plan = tuple[pa.Array | None, list[tuple[int, int]]]
"""A row order (``None``: as given) and the calls over rows in that order, each ``[start, end)``
with at most :data:`KEYS_PER_CALL` keys, all of one slot."""


@dataclass(frozen=True)
class Routing:
    """Where a store's keys go: the store's part of a write (bound methods of the store)."""

    plan: Callable[[pa.BinaryArray], Plan]
    """Cut a piece's keys into calls."""
    node: Callable[[bytes], tuple[str, redis.Redis]]
    """Return ``(address, client)`` of the master that owns a key."""
    refresh: Callable[[], None]
    """Forget cached topology or connections after a failure."""


@contextmanager
def unavailable(address: str) -> Iterator[None]:
    """Translate redis-py failures into :class:`UnavailableError` naming ``address``.

    A database the server does not have (a ``redis://host:port/DB`` beyond its ``databases``)
    is a :class:`ConfigError` naming ``online_store.url`` instead: retrying cannot help.
    """
    try:
        yield
    except (redis.RedisError, RedisClusterException) as exc:
        raise _unavailable_error(address, exc) from exc


def _unavailable_error(address: str, error: Exception) -> UnavailableError | ConfigError:
    if isinstance(error, redis.ResponseError) and _NO_SUCH_DATABASE in str(error):
        # A database number the settings check cannot know to be too high: servers differ.
        return ConfigError(
            f"online store Redis at {address} has no database of the number online_store.url "
            f"names ({error}); choose one the server has (0 to 15, unless its 'databases' "
            "setting allows more)",
            key="online_store.url",
            sources=(),
        )
    return UnavailableError(
        f"online store Redis at {address} is unavailable: {error}", address=address
    )


def load_script(address: str, client: redis.Redis) -> None:
    """Load :data:`WRITE_SCRIPT` on the node ``client`` talks to.

    Raises:
        UnavailableError: If the node cannot be reached.
    """
    with unavailable(address):
        client.script_load(WRITE_SCRIPT)


def write_rows(
    prepared: PreparedRows, routing: Routing, rows_per_piece: int, mode: WriteMode
) -> int:
    """Write ``prepared`` through the newer-wins script; return how many rows Redis wrote.

    Pieces of ``rows_per_piece`` rows are encoded and streamed, so Redis runs one piece while
    the next is encoded; failed calls are re-sent (twice at most). ``mode`` says whether rows
    equal to the stored ones are rewritten.

    Raises:
        UnavailableError: If a node cannot be reached, or a call still fails after re-sending.
    """
    stream = _Stream(routing.node)
    tail = _RELOAD_ARG if mode is WriteMode.RELOAD else _NEWER_ARG
    try:
        for start in range(0, len(prepared), rows_per_piece):
            stream.send(_calls(prepared, start, start + rows_per_piece, routing.plan, tail))
        written, failures = stream.finish()
    finally:
        stream.release()
    return written + _resend(failures, routing)


@dataclass(frozen=True)
class _Call:
    """One script call, ready to send: its first key (for routing) and its RESP bytes."""

    first_key: bytes
    command: bytes


_NEWER_ARG = b"$1\r\n0\r\n"
_RELOAD_ARG = b"$1\r\n1\r\n"
"""The script's last argument, framed: whether ties are rewritten."""


def _calls(
    prepared: PreparedRows,
    start: int,
    stop: int,
    plan: Callable[[pa.BinaryArray], Plan],
    tail: bytes,
) -> list[_Call]:
    """Encode rows ``[start, stop)`` as script calls, vectorised.

    A call's keys (and values, and expiries) are consecutive bytes of one buffer of RESP
    frames, so building a call's command is joining four slices and the framed ``tail``
    argument.
    """
    keys, frames = _frames(prepared, start, stop)
    order, bounds = plan(keys)
    if order is not None:
        keys = keys.take(order)
        frames = [frame.take(order) for frame in frames]
    views = [_view(frame) for frame in frames]
    calls = []
    for begin, end in bounds:
        parts: list[bytes | memoryview] = [_command_head(end - begin)]
        parts.extend(data[offsets[begin] : offsets[end]] for data, offsets in views)
        parts.append(tail)
        calls.append(_Call(keys[begin].as_py(), b"".join(parts)))
    return calls


def _frames(prepared: PreparedRows, start: int, stop: int) -> tuple[pa.BinaryArray, list[pa.Array]]:
    """Return the keys of rows ``[start, stop)`` and the RESP frames of the script arguments.

    The frames are of the keys, the values (header + record) and the PXAT milliseconds ('' when
    the value never expires, '-' when it has expired already).
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
    expire_at = pc.if_else(pa.array(never), "", millis)
    expired = prepared.expired[start:stop]
    if expired.any():
        expire_at = pc.if_else(pa.array(expired), "-", expire_at)
    expire_at = expire_at.cast(pa.binary())
    keys = prepared.keys.slice(start, len(event))
    return keys, [_bulk_strings(keys), _bulk_strings(values), _bulk_strings(expire_at)]


_DOLLAR = pa.scalar(b"$", pa.binary())
_CRLF = pa.scalar(b"\r\n", pa.binary())


def _bulk_strings(values: pa.Array) -> pa.BinaryArray:
    """Frame each element as a RESP bulk string: ``$``, length, CRLF, bytes, CRLF."""
    lengths = pc.binary_length(values).cast(pa.string()).cast(pa.binary())
    return concat_elementwise([_DOLLAR, lengths, _CRLF, values, _CRLF])


def _view(frames: pa.BinaryArray) -> tuple[memoryview, npt.NDArray[np.int32]]:
    """The data of a binary array, as a memoryview, and each element's start offset in it."""
    data, offsets = binary_buffers(frames)
    return memoryview(data), offsets


def _command_head(keys: int) -> bytes:
    """RESP for ``EVALSHA <sha> <keys>``, the start of a call with ``keys`` keys."""
    count = str(keys).encode()
    return b"*%d\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$%d\r\n%s\r\n" % (
        4 + 3 * keys,
        WRITE_SCRIPT_SHA.encode(),
        len(count),
        count,
    )


def _resend(failures: list[_Failure], routing: Routing) -> int:
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
                    load_script(failure.address, failure.client)
                    loaded.add(failure.address)
            elif isinstance(failure.error, _TRANSIENT):
                refresh = True
            else:
                with unavailable(failure.address):
                    raise failure.error
        if refresh:
            routing.refresh()
        stream = _Stream(routing.node)
        try:
            stream.send([failure.call for failure in failures])
            more, failures = stream.finish()
        finally:
            stream.release()
        written += more
    if not failures:
        return written
    first = failures[0]
    raise _unavailable_error(first.address, first.error) from first.error


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

    def __init__(self, node: Callable[[bytes], tuple[str, redis.Redis]]) -> None:
        self._node = node
        self._nodes: dict[str, _Node] = {}
        self._failures: list[_Failure] = []

    def send(self, calls: list[_Call]) -> None:
        """Send ``calls``, each to the master of its slot, without waiting for replies."""
        for call in calls:
            address, client = self._node(call.first_key)
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
