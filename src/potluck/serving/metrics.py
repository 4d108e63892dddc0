"""Prometheus metrics of one serving process: latency per endpoint, errors, feature freshness.

- ``potluck_serving_request_duration_seconds{endpoint}``: a histogram per endpoint
  (``grpc:GetOnlineFeatures``, ``http:/get-online-features`` ...), measured inside the server
  around the handler.
- ``potluck_serving_errors_total{endpoint,code}``: failed requests by error code.
- ``potluck_feature_freshness_seconds{project,table}``: now minus the newest event time known to
  have been written to the online store for the table (see
  :meth:`potluck.serving.service.ServingService.freshness`), computed at scrape time.
- ``potluck_serving_cache_entries{cache}``: entries in each bounded cache (``plans``,
  ``projects``; :meth:`potluck.serving.service.ServingService.cache_sizes`), at scrape time.

Each :class:`ServingMetrics` has its own ``CollectorRegistry``, so several servers can run in
one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from potluck.serving.service import ServingService

LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Histogram buckets in seconds, from 50 microseconds up."""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition content type."""


class _Freshness(Collector):
    def __init__(self, service: ServingService) -> None:
        self._service = service

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "potluck_feature_freshness_seconds",
            "Now minus the newest event time known written to the online store, per table.",
            labels=["project", "table"],
        )
        for (project, table), seconds in sorted(self._service.freshness().items()):
            family.add_metric([project, table], seconds)
        yield family


class _Caches(Collector):
    def __init__(self, service: ServingService) -> None:
        self._service = service

    def collect(self) -> Iterator[Any]:
        family = GaugeMetricFamily(
            "potluck_serving_cache_entries",
            "Entries in each bounded cache of the serving process.",
            labels=["cache"],
        )
        for name, entries in sorted(self._service.cache_sizes().items()):
            family.add_metric([name], entries)
        yield family


class ServingMetrics:
    """The metrics of one serving process.

    Args:
        service: The service whose freshness is reported.
    """

    def __init__(self, service: ServingService) -> None:
        self.registry = CollectorRegistry()
        self._latency = Histogram(
            "potluck_serving_request_duration_seconds",
            "Time spent handling a request, per endpoint.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._errors = Counter(
            "potluck_serving_errors",
            "Requests that failed, per endpoint and error code.",
            ["endpoint", "code"],
            registry=self.registry,
        )
        self.registry.register(_Freshness(service))
        self.registry.register(_Caches(service))

    def latency(self, endpoint: str) -> Any:
        """Return the latency histogram of ``endpoint`` (call ``.observe(seconds)`` on it)."""
        return self._latency.labels(endpoint)

    def error(self, endpoint: str, code: str) -> None:
        """Count one failed request."""
        self._errors.labels(endpoint, code).inc()

    def render(self) -> bytes:
        """Return every metric in the Prometheus text format."""
        return bytes(generate_latest(self.registry))


__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "ServingMetrics"]
