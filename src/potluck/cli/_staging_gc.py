"""``potluck gc --staging``: the age limit of the staging locations, and its report.

Paths are printed with their credentials masked (``s3://KEY:***@bucket/...``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import typer

from potluck._redact import redact_url
from potluck.cli._render import OutputFormat, print_json, show_message
from potluck.cli.main import EXIT_FAILURE, Needs, fail, make_client
from potluck.client import open_registry
from potluck.definitions.serde import format_duration
from potluck.jobservice.staging_age import CollectedLocation, collect
from potluck.offline.staging_gc import StagedItem

KIND_WORDS = {
    "training_set": "training set",
    "staged_call": "Job Service call",
    "driver_log": "driver log",
}
"""How the text report names each kind of item."""


def collect_staging_locations(
    ctx: typer.Context, *, older_than: timedelta, dry_run: bool, output: OutputFormat
) -> None:
    """Collect the staging locations and print the report.

    An item that could not be deleted is listed with its reason, then the command fails (exit
    code 1) saying how many.

    Raises:
        ConfigError: If no staging location is set, or one is no readable folder.
        UnavailableError: If a location's storage or the registry cannot be reached.
    """
    client = make_client(ctx, Needs.REGISTRY)
    registry = open_registry(client.settings)
    try:
        collected = collect(client.settings, registry, older_than=older_than, dry_run=dry_run)
    finally:
        registry.close()
    if output is OutputFormat.JSON:
        print_json([_as_json(entry, older_than) for entry in collected])
    else:
        for entry in collected:
            show_message(*_as_lines(entry))
    failed = sum(len(entry.report.failed) for entry in collected)
    if failed:
        fail(f"could not delete {failed} item(s) listed above (see each reason)", EXIT_FAILURE)


def _as_json(entry: CollectedLocation, older_than: timedelta) -> dict[str, Any]:
    report = entry.report
    return {
        "setting": entry.where.setting,
        "location": redact_url(report.location),
        "exists": report.exists,
        "older_than": format_duration(older_than),
        "dry_run": report.dry_run,
        "deleted": [_item_json(item) for item in report.deleted],
        "kept_running": [_item_json(item) for item in report.kept_running],
        "failed": [{**_item_json(item), "error": why} for item, why in report.failed],
    }


def _item_json(item: StagedItem) -> dict[str, Any]:
    return {
        "path": redact_url(item.path),
        "kind": item.kind,
        "age_seconds": int(item.age.total_seconds()),
        "size_bytes": item.size,
    }


def _as_lines(entry: CollectedLocation) -> list[str]:
    report = entry.report
    head = f"{redact_url(report.location)} ({entry.where.setting})"
    if not report.exists:
        return [f"{head}: no such folder yet, nothing to delete"]
    verb = "would delete" if report.dry_run else "deleted"
    size = _size(sum(item.size for item in report.deleted))
    parts = [f"{verb} {len(report.deleted)} item(s), {size}"]
    if report.kept_running:
        parts.append(f"kept {len(report.kept_running)} still in use")
    if report.failed:
        parts.append(f"could not delete {len(report.failed)}")
    lines = [f"{head}: " + "; ".join(parts)]
    lines += [f"  {_item_line(item)}" for item in report.deleted]
    lines += [f"  kept (in use): {_item_line(item)}" for item in report.kept_running]
    lines += [f"  failed: {_item_line(item)}: {why}" for item, why in report.failed]
    return lines


def _item_line(item: StagedItem) -> str:
    age = format_duration(timedelta(seconds=int(item.age.total_seconds())))
    return f"{redact_url(item.path)}  {KIND_WORDS[item.kind]}, {age} old, {_size(item.size)}"


def _size(size: int) -> str:
    """``size`` bytes for a reader: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if size < 1024:
        return f"{size} B"
    amount = size / 1024
    for unit in ("KiB", "MiB"):
        if amount < 1024:
            return f"{amount:.1f} {unit}"
        amount /= 1024
    return f"{amount:.1f} GiB"


__all__ = ["collect_staging_locations"]
