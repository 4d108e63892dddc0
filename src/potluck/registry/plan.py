"""Diff desired definitions against stored ones: the registry's rules as pure functions.

:func:`plan_apply` turns an apply request plus the stored state of a project into the
:class:`~potluck.registry.base.Change` lines a user sees and the rows a backend must write. It
enforces every registry rule (idempotence, revisions, incompatible changes, the feature archive,
unknown entities, stale revisions) and does no I/O, so every backend applies the same rules.

A change that values already in the online store cannot follow gets a detail line starting with
``warning:`` that names the table and the command that repairs it (DESIGN §3: stored values
follow their definitions). Those are: a raised or removed ``max_age`` (values that expired
before cannot come back), a feature type change that is not a lossless widening (stored values
of the old type read as null), and a change of a table's entities or of an entity's type (stored
values sit under keys no read asks for any more).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from potluck.definitions.entity import Entity
from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.message_layout import check_stream_source
from potluck.definitions.serde import (
    KIND_ENTITY,
    KIND_FEATURE_TABLE,
    Definition,
    kind_of,
    parse_duration,
    to_dict,
)
from potluck.errors import (
    ConflictError,
    DefinitionError,
    IncompatibleChangeError,
    ValidationError,
)
from potluck.registry.base import Action, Change
from potluck.types import ValueType, is_lossless_widening

KIND_LABELS = {KIND_ENTITY: "entity", KIND_FEATURE_TABLE: "feature table"}
"""How messages name each object kind."""

_FORCE_HINT = "pass force=True (CLI --force) to allow it"
WARNING_PREFIX = "warning: "
"""How a detail line that warns about values stored online starts."""


@dataclass(frozen=True)
class StoredObject:
    """One object row as a backend holds it.

    Attributes:
        kind: ``"entity"`` or ``"feature_table"``.
        name: The object's name.
        revision: The stored revision (kept after a delete, so numbering continues).
        spec: The object's dict form, exactly as :func:`potluck.definitions.serde.to_dict` wrote it.
        deleted: Whether the object was deleted (the row only keeps its revision counter).
    """

    kind: str
    name: str
    revision: int
    spec: Mapping[str, Any]
    deleted: bool = False


@dataclass(frozen=True)
class ArchivedFeature:
    """A feature removed from a table; its name may only come back with the same type."""

    table: str
    feature: str
    value_type: str


@dataclass(frozen=True)
class Write:
    """One object row to write.

    Attributes:
        kind: The object's kind.
        name: The object's name.
        revision: The revision the row gets.
        expected: The revision the stored row must still have (``None``: no row exists yet).
        spec: The dict form to store.
    """

    kind: str
    name: str
    revision: int
    expected: int | None
    spec: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    """What an apply (or a delete) does: the user-facing changes and the rows to write.

    Attributes:
        changes: One line per object, in the order the objects were given.
        writes: Object rows to create or update, sorted by kind and name.
        archived: Features to add to the archive.
        restored: ``(table, feature)`` pairs to remove from the archive (re-added features).
    """

    changes: tuple[Change, ...] = ()
    writes: tuple[Write, ...] = ()
    archived: tuple[ArchivedFeature, ...] = ()
    restored: tuple[tuple[str, str], ...] = ()


Stored = Mapping[tuple[str, str], StoredObject]
"""A project's stored objects keyed by ``(kind, name)``."""

Archive = Mapping[str, Mapping[str, str]]
"""A project's archived features: table name -> feature name -> value type name."""


def plan_apply(
    objects: Sequence[Definition], stored: Stored, archive: Archive, *, force: bool = False
) -> Plan:
    """Diff ``objects`` against the stored state and return what applying them does.

    Args:
        objects: The entities and feature tables to apply, in any order.
        stored: Every stored object of the project, deleted ones included.
        archive: The project's archived features.
        force: Allow changing a table's entities, a feature's type, the type of an entity in use,
            and re-adding an archived feature with another type.

    Raises:
        ValidationError: If an object is not a definition or is given twice.
        DefinitionError: If a table names an entity that is neither in ``objects`` nor stored,
            or its stream source's Avro schema or protobuf class lacks one of its columns or
            holds it in a type that does not convert.
        IncompatibleChangeError: If a change needs ``force``.
        ConflictError: If a table carries a revision that is not the stored one.
    """
    _check_batch(objects)
    live = {key: obj for key, obj in stored.items() if not obj.deleted}
    entity_types = {
        name: obj.spec["value_type"] for (kind, name), obj in live.items() if kind == KIND_ENTITY
    }
    final_tables = {
        name: tuple(obj.spec["entities"])
        for (kind, name), obj in live.items()
        if kind == KIND_FEATURE_TABLE
    }
    for obj in objects:
        if isinstance(obj, Entity):
            entity_types[obj.name] = obj.value_type.name
        else:
            final_tables[obj.name] = obj.entities
    changes: list[Change] = []
    writes: list[Write] = []
    archived: list[ArchivedFeature] = []
    restored: list[tuple[str, str]] = []
    for obj in objects:
        kind = kind_of(obj)
        previous = stored.get((kind, obj.name))
        spec = to_dict(obj)
        if isinstance(obj, FeatureTable):
            _check_revision(obj, previous)
            _check_entities_known(obj, entity_types)
            _check_stream_layout(obj, entity_types)
            details, table_archived, table_restored = _table_changes(
                obj, previous, archive.get(obj.name, {}), force
            )
            archived.extend(table_archived)
            restored.extend(table_restored)
        else:
            details = _entity_changes(obj, previous, final_tables, force)
        action: Action
        if previous is None or previous.deleted:
            action, revision = "create", (previous.revision + 1 if previous else 1)
        elif dict(previous.spec) == spec:
            action, revision = "unchanged", previous.revision
        else:
            action, revision = "update", previous.revision + 1
        if action != "unchanged":
            expected = previous.revision if previous else None
            writes.append(Write(kind, obj.name, revision, expected, spec))
        shown = revision if kind == KIND_FEATURE_TABLE else 0
        changes.append(Change(kind, obj.name, action, shown, tuple(details)))
    return Plan(
        changes=tuple(changes),
        writes=tuple(sorted(writes, key=lambda w: (w.kind, w.name))),
        archived=tuple(archived),
        restored=tuple(restored),
    )


def plan_delete(kind: str, name: str, project: str, stored: Stored) -> Plan:
    """Return what deleting the live object ``kind`` ``name`` does.

    Its row becomes a tombstone (keeping its revision counter) and a table's features are
    archived.

    Raises:
        ValidationError: If an entity is still used by a feature table.
    """
    previous = stored[(kind, name)]
    if kind == KIND_ENTITY:
        users = sorted(
            other
            for (other_kind, other), obj in stored.items()
            if other_kind == KIND_FEATURE_TABLE and not obj.deleted and name in obj.spec["entities"]
        )
        if users:
            raise ValidationError(
                f"entity {name} is used by feature table {users[0]} in project {project}; "
                "delete the table or change its entities first",
                entity=name,
                table=users[0],
            )
        archived: tuple[ArchivedFeature, ...] = ()
    else:
        archived = tuple(
            ArchivedFeature(name, f["name"], f["value_type"]) for f in previous.spec["features"]
        )
    tombstone = Write(kind, name, previous.revision, previous.revision, dict(previous.spec))
    return Plan(writes=(tombstone,), archived=archived)


def _check_batch(objects: Sequence[object]) -> None:
    seen: set[tuple[str, str]] = set()
    for obj in objects:
        if not isinstance(obj, (Entity, FeatureTable)):
            raise ValidationError(
                f"apply takes Entity and FeatureTable objects, got {type(obj).__name__}"
            )
        key = (kind_of(obj), obj.name)
        if key in seen:
            raise ValidationError(
                f"apply got {KIND_LABELS[key[0]]} {obj.name} twice; pass each object once",
                kind=key[0],
                name=obj.name,
            )
        seen.add(key)


def _check_revision(table: FeatureTable, previous: StoredObject | None) -> None:
    if table.revision is None:
        return
    if previous is None or previous.deleted:
        raise ConflictError(
            f"feature table {table.name} was deleted by someone else (you had revision "
            f"{table.revision}); re-read it and apply again",
            table=table.name,
            revision=None,
            expected=table.revision,
        )
    if previous.revision != table.revision:
        raise ConflictError(
            f"feature table {table.name} was changed by someone else (revision "
            f"{previous.revision}, you had {table.revision}); re-read it and apply again",
            table=table.name,
            revision=previous.revision,
            expected=table.revision,
        )


def _check_entities_known(table: FeatureTable, entity_types: Mapping[str, str]) -> None:
    for entity in table.entities:
        if entity not in entity_types:
            raise DefinitionError(
                f"feature table {table.name}: entity {entity} is not defined; apply it in the "
                "same call or before the table",
                field="feature_table.entities",
                table=table.name,
                entity=entity,
            )


def _check_stream_layout(table: FeatureTable, entity_types: Mapping[str, str]) -> None:
    """Check the table's stream source against the table (see ``check_stream_source``)."""
    if table.stream_source is not None:
        check_stream_source(table, {name: ValueType[entity_types[name]] for name in table.entities})


def _entity_changes(
    entity: Entity,
    previous: StoredObject | None,
    tables: Mapping[str, tuple[str, ...]],
    force: bool,
) -> list[str]:
    if previous is None or previous.deleted:
        return []
    old, new = previous.spec, to_dict(entity)
    users: list[str] = []
    if old["value_type"] != new["value_type"]:
        users = sorted(t for t, entities in tables.items() if entity.name in entities)
        if users and not force:
            raise IncompatibleChangeError(
                f"entity {entity.name} changes type {old['value_type']} -> {new['value_type']} "
                f"but feature table {users[0]} uses it; {_FORCE_HINT}",
                entity=entity.name,
                table=users[0],
            )
    lines = [
        f"{key} {_show(old.get(key))} -> {_show(new[key])}"
        for key in ("value_type", "description", "labels")
        if old.get(key) != new[key]
    ]
    lines.extend(_rekeyed_warning(table, f"entity {entity.name} changes type") for table in users)
    return lines


def _table_changes(
    table: FeatureTable,
    previous: StoredObject | None,
    archive: Mapping[str, str],
    force: bool,
) -> tuple[list[str], list[ArchivedFeature], list[tuple[str, str]]]:
    """Return a table's detail lines, the features it archives and those it restores."""
    where = f"feature table {table.name}"
    exists = previous is not None and not previous.deleted
    old: Mapping[str, Any] = previous.spec if previous is not None and exists else {}
    new = to_dict(table)
    details: list[str] = []
    if exists:
        old_entities, new_entities = tuple(old["entities"]), table.entities
        if set(old_entities) != set(new_entities):
            if not force:
                raise IncompatibleChangeError(
                    f"{where}: entities change {_names(old_entities)} -> "
                    f"{_names(new_entities)}; {_FORCE_HINT}",
                    table=table.name,
                )
            details.append(f"entities {_names(old_entities)} -> {_names(new_entities)} (forced)")
            details.append(_rekeyed_warning(table.name, "its entities change"))
        elif old_entities != new_entities:
            details.append(f"entities {_names(old_entities)} -> {_names(new_entities)}")
    old_features = {f["name"]: f for f in old.get("features", [])}
    new_features = {f["name"]: f for f in new["features"]}
    restored: list[tuple[str, str]] = []
    for name, feature in new_features.items():
        value_type = feature["value_type"]
        before = old_features.get(name)
        if before is None:
            archived_type = archive.get(name)
            details.append(_added_feature(table.name, name, value_type, archived_type, force))
            if archived_type is not None:
                restored.append((table.name, name))
                details.extend(_retyped_warning(table.name, name, archived_type, value_type))
            continue
        if before["value_type"] != value_type:
            if not force:
                raise IncompatibleChangeError(
                    f"{where}: feature {name} changes type {before['value_type']} -> "
                    f"{value_type}; {_FORCE_HINT}",
                    table=table.name,
                    feature=name,
                )
            details.append(f"~ feature {name} {before['value_type']} -> {value_type} (forced)")
            details.extend(_retyped_warning(table.name, name, before["value_type"], value_type))
        if before["labels"] != feature["labels"]:
            details.append(
                f"~ feature {name} labels {_show(before['labels'])} -> {_show(feature['labels'])}"
            )
    removed = [name for name in old_features if name not in new_features]
    details.extend(f"- feature {name} (archived)" for name in removed)
    kept_old = [n for n in old_features if n in new_features]
    kept_new = [n for n in new_features if n in old_features]
    if kept_old != kept_new:
        details.append(f"features reordered: {_names(kept_old)} -> {_names(kept_new)}")
    if exists:
        details.extend(_field_changes(old, new))
        details.extend(_max_age_warning(table.name, old.get("max_age"), new["max_age"]))
    archived = [
        ArchivedFeature(table.name, name, old_features[name]["value_type"]) for name in removed
    ]
    return details, archived, restored


def _added_feature(
    table: str, name: str, value_type: str, archived_type: str | None, force: bool
) -> str:
    if archived_type is None:
        return f"+ feature {name} {value_type}"
    if archived_type == value_type:
        return f"+ feature {name} {value_type} (restored from archive)"
    if not force:
        raise IncompatibleChangeError(
            f"feature table {table}: feature {name} was archived with type {archived_type} and "
            f"cannot come back as {value_type}; {_FORCE_HINT}",
            table=table,
            feature=name,
        )
    return f"+ feature {name} {value_type} (archived as {archived_type}; forced)"


def _field_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    if old.get("max_age") != new["max_age"]:
        lines.append(f"max_age {old.get('max_age') or 'none'} -> {new['max_age'] or 'none'}")
    for source in ("batch_source", "stream_source"):
        before, after = old.get(source), new[source]
        if before == after:
            continue
        if before is None or after is None:
            lines.append(f"{source} {'added' if before is None else 'removed'}")
            continue
        lines.extend(
            f"{source}.{key} {_show(before.get(key))} -> {_show(after[key])}"
            for key in after
            if before.get(key) != after[key]
        )
    if old.get("labels") != new["labels"]:
        lines.append(f"labels {_show(old.get('labels'))} -> {_show(new['labels'])}")
    return lines


def _reload_hint(table: str) -> str:
    return f"run `potluck ingest-online {table} --full` to reload them"


def _max_age_warning(table: str, old: str | None, new: str | None) -> list[str]:
    """Warn that a raised or removed max_age does not bring back values expired online."""
    if old is None or old == new:
        return []
    field = "feature_table.max_age"
    if new is not None and parse_duration(new, field) <= parse_duration(old, field):
        return []
    verb = "removing" if new is None else "raising"
    return [
        f"{WARNING_PREFIX}{verb} max_age of {table}: values that already expired from the online "
        f"store are not restored; {_reload_hint(table)}"
    ]


def _retyped_warning(table: str, feature: str, old: str, new: str) -> list[str]:
    """Warn that values stored online under a type that does not widen to the new one read null."""
    if old == new or is_lossless_widening(ValueType[old], ValueType[new]):
        return []
    return [
        f"{WARNING_PREFIX}feature {feature} of {table} changes type {old} -> {new}, which is not "
        f"a lossless widening: values stored online as {old} read as NULL_VALUE; "
        f"{_reload_hint(table)}"
    ]


def _rekeyed_warning(table: str, why: str) -> str:
    """Warn that a table's stored values sit under keys that reads no longer ask for."""
    return (
        f"{WARNING_PREFIX}feature table {table}: {why}, so values stored online under the old "
        f"keys are no longer read (NOT_FOUND); run `potluck online purge {table}` to remove "
        f"them and `potluck ingest-online {table} --full` to reload"
    )


def _names(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def _show(value: object) -> str:
    return repr(value) if not isinstance(value, str) or not value.isidentifier() else value


__all__ = [
    "KIND_LABELS",
    "WARNING_PREFIX",
    "Archive",
    "ArchivedFeature",
    "Plan",
    "Stored",
    "StoredObject",
    "Write",
    "plan_apply",
    "plan_delete",
]
