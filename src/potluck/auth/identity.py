"""Who is calling: the :class:`Caller` of the current call, and the :class:`Permission` names.

The servers' one gRPC interceptor and one HTTP middleware (:mod:`potluck.auth.grpc`,
:mod:`potluck.auth.http`) authenticate each call and set its caller for the call's duration;
anything that runs inside the call (a servicer, a handler, an audit record) reads it with
:func:`current_caller`. Without authentication configured there is no caller: ``None``.
"""

from __future__ import annotations

import contextlib
import enum
import unicodedata
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal


class Permission(str, enum.Enum):
    """What a token or JWT may do; each may be limited to some projects (:attr:`Caller.projects`).

    The values are the names tokens files, JWT claims and CLI options use.
    """

    READ_ONLINE = "read_online"
    """Read feature values from Online Serving (gRPC ``GetOnlineFeatures``, HTTP
    ``/get-online-features``) and its ``/metrics``."""
    READ_DEFINITIONS = "read_definitions"
    """Read definitions from Core: get/list entities, feature tables and their history, list
    projects, get/list jobs."""
    APPLY = "apply"
    """Change definitions in Core: apply (and plan), delete entities and feature tables."""
    RUN_JOBS = "run_jobs"
    """Start and cancel jobs (ingestion, stream, training sets) and record their state."""
    RECORD_DENIALS = "record_denials"
    """Report a call a server refused to Core's audit log (Core ``RecordDenial``): for the
    tokens Online Serving and the Job Service use to reach Core. It grants nothing else."""
    ADMIN = "admin"
    """Administer projects: create, archive and restore them, and allow data locations outside
    a project's roots. It grants every other permission too."""

    @classmethod
    def parse(cls, name: str) -> Permission:
        """Return the permission called ``name`` (case-insensitive, ``-`` or ``_``).

        For names an operator writes (tokens files, ``permission_map``, CLI options); a JWT's
        permissions claim must carry the exact names (:mod:`potluck.auth.jwt_verifier`).

        Raises:
            ValueError: If ``name`` is no permission; the message lists them.
        """
        key = name.strip().lower().replace("-", "_")
        for permission in cls:
            if permission.value == key:
                return permission
        names = ", ".join(p.value for p in cls)
        raise ValueError(f"{name!r} is not a permission; the permissions: {names}")


@dataclass(frozen=True)
class Caller:
    """An authenticated caller.

    Attributes:
        subject: Who it is: a static token's name, or a JWT's ``sub`` claim.
        permissions: What it may do (:attr:`Permission.ADMIN` implies every other).
        projects: The projects it may act on; ``None`` means every project.
        kind: Where the subject comes from: ``"token"`` (a static token) or ``"jwt"``.
    """

    subject: str
    permissions: frozenset[Permission]
    projects: frozenset[str] | None = None
    kind: Literal["token", "jwt"] = "token"

    @property
    def actor(self) -> str:
        """Who it is in the audit log: ``token:<name>`` or ``jwt:<sub>``, never mixed up."""
        return f"{self.kind}:{self.subject}"

    def may(self, permission: Permission, project: str | None) -> bool:
        """Return whether this caller holds ``permission`` on ``project``.

        Args:
            permission: The permission the call needs.
            project: The project the call acts on; ``None`` for a call on no single project
                (listing projects), allowed to a caller limited to some projects.
        """
        held = permission in self.permissions or Permission.ADMIN in self.permissions
        if not held:
            return False
        return self.projects is None or project is None or project in self.projects


def subject_problem(subject: str) -> str | None:
    """Return why ``subject`` cannot name a caller, or ``None`` when it can.

    A subject is written into logs and the audit log, so it must be non-empty text without
    control characters (a newline could forge a log line) or spaces around it.
    """
    if not subject.strip():
        return "it is empty"
    if subject != subject.strip():
        return "it has spaces around it"
    bad = next((c for c in subject if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp")), None)
    if bad is not None:
        return f"it holds the control character {bad!r}"
    return None


_CURRENT: ContextVar[Caller | None] = ContextVar("potluck_caller", default=None)


def current_caller() -> Caller | None:
    """Return the caller of the call being served, or ``None`` when authentication is off."""
    return _CURRENT.get()


@contextlib.contextmanager
def acting_as(caller: Caller | None) -> Iterator[None]:
    """Make ``caller`` the :func:`current_caller` inside the ``with`` block (servers use it)."""
    token = _CURRENT.set(caller)
    try:
        yield
    finally:
        _CURRENT.reset(token)


__all__ = ["Caller", "Permission", "acting_as", "current_caller", "subject_problem"]
