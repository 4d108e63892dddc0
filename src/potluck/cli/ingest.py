"""The batch commands: ``potluck ingest TABLE FILE``, ``potluck historical`` and ``potluck gc``.

Paths and URLs they print (``--out``, the files written, a source's location) are shown with
their credentials masked (``s3://KEY:***@bucket/...``, ``?secret_key=***``).
"""

from __future__ import annotations

import re
from datetime import timedelta
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

from potluck._redact import redact_url
from potluck.cli._render import (
    OutputFormat,
    OutputOption,
    output_option,
    print_json,
    show_message,
)
from potluck.cli.main import make_client
from potluck.definitions.serde import parse_duration
from potluck.errors import ValidationError
from potluck.offline.files import write_atomically

REPORT_HELP = "How to print the report: a line of text (table), or JSON (json)."

ReportOutputOption = Annotated[OutputFormat, output_option(REPORT_HELP)]
"""The ``--output/-o`` option of ``ingest``, which prints one report."""

HistoricalOutputOption = Annotated[OutputFormat, output_option(REPORT_HELP, file_option="--out/-O")]
"""``historical``'s ``--output/-o``: ``-o out.csv`` is told to use ``--out``/``-O``."""

LARGE_INPUT_ROWS = 100_000
"""Inputs with at least this many rows (or of unknown size) get a progress bar on a terminal."""


def register(app: typer.Typer) -> None:
    """Add the batch commands to ``app``."""
    app.command("ingest")(ingest)
    app.command("historical")(historical)
    app.command("gc")(gc)


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
    output: ReportOutputOption = OutputFormat.TABLE,
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
    if output is OutputFormat.JSON:
        print_json(
            {
                "table": report.table,
                "rows": report.rows,
                "files": [redact_url(f) for f in report.files],
                "ingestion_id": report.ingestion_id,
                "ingestion_time": report.ingestion_time.isoformat(),
                "version": report.version,
            }
        )
        return
    version = "nothing committed" if report.version is None else f"version {report.version}"
    show_message(
        f"ingested {report.rows} rows into {report.table} ({len(report.files)} "
        f"file{'s' if len(report.files) != 1 else ''}, ingestion id {report.ingestion_id}, "
        f"{version})"
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
        typer.Option(
            "--out",
            "-O",
            help="Where to write the training set: a .parquet or .csv file (a local path or a "
            "URL); lists go to .parquet only.",
        ),
    ],
    source_version: Annotated[
        list[str] | None,
        typer.Option(
            "--source-version",
            help="TABLE=VERSION: read that table's batch source at that version (as printed "
            "by an earlier run) to rebuild a training set exactly; repeatable.",
        ),
    ] = None,
    output: HistoricalOutputOption = OutputFormat.TABLE,
) -> None:
    """Build a point-in-time-correct training set and write it to --out (-O).

    Each entity row gets, per table, the values with the greatest event time at or before its
    event_timestamp (and within the table's max_age); the rows keep their order.
    """
    refs = [ref.strip() for value in features for ref in value.split(",") if ref.strip()]
    file_format = _format_of(out)
    versions = _versions(source_version or [], refs)
    client = make_client(ctx)
    console = Console(stderr=True)
    job = client.get_historical_features(refs, entities, versions=versions)
    with (
        job,
        Progress(
            SpinnerColumn(),
            TextColumn("building the training set"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not console.is_terminal,
        ) as spinner,
    ):
        spinner.add_task("join", total=None)
        training = job.to_arrow()
        write_atomically(training, out, file_format=file_format)
    if output is OutputFormat.JSON:
        print_json(
            {
                "path": redact_url(out),
                "rows": training.num_rows,
                "columns": training.column_names,
                "source_versions": job.source_versions,
            }
        )
        return
    read = ", ".join(
        f"{name}@{'all' if version is None else version}"
        for name, version in job.source_versions.items()
    )
    show_message(
        f"wrote {training.num_rows} rows x {training.num_columns} columns to {redact_url(out)}"
        + (f" (source versions: {read})" if read else "")
    )


def _versions(values: list[str], refs: list[str]) -> dict[str, int]:
    """Read ``--source-version TABLE=VERSION`` options; each table must be one ``refs`` read."""
    tables = list(dict.fromkeys(ref.partition(":")[0].rpartition("/")[2] for ref in refs))
    versions: dict[str, int] = {}
    for value in values:
        name, sep, number = value.partition("=")
        name, number = name.strip(), number.strip()
        if not sep or not name or not number.isdigit() or not number.isascii():
            raise ValidationError(
                f"--source-version must be TABLE=VERSION with a whole number, got {value!r}",
                field="source_version",
            )
        if name in versions:
            raise ValidationError(
                f"--source-version names table {name!r} twice; give one version per table",
                field="source_version",
            )
        if name not in tables:
            raise ValidationError(
                f"--source-version names feature table {name!r}, which --features does not "
                f"read; tables in --features: {', '.join(tables)}",
                field="source_version",
            )
        versions[name] = int(number)
    return versions


def gc(
    ctx: typer.Context,
    tables: Annotated[
        list[str] | None,
        typer.Argument(help="Feature tables to clean; default: every table of the project."),
    ] = None,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="How old an uncommitted file with no live ingestion must be to go (30m, 6h, "
            "2d). Files of ingestions known dead go whatever their age.",
        ),
    ] = "6h",
    staging: Annotated[
        bool,
        typer.Option(
            "--staging",
            help="Collect the staging locations instead (staging_location and the offline "
            "store's): delete training-set folders and driver logs older than --older-than.",
        ),
    ] = False,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            help="With --staging: how old (time since its newest file was written) a folder "
            "must be to go (12h, 7d). Folders of running jobs are kept.",
        ),
    ] = "7d",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete the files that ingestions which died before committing left behind.

    Committed data and files written by other tools are never touched. Every ingest already
    cleans up after dead ingestions of its own table; this also finds older leftovers. With
    --staging, old training sets under the staging locations go instead.
    """
    given = {
        name
        for name in ("tables", "grace", "older_than")
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }
    if staging:
        if given & {"tables", "grace"}:
            raise ValidationError(
                "--staging collects the staging locations, not tables: drop "
                + ("the table names" if "tables" in given else "--grace")
                + " (or run gc without --staging for tables)",
                field="tables" if "tables" in given else "grace",
            )
        from potluck.cli._staging_gc import collect_staging_locations

        age = _duration(older_than, "--older-than", "older_than", "0, 12h, 7d")
        collect_staging_locations(ctx, older_than=age, dry_run=dry_run, output=output)
        return
    if "older_than" in given:
        raise ValidationError(
            "--older-than is the age limit of --staging; add --staging (or use --grace for tables)",
            field="older_than",
        )
    span = _duration(grace, "--grace", "grace", "0, 30m, 6h")
    reports = make_client(ctx).collect_garbage(tables or None, grace=span, dry_run=dry_run)
    if output is OutputFormat.JSON:
        print_json(
            [
                {
                    "location": redact_url(r.location),
                    "deleted": [redact_url(path) for path in r.deleted],
                    "running_ingestions": list(r.kept_running),
                    "dry_run": dry_run,
                }
                for r in reports
            ]
        )
        return
    verb = "would delete" if dry_run else "deleted"
    for report in reports:
        running = len(report.kept_running)
        busy = f", {running} ingestion(s) still running" if running else ""
        show_message(
            f"{redact_url(report.location)}: {verb} {len(report.deleted)} file(s){busy}",
            *(f"  {redact_url(path)}" for path in report.deleted),
        )


def _format_of(path: str) -> Literal["parquet", "csv"]:
    """The format ``--out`` names by its suffix; a URL's is that of its path (not its query)."""
    lowered = (re.split(r"[?#]", path, maxsplit=1)[0] if "://" in path else path).lower()
    if lowered.endswith(".parquet"):
        return "parquet"
    if lowered.endswith(".csv"):
        return "csv"
    raise ValidationError(f"--out must end in .parquet or .csv, got {path!r}", field="out")


def _duration(text: str, option: str, field: str, examples: str) -> timedelta:
    """Read a duration option (seconds, or text such as ``6h``); it must be 0 or more."""
    span = parse_duration(float(text) if _is_number(text) else text, option)
    if span < timedelta(0):
        raise ValidationError(
            f"{option} must be 0 or more (such as {examples}), got {text!r}", field=field
        )
    return span


def _is_number(text: str) -> bool:
    """Whether ``text`` is a plain number of seconds (``0``, ``90``, ``1.5``)."""
    return re.fullmatch(r"\d{1,9}(\.\d{1,6})?", text.strip()) is not None
