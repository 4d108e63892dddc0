"""Which ``POTLUCK_*`` environment variables are settings, and what a misspelt one meant.

``potluck.config`` reads every ``POTLUCK_<KEY>`` variable (``__`` between nested keys) as a
setting. A few ``POTLUCK_*`` variables are not settings: they are read by something else and
listed here, in the one place that says so (docs/configuration.md lists them too, and a test
checks that every ``POTLUCK_*`` name the repository uses is either a setting or listed here).
Any other variable that is not a setting but whose name is close to a setting's is a typo (an
I for the Y of ``POTLUCK_REGISTRY``, one underscore for the two of
``POTLUCK_ONLINE_STORE__TYPE``); :func:`closest_setting` finds what it meant, as ``difflib``
measures closeness.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

NOT_SETTINGS: tuple[str, ...] = (
    "POTLUCK_CONFIG",
    "POTLUCK_DEBUG",
    "POTLUCK_FEAST09_VENV",
    "POTLUCK_JARS_CACHE",
    "POTLUCK_SERVICES_PORT_OFFSET",
    "POTLUCK_SERVICES_PYTHON",
)
"""Variables that are not settings: the config file to read (``POTLUCK_CONFIG``), the CLI's
tracebacks (``POTLUCK_DEBUG``), ``scripts/feast09_venv.sh``'s virtualenv, and
``scripts/services.sh``'s jar cache, ports and Python."""

NOT_SETTINGS_PREFIXES: tuple[str, ...] = ("POTLUCK_TEST_",)
"""Prefixes of variables that are not settings: the test suite's service addresses."""

CLOSENESS = 0.6
"""How close (``difflib.SequenceMatcher.ratio``, 0 to 1, of the names without ``POTLUCK_``) a
name must be to a setting's name to count as a misspelling of it; less close names are left
alone, as another tool's."""
_PREFIX = "POTLUCK_"


def is_not_a_setting(name: str) -> bool:
    """Whether ``name`` is one of the variables that are not settings (see :data:`NOT_SETTINGS`)."""
    return name in NOT_SETTINGS or name.startswith(NOT_SETTINGS_PREFIXES)


def closest_setting(name: str, spellings: Iterable[str]) -> str | None:
    """Return the setting variable ``name`` most likely misspells, or ``None`` if none is close.

    Args:
        name: An environment variable that is not a setting.
        spellings: The setting variables there are (``POTLUCK_REGISTRY``,
            ``POTLUCK_ONLINE_STORE__TYPE``, ...).
    """
    by_key = {spelling.removeprefix(_PREFIX): spelling for spelling in spellings}
    key = name.removeprefix(_PREFIX)
    found = difflib.get_close_matches(key, list(by_key), n=1, cutoff=CLOSENESS)
    return by_key[found[0]] if found else None


__all__ = [
    "CLOSENESS",
    "NOT_SETTINGS",
    "NOT_SETTINGS_PREFIXES",
    "closest_setting",
    "is_not_a_setting",
]
