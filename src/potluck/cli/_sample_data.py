"""The sample data ``potluck init --with-sample-data`` writes beside the example definitions.

Two CSV files that fit ``definitions.yaml``'s ``driver_stats`` table, so the commands that follow
``init`` in the docs work as shown: ``ingest`` loads ``driver_stats.csv``, ``historical`` joins
``entities.csv``, ``ingest-online`` and ``online get`` find values still within ``max_age``
(their event times are the last hours before ``init`` ran).
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

SAMPLE_FOLDER = "sample_data"
"""The folder, in the project folder, that holds the sample files."""

ROWS_FILE = "driver_stats.csv"
"""Feature rows of ``driver_stats``: one per driver and hour."""

ENTITIES_FILE = "entities.csv"
"""Entity rows for a training set: each driver now and half a day ago."""

DRIVERS = (1001, 1002, 1003, 1004, 1005)
"""The sample drivers' ids."""

HOURS = 24
"""Hours of history per driver, ending at the last full hour before ``init``."""


def _utc(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def sample_files(now: datetime | None = None) -> dict[str, str]:
    """Return the sample files' text by name, with event times in the ``HOURS`` before ``now``.

    Values are the same at every call (a fixed random seed); only the times follow ``now``.

    Args:
        now: The time the data ends at (default: the current time), UTC.

    Returns:
        ``{ROWS_FILE: csv text, ENTITIES_FILE: csv text}``.
    """
    end = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    end = end.replace(minute=0, second=0, microsecond=0)
    rng = random.Random(0)
    rows = ["driver_id,event_timestamp,created,conv_rate,acc_rate,avg_daily_trips"]
    for hours_ago in range(HOURS, 0, -1):
        event = end - timedelta(hours=hours_ago)
        created = event + timedelta(minutes=5)
        for driver in DRIVERS:
            rows.append(
                f"{driver},{_utc(event)},{_utc(created)},{rng.random():.4f},"
                f"{rng.random():.4f},{rng.randint(1, 40)}"
            )
    entities = ["driver_id,event_timestamp"]
    for driver in DRIVERS:
        entities.append(f"{driver},{_utc(end)}")
        entities.append(f"{driver},{_utc(end - timedelta(hours=12, minutes=30))}")
    return {ROWS_FILE: "\n".join(rows) + "\n", ENTITIES_FILE: "\n".join(entities) + "\n"}
