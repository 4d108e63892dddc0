"""Helpers of the Job Service tests: a project with a batch source, and a settable clock."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from potluck import Client, Entity, Feature, FeatureTable, FileSource, ValueType
from potluck.config import Settings, load_settings

DRIVER = Entity(name="driver_id", value_type=ValueType.INT64)
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def stats_table(root: Path) -> FeatureTable:
    """driver_stats with a Parquet batch source under ``root``: trips INT64, a day's max_age."""
    return FeatureTable(
        name="driver_stats",
        entities=("driver_id",),
        features=(Feature(name="trips", value_type=ValueType.INT64),),
        max_age=timedelta(days=1),
        batch_source=FileSource(
            path=str(root / "data" / "driver_stats"), event_timestamp_column="event_timestamp"
        ),
    )


def settings_for(root: Path, registry: str, **extra: Any) -> Settings:
    """Settings of a new project in ``root`` on ``registry``, SQLite online store there."""
    root.mkdir(parents=True, exist_ok=True)
    values: dict[str, Any] = {
        "project": f"p{uuid.uuid4().hex[:10]}",
        "registry": registry,
        "online_store": {"type": "sqlite", "path": str(root / "online.db")},
        **extra,
    }
    path = root / "potluck.yaml"
    path.write_text(yaml.safe_dump(values))
    return load_settings(path, environ={})


def seeded_client(settings: Settings, *tables: FeatureTable) -> Client:
    """A client with DRIVER and ``tables`` applied and two hours of rows in driver_stats."""
    client = Client(settings=settings)
    client.apply([DRIVER, *tables])
    client.ingest(
        "driver_stats",
        pd.DataFrame(
            {
                "driver_id": [1, 2, 1],
                "event_timestamp": pd.to_datetime(
                    [
                        NOW - timedelta(hours=2),
                        NOW - timedelta(hours=1),
                        NOW - timedelta(minutes=1),
                    ],
                    utc=True,
                ),
                "trips": [10, 20, 11],
            }
        ),
    )
    return client


class Clock:
    """A clock a test sets: ``now()`` returns ``at`` until it is moved."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at
