"""The batch commands: ``potluck ingest TABLE FILE`` and ``potluck historical``."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from potluck.cli.main import make_client
from potluck.errors import ValidationError
from potluck.offline.files import write_atomically

LARGE_INPUT_ROWS = 100_000
"""Inputs with at least this many rows (or of unknown size) get a progress bar on a terminal."""


def register(app: typer.Typer) -> None:
    """Add the batch commands to ``app``."""
    app.command("ingest")(ingest)
    app.command("historical")(historical)


def ingest(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table to ingest into.")],
    file: Annotated[
        str,
        typer.Argument(
            help="A .parquet or .csv file (a local path or a URL such as s3://bucket/x.parquet) "
            "with the table's batch-source columns.",
            metavar="FILE",
        ),
    ],
) -> None:
    """Validate FILE against TABLE and append its rows to the table's batch source.

    Nothing is written unless every row is valid: a bad value fails with the column and row.
    """
    client = make_client(ctx)
    console = Console(stderr=True)
    with Progress(
        TextColumn(f"ingesting into {table}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("ingest", total=None)

        def advance(done: int, total: int | None) -> None:
            if total is None or total >= LARGE_INPUT_ROWS:
                bar.update(task, completed=done, total=total)

        report = client.ingest(table, file, progress=advance)
    typer.echo(
        f"ingested {report.rows} rows into {report.table} ({len(report.files)} "
        f"file{'s' if len(report.files) != 1 else ''}, ingestion id {report.ingestion_id})"
    )


def historical(
    ctx: typer.Context,
    features: Annotated[
        list[str],
        typer.Option(
            "--features",
            "-f",
            help="Feature references (table:feature, project/table:feature or table:*); "
            "repeat the option or separate them with commas.",
        ),
    ],
    entities: Annotated[
        str,
        typer.Option(
            "--entities",
            "-e",
            help="The entity rows: a .parquet or .csv file with event_timestamp and a column "
            "per entity.",
        ),
    ],
    out: Annotated[
        str,
        typer.Option("--out", "-o", help="Where to write the training set: .parquet or .csv."),
    ],
) -> None:
    """Build a point-in-time-correct training set and write it to --out.

    Each entity row gets, per table, the values with the greatest event time at or before its
    event_timestamp (and within the table's max_age); the rows keep their order.
    """
    refs = [ref.strip() for value in features for ref in value.split(",") if ref.strip()]
    file_format = _format_of(out)
    client = make_client(ctx)
    console = Console(stderr=True)
    job = client.get_historical_features(refs, entities)
    with Progress(
        SpinnerColumn(),
        TextColumn("building the training set"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as spinner:
        spinner.add_task("join", total=None)
        training = job.to_arrow()
        write_atomically(training, out, file_format=file_format)
    typer.echo(f"wrote {training.num_rows} rows x {training.num_columns} columns to {out}")


def _format_of(path: str) -> Literal["parquet", "csv"]:
    lowered = path.lower()
    if lowered.endswith(".parquet"):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    raise ValidationError(f"--out must end in .parquet or .csv, got {path!r}", field="out")
