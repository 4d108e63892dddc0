"""Feast 0.9 wire compatibility: Feast 0.9's SDKs work against potluck's services unchanged.

- :func:`add_core_service` serves ``feast.core.CoreService`` from a registry, on the Core
  server (``potluck core``);
- :func:`add_serving_service` serves ``GetOnlineFeaturesV2`` of ``feast.serving.ServingService``
  from a serving service, on the Online Serving gRPC server (``potluck serve``), beside the
  columnar ``GetOnlineFeatures``;
- :func:`add_job_service` serves ``feast.core.JobService`` from a Job Service backend, on the
  Job Service server (``potluck jobservice``), beside ``potluck.jobservice.v1.JobService``.

Each registration function adds one adapter's servicer to a gRPC server before it starts; the
servers take them as ``services`` (so no server imports this package). Definitions map in
``definitions.py`` and ``sources.py``, jobs in ``jobs.py``; failed calls end as ``_calls.py``
says.
"""

from potluck.compat.feast09.core import add_core_service
from potluck.compat.feast09.jobs import add_job_service
from potluck.compat.feast09.serving import add_serving_service

CORE_SERVICES = (add_core_service,)
"""What the Core server adds for Feast 0.9 clients."""

SERVING_SERVICES = (add_serving_service,)
"""What the Online Serving gRPC server adds for Feast 0.9 clients."""

JOB_SERVICES = (add_job_service,)
"""What the Job Service server adds for Feast 0.9 clients."""

__all__ = [
    "CORE_SERVICES",
    "JOB_SERVICES",
    "SERVING_SERVICES",
    "add_core_service",
    "add_job_service",
    "add_serving_service",
]
