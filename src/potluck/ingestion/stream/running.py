"""Which stream jobs of one table may run at once, and where a Spark job keeps its offsets.

A stream job belongs to a table and a consumer group (``group_id``, default
``potluck.<project>.<table>``). Jobs of one group are one job to the user: each key's messages
are handled once per group. Who may run beside whom follows from where offsets live:

- local jobs of one group share the topic's partitions through Kafka's consumer group (that is
  how a stream job scales out to several processes), so any number of them may run together;
- a Spark job keeps its offsets in a checkpoint folder of the group
  (:func:`checkpoint_folder`), which two queries must never share, and it does not join the
  Kafka group, so a local job beside it would read every message a second time: a Spark job
  runs alone in its group.

:func:`refuse_second_job` enforces this when a job is submitted, and again once the new job is
recorded (``own_id``), where of two jobs submitted at the same moment the later one yields.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from potluck.errors import AlreadyExistsError
from potluck.ingestion.jobs import STREAM_TO_ONLINE, Job, JobSpec, list_jobs
from potluck.ingestion.stream.brokers import default_group_id
from potluck.registry.base import Registry

_FOLDER_NAME = re.compile(r"[A-Za-z0-9._-]+")


def group_of(spec: JobSpec) -> str:
    """Return the consumer group of a stream job (its ``group_id``, else the table's default)."""
    return spec.group_id or default_group_id(spec.project, spec.table)


def checkpoint_folder(base: Path, spec: JobSpec) -> Path:
    """Return the checkpoint folder of a Spark stream job: ``base/<project>/<table>/<group>``.

    A group name that is not a plain folder name (letters, digits, ``.``, ``_``, ``-``) is
    written with its other characters as ``_`` and a hash of the name, so two groups never
    share a folder.
    """
    group = group_of(spec)
    name = group
    if not _FOLDER_NAME.fullmatch(group) or group in (".", ".."):
        digest = hashlib.sha256(group.encode()).hexdigest()[:12]
        name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', group)}-{digest}"
    return base / spec.project / spec.table / name


def refuse_second_job(
    registry: Registry, spec: JobSpec, engine: str, *, own_id: str | None = None
) -> None:
    """Refuse a stream job that may not run beside a running one of its table and group.

    Args:
        registry: Where the job records are.
        spec: The new job's spec (``stream_to_online``).
        engine: The engine that runs the new job (``local``, ``spark``).
        own_id: The new job's id once it is recorded: then only jobs recorded before it count.

    Raises:
        AlreadyExistsError: Naming the running job, its engine, the group, and what to do
            (cancel it, or pick another group); ``job_id`` is the running job's id.
    """
    group = group_of(spec)
    for job in list_jobs(registry, spec.project, table=spec.table):
        if (
            job.id == own_id
            or (own_id is not None and job.id > own_id)
            or job.spec.kind != STREAM_TO_ONLINE
            or job.status.is_terminal
            or group_of(job.spec) != group
            or (engine != "spark" and job.engine != "spark")
        ):
            continue
        raise _running(job, spec, group, engine)


def _running(job: Job, spec: JobSpec, group: str, engine: str) -> AlreadyExistsError:
    why = (
        "a Spark stream job keeps its offsets in the group's checkpoint, which two jobs must "
        "not share"
        if engine == "spark" and job.engine == "spark"
        else "a Spark stream job does not share the group's partitions with another job, so "
        "both would read every message"
    )
    return AlreadyExistsError(
        f"feature table {spec.table!r} already has a running stream job {job.id} (engine "
        f"{job.engine}) in consumer group {group!r}; {why}. Cancel it (potluck jobs cancel "
        f"{job.id}) or pick another group (--group-id, group_id=)",
        table=spec.table,
        group_id=group,
        job_id=job.id,
    )


__all__ = ["checkpoint_folder", "group_of", "refuse_second_job"]
