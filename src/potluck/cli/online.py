"""The online commands: ingest-online, jobs, and online get and purge."""

from __future__ import annotations

import json
import shlex
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from potluck.cli._interrupts import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    Interrupts,
    deferred_interrupts,
)
from potluck.cli._job_table import show_jobs
from potluck.cli._render import (
    OutputFormat,
    OutputOption,
    display_value,
    iso_utc,
    json_value,
    output_option,
    print_json,
    show_message,
    show_table,
    visible,
)
from potluck.cli.main import (
    EXIT_FAILURE,
    confirm,
    fail,
    global_options,
    make_client,
)
from potluck.client import Client
from potluck.errors import ValidationError
from potluck.ingestion.job_ids import match_job_id, short_ids
from potluck.ingestion.jobs import Job, JobStatus, describe
from potluck.types import ValueType

if TYPE_CHECKING:
    from potluck.ingestion.engines.base import IngestionJob

PROGRESS_REFRESH = 0.1
"""Seconds between two refreshes of the progress bar."""

jobs_app = typer.Typer(
    help="List, describe and cancel jobs; schedule ingestion.", no_args_is_help=True
)
online_app = typer.Typer(
    help="Read online features, or purge a table's online values.", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    """Add the online commands to ``app``."""
    app.command("ingest-online")(ingest_online)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(online_app, name="online")
    jobs_app.command("list")(jobs_list)
    jobs_app.command("describe")(jobs_describe)
    jobs_app.command("cancel")(jobs_cancel)
    online_app.command("get")(online_get)
    online_app.command("purge")(online_purge)


def _when(value: str | None, option: str | None = None) -> datetime | None:
    """Read an ISO 8601 time, given to ``option`` (``--start``) or as a value; naive is UTC."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        given = f"{option} {value!r}" if option else repr(value)
        raise ValidationError(
            f"{given} is not a date or time; use ISO 8601 such as 2024-05-01 or "
            "2024-05-01T12:00:00Z",
            field=option.lstrip("-") if option else "time",
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _check_range_options(
    start: datetime | None, end: datetime | None, *, since_last: bool, full: bool
) -> None:
    """Refuse what ``ingest-online`` cannot do, naming its options (not the SDK's arguments).

    Raises:
        ValidationError: For ``--since-last`` with ``--start``/``--end`` or ``--full``, or a
            ``--start`` not before ``--end``.
    """
    if since_last and (start is not None or end is not None):
        raise ValidationError(
            "--since-last cannot be combined with --start or --end: a since-last run loads "
            "every row committed since the previous one, and a range would leave the rest "
            "behind for good; drop the range, or run a ranged load without --since-last",
            field="since_last",
        )
    if since_last and full:
        raise ValidationError(
            "--full cannot be combined with --since-last: a full reload reads every row of the "
            "batch source (within --start and --end); drop one of them",
            field="full",
        )
    if start is not None and end is not None and start >= end:
        raise ValidationError(
            f"--start ({start.isoformat()}) must be before --end ({end.isoformat()})",
            field="start",
        )


def ingest_online(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table to load.")],
    start: Annotated[
        str | None,
        typer.Option("--start", help="Copy rows with event time >= START (ISO 8601; UTC)."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", help="Copy rows with event time < END (ISO 8601; UTC)."),
    ] = None,
    since_last: Annotated[
        bool,
        typer.Option(
            "--since-last",
            help="Copy only rows ingested after those the previous successful run read.",
        ),
    ] = False,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Reload: rewrite stored values even when the rows read are not newer (a "
            "strictly newer stored value still wins), so values stored under an older "
            "definition follow the current one. Not with --since-last.",
        ),
    ] = False,
    output: Annotated[
        OutputFormat,
        output_option(
            "How to print the job's outcome: a line of text (table), or its record as JSON (json)."
        ),
    ] = OutputFormat.TABLE,
) -> None:
    """Copy the latest row per key of TABLE's batch source into the online store.

    On a terminal, shows a progress bar (rows read of the rows in range, with an ETA). Ctrl-C
    (once or many times) cancels the job at its next batch, waits for it to stop and exits 130;
    SIGTERM does the same and exits 143.
    """
    first, last = _when(start, "--start"), _when(end, "--end")
    _check_range_options(first, last, since_last=since_last, full=full)
    client = make_client(ctx)
    with deferred_interrupts() as interrupts:
        job = client.start_offline_to_online_ingestion(
            table, first, last, since_last=since_last, full=full
        )
        record = _follow(job, interrupts)
        stats = record.stats
        if output is OutputFormat.JSON:
            print_json(describe(record))
        else:
            typer.echo(
                f"job {record.id} {record.status.value}: {stats.rows_read} rows read, "
                f"{stats.rows_written} written, {stats.rows_skipped} skipped, "
                f"{stats.rows_rejected} rejected"
            )
    if interrupts.count:
        fail(_interrupted(ctx, record, terminated=interrupts.terminated), _stop_code(interrupts))
    if record.status is JobStatus.FAILED:
        fail(f"job {record.id} failed: {record.error}", EXIT_FAILURE)
    if record.status is JobStatus.CANCELLED:
        fail(
            f"job {record.id} was cancelled (potluck jobs cancel); rows already written stay",
            EXIT_FAILURE,
        )


def _stop_code(interrupts: Interrupts) -> int:
    return EXIT_TERMINATED if interrupts.terminated else EXIT_INTERRUPTED


def _interrupted(ctx: typer.Context, record: Job, *, terminated: bool) -> str:
    """The error line of ``ingest-online`` a signal stopped: the job, its status, where to look."""
    reason = f" ({record.error})" if record.status is JobStatus.FAILED and record.error else ""
    options = global_options(ctx)
    again = ["potluck"]
    if options.config is not None:
        again += ["--config", shlex.quote(str(options.config))]
    if options.project is not None:
        again += ["--project", shlex.quote(options.project)]
    return (
        f"{'terminated' if terminated else 'interrupted'}: job {record.id} stopped with status "
        f"{record.status.value}{reason}; rows "
        f"already written stay; see `{' '.join(again)} jobs describe {record.id}`"
    )


def _follow(job: IngestionJob, interrupts: Interrupts) -> Job:
    """Follow ``job`` until it ends, with a progress bar on stderr when it is a terminal.

    Once ``interrupts`` counts a signal, the job is asked to stop at its next batch; it is
    followed until it has ended whatever comes next, so it is never left running unwatched.

    Returns:
        The job's final record.
    """
    console = Console(stderr=True)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(bar_width=None),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]}"),
        TextColumn("eta"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        expand=True,
    ) as bar:
        record = job.record()
        name = visible(record.spec.table)
        task = bar.add_task(name, total=None, rows="")
        stopping = False
        while not record.status.is_terminal:
            if interrupts.count and not stopping:
                job.cancel()
                stopping = True
                bar.update(task, description=f"{name}: stopping at the next batch")
            bar.update(task, **_bar_fields(record))
            time.sleep(PROGRESS_REFRESH)
            record = job.record()
        bar.update(task, **_bar_fields(record))
    return record


def _bar_fields(record: Job) -> dict[str, Any]:
    """The progress bar's state for ``record``: rows read of the rows in range."""
    done, total = record.stats.rows_read, record.rows_total
    if total is None:
        return {"completed": done, "total": None, "rows": f"{done:,} rows"}
    total = max(total, done)  # the count is an upper bound; never show more than 100%
    return {"completed": done, "total": total, "rows": f"{done:,}/{total:,} rows"}


def jobs_list(
    ctx: typer.Context,
    table: Annotated[str | None, typer.Option("--table", help="Only this table's jobs.")] = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List the project's ingestion jobs, newest first, by their shortest unique id prefix.

    A prefix shown here is accepted by jobs describe and jobs cancel.
    """
    client = make_client(ctx)
    jobs = client.list_jobs(table)
    if output is OutputFormat.JSON:
        print_json([describe(j) for j in jobs])
        return
    every = jobs if table is None else client.list_jobs()
    show_jobs(jobs, short_ids(j.id for j in every))


def _job_id(client: Client, given: str) -> str:
    """Return the id of the project's one job whose id is or starts with ``given``."""
    return match_job_id([j.id for j in client.list_jobs()], given, client.project)


JobIdArgument = Annotated[
    str,
    typer.Argument(
        help="The job's id, or a prefix of it that no other job of the project has (as jobs "
        "list shows).",
        metavar="JOB_ID",
    ),
]


def jobs_describe(
    ctx: typer.Context,
    job_id: JobIdArgument,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Show everything recorded about one job."""
    client = make_client(ctx)
    data = describe(client.get_job(_job_id(client, job_id)).record())
    if output is OutputFormat.JSON:
        print_json(data)
        return
    width = max(len(k) for k in data)
    show_message(
        *(f"{key:<{width}}  {'' if value is None else value}" for key, value in data.items())
    )


def jobs_cancel(ctx: typer.Context, job_id: JobIdArgument) -> None:
    """Ask a running job to stop at its next batch; a job that has ended is left as it is."""
    client = make_client(ctx)
    job = client.get_job(_job_id(client, job_id))
    record = job.record()
    job.cancel()  # needs run_jobs whatever the job's state; a job that has ended is left as it is
    if record.status.is_terminal:
        reason = f" ({record.error})" if record.error else ""
        show_message(
            f"job {record.id} has already ended with status {record.status.value}{reason}; "
            "nothing to cancel"
        )
        return
    show_message(f"cancel requested for job {record.id} (status {record.status.value})")


def _parse_entity(text: str, value_type: ValueType, name: str) -> Any:
    try:
        if value_type in (ValueType.INT32, ValueType.INT64):
            return int(text)
        if value_type in (ValueType.DOUBLE, ValueType.FLOAT):
            return float(text)
        if value_type is ValueType.BOOL:
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if value_type is ValueType.BYTES:
            return text.encode()
        if value_type is ValueType.UNIX_TIMESTAMP:
            return _when(text)
    except ValueError:
        raise ValidationError(
            f"entity {name!r} has type {value_type.name}; {text!r} is not such a value",
            field="entity",
            entity=name,
        ) from None
    return text


def online_get(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Feature references, e.g. driver_stats:*.")],
    entity: Annotated[
        list[str],
        typer.Option(
            "--entity",
            "-e",
            help="An entity value as name=value; repeat a name for more rows, give every "
            "entity of a composite key.",
        ),
    ],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Read the latest values of REFS for the given entity rows."""
    client = make_client(ctx)
    columns: dict[str, list[Any]] = {}
    for item in entity:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValidationError(
                f"--entity {item!r} must be name=value, e.g. driver_id=1001", field="entity"
            )
        value_type = client.get_entity(name).value_type
        columns.setdefault(name, []).append(_parse_entity(text, value_type, name))
    counts = {name: len(values) for name, values in columns.items()}
    if len(set(counts.values())) > 1:
        given = ", ".join(f"{name} {n} time{'' if n == 1 else 's'}" for name, n in counts.items())
        raise ValidationError(
            f"--entity names {given}; a row needs one value of each entity of the key, so give "
            "each name as many times as there are rows",
            field="entity",
        )
    response = client.get_online_features(refs, columns)
    values, statuses = response.to_dict(), response.statuses()
    times = response.event_timestamps()
    if output is OutputFormat.JSON:
        data = {
            "values": {name: json_value(column) for name, column in values.items()},
            "statuses": statuses,
            "event_timestamps": {name: json_value(column) for name, column in times.items()},
        }
        print(json.dumps(data, indent=2))
        return
    kinds = dict(zip(response.names, response.value_types, strict=True))
    rows = []
    for row in range(len(response)):
        for name in response.names:
            moment = times[name][row]
            rows.append(
                (
                    str(row),
                    name,
                    display_value(values[name][row], kinds[name]),
                    statuses[name][row],
                    "" if moment is None else iso_utc(moment),
                )
            )
    show_table(("row", "column", "value", "status", "event time (UTC)"), rows)


def online_purge(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table whose online values go.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Delete every value of TABLE from the online store (its definition and batch source stay).

    Prints how many values were removed; ingest-online loads the table again.
    """
    client = make_client(ctx)
    client.get_feature_table(table)
    if not yes:
        confirm(
            f"Delete every online value of feature table {table!r} in project {client.project!r}?",
            action=f"purge the online values of feature table {table!r}",
        )
    removed = client.purge_online(table)
    if output is OutputFormat.JSON:
        print(json.dumps({"project": client.project, "table": table, "removed": removed}))
        return
    typer.echo(
        f"purged {removed} entity keys of feature table {table!r} (project {client.project!r}) "
        "from the online store"
    )
