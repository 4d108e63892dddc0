"""The OfflineStore interface: reading batch sources for online ingestion and training sets.

The batch sources (Parquet files written by ``ingest()``) are the offline store; an offline store
is the engine that reads them. Stores never look definitions up: they are handed resolved
:class:`~potluck.definitions.FeatureTable` objects and :class:`~potluck.offline.pit.FeatureRequest`
objects. Every engine renders the same point-in-time plan (``offline/pit.py``), so they agree on
the semantics, which ``tests/property`` checks against ``potluck.testing.reference``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa

from potluck.config import PluginConfig
from potluck.definitions.feature_table import FeatureTable
from potluck.offline.inputs import InputData
from potluck.offline.pit import FeatureRequest
from potluck.offline.retrieval import RetrievalJob

EVENT_TIMESTAMP_COLUMN = "event_timestamp"
CREATED_TIMESTAMP_COLUMN = "created_timestamp"
INGESTION_ID_COLUMN = "ingestion_id"
"""Column names of :meth:`OfflineStore.read_range` batches besides entities and features;
``ingestion_id`` is also the column ``ingest()`` adds to every row it writes."""


@dataclass(frozen=True)
class SourceVersion:
    """One batch source at one version: what an offline-to-online job reads.

    Attributes:
        source_id: Identifies the source: its location and its table's id. A job's watermark
            only counts jobs that read the same source, so moving a table to another path or
            recreating its folder starts the since-last sequence afresh instead of skipping
            the new table's first versions.
        version: The latest committed version; ``None`` for a plain Parquet folder (written by
            other tools, no log), which jobs read whole.
    """

    source_id: str
    version: int | None


class OfflineStore(ABC):
    """Reads feature tables' batch sources.

    Args:
        config: The store's validated config (an instance of :attr:`config_class`).
        root: The folder relative batch-source paths are resolved against (the settings'
            ``root``); ``None`` resolves them against the working folder.
    """

    config_class: ClassVar[type[PluginConfig]]

    def __init__(self, config: Any, *, root: Path | None = None) -> None:
        self.config = config
        self.root = root

    @abstractmethod
    def read_range(
        self,
        table: FeatureTable,
        start: datetime | None,
        end: datetime | None,
        *,
        version: int | None = None,
        since_version: int | None = None,
        batch_size: int = 65_536,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the rows of ``table``'s batch source with ``start <= event time < end``.

        Args:
            table: The feature table; it must have a batch source.
            start: Inclusive lower bound on event time, or ``None``; naive means UTC.
            end: Exclusive upper bound on event time, or ``None``; naive means UTC.
            version: Read the source's table at this version (see :meth:`source_version`);
                ``None`` reads the latest. Must be ``None`` for a plain Parquet folder.
            since_version: When set, only rows committed after this version (the watermark of
                ``--since-last`` jobs); if that version's log entry is gone, every row.
            batch_size: The most rows per batch; memory is bounded by it, not by the range.

        Returns:
            Batches (in no particular order) with one column per entity (the source's type),
            one per feature (its value type's Arrow type), ``event_timestamp`` and
            ``created_timestamp`` (``timestamp[us, UTC]``; created is null when the source has
            none) and ``ingestion_id`` (string), all named after the table's definitions
            (``field_mapping`` applied).

        Raises:
            ValidationError: If the table has no batch source, its location does not exist,
                ``start`` is not before ``end``, or ``version`` does not exist.
            DataValidationError: If the source lacks a key or timestamp column, or a value does
                not fit its feature's type.
        """

    @abstractmethod
    def source_version(self, table: FeatureTable) -> SourceVersion:
        """Return which batch source ``table`` reads now, and its latest committed version.

        Raises:
            ValidationError: If the table has no batch source or its location does not exist.
        """

    @abstractmethod
    def get_historical_features(
        self,
        entity_source: InputData,
        requests: Sequence[FeatureRequest],
        *,
        versions: Mapping[str, int] | None = None,
    ) -> RetrievalJob:
        """Return a training set: the point-in-time join of entity rows with feature tables.

        The entity rows are read and validated here (bad input fails now, not when the job is
        read); the semantics are those of :mod:`potluck.offline.pit`. Each table's source is
        pinned here to its latest version (or the one ``versions`` names), so reading the job
        later or again gives the same rows; :attr:`RetrievalJob.source_versions` names them.

        Args:
            entity_source: A DataFrame, an Arrow table, or a ``.parquet``/``.csv`` path or URL,
                with an ``event_timestamp`` column and a column per entity joined on.
            requests: The features, from :func:`potluck.offline.pit.resolve_refs`.
            versions: Source versions to read, by table name (``"table"`` or
                ``"project/table"``), to rebuild an earlier training set exactly.

        Raises:
            DataValidationError: If the entity rows do not fit (see :func:`pit.prepare`).
            ValidationError: If a table has no batch source, its location does not exist, a
                version does not exist, or the rows cannot be read.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; the default does nothing."""


__all__ = [
    "CREATED_TIMESTAMP_COLUMN",
    "EVENT_TIMESTAMP_COLUMN",
    "INGESTION_ID_COLUMN",
    "OfflineStore",
    "SourceVersion",
]
