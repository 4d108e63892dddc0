"""Settings: read once, validated, frozen, and passed down explicitly.

Settings come from ``potluck.yaml`` and ``POTLUCK_*`` environment variables; nothing else in
potluck reads ``os.environ``.

Resolution order, later wins: built-in defaults, the YAML file (``POTLUCK_CONFIG`` or
``./potluck.yaml``), then environment variables named ``POTLUCK_<KEY>`` with ``__`` for nesting
(``POTLUCK_ONLINE_STORE__URL``). Relative paths are relative to the config file's folder (the
working folder when there is no file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from potluck.errors import ConfigError

ENV_PREFIX = "POTLUCK_"
CONFIG_FILE_NAME = "potluck.yaml"


class PluginConfig(BaseModel):
    """Base of every plug-in's config; each plug-in narrows ``type`` to its own name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    """The plug-in's name, as registered in ``potluck.plugins``."""


class Settings(BaseModel):
    """Every potluck setting. Each has an embedded default, so no file is needed to start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    project: str = Field(default="default", description="The project definitions belong to.")
    registry: str = Field(
        default="sqlite:///.potluck/registry.db",
        description="SQLAlchemy URL of the registry: a SQLite file or postgresql://user@host/db.",
    )
    online_store: dict[str, Any] = Field(
        default_factory=lambda: {"type": "sqlite", "path": ".potluck/online.db"},
        description="The online store: {type: sqlite, path}, {type: redis, url} or "
        "{type: redis_cluster, startup_nodes}.",
    )
    offline_store: dict[str, Any] = Field(
        default_factory=lambda: {"type": "duckdb"},
        description="The engine for historical retrieval: {type: duckdb} (Spark is planned).",
    )
    engine: dict[str, Any] = Field(
        default_factory=lambda: {"type": "local"},
        description="Where ingestion jobs run: {type: local} (Spark is planned).",
    )
    core_url: str | None = Field(
        default=None,
        description="host:port of a Core service; when set the SDK uses it instead of the "
        "registry.",
    )
    serving_url: str | None = Field(
        default=None,
        description="host:port of an Online Serving gRPC endpoint; when set "
        "get_online_features goes through it.",
    )
    root: Path = Field(
        default_factory=Path.cwd,
        description="The folder relative paths are resolved against (the config file's folder).",
    )
    sources: tuple[str, ...] = Field(
        default=(), description="Where these settings were read from, in order (informational)."
    )

    def resolve_path(self, path: str | Path) -> Path:
        """Return ``path`` made absolute against :attr:`root`."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    @property
    def registry_url(self) -> str:
        """The registry URL with a relative SQLite path made absolute against :attr:`root`."""
        prefix = "sqlite:///"
        if self.registry.startswith(prefix) and not self.registry.startswith(prefix + "/"):
            rest = self.registry[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve_path(rest))
        return self.registry


SETTING_NAMES: tuple[str, ...] = tuple(
    n for n in Settings.model_fields if n not in {"root", "sources"}
)
"""The user-facing settings; docs/configuration.md must document each one (a test checks)."""


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the settings once.

    Args:
        path: The config file; defaults to ``$POTLUCK_CONFIG``, else ``./potluck.yaml`` if it
            exists, else built-in defaults only.
        environ: The environment to read ``POTLUCK_*`` variables from (default ``os.environ``).
        overrides: Values that win over everything (used for explicit constructor arguments).

    Raises:
        ConfigError: If the file cannot be read or parsed, or a value is invalid; the message
            names the key and every source that was read.
    """
    env = dict(os.environ if environ is None else environ)
    sources: list[str] = []
    data: dict[str, Any] = {}
    file_path: Path | None = None
    if path is not None:
        file_path = Path(path)
    elif env.get(ENV_PREFIX + "CONFIG"):
        file_path = Path(env[ENV_PREFIX + "CONFIG"])
    elif (Path.cwd() / CONFIG_FILE_NAME).exists():
        file_path = Path.cwd() / CONFIG_FILE_NAME
    root = Path.cwd()
    if file_path is not None:
        file_path = file_path.expanduser().resolve()
        data = _read_file(file_path)
        sources.append(str(file_path))
        root = file_path.parent
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in SETTING_NAMES or not all(keys):
            continue
        if len(keys) > 1 and keys[0] not in data:
            data[keys[0]] = _default_section(keys[0], env)
        target = data
        for key in keys[:-1]:
            nested = target.get(key)
            if not isinstance(nested, dict):
                nested = {}
                target[key] = nested
            target = nested
        target[keys[-1]] = _env_value(keys, value)
        sources.append(f"environment {name}")
    if overrides:
        data.update({k: v for k, v in overrides.items() if v is not None})
        sources.append("arguments")
    data.setdefault("root", root)
    data["sources"] = tuple(sources)
    try:
        settings = Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = ", then ".join(sources) or "built-in defaults"
        raise ConfigError(
            f"invalid setting {key!r}: {first['msg']} (read from {where})",
            key=key,
            sources=tuple(sources),
        ) from None
    for section in ("online_store", "offline_store", "engine"):
        if not isinstance(getattr(settings, section).get("type"), str):
            where = ", then ".join(sources) or "built-in defaults"
            raise ConfigError(
                f"invalid setting '{section}.type': every {section} needs a type "
                f"(read from {where})",
                key=f"{section}.type",
                sources=tuple(sources),
            )
    return settings


def _env_value(keys: list[str], value: str) -> Any:
    """Read an environment value as a YAML scalar or collection (``4``, ``[a, b]``, ``null``).

    A top-level text setting keeps the raw text unless YAML reads it as text or null, so
    ``POTLUCK_PROJECT=no`` stays ``"no"`` and ``sqlite:///:memory:`` stays a URL.
    """
    try:
        parsed = yaml.safe_load(value) if value else value
    except yaml.YAMLError:
        return value
    is_text_setting = len(keys) == 1 and not isinstance(
        Settings.model_fields[keys[0]].get_default(call_default_factory=True), dict
    )
    if is_text_setting and not isinstance(parsed, (str, type(None))):
        return value
    return parsed


def _default_section(section: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The built-in value of a plug-in section that environment variables refine key by key.

    ``POTLUCK_ONLINE_STORE__PATH`` alone changes the default store's path; when the environment
    also sets the section's ``type`` it describes another plug-in, so it starts from nothing.
    """
    if any(name.lower() == f"{ENV_PREFIX}{section}__type".lower() for name in env):
        return {}
    default = Settings.model_fields[section].get_default(call_default_factory=True)
    return dict(default) if isinstance(default, dict) else {}


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", key="config", sources=(str(path),)
        ) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        # One line, for the CLI's "error: ..." output: the problem and where it is.
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"config file {path} is not valid YAML: {problem}{where}",
            key="config",
            sources=(str(path),),
        ) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"config file {path} must hold a mapping of settings, got {type(loaded).__name__}",
            key="config",
            sources=(str(path),),
        )
    unknown = sorted(set(loaded) - set(SETTING_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]!r} in {path}; known settings: "
            f"{', '.join(SETTING_NAMES)}",
            key=unknown[0],
            sources=(str(path),),
        )
    return loaded


__all__ = ["PluginConfig", "SETTING_NAMES", "Settings", "load_settings"]
