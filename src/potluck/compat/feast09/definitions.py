"""Feast 0.9's entity and feature table messages and potluck's definitions, both ways.

Everything both can express maps losslessly: names, value types, descriptions, labels (of
entities, tables and features), entities, ``max_age`` (Feast's zero means none), the batch and
stream sources (``sources.py``) and the table's revision (``meta.revision``). What potluck cannot
express is refused with one :class:`DefinitionError` whose message starts with the object
(``feature table driver_stats:``) and then names the Feast field: a Feast client shows only that
text.

Feast 0.9 has no ``UNIX_TIMESTAMP`` value types; potluck's travel with their numbers (8, 18), as
later Feast releases number them, so a Feast 0.9 SDK cannot read a table that has one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from google.protobuf.duration_pb2 import Duration

from potluck._proto.feast.core import Entity_pb2 as entity_pb
from potluck._proto.feast.core import Feature_pb2 as feature_pb
from potluck._proto.feast.core import FeatureTable_pb2 as table_pb
from potluck._proto.feast.types import Value_pb2 as value_pb
from potluck.compat.feast09.sources import (
    batch_source_from_feast,
    batch_source_to_feast,
    stream_source_from_feast,
    stream_source_to_feast,
)
from potluck.definitions.entity import Entity
from potluck.definitions.feature import Feature
from potluck.definitions.feature_table import FeatureTable
from potluck.errors import DefinitionError
from potluck.types import ValueType

_FEAST_FIELDS = (
    ("batch_source.path", "batch_source.file_options.file_url"),
    ("batch_source.file_format", "batch_source.file_options.file_format"),
    ("stream_source.bootstrap_servers", "stream_source.kafka_options.bootstrap_servers"),
    ("stream_source.topic", "stream_source.kafka_options.topic"),
    ("stream_source.message_format", "stream_source.kafka_options.message_format"),
)
"""potluck field names whose Feast field differs, as error messages start with them."""


@contextmanager
def feast_object(kind: str, name: str) -> Iterator[None]:
    """Re-raise a :class:`DefinitionError` with the object first and Feast's field names.

    Args:
        kind: ``"entity"`` or ``"feature table"``.
        name: The object's name as the client sent it.
    """
    try:
        yield
    except DefinitionError as exc:
        message = exc.message
        for ours, theirs in _FEAST_FIELDS:
            if message.startswith(ours):
                message = theirs + message[len(ours) :]
        prefix = f"{kind} {name}"
        if not message.startswith(prefix):
            message = f"{prefix}: {message}"
        raise DefinitionError(message, **exc.attrs()) from None


def entity_spec_to_feast(entity: Entity) -> entity_pb.EntitySpecV2:
    """Return the Feast ``EntitySpecV2`` of ``entity``."""
    return entity_pb.EntitySpecV2(
        name=entity.name,
        value_type=_wire_type(entity.value_type),
        description=entity.description,
        labels=entity.labels,
    )


def entity_to_feast(entity: Entity) -> entity_pb.Entity:
    """Return the Feast ``Entity`` of ``entity`` (its ``meta`` is left empty)."""
    return entity_pb.Entity(spec=entity_spec_to_feast(entity))


def entity_from_feast(spec: entity_pb.EntitySpecV2) -> Entity:
    """Build an :class:`Entity` from a Feast ``EntitySpecV2``.

    Raises:
        DefinitionError: If a field is invalid for potluck (a name outside
            ``[a-z_][a-z0-9_]*``, a list or unknown value type); the message starts with
            ``entity <name>:``.
    """
    with feast_object("entity", spec.name):
        return Entity(
            name=spec.name,
            value_type=spec.value_type,  # type: ignore[arg-type]
            description=spec.description,
            labels=dict(spec.labels),
        )


def feature_to_feast(feature: Feature) -> feature_pb.FeatureSpecV2:
    """Return the Feast ``FeatureSpecV2`` of ``feature``."""
    return feature_pb.FeatureSpecV2(
        name=feature.name, value_type=_wire_type(feature.value_type), labels=feature.labels
    )


def feature_table_spec_to_feast(table: FeatureTable) -> table_pb.FeatureTableSpec:
    """Return the Feast ``FeatureTableSpec`` of ``table``."""
    spec = table_pb.FeatureTableSpec(
        name=table.name,
        entities=list(table.entities),
        features=[feature_to_feast(f) for f in table.features],
        labels=table.labels,
    )
    if table.max_age is not None:
        spec.max_age.FromTimedelta(table.max_age)
    if table.batch_source is not None:
        spec.batch_source.CopyFrom(batch_source_to_feast(table.batch_source))
    if table.stream_source is not None:
        spec.stream_source.CopyFrom(stream_source_to_feast(table.stream_source))
    return spec


def feature_table_to_feast(table: FeatureTable) -> table_pb.FeatureTable:
    """Return the Feast ``FeatureTable`` of ``table``: its spec and ``meta.revision``."""
    msg = table_pb.FeatureTable(spec=feature_table_spec_to_feast(table))
    msg.meta.revision = table.revision or 0
    return msg


def feature_table_from_feast(
    spec: table_pb.FeatureTableSpec, revision: int | None = None
) -> FeatureTable:
    """Build a :class:`FeatureTable` from a Feast ``FeatureTableSpec``.

    Args:
        spec: The spec.
        revision: The revision to attach (``None``: applying it replaces whatever is stored).

    Raises:
        DefinitionError: If potluck cannot express a field (a BigQuery or Kinesis source, a
            ``max_age`` finer than a microsecond, a relative ``file_url`` ...) or a field is
            invalid; the message starts with ``feature table <name>:`` and names the field.
    """
    with feast_object("feature table", spec.name):
        features = tuple(
            Feature(
                name=f.name,
                value_type=f.value_type,  # type: ignore[arg-type]
                labels=dict(f.labels),
            )
            for f in spec.features
        )
        return FeatureTable(
            name=spec.name,
            entities=tuple(spec.entities),
            features=features,
            max_age=_max_age(spec.max_age) if spec.HasField("max_age") else None,
            batch_source=batch_source_from_feast(spec.batch_source),
            stream_source=stream_source_from_feast(spec.stream_source),
            labels=dict(spec.labels),
            revision=revision,
        )


def _wire_type(value_type: ValueType) -> value_pb.ValueType.Enum.ValueType:
    return value_pb.ValueType.Enum.ValueType(int(value_type))


def _max_age(duration: Duration) -> timedelta | None:
    if duration.seconds == 0 and duration.nanos == 0:
        return None  # Feast's "no max age"
    if duration.nanos % 1_000:
        raise DefinitionError(
            f"max_age: {duration.seconds}s {duration.nanos}ns is finer than a microsecond, "
            "which potluck cannot hold; round it to whole microseconds",
            field="feature_table.max_age",
        )
    return timedelta(seconds=duration.seconds, microseconds=duration.nanos // 1_000)


__all__ = [
    "entity_from_feast",
    "entity_spec_to_feast",
    "entity_to_feast",
    "feast_object",
    "feature_table_from_feast",
    "feature_table_spec_to_feast",
    "feature_table_to_feast",
    "feature_to_feast",
]
