"""Feature references: ``"table:feature"``, ``"project/table:feature"`` and ``"table:*"``."""

from __future__ import annotations

from dataclasses import dataclass

from potluck.definitions._checks import NAME_PATTERN
from potluck.errors import FeatureRefError

WILDCARD = "*"


@dataclass(frozen=True)
class FeatureRef:
    """A parsed feature reference.

    Attributes:
        table: The feature table's name.
        feature: The feature's name, or ``"*"`` for every feature of the table.
        project: The project, or ``None`` for the client's current project.
    """

    table: str
    feature: str
    project: str | None = None

    @classmethod
    def parse(cls, ref: str) -> FeatureRef:
        """Parse ``ref``.

        Raises:
            FeatureRefError: If ``ref`` is not of the form ``[project/]table:feature``.
        """
        if not isinstance(ref, str):
            raise FeatureRefError(
                f"feature reference must be a string 'table:feature', got {ref!r}", ref=ref
            )
        project: str | None = None
        rest = ref
        if "/" in rest:
            project, rest = rest.split("/", 1)
        table, sep, feature = rest.partition(":")
        ok = (
            sep
            and NAME_PATTERN.fullmatch(table)
            and (feature == WILDCARD or NAME_PATTERN.fullmatch(feature))
            and (project is None or NAME_PATTERN.fullmatch(project))
        )
        if not ok:
            raise FeatureRefError(
                f"invalid feature reference {ref!r}; expected 'table:feature', "
                "'project/table:feature' or 'table:*'",
                ref=ref,
            )
        return cls(table=table, feature=feature, project=project)

    @property
    def is_wildcard(self) -> bool:
        """Whether this reference means every feature of the table."""
        return self.feature == WILDCARD

    @property
    def column_name(self) -> str:
        """The output column name, ``table__feature``."""
        return f"{self.table}__{self.feature}"

    def __str__(self) -> str:
        prefix = f"{self.project}/" if self.project else ""
        return f"{prefix}{self.table}:{self.feature}"
