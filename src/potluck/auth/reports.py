"""What a reported denial may say: the checks of Core's ``RecordDenial`` on its request.

Online Serving and the Job Service report the calls they deny to Core's audit log
(:class:`~potluck.auth.denials.DenialAudit` through ``RemoteRegistry.record_denial``). The token
they use holds ``record_denials``, which lets it write audit entries naming someone else, so
Core accepts only what such a server can report, and bounds it:

- ``actor``: a caller's audit identity, ``token:NAME`` or ``jwt:SUBJECT``, the subject without
  control characters or spaces around it, at most :data:`MAX_ACTOR_CHARS` characters;
- ``method``: a gRPC method of a service potluck serves (``/package.Service/Method``, from the
  rule tables of :mod:`potluck.auth.rules`), or an HTTP request of Online Serving
  (``POST /get-online-features``); either may end with the repeat count
  :class:`~potluck.auth.denials.DenialAudit` adds; at most :data:`MAX_METHOD_CHARS` characters;
- ``permission``: the permission that method needs (``read_online`` for HTTP);
- ``project``: a project name, empty only for a method that acts on no single project (the
  Core servicer also checks that the project exists).

Who reported the denial is recorded apart from the actor (``reported_by``), so a reporter
cannot pass as the denied caller.
"""

from __future__ import annotations

import re
import unicodedata

from potluck.auth.denials import REPEATED
from potluck.auth.identity import Permission, subject_problem
from potluck.auth.rules import CORE_RULES, FEAST_CORE_RULES, JOB_SERVICE_RULES, SERVING_RULES
from potluck.definitions._checks import check_name
from potluck.errors import DefinitionError, ValidationError

MAX_ACTOR_CHARS = 256
"""The longest ``actor`` a report may name."""

MAX_METHOD_CHARS = 512
"""The longest ``method`` a report may name (an HTTP path is already cut to 300 bytes)."""

RULES = {**CORE_RULES, **FEAST_CORE_RULES, **SERVING_RULES, **JOB_SERVICE_RULES}
"""Every gRPC method potluck serves, with the permission it needs."""

HTTP_VERBS = ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
"""The request methods of an HTTP call a server may report."""

_IDENTITY_KINDS = ("token:", "jwt:")
_HTTP = re.compile(rf"(?:{'|'.join(HTTP_VERBS)}) /\S.*|(?:{'|'.join(HTTP_VERBS)}) /")


def check_report(actor: str, project: str, permission: str, method: str) -> None:
    """Refuse a reported denial a server could not have made.

    Args:
        actor: The denied caller.
        project: The project the denied call acted on (``""``: none).
        permission: The permission it lacked.
        method: The denied call.

    Raises:
        ValidationError: Naming the first bad field (``actor``, ``method``, ``permission`` or
            ``project``) and what it must be.
    """
    _check_actor(actor)
    base = _check_method(method)
    rule = RULES.get(base)
    needed = Permission.READ_ONLINE if rule is None else rule.permission
    if permission != needed.value:
        raise ValidationError(
            f"permission: {_shown(permission)} is not the permission {base} needs; a denial of "
            f"{base} reports {needed.value!r}",
            field="permission",
        )
    if not project:
        names_one = rule is not None and any(p is not None for p in rule.projects(object(), ""))
        if names_one:
            raise ValidationError(
                f"project: empty; {base} acts on one project, so its denial must name it",
                field="project",
            )
        return
    try:
        check_name(project, "project")
    except DefinitionError as exc:
        raise ValidationError(exc.message, field="project") from None


def _check_actor(actor: str) -> None:
    kind = next((k for k in _IDENTITY_KINDS if actor.startswith(k)), None)
    if kind is None:
        raise ValidationError(
            f"actor: {_shown(actor)} is not a caller's identity; a denial names the caller as "
            "potluck's audit log does: token:NAME or jwt:SUBJECT",
            field="actor",
        )
    if len(actor) > MAX_ACTOR_CHARS:
        raise ValidationError(
            f"actor: {_shown(actor)} is {len(actor)} characters; the most is {MAX_ACTOR_CHARS}",
            field="actor",
        )
    problem = subject_problem(actor[len(kind) :])
    if problem is not None:
        raise ValidationError(
            f"actor: {_shown(actor)} cannot name a caller: {problem}", field="actor"
        )


def _check_method(method: str) -> str:
    """Return the method ``method`` reports, without its repeat count."""
    if len(method) > MAX_METHOD_CHARS:
        raise ValidationError(
            f"method: {_shown(method)} is {len(method)} characters; the most is {MAX_METHOD_CHARS}",
            field="method",
        )
    base = REPEATED.sub("", method)
    if base in RULES:
        return base
    plain = not any(unicodedata.category(c)[0] in "CZ" and c != " " for c in base)
    if plain and _HTTP.fullmatch(base):
        return base
    raise ValidationError(
        f"method: {_shown(method)} is no call of a service potluck serves; give the gRPC method "
        "(/potluck.core.v1.CoreService/Apply) or the HTTP request (POST /get-online-features) "
        "that was denied",
        field="method",
    )


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}... ({len(text)} characters)"


__all__ = ["HTTP_VERBS", "MAX_ACTOR_CHARS", "MAX_METHOD_CHARS", "RULES", "check_report"]
