"""What the Core server and its client share on the wire.

That is the channel options and the protobuf forms of the registry's records (Change, Revision,
Project, JobRecord), both ways.

Definitions themselves map through ``potluck.definitions.serde``; this module covers the records
the Registry interface adds around them. Timestamps come back as timezone-aware UTC datetimes.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import cast

from google.protobuf.timestamp_pb2 import Timestamp

from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck._proto.potluck.core.v1 import definitions_pb2 as defs_pb
from potluck.definitions import Entity, serde
from potluck.definitions.serde import Definition
from potluck.errors import ValidationError
from potluck.registry.base import Action, Change, JobRecord, Project, Revision

SERVICE_NAME = "potluck.core.v1.CoreService"
"""The fully qualified gRPC service name (also the name its health check answers for)."""

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""Largest request or response either side accepts (a registry listing can be large)."""

GRPC_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
)
"""Channel and server options shared by the Core server and its client."""


def definition_to_proto(obj: Definition) -> defs_pb.EntitySpec | defs_pb.FeatureTableSpec:
    """Return the protobuf form of an entity or a feature table."""
    if isinstance(obj, Entity):
        return serde.entity_to_proto(obj)
    return serde.feature_table_to_proto(obj)


def change_to_proto(change: Change) -> pb.Change:
    """Return the protobuf form of one apply-plan line."""
    return pb.Change(
        kind=change.kind,
        name=change.name,
        action=change.action,
        revision=change.revision,
        details=list(change.details),
    )


def change_from_proto(msg: pb.Change) -> Change:
    """Build an apply-plan line from its protobuf form."""
    return Change(
        kind=msg.kind,
        name=msg.name,
        action=cast(Action, msg.action),
        revision=msg.revision,
        details=tuple(msg.details),
    )


def revision_to_proto(revision: Revision) -> defs_pb.Revision:
    """Return the protobuf form of one stored revision of an entity or a feature table."""
    msg = defs_pb.Revision(
        revision=revision.revision, applied_at=timestamp_to_proto(revision.applied_at)
    )
    if isinstance(revision.spec, Entity):
        msg.entity_spec.CopyFrom(serde.entity_to_proto(revision.spec))
    else:
        msg.spec.CopyFrom(serde.feature_table_to_proto(revision.spec))
    return msg


def revision_from_proto(msg: defs_pb.Revision) -> Revision:
    """Build a stored revision from its protobuf form."""
    spec: Definition
    if msg.WhichOneof("definition") == "entity_spec":
        spec = serde.entity_from_proto(msg.entity_spec)
    else:
        spec = serde.feature_table_from_proto(msg.spec)
    return Revision(
        revision=msg.revision, applied_at=timestamp_from_proto(msg.applied_at), spec=spec
    )


def project_to_proto(project: Project) -> pb.Project:
    """Return the protobuf form of a project."""
    msg = pb.Project(name=project.name, archived=project.archived)
    if project.created_at is not None:
        msg.created_at.CopyFrom(timestamp_to_proto(project.created_at))
    return msg


def project_from_proto(msg: pb.Project) -> Project:
    """Build a project from its protobuf form."""
    created_at = timestamp_from_proto(msg.created_at) if msg.HasField("created_at") else None
    return Project(name=msg.name, archived=msg.archived, created_at=created_at)


def job_to_proto(job: JobRecord) -> pb.Job:
    """Return the protobuf form of a job record, its body as JSON text."""
    return pb.Job(project=job.project, id=job.id, body_json=json.dumps(dict(job.body)))


def job_from_proto(msg: pb.Job) -> JobRecord:
    """Build a job record from its protobuf form.

    Raises:
        ValidationError: If ``body_json`` is not a JSON object.
    """
    try:
        body = json.loads(msg.body_json or "{}")
    except ValueError as exc:
        raise ValidationError(f"job {msg.id!r}: body_json is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValidationError(
            f"job {msg.id!r}: body_json must be a JSON object, got {type(body).__name__}"
        )
    return JobRecord(project=msg.project, id=msg.id, body=body)


def timestamp_to_proto(value: datetime) -> Timestamp:
    """Return ``value`` as a Timestamp; a naive datetime is read as UTC."""
    ts = Timestamp()
    ts.FromDatetime(value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc))
    return ts


def timestamp_from_proto(ts: Timestamp) -> datetime:
    """Return a Timestamp as a timezone-aware UTC datetime."""
    return ts.ToDatetime(tzinfo=timezone.utc)
