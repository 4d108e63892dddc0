"""librdkafka properties as a setting: the ``kafka:`` section of ``potluck.yaml``, and its secrets.

One job: read the properties every Kafka client of potluck starts with (``security.protocol``,
``sasl.*``, ``ssl.*`` ...), merge the call-time ones on top (:func:`merged_properties`), and
know which of them are secrets, so no message, ``repr`` or record shows them. The properties
potluck's delivery promises rest on (:data:`RESERVED_PROPERTIES`) are refused in both.

In ``potluck.yaml`` a property is written as librdkafka names it (``sasl.password``); in an
environment variable, whose name cannot hold ``.``, with ``_`` for ``.``
(``POTLUCK_KAFKA__<PROPERTY>``, such as ``..._SASL_PASSWORD``): no librdkafka property that
takes text has a ``_`` in its name, so the two forms name the same property.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from potluck._redact import MASK, is_secret_key
from potluck.errors import ValidationError

RESERVED_PROPERTIES = {
    "bootstrap.servers": "the stream source's bootstrap_servers name the brokers",
    "group.id": "the job's group_id names the consumer group",
    "enable.auto.commit": "a stream job commits offsets only after the online write",
    "enable.auto.offset.store": "a stream job commits offsets only after the online write",
    "isolation.level": "stream jobs read committed messages only, so a publish is all or nothing",
    "transactional.id": "each publish is a transaction of its own",
}
"""Properties potluck sets itself, and why they may not be changed."""

SECRET_PROPERTIES = frozenset({"ssl.key.pem", "sasl.oauthbearer.config", "sasl.jaas.config"})
"""Properties whose values are secrets although their names do not say so (a private key in
PEM form, a JAAS or OAUTHBEARER configuration holding credentials). Names that hold
``password``, ``secret``, ``token`` ... are secrets too (:func:`is_secret_property`)."""


def property_name(key: str) -> str:
    """Return the librdkafka name of ``key``: lower case, ``_`` read as ``.``."""
    return key.strip().lower().replace("_", ".")


def is_secret_property(name: str) -> bool:
    """Whether the value of property ``name`` is a secret (``sasl.password``, ``ssl.key.pem``).

    Example:
        >>> is_secret_property("sasl.password"), is_secret_property("security.protocol")
        (True, False)
    """
    canonical = property_name(name)
    return canonical in SECRET_PROPERTIES or is_secret_key(canonical.replace(".", "_"))


class KafkaProperties(dict[str, str]):
    """librdkafka properties whose ``repr`` shows every secret value as ``***``.

    Example:
        >>> KafkaProperties({"sasl.password": "hunter2"})
        KafkaProperties({'sasl.password': '***'})
    """

    def __repr__(self) -> str:
        return f"{type(self).__name__}({masked_properties(self)!r})"


def check_properties(value: object) -> dict[str, str]:
    """Return the ``kafka:`` section as librdkafka properties: names as librdkafka spells them.

    Args:
        value: The section as read: a mapping of names to text, numbers or booleans
            (``true``/``false`` become ``"true"``/``"false"``, as librdkafka writes them).

    Raises:
        ValueError: If it is not a mapping, a name is empty or given twice (in both of its
            forms), or a value is a list, a mapping or null; the message names the property
            and never shows a value.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(
            "must be a mapping of librdkafka properties to values, such as "
            f"{{security.protocol: SASL_SSL, sasl.mechanism: PLAIN}}, not {type(value).__name__}"
        )
    properties: dict[str, str] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"property name {key!r} is not a librdkafka property name")
        name = property_name(key)
        if name in RESERVED_PROPERTIES:
            raise ValueError(
                f"property {name!r} is set by potluck ({RESERVED_PROPERTIES[name]}); leave it out"
            )
        if name in properties:
            raise ValueError(f"property {name!r} is given twice (as {key!r} too); keep one")
        properties[name] = _text(name, item)
    return properties


def _text(name: str, item: Any) -> str:
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, (str, int, float)):
        return str(item)
    kind = "null" if item is None else type(item).__name__
    raise ValueError(
        f"property {name!r} must be text, a number or a boolean, not {kind}; librdkafka "
        "takes one value per property (a list is one comma-separated text)"
    )


def merged_properties(
    settings: Mapping[str, str], call_time: Mapping[str, object] | None
) -> dict[str, str]:
    """Return the ``kafka`` settings with the call-time properties on top (they win).

    Raises:
        ValidationError: If a call-time property is refused (see :func:`check_properties`);
            ``field`` is ``kafka_config``.
    """
    try:
        given = check_properties(call_time)
    except ValueError as exc:
        raise ValidationError(f"kafka_config: {exc}", field="kafka_config") from None
    return {**settings, **given}


def masked_properties(properties: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``properties`` with the value of every secret property replaced by ``***``."""
    return {
        key: MASK if isinstance(key, str) and is_secret_property(key) else item
        for key, item in properties.items()
    }


def property_secrets(properties: object) -> set[str]:
    """Return the values of the secret properties in ``properties`` (anything: a mapping or not)."""
    if not isinstance(properties, Mapping):
        return set()
    return {
        str(item)
        for key, item in properties.items()
        if isinstance(key, str) and is_secret_property(key) and isinstance(item, (str, int))
    }


__all__ = [
    "RESERVED_PROPERTIES",
    "KafkaProperties",
    "SECRET_PROPERTIES",
    "check_properties",
    "is_secret_property",
    "masked_properties",
    "merged_properties",
    "property_name",
    "property_secrets",
]
