"""Concurrent applies from many processes never lose an update (optimistic concurrency).

Eight spawned processes start together on one registry (a SQLite file, then PostgreSQL). In the
first test each reads driver_stats, adds its own feature and applies, re-reading and retrying on
ConflictError; in the second each applies a hand-built spec (no revision), which the registry
itself must serialise. Either way every write lands exactly once: revision == 1 + 8.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from potluck import Entity, Feature, FeatureTable, ValueType
from potluck.errors import ConflictError
from potluck.registry.sql import SqlRegistry

WRITERS = 8
PROJECT = "default"
TABLE = "driver_stats"
DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
BASE = FeatureTable(
    name=TABLE,
    entities=["driver_id"],
    features=[Feature(name="conv_rate", value_type=ValueType.DOUBLE)],
)


def add_own_feature(url: str, index: int) -> int:
    """Read -> add feature f<index> -> apply; on a conflict re-read and try again.

    Returns how many conflicts this writer met.
    """
    registry = SqlRegistry(url)
    conflicts = 0
    while True:
        table = registry.get(PROJECT, "feature_table", TABLE)
        assert isinstance(table, FeatureTable)
        mine = Feature(name=f"f{index}", value_type=ValueType.INT64)
        try:
            registry.apply(PROJECT, [dataclasses.replace(table, features=(*table.features, mine))])
            break
        except ConflictError:
            conflicts += 1
    registry.close()
    return conflicts


def apply_hand_built(url: str, index: int) -> int:
    """Apply a spec built by hand (no revision): the registry retries lost races itself.

    Returns the revision the apply produced.
    """
    registry = SqlRegistry(url)
    (change,) = registry.apply(PROJECT, [dataclasses.replace(BASE, labels={"writer": str(index)})])
    registry.close()
    return change.revision


WORKERS: dict[str, Callable[[str, int], int]] = {
    "add_own_feature": add_own_feature,
    "apply_hand_built": apply_hand_built,
}


def writer(work: str, url: str, index: int, barrier: Any, results: Any) -> None:
    """A spawned writer: wait for all, run ``work``, and report its result or its error."""
    barrier.wait(timeout=60)
    try:
        results.put(WORKERS[work](url, index))
    except BaseException as exc:
        results.put(f"writer {index} failed: {exc!r}")
        raise


def run_writers(url: str, work: str) -> list[int]:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=writer, args=(work, url, i, barrier, results)) for i in range(WRITERS)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [p.exitcode for p in processes] == [0] * WRITERS, outcomes
    return outcomes


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    return str(request.getfixturevalue("fresh_postgres_url"))


def test_eight_processes_adding_features_lose_no_update(url: str) -> None:
    setup = SqlRegistry(url)
    setup.apply(PROJECT, [DRIVER, BASE])
    conflicts = run_writers(url, "add_own_feature")
    table = setup.get(PROJECT, "feature_table", TABLE)
    assert isinstance(table, FeatureTable)
    assert sorted(table.feature_names) == sorted(["conv_rate", *(f"f{i}" for i in range(WRITERS))])
    assert table.revision == 1 + WRITERS
    history = setup.history(PROJECT, "feature_table", TABLE)
    assert [r.revision for r in history] == list(range(1, 2 + WRITERS))
    # Each revision adds exactly one feature to the one before.
    sizes = [len(r.spec.features) for r in history if isinstance(r.spec, FeatureTable)]
    assert sizes == list(range(1, 2 + WRITERS))
    assert all(isinstance(c, int) for c in conflicts), conflicts
    setup.close()


def test_eight_processes_applying_hand_built_specs_never_share_a_revision(url: str) -> None:
    setup = SqlRegistry(url)
    setup.apply(PROJECT, [DRIVER, BASE])
    revisions = run_writers(url, "apply_hand_built")
    assert sorted(revisions) == list(range(2, 2 + WRITERS))
    table = setup.get(PROJECT, "feature_table", TABLE)
    assert table.revision == 1 + WRITERS
    history = setup.history(PROJECT, "feature_table", TABLE)
    assert [r.revision for r in history] == list(range(1, 2 + WRITERS))
    writers = {r.spec.labels.get("writer") for r in history[1:]}
    assert writers == {str(i) for i in range(WRITERS)}
    setup.close()
