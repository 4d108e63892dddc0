"""Project data isolation: which source locations a project's feature tables may name.

With isolation on (the ``data_isolation`` setting: ``on``, or ``auto`` with authentication or
``data_root``), every project has data roots: the folders or URL prefixes its batch sources may
lie under (``data_roots[project]``, else ``<data_root>/<project>``, where ``data_root`` defaults
to the settings' root folder), and the prefixes its Kafka topics may start with
(``topic_prefixes[project]``, else ``<project>.``). A location outside them is refused when
a table is applied, unless an administrator allowed it for that project (``potluck projects
allow-location``, kept in the registry). The registry runs :func:`check_sources` inside its
apply transaction, so the rule holds for every way in: the SDK, the CLI, the Core service and
Feast 0.9's Core API.

Local paths are compared after resolving symbolic links (a link inside a project's root that
points into another project's folder is outside), URLs by scheme, host and normalised path;
both by whole path components, so ``/data/a`` does not contain ``/data/ab``. With isolation
off (``off``, or ``auto`` without authentication or ``data_root``: one user, who may already
apply, delete and read every project) nothing is checked.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from potluck.config import Settings
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.sources import (
    TOPIC_PATTERN,
    data_location,
    resolve_source_path,
    shown_path,
)
from potluck.errors import ConfigError, DefinitionError, ValidationError

TOPIC_PREFIX = "kafka:"
"""How an allowed location names Kafka topics: ``kafka:PREFIX`` allows every topic whose name
starts with ``PREFIX``."""

_ALLOW_HINT = "potluck projects allow-location {project} {location}"


@dataclass(frozen=True)
class DataIsolation:
    """The data roots of every project.

    Attributes:
        data_root: The folder or URL prefix under which each project gets ``<project>``
            (absolute path or URL): the ``data_root`` setting, else the settings' root folder.
        data_roots: Per project, the folders or URL prefixes that replace its default root.
        topic_prefixes: Per project, the topic prefixes that replace its default ``<project>.``.
    """

    data_root: str
    data_roots: Mapping[str, tuple[str, ...]]
    topic_prefixes: Mapping[str, tuple[str, ...]]

    @classmethod
    def from_settings(cls, settings: Settings) -> DataIsolation | None:
        """Return the isolation the settings configure; ``None`` when it is off.

        It is on as :attr:`potluck.config.Settings.isolates_data` says (``data_isolation``;
        ``auto``: with authentication or ``data_root``). Relative folders are resolved against
        the settings' root folder, which is also the data root when ``data_root`` is unset.
        A ``data_roots`` entry follows the rule of an allowed location
        (:func:`potluck.definitions.sources.data_location`: not ``/``, not a URL without a
        bucket).

        Raises:
            ConfigError: If ``data_root`` or a ``data_roots`` entry is refused; ``key`` names it.
        """
        if not settings.isolates_data:
            return None
        root = settings.root
        return cls(
            data_root=_setting(resolve_source_path, settings.data_root or str(root), root, ""),
            data_roots={
                project: tuple(_setting(data_location, r, root, f".{project}") for r in roots)
                for project, roots in settings.data_roots.items()
            },
            topic_prefixes={p: tuple(v) for p, v in settings.topic_prefixes.items()},
        )

    def roots(self, project: str) -> tuple[str, ...]:
        """Return the folders and URL prefixes ``project``'s batch sources may lie under."""
        given = self.data_roots.get(project)
        if given:
            return given
        if "://" in self.data_root:
            return (self.data_root.rstrip("/") + "/" + project,)
        return (os.path.join(self.data_root, project),)

    def prefixes(self, project: str) -> tuple[str, ...]:
        """Return the prefixes ``project``'s Kafka topics may start with."""
        return self.topic_prefixes.get(project) or (f"{project}.",)


def _setting(normalize: Callable[..., str], value: str, root: Path, suffix: str) -> str:
    """Return ``normalize(value, root, field=...)`` for a setting, its refusal as a ConfigError."""
    key = ("data_roots" if suffix else "data_root") + suffix
    try:
        return normalize(value, root, field=key)
    except DefinitionError as exc:
        raise ConfigError(exc.message, key=key, sources=()) from None


def normalize_location(location: str) -> str:
    """Return the one spelling of a location an administrator allows.

    ``kafka:PREFIX`` is kept; a folder or URL follows the rule of the ``data_roots`` setting
    (:func:`potluck.definitions.sources.data_location`): normalised as a batch source path is,
    and neither ``/`` nor a URL without a bucket. A relative path is refused: it would be
    resolved against one client's folder and then hold for every client. The client, the Core
    service and the registry all apply this, so a location is stored only in this form.

    Raises:
        ValidationError: If the location is empty, relative, ``/``, a URL naming no bucket or
            host, holds control characters, or ``kafka:`` has no valid topic prefix; ``field``
            is ``location``.
    """
    text = location.strip() if isinstance(location, str) else ""
    if not text or text == TOPIC_PREFIX:
        raise ValidationError(
            f"location: {location!r} names nothing; give a folder, a URL such as "
            f"s3://bucket/prefix, or {TOPIC_PREFIX}TOPIC_PREFIX",
            field="location",
        )
    if text.startswith(TOPIC_PREFIX):
        if not TOPIC_PATTERN.fullmatch(text[len(TOPIC_PREFIX) :]):
            raise ValidationError(
                f"location: {shown_path(text)} is not kafka: and a topic prefix (1-249 letters, "
                "digits, '.', '_' or '-')",
                field="location",
            )
        return text
    if "://" not in text and not text.startswith("/"):
        raise ValidationError(
            f"location: {shown_path(location)} is relative; an allowed location is stored in "
            "the registry and holds for every client, so give an absolute folder (such as "
            "/srv/shared/stats), a URL such as s3://bucket/prefix, or kafka:PREFIX",
            field="location",
        )
    try:
        return data_location(text, None, field="location")
    except DefinitionError as exc:
        raise ValidationError(exc.message, field="location") from None


def check_sources(
    project: str,
    tables: Sequence[FeatureTable],
    isolation: DataIsolation | None,
    allowed: Sequence[str],
) -> None:
    """Refuse the first table that names a location outside ``project``'s data roots.

    A batch source path must lie under one of the project's roots or an allowed folder; a
    stream source's topic and dead-letter topic must start with one of its prefixes or an
    allowed ``kafka:`` prefix.

    Args:
        project: The project the tables are applied to.
        tables: The tables being applied.
        isolation: The data roots; ``None`` allows every location.
        allowed: The locations an administrator allowed for ``project``.

    Raises:
        DefinitionError: Naming the table, the field, the location, the project's roots and
            the command that allows it; ``field``, ``table``, ``location`` and ``project`` are
            set.
    """
    if isolation is None:
        return
    folders = [*isolation.roots(project), *(a for a in allowed if not _is_topic(a))]
    prefixes = [
        *isolation.prefixes(project),
        *(a[len(TOPIC_PREFIX) :] for a in allowed if _is_topic(a)),
    ]
    for table in tables:
        for field, location in _locations(table):
            if not field.endswith("path"):
                if not any(location.startswith(prefix) for prefix in prefixes):
                    raise _topic_refused(project, table, field, location, prefixes)
            elif "://" not in location and not os.path.isabs(location):
                raise DefinitionError(
                    f"feature table {table.name}: {field} {location!r} is a relative path; the "
                    "registry accepts only absolute paths and URLs (potluck apply and the SDK "
                    "resolve relative paths against the project root)",
                    field=field,
                    table=table.name,
                    location=location,
                    project=project,
                )
            elif not any(_contains(folder, location) for folder in folders):
                raise _refused(project, table, field, location, folders)


def _is_topic(location: str) -> bool:
    return location.startswith(TOPIC_PREFIX)


def _locations(table: FeatureTable) -> Iterator[tuple[str, str]]:
    if table.batch_source is not None:
        yield "batch_source.path", table.batch_source.path
    stream = table.stream_source
    if stream is not None:
        yield "stream_source.topic", stream.topic
        if stream.dead_letter_topic is not None:
            yield "stream_source.dead_letter_topic", stream.dead_letter_topic


def _refused(
    project: str, table: FeatureTable, field: str, location: str, roots: Sequence[str]
) -> DefinitionError:
    hint = _ALLOW_HINT.format(project=project, location=location)
    return DefinitionError(
        f"feature table {table.name}: {field} {location!r} is outside the data roots of "
        f"project {project} ({', '.join(roots)}); move the data under one of them, or ask an "
        f"administrator to run: {hint}",
        field=field,
        table=table.name,
        location=location,
        project=project,
    )


def _topic_refused(
    project: str, table: FeatureTable, field: str, topic: str, prefixes: Sequence[str]
) -> DefinitionError:
    hint = _ALLOW_HINT.format(project=project, location=TOPIC_PREFIX + topic)
    starts = " or ".join(repr(p) for p in prefixes)
    return DefinitionError(
        f"feature table {table.name}: {field} {topic!r} does not start with a topic prefix of "
        f"project {project} ({', '.join(prefixes)}); use a topic starting with {starts}, or ask "
        f"an administrator to run: {hint}",
        field=field,
        table=table.name,
        location=TOPIC_PREFIX + topic,
        project=project,
    )


def _key(location: str) -> tuple[str, tuple[str, ...]] | None:
    """Return where a location is (``scheme://host`` or ``""`` for local) and its path parts.

    ``None`` for a relative local path, which names no one place.
    """
    if "://" in location and not location.lower().startswith("file://"):
        scheme, _, rest = location.partition("://")
        host, _, path = rest.partition("/")
        parts = posixpath.normpath("/" + path).split("/")
        return f"{scheme.lower()}://{host}", tuple(p for p in parts if p)
    try:
        local = resolve_source_path(location, "/")
    except DefinitionError:
        return None
    if not os.path.isabs(location) and "://" not in location:
        return None
    return "", tuple(p for p in os.path.realpath(local).split(os.sep) if p)


def _contains(folder: str, location: str) -> bool:
    outer, inner = _key(folder), _key(location)
    if outer is None or inner is None or outer[0] != inner[0]:
        return False
    return inner[1][: len(outer[1])] == outer[1]


__all__ = ["TOPIC_PREFIX", "DataIsolation", "check_sources", "normalize_location"]
