"""The ``--since-last`` watermark loads every committed row, whatever the interleaving.

Ingestions are started and committed in any order (each runs in a thread that holds before its
commit until told to go), ranged jobs and since-last jobs run in between, and ingestion ids can
come from clocks that disagree. After every since-last job the online store must hold, for each
key, the newest value among all rows committed so far: the reference.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings
from potluck.errors import ValidationError
from potluck.ingestion import ingest as ingest_module
from potluck.offline import commits

DAY = datetime(2024, 5, 1, tzinfo=timezone.utc)
KEYS = [1, 2, 3]


def _client(root: Path) -> Client:
    settings = Settings(
        registry=f"sqlite:///{root}/registry.db",
        online_store={"type": "sqlite", "path": str(root / "online.db")},
        root=root,
    )
    client = Client(settings=settings)
    client.apply(
        [
            Entity(name="user_id", value_type=ValueType.INT64),
            FeatureTable(
                name="users",
                entities=["user_id"],
                features=[Feature(name="value", value_type=ValueType.INT64)],
                batch_source=FileSource(path="data/users", event_timestamp_column="ts"),
            ),
        ]
    )
    return client


def _rows(pairs: list[tuple[int, int]]) -> pd.DataFrame:
    """Rows (key, n): event time DAY + n minutes and value n, so newer rows have bigger values."""
    return pd.DataFrame(
        {
            "user_id": [key for key, _ in pairs],
            "ts": [DAY + timedelta(minutes=n) for _, n in pairs],
            "value": [n for _, n in pairs],
        }
    )


def _online(client: Client) -> dict[int, int | None]:
    response = client.get_online_features(["users:value"], [{"user_id": k} for k in KEYS])
    return dict(zip(KEYS, response.to_dict()["users__value"], strict=True))


def _since_last(client: Client) -> Any:
    return client.start_offline_to_online_ingestion("users", since_last=True).wait(60)


class HeldIngestions:
    """Runs ``client.ingest`` in threads that stop right before their commit until released."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._gates: dict[int, threading.Event] = {}
        self._ready: dict[int, threading.Event] = {}
        original = commits.IngestionCommit.commit
        gates, ready = self._gates, self._ready

        def commit(self: commits.IngestionCommit) -> int | None:
            ident = threading.get_ident()
            if ident in gates:
                ready[ident].set()
                gates[ident].wait(60)
            return original(self)

        monkeypatch.setattr(commits.IngestionCommit, "commit", commit)

    def start(self, client: Client, frame: pd.DataFrame) -> Callable[[], None]:
        """Start ingesting ``frame``; return a function that lets it commit and waits."""
        gate, ready = threading.Event(), threading.Event()
        failures: list[BaseException] = []

        def run() -> None:
            self._gates[threading.get_ident()] = gate
            self._ready[threading.get_ident()] = ready
            try:
                client.ingest("users", frame)
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                failures.append(exc)
                ready.set()

        thread = threading.Thread(target=run)
        thread.start()
        if not ready.wait(60):
            raise AssertionError("the ingestion never reached its commit")

        def finish() -> None:
            gate.set()
            thread.join(60)
            if failures:
                raise failures[0]

        return finish


@pytest.fixture()
def workdir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def test_ranged_load_then_since_last_loads_the_rest(workdir: Path) -> None:
    client = _client(workdir)
    client.ingest("users", _rows([(1, 0)]))  # u1 on day 1
    client.ingest("users", _rows([(2, 24 * 60)]))  # u2 on day 2
    ranged = client.start_offline_to_online_ingestion("users", end=DAY + timedelta(days=1)).wait(60)
    assert ranged.stats.rows_read == 1
    assert _online(client) == {1: 0, 2: None, 3: None}
    since = _since_last(client)
    assert since.stats.rows_read == 2  # no since-last job ran before: everything committed
    assert _online(client) == {1: 0, 2: 24 * 60, 3: None}
    client.close()


def test_an_ingestion_that_commits_after_a_later_one_is_not_skipped(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(workdir)
    held = HeldIngestions(monkeypatch)
    finish_a = held.start(client, _rows([(1, 10), (2, 10)]))  # A starts first...
    client.ingest("users", _rows([(3, 5)]))  # ...B starts later and commits first
    first = _since_last(client)
    assert first.stats.rows_read == 1
    finish_a()  # then A commits
    second = _since_last(client)
    assert second.stats.rows_read == 2
    assert _online(client) == {1: 10, 2: 10, 3: 5}
    client.close()


def test_ingestion_ids_from_skewed_clocks_do_not_matter(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = _client(workdir)
    ahead = datetime.now(timezone.utc) + timedelta(hours=3)
    original = ingest_module.new_ingestion_id
    monkeypatch.setattr(ingest_module, "new_ingestion_id", lambda now: original(ahead))
    client.ingest("users", _rows([(1, 1)]))  # a machine whose clock runs 3 hours ahead
    assert _since_last(client).stats.rows_read == 1
    monkeypatch.setattr(ingest_module, "new_ingestion_id", original)
    client.ingest("users", _rows([(2, 2)]))  # a machine with the right time commits later
    assert _since_last(client).stats.rows_read == 1
    assert _online(client) == {1: 1, 2: 2, 3: None}
    client.close()


class WatermarkMachine(RuleBasedStateMachine):
    """Interleaves held ingestions, commits, ranged jobs and since-last jobs."""

    pending = Bundle("pending")

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(tempfile.mkdtemp(prefix="potluck-watermark-"))
        self.client = _client(self.root)
        self.committed: list[tuple[int, int]] = []
        self.counter = 0
        self.held: HeldIngestions | None = None
        self.unfinished: list[Callable[[], None]] = []
        self.patch = pytest.MonkeyPatch()

    @initialize()
    def hold(self) -> None:
        self.held = HeldIngestions(self.patch)

    def _pairs(self, keys: list[int]) -> list[tuple[int, int]]:
        pairs = []
        for key in keys:
            self.counter += 1
            pairs.append((key, self.counter))
        return pairs

    @rule(target=pending, keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))
    def start_ingestion(self, keys: list[int]) -> tuple[Callable[[], None], list[tuple[int, int]]]:
        pairs = self._pairs(keys)
        assert self.held is not None
        finish = self.held.start(self.client, _rows(pairs))
        self.unfinished.append(finish)
        return finish, pairs

    @rule(ingestion=consumes(pending))
    def commit(self, ingestion: tuple[Callable[[], None], list[tuple[int, int]]]) -> None:
        finish, pairs = ingestion
        self.unfinished.remove(finish)
        finish()
        self.committed += pairs

    @rule(keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))
    def ingest_at_once(self, keys: list[int]) -> None:
        pairs = self._pairs(keys)
        self.client.ingest("users", _rows(pairs))
        self.committed += pairs

    @rule(first=st.integers(0, 40), span=st.integers(1, 40))
    def ranged_job(self, first: int, span: int) -> None:
        start = DAY + timedelta(minutes=first)
        self.client.start_offline_to_online_ingestion(
            "users", start, start + timedelta(minutes=span)
        ).wait(60)

    @rule()
    def since_last_job(self) -> None:
        _since_last(self.client)
        newest: dict[int, int | None] = dict.fromkeys(KEYS)
        for key, n in self.committed:
            newest[key] = max(n, newest[key] or -1)
        assert _online(self.client) == newest

    @invariant()
    def never_ahead_of_commits(self) -> None:
        seen = {n for n in _online(self.client).values() if n is not None}
        assert seen <= {n for _, n in self.committed}

    def teardown(self) -> None:
        for finish in self.unfinished:
            finish()  # let held ingestions commit so their threads end
        self.client.close()
        self.patch.undo()
        shutil.rmtree(self.root, ignore_errors=True)


WatermarkMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_watermark_state_machine = WatermarkMachine.TestCase


def test_since_last_with_a_range_is_refused(workdir: Path) -> None:
    client = _client(workdir)
    with pytest.raises(ValidationError) as refused:
        client.start_offline_to_online_ingestion(
            "users", end=DAY + timedelta(days=4), since_last=True
        )
    assert refused.value.message.startswith(
        "since_last cannot be combined with start or end: a since-last job loads every row "
        "committed since the previous one"
    )
    assert client.list_jobs() == []
    client.close()


@pytest.mark.parametrize("change", ["moved", "recreated"])
def test_a_moved_or_recreated_source_starts_its_since_last_sequence_afresh(
    workdir: Path, change: str
) -> None:
    client = _client(workdir)
    for n in range(3):  # the old source reaches version 3
        client.ingest("users", _rows([(1, n)]))
    assert _since_last(client).source_version == 3
    table = client.get_feature_table("users")
    assert table.batch_source is not None
    if change == "moved":
        moved = dataclasses.replace(table.batch_source, path=str(workdir / "data" / "users_v2"))
        client.apply(dataclasses.replace(table, batch_source=moved))
    else:
        shutil.rmtree(table.batch_source.path)
    client.ingest("users", _rows([(2, 100)]))  # version 1 of the new table
    job = _since_last(client)
    assert (job.since_version, job.source_version, job.stats.rows_read) == (None, 1, 1)
    assert _online(client)[2] == 100
    client.close()
