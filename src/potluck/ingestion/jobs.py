"""Ingestion job specs and records: what a job was asked to do and what it did, as data.

A job record is stored through the Registry (``put_job``/``get_job``/``list_jobs``) as a JSON
body, so any process that reaches the registry sees every job: the CLI lists jobs another process
runs, and serving reads ``table`` and ``max_event_timestamp_us`` from the bodies to report
feature freshness.

Only the process running a job writes its record. Another process asks it to stop by writing a
separate *cancel request* record (id ``<job id>~cancel``), which the runner polls; so the two
never overwrite each other's writes.

While a job runs, its runner rewrites the record on a timer (a *heartbeat*: ``updated_at``). A
job that has not ended and whose heartbeat is older than its ``heartbeat_timeout`` (the timeout of
the engine that runs it, stored in its record so every reader judges alike) is *lost*: its
process died or hung. :func:`load_job` and :func:`list_jobs`, and so every reader built on them,
return a lost job as ``FAILED`` with the error ``lost: no heartbeat since <time> (its process
died or hung)`` (see :func:`observed`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from potluck._redact import redact_text, redact_url
from potluck.errors import DecodeError, NotFoundError, ValidationError
from potluck.registry.base import JobRecord, Registry

_log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from potluck.offline.base import SourceVersion

JobKind = Literal["offline_to_online", "stream_to_online", "historical_retrieval"]
"""What a job does."""

OFFLINE_TO_ONLINE: JobKind = "offline_to_online"
STREAM_TO_ONLINE: JobKind = "stream_to_online"
"""A job that consumes the table's stream source into the online store until it is stopped."""
HISTORICAL_RETRIEVAL: JobKind = "historical_retrieval"
"""A job that writes a training set (a point-in-time join) as Parquet to a folder; the Job
Service runs it (its ``table`` is ``""``: it reads every table its feature references name)."""

DEFAULT_BATCH_INTERVAL = 0.02
"""Seconds a stream job's micro-batch gathers messages once it has a first one."""

CANCEL_SUFFIX = "~cancel"
"""Suffix of the id of a job's cancel request record."""

ADOPTED_SUFFIX = "~adopted"
"""Suffix of the id of the record a Job Service's control loop writes when it adopts a stream
job started by hand (the fingerprint of the definition it runs); not a job."""

DEFAULT_HEARTBEAT_TIMEOUT = timedelta(seconds=60)
"""How old a running job's heartbeat may get before readers call it lost, for records that do not
name their own timeout."""


class JobStatus(str, Enum):
    """Where a job is in its life."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        """Whether the job has ended (succeeded, failed or was cancelled)."""
        return self in _TERMINAL


_TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What a job is asked to do.

    Attributes:
        kind: The job's kind.
        project: The feature table's project.
        table: The feature table's name.
        start: Read source rows with ``event_timestamp >= start`` (``None``: no lower bound).
        end: Read source rows with ``event_timestamp < end`` (``None``: no upper bound).
        since_last: Read only rows committed to the batch source after the version the
            previous successful ``since_last`` jobs of this table read up to (the watermark,
            see :func:`watermark`).
        full: Reload: rewrite stored values even when the rows read are not newer (equal rows
            are written again; a strictly newer stored value still wins), so values stored
            under an older definition follow the current one. Not with ``since_last``.
        batch_size: Rows per Arrow batch read from the source (bounds the job's memory); for a
            stream job, the most messages in one micro-batch.
        group_id: Stream jobs: the Kafka consumer group (``None``:
            ``potluck.<project>.<table>``); every process running a job of one group shares
            the topic's partitions.
        batch_interval: Stream jobs: how long, in seconds, a micro-batch gathers messages once
            it has a first one, unless it fills first (the latency it adds to a quiet stream).
        fingerprint: Stream jobs a Job Service's control loop started: the fingerprint of the
            table definition the job runs (a changed definition restarts the job).
        feature_refs: Historical retrieval: the feature references joined.
        entity_source: Historical retrieval: the entity rows (a ``.parquet``/``.csv`` path or
            URL).
        output_location: Historical retrieval: the folder the training set is written to.
        full_feature_names: Historical retrieval: name feature columns ``table__feature``
            (else the bare feature name).
    """

    kind: JobKind = OFFLINE_TO_ONLINE
    project: str
    table: str
    start: datetime | None = None
    end: datetime | None = None
    since_last: bool = False
    full: bool = False
    batch_size: int = 65_536
    group_id: str | None = None
    batch_interval: float = DEFAULT_BATCH_INTERVAL
    fingerprint: str | None = None
    feature_refs: tuple[str, ...] = ()
    entity_source: str | None = None
    output_location: str | None = None
    full_feature_names: bool = True

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, datetime):
                raise ValidationError(
                    f"{name} must be a datetime or None, got {value!r}", field=name
                )
            if isinstance(value, datetime) and value.tzinfo is None:
                object.__setattr__(self, name, value.replace(tzinfo=timezone.utc))
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValidationError(
                f"start ({self.start.isoformat()}) must be before end ({self.end.isoformat()})",
                field="start",
            )
        if self.since_last and (self.start is not None or self.end is not None):
            raise ValidationError(
                "since_last cannot be combined with start or end: a since-last job loads every "
                "row committed since the previous one, and a range would leave the rest behind "
                "for good; drop the range, or run a ranged job without since_last",
                field="since_last",
            )
        if self.full and self.since_last:
            raise ValidationError(
                "full and since_last cannot be combined: a full reload reads every row of the "
                "batch source (within start and end); drop one of them",
                field="full",
            )
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValidationError(
                f"batch_size must be a positive integer, got {self.batch_size!r}",
                field="batch_size",
            )
        if self.kind == STREAM_TO_ONLINE:
            _check_stream_spec(self)
        if self.kind == HISTORICAL_RETRIEVAL:
            _check_retrieval_spec(self)


def _check_stream_spec(spec: JobSpec) -> None:
    """Refuse what a stream job cannot do: ranges and since-last/full reads, bad intervals."""
    for name in ("start", "end", "since_last", "full"):
        if getattr(spec, name):
            raise ValidationError(
                f"{name} does not apply to a stream job: it reads the topic from the offsets its "
                "consumer group committed",
                field=name,
            )
    interval = spec.batch_interval
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or not interval > 0:
        raise ValidationError(
            f"batch_interval must be a positive number of seconds, got {interval!r}",
            field="batch_interval",
        )
    if spec.group_id is not None and (not isinstance(spec.group_id, str) or not spec.group_id):
        raise ValidationError(
            f"group_id must be a non-empty consumer group name, got {spec.group_id!r}",
            field="group_id",
        )


def _check_retrieval_spec(spec: JobSpec) -> None:
    """Refuse a historical retrieval without references, entity rows or an output folder."""
    object.__setattr__(spec, "feature_refs", tuple(spec.feature_refs))
    if not spec.feature_refs:
        raise ValidationError(
            "feature_refs is empty: name at least one feature, such as driver_stats:trips",
            field="feature_refs",
        )
    for name in ("entity_source", "output_location"):
        value = getattr(spec, name)
        if not isinstance(value, str) or not value:
            raise ValidationError(
                f"{name} must be a path or URL, got {value!r}",
                field=name,
            )


@dataclass(frozen=True)
class JobStats:
    """Row counts of a job; ``rows_read == rows_written + rows_skipped + rows_rejected``.

    An offline-to-online job reads its range in batches and counts a batch once its write has
    ended, so the counts add up in every record, also while it runs and when it stops early.
    Within a batch each key is written at most once (its newest row), so ``rows_written`` is at
    most the sum over batches of the distinct keys of each batch. A key whose rows fall in
    several batches is written once per batch whose newest row for it beats what the store
    holds by then, so ``rows_written`` may exceed the number of distinct keys in the range.

    Attributes:
        rows_read: Source rows read.
        rows_written: Rows the online store took: per batch, the newest row of a key, when it
            was newer than what the store held (with ``full``: not older).
        rows_skipped: Rows not written: superseded by a newer row of the same key in the same
            batch, not newer than what the store already held (with ``full``: older), or
            expired already (``event_timestamp + max_age`` before now).
        rows_rejected: Rows that cannot be written (a null entity key or event time).
    """

    rows_read: int = 0
    rows_written: int = 0
    rows_skipped: int = 0
    rows_rejected: int = 0

    def __add__(self, other: JobStats) -> JobStats:
        return JobStats(
            self.rows_read + other.rows_read,
            self.rows_written + other.rows_written,
            self.rows_skipped + other.rows_skipped,
            self.rows_rejected + other.rows_rejected,
        )


@dataclass(frozen=True, kw_only=True)
class Job:
    """The record of one job.

    Attributes:
        id: The job's id (time-sortable).
        spec: What the job was asked to do.
        engine: The engine type that runs it.
        status: Where it is.
        stats: What it has read, written, skipped and rejected so far.
        created_at: When it was submitted.
        started_at: When it started running.
        finished_at: When it ended.
        updated_at: When its record was last written: its heartbeat while it runs.
        heartbeat_timeout: How old its heartbeat may get, while it has not ended, before readers
            call it lost (``FAILED``); its engine's setting.
        error: Why it failed.
        since_version: The source version it read after (``since_last`` runs with a
            watermark), or ``None`` for all committed rows.
        source_id: Which batch source it read: location and table id (see
            :class:`~potluck.offline.base.SourceVersion`).
        source_version: The source version it read up to (its snapshot), or ``None`` for a
            plain Parquet folder (which has no versions and is read whole).
        max_ingestion_id: The greatest ``ingestion_id`` among the rows it read.
        max_event_timestamp_us: The newest event time it sent to the online store, in
            microseconds since the epoch.
        cancel_requested: Its runner has seen a request to stop it (it stops at the next batch).
        rows_total: How many rows the files it reads hold within its range, counted from their
            metadata when it starts (an upper bound when ``start``/``end`` cut through a Parquet
            row group; ``None`` until counted): the total of its progress.
        bad_messages: Stream jobs: the bad messages so far per reason (``undecodable``,
            ``schema_violation``, ``null_key``, ...); they add up to ``rows_rejected``.
        warning: Stream jobs: why the job is not making progress right now (a broker or store
            it cannot reach; it keeps retrying), ``None`` while all is well.
        partitions: Stream jobs: the topic partitions its consumer holds now.
        application_id: The id of the Spark application that runs it (``engine: spark``), once
            its driver has started; ``None`` for other engines.
        log_location: Where the output of the process that runs it goes (``engine: spark``:
            spark-submit's log file); ``None`` for other engines.
    """

    id: str
    spec: JobSpec
    engine: str
    status: JobStatus = JobStatus.PENDING
    stats: JobStats = field(default_factory=JobStats)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT
    error: str | None = None
    since_version: int | None = None
    source_id: str | None = None
    source_version: int | None = None
    max_ingestion_id: str | None = None
    max_event_timestamp_us: int | None = None
    cancel_requested: bool = False
    rows_total: int | None = None
    bad_messages: dict[str, int] = field(default_factory=dict)
    warning: str | None = None
    partitions: tuple[int, ...] = ()
    application_id: str | None = None
    log_location: str | None = None

    @classmethod
    def new(
        cls,
        spec: JobSpec,
        engine: str,
        *,
        heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> Job:
        """Return the record of a job about to be submitted (``PENDING``, with a fresh id)."""
        now = utc_now()
        return cls(
            id=f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex[:8]}",
            spec=spec,
            engine=engine,
            created_at=now,
            updated_at=now,
            heartbeat_timeout=heartbeat_timeout,
        )

    def evolve(self, **changes: Any) -> Job:
        """Return a copy with ``changes`` applied and ``updated_at`` set to now."""
        return replace(self, updated_at=utc_now(), **changes)

    def to_record(self) -> JobRecord:
        """Return the registry record of this job."""
        spec = self.spec
        body: dict[str, Any] = {
            "kind": spec.kind,
            "table": spec.table,
            "start": _iso(spec.start),
            "end": _iso(spec.end),
            "since_last": spec.since_last,
            "full": spec.full,
            "batch_size": spec.batch_size,
            "engine": self.engine,
            "status": self.status.value,
            "rows_read": self.stats.rows_read,
            "rows_written": self.stats.rows_written,
            "rows_skipped": self.stats.rows_skipped,
            "rows_rejected": self.stats.rows_rejected,
            "created_at": _iso(self.created_at),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "updated_at": _iso(self.updated_at),
            "heartbeat_timeout": self.heartbeat_timeout.total_seconds(),
            "error": _masked_text(self.error),
            "since_version": self.since_version,
            "source_id": _masked_url(self.source_id),
            "source_version": self.source_version,
            "max_ingestion_id": self.max_ingestion_id,
            "max_event_timestamp_us": self.max_event_timestamp_us,
            "cancel_requested": self.cancel_requested,
            "rows_total": self.rows_total,
        }
        # Only engines that run jobs in other processes set these: local records stay as they were.
        if self.application_id is not None:
            body["application_id"] = self.application_id
        if self.log_location is not None:
            body["log_location"] = _masked_url(self.log_location)
        if spec.kind == STREAM_TO_ONLINE:
            body.update(
                group_id=spec.group_id,
                batch_interval=spec.batch_interval,
                bad_messages=dict(sorted(self.bad_messages.items())),
                warning=_masked_text(self.warning),
                partitions=list(self.partitions),
            )
            if spec.fingerprint is not None:
                body["fingerprint"] = spec.fingerprint
        if spec.kind == HISTORICAL_RETRIEVAL:
            body.update(
                feature_refs=list(spec.feature_refs),
                entity_source=_masked_url(spec.entity_source),
                output_location=_masked_url(spec.output_location),
                full_feature_names=spec.full_feature_names,
            )
        return JobRecord(project=spec.project, id=self.id, body=body)

    @classmethod
    def from_record(cls, record: JobRecord) -> Job:
        """Return the job a registry record holds.

        Raises:
            DecodeError: If the record is not a job record potluck wrote (a field is missing
                or has the wrong type: written through Core's ``PutJob`` by another program).
        """
        try:
            return cls._from_body(record)
        except (KeyError, TypeError, ValueError, AttributeError, ValidationError) as exc:
            problem = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise DecodeError(
                f"job record {record.id!r} of project {record.project!r} cannot be read "
                f"({problem}); it was not written by potluck: delete it from the registry's "
                "jobs table",
                job_id=record.id,
            ) from None

    @classmethod
    def _from_body(cls, record: JobRecord) -> Job:
        body = record.body
        spec = JobSpec(
            kind=body.get("kind", OFFLINE_TO_ONLINE),
            project=record.project,
            table=body["table"],
            start=_dt(body.get("start")),
            end=_dt(body.get("end")),
            since_last=bool(body.get("since_last", False)),
            full=bool(body.get("full", False)),
            batch_size=int(body.get("batch_size", 65_536)),
            group_id=body.get("group_id"),
            batch_interval=float(body.get("batch_interval", DEFAULT_BATCH_INTERVAL)),
            fingerprint=body.get("fingerprint"),
            feature_refs=tuple(str(r) for r in body.get("feature_refs") or ()),
            entity_source=body.get("entity_source"),
            output_location=body.get("output_location"),
            full_feature_names=bool(body.get("full_feature_names", True)),
        )
        created = _dt(body.get("created_at"))
        return cls(
            id=record.id,
            spec=spec,
            engine=str(body.get("engine", "local")),
            status=JobStatus(body.get("status", JobStatus.PENDING.value)),
            stats=JobStats(
                int(body.get("rows_read", 0)),
                int(body.get("rows_written", 0)),
                int(body.get("rows_skipped", 0)),
                int(body.get("rows_rejected", 0)),
            ),
            created_at=created or datetime.fromtimestamp(0, tz=timezone.utc),
            started_at=_dt(body.get("started_at")),
            finished_at=_dt(body.get("finished_at")),
            updated_at=_dt(body.get("updated_at")),
            heartbeat_timeout=_seconds(body.get("heartbeat_timeout")),
            error=_masked_text(body.get("error")),
            since_version=_int_or_none(body.get("since_version")),
            source_id=_masked_url(body.get("source_id")),
            source_version=_int_or_none(body.get("source_version")),
            max_ingestion_id=body.get("max_ingestion_id"),
            max_event_timestamp_us=body.get("max_event_timestamp_us"),
            cancel_requested=bool(body.get("cancel_requested", False)),
            rows_total=_int_or_none(body.get("rows_total")),
            bad_messages={str(k): int(v) for k, v in (body.get("bad_messages") or {}).items()},
            warning=_masked_text(body.get("warning")),
            partitions=tuple(int(p) for p in body.get("partitions") or ()),
            application_id=body.get("application_id"),
            log_location=_masked_url(body.get("log_location")),
        )


def _masked_text(text: str | None) -> str | None:
    """Return a record's message with the credentials of every URL in it masked.

    Records are masked when written and when read (records written before masking existed).
    """
    return None if text is None else redact_text(text)


def _masked_url(url: str | None) -> str | None:
    return None if url is None else redact_url(url)


def utc_now() -> datetime:
    """Return the current time, UTC."""
    return datetime.now(timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _dt(value: object) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _seconds(value: object) -> timedelta:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return timedelta(seconds=value)
    return DEFAULT_HEARTBEAT_TIMEOUT


def last_heartbeat(job: Job) -> datetime:
    """Return when ``job``'s runner last wrote its record (its creation if never since)."""
    return job.updated_at or job.created_at


def lost_error(heartbeat: datetime) -> str:
    """Return the error of a job whose last heartbeat was at ``heartbeat``."""
    when = heartbeat.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"lost: no heartbeat since {when} (its process died or hung)"


def observed(job: Job, now: datetime | None = None) -> Job:
    """Return ``job`` as readers see it at ``now`` (default: the current time).

    A job that has not ended and whose heartbeat is older than its ``heartbeat_timeout`` is
    lost: it is returned ``FAILED`` with the error :func:`lost_error` gives and ``finished_at``
    its last heartbeat, the last moment it is known to have run, so every reader at any time
    sees the same end (its stored record is left as it is). Any other job is returned
    unchanged.
    """
    if job.status.is_terminal:
        return job
    heartbeat = last_heartbeat(job)
    if (now or utc_now()) - heartbeat <= job.heartbeat_timeout:
        return job
    return replace(job, status=JobStatus.FAILED, error=lost_error(heartbeat), finished_at=heartbeat)


def save_job(registry: Registry, job: Job) -> None:
    """Create or replace ``job``'s record."""
    registry.put_job(job.to_record())


def load_job(registry: Registry, project: str, job_id: str) -> Job:
    """Return the job ``job_id`` of ``project`` as readers see it (a lost job is ``FAILED``).

    Raises:
        NotFoundError: If there is no such job.
    """
    return observed(Job.from_record(registry.get_job(project, job_id)))


def list_jobs(registry: Registry, project: str, *, table: str | None = None) -> list[Job]:
    """Return the project's jobs, newest first, optionally only those of ``table``.

    Jobs are returned as readers see them: a lost job is ``FAILED`` (see :func:`observed`).
    """
    records = registry.list_jobs(project)
    now = utc_now()
    side_records = (CANCEL_SUFFIX, ADOPTED_SUFFIX)
    jobs = []
    for record in records:
        if record.id.endswith(side_records):
            continue
        try:
            jobs.append(observed(Job.from_record(record), now))
        except DecodeError as exc:  # one foreign record must not hide every other job
            _log.warning("%s", exc)
    jobs.sort(key=lambda j: j.id, reverse=True)
    return [j for j in jobs if table is None or j.spec.table == table]


def request_cancel(registry: Registry, project: str, job_id: str) -> None:
    """Ask the process running job ``job_id`` to stop it (it polls :func:`cancel_requested`)."""
    registry.put_job(
        JobRecord(
            project=project,
            id=job_id + CANCEL_SUFFIX,
            body={"cancel_for": job_id, "requested_at": _iso(utc_now())},
        )
    )


def cancel_requested(registry: Registry, project: str, job_id: str) -> bool:
    """Return whether someone asked to stop job ``job_id``."""
    try:
        registry.get_job(project, job_id + CANCEL_SUFFIX)
    except NotFoundError:
        return False
    return True


def watermark(registry: Registry, spec: JobSpec, source: SourceVersion) -> int | None:
    """Return the source version the next ``since_last`` job of ``spec``'s table reads after.

    It is the greatest version a successful ``since_last`` job of the table read up to from the
    same source (``source.source_id``: location and table id; a lost job, read as ``FAILED``,
    does not count, whatever it recorded before it died). Every committed version up to it has
    been loaded: each such job read everything committed after the watermark it started from,
    up to its own snapshot. Ranged jobs never move it (they read only part of the rows), so a
    ranged load followed by a ``since_last`` one loses nothing. A table moved to another path
    or recreated has another id, so its sequence starts afresh. ``None`` (no such job yet, or
    a plain Parquet folder) means: read every committed row.
    """
    if source.version is None:
        return None
    versions = [
        job.source_version
        for job in list_jobs(registry, spec.project, table=spec.table)
        if job.spec.kind == spec.kind
        and job.spec.since_last
        and job.status is JobStatus.SUCCEEDED
        and job.source_id == redact_url(source.source_id)  # records hold it masked
        and job.source_version is not None
        and job.source_version <= source.version
    ]
    return max(versions, default=None)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)


def describe(job: Job) -> Mapping[str, Any]:
    """Return the job as a flat mapping for display (the CLI's ``jobs describe``)."""
    return {"id": job.id, "project": job.spec.project, **job.to_record().body}


__all__ = [
    "ADOPTED_SUFFIX",
    "CANCEL_SUFFIX",
    "DEFAULT_BATCH_INTERVAL",
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "HISTORICAL_RETRIEVAL",
    "OFFLINE_TO_ONLINE",
    "STREAM_TO_ONLINE",
    "Job",
    "JobKind",
    "JobSpec",
    "JobStats",
    "JobStatus",
    "cancel_requested",
    "describe",
    "last_heartbeat",
    "list_jobs",
    "load_job",
    "lost_error",
    "observed",
    "request_cancel",
    "save_job",
    "utc_now",
    "watermark",
]
