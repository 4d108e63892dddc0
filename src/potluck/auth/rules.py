"""Which permission each gRPC method needs, and where its request names the project.

One table per service, keyed by the method's full name (``/package.Service/Method``), read by the
one gRPC interceptor (:mod:`potluck.auth.grpc`). A method a table does not list is refused to
everyone (``PERMISSION_DENIED``): a new method must be given a rule before anyone can call it.
The standard health service needs no token (:data:`OPEN_SERVICES`).

A rule's project finder reads the request message; it runs only for a caller limited to some
projects, so callers allowed every project pay nothing for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from potluck.auth.identity import Permission

ProjectFinder = Callable[[Any, str], Iterable[str | None]]
"""``(request, default_project) -> the projects the call acts on`` (``None``: no single one)."""

OPEN_SERVICES: tuple[str, ...] = ("/grpc.health.v1.Health/",)
"""Method-name prefixes anyone may call: the health service says only SERVING or NOT_SERVING."""


@dataclass(frozen=True)
class Rule:
    """What calling one method takes.

    Attributes:
        permission: The permission needed.
        projects: Finds the projects the request acts on.
    """

    permission: Permission
    projects: ProjectFinder


def no_project(request: Any, default: str) -> Iterable[str | None]:
    """The call acts on no single project (listing projects, the server's version)."""
    return (None,)


def _named(request: Any, names: list[str]) -> str:
    """Return the string at the dotted field ``names`` of ``request`` (``""``: none there)."""
    value: Any = request
    for name in names:
        value = getattr(value, name, None)
    return value if isinstance(value, str) else ""


def field(path: str) -> ProjectFinder:
    """Return a finder reading the project from the dotted field ``path`` (empty: the default)."""
    names = path.split(".")

    def find(request: Any, default: str) -> Iterable[str | None]:
        return (_named(request, names) or default,)

    return find


def named_or_every(path: str) -> ProjectFinder:
    """Return a finder reading the project from the field ``path``; empty: every project.

    An empty field yields ``None`` (no single project), which a caller limited to some projects
    passes too: the handler must then narrow its answer to the caller's projects (``ListAudit``
    does).
    """
    names = path.split(".")

    def find(request: Any, default: str) -> Iterable[str | None]:
        return (_named(request, names) or None,)

    return find


def feature_refs(request: Any, default: str) -> Iterable[str | None]:
    """The projects of ``features.val``'s references (``project/table:feature``, else default)."""
    refs = getattr(getattr(request, "features", None), "val", ())
    return {ref.partition("/")[0] if "/" in ref else default for ref in refs} or {default}


def _rules(service: str, table: Mapping[str, Rule]) -> dict[str, Rule]:
    return {f"/{service}/{method}": rule for method, rule in table.items()}


_READ = Permission.READ_DEFINITIONS
_PROJECT = field("project")

CORE_RULES: Mapping[str, Rule] = _rules(
    "potluck.core.v1.CoreService",
    {
        "Apply": Rule(Permission.APPLY, _PROJECT),
        "Plan": Rule(_READ, _PROJECT),
        "GetEntity": Rule(_READ, _PROJECT),
        "ListEntities": Rule(_READ, _PROJECT),
        "DeleteEntity": Rule(Permission.APPLY, _PROJECT),
        "GetEntityHistory": Rule(_READ, _PROJECT),
        "GetFeatureTable": Rule(_READ, _PROJECT),
        "ListFeatureTables": Rule(_READ, _PROJECT),
        "DeleteFeatureTable": Rule(Permission.APPLY, _PROJECT),
        "GetFeatureTableHistory": Rule(_READ, _PROJECT),
        "ListProjects": Rule(_READ, no_project),
        "CreateProject": Rule(Permission.ADMIN, field("name")),
        "ArchiveProject": Rule(Permission.ADMIN, field("name")),
        "RestoreProject": Rule(Permission.ADMIN, field("name")),
        "AllowLocation": Rule(Permission.ADMIN, _PROJECT),
        "ListAllowedLocations": Rule(_READ, field("name")),
        "ListAudit": Rule(Permission.ADMIN, named_or_every("project")),
        "RecordDenial": Rule(Permission.RECORD_DENIALS, _PROJECT),
        "PutJob": Rule(Permission.RUN_JOBS, _PROJECT),
        "GetJob": Rule(_READ, _PROJECT),
        "ListJobs": Rule(_READ, _PROJECT),
        "AuthorizeJobControl": Rule(Permission.RUN_JOBS, _PROJECT),
    },
)
"""potluck's own Core API (``potluck core``).

``ListAudit`` without a project answers an administrator limited to some projects with those
projects' entries only (the Core servicer narrows it). ``RecordDenial`` is how a server whose
registry is a remote Core (Online Serving, the Job Service) reports a call it denied: it takes
``record_denials`` on the denied call's project (``admin`` implies it), a permission granting
nothing else, so a server's own token may write denials without any other power, and the Core
records who reported each one. ``AuthorizeJobControl`` changes nothing: clients call it before
a job control that writes nothing (cancelling a job that has ended), so such a call needs
``run_jobs`` as one that writes does."""

FEAST_CORE_RULES: Mapping[str, Rule] = _rules(
    "feast.core.CoreService",
    {
        "GetFeastCoreVersion": Rule(_READ, no_project),
        "GetEntity": Rule(_READ, _PROJECT),
        "ApplyEntity": Rule(Permission.APPLY, _PROJECT),
        "ListEntities": Rule(_READ, field("filter.project")),
        "ListFeatures": Rule(_READ, field("filter.project")),
        "CreateProject": Rule(Permission.ADMIN, field("name")),
        "ArchiveProject": Rule(Permission.ADMIN, field("name")),
        "ListProjects": Rule(_READ, no_project),
        "ApplyFeatureTable": Rule(Permission.APPLY, _PROJECT),
        "ListFeatureTables": Rule(_READ, field("filter.project")),
        "GetFeatureTable": Rule(_READ, _PROJECT),
        "DeleteFeatureTable": Rule(Permission.APPLY, _PROJECT),
    },
)
"""Feast 0.9's Core API, served on the Core port (an empty ``project`` is the default one)."""

SERVING_RULES: Mapping[str, Rule] = _rules(
    "feast.serving.ServingService",
    {
        "GetFeastServingInfo": Rule(Permission.READ_ONLINE, no_project),
        "GetOnlineFeatures": Rule(Permission.READ_ONLINE, feature_refs),
        "GetOnlineFeaturesV2": Rule(Permission.READ_ONLINE, _PROJECT),
    },
)
"""Online Serving's gRPC API, Feast 0.9's ``GetOnlineFeaturesV2`` included."""

JOB_SERVICE_RULES: Mapping[str, Rule] = {
    **_rules(
        "potluck.jobservice.v1.JobService",
        {
            "StartOfflineToOnline": Rule(Permission.RUN_JOBS, _PROJECT),
            "StartStreamToOnline": Rule(Permission.RUN_JOBS, _PROJECT),
            "GetHistoricalFeatures": Rule(Permission.RUN_JOBS, _PROJECT),
            "CancelJob": Rule(Permission.RUN_JOBS, _PROJECT),
            "ScheduleOfflineToOnline": Rule(Permission.RUN_JOBS, _PROJECT),
            "Unschedule": Rule(Permission.RUN_JOBS, _PROJECT),
            "ListJobs": Rule(_READ, _PROJECT),
            "GetJob": Rule(_READ, _PROJECT),
            "ListSchedules": Rule(_READ, _PROJECT),
        },
    ),
    **_rules(
        "feast.core.JobService",
        {
            "StartOfflineToOnlineIngestionJob": Rule(Permission.RUN_JOBS, _PROJECT),
            "StartStreamToOnlineIngestionJob": Rule(Permission.RUN_JOBS, _PROJECT),
            "GetHistoricalFeatures": Rule(Permission.RUN_JOBS, _PROJECT),
            "CancelJob": Rule(Permission.RUN_JOBS, no_project),
            "ListJobs": Rule(_READ, no_project),
            "GetJob": Rule(_READ, no_project),
        },
    ),
}
"""The Job Service (``potluck jobservice``) and Feast 0.9's ``feast.core.JobService``; an empty
``project`` (every project, or Feast's default) counts as the default project, so a caller
limited to some projects must name one. Feast 0.9's job calls by id name no project."""


__all__ = [
    "CORE_RULES",
    "FEAST_CORE_RULES",
    "JOB_SERVICE_RULES",
    "OPEN_SERVICES",
    "SERVING_RULES",
    "ProjectFinder",
    "Rule",
    "feature_refs",
    "field",
    "named_or_every",
    "no_project",
]
