"""The table ``potluck jobs list`` prints: one row per job, ids never cut at any width."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone

from rich import box
from rich.table import Table

from potluck.cli._render import console, visible
from potluck.ingestion.jobs import Job

JOB_LIST_COLUMNS = ("id", "table", "status", "read", "written", "started (UTC)")
"""The columns of ``jobs list``; the rest of a job's record is in ``jobs describe``."""

WRAP_ORDER = ("table", "started (UTC)", "read", "written", "status")
"""The columns that wrap when the terminal is too narrow, the first ones first; never the id."""

NARROWEST = 3
"""The fewest characters a wrapping column is given."""

_NUMBER_COLUMNS = frozenset({"read", "written"})


def _minute(moment: datetime | None) -> str:
    return "" if moment is None else moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M")


def _layout(widths: Mapping[str, int], width: int) -> tuple[int, frozenset[str], int]:
    """Choose the gap between columns, the columns that wrap, and the width to print at.

    Two spaces between columns and only the table column wrapping, if that fits; else more
    columns wrap, in :data:`WRAP_ORDER`, until it fits; else one space between columns. The
    width is the terminal's, or more when even that does not fit the ids.
    """
    for gap in (2, 1):
        gaps = gap * (len(widths) - 1)
        for count in range(1, len(WRAP_ORDER) + 1):
            wrapping = frozenset(WRAP_ORDER[:count])
            needed = gaps + sum(NARROWEST if n in wrapping else w for n, w in widths.items())
            if needed <= width:
                return gap, wrapping, width
    gaps = len(widths) - 1
    return 1, frozenset(WRAP_ORDER), widths["id"] + gaps + NARROWEST * len(WRAP_ORDER)


def show_jobs(jobs: Sequence[Job], short_ids: Mapping[str, str]) -> None:
    """Print jobs, one row each: short id, table, status, rows read and written, start time.

    Ids are never cut. Columns are two spaces apart and a long table name wraps within its
    column; on a narrower terminal the started time, then the row counts, then the status wrap
    too, then columns are one space apart; on a terminal narrower than the ids plus four
    characters per other column, rows run past its edge (the terminal wraps them) rather than
    cut an id.

    Args:
        jobs: The jobs, in the order shown.
        short_ids: Each job's id as shown (``{id: unique prefix}``).
    """
    rows = [
        [
            visible(cell)
            for cell in (
                short_ids[job.id],
                job.spec.table,
                job.status.value,
                f"{job.stats.rows_read:,}",
                f"{job.stats.rows_written:,}",
                _minute(job.started_at),
            )
        ]
        for job in jobs
    ]
    widths = {
        name: max([len(name), *(len(row[i]) for row in rows)])
        for i, name in enumerate(JOB_LIST_COLUMNS)
    }
    out = console()
    gap, wrapping, out.width = _layout(widths, out.width)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        padding=(0, 1) if gap == 2 else 0,
    )
    for name in JOB_LIST_COLUMNS:
        table.add_column(
            name,
            width=widths[name] if name == "id" else None,
            justify="right" if name in _NUMBER_COLUMNS else "left",
            no_wrap=name not in wrapping,
            overflow="fold",
        )
    for row in rows:
        table.add_row(*row)
    out.print(table)
