"""Settings every Spark plug-in shares: where the cluster is and how an application asks for it.

This module imports no pyspark, so settings load (and are checked) where pyspark is not installed.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_MASTER = re.compile(r"local(\[(\d+|\*)(,\d+)?\])?|spark://[^/\s]+|yarn|k8s://\S+")


def check_master(value: str) -> str:
    """Return ``value`` if it is a Spark master URL this project can submit to.

    Raises:
        ValueError: Naming the accepted forms.
    """
    if not _MASTER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a Spark master URL; use spark://HOST:PORT (a standalone "
            "cluster), local[N] (N threads in one process), yarn or k8s://URL"
        )
    return value


MasterUrl = Annotated[str, AfterValidator(check_master)]
"""A Spark master URL: ``spark://host:port``, ``local``, ``local[N]``, ``local[*]``, ``yarn``
or ``k8s://...``."""


class SparkSettings(BaseModel):
    """The cluster part of a Spark plug-in's settings.

    Attributes:
        master: The Spark master URL the application runs on.
        conf: Extra Spark properties (``spark.executor.memory: 2g`` ...), applied last, so they
            override anything potluck sets itself.
        python: The Python interpreter executors run (``PYSPARK_PYTHON``); it must have
            potluck and its dependencies installed. ``None`` uses the driver's own interpreter,
            which is right when the cluster's machines share its installation (one machine, or
            an image built with potluck).
    """

    model_config = ConfigDict(extra="forbid")

    master: MasterUrl = "local[*]"
    conf: dict[str, str] = Field(default_factory=dict)
    python: str | None = None


def is_loopback(master: str) -> bool:
    """Whether ``master`` runs on this machine only (``local...`` or a loopback host).

    The driver can then listen on 127.0.0.1, so nothing is reachable from elsewhere.
    """
    if master.startswith("local"):
        return True
    host = master.removeprefix("spark://").rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "[::1]")


__all__ = ["MasterUrl", "SparkSettings", "check_master", "is_loopback"]
