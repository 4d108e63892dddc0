"""The stream commands: ``potluck publish TABLE FILE`` and ``potluck stream TABLE``."""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer

from potluck.cli._render import OutputFormat, output_option, print_json, show_message
from potluck.cli.main import EXIT_FAILURE, fail, make_client
from potluck.errors import ValidationError
from potluck.ingestion.jobs import Job, JobStatus, describe

if TYPE_CHECKING:
    from potluck.ingestion.engines.base import IngestionJob
    from potluck.ingestion.stream.metrics import StreamJobMetrics

FOLLOW_INTERVAL = 0.2
"""Seconds between two looks at a running stream job's record."""

METRICS_HOST = "127.0.0.1"
"""The address ``--metrics-port`` listens on."""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""The signals that stop ``potluck stream`` cleanly (after its current micro-batch)."""

KafkaOption = Annotated[
    list[str] | None,
    typer.Option(
        "--kafka-option",
        "-k",
        help="KEY=VALUE: a librdkafka property for the Kafka clients, over the kafka: "
        "settings (security.protocol, sasl.*, session.timeout.ms ...); repeatable.",
        metavar="KEY=VALUE",
    ),
]


def register(app: typer.Typer) -> None:
    """Add the stream commands to ``app``."""
    app.command("publish")(publish)
    app.command("stream")(stream)


def kafka_options(values: list[str] | None) -> dict[str, str]:
    """Read ``--kafka-option KEY=VALUE`` values.

    Raises:
        ValidationError: If one is not ``KEY=VALUE`` or a key is given twice.
    """
    options: dict[str, str] = {}
    for value in values or []:
        key, sep, setting = value.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(
                f"--kafka-option must be KEY=VALUE (such as session.timeout.ms=6000), got "
                f"{value!r}",
                field="kafka_option",
            )
        if key in options:
            raise ValidationError(
                f"--kafka-option gives {key!r} twice; give each property once",
                field="kafka_option",
            )
        options[key] = setting
    return options


def publish(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table whose stream to publish to.")],
    file: Annotated[
        str,
        typer.Argument(
            help="A .parquet or .csv file (a local path or a URL) with the stream source's "
            "columns.",
            metavar="FILE",
        ),
    ],
    kafka_option: KafkaOption = None,
    output: Annotated[
        OutputFormat,
        output_option("How to print the report: a line of text (table), or JSON (json)."),
    ] = OutputFormat.TABLE,
) -> None:
    """Validate FILE as ingest does and send its rows to TABLE's topic, one message per row.

    Nothing is sent unless every row is valid; the messages are sent in one Kafka transaction,
    keyed by entity key, in the stream source's format.
    """
    options = kafka_options(kafka_option)
    report = make_client(ctx).publish(table, file, kafka_config=options)
    if output is OutputFormat.JSON:
        print_json({"table": report.table, "topic": report.topic, "messages": report.messages})
        return
    show_message(
        f"published {report.messages} message{'s' if report.messages != 1 else ''} to topic "
        f"{report.topic} of {report.table}"
    )


def stream(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table whose stream to consume.")],
    group_id: Annotated[
        str | None,
        typer.Option(
            "--group-id",
            help="The Kafka consumer group (default potluck.PROJECT.TABLE); processes of one "
            "group share the topic's partitions.",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", help="The most messages in one micro-batch (65536).", min=1),
    ] = None,
    batch_interval: Annotated[
        float | None,
        typer.Option(
            "--batch-interval",
            help="Seconds a micro-batch gathers messages once it has a first one, unless it "
            "fills first (0.02).",
        ),
    ] = None,
    kafka_option: KafkaOption = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve the job's Prometheus metrics on http://127.0.0.1:PORT/metrics.",
            min=0,
            max=65535,
        ),
    ] = None,
    output: Annotated[
        OutputFormat,
        output_option(
            "How to print the job's outcome when it stops: a line of text (table), or its "
            "record as JSON (json)."
        ),
    ] = OutputFormat.TABLE,
) -> None:
    """Consume TABLE's stream source into the online store until stopped.

    Offsets are committed only after each micro-batch is written. SIGTERM or Ctrl-C stops it
    cleanly: the micro-batch in hand is written and committed, then it exits 0; a restart
    resumes from the committed offsets. Bad messages are counted (and dead-lettered), never
    fatal; unreachable brokers or stores are retried and reported as warnings.
    """
    options = kafka_options(kafka_option)
    client = make_client(ctx)
    metrics, server = _serve_metrics(metrics_port)
    try:
        with _stop_signals() as stop:
            job = client.start_stream_to_online_ingestion(
                table,
                group_id=group_id,
                batch_size=batch_size,
                batch_interval=batch_interval,
                kafka_config=options,
            )
            metrics.job = job
            # What exists now (modules, the clients, the store) lives as long as the process:
            # keep it out of the collector's full passes, which otherwise stop the job (GIL
            # held) for 100-400 ms on a loaded machine once in a while, the freshness tail's
            # largest part.
            gc.freeze()
            record = _follow(job, stop)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    if record.status is JobStatus.FAILED:
        fail(f"job {record.id} failed: {record.error}", EXIT_FAILURE)
    if output is OutputFormat.JSON:
        print_json(describe(record))
        return
    stats = record.stats
    bad = ", ".join(f"{k} {v}" for k, v in sorted(record.bad_messages.items()))
    show_message(
        f"job {record.id} stopped: {stats.rows_read} messages read, {stats.rows_written} "
        f"written, {stats.rows_skipped} skipped, {stats.rows_rejected} bad"
        + (f" ({bad})" if bad else "")
    )


def _serve_metrics(port: int | None) -> tuple[StreamJobMetrics, Any]:
    """Bind the metrics endpoint (``port`` ``None``: none) and say on stderr where it listens.

    Bound before the job starts, so a port in use records no job.
    """
    from potluck.ingestion.stream.metrics import StreamJobMetrics, serve_metrics

    metrics = StreamJobMetrics()
    if port is None:
        return metrics, None
    try:
        server = serve_metrics(metrics, port, METRICS_HOST)
    except OSError as exc:
        fail(
            f"cannot serve metrics on {METRICS_HOST}:{port}: {exc.strerror or exc}; pick another "
            "--metrics-port (0: any free port)",
            EXIT_FAILURE,
        )
    host, bound = server.server_address[:2]
    typer.echo(f"serving metrics on http://{host}:{bound}/metrics", err=True)
    return metrics, server


class _Stop:
    """Whether a stop signal arrived."""

    def __init__(self) -> None:
        self.requested = threading.Event()

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.requested.set()


@contextmanager
def _stop_signals() -> Iterator[_Stop]:
    """Turn SIGTERM and SIGINT into a stop request (main thread only), then restore them."""
    stop = _Stop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.default_int_handler if handler is None else handler)


def _follow(job: IngestionJob, stop: _Stop) -> Job:
    """Wait until the job ends, asking it to stop once a stop signal arrives."""
    asked = False
    while True:
        record = job.record()
        if record.status.is_terminal:
            return record
        if stop.requested.is_set() and not asked:
            job.cancel()
            asked = True
        time.sleep(FOLLOW_INTERVAL)


__all__ = ["FOLLOW_INTERVAL", "METRICS_HOST", "STOP_SIGNALS", "kafka_options", "register"]
