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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from potluck._redact import redact_text, redact_url, url_secrets
from potluck.definitions._checks import check_name
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
from potluck.registry.base import Change, JobRecord, Project, Registry, Revision
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

    Raises:
        ConfigError: If the URL is malformed or a SQLite folder cannot be created.
        PluginDependencyError: If the database driver is not installed.

    Example:
        >>> registry = SqlRegistry("sqlite:///.potluck/registry.db")
        >>> registry.apply("default", [driver, driver_stats])
    """

    def __init__(self, url: str) -> None:
        self.url = url
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
        """
        check_name(project, "project")
        items = builtins.list(objects)

        def work(conn: Connection, now: datetime) -> builtins.list[Change]:
            t.check_writable(conn, project, now, create=not dry_run)
            plan = plan_apply(
                items, t.load_objects(conn, project), t.load_archive(conn, project), force=force
            )
            if not dry_run:
                t.write_objects(conn, project, plan.writes, now)
                t.write_history(conn, project, plan.writes, now)
                t.write_archive(conn, project, plan.archived, plan.restored, now)
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
            return Project(name, False, now)

        return self._write(work)

    def archive_project(self, name: str) -> Project:
        """Archive project ``name`` (idempotent): reads keep working, changes are refused.

        Raises:
            NotFoundError: If it does not exist.
        """

        def work(conn: Connection, now: datetime) -> Project:
            row = t.project_row(conn, name)
            if row is None:
                raise NotFoundError(f"project {name} not found", kind="project", name=name)
            p = t.projects.c
            conn.execute(sa.update(t.projects).where(p.name == name).values(archived=True))
            return Project(name, True, _utc(row.created_at))

        return self._write(work)

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
        if version is None:
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
