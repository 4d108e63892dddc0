"""The Registry interface: the source of truth for definitions, projects and job records.

It is generic over the object kind (``"entity"``, ``"feature_table"``), so a new kind does not add
methods here. Every backend (SQL, the remote Core client) passes ``tests/contract``'s registry
suite.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from potluck.definitions.serde import Definition

Action = Literal["create", "update", "unchanged"]


@dataclass(frozen=True)
class Change:
    """One line of an apply plan.

    Attributes:
        kind: ``"entity"`` or ``"feature_table"``.
        name: The object's name.
        action: What applying does to it.
        revision: The object's revision after the apply (1 for a new table, 0 for entities).
        details: Human-readable lines: features added, archived, retyped ...
    """

    kind: str
    name: str
    action: Action
    revision: int = 0
    details: tuple[str, ...] = ()


@dataclass(frozen=True)
class Revision:
    """One stored revision of a feature table, as kept in its history."""

    revision: int
    applied_at: datetime
    spec: Definition


@dataclass(frozen=True)
class Project:
    """A namespace of definitions."""

    name: str
    archived: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True)
class JobRecord:
    """A stored ingestion job: its id and its JSON body (owned by ``potluck.ingestion.jobs``)."""

    project: str
    id: str
    body: Mapping[str, Any] = field(default_factory=dict)


class Registry(ABC):
    """Stores definitions per project; every change is one transaction."""

    @abstractmethod
    def apply(
        self,
        project: str,
        objects: Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[Change]:
        """Apply ``objects`` to ``project`` in one transaction and return the plan it ran.

        Applying the same spec twice changes nothing. A changed table gets ``revision + 1`` and
        its old spec goes to history. A table that carries a ``revision`` is applied only if the
        stored revision is still that one.

        Args:
            project: The project; created if it does not exist.
            objects: Entities and feature tables, in any order.
            force: Allow changes to a table's entities or a feature's type.
            dry_run: Compute and return the plan without writing anything.

        Raises:
            DefinitionError: If a table names an entity that exists neither in ``objects`` nor
                in the registry.
            IncompatibleChangeError: If a change needs ``force``.
            ConflictError: If a table's ``revision`` is stale.
            ValidationError: If ``project`` is archived.
        """

    @abstractmethod
    def get(self, project: str, kind: str, name: str) -> Definition:
        """Return the current definition of ``kind`` named ``name``.

        Raises:
            NotFoundError: If there is none.
        """

    @abstractmethod
    def list(
        self, project: str, kind: str, labels: Mapping[str, str] | None = None
    ) -> builtins.list[Definition]:
        """Return the definitions of ``kind`` whose labels include ``labels``, sorted by name."""

    @abstractmethod
    def delete(self, project: str, kind: str, name: str) -> None:
        """Delete a definition (its history is kept).

        Raises:
            NotFoundError: If there is none.
            ValidationError: If an entity is still used by a feature table.
        """

    @abstractmethod
    def history(self, project: str, kind: str, name: str) -> builtins.list[Revision]:
        """Return every revision of a definition, oldest first.

        Raises:
            NotFoundError: If it never existed.
        """

    @abstractmethod
    def list_projects(self, *, include_archived: bool = False) -> builtins.list[Project]:
        """Return the projects, sorted by name."""

    @abstractmethod
    def create_project(self, name: str) -> Project:
        """Create a project.

        Raises:
            AlreadyExistsError: If it exists.
        """

    @abstractmethod
    def archive_project(self, name: str) -> Project:
        """Archive a project: its definitions stay readable, applies to it are refused.

        Raises:
            NotFoundError: If it does not exist.
        """

    @abstractmethod
    def put_job(self, job: JobRecord) -> None:
        """Create or replace a job record."""

    @abstractmethod
    def get_job(self, project: str, job_id: str) -> JobRecord:
        """Return a job record.

        Raises:
            NotFoundError: If there is none.
        """

    @abstractmethod
    def list_jobs(self, project: str) -> builtins.list[JobRecord]:
        """Return the project's job records, newest first."""

    def close(self) -> None:  # noqa: B027 - optional hook, most registries hold no resources
        """Release connections; the default does nothing."""
