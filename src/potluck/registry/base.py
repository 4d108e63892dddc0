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
from datetime import datetime, timedelta
from typing import Any, Literal

from potluck.definitions.serde import Definition
from potluck.errors import PotluckError, ValidationError

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


@dataclass(frozen=True)
class Schedule:
    """A feature table's scheduled offline-to-online ingestion (kept by the Job Service).

    Attributes:
        project: The table's project.
        table: The feature table's name.
        cron: The cron expression of its ticks (5 fields, or 6 with seconds last), in UTC.
        look_back: Each tick's job loads ``[tick - look_back, tick)``.
        created_at: When it was last set.
        last_tick: The latest tick a Job Service claimed (and started a job for), if any.
    """

    project: str
    table: str
    cron: str
    look_back: timedelta
    created_at: datetime
    last_tick: datetime | None = None


@dataclass(frozen=True)
class AllowedLocation:
    """A source location an administrator allowed for a project outside its data roots.

    Attributes:
        project: The project.
        location: An absolute folder, a URL prefix, or ``kafka:PREFIX`` (topics starting with it).
        allowed_by: Who allowed it (see :attr:`AuditEntry.actor`).
        allowed_at: When (UTC).
    """

    project: str
    location: str
    allowed_by: str
    allowed_at: datetime


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log: a change to the registry, a job started or cancelled, a denial.

    Attributes:
        at: When it happened (UTC).
        actor: Who: an authenticated caller's subject, ``peer:<address>`` for a remote call
            without authentication, ``local:<OS user>`` for a process using the registry itself.
        action: ``apply``, ``delete``, ``create_project``, ``archive_project``,
            ``restore_project``, ``allow_location``, ``job_start``, ``job_cancel`` or
            ``permission_denied``.
        project: The project acted on (``""`` for none).
        target: What it acted on: ``feature_table driver_stats``, a job id, a location, the
            denied permission.
        change: The change as JSON: an apply's plan lines (``changes``), a job's kind and
            table, a denied call's method.
    """

    at: datetime
    actor: str
    action: str
    project: str
    target: str
    change: Mapping[str, Any] = field(default_factory=dict)


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
    def restore_project(self, name: str) -> Project:
        """Restore an archived project: applies to it are accepted again (idempotent).

        Raises:
            NotFoundError: If it does not exist.
        """

    @abstractmethod
    def allow_location(self, project: str, location: str) -> AllowedLocation:
        """Allow ``project``'s tables to name ``location`` outside its data roots (idempotent).

        Args:
            project: An existing project.
            location: An absolute folder, a URL prefix, or ``kafka:PREFIX``.

        Raises:
            NotFoundError: If the project does not exist.
            ValidationError: If the location is empty or relative.
        """

    @abstractmethod
    def list_allowed_locations(self, project: str) -> builtins.list[AllowedLocation]:
        """Return the locations allowed for ``project``, sorted by location."""

    @abstractmethod
    def audit_log(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> builtins.list[AuditEntry]:
        """Return audit entries, newest first.

        Args:
            project: Only this project's entries.
            since: Only entries at or after this time (a naive time is UTC).
            limit: At most this many (1 to 10,000).

        Raises:
            ValidationError: If ``limit`` is out of range.
        """

    @abstractmethod
    def record_denial(
        self,
        actor: str,
        project: str,
        permission: str,
        method: str,
        *,
        reported_by: str | None = None,
    ) -> None:
        """Add a ``permission_denied`` entry: ``actor`` lacked ``permission`` for ``method``.

        Args:
            actor: The denied caller (``token:<name>``, ``jwt:<sub>``).
            project: The project the denied call acted on (``""``: none).
            permission: The permission it lacked.
            method: The call (``/package.Service/Method`` or ``POST /path``).
            reported_by: Who reported the denial when it is not this registry's own server (the
                Core service sets it to the caller of ``RecordDenial``); kept in the entry's
                change as ``reported_by``, never in ``actor``.
        """

    def data_roots(self, project: str) -> tuple[str, ...]:
        """Return the roots the applies of this registry hold ``project``'s sources to.

        The folders and URL prefixes its batch sources may lie under, then its topic prefixes
        as ``kafka:PREFIX``; empty when nothing is checked (isolation off). A Core client
        returns what the Core service enforces.
        """
        return ()

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

    def authorize_job_control(self, project: str) -> None:  # noqa: B027 - only Core checks
        """Check that the caller may start and cancel ``project``'s jobs; change nothing.

        For a job control that writes nothing (cancelling a job that has ended), so it is
        refused exactly as one that writes a job record is. A registry opened from its database
        has no callers to check (whoever can open it may do anything): this returns. A Core
        client asks Core, which needs ``run_jobs`` on the project.

        Raises:
            PermissionDeniedError: If Core refuses the caller (the message names the
                permission and the project).
        """

    # ---- Job Service coordination: only registries that a Job Service runs on keep these ---------

    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create or replace a table's schedule; return it as stored.

        A replaced schedule keeps its ``last_tick``, so no tick already run runs again.

        Raises:
            ValidationError: If this registry keeps no schedules.
        """
        raise self._no_coordination()

    def delete_schedule(self, project: str, table: str) -> None:
        """Remove a table's schedule.

        Raises:
            NotFoundError: If the table has none.
            ValidationError: If this registry keeps no schedules.
        """
        raise self._no_coordination()

    def list_schedules(self, project: str | None = None) -> builtins.list[Schedule]:
        """Return the schedules of ``project`` (``None``: every project), by project and table.

        Raises:
            ValidationError: If this registry keeps no schedules.
        """
        raise self._no_coordination()

    def claim_tick(self, project: str, table: str, tick: datetime) -> bool:
        """Claim ``tick`` of a table's schedule, in one transaction.

        Returns ``True`` for the one caller that moves ``last_tick`` forward to it, ``False``
        for every other (it was claimed, a later tick was, or the schedule is gone).

        Raises:
            ValidationError: If this registry keeps no schedules.
        """
        raise self._no_coordination()

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew lease ``name`` for ``holder`` until now + ``ttl``, in one transaction.

        Returns:
            ``True`` if ``holder`` holds it now (it was free, expired, or already its own),
            ``False`` if another holder's lease has not expired.

        Raises:
            ValidationError: If this registry keeps no leases.
        """
        raise self._no_coordination()

    def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` holds it (else nothing happens)."""
        raise self._no_coordination()

    def _no_coordination(self) -> PotluckError:
        return ValidationError(
            f"{type(self).__name__} keeps no schedules or leases; run the Job Service on the "
            "SQL registry (the 'registry' setting, without core_url)",
            field="registry",
        )

    def close(self) -> None:  # noqa: B027 - optional hook, most registries hold no resources
        """Release connections; the default does nothing."""
