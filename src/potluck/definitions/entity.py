"""The Entity definition: a named, typed join key."""

from __future__ import annotations

from dataclasses import dataclass, field

from potluck.definitions._checks import (
    check_labels,
    check_name,
    check_not_reserved,
    check_str,
    check_value_type,
    set_frozen,
)
from potluck.errors import DefinitionError
from potluck.types import ValueType


@dataclass(frozen=True, kw_only=True)
class Entity:
    """An entity: the thing features describe (a driver, a customer). Its name is the join key.

    Args:
        name: The entity's name, also the column that holds its values in every source.
        value_type: The type of the key's values.
        description: Free text for humans.
        labels: Free-form string labels, used to filter listings.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.

    Example:
        >>> Entity(name="driver_id", value_type=ValueType.INT64).name
        'driver_id'
    """

    name: str
    value_type: ValueType
    description: str = ""
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "entity.name")
        check_not_reserved(self.name, "entity.name")
        value_type = check_value_type(
            self.value_type, "entity.value_type", f"entity {self.name}: value_type"
        )
        if value_type.is_list:
            raise DefinitionError(
                f"entity {self.name}: value_type {value_type.name} is a list; entity keys "
                "must be scalar",
                field="entity.value_type",
            )
        set_frozen(self, "value_type", value_type)
        set_frozen(self, "description", check_str(self.description, "entity.description"))
        labels = check_labels(self.labels, "entity.labels", f"entity {self.name}: labels")
        set_frozen(self, "labels", labels)
