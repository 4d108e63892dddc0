"""Settings every Spark plug-in shares: where the cluster is and how an application asks for it.

This module imports no pyspark, so settings load (and are checked) where pyspark is not installed.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

_LOCAL = re.compile(r"local(?:\[(?P<threads>\d+|\*)(?:,(?P<failures>\d+))?\])?")
_STANDALONE = re.compile(r"spark://(?P<addresses>.+)")
_ADDRESS = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>\d{1,5})")
_KUBERNETES = re.compile(r"k8s://\S+")
_FORMS = (
    "use spark://HOST:PORT (a standalone cluster; PORT 1-65535, several masters comma-separated), "
    "local, local[N] or local[N,F] (N >= 1 threads in this process, F >= 1 task attempts), "
    "local[*], yarn or k8s://URL"
)


def check_master(value: str) -> str:
    """Return ``value`` if it is a Spark master URL this project can submit to.

    Accepted: ``spark://HOST:PORT[,HOST:PORT...]`` with every port in 1-65535; ``local``,
    ``local[N]``, ``local[*]``, ``local[N,F]``, ``local[*,F]`` with ``N`` and ``F`` at least 1;
    ``yarn``; ``k8s://URL``.

    Raises:
        ValueError: Saying what is wrong and naming the accepted forms.
    """
    local = _LOCAL.fullmatch(value)
    if local is not None:
        for part, name in (("threads", "thread count N"), ("failures", "task attempts F")):
            number = local.group(part)
            if number is not None and number != "*" and int(number) < 1:
                raise ValueError(f"the {name} of {value!r} must be at least 1; {_FORMS}")
        return value
    standalone = _STANDALONE.fullmatch(value)
    if standalone is not None:
        for address in standalone.group("addresses").split(","):
            found = _ADDRESS.fullmatch(address)
            if found is None:
                raise ValueError(f"{address!r} in {value!r} is not HOST:PORT; {_FORMS}")
            if not 1 <= int(found.group("port")) <= 65535:
                raise ValueError(
                    f"the port {found.group('port')} in {value!r} is not in 1-65535; {_FORMS}"
                )
        return value
    if value == "yarn" or _KUBERNETES.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is not a Spark master URL; {_FORMS}")


MasterUrl = Annotated[str, AfterValidator(check_master)]
"""A Spark master URL as :func:`check_master` accepts it."""


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
