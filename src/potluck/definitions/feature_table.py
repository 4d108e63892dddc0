"""The FeatureTable definition: features keyed by entities, with their sources and max age."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from potluck.definitions._checks import check_labels, check_name, set_frozen
from potluck.definitions.entity import Entity
from potluck.definitions.feature import Feature
from potluck.definitions.sources import (
    FileSource,
    KafkaSource,
    shown_path,
    source_path_problem,
)
from potluck.errors import DefinitionError


@dataclass(frozen=True, kw_only=True)
class FeatureTable:
    """A feature table: features keyed by one or more entities.

    Args:
        name: The table's name.
        entities: The names (or :class:`Entity` objects) of the entities that key its rows;
            composite keys are normal. Stored as names, in the given order.
        features: The table's features; names are unique and differ from the entity names.
        max_age: How old a value may be and still count: bounds the training lookback, the online
            read and the online expiry alike. ``None`` means values never age out.
        batch_source: Where ingested rows are stored (the offline store).
        stream_source: An optional Kafka topic that feeds the online store.
        labels: Free-form string labels, used to filter listings.
        revision: Set by the registry on the tables it returns. Applying a table that carries a
            revision succeeds only if the stored revision is still the same (optimistic
            concurrency); a table built by hand (``None``) replaces whatever is stored.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.
    """

    name: str
    entities: tuple[str, ...]
    features: tuple[Feature, ...]
    max_age: timedelta | None = None
    batch_source: FileSource | None = None
    stream_source: KafkaSource | None = None
    labels: dict[str, str] = field(default_factory=dict)
    revision: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_name(self.name, "feature_table.name")
        where = f"feature table {self.name}"
        set_frozen(self, "entities", _entity_names(self.entities, where))
        set_frozen(self, "features", _features(self.features, self.entities, where))
        if self.max_age is not None:
            if not isinstance(self.max_age, timedelta):
                raise DefinitionError(
                    f"{where}: max_age must be a datetime.timedelta or None, got {self.max_age!r}",
                    field="feature_table.max_age",
                )
            if self.max_age <= timedelta(0):
                # str(timedelta(hours=-1)) is "-1 day, 23:00:00"; show "-1:00:00" instead.
                shown = f"-{-self.max_age}" if self.max_age else str(self.max_age)
                raise DefinitionError(
                    f"{where}: max_age must be positive, got {shown}; use None for "
                    "values that never age out",
                    field="feature_table.max_age",
                )
        if self.batch_source is not None and not isinstance(self.batch_source, FileSource):
            raise DefinitionError(
                f"{where}: batch_source must be a FileSource, got {self.batch_source!r}",
                field="feature_table.batch_source",
            )
        if self.stream_source is not None and not isinstance(self.stream_source, KafkaSource):
            raise DefinitionError(
                f"{where}: stream_source must be a KafkaSource, got {self.stream_source!r}",
                field="feature_table.stream_source",
            )
        if self.batch_source is not None:
            path = self.batch_source.path
            problem = source_path_problem(path)
            if problem is not None:
                raise DefinitionError(
                    f"{where}: batch_source.path: {shown_path(path)} {problem}",
                    field="batch_source.path",
                    table=self.name,
                )
        labels = check_labels(self.labels, "feature_table.labels", f"{where}: labels")
        set_frozen(self, "labels", labels)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """The names of the table's features, in definition order."""
        return tuple(f.name for f in self.features)

    def feature(self, name: str) -> Feature:
        """Return the feature called ``name``.

        Raises:
            KeyError: If the table has no such feature.
        """
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(name)


def _entity_names(value: object, where: str) -> tuple[str, ...]:
    if isinstance(value, (str, Entity)) or not isinstance(value, Sequence):
        raise DefinitionError(
            f"{where}: entities must be a list of entity names, got {value!r}",
            field="feature_table.entities",
        )
    names: list[str] = []
    for item in value:
        name = item.name if isinstance(item, Entity) else item
        check_name(name, "feature_table.entities")
        if name in names:
            raise DefinitionError(
                f"{where}: entity {name!r} is listed twice", field="feature_table.entities"
            )
        names.append(name)
    if not names:
        raise DefinitionError(f"{where}: needs at least one entity", field="feature_table.entities")
    return tuple(names)


def _features(value: object, entities: Sequence[str], where: str) -> tuple[Feature, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise DefinitionError(
            f"{where}: features must be a list of Feature, got {value!r}",
            field="feature_table.features",
        )
    seen: set[str] = set()
    for feature in value:
        if not isinstance(feature, Feature):
            raise DefinitionError(
                f"{where}: features must be Feature objects, got {feature!r}",
                field="feature_table.features",
            )
        if feature.name in seen:
            raise DefinitionError(
                f"{where}: feature {feature.name!r} is defined twice",
                field="feature_table.features",
            )
        if feature.name in entities:
            raise DefinitionError(
                f"{where}: feature {feature.name!r} has the name of one of the table's "
                "entities; rename the feature",
                field="feature_table.features",
            )
        seen.add(feature.name)
    if not seen:
        raise DefinitionError(
            f"{where}: needs at least one feature", field="feature_table.features"
        )
    return tuple(value)
