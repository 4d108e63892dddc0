"""A store's inputs checked against its feature table, before anything is written or read.

One job: a write batch becomes :class:`PreparedRows` (validated whole, rows losing to a newer
row of the same key dropped, rows expired already marked), and a read's feature names become the
table's
:class:`Feature` objects. Every store calls these first, so all of them reject the same input
with the same error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import DataValidationError, FeatureRefError
from potluck.online._binary import valid_mask
from potluck.online._values import (
    MAX_ABS_MICROS,
    NULL_CREATED,
    encode_records,
    expiry_micros,
    max_age_micros,
)
from potluck.online.base import (
    CREATED_TIMESTAMP_COLUMN,
    ENTITY_KEY_COLUMN,
    EVENT_TIMESTAMP_COLUMN,
)
from potluck.types import TIMESTAMP_ARROW_TYPE, to_arrow_type

Int64s = npt.NDArray[np.int64]


@dataclass(frozen=True)
class PreparedRows:
    """A validated write batch, one row per key; records are encoded on demand, by range.

    Attributes:
        keys: The encoded entity keys, unique.
        event_us: Event times, microseconds since the epoch.
        created_us: Created times; :data:`NULL_CREATED` for null.
        expire_us: When each value expires (:func:`~potluck.online._values.expiry_micros`).
        expired: Rows expired already (``expire_us < now``). They are never stored, but still
            take part in newer-wins: where one would replace the stored value, that value is
            deleted. An older value must not outlive a newer row just because the newer row
            expired first under the current ``max_age``; a longer ``max_age`` later would
            serve the older value as present. They always count as skipped.
        columns: One validated column per feature of ``features``.
        features: The table's features.
        skipped: Rows of the batch dropped here: losing to a newer row of the same key in the
            batch.
    """

    keys: pa.BinaryArray
    event_us: Int64s
    created_us: Int64s
    expire_us: Int64s
    expired: npt.NDArray[np.bool_]
    columns: tuple[pa.Array, ...]
    features: tuple[Feature, ...]
    skipped: int

    def __len__(self) -> int:
        return len(self.keys)

    def records(
        self, start: int = 0, stop: int | None = None, prefix: pa.Array | None = None
    ) -> pa.BinaryArray:
        """Encode the records of rows ``[start, stop)``, each after its ``prefix`` if given.

        Encoding by range lets a store send one part while it encodes the next.
        """
        stop = len(self) if stop is None else min(stop, len(self))
        columns = [c.slice(start, stop - start) for c in self.columns]
        return encode_records(columns, self.features, prefix)


def prepare_rows(table: FeatureTable, rows: pa.RecordBatch, now_us: int) -> PreparedRows:
    """Validate a write batch: everything that can be wrong with it is found here.

    Of rows sharing a key only the newest is kept (an exact tie keeps the first); rows already
    expired at ``now_us`` (``event_timestamp + max_age < now``) are marked ``expired``.

    Raises:
        DataValidationError: If a column is missing, null where it may not be, of a type that
            cannot be cast to the feature's type, or a timestamp is out of range; ``column``
            (and ``row`` where known) locate it. Nothing is written.
    """
    keys = _column(rows, ENTITY_KEY_COLUMN, table)
    if not (pa.types.is_binary(keys.type) or pa.types.is_large_binary(keys.type)):
        raise DataValidationError(
            f"column {ENTITY_KEY_COLUMN!r} must be binary (from potluck.online.codec), "
            f"got {keys.type}",
            column=ENTITY_KEY_COLUMN,
            row=None,
        )
    keys = keys.cast(pa.binary())
    _no_nulls(keys, ENTITY_KEY_COLUMN)
    event_us = _micros(_column(rows, EVENT_TIMESTAMP_COLUMN, table), EVENT_TIMESTAMP_COLUMN)
    _no_nulls(event_us, EVENT_TIMESTAMP_COLUMN)
    if CREATED_TIMESTAMP_COLUMN in rows.schema.names:
        created = _micros(rows.column(CREATED_TIMESTAMP_COLUMN), CREATED_TIMESTAMP_COLUMN)
    else:
        created = pa.nulls(rows.num_rows, pa.int64())
    columns = [_feature_column(rows, f, table) for f in table.features]
    event = np.asarray(event_us.to_numpy(zero_copy_only=False), dtype=np.int64)
    created_np = np.asarray(created.fill_null(NULL_CREATED).to_numpy(), dtype=np.int64)
    expire = expiry_micros(event, max_age_micros(table.max_age))
    skipped = 0
    if pc.count_distinct(keys).as_py() != len(keys):
        keep = _newest_per_key(keys, event, created_np)
        skipped = len(keep) - int(keep.sum())
        mask = pa.array(keep)
        keys = keys.filter(mask)
        columns = [c.filter(mask) for c in columns]
        event, created_np, expire = event[keep], created_np[keep], expire[keep]
    return PreparedRows(
        keys=keys,
        event_us=event,
        created_us=created_np,
        expire_us=expire,
        expired=expire < now_us,
        columns=tuple(columns),
        features=table.features,
        skipped=skipped,
    )


def _column(rows: pa.RecordBatch, name: str, table: FeatureTable) -> pa.Array:
    if name not in rows.schema.names:
        raise DataValidationError(
            f"write to feature table {table.name!r}: column {name!r} is missing",
            column=name,
            row=None,
        )
    return rows.column(name)


def _no_nulls(values: pa.Array, name: str) -> None:
    if values.null_count:
        row = int(np.argmin(valid_mask(values)))
        raise DataValidationError(
            f"column {name!r}: row {row} is null; it must not be", column=name, row=row
        )


def _micros(values: pa.Array, name: str) -> pa.Array:
    if not pa.types.is_timestamp(values.type):
        raise DataValidationError(
            f"column {name!r} must be a timestamp, got {values.type}", column=name, row=None
        )
    micros = values.cast(TIMESTAMP_ARROW_TYPE, safe=False).cast(pa.int64())
    bad = pc.greater(pc.abs(micros), MAX_ABS_MICROS).fill_null(False)
    if pc.any(bad).as_py():
        row = int(np.argmax(bad.to_numpy(zero_copy_only=False)))
        raise DataValidationError(
            f"column {name!r}: row {row} holds {values[row]}, outside the supported range "
            "(years 1685 to 2255)",
            column=name,
            row=row,
        )
    return micros


def _feature_column(rows: pa.RecordBatch, feature: Feature, table: FeatureTable) -> pa.Array:
    values = _column(rows, feature.name, table)
    target = to_arrow_type(feature.value_type)
    if values.type == target:
        return values
    try:
        return values.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise DataValidationError(
            f"column {feature.name!r}: cannot cast {values.type} to {feature.value_type.name} "
            f"({target}): {exc}",
            column=feature.name,
            row=None,
        ) from None


def _newest_per_key(keys: pa.BinaryArray, event: Int64s, created: Int64s) -> npt.NDArray[np.bool_]:
    """Mark the newest row of each key (ties: the first in batch order)."""
    order = pc.sort_indices(
        pa.table({"k": keys, "e": event, "c": created}),
        sort_keys=[("k", "ascending"), ("e", "descending"), ("c", "descending")],
    )
    ordered = keys.take(order)
    first = np.ones(len(keys), dtype=bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(ordered[1:], ordered[:-1]).to_numpy(zero_copy_only=False)
    keep = np.zeros(len(keys), dtype=bool)
    keep[order.to_numpy()[first]] = True
    return keep


def requested_features(table: FeatureTable, names: Sequence[str]) -> list[Feature]:
    """Return the features of ``table`` called ``names``, in that order.

    Raises:
        FeatureRefError: If the table has no feature of one of the names.
    """
    known = {f.name: f for f in table.features}
    for name in names:
        if name not in known:
            raise FeatureRefError(
                f"feature table {table.name!r} has no feature {name!r}", ref=f"{table.name}:{name}"
            )
    return [known[name] for name in names]
