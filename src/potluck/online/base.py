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
        skipped: Rows not written: the store already held a newer or equal value, a newer row
            of the same key came in the same batch, or the row had expired already
            (``event_timestamp + max_age <= now``). ``written + skipped`` is the batch size.
    """

    written: int
    skipped: int


class OnlineStore(ABC):
    """Latest value per entity key for each (project, feature table).

    Newer wins: a row replaces the stored one only if its ``(event_timestamp, created_timestamp)``
    is greater (a null created timestamp sorts first). A stored value expires at
    ``event_timestamp + table.max_age`` (never when ``max_age`` is None) and then reads as absent.
    """

    config_class: ClassVar[type[PluginConfig]]

    def __init__(self, config: Any) -> None:
        self.config = config

    @abstractmethod
    def ensure_table(self, project: str, table: FeatureTable) -> None:
        """Prepare storage for ``table``; idempotent."""

    @abstractmethod
    def drop_table(self, project: str, table: FeatureTable) -> None:
        """Delete every stored value of ``table``."""

    @abstractmethod
    def write(self, project: str, table: FeatureTable, rows: pa.RecordBatch) -> WriteResult:
        """Upsert ``rows``, newer wins, atomically per key.

        Args:
            project: The table's project.
            table: The table; its ``max_age`` sets expiry.
            rows: Columns ``entity_key`` (binary, from ``online.codec``), ``event_timestamp``,
                ``created_timestamp`` (timestamp[us, UTC], nullable) and one column per feature
                of the table, typed as ``potluck.types.to_arrow_type`` says. Keys may repeat;
                the newest row per key wins.

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

        A key with no live value (never written, or expired at ``now``, which defaults to the
        current time) gives a row whose ``event_timestamp`` is null. A value expires at its
        ``event_timestamp`` plus the ``max_age`` the table had when it was written.

        Raises:
            UnavailableError: If the store cannot be reached.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default does nothing."""
