"""Short job ids: the shortest unique prefix of each id, and finding a job by a prefix, as git does.

Job ids start with their creation time (``20240502T000500123456Z-9f8e7d6c``), so the prefix that
tells a job apart from the project's other jobs is usually its date and time to the minute.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from potluck.errors import NotFoundError, ValidationError

MIN_PREFIX = 8
"""The fewest characters a short id has (a job's date)."""

MAX_CANDIDATES = 10
"""The most matching ids an ambiguous-prefix error lists."""


def short_ids(ids: Iterable[str], minimum: int = MIN_PREFIX) -> dict[str, str]:
    """Return, for each id, its shortest prefix (at least ``minimum`` characters) no other has.

    Args:
        ids: Every job id of the project (prefixes are unique among these).
        minimum: The fewest characters of a prefix.

    Returns:
        ``{id: prefix}``; an id that is a prefix of another id is its own prefix.
    """
    ordered = sorted(set(ids))
    shortest: dict[str, str] = {}
    for index, job_id in enumerate(ordered):
        neighbours = ordered[max(index - 1, 0) : index] + ordered[index + 1 : index + 2]
        shared = max((_common(job_id, other) for other in neighbours), default=0)
        shortest[job_id] = job_id[: max(minimum, shared + 1)]
    return shortest


def _common(a: str, b: str) -> int:
    size = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        size += 1
    return size


def match_job_id(ids: Sequence[str], given: str, project: str) -> str:
    """Return the one id of ``ids`` that is ``given`` or starts with it.

    Args:
        ids: Every job id of the project.
        given: A full id or a prefix of one.
        project: The project's name (for messages).

    Raises:
        NotFoundError: If no id starts with ``given``.
        ValidationError: If several ids start with ``given`` (the message lists up to
            :data:`MAX_CANDIDATES` of them, newest first).
    """
    if given in ids:
        return given
    matches = sorted({i for i in ids if given and i.startswith(given)}, reverse=True)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFoundError(
            f"no job with id or id prefix {given!r} in project {project!r}; `potluck jobs list` "
            "shows the project's jobs",
            kind="job",
            name=given,
            project=project,
        )
    listed = ", ".join(matches[:MAX_CANDIDATES])
    more = len(matches) - MAX_CANDIDATES
    rest = f" and {more} more" if more > 0 else ""
    raise ValidationError(
        f"job id prefix {given!r} is ambiguous in project {project!r}: it matches {listed}{rest}; "
        "give more characters of the id",
        field="job_id",
        candidates=tuple(matches),
    )


__all__ = ["MAX_CANDIDATES", "MIN_PREFIX", "match_job_id", "short_ids"]
