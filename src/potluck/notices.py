"""The warnings potluck gives: something to know, nothing failed, the operation went on.

Filter them with the standard :mod:`warnings` machinery, for example
``warnings.simplefilter("ignore", NoDataWarning)``. Errors live in :mod:`potluck.errors`.

Hierarchy::

    PotluckWarning(UserWarning)
    └── NoDataWarning      a feature table's batch source holds no rows yet
"""

from __future__ import annotations


class PotluckWarning(UserWarning):
    """Base class of the warnings potluck gives."""


class NoDataWarning(PotluckWarning):
    """A feature table's batch source holds no rows yet, so its features come back null."""


__all__ = ["NoDataWarning", "PotluckWarning"]
