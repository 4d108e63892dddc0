"""Every ``potluck ...`` command line the docs show names a real command and real options, and
the CLI's option conventions hold for every command (``-o`` is ``--output``)."""

from __future__ import annotations

import re
import shlex
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from potluck.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ROOT_COMMAND = get_command(app)

_FENCE = re.compile(r"^```.*?^```", re.M | re.S)
_INLINE = re.compile(r"`potluck ([^`]+)`")
_PROMPT = re.compile(r"^\s*(?:\$ )?potluck (.*)$")


def _leaves(command: Any, path: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    if _is_group(command):
        return [
            leaf
            for name, sub in sorted(command.commands.items())
            for leaf in _leaves(sub, (*path, name))
        ]
    return [(" ".join(path), command)]


def shown_command_lines(text: str) -> list[str]:
    """The arguments after ``potluck`` of each command line a markdown page shows.

    Lines of fenced code blocks that start with ``potluck`` or ``$ potluck`` (with their
    backslash continuations joined), and inline code spans that start with ``potluck ``.
    """
    lines: list[str] = []
    for block in _FENCE.findall(text):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [m.group(1) for m in map(_PROMPT.match, joined.splitlines()[1:]) if m]
    lines += [" ".join(m.group(1).split()) for m in _INLINE.finditer(_FENCE.sub("", text))]
    return lines


def _bare(token: str) -> str:
    return token.strip("[]").removesuffix("...").strip("[]")


def _is_group(command: Any) -> bool:
    # Typer builds its commands on its own copy of click, so test by shape, not by class.
    return hasattr(command, "commands")


def _choices(option: Any) -> list[str] | None:
    """The values an option takes, when its type is an enum (``--output``: json, table)."""
    kind = option.type_descriptor.annotation
    if isinstance(kind, type) and issubclass(kind, Enum):
        return sorted(str(member.value) for member in kind)
    return None


def _is_placeholder(token: str) -> bool:
    """A metavar in a synopsis (``TABLE``, ``JOB_ID``, ``[ARGS]...``), not a value."""
    bare = _bare(token)
    return bare == "" or bare.upper() == bare and any(c.isalpha() for c in bare)


def _option(command: Any, name: str) -> Any:
    for param in command.params:
        if param.param_type_name == "option" and name in (*param.opts, *param.secondary_opts):
            return param
    return None


def problems_of(line: str) -> list[str]:
    """What is wrong with one shown command line (empty when it names real things)."""
    tokens = shlex.split(line, comments=True)
    found: list[str] = []
    command: Any = ROOT_COMMAND
    index = 0

    def take_options(options_of: Any) -> None:
        nonlocal index
        while index < len(tokens) and _bare(tokens[index]).startswith("-"):
            name, eq, value = _bare(tokens[index]).partition("=")
            index += 1
            option = _option(options_of, name)
            if name == "--help":  # every command has it; click adds it when it parses
                continue
            if option is None:
                found.append(f"{name} is not an option of {options_of.name}")
                continue
            if option.is_flag or option.count:
                if eq:
                    found.append(f"{name} is a flag, given a value")
                continue
            if not eq:
                if index >= len(tokens) or _bare(tokens[index]).startswith("-"):
                    found.append(f"{name} has no value")
                    continue
                value = tokens[index]
                index += 1
            choices = _choices(option)
            if choices is not None and not _is_placeholder(value) and _bare(value) not in choices:
                found.append(f"{name} {value}: not one of {', '.join(choices)}")

    take_options(ROOT_COMMAND)
    while _is_group(command) and index < len(tokens):
        name = tokens[index]
        if _is_placeholder(name):
            return found
        if "|" in name:  # a synopsis of several commands: `jobs list|describe|cancel`
            found += [
                f"{one!r} is not a command of {command.name}"
                for one in name.split("|")
                if one not in command.commands
            ]
            return found
        if name not in command.commands:
            found.append(f"{name!r} is not a command of {command.name}")
            return found
        command = command.commands[name]
        index += 1
    while index < len(tokens):
        if _bare(tokens[index]).startswith("-"):
            take_options(command)
        else:
            index += 1
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_line_in_the_docs_is_real(page: Path) -> None:
    lines = shown_command_lines(page.read_text())
    wrong = {line: problems_of(line) for line in lines}
    assert {line: found for line, found in wrong.items() if found} == {}


def test_the_docs_show_many_command_lines() -> None:
    shown = [line for page in PAGES for line in shown_command_lines(page.read_text())]
    assert len(shown) > 100
    commands = {line.split()[0] for line in shown}
    assert {"init", "apply", "ingest", "historical", "online", "serve"} <= commands


@pytest.mark.parametrize(
    ("line", "problems"),
    [
        ("historical -f t:a -e e.csv --out x.parquet -o json", []),
        (
            "historical -f t:a -e e.csv -o training.parquet",
            ["-o training.parquet: not one of json, table"],
        ),
        ("entities drop x", ["'drop' is not a command of entities"]),
        ("materialize driver_stats", ["'materialize' is not a command of potluck"]),
        ("serve --port 1", ["--port is not an option of serve"]),
        ("--config c.yaml -p fraud entities list [--output json]", []),
        ("jobs describe JOB_ID [--output json]", []),
        ("online purge TABLE --yes=1", ["--yes is a flag, given a value"]),
        ("COMMAND --help", []),
        ("jobs list|describe|drop", ["'drop' is not a command of jobs"]),
    ],
)
def test_the_line_check_finds_what_is_wrong(line: str, problems: list[str]) -> None:
    assert problems_of(line) == problems


@pytest.mark.parametrize(("name", "command"), _leaves(ROOT_COMMAND), ids=lambda v: str(v))
def test_dash_o_means_output_on_every_command(name: str, command: Any) -> None:
    short = [p for p in command.params if "-o" in getattr(p, "opts", ())]
    output = _option(command, "--output")
    if output is not None:
        assert short == [output], f"{name}: --output has no -o"
        assert sorted(_choices(output) or []) == ["json", "table"]
    else:
        assert short == [], f"{name}: -o is not --output"


def test_every_listing_and_report_takes_output_json() -> None:
    leaves = _leaves(ROOT_COMMAND)
    without = {name for name, command in leaves if _option(command, "--output") is None}
    assert without == {
        "auth token create",
        "core",
        "entities delete",
        "feature-tables delete",
        "init",
        "jobs cancel",
        "jobs unschedule",
        "jobservice",
        "projects allow-location",
        "projects archive",
        "projects create",
        "projects restore",
        "serve",
    }
