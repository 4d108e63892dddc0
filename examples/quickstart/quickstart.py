"""The potluck quickstart: define a driver entity and a feature table, apply them, list them.

Run it from the repository root with `make quickstart`, or here with `python quickstart.py`.
It runs on the embedded defaults: no config file, no server; the registry is a SQLite file under
`.potluck/` in this folder. Running it again changes nothing (apply is idempotent).

The tour is a list of steps, each a function of the Client; later steps (ingest history, build a
training set, serve online) are appended to STEPS.
"""

from __future__ import annotations

from collections.abc import Callable

from definitions import driver, driver_stats
from rich.console import Console
from rich.table import Table

from potluck import Client
from potluck.definitions.serde import format_duration

console = Console(highlight=False)


def apply_definitions(client: Client) -> None:
    """Write the entity and the feature table to the registry, in one transaction."""
    changes = client.apply([driver, driver_stats])
    table = Table("kind", "name", "action", "revision", title="Applied", title_justify="left")
    for change in changes:
        table.add_row(change.kind, change.name, change.action, str(change.revision or ""))
    console.print(table)


def list_definitions(client: Client) -> None:
    """Read back what the registry holds for the project."""
    entities = Table("name", "value type", "description", title="Entities", title_justify="left")
    for entity in client.list_entities():
        entities.add_row(entity.name, entity.value_type.name, entity.description)
    console.print(entities)
    tables = Table(
        "name", "entities", "features", "max age", "revision",
        title="Feature tables", title_justify="left",
    )
    for ft in client.list_feature_tables():
        max_age = "-" if ft.max_age is None else format_duration(ft.max_age)
        tables.add_row(
            ft.name, ", ".join(ft.entities), ", ".join(ft.feature_names), max_age, str(ft.revision)
        )
    console.print(tables)


STEPS: list[tuple[str, Callable[[Client], None]]] = [
    ("Apply the definitions", apply_definitions),
    ("List the registry", list_definitions),
]


def main() -> None:
    """Run every step in order against the embedded defaults."""
    with Client() as client:
        console.print(f"potluck quickstart, project {client.project!r}")
        for number, (title, step) in enumerate(STEPS, start=1):
            console.rule(f"Step {number}: {title}")
            step(client)
    console.print("Done. Try: potluck feature-tables describe driver_stats --history")


if __name__ == "__main__":
    main()
