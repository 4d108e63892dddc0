"""The protobuf forms of the audit log's entries and of allowed locations, both ways.

The Core server and :class:`~potluck.registry.remote.RemoteRegistry` share them; an entry's
change travels as JSON text.
"""

from __future__ import annotations

import json

from potluck._proto.potluck.core.v1 import core_service_pb2 as pb
from potluck.registry._wire import timestamp_from_proto, timestamp_to_proto
from potluck.registry.base import AllowedLocation, AuditEntry


def allowed_to_proto(allowed: AllowedLocation) -> pb.AllowedLocation:
    """Return the protobuf form of an allowed location."""
    return pb.AllowedLocation(
        project=allowed.project,
        location=allowed.location,
        allowed_by=allowed.allowed_by,
        allowed_at=timestamp_to_proto(allowed.allowed_at),
    )


def allowed_from_proto(msg: pb.AllowedLocation) -> AllowedLocation:
    """Build an allowed location from its protobuf form."""
    return AllowedLocation(
        project=msg.project,
        location=msg.location,
        allowed_by=msg.allowed_by,
        allowed_at=timestamp_from_proto(msg.allowed_at),
    )


def entry_to_proto(entry: AuditEntry) -> pb.AuditEntry:
    """Return the protobuf form of an audit entry."""
    return pb.AuditEntry(
        at=timestamp_to_proto(entry.at),
        actor=entry.actor,
        action=entry.action,
        project=entry.project,
        target=entry.target,
        change_json=json.dumps(dict(entry.change), sort_keys=True),
    )


def entry_from_proto(msg: pb.AuditEntry) -> AuditEntry:
    """Build an audit entry from its protobuf form."""
    change = json.loads(msg.change_json or "{}")
    return AuditEntry(
        at=timestamp_from_proto(msg.at),
        actor=msg.actor,
        action=msg.action,
        project=msg.project,
        target=msg.target,
        change=change if isinstance(change, dict) else {},
    )
