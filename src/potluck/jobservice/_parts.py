"""The stores and the engine a Job Service builds from its settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from potluck import plugins
from potluck.config import Settings

if TYPE_CHECKING:
    from potluck.ingestion.engines.base import Engine
    from potluck.offline.base import OfflineStore
    from potluck.online.base import OnlineStore


def open_online_store(settings: Settings) -> OnlineStore:
    """Return a new online store as ``online_store`` names it (a SQLite path made absolute)."""
    raw = dict(settings.online_store)
    if raw.get("type") == "sqlite" and isinstance(raw.get("path"), str):
        raw["path"] = str(settings.resolve_path(raw["path"]))
    store: OnlineStore = plugins.create(plugins.ONLINE_STORES, raw)
    return store


def open_offline_store(settings: Settings) -> OfflineStore:
    """Return the offline store ``offline_store`` names, relative paths against ``root``."""
    store: OfflineStore = plugins.create(
        plugins.OFFLINE_STORES, settings.offline_store, root=settings.root
    )
    return store


def open_engine(settings: Settings) -> Engine:
    """Return the engine ``engine`` names."""
    engine: Engine = plugins.create(plugins.ENGINES, settings.engine)
    return engine
