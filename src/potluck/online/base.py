"""The OnlineStore interface: the latest value per entity key for each feature table.

Stores hold data; they never look definitions up. They move encoded keys (``online/codec.py``)
and Arrow batches, so every store agrees on what a key is. Every implementation passes
``potluck.testing.online_store_contract.OnlineStoreContract`` on a real server.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any, ClassVar

import pyarrow as pa

from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable

ENTITY_KEY_COLUMN = "entity_key"
EVENT_TIMESTAMP_COLUMN = "event_timestamp"
CREATED_TIMESTAMP_COLUMN = "created_timestamp"


@dataclass(frozen=True)
class WriteResult:
    """What one :meth:`OnlineStore.write` did.

    Attributes:
        written: Rows that replaced the stored value or created it.
        skipped: Rows not written: the store already held a newer value (or an equal one, in
            :attr:`WriteMode.NEWER`), a newer row of the same key came in the same batch, or the
            row had expired already (``event_timestamp + max_age < now``).
            ``written + skipped`` is the batch size.
    """

    written: int
    skipped: int


class WriteMode(str, Enum):
    """When a written row replaces the value a store holds for its key."""

    NEWER = "newer"
    """Only if the row is newer: its ``(event_timestamp, created_timestamp)`` is greater. Rows
    equal to the stored one are skipped, so replaying a batch or a stream writes nothing."""
    RELOAD = "reload"
    """Unless the stored value is newer: rows equal to it are rewritten too (``ingest-online
    --full``), so values stored under an older definition are written again under the current
    one. A strictly newer stored value still wins, whoever wrote it."""


class OnlineStore(ABC):
    """Latest value per entity key for each (project, feature table).

    Newer wins: a row replaces the stored one only if its ``(event_timestamp, created_timestamp)``
    is greater (a null created timestamp sorts first; :class:`WriteMode` says what happens on a
    tie). A stored value expires at ``event_timestamp + table.max_age`` (never when ``max_age`` is
    None), counted with the ``max_age`` it was written under or a longer one that
    :meth:`extend_expiry` gave it: it reads as present up to and including that instant and as
    absent after it, when the store may delete it.
    """

    config_class: ClassVar[type[PluginConfig]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def ensure_table(self, project: str, table: FeatureTable) -> None:
        """Prepare storage for ``table``; idempotent."""

    @abstractmethod
    def drop_table(self, project: str, table: FeatureTable) -> int:
        """Delete every stored value of ``table`` (``potluck online purge``).

        Returns:
            How many values were deleted that a read would have returned (values already
            expired are deleted too, uncounted).

        Raises:
            UnavailableError: If the store cannot be reached.
        """

    @abstractmethod
    def write(
        self,
        project: str,
        table: FeatureTable,
        rows: pa.RecordBatch,
        *,
        mode: WriteMode = WriteMode.NEWER,
    ) -> WriteResult:
        """Upsert ``rows``, atomically per key: newer wins, ties as ``mode`` says.

        Args:
            project: The table's project.
            table: The table; its ``max_age`` sets expiry.
            rows: Columns ``entity_key`` (binary, from ``online.codec``), ``event_timestamp``,
                ``created_timestamp`` (timestamp[us, UTC], nullable) and one column per feature
                of the table, typed as ``potluck.types.to_arrow_type`` says. Keys may repeat;
                the newest row per key wins (the first of exact ties).
            mode: Whether a row equal to the stored value replaces it.

        Raises:
            UnavailableError: If the store cannot be reached.
        """

    @abstractmethod
    def extend_expiry(self, project: str, table: FeatureTable) -> int:
        """Let every stored value of ``table`` live as long as ``table.max_age`` now allows.

        Run when a table's ``max_age`` is raised or removed (``Client.apply`` does, before the
        new definition is stored): each live value's expiry becomes ``event_timestamp +
        table.max_age`` (never, without ``max_age``) where that is later, atomically per key, so
        physical expiry never cuts a value that a read under the new definition returns. Expiry
        is never shortened (after a lowered ``max_age`` reads withhold old values as
        ``OUTSIDE_MAX_AGE``), and values expired already are not restored.

        Returns:
            How many values got a later expiry.

        Raises:
            UnavailableError: If the store cannot be reached.
        """

    @abstractmethod
    def read(
        self,
        project: str,
        table: FeatureTable,
        keys: Sequence[bytes],
        features: Sequence[str],
        *,
        now: datetime | None = None,
    ) -> pa.Table:
        """Return one row per key, in order: the requested features and ``event_timestamp``.

        A key with no live value (never written, or expired before ``now``, which defaults to
        the current time) gives a row whose ``event_timestamp`` is null. A value expires at its
        ``event_timestamp`` plus the ``max_age`` the table had when it was written, or the longer
        one :meth:`extend_expiry` gave it. Values are decoded by the type they were written with
        and widened to the feature's current type where that is a lossless widening
        (``potluck.types.is_lossless_widening``); other mismatched values read as null.

        Raises:
            UnavailableError: If the store cannot be reached.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""


class Pingable(ABC):
    """An optional ability: say cheaply, within a deadline, whether the store answers.

    Serving's readiness check (``GET /health``, the gRPC health service) calls :meth:`ping`; a
    store without this ability is taken to be ready whenever the process serves. Built-in stores
    all have it; check with ``isinstance(store, Pingable)``.
    """

    @abstractmethod
    def ping(self, timeout: float) -> None:
        """Return once the store has answered a trivial request, within ``timeout`` seconds.

        It must not wait on the store's usual timeouts or retries: a health check asks it at
        most about once a second and must answer quickly either way.

        Args:
            timeout: Seconds to wait for the store, at most (connecting included).

        Raises:
            UnavailableError: If the store does not answer in time; the message names it.
        """
