"""The SQL registry's storage layout: its tables and the row reads and writes on them.

The same SQLAlchemy Core metadata serves SQLite and PostgreSQL. Every table name starts with
``potluck_`` so the registry can share a database with other applications. ``SCHEMA_VERSION`` is
stored in ``potluck_schema`` and bumped on any change here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from potluck.errors import ValidationError
from potluck.registry.plan import ArchivedFeature, StoredObject, Write

SCHEMA_VERSION = 2
"""The version of the tables below. Version 2 only added tables (the audit log, allowed
locations), so a version 1 registry is upgraded in place when it is opened."""

metadata = sa.MetaData()

_NAME = sa.String()
_TIMESTAMP = sa.DateTime(timezone=True)

schema_version = sa.Table(
    "potluck_schema",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
)

projects = sa.Table(
    "potluck_projects",
    metadata,
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("archived", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", _TIMESTAMP, nullable=False),
)

objects = sa.Table(
    "potluck_objects",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("kind", sa.String(), primary_key=True),
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("deleted", sa.Boolean, nullable=False, default=False),
    sa.Column("created_at", _TIMESTAMP, nullable=False),
    sa.Column("updated_at", _TIMESTAMP, nullable=False),
)
"""The current spec of every object; a deleted object keeps its row (``deleted``) so that a
re-created one continues the revision numbering instead of clashing with its history."""

history = sa.Table(
    "potluck_history",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("kind", sa.String(), primary_key=True),
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("revision", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("applied_at", _TIMESTAMP, nullable=False),
)

archived_features = sa.Table(
    "potluck_archived_features",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("table_name", _NAME, primary_key=True),
    sa.Column("feature", _NAME, primary_key=True),
    sa.Column("value_type", sa.String(), nullable=False),
    sa.Column("archived_at", _TIMESTAMP, nullable=False),
)

jobs = sa.Table(
    "potluck_jobs",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("id", sa.String(), primary_key=True),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Column("created_at", _TIMESTAMP, nullable=False),
    sa.Column("updated_at", _TIMESTAMP, nullable=False),
)
sa.Index("potluck_jobs_by_age", jobs.c.project, jobs.c.created_at)

schedules = sa.Table(
    "potluck_schedules",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("table_name", _NAME, primary_key=True),
    sa.Column("cron", sa.String(), nullable=False),
    sa.Column("look_back_seconds", sa.Float, nullable=False),
    sa.Column("created_at", _TIMESTAMP, nullable=False),
    sa.Column("last_tick", _TIMESTAMP, nullable=True),
)
"""Scheduled offline-to-online ingestion (the Job Service's); ``last_tick`` is the latest tick
claimed, moved forward only by a conditional update so one replica runs each tick. Added after
schema version 1 as a new table: ``create_all`` adds it to an existing registry, and older
potluck versions never read it, so the version stays 1."""

leases = sa.Table(
    "potluck_leases",
    metadata,
    sa.Column("name", _NAME, primary_key=True),
    sa.Column("holder", sa.String(), nullable=False),
    sa.Column("expires_at", _TIMESTAMP, nullable=False),
)
"""Who holds a Job Service role (its control loop) until when; added like ``schedules``."""


allowed_locations = sa.Table(
    "potluck_allowed_locations",
    metadata,
    sa.Column("project", _NAME, primary_key=True),
    sa.Column("location", sa.String(), primary_key=True),
    sa.Column("allowed_by", sa.String(), nullable=False),
    sa.Column("allowed_at", _TIMESTAMP, nullable=False),
)
"""Source locations an administrator allowed for a project outside its data roots."""

audit = sa.Table(
    "potluck_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", _TIMESTAMP, nullable=False),
    sa.Column("actor", sa.String(), nullable=False),
    sa.Column("action", sa.String(), nullable=False),
    sa.Column("project", _NAME, nullable=False),
    sa.Column("target", sa.String(), nullable=False),
    sa.Column("change", sa.JSON, nullable=False),
)
"""The audit log, one row per change, job start or cancel, and denied call; never updated."""
sa.Index("potluck_audit_by_project", audit.c.project, audit.c.at)


class LostRace(Exception):
    """Another writer committed first (a conditional update matched nothing, a key clashed)."""


def project_row(conn: Connection, name: str) -> sa.Row[Any, Any] | None:
    """Return the project's ``archived`` and ``created_at``, or ``None`` if it does not exist."""
    p = projects.c
    query = sa.select(p.archived, p.created_at).where(p.name == name)
    return conn.execute(query).first()


def check_writable(conn: Connection, project: str, now: datetime, *, create: bool) -> None:
    """Refuse changes to an archived project; create a missing one if ``create``."""
    row = project_row(conn, project)
    if row is None:
        if create:
            conn.execute(sa.insert(projects).values(name=project, archived=False, created_at=now))
    elif row.archived:
        raise ValidationError(
            f"project {project} is archived; it accepts no more changes", project=project
        )


def load_objects(conn: Connection, project: str) -> dict[tuple[str, str], StoredObject]:
    """Return every object row of the project (deleted ones too), keyed by kind and name."""
    o = objects.c
    query = sa.select(o.kind, o.name, o.revision, o.spec, o.deleted).where(o.project == project)
    return {
        (row.kind, row.name): StoredObject(
            row.kind, row.name, row.revision, row.spec, bool(row.deleted)
        )
        for row in conn.execute(query)
    }


def load_archive(conn: Connection, project: str) -> dict[str, dict[str, str]]:
    """Return the project's archived features: table -> feature -> value type name."""
    a = archived_features.c
    query = sa.select(a.table_name, a.feature, a.value_type).where(a.project == project)
    archive: dict[str, dict[str, str]] = {}
    for row in conn.execute(query):
        archive.setdefault(row.table_name, {})[row.feature] = row.value_type
    return archive


def write_objects(
    conn: Connection,
    project: str,
    writes: Sequence[Write],
    now: datetime,
    *,
    deleted: bool = False,
) -> None:
    """Insert new rows; update existing ones only where the revision is still the expected one.

    An update that matches nothing means another writer won the race.
    """
    new = [w for w in writes if w.expected is None]
    if new:
        conn.execute(
            sa.insert(objects),
            [
                {
                    "project": project,
                    "kind": w.kind,
                    "name": w.name,
                    "revision": w.revision,
                    "spec": w.spec,
                    "deleted": deleted,
                    "created_at": now,
                    "updated_at": now,
                }
                for w in new
            ],
        )
    updates = [w for w in writes if w.expected is not None]
    if not updates:
        return
    o = objects.c
    # One executemany (psycopg pipelines it): not a round trip per object.
    result = conn.execute(
        sa.update(objects)
        .where(
            o.project == sa.bindparam("b_project"),
            o.kind == sa.bindparam("b_kind"),
            o.name == sa.bindparam("b_name"),
            o.revision == sa.bindparam("b_expected"),
        )
        .values(
            revision=sa.bindparam("b_revision"),
            spec=sa.bindparam("b_spec"),
            deleted=deleted,
            updated_at=now,
        ),
        [
            {
                "b_project": project,
                "b_kind": w.kind,
                "b_name": w.name,
                "b_expected": w.expected,
                "b_revision": w.revision,
                "b_spec": w.spec,
            }
            for w in updates
        ],
    )
    if result.rowcount != len(updates):
        raise LostRace()


def write_history(conn: Connection, project: str, writes: Sequence[Write], now: datetime) -> None:
    """Keep every written revision's spec."""
    if writes:
        conn.execute(
            sa.insert(history),
            [
                {
                    "project": project,
                    "kind": w.kind,
                    "name": w.name,
                    "revision": w.revision,
                    "spec": w.spec,
                    "applied_at": now,
                }
                for w in writes
            ],
        )


def write_archive(
    conn: Connection,
    project: str,
    archived: Sequence[ArchivedFeature],
    restored: Sequence[tuple[str, str]],
    now: datetime,
) -> None:
    """Archive removed features and drop restored ones from the archive."""
    a = archived_features.c
    gone = [*restored, *((f.table, f.feature) for f in archived)]
    if gone:
        conn.execute(
            sa.delete(archived_features).where(
                a.project == project,
                a.table_name == sa.bindparam("t"),
                a.feature == sa.bindparam("f"),
            ),
            [{"t": table, "f": feature} for table, feature in gone],
        )
    if archived:
        conn.execute(
            sa.insert(archived_features),
            [
                {
                    "project": project,
                    "table_name": f.table,
                    "feature": f.feature,
                    "value_type": f.value_type,
                    "archived_at": now,
                }
                for f in archived
            ],
        )


def write_audit(
    conn: Connection,
    now: datetime,
    actor: str,
    action: str,
    project: str,
    target: str,
    change: dict[str, Any],
) -> None:
    """Append one audit entry (in the transaction of the change it records)."""
    conn.execute(
        sa.insert(audit).values(
            at=now, actor=actor, action=action, project=project, target=target, change=change
        )
    )


def read_audit(
    conn: Connection, project: str | None, since: datetime | None, limit: int
) -> Sequence[Any]:
    """Return up to ``limit`` audit rows, newest first, optionally of one project and recent.

    Each row has ``at``, ``actor``, ``action``, ``project``, ``target`` and ``change``.
    """
    a = audit.c
    query = sa.select(a.at, a.actor, a.action, a.project, a.target, a.change)
    if project is not None:
        query = query.where(a.project == project)
    if since is not None:
        query = query.where(a.at >= since)
    return conn.execute(query.order_by(a.id.desc()).limit(limit)).all()
