"""The control loop: exactly one stream-to-online job per feature table with a stream source.

One Job Service replica at a time runs it: each pass first takes or renews the registry lease
``control_loop`` (:meth:`~potluck.registry.base.Registry.acquire_lease`, valid for three
intervals); a replica that does not hold it does nothing. The holder then compares, per table:

- *wanted*: every feature table with a stream source, in every project that is not archived,
  with the fingerprint of its definition (:func:`fingerprint`: entities, features, ``max_age``,
  the sources; not labels);
- *running*: the stream jobs of the table that have not ended, as readers see them (a job
  whose heartbeat stopped is lost, so ``FAILED``: ended).

A running job is kept if its table is wanted, it carries the table's current fingerprint and
no one asked it to stop. A job started by hand (``potluck stream``, ``Client.
start_stream_to_online_ingestion``: it carries no fingerprint) is *adopted* rather than replaced
when it runs fine for the table's current definition: it is ``RUNNING`` with no warning, and it
was created after the table's latest revision was applied (a stream job reads the definition
when it starts). Adopting writes the side record ``<job id>~adopted`` holding the fingerprint,
and from then on the job counts as the table's one job, compared by that fingerprint like any
other. A job started by hand that is still ``PENDING`` is left alone for one more pass. Every
other running job is cancelled (a removed table or stream source, a changed definition, a job
started by hand before the latest change or not running well, a second job). A wanted table with
no running job at all gets a new one; while a cancelled job is still ending, none is started, so
two never run at once. A job that died or was cancelled is thus replaced within one interval
once it has ended (a job whose process died: once its heartbeat timeout has passed).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from potluck.definitions.feature_table import FeatureTable
from potluck.definitions.serde import KIND_FEATURE_TABLE, to_dict
from potluck.ingestion.jobs import (
    ADOPTED_SUFFIX,
    STREAM_TO_ONLINE,
    Job,
    JobStatus,
    list_jobs,
    utc_now,
)
from potluck.jobservice.periodic import Periodic
from potluck.registry.base import JobRecord, Registry

logger = logging.getLogger(__name__)

LEASE = "control_loop"
"""The name of the registry lease the active control loop holds."""

LEASE_INTERVALS = 3
"""The lease lasts this many intervals, so a replica that stopped is replaced after it."""

StartStream = Callable[[str, str, str], Job]
"""Starts a stream job for (project, table, fingerprint)."""

CancelJob = Callable[[Job], None]
"""Asks a job to stop."""


def fingerprint(table: FeatureTable) -> str:
    """Return what a stream job of ``table`` depends on, hashed (hex SHA-256, 16 characters)."""
    spec = to_dict(table)
    spec.pop("labels", None)
    text = json.dumps(spec, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pass:
    """What one pass did.

    Attributes:
        leader: Whether this replica held the lease (else it did nothing).
        started: The jobs it started.
        cancelled: The jobs it asked to stop.
        adopted: The jobs started by hand that it adopted (recorded their fingerprint).
    """

    leader: bool
    started: tuple[Job, ...] = ()
    cancelled: tuple[Job, ...] = ()
    adopted: tuple[Job, ...] = ()


class ControlLoop(Periodic):
    """Keeps one stream job per table with a stream source; see the module docstring.

    Args:
        registry: Where definitions, job records and the lease are.
        start: Starts a stream job carrying a fingerprint.
        cancel: Asks a job to stop.
        holder: This replica's id (the lease's holder).
        interval: Seconds between two passes (in :meth:`start`'s thread).
    """

    thread_name = "potluck-control-loop"
    failure = "the control loop's pass failed; it tries again"

    def __init__(
        self,
        registry: Registry,
        *,
        start: StartStream,
        cancel: CancelJob,
        holder: str,
        interval: float,
    ) -> None:
        self._registry = registry
        self._start = start
        self._cancel = cancel
        self._holder = holder
        super().__init__(interval)

    def run_once(self) -> Pass:
        """Take or renew the lease, then start and cancel jobs as the module docstring says."""
        ttl = timedelta(seconds=self.interval * LEASE_INTERVALS)
        if not self._registry.acquire_lease(LEASE, self._holder, ttl):
            return Pass(leader=False)
        wanted: dict[tuple[str, str], str] = {}
        running: dict[tuple[str, str], list[Job]] = {}
        prints: dict[str, str] = {}  # job id -> the fingerprint it runs, as recorded
        for project in self._registry.list_projects():
            for table in self._registry.list(project.name, KIND_FEATURE_TABLE):
                if isinstance(table, FeatureTable) and table.stream_source is not None:
                    wanted[(project.name, table.name)] = fingerprint(table)
            prints.update(_adoptions(self._registry.list_jobs(project.name)))
            for job in list_jobs(self._registry, project.name):
                if job.spec.kind == STREAM_TO_ONLINE and not job.status.is_terminal:
                    running.setdefault((project.name, job.spec.table), []).append(job)
                    if job.spec.fingerprint is not None:
                        prints[job.id] = job.spec.fingerprint
        started: list[Job | None] = []
        cancelled: list[Job] = []
        adopted: list[Job] = []
        for key, jobs in running.items():
            print_ = wanted.get(key)
            hand = self._by_hand(key, jobs, prints) if print_ is not None else Hand()
            keep = _keeper(jobs, print_, prints, hand.fine)
            if keep is not None and keep.id not in prints:
                self._adopt(keep, print_ or "")
                adopted.append(keep)
            for job in jobs:
                leave = keep is None and job in hand.starting
                if job is not keep and not leave and not job.cancel_requested:
                    self._cancel(job)
                    cancelled.append(job)
        for key, print_ in wanted.items():
            if not running.get(key):
                started.append(self._start_quietly(key, print_))
        return Pass(
            True, tuple(j for j in started if j is not None), tuple(cancelled), tuple(adopted)
        )

    def _by_hand(self, key: tuple[str, str], jobs: list[Job], prints: dict[str, str]) -> Hand:
        """Sort a table's jobs started by hand after its latest change: running fine, starting."""
        hand = [j for j in jobs if j.id not in prints and not j.cancel_requested]
        if not hand:
            return Hand()
        history = self._registry.history(key[0], KIND_FEATURE_TABLE, key[1])
        changed = history[-1].applied_at if history else None
        current = [j for j in hand if changed is None or j.created_at >= changed]
        return Hand(
            fine=tuple(j for j in current if j.status is JobStatus.RUNNING and j.warning is None),
            starting=tuple(j for j in current if j.status is JobStatus.PENDING),
        )

    def _adopt(self, job: Job, print_: str) -> None:
        """Record that ``job`` (started by hand) is the table's one job, running ``print_``."""
        body = {
            "adopted": job.id,
            "fingerprint": print_,
            "holder": self._holder,
            "adopted_at": utc_now().isoformat(),
        }
        self._registry.put_job(
            JobRecord(project=job.spec.project, id=job.id + ADOPTED_SUFFIX, body=body)
        )
        logger.info(
            "control loop: adopted stream job %s of %s/%s (started by hand)",
            job.id,
            job.spec.project,
            job.spec.table,
        )

    def _start_quietly(self, key: tuple[str, str], print_: str) -> Job | None:
        project, table = key
        try:
            job = self._start(project, table, print_)
        except Exception as exc:
            message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            logger.warning("control loop: cannot start the stream job of %s/%s: %s", *key, message)
            return None
        logger.info("control loop: started stream job %s for %s/%s", job.id, project, table)
        return job

    def stop(self) -> None:
        """Stop the thread and give the lease up, so another replica takes over at once."""
        started = self._thread is not None
        super().stop()
        if started:
            try:
                self._registry.release_lease(LEASE, self._holder)
            except Exception:
                logger.warning("control loop: giving the lease up failed", exc_info=True)


@dataclass(frozen=True)
class Hand:
    """A table's stream jobs started by hand after its latest change.

    Attributes:
        fine: Those ``RUNNING`` with no warning: they may be adopted.
        starting: Those still ``PENDING``: left alone for one more pass.
    """

    fine: tuple[Job, ...] = ()
    starting: tuple[Job, ...] = ()


def _adoptions(records: list[JobRecord]) -> dict[str, str]:
    """Return the fingerprint each adopted job runs, by job id, from the adoption records."""
    return {
        str(r.body["adopted"]): str(r.body["fingerprint"])
        for r in records
        if r.id.endswith(ADOPTED_SUFFIX) and "adopted" in r.body and "fingerprint" in r.body
    }


def _keeper(
    jobs: list[Job], wanted: str | None, prints: dict[str, str], adoptable: tuple[Job, ...]
) -> Job | None:
    """Return the job to keep among a table's running jobs: the oldest current or adoptable."""
    if wanted is None:
        return None
    current = [j for j in jobs if prints.get(j.id) == wanted and not j.cancel_requested]
    return min([*current, *adoptable], key=lambda j: j.id, default=None)


__all__ = ["LEASE", "ControlLoop", "Hand", "Pass", "fingerprint"]
