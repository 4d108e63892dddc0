"""The embedded online store: one SQLite file, safe for several writing processes.

One table holds every feature table's rows, keyed by the entity key (which starts with the
project and table, so a table's rows are one key range)::

    potluck_online(entity_key BLOB PRIMARY KEY, event_ts INTEGER, created_ts INTEGER NULL,
                   expire_at INTEGER NULL, record BLOB)          -- times in µs since the epoch

``record`` is the encoding of ``online/_values.py``. Newer wins in one statement,
``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` the new ``(event_ts, created_ts)`` is greater (or
equal, in ``WriteMode.RELOAD``; a null created time sorts first) or the stored row has expired,
run with ``executemany`` in one ``BEGIN IMMEDIATE`` transaction; rows expired already instead
delete the stored value they beat. The file is in WAL mode with a
busy timeout, so readers never block and writers from several processes queue up. Rows expired
(``expire_at < now``) are hidden on read and deleted by :meth:`SqliteOnlineStore.purge`;
``extend_expiry`` is one ``UPDATE`` of the table's key range.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Literal

import pyarrow as pa

from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import UnavailableError
from potluck.online._inputs import prepare_rows, requested_features
from potluck.online._values import (
    MAX_ABS_MICROS,
    NEVER,
    NULL_CREATED,
    decode_records,
    max_age_micros,
    now_micros,
)
from potluck.online.base import (
    EVENT_TIMESTAMP_COLUMN,
    OnlineStore,
    Pingable,
    WriteMode,
    WriteResult,
)
from potluck.online.codec import table_key_prefix
from potluck.types import TIMESTAMP_ARROW_TYPE

BUSY_TIMEOUT_MS = 60_000
"""How long a writer waits for another process's write transaction before failing."""
_KEYS_PER_QUERY = 500
_NULL_CREATED_SQL = str(NULL_CREATED)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS potluck_online (
    entity_key BLOB PRIMARY KEY NOT NULL,
    event_ts INTEGER NOT NULL,
    created_ts INTEGER,
    expire_at INTEGER,
    record BLOB NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS potluck_online_expire_at
    ON potluck_online (expire_at) WHERE expire_at IS NOT NULL;
"""


def _upsert(replaces: str) -> str:
    """The upsert statement where a row replaces a live stored one if its rank ``replaces`` it."""
    return f"""
INSERT INTO potluck_online (entity_key, event_ts, created_ts, expire_at, record)
VALUES (?1, ?2, ?3, ?4, ?5)
ON CONFLICT (entity_key) DO UPDATE SET
    event_ts = excluded.event_ts,
    created_ts = excluded.created_ts,
    expire_at = excluded.expire_at,
    record = excluded.record
WHERE (excluded.event_ts, coalesce(excluded.created_ts, {_NULL_CREATED_SQL}))
      {replaces} (potluck_online.event_ts, coalesce(potluck_online.created_ts, {_NULL_CREATED_SQL}))
   OR potluck_online.expire_at < ?6
"""


_UPSERTS = {WriteMode.NEWER: _upsert(">"), WriteMode.RELOAD: _upsert(">=")}


def _delete(loses: str) -> str:
    """The statement by which a row expired already deletes a stored value its rank beats."""
    return f"""
DELETE FROM potluck_online WHERE entity_key = ?1
AND ((event_ts, coalesce(created_ts, {_NULL_CREATED_SQL}))
     {loses} (?2, coalesce(?3, {_NULL_CREATED_SQL})) OR expire_at < ?4)
"""


_DELETES = {WriteMode.NEWER: _delete("<"), WriteMode.RELOAD: _delete("<=")}

_EXTEND = f"""
UPDATE potluck_online
SET expire_at = CASE WHEN event_ts + ?3 > {MAX_ABS_MICROS} THEN NULL ELSE event_ts + ?3 END
WHERE entity_key >= ?1 AND entity_key < ?2 AND expire_at >= ?4
  AND (event_ts + ?3 > {MAX_ABS_MICROS} OR event_ts + ?3 > expire_at)
"""
"""Give the live values of a key range ``[?1, ?2)`` the expiry ``event + ?3`` where later."""
_PERSIST = """
UPDATE potluck_online SET expire_at = NULL
WHERE entity_key >= ?1 AND entity_key < ?2 AND expire_at >= ?3
"""
"""Let the live values of a key range ``[?1, ?2)`` never expire."""


class SqliteConfig(PluginConfig):
    """Config of :class:`SqliteOnlineStore`."""

    type: Literal["sqlite"] = "sqlite"
    path: str = ".potluck/online.db"
    """The SQLite file; its folder is created if missing. Relative paths are resolved by the
    caller (against the config file's folder)."""


class SqliteOnlineStore(OnlineStore, Pingable):
    """Online store in one SQLite file (the embedded default).

    Each thread gets its own connection; any number of processes may write the same file.

    Example:
        >>> store = SqliteOnlineStore(SqliteConfig(path="/tmp/potluck-online.db"))
    """

    config_class: ClassVar[type[PluginConfig]] = SqliteConfig

    def __init__(self, config: SqliteConfig) -> None:
        super().__init__(config)
        self.path = Path(config.path).expanduser()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        with self._errors():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._connection().executescript(_SCHEMA)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.OperationalError, OSError) as exc:
            raise UnavailableError(
                f"online store SQLite at {self.path} is unavailable: {exc}", address=str(self.path)
            ) from exc

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            connection.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            connection.execute("PRAGMA journal_mode = WAL")
            connection.execute("PRAGMA synchronous = NORMAL")
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def ping(self, timeout: float) -> None:
        """Read the file's schema version (a local file: ``timeout`` is never reached).

        Raises:
            UnavailableError: If the file cannot be read.
        """
        with self._errors():
            self._connection().execute("PRAGMA schema_version").fetchone()

    def ensure_table(self, project: str, table: FeatureTable) -> None:
        """Nothing to do: every table shares one SQLite table, created with the store."""

    def drop_table(self, project: str, table: FeatureTable) -> int:
        """Delete the table's key range in one transaction; see :meth:`OnlineStore.drop_table`.

        Raises:
            UnavailableError: If the file cannot be written.
        """
        low, high = _key_range(project, table)
        with self._errors(), self._transaction() as connection:
            (live,) = connection.execute(
                "SELECT count(*) FROM potluck_online WHERE entity_key >= ? AND entity_key < ? "
                "AND (expire_at IS NULL OR expire_at >= ?)",
                (low, high, now_micros(None)),
            ).fetchone()
            connection.execute(
                "DELETE FROM potluck_online WHERE entity_key >= ? AND entity_key < ?", (low, high)
            )
        return int(live)

    def extend_expiry(self, project: str, table: FeatureTable) -> int:
        """Extend the expiry of the table's live values; see :meth:`OnlineStore.extend_expiry`.

        Raises:
            UnavailableError: If the file cannot be written.
        """
        low, high = _key_range(project, table)
        max_age_us = max_age_micros(table.max_age)
        now_us = now_micros(None)
        with self._errors(), self._transaction() as connection:
            if max_age_us is None:
                cursor = connection.execute(_PERSIST, (low, high, now_us))
            else:
                cursor = connection.execute(_EXTEND, (low, high, max_age_us, now_us))
        return max(cursor.rowcount, 0)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        connection = self._connection()
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield connection
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise

    def write(
        self,
        project: str,
        table: FeatureTable,
        rows: pa.RecordBatch,
        *,
        mode: WriteMode = WriteMode.NEWER,
    ) -> WriteResult:
        """Upsert ``rows`` in one transaction; see :meth:`OnlineStore.write`.

        Raises:
            DataValidationError: If ``rows`` do not fit ``table``; nothing is written.
            UnavailableError: If the file cannot be written.
        """
        now_us = now_micros(None)
        prepared = prepare_rows(table, rows, now_us)
        created = [None if c == NULL_CREATED else c for c in prepared.created_us.tolist()]
        expire = [None if e == NEVER else e for e in prepared.expire_us.tolist()]
        params = list(
            zip(
                prepared.keys.to_pylist(),
                prepared.event_us.tolist(),
                created,
                expire,
                prepared.records().to_pylist(),
                [now_us] * len(prepared.keys),
                strict=True,
            )
        )
        tombstones: list[tuple[object, ...]] = []
        if prepared.expired.any():
            gone = prepared.expired.tolist()
            pairs = list(zip(params, gone, strict=True))
            tombstones = [(p[0], p[1], p[2], now_us) for p, g in pairs if g]
            params = [p for p, g in pairs if not g]
        mode = WriteMode(mode)
        with self._errors(), self._transaction() as connection:
            written = connection.executemany(_UPSERTS[mode], params).rowcount
            if tombstones:
                connection.executemany(_DELETES[mode], tombstones)
        written = max(written, 0)
        return WriteResult(written=written, skipped=rows.num_rows - written)

    def read(
        self,
        project: str,
        table: FeatureTable,
        keys: Sequence[bytes],
        features: Sequence[str],
        *,
        now: datetime | None = None,
    ) -> pa.Table:
        """Read the features of each key, hiding values expired before ``now``.

        Raises:
            FeatureRefError: If ``table`` has no feature of a requested name.
            UnavailableError: If the file cannot be read.
        """
        wanted = requested_features(table, features)
        now_us = now_micros(now)
        found: dict[bytes, tuple[int, bytes]] = {}
        unique = list(dict.fromkeys(keys))
        with self._errors():
            connection = self._connection()
            for start in range(0, len(unique), _KEYS_PER_QUERY):
                chunk = unique[start : start + _KEYS_PER_QUERY]
                marks = ",".join("?" * len(chunk))
                for key, event, record in connection.execute(
                    "SELECT entity_key, event_ts, record FROM potluck_online "
                    f"WHERE entity_key IN ({marks}) AND (expire_at IS NULL OR expire_at >= ?)",
                    (*chunk, now_us),
                ):
                    found[key] = (event, record)
        rows = [found.get(key) for key in keys]
        columns = decode_records([None if r is None else r[1] for r in rows], 0, wanted)
        events = pa.array([None if r is None else r[0] for r in rows], TIMESTAMP_ARROW_TYPE)
        return pa.Table.from_arrays([*columns, events], names=[*features, EVENT_TIMESTAMP_COLUMN])

    def purge(self, now: datetime | None = None) -> int:
        """Delete every value expired before ``now`` (default: the current time).

        Returns:
            How many values were deleted.

        Raises:
            UnavailableError: If the file cannot be written.
        """
        with self._errors():
            cursor = self._connection().execute(
                "DELETE FROM potluck_online WHERE expire_at < ?", (now_micros(now),)
            )
        return cursor.rowcount

    def close(self) -> None:
        """Close the connections of every thread."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()


def _key_range(project: str, table: FeatureTable) -> tuple[bytes, bytes]:
    """Return ``[low, high)``: the range of every entity key of ``project``'s ``table``."""
    low = table_key_prefix(project, table.name)
    return low, low[:-1] + bytes([low[-1] + 1])


__all__ = ["SqliteConfig", "SqliteOnlineStore"]
