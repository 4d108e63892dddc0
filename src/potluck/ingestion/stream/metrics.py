"""``/metrics`` of a stream job: Prometheus text read from the job's record at each scrape.

- ``potluck_stream_messages_total{project,table,job,outcome}``: messages read and handled, by
  outcome: ``written`` (the online store took them), ``skipped`` (not newer than the stored
  value) and ``bad``;
- ``potluck_stream_bad_messages_total{project,table,job,reason}``: bad messages per reason
  (``undecodable``, ``schema_violation``, ``null_key``, ``bad_key_type``, ``missing_timestamp``,
  ``future_event_time``, ``older_than_max_age``);
- ``potluck_feature_freshness_seconds{project,table}``: now minus the newest event time the job
  has written, never below 0 (absent until it has written one);
- ``potluck_stream_up{project,table,job}``: 1 while the job runs without a warning (a broker or
  store it cannot reach), else 0;
- ``potluck_stream_partitions{project,table,job}``: partitions its consumer holds.

The values come from the job's record (:class:`~potluck.ingestion.jobs.Job`), so the same
collector serves a job of any engine.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from potluck.ingestion.engines.base import IngestionJob
from potluck.ingestion.jobs import JobStatus
from potluck.ingestion.stream.batch import BadReason


class StreamJobMetrics(Collector):
    """Prometheus metrics of one stream job.

    Args:
        job: The job; its record is read at each scrape. ``None``: no metrics until
            :attr:`job` is set (so the endpoint can be bound before the job is started).
    """

    def __init__(self, job: IngestionJob | None = None) -> None:
        self.job = job

    def collect(self) -> Iterator[Any]:
        """Yield the metric families of the job's current record (none before it has a job)."""
        if self.job is None:
            return
        record = self.job.record()
        spec = record.spec
        labels = [spec.project, spec.table, record.id]
        messages = CounterMetricFamily(
            "potluck_stream_messages",
            "Messages a stream job read and handled, by outcome.",
            labels=["project", "table", "job", "outcome"],
        )
        stats = record.stats
        for outcome, count in (
            ("written", stats.rows_written),
            ("skipped", stats.rows_skipped),
            ("bad", stats.rows_rejected),
        ):
            messages.add_metric([*labels, outcome], count)
        yield messages
        bad = CounterMetricFamily(
            "potluck_stream_bad_messages",
            "Bad messages a stream job counted (and dead-lettered), per reason.",
            labels=["project", "table", "job", "reason"],
        )
        for reason in BadReason:
            bad.add_metric([*labels, reason.value], record.bad_messages.get(reason.value, 0))
        yield bad
        freshness = GaugeMetricFamily(
            "potluck_feature_freshness_seconds",
            "Now minus the newest event time written to the online store, per table.",
            labels=["project", "table"],
        )
        if record.max_event_timestamp_us is not None:
            age = max(0.0, time.time() - record.max_event_timestamp_us / 1e6)
            freshness.add_metric([spec.project, spec.table], age)
        yield freshness
        up = record.status is JobStatus.RUNNING and record.warning is None
        for name, text, value in (
            ("potluck_stream_up", "1 while the stream job runs without a warning.", up),
            ("potluck_stream_partitions", "Partitions its consumer holds.", len(record.partitions)),
        ):
            family = GaugeMetricFamily(name, text, labels=["project", "table", "job"])
            family.add_metric(labels, float(value))
            yield family


def serve_metrics(job: IngestionJob | StreamJobMetrics, port: int, host: str = "127.0.0.1") -> Any:
    """Serve the job's metrics over HTTP (``GET /metrics``) on a daemon thread.

    Args:
        job: The stream job, or its collector (whose ``job`` may be set later).
        port: The port (``0``: any free one).
        host: The address to listen on.

    Returns:
        The HTTP server: ``server_address`` says where it listens; ``shutdown()`` then
        ``server_close()`` stop it.

    Raises:
        OSError: If the port cannot be bound.
    """
    registry = CollectorRegistry()
    registry.register(job if isinstance(job, StreamJobMetrics) else StreamJobMetrics(job))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server


__all__ = ["StreamJobMetrics", "serve_metrics"]
