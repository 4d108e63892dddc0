"""The Client facade: turns Settings into a registry, stores and engines, and delegates.

Every method checks its arguments and hands the work to one stage. No stage imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

from potluck.config import Settings, load_settings
from potluck.definitions import Entity, FeatureTable
from potluck.definitions._checks import check_name
from potluck.definitions.serde import KIND_ENTITY, KIND_FEATURE_TABLE, Definition
from potluck.errors import ValidationError
from potluck.registry.base import Change, Project, Registry, Revision


def open_registry(settings: Settings) -> Registry:
    """Return the registry the settings name.

    That is the Core service if ``core_url`` is set, else the SQL registry at ``registry``.
    """
    if settings.core_url:
        from potluck.registry.remote import RemoteRegistry

        return RemoteRegistry(settings.core_url)
    from potluck.registry.sql import SqlRegistry

    return SqlRegistry(settings.registry_url)


class Client:
    """The potluck SDK.

    Args:
        config_path: A ``potluck.yaml``; defaults to ``$POTLUCK_CONFIG`` or ``./potluck.yaml``,
            else embedded defaults (everything in local files under ``.potluck/``).
        core_url: ``host:port`` of a Core service; overrides the config.
        serving_url: ``host:port`` of an Online Serving gRPC endpoint; overrides the config.
        project: The project to work in; overrides the config.
        settings: Fully resolved settings; when given, the other arguments must be ``None``.

    Raises:
        ConfigError: If the settings are invalid.
        UnavailableError: If ``core_url`` cannot be reached.

    Example:
        >>> client = Client()
        >>> client.apply([driver, driver_stats])
    """

    def __init__(
        self,
        config_path: str | Path | None = None,
        *,
        core_url: str | None = None,
        serving_url: str | None = None,
        project: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            overrides = {"core_url": core_url, "serving_url": serving_url, "project": project}
            settings = load_settings(config_path, overrides=overrides)
        self.settings = settings
        self._project = check_name(settings.project, "project")
        self._registry: Registry = open_registry(settings)

    # ---- projects ------------------------------------------------------------------------------

    @property
    def project(self) -> str:
        """The project this client works in."""
        return self._project

    def set_project(self, name: str) -> None:
        """Work in project ``name`` from now on (it is created on the first apply)."""
        self._project = check_name(name, "project")

    def list_projects(self, *, include_archived: bool = False) -> list[Project]:
        """Return the projects, sorted by name."""
        return self._registry.list_projects(include_archived=include_archived)

    def create_project(self, name: str) -> Project:
        """Create project ``name``."""
        return self._registry.create_project(check_name(name, "project"))

    def archive_project(self, name: str) -> Project:
        """Archive project ``name``: its definitions stay readable, applies are refused."""
        return self._registry.archive_project(name)

    # ---- definitions ---------------------------------------------------------------------------

    def apply(
        self,
        objects: Definition | Sequence[Definition],
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> list[Change]:
        """Apply entities and feature tables in one transaction; return what changed.

        Args:
            objects: One definition or a list of them, in any order.
            force: Allow changing a table's entities or a feature's type.
            dry_run: Return the plan without writing (``potluck plan``).

        Raises:
            DefinitionError: If a table references an unknown entity.
            IncompatibleChangeError: If a change needs ``force=True``.
            ConflictError: If a table read earlier was changed by someone else since.
        """
        items = [objects] if isinstance(objects, (Entity, FeatureTable)) else list(objects)
        for item in items:
            if not isinstance(item, (Entity, FeatureTable)):
                raise ValidationError(
                    f"apply takes Entity and FeatureTable objects, got {type(item).__name__}"
                )
        return self._registry.apply(self._project, items, force=force, dry_run=dry_run)

    def apply_entity(self, entity: Entity) -> list[Change]:
        """Apply one entity."""
        return self.apply([entity])

    def apply_feature_table(self, table: FeatureTable, *, force: bool = False) -> list[Change]:
        """Apply one feature table."""
        return self.apply([table], force=force)

    def get_entity(self, name: str) -> Entity:
        """Return entity ``name``.

        Raises:
            NotFoundError: If it does not exist in the current project.
        """
        return cast(Entity, self._registry.get(self._project, KIND_ENTITY, name))

    def list_entities(self, labels: Mapping[str, str] | None = None) -> list[Entity]:
        """Return the project's entities whose labels include ``labels``, sorted by name."""
        return [
            e for e in self._registry.list(self._project, KIND_ENTITY, labels)
            if isinstance(e, Entity)
        ]

    def get_feature_table(self, name: str) -> FeatureTable:
        """Return feature table ``name`` (with its ``revision``).

        Raises:
            NotFoundError: If it does not exist in the current project.
        """
        return cast(FeatureTable, self._registry.get(self._project, KIND_FEATURE_TABLE, name))

    def list_feature_tables(self, labels: Mapping[str, str] | None = None) -> list[FeatureTable]:
        """Return the project's feature tables whose labels include ``labels``."""
        return [
            t for t in self._registry.list(self._project, KIND_FEATURE_TABLE, labels)
            if isinstance(t, FeatureTable)
        ]

    def feature_table_history(self, name: str) -> list[Revision]:
        """Return every stored revision of feature table ``name``, oldest first."""
        return self._registry.history(self._project, KIND_FEATURE_TABLE, name)

    def delete_feature_table(self, name: str) -> None:
        """Delete feature table ``name`` from the registry (its history is kept)."""
        self._registry.delete(self._project, KIND_FEATURE_TABLE, name)

    def delete_entity(self, name: str) -> None:
        """Delete entity ``name``; refused while a feature table uses it."""
        self._registry.delete(self._project, KIND_ENTITY, name)

    # ---- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close connections to the registry and stores."""
        self._registry.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
