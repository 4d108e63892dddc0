r"""Command help as prose: each docstring paragraph is one line, so the terminal rewraps it.

Typer's rich help keeps the line breaks of a docstring's later paragraphs, so a paragraph
written over several source lines came out broken mid-sentence wherever the terminal was
narrower than the source ("... Ctrl-C stops it / cleanly"). :func:`reflow_help` joins the lines
of every paragraph (paragraphs are separated by a blank line; one that starts with click's
``\b`` marker keeps its lines), for a command and all its subcommands.
"""

from __future__ import annotations

import inspect
from typing import Any

NO_REWRAP = "\b"
"""click's marker of a paragraph whose line breaks are kept."""


def reflow_help(command: Any) -> None:
    """Join the lines of each help paragraph of ``command`` and its subcommands (in place).

    Args:
        command: A click (or Typer's vendored click) command or group.
    """
    if command.help:
        command.help = reflow(command.help)
    for sub in getattr(command, "commands", {}).values():
        reflow_help(sub)


def reflow(text: str) -> str:
    r"""Return ``text`` (a docstring) with each paragraph on one line.

    Example:
        >>> reflow("Run it.\n\n    Stops it\n    cleanly.")
        'Run it.\n\nStops it cleanly.'
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        p if p.startswith(NO_REWRAP) else " ".join(line.strip() for line in p.splitlines())
        for p in paragraphs
    )


__all__ = ["NO_REWRAP", "reflow", "reflow_help"]
