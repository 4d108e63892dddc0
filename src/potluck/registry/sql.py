"""The SQL registry: definitions, projects and job records in a SQLite file or PostgreSQL.

One code path on SQLAlchemy Core serves both databases. Every write is one transaction that reads
the project's stored objects once, runs :func:`potluck.registry.plan.plan_apply` and writes with
``UPDATE ... WHERE revision = :expected``; a write that loses a race to another process is retried
as a whole, so no update is ever lost. On SQLite, write transactions start with ``BEGIN IMMEDIATE``
and wait on a busy timeout, so many processes can write one file without "database is locked".
Driver errors are translated here, at the boundary, into potluck errors that name the URL with
its password masked.
"""

from __future__ import annotations

import builtins
import json
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from potluck._redact import redact_text, redact_url, url_secrets
from potluck.definitions._checks import check_name
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import Definition, from_dict
from potluck.errors import (
    AlreadyExistsError,
    ConfigError,
    ConflictError,
    NotFoundError,
    PluginDependencyError,
    PotluckError,
    UnavailableError,
    ValidationError,
)
from potluck.registry import _schema as t
from potluck.registry import audit
from potluck.registry.base import (
    AllowedLocation,
    AuditEntry,
    Change,
    JobRecord,
    Project,
    Registry,
    Revision,
    Schedule,
)
from potluck.registry.isolation import (
    TOPIC_PREFIX,
    DataIsolation,
    check_sources,
    normalize_location,
)
from potluck.registry.plan import KIND_LABELS, plan_apply, plan_delete

_T = TypeVar("_T")

MAX_ATTEMPTS = 10
"""How often a write transaction that lost a race to another writer is run again."""

SQLITE_BUSY_TIMEOUT = 30.0
"""Seconds a SQLite connection waits for another process's write lock before failing."""

_WRITE_OPTION = "potluck_write"
_MAX_PORT = 65_535
_PG_SCHEMA_LOCK = 0x706F746C75636B  # "potluck": serialises concurrent schema creation
_RETRYABLE_PG_CODES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_DAMAGED_FILE = ("file is not a database", "database disk image is malformed")
"""What SQLite says of a registry file that is not, or no longer, a database."""
_CONFIG_PROBLEMS = (
    "authentication failed",
    "no password supplied",
    "does not exist",
    "unable to open database file",
    "permission denied",
)


class SqlRegistry(Registry):
    """The registry on a SQLAlchemy URL: a SQLite file (embedded default) or PostgreSQL.

    The tables are created on first use. A SQLite file's folder is created if missing.

    Args:
        url: ``sqlite:///path/to/registry.db`` or ``postgresql://user:password@host:port/db``.
        isolation: The projects' data roots that applied source locations must lie under
            (:mod:`potluck.registry.isolation`); ``None`` allows every location.

    Raises:
        ConfigError: If the URL is malformed or a SQLite folder cannot be created.
        PluginDependencyError: If the database driver is not installed.

    Example:
        >>> registry = SqlRegistry("sqlite:///.potluck/registry.db")
        >>> registry.apply("default", [driver, driver_stats])
    """

    def __init__(self, url: str, *, isolation: DataIsolation | None = None) -> None:
        self.url = url
        self.isolation = isolation
        self._engine, self._masked_url = _create_engine(url)
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    # ---- definitions ---------------------------------------------------------------------------

    def apply(
        self,
        project: str,
        objects: Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> builtins.list[Change]:
        """Apply ``objects`` to ``project`` in one transaction; see :meth:`Registry.apply`.

        Raises:
            ValidationError: If ``project`` is archived, or an object is given twice.
            DefinitionError: Also if a table names a source location outside the project's
                data roots that no administrator allowed (:func:`check_sources`).
        """
        check_name(project, "project")
        items = builtins.list(objects)
        tables = [o for o in items if isinstance(o, FeatureTable)]

        def work(conn: Connection, now: datetime) -> builtins.list[Change]:
            t.check_writable(conn, project, now, create=not dry_run)
            plan = plan_apply(
                items, t.load_objects(conn, project), t.load_archive(conn, project), force=force
            )
            if self.isolation is not None:
                allowed = [a.location for a in self._allowed(conn, project)]
                check_sources(project, tables, self.isolation, allowed)
            if not dry_run:
                t.write_objects(conn, project, plan.writes, now)
                t.write_history(conn, project, plan.writes, now)
                t.write_archive(conn, project, plan.archived, plan.restored, now)
                change = audit.apply_change(plan.changes)
                t.write_audit(conn, now, audit.current_actor(), audit.APPLY, project, "", change)
            return builtins.list(plan.changes)

        if dry_run:
            with self._read() as conn:
                return work(conn, _now())
        return self._write(work)

    def get(self, project: str, kind: str, name: str) -> Definition:
        """Return the current definition of ``kind`` named ``name``; see :meth:`Registry.get`."""
        label = _label(kind)
        o = t.objects.c
        query = sa.select(o.spec, o.revision).where(
            o.project == project, o.kind == kind, o.name == name, o.deleted.is_(False)
        )
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise _not_found(label, kind, name, project)
        return from_dict(kind, row.spec, row.revision)

    def list(
        self, project: str, kind: str, labels: Mapping[str, str] | None = None
    ) -> builtins.list[Definition]:
        """Return the definitions of ``kind`` whose labels include every one of ``labels``."""
        _label(kind)
        wanted = dict(labels or {})
        o = t.objects.c
        query = (
            sa.select(o.spec, o.revision)
            .where(o.project == project, o.kind == kind, o.deleted.is_(False))
            .order_by(o.name)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [
            from_dict(kind, row.spec, row.revision)
            for row in rows
            if all(row.spec["labels"].get(k) == v for k, v in wanted.items())
        ]

    def delete(self, project: str, kind: str, name: str) -> None:
        """Delete a definition, keeping its history; a table's features are archived.

        Raises:
            NotFoundError: If there is no such definition.
            ValidationError: If an entity is still used by a feature table, or the project is
                archived.
        """
        label = _label(kind)

        def work(conn: Connection, now: datetime) -> None:
            t.check_writable(conn, project, now, create=False)
            stored = t.load_objects(conn, project)
            current = stored.get((kind, name))
            if current is None or current.deleted:
                raise _not_found(label, kind, name, project)
            plan = plan_delete(kind, name, project, stored)
            t.write_objects(conn, project, plan.writes, now, deleted=True)
            t.write_archive(conn, project, plan.archived, plan.restored, now)
            archived = [f"{f.table}:{f.feature}" for f in plan.archived]
            t.write_audit(
                conn,
                now,
                audit.current_actor(),
                audit.DELETE,
                project,
                f"{kind} {name}",
                {"kind": kind, "name": name, "archived_features": archived},
            )

        self._write(work)

    def history(self, project: str, kind: str, name: str) -> builtins.list[Revision]:
        """Return every applied revision of a definition, oldest first (deleted ones too)."""
        label = _label(kind)
        h = t.history.c
        query = (
            sa.select(h.revision, h.applied_at, h.spec)
            .where(h.project == project, h.kind == kind, h.name == name)
            .order_by(h.revision)
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        if not rows:
            raise _not_found(label, kind, name, project)
        return [
            Revision(
                revision=row.revision,
                applied_at=_utc(row.applied_at),
                spec=from_dict(kind, row.spec, row.revision),
            )
            for row in rows
        ]

    # ---- projects ------------------------------------------------------------------------------

    def list_projects(self, *, include_archived: bool = False) -> builtins.list[Project]:
        """Return the projects, sorted by name (archived ones only if asked)."""
        p = t.projects.c
        query = sa.select(p.name, p.archived, p.created_at).order_by(p.name)
        if not include_archived:
            query = query.where(p.archived.is_(False))
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [Project(row.name, bool(row.archived), _utc(row.created_at)) for row in rows]

    def create_project(self, name: str) -> Project:
        """Create project ``name``.

        Raises:
            DefinitionError: If ``name`` is not a valid name.
            AlreadyExistsError: If it exists (archived or not).
        """
        check_name(name, "project")

        def work(conn: Connection, now: datetime) -> Project:
            if t.project_row(conn, name) is not None:
                raise AlreadyExistsError(f"project {name} already exists", project=name)
            conn.execute(sa.insert(t.projects).values(name=name, archived=False, created_at=now))
            actor = audit.current_actor()
            t.write_audit(conn, now, actor, audit.CREATE_PROJECT, name, name, {})
            return Project(name, False, now)

        return self._write(work)

    def archive_project(self, name: str) -> Project:
        """Archive project ``name`` (idempotent): reads keep working, changes are refused.

        Raises:
            NotFoundError: If it does not exist.
        """
        return self._set_archived(name, archived=True)

    def restore_project(self, name: str) -> Project:
        """Restore archived project ``name`` (idempotent): applies to it are accepted again.

        Restoring a project that is not archived changes nothing and writes no audit entry;
        so does archiving an archived one.

        Raises:
            NotFoundError: If it does not exist.
        """
        return self._set_archived(name, archived=False)

    def _set_archived(self, name: str, *, archived: bool) -> Project:
        action = audit.ARCHIVE_PROJECT if archived else audit.RESTORE_PROJECT

        def work(conn: Connection, now: datetime) -> Project:
            row = t.project_row(conn, name)
            if row is None:
                raise NotFoundError(f"project {name} not found", kind="project", name=name)
            if bool(row.archived) == archived:  # nothing changes: nothing to audit
                return Project(name, archived, _utc(row.created_at))
            p = t.projects.c
            conn.execute(sa.update(t.projects).where(p.name == name).values(archived=archived))
            change = {"archived": {"from": bool(row.archived), "to": archived}}
            t.write_audit(conn, now, audit.current_actor(), action, name, name, change)
            return Project(name, archived, _utc(row.created_at))

        return self._write(work)

    def allow_location(self, project: str, location: str) -> AllowedLocation:
        """Allow ``project``'s tables to name ``location`` outside its data roots (idempotent).

        Raises:
            NotFoundError: If the project does not exist.
            ValidationError: As :func:`~potluck.registry.isolation.normalize_location` says.
        """
        location = normalize_location(location)

        def work(conn: Connection, now: datetime) -> AllowedLocation:
            if t.project_row(conn, project) is None:
                raise NotFoundError(
                    f"project {project} not found; create it first (potluck projects create "
                    f"{project})",
                    kind="project",
                    name=project,
                )
            existing = [a for a in self._allowed(conn, project) if a.location == location]
            if existing:
                return existing[0]
            actor = audit.current_actor()
            conn.execute(
                sa.insert(t.allowed_locations).values(
                    project=project, location=location, allowed_by=actor, allowed_at=now
                )
            )
            t.write_audit(conn, now, actor, audit.ALLOW_LOCATION, project, location, {})
            return AllowedLocation(project, location, actor, now)

        return self._write(work)

    def data_roots(self, project: str) -> tuple[str, ...]:
        """Return the roots this registry's applies hold ``project`` to; see the base class."""
        if self.isolation is None:
            return ()
        prefixes = self.isolation.prefixes(project)
        return (*self.isolation.roots(project), *(TOPIC_PREFIX + p for p in prefixes))

    def list_allowed_locations(self, project: str) -> builtins.list[AllowedLocation]:
        """Return the locations allowed for ``project``, sorted by location."""
        with self._read() as conn:
            return self._allowed(conn, project)

    @staticmethod
    def _allowed(conn: Connection, project: str) -> builtins.list[AllowedLocation]:
        a = t.allowed_locations.c
        query = (
            sa.select(a.location, a.allowed_by, a.allowed_at)
            .where(a.project == project)
            .order_by(a.location)
        )
        return [
            AllowedLocation(project, row.location, row.allowed_by, _utc(row.allowed_at))
            for row in conn.execute(query)
        ]

    # ---- audit ---------------------------------------------------------------------------------

    def audit_log(
        self, *, project: str | None = None, since: datetime | None = None, limit: int = 100
    ) -> builtins.list[AuditEntry]:
        """Return audit entries, newest first; see :meth:`Registry.audit_log`."""
        start = None if since is None else _utc(since)
        with self._read() as conn:
            rows = t.read_audit(conn, project, start, audit.check_limit(limit))
        return [
            AuditEntry(
                at=_utc(row.at),
                actor=row.actor,
                action=row.action,
                project=row.project,
                target=row.target,
                change=row.change,
            )
            for row in rows
        ]

    def record_denial(
        self,
        actor: str,
        project: str,
        permission: str,
        method: str,
        *,
        reported_by: str | None = None,
    ) -> None:
        """Add a ``permission_denied`` entry; see :meth:`Registry.record_denial`."""
        change = {"method": method}
        if reported_by is not None:
            change["reported_by"] = reported_by

        def work(conn: Connection, now: datetime) -> None:
            t.write_audit(conn, now, actor, audit.PERMISSION_DENIED, project, permission, change)

        self._write(work)

    # ---- jobs ----------------------------------------------------------------------------------

    def put_job(self, job: JobRecord) -> None:
        """Create or replace a job record (its creation time is kept on replace).

        Raises:
            ValidationError: If the id is empty or the body is not JSON-serialisable.
        """
        if not isinstance(job.id, str) or not job.id:
            raise ValidationError(f"job id must be a non-empty string, got {job.id!r}")
        try:
            body = json.loads(json.dumps(dict(job.body)))
        except (TypeError, ValueError) as exc:
            raise ValidationError(f"job {job.id}: body is not JSON: {exc}", job_id=job.id) from None
        j = t.jobs.c
        key = (j.project == job.project, j.id == job.id)

        def work(conn: Connection, now: datetime) -> None:
            updated = conn.execute(sa.update(t.jobs).where(*key).values(body=body, updated_at=now))
            if updated.rowcount == 0:
                conn.execute(
                    sa.insert(t.jobs).values(
                        project=job.project, id=job.id, body=body, created_at=now, updated_at=now
                    )
                )
                action, target, change = audit.job_event(job)
                actor = audit.current_actor()
                t.write_audit(conn, now, actor, action, job.project, target, change)

        self._write(work)

    def get_job(self, project: str, job_id: str) -> JobRecord:
        """Return a job record.

        Raises:
            NotFoundError: If there is none.
        """
        j = t.jobs.c
        query = sa.select(j.body).where(j.project == project, j.id == job_id)
        with self._read() as conn:
            row = conn.execute(query).first()
        if row is None:
            raise NotFoundError(
                f"job {job_id} not found in project {project}",
                kind="job",
                name=job_id,
                project=project,
            )
        return JobRecord(project=project, id=job_id, body=row.body)

    def list_jobs(self, project: str) -> builtins.list[JobRecord]:
        """Return the project's job records, newest first."""
        j = t.jobs.c
        query = (
            sa.select(j.id, j.body)
            .where(j.project == project)
            .order_by(j.created_at.desc(), j.id.desc())
        )
        with self._read() as conn:
            rows = conn.execute(query).all()
        return [JobRecord(project=project, id=row.id, body=row.body) for row in rows]

    # ---- Job Service coordination -------------------------------------------------------------

    def put_schedule(self, schedule: Schedule) -> Schedule:
        """Create or replace a table's schedule, keeping its ``last_tick``; see the base class."""
        s = t.schedules.c
        key = (s.project == schedule.project, s.table_name == schedule.table)
        values = {
            "cron": schedule.cron,
            "look_back_seconds": schedule.look_back.total_seconds(),
            "created_at": _utc(schedule.created_at),
        }

        def work(conn: Connection, _now: datetime) -> Schedule:
            if conn.execute(sa.update(t.schedules).where(*key).values(**values)).rowcount == 0:
                conn.execute(
                    sa.insert(t.schedules).values(
                        project=schedule.project, table_name=schedule.table, **values
                    )
                )
            row = conn.execute(sa.select(t.schedules).where(*key)).one()
            return _schedule(row)

        return self._write(work)

    def delete_schedule(self, project: str, table: str) -> None:
        """Remove a table's schedule.

        Raises:
            NotFoundError: If the table has none.
        """
        s = t.schedules.c

        def work(conn: Connection, _now: datetime) -> None:
            query = sa.delete(t.schedules).where(s.project == project, s.table_name == table)
            if conn.execute(query).rowcount == 0:
                raise NotFoundError(
                    f"feature table {table} has no schedule in project {project}",
                    kind="schedule",
                    name=table,
                    project=project,
                )

        self._write(work)

    def list_schedules(self, project: str | None = None) -> builtins.list[Schedule]:
        """Return the schedules of ``project`` (``None``: every project), by project and table."""
        s = t.schedules.c
        query = sa.select(t.schedules).order_by(s.project, s.table_name)
        if project is not None:
            query = query.where(s.project == project)
        with self._read() as conn:
            return [_schedule(row) for row in conn.execute(query)]

    def claim_tick(self, project: str, table: str, tick: datetime) -> bool:
        """Move the schedule's ``last_tick`` forward to ``tick`` if no one has; see the base."""
        s = t.schedules.c
        when = _utc(tick)
        query = (
            sa.update(t.schedules)
            .where(
                s.project == project,
                s.table_name == table,
                sa.or_(s.last_tick.is_(None), s.last_tick < when),
            )
            .values(last_tick=when)
        )
        return bool(self._write(lambda conn, _now: conn.execute(query).rowcount == 1))

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew lease ``name`` for ``holder``; see :meth:`Registry.acquire_lease`."""
        lease = t.leases.c

        def work(conn: Connection, now: datetime) -> bool:
            expires = now + ttl
            row = conn.execute(
                sa.select(lease.holder, lease.expires_at).where(lease.name == name)
            ).first()
            if row is None:
                conn.execute(
                    sa.insert(t.leases).values(name=name, holder=holder, expires_at=expires)
                )
                return True
            if row.holder != holder and _utc(row.expires_at) > now:
                return False
            taken = conn.execute(
                sa.update(t.leases)
                .where(lease.name == name, lease.holder == row.holder)
                .where(lease.expires_at == row.expires_at)
                .values(holder=holder, expires_at=expires)
            )
            if taken.rowcount != 1:
                raise t.LostRace()
            return True

        return self._write(work)

    def release_lease(self, name: str, holder: str) -> None:
        """Give lease ``name`` up if ``holder`` holds it."""
        lease = t.leases.c
        query = sa.delete(t.leases).where(lease.name == name, lease.holder == holder)
        self._write(lambda conn, _now: conn.execute(query))

    def close(self) -> None:
        """Close the pooled connections."""
        self._engine.dispose()

    # ---- transactions --------------------------------------------------------------------------

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        self._ensure_schema()
        with self._driver_errors(), self._engine.connect() as conn, conn.begin():
            yield conn

    def _write(self, work: Callable[[Connection, datetime], _T]) -> _T:
        """Run ``work`` in one write transaction, again from scratch if it loses a race."""
        self._ensure_schema()
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self._driver_errors(), self._engine.connect() as conn:
                    conn.execution_options(**{_WRITE_OPTION: True})
                    with conn.begin():
                        return work(conn, _now())
            except t.LostRace:
                time.sleep(random.uniform(0, min(0.5, 0.01 * 2**attempt)))
        raise ConflictError(
            f"registry {self._masked_url}: other writers changed the same objects "
            f"{MAX_ATTEMPTS} times in a row; try again",
            address=self._masked_url,
        )

    def _ensure_schema(self) -> None:
        if self._schema_ready:
            return
        with self._schema_lock:
            if self._schema_ready:
                return
            with self._driver_errors(), self._engine.connect() as conn:
                conn.execution_options(**{_WRITE_OPTION: True})
                with conn.begin():
                    if conn.dialect.name == "postgresql":
                        conn.execute(
                            sa.text("SELECT pg_advisory_xact_lock(:key)"),
                            {"key": _PG_SCHEMA_LOCK},
                        )
                    t.metadata.create_all(conn)
                    self._check_schema_version(conn)
            self._schema_ready = True

    def _check_schema_version(self, conn: Connection) -> None:
        version = conn.execute(sa.select(sa.func.max(t.schema_version.c.version))).scalar()
        if version is None or version < t.SCHEMA_VERSION:
            # Versions so far only add tables, which create_all has just created.
            conn.execute(sa.insert(t.schema_version).values(version=t.SCHEMA_VERSION))
        elif version > t.SCHEMA_VERSION:
            raise ConfigError(
                f"registry {self._masked_url} has schema version {version}, newer than the "
                f"{t.SCHEMA_VERSION} this potluck understands; upgrade potluck",
                key="registry",
                sources=(),
            )

    @contextmanager
    def _driver_errors(self) -> Iterator[None]:
        """Translate driver errors: races into :class:`t.LostRace`, the rest into potluck errors."""
        try:
            yield
        except sa.exc.IntegrityError as exc:
            raise t.LostRace() from exc
        except sa.exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _RETRYABLE_PG_CODES:
                raise t.LostRace() from exc
            detail = _driver_detail(exc)
            if any(sign in detail.lower() for sign in _DAMAGED_FILE):
                raise ConfigError(
                    f"registry {self._masked_url} is not a readable registry database: {detail}; "
                    "point the 'registry' setting at another file, or restore this one",
                    key="registry",
                    sources=(),
                ) from exc
            if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
                raise
            raise self._connection_error(exc) from exc

    def _connection_error(self, exc: sa.exc.DBAPIError) -> PotluckError:
        detail = redact_text(_driver_detail(exc), url_secrets(self.url))
        message = f"cannot connect to registry {self._masked_url}: {detail}"
        if any(problem in detail.lower() for problem in _CONFIG_PROBLEMS):
            return ConfigError(message, key="registry", sources=())
        return UnavailableError(message, address=self._masked_url)


# ---- engine ------------------------------------------------------------------------------------


def _create_engine(url: str) -> tuple[Engine, str]:
    masked = redact_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError(
            f"invalid registry URL {masked!r}; expected "
            "sqlite:///path/to/registry.db or postgresql://user:password@host:port/database",
            key="registry",
            sources=(),
        ) from None
    if parsed.port is not None and not 1 <= parsed.port <= _MAX_PORT:
        raise ConfigError(
            f"invalid registry URL {masked!r}: port {parsed.port} is not from 1 to {_MAX_PORT}",
            key="registry",
            sources=(),
        )
    sqlite = parsed.get_backend_name() == "sqlite"
    connect_args: dict[str, Any] = {}
    if sqlite:
        _make_parent_folder(parsed.database, masked)
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, pool_pre_ping=not sqlite)
    except ImportError as exc:
        backend = parsed.get_backend_name()
        extra = "postgres" if backend == "postgresql" else None
        hint = (
            f"run: pip install 'potluck[{extra}]'"
            if extra
            else f"install the Python driver SQLAlchemy uses for {parsed.drivername}"
        )
        raise PluginDependencyError(
            f"registry {masked} needs {exc.name or 'a database driver'}, which is not "
            f"installed; {hint}",
            plugin=backend,
            extra=extra,
        ) from exc
    except sa.exc.NoSuchModuleError:
        raise ConfigError(
            f"registry {masked}: unknown database {parsed.drivername!r}; use sqlite:/// or "
            "postgresql://",
            key="registry",
            sources=(),
        ) from None
    if sqlite:
        _take_over_sqlite_transactions(engine)
    return engine, masked


def _make_parent_folder(database: str | None, masked: str) -> None:
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    try:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"registry {masked}: cannot create folder {Path(database).parent}: {exc.strerror}",
            key="registry",
            sources=(),
        ) from None


def _take_over_sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy, not the sqlite3 module, begin SQLite transactions.

    Writes start with ``BEGIN IMMEDIATE`` (the write lock is taken up front, so a read-then-write
    never fails half-way), reads with a plain ``BEGIN``; WAL lets readers go on during a write.
    """

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _driver_detail(exc: sa.exc.DBAPIError) -> str:
    lines = str(exc.orig).strip().splitlines()
    line = lines[0] if lines else type(exc.orig).__name__
    for marker in (" failed: ", "FATAL:"):
        if marker in line:
            line = line.rsplit(marker, 1)[1]
    return line.strip()


# ---- rows --------------------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _utc(value: datetime) -> datetime:
    """Stored timestamps are UTC; SQLite hands them back without a zone."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _schedule(row: sa.Row[Any]) -> Schedule:
    return Schedule(
        project=row.project,
        table=row.table_name,
        cron=row.cron,
        look_back=timedelta(seconds=row.look_back_seconds),
        created_at=_utc(row.created_at),
        last_tick=None if row.last_tick is None else _utc(row.last_tick),
    )


def _label(kind: str) -> str:
    try:
        return KIND_LABELS[kind]
    except KeyError:
        raise ValidationError(
            f"unknown kind {kind!r}; expected one of {', '.join(sorted(KIND_LABELS))}", kind=kind
        ) from None


def _not_found(label: str, kind: str, name: str, project: str) -> NotFoundError:
    return NotFoundError(
        f"{label} {name} not found in project {project}", kind=kind, name=name, project=project
    )


__all__ = ["MAX_ATTEMPTS", "SQLITE_BUSY_TIMEOUT", "SqlRegistry"]
