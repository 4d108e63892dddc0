"""``potluck jobs schedule``, ``jobs unschedule`` and ``jobs schedules``: scheduled ingestion.

They go through the Job Service when ``job_service_url`` is set, else write the registry
directly (``Client.schedule_offline_to_online_ingestion``). Either way, only a running Job
Service (``potluck jobservice``, or ``potluck core --job-service``) on the same registry runs
the schedules; every command says so.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from potluck.cli._render import (
    OutputFormat,
    OutputOption,
    iso_utc,
    print_json,
    show_message,
    show_table,
)
from potluck.cli.main import make_client
from potluck.cli.online import jobs_app
from potluck.definitions.serde import format_duration, parse_duration
from potluck.ingestion.jobs import utc_now
from potluck.jobservice.scheduler import check_cron, check_look_back, next_tick
from potluck.registry.base import Schedule

WHERE_THEY_RUN = (
    "schedules run only while a Job Service (potluck jobservice, or potluck core "
    "--job-service) runs on this registry"
)
"""The reminder every schedule command prints."""

SCHEDULE_COLUMNS = ("table", "cron (UTC)", "look back", "last tick (UTC)", "next tick (UTC)")
"""The columns of ``jobs schedules``."""


def register(app: typer.Typer) -> None:
    """Add the schedule commands to ``potluck jobs`` (``app`` is the root, unused here)."""
    jobs_app.command("schedule")(jobs_schedule)
    jobs_app.command("unschedule")(jobs_unschedule)
    jobs_app.command("schedules")(jobs_schedules)


def schedule_json(schedule: Schedule) -> dict[str, Any]:
    """Return a schedule as ``jobs schedules -o json`` prints it (times ISO 8601 UTC)."""
    return {
        "project": schedule.project,
        "table": schedule.table,
        "cron": schedule.cron,
        "look_back": format_duration(schedule.look_back),
        "created_at": iso_utc(schedule.created_at),
        "last_tick": None if schedule.last_tick is None else iso_utc(schedule.last_tick),
        "next_tick": iso_utc(next_tick(schedule.cron, utc_now())),
    }


def jobs_schedule(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table to load on a schedule.")],
    cron: Annotated[
        str,
        typer.Option(
            "--cron",
            help="When to run, in UTC: 5 fields 'minute hour day month weekday' (such as "
            "'0 * * * *', hourly), or 6 with seconds first (such as '*/10 * * * * *', every "
            "10 seconds).",
        ),
    ],
    look_back: Annotated[
        str,
        typer.Option(
            "--look-back",
            help="The span each run loads, ending at its tick: such as 1h, 30m, 1d; at most "
            "36500d.",
        ),
    ],
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Load TABLE's batch source online at each tick of --cron (replaces its schedule).

    Each run is an offline-to-online job over [tick - look back, tick). Schedules run only
    while a Job Service (potluck jobservice, or potluck core --job-service) runs on this
    registry; through it when job_service_url is set, else the registry is written directly.
    """
    check_cron(cron, "--cron")
    span = parse_duration(look_back, "--look-back")
    check_look_back(span, "--look-back", given=look_back)
    client = make_client(ctx)
    schedule = client.schedule_offline_to_online_ingestion(table, cron, span)
    if output is OutputFormat.JSON:
        print_json(schedule_json(schedule))
        return
    data = schedule_json(schedule)
    show_message(
        f"scheduled {schedule.table}: cron '{schedule.cron}' (UTC), each run loads the "
        f"{data['look_back']} before its tick; next tick {data['next_tick']}",
        f"note: {WHERE_THEY_RUN}",
    )


def jobs_unschedule(
    ctx: typer.Context,
    table: Annotated[str, typer.Argument(help="The feature table whose schedule to remove.")],
) -> None:
    """Remove TABLE's schedule; jobs it already started go on."""
    make_client(ctx).unschedule_offline_to_online_ingestion(table)
    show_message(f"unscheduled {table}; jobs it already started go on")


def jobs_schedules(ctx: typer.Context, output: OutputOption = OutputFormat.TABLE) -> None:
    """List the project's schedules, with each one's next tick.

    Schedules run only while a Job Service (potluck jobservice, or potluck core --job-service)
    runs on this registry.
    """
    schedules = make_client(ctx).list_schedules()
    if output is OutputFormat.JSON:
        print_json([schedule_json(s) for s in schedules])
        return
    if not schedules:
        show_message(f"no schedules; set one with potluck jobs schedule ({WHERE_THEY_RUN})")
        return
    rows = []
    for schedule in schedules:
        data = schedule_json(schedule)
        rows.append(
            (
                schedule.table,
                schedule.cron,
                data["look_back"],
                data["last_tick"] or "-",
                data["next_tick"],
            )
        )
    show_table(SCHEDULE_COLUMNS, rows)
    show_message(f"note: {WHERE_THEY_RUN}")


__all__ = ["SCHEDULE_COLUMNS", "register", "schedule_json"]
