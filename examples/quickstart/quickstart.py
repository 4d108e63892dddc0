"""The potluck quickstart: define, ingest, build a training set, and serve driver features.

Run it from the repository root with `make quickstart`, or here with `python quickstart.py`.
It runs on the embedded defaults: no config file, no server. The registry and the online store
are SQLite files under `.potluck/` in this folder, and the batch source is Parquet files under
`data/driver_stats/`.

The tour is a list of STEPS, each a function of the Client:

1. apply a driver entity and the driver_stats feature table (idempotent: a second run changes
   nothing),
2. list what the registry holds,
3. generate three days of hourly stats for 50 drivers (a fixed seed; times end at the current
   hour, so they stay fresh) and ingest them,
4. build a point-in-time-correct training set for a few entity rows,
5. load the latest value per driver into the online store with an offline-to-online job,
6. read online features for a few drivers, one of them unknown.

Running it again ingests the same values again, with later created times; every step still
works.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd
from definitions import driver, driver_stats
from rich.console import Console
from rich.table import Table

from potluck import Client
from potluck.definitions.serde import format_duration

console = Console(highlight=False)

NOW = datetime.now(timezone.utc)
LAST_HOUR = NOW.replace(minute=0, second=0, microsecond=0)
"""The newest event time generated: the start of the current hour, less than max_age ago."""
DRIVERS = range(1001, 1051)
HOURS = 3 * 24
SEED = 42
UNKNOWN_DRIVER = 9999
"""A driver with no rows at all: its features are null offline and NOT_FOUND online."""
FEATURES = ["driver_stats:conv_rate", "driver_stats:acc_rate", "driver_stats:avg_daily_trips"]
COLUMN_FORMATS = {
    "driver_stats__conv_rate": "{:.3f}",
    "driver_stats__acc_rate": "{:.3f}",
    "driver_stats__avg_daily_trips": "{:.0f}",
}
"""How each feature's values are printed (the training set holds trips as floats: it has nulls)."""
TIME_HEADERS = {"event_timestamp", "event time"}


def cell(column: str, value: Any) -> str:
    """Format one value for a table: ``null`` for missing ones, features as in COLUMN_FORMATS."""
    if value is None or pd.isna(value):
        return "null"
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return COLUMN_FORMATS.get(column, "{}").format(value)


def new_table(title: str, *headers: str) -> Table:
    """Return a rich table whose cells fold rather than truncate on a narrow terminal.

    Times stay on one line; other columns give way first.
    """
    table = Table(title=title, title_justify="left")
    for header in headers:
        table.add_column(header, overflow="fold", no_wrap=header in TIME_HEADERS)
    return table


def apply_definitions(client: Client) -> None:
    """Write the entity and the feature table to the registry, in one transaction."""
    changes = client.apply([driver, driver_stats])
    table = new_table("Applied", "kind", "name", "action", "revision")
    for change in changes:
        table.add_row(change.kind, change.name, change.action, str(change.revision or ""))
    console.print(table)


def list_definitions(client: Client) -> None:
    """Read back what the registry holds for the project."""
    entities = new_table("Entities", "name", "value type", "description")
    for entity in client.list_entities():
        entities.add_row(entity.name, entity.value_type.name, entity.description)
    console.print(entities)
    tables = new_table("Feature tables", "name", "entities", "features", "max age", "revision")
    for ft in client.list_feature_tables():
        max_age = "-" if ft.max_age is None else format_duration(ft.max_age)
        tables.add_row(
            ft.name, ", ".join(ft.entities), ", ".join(ft.feature_names), max_age, str(ft.revision)
        )
    console.print(tables)


def driver_stats_frame(last_hour: datetime, created: datetime) -> pd.DataFrame:
    """Return hourly stats of every driver over the HOURS hours up to ``last_hour``.

    The values come from a fixed seed, so every run generates the same numbers; only the times
    move with the clock.
    """
    hours = pd.date_range(end=last_hour, periods=HOURS, freq="h")
    frame = pd.MultiIndex.from_product(
        [DRIVERS, hours], names=["driver_id", "event_timestamp"]
    ).to_frame(index=False)
    rng = np.random.default_rng(SEED)
    frame["created"] = created
    frame["conv_rate"] = rng.random(len(frame), dtype=np.float32)
    frame["acc_rate"] = rng.random(len(frame), dtype=np.float32)
    frame["avg_daily_trips"] = rng.integers(0, 1000, len(frame))
    return frame


def ingest_history(client: Client) -> None:
    """Generate the drivers' history and append it to driver_stats' batch source."""
    frame = driver_stats_frame(LAST_HOUR, created=NOW)
    console.print(
        f"Generated {len(frame)} rows: {len(DRIVERS)} drivers x {HOURS} hours, "
        f"{cell('', frame['event_timestamp'].min())} to {cell('', LAST_HOUR)} UTC"
    )
    report = client.ingest("driver_stats", frame)
    table = new_table("IngestionReport", "field", "value")
    table.add_row("table", report.table)
    table.add_row("rows", str(report.rows))
    table.add_row("files", "\n".join(os.path.relpath(path) for path in report.files))
    table.add_row("ingestion id", report.ingestion_id)
    table.add_row("ingestion time", cell("", report.ingestion_time))
    console.print(table)


def entity_rows() -> pd.DataFrame:
    """Return the rows a training set is built for: which driver, at which point in time."""
    return pd.DataFrame(
        {
            "driver_id": [1001, 1002, 1001, 1003, 1004, UNKNOWN_DRIVER],
            "event_timestamp": [
                NOW,  # the latest hour's values
                NOW,
                LAST_HOUR - timedelta(days=1),  # a day earlier: that hour's values
                LAST_HOUR - timedelta(minutes=30),  # the hour before the latest
                LAST_HOUR - timedelta(days=4),  # before the history starts: nulls
                NOW,  # an unknown driver: nulls
            ],
        }
    )


def build_training_set(client: Client) -> None:
    """Join the entity rows with driver_stats, point in time, and print the first rows."""
    training = client.get_historical_features(FEATURES, entity_rows()).to_pandas()
    console.print(f"Training set: {len(training)} rows x {len(training.columns)} columns")
    table = new_table("Training set (first rows)", *training.columns)
    for row in training.head(10).itertuples(index=False):
        cells = zip(training.columns, row, strict=True)
        table.add_row(*(cell(name, value) for name, value in cells))
    console.print(table)


def load_online_store(client: Client) -> None:
    """Copy the latest value per driver of the last day into the online store."""
    start, end = LAST_HOUR - timedelta(days=1), LAST_HOUR + timedelta(hours=1)
    console.print(f"Loading rows with event times in [{cell('', start)}, {cell('', end)}) UTC")
    job = client.start_offline_to_online_ingestion("driver_stats", start, end)
    record = job.wait()
    stats = record.stats
    table = new_table(
        "Offline-to-online job", "job", "status", "rows read", "written", "skipped", "rejected"
    )
    table.add_row(
        record.id,
        record.status.value,
        str(stats.rows_read),
        str(stats.rows_written),
        str(stats.rows_skipped),
        str(stats.rows_rejected),
    )
    console.print(table)


def read_online_features(client: Client) -> None:
    """Read the latest values of a few drivers, as a production model would."""
    drivers = [1001, 1002, 1003, UNKNOWN_DRIVER]
    response = client.get_online_features(
        FEATURES, entity_rows=[{"driver_id": driver_id} for driver_id in drivers]
    )
    values, statuses = response.to_dict(), response.statuses()
    times = response.event_timestamps()
    table = new_table(
        "Online features of driver_stats", "driver_id", "feature", "value", "status", "event time"
    )
    for row, driver_id in enumerate(values["driver_id"]):
        for name in values:
            if name == "driver_id":
                continue
            table.add_row(
                str(driver_id),
                name.removeprefix("driver_stats__"),
                cell(name, values[name][row]),
                statuses[name][row],
                "" if times[name][row] is None else cell("", times[name][row]),
            )
    console.print(table)


STEPS: list[tuple[str, Callable[[Client], None]]] = [
    ("Apply the definitions", apply_definitions),
    ("List the registry", list_definitions),
    ("Ingest the drivers' history", ingest_history),
    ("Build a training set", build_training_set),
    ("Load the online store", load_online_store),
    ("Read online features", read_online_features),
]


def main() -> None:
    """Run every step in order against the embedded defaults."""
    with Client() as client:
        console.print(f"potluck quickstart, project {client.project!r}")
        for number, (title, step) in enumerate(STEPS, start=1):
            console.rule(f"Step {number}: {title}")
            step(client)
    console.print("Done. Try:")
    console.print("  potluck feature-tables describe driver_stats --history")
    console.print("  potluck online get driver_stats:conv_rate --entity driver_id=1001")
    console.print("  potluck jobs list")


if __name__ == "__main__":
    main()
