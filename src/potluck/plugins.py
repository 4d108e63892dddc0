"""Plug-in lookup: per interface, a table of built-in names plus an entry-point group.

A plug-in is one class named by ``"module:Class"``; its module is imported only when the plug-in
is chosen, so a missing optional driver costs nothing unless it is configured. Settings check
each section with :func:`validate` when they load, so a bad section fails before any work.
Third-party plug-ins register under the entry-point groups ``potluck.online_stores``,
``potluck.offline_stores``, ``potluck.engines``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pydantic

from potluck.config import PluginConfig, setting_error, validation_error
from potluck.errors import PluginDependencyError, PluginError


@dataclass(frozen=True)
class Interface:
    """One extension point."""

    name: str
    base: str
    group: str
    builtins: Mapping[str, str]
    extras: Mapping[str, str]


ONLINE_STORES = Interface(
    name="online_store",
    base="potluck.online.base:OnlineStore",
    group="potluck.online_stores",
    builtins={
        "sqlite": "potluck.online.sqlite:SqliteOnlineStore",
        "redis": "potluck.online.redis:RedisOnlineStore",
        "redis_cluster": "potluck.online.redis:RedisClusterOnlineStore",
    },
    extras={"redis": "redis", "redis_cluster": "redis"},
)
OFFLINE_STORES = Interface(
    name="offline_store",
    base="potluck.offline.base:OfflineStore",
    group="potluck.offline_stores",
    builtins={
        "duckdb": "potluck.offline.duckdb:DuckDBOfflineStore",
        "spark": "potluck.offline.spark.store:SparkOfflineStore",
    },
    extras={"spark": "spark"},
)
ENGINES = Interface(
    name="engine",
    base="potluck.ingestion.engines.base:Engine",
    group="potluck.engines",
    builtins={
        "local": "potluck.ingestion.engines.local:LocalEngine",
        "spark": "potluck.ingestion.engines.spark:SparkEngine",
    },
    extras={"spark": "spark"},
)
INTERFACES = (ONLINE_STORES, OFFLINE_STORES, ENGINES)


def _import(path: str, interface: Interface, name: str) -> Any:
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        extra = interface.extras.get(name)
        hint = (
            f"run: pip install 'potluck[{extra}]'"
            if extra
            else "install the package that provides it (the plug-in's package)"
        )
        raise PluginDependencyError(
            f"{interface.name} {name!r} needs {exc.name or module_name}, which is not installed; "
            f"{hint}",
            plugin=name,
            extra=extra,
        ) from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise PluginError(f"{path} has no attribute {attr!r}", plugin=name) from None


def known_names(interface: Interface) -> list[str]:
    """Return the names of the plug-ins of ``interface``: built-ins and entry points, sorted."""
    return sorted(set(interface.builtins) | {ep.name for ep in entry_points(group=interface.group)})


def plugin_class(interface: Interface, name: str) -> type[Any]:
    """Return the class registered as ``name`` for ``interface``.

    Raises:
        PluginError: If ``name`` is unknown or is not a subclass of the interface.
        PluginDependencyError: If its module needs an optional extra that is not installed.
    """
    path = interface.builtins.get(name)
    if path is None:
        for ep in entry_points(group=interface.group):
            if ep.name == name:
                path = ep.value
                break
    if path is None:
        raise PluginError(
            f"unknown {interface.name} type {name!r}; available: "
            f"{', '.join(known_names(interface))}",
            plugin=name,
        )
    cls = _import(path, interface, name)
    base = _import(interface.base, interface, name)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PluginError(
            f"{path} is not a subclass of {interface.base.replace(':', '.')}", plugin=name
        )
    return cls


def validate(
    interface: Interface, raw: Mapping[str, Any], *, sources: Sequence[str] | None = None
) -> PluginConfig:
    """Check a config section against its plug-in's ``config_class`` and return the config.

    Args:
        interface: The extension point.
        raw: The config section (``{"type": ..., ...}``).
        sources: Where the settings were read from, for the message (``None``: not known).

    Raises:
        ConfigError: If ``type`` is missing or names no plug-in (the message lists the known
            ones), or the section does not validate; the message names the key and the value.
        PluginDependencyError: If the plug-in needs an optional extra that is not installed.
    """
    name = raw.get("type")
    names = known_names(interface)
    known = ", ".join(names)
    key = f"{interface.name}.type"
    if name is None:
        raise setting_error(
            key,
            f"missing; every {interface.name} names its plug-in with type, one of: {known}",
            sources=sources,
        )
    if not isinstance(name, str) or name not in names:
        raise setting_error(
            key,
            f"unknown {interface.name} type; known types: {known}",
            value=name,
            sources=sources,
        )
    config_class: type[PluginConfig] = plugin_class(interface, name).config_class
    try:
        return config_class.model_validate(dict(raw))
    except pydantic.ValidationError as exc:
        raise validation_error(
            exc, model=config_class, section=interface.name, data=raw, sources=sources
        ) from None


def create(interface: Interface, raw: Mapping[str, Any], **kwargs: Any) -> Any:
    """Validate ``raw`` with the plug-in's ``config_class`` and build the plug-in.

    Args:
        interface: The extension point.
        raw: The config section (``{"type": ..., ...}``).
        **kwargs: Passed to the plug-in's constructor after its config.

    Raises:
        ConfigError: If the section does not validate; the message names the key.
        PluginDependencyError: If the plug-in needs an optional extra that is not installed.
    """
    config = validate(interface, raw)
    return plugin_class(interface, config.type)(config, **kwargs)
