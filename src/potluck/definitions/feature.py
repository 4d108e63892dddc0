"""The Feature definition: a named, typed value of a feature table."""

from __future__ import annotations

from dataclasses import dataclass, field

from potluck.definitions._checks import (
    check_labels,
    check_name,
    check_not_reserved,
    check_value_type,
    set_frozen,
)
from potluck.types import ValueType


@dataclass(frozen=True, kw_only=True)
class Feature:
    """A feature: one typed column of a feature table.

    Args:
        name: The feature's name, unique in its table.
        value_type: The type of its values.
        labels: Free-form string labels.

    Raises:
        DefinitionError: If a field is invalid; ``field`` names it.
    """

    name: str
    value_type: ValueType
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_name(self.name, "feature.name")
        check_not_reserved(self.name, "feature.name")
        value_type = check_value_type(
            self.value_type, "feature.value_type", f"feature {self.name}: value_type"
        )
        set_frozen(self, "value_type", value_type)
        labels = check_labels(self.labels, "feature.labels", f"feature {self.name}: labels")
        set_frozen(self, "labels", labels)
