"""Job records as readers see them (heartbeats, lost jobs), the local engine's heartbeat settings,
and short job ids (shortest unique prefixes, and finding a job by one)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from potluck.errors import DecodeError, NotFoundError, ValidationError
from potluck.ingestion.engines.local import LocalEngineConfig
from potluck.ingestion.job_ids import MIN_PREFIX, match_job_id, short_ids
from potluck.ingestion.jobs import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    Job,
    JobSpec,
    JobStats,
    JobStatus,
    list_jobs,
    load_job,
    lost_error,
    observed,
    save_job,
)
from potluck.registry.base import JobRecord
from potluck.registry.sql import SqlRegistry

T0 = datetime(2024, 5, 2, 0, 5, tzinfo=timezone.utc)
LOST = "lost: no heartbeat since 2024-05-02 00:05:00 UTC (its process died or hung)"


def _job(status: JobStatus, heartbeat: datetime | None = T0, **changes: object) -> Job:
    fields: dict[str, object] = {
        "id": "20240502T000000000000Z-0a1b2c3d",
        "spec": JobSpec(project="p", table="trips"),
        "engine": "local",
        "status": status,
        "created_at": T0 - timedelta(minutes=5),
        "updated_at": heartbeat,
        **changes,
    }
    return Job(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING])
def test_a_job_that_has_not_ended_is_lost_just_after_its_timeout(status: JobStatus) -> None:
    job = _job(status)
    assert observed(job, T0 + DEFAULT_HEARTBEAT_TIMEOUT) == job
    lost = observed(job, T0 + DEFAULT_HEARTBEAT_TIMEOUT + timedelta(microseconds=1))
    assert (lost.status, lost.error) == (JobStatus.FAILED, LOST)
    assert lost.updated_at == T0 and lost.finished_at == T0  # it ended at its last heartbeat


def test_the_job_records_own_timeout_decides() -> None:
    job = _job(JobStatus.RUNNING, heartbeat_timeout=timedelta(seconds=2))
    assert observed(job, T0 + timedelta(seconds=2)).status is JobStatus.RUNNING
    assert observed(job, T0 + timedelta(seconds=2.5)).status is JobStatus.FAILED


def test_a_job_never_written_since_it_was_created_counts_from_its_creation() -> None:
    job = _job(JobStatus.PENDING, heartbeat=None)
    created = job.created_at
    assert observed(job, created + DEFAULT_HEARTBEAT_TIMEOUT).status is JobStatus.PENDING
    late = observed(job, created + DEFAULT_HEARTBEAT_TIMEOUT * 2)
    assert (
        late.error == "lost: no heartbeat since 2024-05-02 00:00:00 UTC (its process died or hung)"
    )
    assert late.finished_at == created


@pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_an_ended_job_is_never_lost(status: JobStatus) -> None:
    job = _job(status, error="boom" if status is JobStatus.FAILED else None)
    assert observed(job, T0 + timedelta(days=365)) == job


def test_lost_error_names_the_heartbeat_in_utc() -> None:
    cest = timezone(timedelta(hours=2))
    assert lost_error(datetime(2024, 5, 2, 2, 5, 0, 999_999, tzinfo=cest)) == LOST


def test_heartbeat_timeout_and_rows_total_round_trip_through_the_record() -> None:
    job = _job(
        JobStatus.RUNNING,
        heartbeat_timeout=timedelta(seconds=1.5),
        rows_total=1_250,
        stats=JobStats(10, 4, 5, 1),
    )
    record = job.to_record()
    assert (record.body["heartbeat_timeout"], record.body["rows_total"]) == (1.5, 1_250)
    assert Job.from_record(record) == job


@pytest.mark.parametrize("stored", [None, "60s", 0, -5, True])
def test_a_record_without_a_usable_timeout_gets_the_default(stored: object) -> None:
    body = dict(_job(JobStatus.RUNNING).to_record().body)
    body.pop("rows_total")
    body["heartbeat_timeout"] = stored
    job = Job.from_record(JobRecord(project="p", id="x", body=body))
    assert (job.heartbeat_timeout, job.rows_total) == (timedelta(seconds=60), None)


def test_readers_see_lost_jobs_failed_and_the_record_stays(tmp_path: Path) -> None:
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    old = _job(JobStatus.RUNNING, heartbeat=datetime.now(timezone.utc) - timedelta(minutes=2))
    fresh = _job(JobStatus.RUNNING, id="20240502T000100000000Z-0a1b2c3e", heartbeat=None)
    fresh = fresh.evolve()  # a heartbeat now
    for job in (old, fresh):
        save_job(registry, job)
    try:
        assert [(j.id, j.status) for j in list_jobs(registry, "p")] == [
            (fresh.id, JobStatus.RUNNING),
            (old.id, JobStatus.FAILED),
        ]
        assert load_job(registry, "p", old.id).error == lost_error(old.updated_at or T0)
        assert registry.get_job("p", old.id).body["status"] == "RUNNING"
    finally:
        registry.close()


# ---- the local engine's settings ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("given_value", "seconds"), [("90s", 90), ("1m30s", 90), (2, 2), (0.5, 0.5), ("1500ms", 1.5)]
)
def test_heartbeat_timeout_takes_seconds_or_text(given_value: object, seconds: float) -> None:
    config = LocalEngineConfig.model_validate({"type": "local", "heartbeat_timeout": given_value})
    assert config.heartbeat_timeout == timedelta(seconds=seconds)


def test_heartbeat_timeout_defaults_to_a_minute() -> None:
    assert LocalEngineConfig().heartbeat_timeout == timedelta(seconds=60)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "heartbeat_timeout",
            "soon",
            "'soon' is not a duration; use seconds or text such as 60s, 5m, 1h",
        ),
        ("heartbeat_timeout", 0, "must be a positive duration such as 60s, got 0"),
        ("heartbeat_timeout", "-1s", "must be a positive duration such as 60s, got '-1s'"),
        ("progress_interval", -1, "Input should be greater than or equal to 0"),
    ],
)
def test_bad_engine_settings_name_the_key(key: str, value: object, message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as err:
        LocalEngineConfig.model_validate({"type": "local", key: value})
    [error] = err.value.errors()
    assert (error["loc"], error["msg"]) == ((key,), message)


# ---- short ids -----------------------------------------------------------------------------------

IDS = [
    "20240502T001000123456Z-aaaaaaaa",
    "20240502T000500123456Z-bbbbbbbb",
    "20240502T000500654321Z-cccccccc",
    "20240501T130000000000Z-dddddddd",
]


def test_short_ids_are_the_shortest_unique_prefixes() -> None:
    assert short_ids(IDS) == {
        IDS[0]: "20240502T001",
        IDS[1]: "20240502T0005001",
        IDS[2]: "20240502T0005006",
        IDS[3]: "20240501",
    }
    assert short_ids(IDS[:1]) == {IDS[0]: "20240502"}


def test_a_prefix_finds_its_one_job() -> None:
    for job_id, prefix in short_ids(IDS).items():
        assert match_job_id(IDS, prefix, "p") == job_id
        assert match_job_id(IDS, job_id, "p") == job_id


def test_an_ambiguous_prefix_lists_the_candidates_newest_first() -> None:
    with pytest.raises(ValidationError) as err:
        match_job_id(IDS, "20240502T0005", "p")
    assert err.value.message == (
        "job id prefix '20240502T0005' is ambiguous in project 'p': it matches "
        "20240502T000500654321Z-cccccccc, 20240502T000500123456Z-bbbbbbbb; give more "
        "characters of the id"
    )
    assert err.value.attrs()["candidates"] == (IDS[2], IDS[1])


def test_an_ambiguous_prefix_lists_at_most_ten() -> None:
    many = [f"20240502T0000{i:02d}000000Z-0000000{i % 10}" for i in range(12)]
    with pytest.raises(ValidationError) as err:
        match_job_id(many, "2024", "p")
    assert err.value.message.endswith(
        "20240502T000002000000Z-00000002 and 2 more; give more characters of the id"
    )


@pytest.mark.parametrize("given_value", ["nope", "", "20240503"])
def test_an_unknown_prefix_is_not_found(given_value: str) -> None:
    with pytest.raises(NotFoundError) as err:
        match_job_id(IDS, given_value, "p")
    assert err.value.message == (
        f"no job with id or id prefix {given_value!r} in project 'p'; `potluck jobs list` shows "
        "the project's jobs"
    )


def _reference_prefix(job_id: str, ids: list[str]) -> str:
    """The shortest prefix of at least MIN_PREFIX characters no other id starts with, by search."""
    for size in range(MIN_PREFIX, len(job_id) + 1):
        prefix = job_id[:size]
        if not any(other.startswith(prefix) for other in ids if other != job_id):
            return prefix
    return job_id


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="0123", min_size=1, max_size=12), min_size=1, max_size=12))
def test_short_ids_match_a_brute_force_search(ids: list[str]) -> None:
    short = short_ids(ids)
    assert short == {i: _reference_prefix(i, ids) for i in set(ids)}
    for job_id, prefix in short.items():
        assert match_job_id(ids, prefix, "p") == job_id


def test_a_job_record_potluck_did_not_write_is_named_and_skipped_when_listing(
    tmp_path: Path,
) -> None:
    """A foreign record (Core's PutJob takes any body) never hides the other jobs."""
    registry = SqlRegistry(f"sqlite:///{tmp_path / 'registry.db'}")
    registry.put_job(JobRecord(project="p", id="foreign", body={}))
    registry.put_job(JobRecord(project="p", id="typed", body={"table": "t", "rows_read": "x"}))
    with pytest.raises(DecodeError) as missing:
        Job.from_record(registry.get_job("p", "foreign"))
    assert str(missing.value) == (
        "job record 'foreign' of project 'p' cannot be read (missing 'table'); it was not "
        "written by potluck: delete it from the registry's jobs table"
    )
    with pytest.raises(DecodeError, match="job record 'typed' of project 'p' cannot be read"):
        Job.from_record(registry.get_job("p", "typed"))
    assert list_jobs(registry, "p") == []
    registry.close()
