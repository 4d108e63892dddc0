"""Streamed rows into the batch source, exactly once: a stream source's ``offline_sink``.

Each micro-batch's good rows are appended to the table's batch source after the online write,
through :func:`potluck.ingestion.ingest.ingest` (the same checks, files and atomic commit as any
ingestion), so a training set built later sees the values the model was served.

Exactly once: the commit of each append records, per topic partition, the last offset it holds
as a Delta application transaction (app id ``potluck.stream:<topic>:<partition>``). Before an
append, rows at or below the recorded offset are dropped (a replayed batch appends nothing),
and the commit goes through only if no other writer moved those offsets meanwhile
(:class:`~potluck.offline.commits.AppTransaction`); if one did, the append is decided again.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.entity import Entity
from potluck.definitions.message_layout import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from potluck.errors import ValidationError
from potluck.ingestion.ingest import ingest
from potluck.ingestion.stream.batch import OFFSET, PARTITION, StreamTable
from potluck.offline.commits import AppTransaction, transaction_versions
from potluck.offline.files import resolve_path


def app_id(topic: str, partition: int) -> str:
    """Return the application id that records the sink's progress in one topic partition."""
    return f"potluck.stream:{topic}:{partition}"


class OfflineSink:
    """Appends decoded stream rows to a table's batch source, each message once.

    Args:
        stream: The table; it has a batch source.
        entities: Its entities by name.
        root: The folder a relative batch source path is resolved against.

    Raises:
        ValidationError: If the table has no batch source.
    """

    def __init__(
        self, stream: StreamTable, entities: Mapping[str, Entity], root: Path | None
    ) -> None:
        source = stream.table.batch_source
        if source is None:
            raise ValidationError(
                f"feature table {stream.table.name!r}: offline_sink needs a batch_source",
                table=stream.table.name,
            )
        self._stream = stream
        self._entities = dict(entities)
        self._root = root
        self._location = resolve_path(source.path, root)
        column_of = {name: column for column, name in source.field_mapping.items()}
        self._columns = {
            name: column_of.get(name, name)
            for name in (*stream.table.entities, *stream.table.feature_names)
        }
        self._columns[EVENT_TIMESTAMP] = source.event_timestamp_column
        if source.created_timestamp_column is not None:
            self._columns[CREATED_TIMESTAMP] = source.created_timestamp_column

    def append(self, rows: pa.Table) -> int:
        """Append the rows of a decoded batch that the batch source does not hold yet.

        Args:
            rows: :attr:`~potluck.ingestion.stream.batch.DecodedBatch.rows`.

        Returns:
            How many rows were appended (0 for a batch appended before).

        Raises:
            ConflictError: If another writer appended some of these partitions meanwhile;
                calling again appends what is still missing.
            UnavailableError: If the batch source cannot be written.
        """
        topic = self._stream.source.topic
        partitions = sorted(set(pc.unique(rows.column(PARTITION)).to_pylist()))
        ids = {partition: app_id(topic, partition) for partition in partitions}
        versions = transaction_versions(self._location, ids.values())
        keep = pa.array([True] * rows.num_rows, pa.bool_())
        for partition, version in ((p, versions[ids[p]]) for p in partitions):
            if version is not None:
                older = pc.and_(
                    pc.equal(rows.column(PARTITION), partition),
                    pc.less_equal(rows.column(OFFSET), version),
                )
                keep = pc.and_(keep, pc.invert(older))
        fresh = rows.filter(keep)
        if fresh.num_rows == 0:
            return 0
        transactions = []
        for partition in partitions:
            offsets = fresh.filter(pc.equal(fresh.column(PARTITION), partition)).column(OFFSET)
            if len(offsets):
                last = int(pc.max(offsets).as_py())
                transactions.append(AppTransaction(ids[partition], last, versions[ids[partition]]))
        data = pa.table({column: fresh.column(name) for name, column in self._columns.items()})
        ingest(
            self._stream.table,
            self._entities,
            data,
            root=self._root,
            app_transactions=transactions,
        )
        return int(fresh.num_rows)


__all__ = ["OfflineSink", "app_id"]
