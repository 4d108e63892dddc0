"""The PySpark entry point of offline-to-online jobs: ``spark-submit offline_to_online.py SPEC``.

The Spark engine launches it with the path of a job spec (:mod:`.spec`), which this driver reads
and deletes. It claims its jobs' records (:class:`~.records.DriverRecords`: heartbeats, cancel
requests, the lost rule), starts the Spark session, records the application id, then runs the
loads one after another (:func:`~.load.load_table`), each in a Spark job group of its own: a
cancel request for a job cancels its group, which ends its Spark work at once. Each job ends
``SUCCEEDED`` with its counts, ``CANCELLED``, or ``FAILED`` with a one-line error (a data error
an executor met, naming the file and column, or a store's
:class:`~potluck.errors.PotluckError`, comes back as itself; Spark's JVM stack traces stay in
the log). The process exits 0 unless a job failed.

This module is its own process's composition root: it builds the registry and the online store
from the spec, as the client does from settings.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from potluck import plugins
from potluck.errors import PotluckError
from potluck.ingestion.jobs import JobStats, JobStatus, utc_now
from potluck.ingestion.spark_jobs.load import StatsParam, load_table
from potluck.ingestion.spark_jobs.records import DriverRecords, failure_text
from potluck.ingestion.spark_jobs.spec import ApplicationSpec, TableLoad, read_spec
from potluck.offline.spark.session import spark_errors, start_session
from potluck.online.base import OnlineStore

try:
    from pyspark.sql import SparkSession
except ImportError as exc:  # pragma: no cover - pyspark is the spark extra
    from potluck.errors import PluginDependencyError

    raise PluginDependencyError(
        "the Spark engine needs pyspark; run: pip install 'potluck[spark]'",
        plugin="spark",
        extra="spark",
    ) from exc

logger = logging.getLogger("potluck.spark_job")


def main(argv: Sequence[str]) -> int:
    """Run the application whose spec file is ``argv[0]``; return the process's exit code."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    spec = read_spec(argv[0])
    registry = spec.registry.open()
    records = DriverRecords(
        registry,
        [(load.project, load.job_id) for load in spec.loads],
        spec.progress_interval,
        timedelta(seconds=spec.heartbeat_timeout),
    )
    try:
        records.claim()
        return _run(spec, records)
    finally:
        records.close()
        registry.close()


def _run(spec: ApplicationSpec, records: DriverRecords) -> int:
    try:
        spark = start_session(spec.settings, spec.name)
    except PotluckError as exc:
        records.fail_all(exc.message)
        return 1
    store: OnlineStore | None = None
    try:
        application = spark.sparkContext.applicationId
        logger.info("Spark application %s runs %d job(s)", application, len(spec.loads))
        records.update_all(application_id=application)
        store = plugins.create(plugins.ONLINE_STORES, spec.online_store)
        results = [_run_load(spark, store, spec, load, records) for load in spec.loads]
        return 0 if all(results) else 1
    except Exception as exc:  # noqa: BLE001 - every job still running ends with the reason
        records.fail_all(failure_text(exc))
        logger.exception("the application failed")
        return 1
    finally:
        if store is not None:
            store.close()
        spark.stop()


def _run_load(
    spark: SparkSession,
    store: OnlineStore,
    spec: ApplicationSpec,
    load: TableLoad,
    records: DriverRecords,
) -> bool:
    """Run one job; return whether it did not fail."""
    job_id = load.job_id
    records.check(job_id)
    if not records.active(job_id):
        return True
    if records.stopping(job_id):
        records.finish(job_id, status=JobStatus.CANCELLED)
        return True
    context = spark.sparkContext
    progress = context.accumulator(JobStats(), StatsParam())
    context.setJobGroup(job_id, f"potluck offline-to-online {load.table.name}", True)
    records.update(job_id, status=JobStatus.RUNNING, started_at=utc_now())
    records.follow(job_id, progress=lambda: progress.value, stop=_cancel(spark, job_id))
    logger.info("job %s: loading %s from %d file(s)", job_id, load.table.name, len(load.paths))
    try:
        with spark_errors(f"loading feature table {load.table.name!r}"):
            store.ensure_table(load.project, load.table)
            outcome = load_table(spark, load, records.job(job_id).spec, spec.online_store, progress)
    except Exception as exc:  # noqa: BLE001 - the record says why; the next job runs
        if records.stopping(job_id):
            records.finish(job_id, status=JobStatus.CANCELLED, stats=progress.value)
            logger.info("job %s: cancelled", job_id)
            return True
        records.finish(job_id, status=JobStatus.FAILED, error=failure_text(exc))
        logger.warning("job %s failed", job_id, exc_info=True)
        return False
    records.finish(
        job_id,
        status=JobStatus.SUCCEEDED,
        stats=outcome.stats,
        max_ingestion_id=outcome.max_ingestion_id,
        max_event_timestamp_us=outcome.max_event_timestamp_us,
    )
    logger.info("job %s: %s", job_id, outcome.stats)
    return True


def _cancel(spark: SparkSession, job_id: str) -> Callable[[], None]:
    def cancel() -> None:
        spark.sparkContext.cancelJobGroup(job_id)

    return cancel


if __name__ == "__main__":
    # Run as a script by spark-submit: import the package's module, so the functions shipped to
    # executors are pickled by reference to importable modules.
    from potluck.ingestion.spark_jobs.offline_to_online import main as _main

    sys.exit(_main(sys.argv[1:]))
