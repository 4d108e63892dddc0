"""A separate process that ingests into a batch source, optionally killing itself at one step.

Run as ``python _ingest_worker.py CONFIG MODE START COUNT [REPEAT]``: it ingests ``REPEAT``
(default 1) frames of ``COUNT`` rows for driver ids ``START..START+COUNT-1`` (one row per id, on
as many partition days as ids, so the ingestion writes many files), and prints each version.

``MODE`` is ``run`` (no fault) or the step at which the process sends itself SIGKILL:

- ``create``: before the source's table is created (first ingestion only);
- ``first-write`` / ``mid-write``: before the first / the third data file is written;
- ``before-commit``: after every file is written, before the commit record;
- ``after-commit``: right after the commit, before the ingestion releases its lock.

The kill comes from inside the process only to hit each step exactly; the tests also kill it
from outside at random moments. The patches only wrap potluck's calls; nothing is stubbed.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from potluck import Client
from potluck.config import load_settings
from potluck.offline import commits

BASE = datetime(2024, 5, 1, tzinfo=timezone.utc)


def frame(start: int, count: int) -> pd.DataFrame:
    ids = list(range(start, start + count))
    return pd.DataFrame(
        {
            "driver_id": pd.Series(ids, dtype="int64"),
            "event_timestamp": [BASE + timedelta(hours=i % 240) for i in ids],
            "trips": pd.Series(ids, dtype="int64"),
        }
    )


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(mode: str) -> None:
    if mode == "create":
        original_create = commits.create_table_with_add_actions

        def create(*args: Any, **kwargs: Any) -> Any:
            die()
            return original_create(*args, **kwargs)

        commits.create_table_with_add_actions = create  # type: ignore[assignment]
    elif mode in ("first-write", "mid-write"):
        original_write = commits.IngestionCommit.write
        fatal = 0 if mode == "first-write" else 2

        def write(self: commits.IngestionCommit, relative: str, rows: Any) -> None:
            if len(self.files) == fatal:
                die()
            original_write(self, relative, rows)

        commits.IngestionCommit.write = write  # type: ignore[method-assign]
    elif mode in ("before-commit", "after-commit"):
        table_class = commits.deltalake.DeltaTable
        original_commit = table_class.create_write_transaction

        def commit(self: Any, *args: Any, **kwargs: Any) -> Any:
            if mode == "before-commit":
                die()
            result = original_commit(self, *args, **kwargs)
            die()
            return result

        table_class.create_write_transaction = commit  # type: ignore[method-assign]
    elif mode != "run":
        raise SystemExit(f"unknown mode {mode!r}")


def main() -> None:
    config, mode, start, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    repeat = int(sys.argv[5]) if len(sys.argv) > 5 else 1
    arm(mode)
    with Client(settings=load_settings(config)) as client:
        for round_ in range(repeat):
            report = client.ingest("driver_stats", frame(start + round_ * count, count))
            print(report.version, flush=True)


if __name__ == "__main__":
    main()
