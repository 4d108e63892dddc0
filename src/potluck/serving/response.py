"""OnlineResponse: the columnar result of one online read, as the SDK and the servers see it."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from potluck.serving.status import FieldStatus
from potluck.types import ValueType

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class OnlineResponse:
    """The values, statuses and event times of an online read, one column per output name.

    Entity columns come first (in request order, status ``PRESENT``, no event time), then one
    column per requested feature, named ``table__feature`` (or the bare feature name when the
    request asked for short names). Every column has one entry per entity row.

    Attributes:
        names: The output column names.
        value_types: The value type of each column (``None`` when unknown: a column of nulls
            decoded from the wire).
        values: Each column's values (``None`` where the status is not ``PRESENT``).
        field_statuses: Each column's :class:`FieldStatus` per row.
        event_us: Each column's event time per row in microseconds since the epoch (``None`` for
            entity columns and keys that were not found).
    """

    __slots__ = ("event_us", "field_statuses", "names", "value_types", "values")

    def __init__(
        self,
        names: Sequence[str],
        value_types: Sequence[ValueType | None],
        values: Sequence[list[Any]],
        field_statuses: Sequence[list[FieldStatus]],
        event_us: Sequence[list[int | None]],
    ) -> None:
        self.names = list(names)
        self.value_types = list(value_types)
        self.values = list(values)
        self.field_statuses = list(field_statuses)
        self.event_us = list(event_us)

    def __len__(self) -> int:
        """The number of entity rows."""
        return len(self.values[0]) if self.values else 0

    def __repr__(self) -> str:
        return f"OnlineResponse(rows={len(self)}, columns={self.names})"

    def to_dict(self) -> dict[str, list[Any]]:
        """Return ``{column: values}``.

        Example:
            >>> resp.to_dict()
            {'driver_id': [1001], 'driver_stats__conv_rate': [0.5]}
        """
        return {name: list(col) for name, col in zip(self.names, self.values, strict=True)}

    def statuses(self) -> dict[str, list[str]]:
        """Return ``{column: status names}`` in the shape of :meth:`to_dict`.

        Example:
            >>> resp.statuses()
            {'driver_id': ['PRESENT'], 'driver_stats__conv_rate': ['PRESENT']}
        """
        return {
            name: [s.name for s in col]
            for name, col in zip(self.names, self.field_statuses, strict=True)
        }

    def event_timestamps(self) -> dict[str, list[datetime | None]]:
        """Return ``{column: event times}`` (UTC; ``None`` for entity columns and missing keys)."""
        return {
            name: [None if us is None else _EPOCH + timedelta(microseconds=us) for us in col]
            for name, col in zip(self.names, self.event_us, strict=True)
        }


__all__ = ["OnlineResponse"]
