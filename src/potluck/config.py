"""Settings: read once, validated whole, frozen, and passed down explicitly.

Settings come from ``potluck.yaml`` and ``POTLUCK_*`` environment variables; nothing else in
potluck reads ``os.environ``.

Resolution order, later wins: built-in defaults, the YAML file (``POTLUCK_CONFIG``, else the
nearest ``potluck.yaml`` in the working folder or its parents, as git finds ``.git``), then
environment variables named ``POTLUCK_<KEY>`` with ``__`` for nesting
(``POTLUCK_ONLINE_STORE__URL``). An environment variable that sets a plug-in section's ``type`` to
another plug-in replaces the file's section instead of merging into it. A ``POTLUCK_*`` variable
that is no setting is an error when its name is close to a setting's (a typo), unless
``potluck._env_names`` lists it as read by something else (``POTLUCK_CONFIG``,
``POTLUCK_DEBUG``, ``POTLUCK_TEST_*``...). YAML, in the file and in variables, may not repeat a
key in a mapping. Relative paths are relative to the config file's folder (the working folder
when there is no file).

Everything is validated when it is loaded: every top-level setting, and each plug-in section
against its plug-in's config class. The first problem is one :class:`ConfigError` whose message
names the key, the value (secrets masked) and every source that was read.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from potluck._env_names import closest_setting, is_not_a_setting
from potluck._kafka_properties import (
    KafkaProperties,
    check_properties,
    masked_properties,
    property_name,
    property_secrets,
)
from potluck._redact import redact_text, redact_url, secrets_in
from potluck._setting_forms import check_address, check_memory_limit, check_registry_url
from potluck._yaml import MAX_DEPTH, DuplicateKeyError, TooDeepError
from potluck._yaml import load as read_yaml
from potluck.auth.settings import AuthSettings
from potluck.errors import ConfigError, PotluckError

ENV_PREFIX = "POTLUCK_"
CONFIG_FILE_NAME = "potluck.yaml"
MIN_STAGING_MAX_AGE = timedelta(minutes=1)
"""The smallest ``staging_max_age``: a younger training set may still be being read back."""

MemoryLimit = Annotated[str, AfterValidator(check_memory_limit)]
"""A memory size as DuckDB reads it: ``"4GB"``, ``"512MiB"``, ``"80%"`` (of RAM)."""

DataIsolationMode = Literal["auto", "on", "off"]
"""The ``data_isolation`` setting: ``auto`` (on with authentication or ``data_root``), ``on``
or ``off``."""

_NOT_GIVEN = object()
_VALUE_REPR = reprlib.Repr()
_VALUE_REPR.maxstring = 120
_VALUE_REPR.maxother = 120


def _masked(value: Any) -> Any:
    """Return ``value`` with the secrets of every URL-like string in it masked."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_masked(v) for v in value)
    return value


class PluginConfig(BaseModel):
    """Base of every plug-in's config; each plug-in narrows ``type`` to its own name.

    Its ``repr`` masks the secrets of URL-like values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: str
    """The plug-in's name, as registered in ``potluck.plugins``."""

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, _masked(value)


class Settings(BaseModel):
    """Every potluck setting. Each has an embedded default, so no file is needed to start.

    Top-level values are checked here (a project name, URLs and ``host:port`` addresses with
    numeric ports); :func:`load_settings` also checks each plug-in section. Its ``repr`` masks
    passwords.
    """

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
        description="The engine for historical retrieval: {type: duckdb} (in-process) or "
        "{type: spark, master, conf, staging_location} (a Spark cluster).",
    )
    engine: dict[str, Any] = Field(
        default_factory=lambda: {"type": "local"},
        description="Where ingestion jobs run: {type: local} (threads of this process) or "
        "{type: spark, master, conf, ...} (Spark applications, through spark-submit).",
    )
    kafka: dict[str, str] = Field(
        default_factory=dict,
        description="librdkafka properties every Kafka client starts with (publish, stream "
        "jobs, dead letters; Spark stream jobs as kafka.<property>): security.protocol, "
        "sasl.*, ssl.* ...; call-time options win.",
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
    job_service_url: str | None = Field(
        default=None,
        description="host:port of a Job Service (potluck jobservice, or potluck core "
        "--job-service); when set, ingestion jobs, job lists, schedules and "
        "get_historical_features go through it.",
    )
    staging_location: str | None = Field(
        default=None,
        description="A folder (a path or URL) the SDK and the Job Service can both read and "
        "write: with job_service_url, in-memory entity rows are staged there as Parquet and "
        "training sets are written there.",
    )
    staging_max_age: timedelta | None = Field(
        default=None,
        description="How old (7d, 12h; at least 1m) a training set's folder under a staging "
        "location (staging_location, and the offline store's) may get before a running Job "
        "Service deletes it, checking every max age / 10 and at least hourly; null: never.",
    )
    auth: AuthSettings | None = Field(
        default=None,
        description="Servers: static tokens, JWT verification and TLS (docs/security.md); "
        "null: no authentication, servers listen on 127.0.0.1 only.",
    )
    token: SecretStr | None = Field(
        default=None,
        description="The bearer token the SDK and CLI send to Core, Online Serving and the "
        "Job Service.",
    )
    token_file: Path | None = Field(
        default=None, description="A file holding the bearer token (instead of token)."
    )
    core_secure: bool = Field(default=False, description="Reach core_url over TLS.")
    serving_secure: bool = Field(default=False, description="Reach serving_url over TLS.")
    job_service_secure: bool = Field(default=False, description="Reach job_service_url over TLS.")
    ca_file: Path | None = Field(
        default=None,
        description="CA certificates (PEM) trusted for core_secure, serving_secure and "
        "job_service_secure; null: the system's.",
    )
    client_cert_file: Path | None = Field(
        default=None,
        description="The client certificate chain (PEM) shown to servers that require mutual "
        "TLS (auth.tls.client_ca_file), on every secure connection; set with client_key_file.",
    )
    client_key_file: Path | None = Field(
        default=None,
        description="The private key (PEM) of client_cert_file; set with client_cert_file.",
    )
    data_isolation: DataIsolationMode = Field(
        default="auto",
        description="Project data isolation: a project's batch sources must lie under its data "
        "roots (<data_root>/<project>, with data_root unset <root>/<project>, root being the "
        "config file's folder) and its Kafka topics start with '<project>.', unless data_roots or "
        "topic_prefixes say otherwise or an administrator allowed the location. on: enforced; "
        "off: never checked; auto: on when auth authenticates callers or data_root is set, else "
        "off, because without authentication every caller may already apply, delete and read "
        "every project, so a folder rule would protect nobody and only break single-user setups, "
        "while with authentication it is what makes project-limited tokens true.",
    )
    data_root: str | None = Field(
        default=None,
        description="The folder, or URL prefix such as s3://bucket/potluck, that holds a folder "
        "per project: project data isolation (data_isolation) keeps each project's batch "
        "sources under <data_root>/<project>. Setting it turns isolation on under "
        "data_isolation: auto; unset: the config file's folder is the root when isolation is on.",
    )
    data_roots: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per project, the folders or URL prefixes its batch sources may lie under, "
        "instead of <data_root>/<project>: {project: [folder or URL, ...]}; needs project data "
        "isolation on (data_isolation).",
    )
    topic_prefixes: dict[str, list[str]] = Field(
        default_factory=dict,
        description="Per project, the prefixes its Kafka topics (stream and dead-letter) may "
        "start with, instead of '<project>.': {project: [prefix, ...]}; needs project data "
        "isolation on (data_isolation).",
    )
    root: Path = Field(
        default_factory=Path.cwd,
        description="The folder relative paths are resolved against (the config file's folder).",
    )
    config_file: Path | None = Field(
        default=None, description="The config file these settings were read from, if any."
    )
    sources: tuple[str, ...] = Field(
        default=(), description="Where these settings were read from, in order (informational)."
    )

    @field_validator("project")
    @classmethod
    def _check_project(cls, value: str) -> str:
        from potluck.definitions._checks import MAX_NAME_LENGTH, NAME_PATTERN

        if not NAME_PATTERN.fullmatch(value):
            raise ValueError(
                "names match [a-z_][a-z0-9_]* (lower-case letters, digits and underscores, not "
                "starting with a digit)"
            )
        if len(value) > MAX_NAME_LENGTH:
            raise ValueError(f"a name has at most {MAX_NAME_LENGTH} characters")
        return value

    @field_validator("registry")
    @classmethod
    def _check_registry(cls, value: str) -> str:
        return check_registry_url(value)

    @field_validator("kafka", mode="before")
    @classmethod
    def _check_kafka(cls, value: object) -> dict[str, str]:
        return check_properties(value)

    @field_validator("kafka")
    @classmethod
    def _masked_kafka(cls, value: dict[str, str]) -> dict[str, str]:
        return KafkaProperties(value)  # its repr masks the secrets

    @field_validator("core_url", "serving_url", "job_service_url")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)

    @field_validator("staging_max_age", mode="before")
    @classmethod
    def _check_staging_max_age(cls, value: object) -> object:
        from potluck.definitions.serde import parse_duration

        if value is None:
            return None
        try:
            age = parse_duration(value, "staging_max_age")
        except PotluckError as exc:
            raise ValueError(exc.message.removeprefix("staging_max_age: ")) from None
        if age < MIN_STAGING_MAX_AGE:
            raise ValueError(
                "must be at least 1m (such as 12h or 7d): a younger training set may still be "
                "read back"
            )
        return age

    @field_validator("data_isolation", mode="before")
    @classmethod
    def _isolation_mode(cls, value: object) -> object:
        # YAML 1.1 (PyYAML) reads a bare on / off as true / false.
        if isinstance(value, bool):
            return "on" if value else "off"
        return value

    @field_validator("data_root")
    @classmethod
    def _check_data_root(cls, value: str | None, info: pydantic.ValidationInfo) -> str | None:
        if value is not None and info.data.get("data_isolation") == "off":
            raise ValueError(_ISOLATION_OFF)
        return value

    @field_validator("data_roots", "topic_prefixes")
    @classmethod
    def _check_isolation(
        cls, value: dict[str, list[str]], info: pydantic.ValidationInfo
    ) -> dict[str, list[str]]:
        mode = info.data.get("data_isolation")
        if value and mode == "off":
            raise ValueError(_ISOLATION_OFF)
        if value and not _isolates(mode, info.data.get("data_root"), info.data.get("auth")):
            raise ValueError(
                "it takes effect only with project data isolation on, and data_isolation: auto "
                "is on only when auth authenticates callers (tokens_file, tokens or jwt) or "
                "data_root is set; set data_isolation: on (or data_root) too"
            )
        for project, entries in value.items():
            if not entries or not all(isinstance(e, str) and e.strip() for e in entries):
                raise ValueError(
                    f"project {project!r} needs a list of non-empty folders, URLs or prefixes"
                )
        return value

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, masked_properties(value) if name == "kafka" else _masked(value)

    @property
    def isolates_data(self) -> bool:
        """Whether project data isolation is on: ``data_isolation`` with ``auto`` resolved.

        ``auto`` is on when :attr:`auth` authenticates callers or :attr:`data_root` is set.
        Ask :meth:`potluck.registry.isolation.DataIsolation.from_settings` for the roots.
        """
        return _isolates(self.data_isolation, self.data_root, self.auth)

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

    @property
    def registry_file(self) -> Path | None:
        """The SQLite file of the registry, or ``None`` for a server, memory or ``core_url``."""
        prefix = "sqlite:///"
        url = self.registry_url
        if self.core_url or not url.startswith(prefix):
            return None
        rest = url[len(prefix) :].partition("?")[0]
        return None if rest in ("", ":memory:") or rest.startswith("file:") else Path(rest)

    def served_registry_url(self, server: str) -> str:
        """Return :attr:`registry_url` for a server that opens the SQL registry itself.

        ``potluck core`` and the Job Service serve the database ``registry`` names; they never
        read definitions through ``core_url``. With ``core_url`` set, a ``registry`` left at
        its default, or naming a SQLite file that does not exist, would start them on a new
        empty registry, so that is refused.

        Args:
            server: The server, for the message (``"potluck jobservice"``).

        Raises:
            ConfigError: If ``core_url`` is set and ``registry`` is not, or names a SQLite
                file that does not exist; the message names both settings.
        """
        if not self.core_url:
            return self.registry_url
        file = None
        prefix = "sqlite:///"
        if self.registry_url.startswith(prefix):
            rest = self.registry_url[len(prefix) :].partition("?")[0]
            file = None if rest in ("", ":memory:") or rest.startswith("file:") else Path(rest)
        if "registry" in self.model_fields_set and (file is None or file.exists()):
            return self.registry_url
        problem = (
            "registry is not set"
            if "registry" not in self.model_fields_set
            else f"registry names {file}, which does not exist"
        )
        raise ConfigError(
            f"{server} needs a SQL registry (it does not read definitions through core_url "
            f"{self.core_url}), but {problem}: set registry to the registry's database, the one "
            f"the Core service serves (a SQLite file or postgresql://...) "
            f"({describe_sources(self.sources)})",
            key="registry",
            sources=self.sources,
        )


_ISOLATION_OFF = (
    "data_isolation is off, so it would be ignored; remove it, or set data_isolation to on or "
    "auto to keep each project's sources under its data roots"
)


def _isolates(mode: object, data_root: object, auth: object) -> bool:
    if mode == "auto":
        authenticates = isinstance(auth, AuthSettings) and auth.authenticates
        return data_root is not None or authenticates
    return mode == "on"


SETTING_NAMES: tuple[str, ...] = tuple(
    n for n in Settings.model_fields if n not in {"root", "config_file", "sources"}
)
"""The user-facing settings; docs/configuration.md must document each one (a test checks)."""


# ---- errors ------------------------------------------------------------------------------------


def describe_sources(sources: Sequence[str]) -> str:
    """Return ``sources`` as the message of a :class:`ConfigError` ends: ``read from A, then B``."""
    return "read from " + (", then ".join(sources) or "built-in defaults")


def setting_error(
    key: str,
    reason: str,
    *,
    value: Any = _NOT_GIVEN,
    sources: Sequence[str] | None = None,
    secrets: set[str] | None = None,
) -> ConfigError:
    """Return the :class:`ConfigError` for one bad setting, as one line.

    ``invalid setting 'KEY' = VALUE: REASON (read from SOURCES)``; the value and the whole
    message are masked (URL passwords, secret query values, and ``secrets`` anywhere).

    Args:
        key: The dotted key (``online_store.url``).
        reason: Why it is wrong and, where it helps, what to write instead.
        value: The bad value; left out of the message when not given (a missing key).
        sources: Every source read, in order; ``None`` leaves the sources out (a plug-in
            section checked at first use, where they are not known).
        secrets: Secrets to mask wherever they appear.
    """
    shown = "" if value is _NOT_GIVEN else f" = {_VALUE_REPR.repr(_masked(value))}"
    where = "" if sources is None else f" ({describe_sources(sources)})"
    message = redact_text(f"invalid setting {key!r}{shown}: {reason}{where}", secrets or set())
    return ConfigError(message, key=key, sources=tuple(sources or ()))


def _first_problem(exc: pydantic.ValidationError) -> Any:
    # A key that is not allowed is likely a typo behind the other errors: name it first.
    errors = exc.errors()
    return next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])


def _reason(error: Any, section: Mapping[str, Any] | None, section_name: str) -> str:
    kind = error["type"]
    owner = f"{section_name} type {section.get('type')!r}" if section is not None else "potluck"
    if kind == "missing":
        return f"missing, and {owner} requires it"
    if kind == "extra_forbidden":
        return f"not a key of {owner}"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    message = str(error["msg"])
    return message[:1].lower() + message[1:]


def validation_error(
    exc: pydantic.ValidationError,
    *,
    model: type[BaseModel] = Settings,
    section: str | None = None,
    data: Mapping[str, Any] | None = None,
    sources: Sequence[str] | None = None,
) -> ConfigError:
    """Return the :class:`ConfigError` for the first problem pydantic found.

    Args:
        exc: The validation error of ``model``.
        model: :class:`Settings`, or the config class of the plug-in ``section`` names.
        section: The plug-in section validated (``online_store``), or ``None`` for Settings.
        data: What was validated, to find the secrets to mask.
        sources: Every source read, in order (see :func:`setting_error`).
    """
    error = _first_problem(exc)
    key = ".".join([*([section] if section else []), *(str(p) for p in error["loc"])])
    plugin = data if section is not None else None
    value = _NOT_GIVEN if error["type"] == "missing" else error.get("input", _NOT_GIVEN)
    reason = _reason(error, plugin, section or "")
    if error["type"] == "extra_forbidden":
        keys = SETTING_NAMES if model is Settings else tuple(model.model_fields)
        reason += f"; its keys: {', '.join(keys)}"
    secrets = secrets_in([dict(data or {})]) | property_secrets((data or {}).get("kafka"))
    if key.split(".")[0] == "kafka":  # a value of another shape may hold secrets: left out
        value = masked_properties(value) if isinstance(value, dict) else _NOT_GIVEN
    return setting_error(key, reason, value=value, sources=sources, secrets=secrets)


# ---- loading -----------------------------------------------------------------------------------


def find_config_file(start: Path | None = None) -> Path | None:
    """Return the nearest ``potluck.yaml`` in ``start`` (default: the working folder) or a parent.

    Folders that cannot be read are passed over, as if they held no file.
    """
    folder = Path.cwd() if start is None else start
    for candidate in (folder, *folder.parents):
        path = candidate / CONFIG_FILE_NAME
        try:
            if path.is_file():
                return path
        except OSError:
            continue
    return None


def load_settings(
    path: str | Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Resolve the settings once, and check all of them.

    Args:
        path: The config file; defaults to ``$POTLUCK_CONFIG``, else the nearest
            ``potluck.yaml`` in the working folder or its parents (see
            :func:`find_config_file`), else built-in defaults only.
        environ: The environment to read ``POTLUCK_*`` variables from (default ``os.environ``).
        overrides: Values that win over everything (used for explicit constructor arguments);
            ``None`` values mean "not given".

    Raises:
        ConfigError: If the file cannot be read or parsed (a key repeated in a mapping
            included), a value is invalid (a plug-in section included: an unknown ``type``, a
            missing or unknown key, a bad value), or a ``POTLUCK_*`` variable misspells a
            setting; the message names the key (or variable), the value and every source that
            was read.
        PluginDependencyError: If a plug-in section names a plug-in whose optional extra is not
            installed.
    """
    env = dict(os.environ if environ is None else environ)
    sources: list[str] = []
    data: dict[str, Any] = {}
    file_path: Path | None = None
    if path is not None:
        file_path = Path(path)
    elif env.get(ENV_PREFIX + "CONFIG"):
        file_path = Path(env[ENV_PREFIX + "CONFIG"])
    else:
        file_path = find_config_file()
    root = Path.cwd()
    if file_path is not None:
        file_path = file_path.expanduser().resolve()
        data = _read_file(file_path)
        sources.append(str(file_path))
        root = file_path.parent
    unread = _overlay_environment(data, env, sources)
    if overrides:
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            data.update(given)
            sources.append("arguments")
    _check_unread_variables(unread, sources)
    data.setdefault("root", root)
    data["config_file"] = file_path
    data["sources"] = tuple(sources)
    try:
        settings = Settings.model_validate(data)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, data=data, sources=sources) from None
    _check_plugin_sections(settings, sources)
    return settings


def _check_plugin_sections(settings: Settings, sources: Sequence[str]) -> None:
    from potluck import plugins

    for interface in plugins.INTERFACES:
        plugins.validate(interface, getattr(settings, interface.name), sources=sources)


def _overlay_environment(
    data: dict[str, Any], env: Mapping[str, str], sources: list[str]
) -> list[str]:
    """Apply the ``POTLUCK_*`` variables to ``data`` in name order.

    Each variable read is appended to ``sources``. A variable naming a key inside a plug-in
    section refines the file's section (or the built-in one), unless the environment also sets
    that section's ``type`` to another plug-in: then the section starts empty, so no key of the
    other plug-in is left over.

    Returns:
        The ``POTLUCK_*`` variables that are no setting and are not listed as such in
        :mod:`potluck._env_names`, in name order (see :func:`_check_unread_variables`).
    """
    unread: list[str] = []
    started: set[str] = set()
    for name, value in sorted(env.items()):
        if not name.startswith(ENV_PREFIX) or is_not_a_setting(name):
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] == "kafka" and len(keys) == 2:  # ..._KAFKA__SASL_PASSWORD: sasl.password
            keys[1] = property_name(keys[1])
        if keys[0] not in SETTING_NAMES or not all(keys):
            unread.append(name)
            continue
        if len(keys) > 1 and keys[0] not in started:
            data[keys[0]] = _section_base(keys[0], data.get(keys[0]), env, sources)
            started.add(keys[0])
        target = data
        for key in keys[:-1]:
            nested = target.get(key)
            if not isinstance(nested, dict):
                nested = {}
                target[key] = nested
            target = nested
        target[keys[-1]] = _env_value(name, keys, value, sources)
        sources.append(f"environment {name}")
    return unread


def _check_unread_variables(unread: Sequence[str], sources: Sequence[str]) -> None:
    """Refuse the first unread ``POTLUCK_*`` variable whose name is close to a setting's.

    Raises:
        ConfigError: Naming the variable, the setting it most likely meant and every source
            that was read.
    """
    for name in unread:
        meant = closest_setting(name, _setting_variables(name))
        if meant is None:
            continue
        hint = ""
        if "__" in meant and "__" not in name:
            hint = ", with two underscores between nested keys"
        raise ConfigError(
            f"unknown environment variable {name}: did you mean {meant}{hint}? Rename or unset "
            f"it ({describe_sources(sources)})",
            key=name,
            sources=tuple(sources),
        )


def _setting_variables(name: str) -> list[str]:
    """Return the setting variables ``name`` may misspell.

    That is every top-level setting's and each plug-in section's ``type``; and, for a section
    ``name`` starts with (or starts with a near spelling of), the key of every known plug-in of
    it. Plug-ins are imported only then, so a variable far from every section costs nothing;
    one whose module cannot be imported (a missing optional extra) adds no keys.
    """
    from potluck import plugins

    names = {ENV_PREFIX + setting.upper() for setting in SETTING_NAMES}
    head = name.removeprefix(ENV_PREFIX).upper()
    for interface in plugins.INTERFACES:
        section = interface.name.upper()
        keys = {"type"}
        if head.startswith(section) or closest_setting(head.split("__")[0], [section]):
            for plugin in plugins.known_names(interface):
                try:
                    keys.update(plugins.plugin_class(interface, plugin).config_class.model_fields)
                except PotluckError:
                    continue
        names.update(f"{ENV_PREFIX}{section}__{key.upper()}" for key in keys)
    return sorted(names)


def _env_type(section: str, env: Mapping[str, str], sources: Sequence[str]) -> Any:
    wanted = f"{ENV_PREFIX}{section}__type".lower()
    for name, value in env.items():
        if name.lower() == wanted:
            return _env_value(name, [section, "type"], value, sources)
    return None


def _section_base(
    section: str, current: Any, env: Mapping[str, str], sources: Sequence[str]
) -> dict[str, Any]:
    """The section that environment variables refine key by key.

    The file's (or an earlier variable's) section when there is one, else the built-in one;
    empty when the environment sets the section's ``type`` to another plug-in than that.
    """
    if not isinstance(current, dict):
        default = Settings.model_fields[section].get_default(call_default_factory=True)
        current = dict(default) if isinstance(default, dict) else {}
    env_type = _env_type(section, env, sources)
    if env_type is not None and current.get("type") != env_type:
        return {}
    return dict(current)


def _env_value(name: str, keys: list[str], value: str, sources: Sequence[str]) -> Any:
    """Read variable ``name``'s value as YAML: a scalar or a collection (``4``, ``[a, b]``).

    A top-level text setting keeps the raw text unless YAML reads it as text or null, so
    ``POTLUCK_PROJECT=no`` stays ``"no"`` and ``sqlite:///:memory:`` stays a URL. An empty value
    of a top-level setting whose default is null unsets it (``POTLUCK_CA_FILE=``: no CA file).

    Raises:
        ConfigError: If the value is a mapping that holds a key twice, or nests collections
            more than ``MAX_DEPTH`` levels deep.
    """
    if len(keys) > 1 and keys[0] == "kafka":
        return value  # a librdkafka property is text: a password "0123" stays "0123"
    if not value and len(keys) == 1 and Settings.model_fields[keys[0]].default is None:
        return None
    try:
        parsed = read_yaml(value) if value else value
    except DuplicateKeyError as exc:
        raise setting_error(
            ".".join(keys),
            f"its value holds the key {exc.key!r} twice; keep one of them",
            sources=[*sources, f"environment {name}"],
        ) from None
    except TooDeepError:
        raise setting_error(
            ".".join(keys),
            f"its value is nested too deeply (more than {MAX_DEPTH} levels)",
            sources=[*sources, f"environment {name}"],
        ) from None
    except yaml.YAMLError:
        return value
    is_text_setting = len(keys) == 1 and not isinstance(
        Settings.model_fields[keys[0]].get_default(call_default_factory=True), dict
    )
    if is_text_setting and not isinstance(parsed, (str, type(None))):
        return value
    return parsed


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", key="config", sources=(str(path),)
        ) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte {exc.start} cannot be read); save it "
            "as UTF-8",
            key="config",
            sources=(str(path),),
        ) from None
    try:
        loaded = read_yaml(text)
    except DuplicateKeyError as exc:
        raise ConfigError(
            f"config file {path}, line {exc.line}: duplicate key {exc.key!r} (first at line "
            f"{exc.first_line}); a key may be given once in a mapping, keep one of them",
            key="config",
            sources=(str(path),),
        ) from None
    except TooDeepError as exc:
        raise ConfigError(
            f"config file {path}, line {exc.line}: nested too deeply (more than {MAX_DEPTH} "
            "levels)",
            key="config",
            sources=(str(path),),
        ) from None
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
            f"unknown setting {unknown[0]!r} in {path}; known settings: {', '.join(SETTING_NAMES)}",
            key=unknown[0],
            sources=(str(path),),
        )
    return loaded


__all__ = [
    "CONFIG_FILE_NAME",
    "ENV_PREFIX",
    "SETTING_NAMES",
    "MemoryLimit",
    "PluginConfig",
    "Settings",
    "describe_sources",
    "find_config_file",
    "load_settings",
    "setting_error",
    "validation_error",
]
