"""The docs cover what the code declares: settings, plug-ins, commands, and the README's promise."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command

from potluck.cli import registry as registry_commands
from potluck.cli import serve as serve_commands
from potluck.cli.main import app
from potluck.config import SETTING_NAMES
from potluck.plugins import INTERFACES

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_every_setting_has_a_section_in_configuration_md(name: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert re.search(rf"^### `{name}`$", text, re.M), f"docs/configuration.md lacks ### `{name}`"


@pytest.mark.parametrize(
    ("interface", "name"),
    [(i.name, n) for i in INTERFACES for n in i.builtins],
)
def test_every_builtin_plugin_is_documented(interface: str, name: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert f"`type: {name}`" in text, f"docs/configuration.md lacks the {interface} {name!r}"


def test_every_command_and_parameter_has_help() -> None:
    missing = []
    for path, command in _walk(get_command(app), ("potluck",)):
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {param.name}")
    assert missing == []


def test_every_registry_and_service_command_is_in_cli_md() -> None:
    ours = typer.Typer()
    registry_commands.register(ours)
    serve_commands.register(ours)
    text = (DOCS / "cli.md").read_text()
    headings = set(re.findall(r"^### `potluck ([a-z\- ]+?)(?: \[| [A-Z-]|`)", text, re.M))
    leaves = {
        " ".join(path)
        for path, command in _walk(get_command(ours))
        if path and not getattr(command, "commands", None)
    }
    assert len(leaves) == 12
    assert sorted(leaves - headings) == []


def test_readme_starts_with_make_quickstart_and_make_test() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```\w*\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [
        line.split("#")[0].strip()
        for line in first_block.group(1).splitlines()
        if line.split("#")[0].strip()
    ]
    assert commands[:2] == ["make quickstart", "make test"]
    assert readme.index("make quickstart") < readme.index("make test") < readme.index("## ")
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^quickstart:", makefile, re.M)
    assert re.search(r"^test:", makefile, re.M)
    ci = [
        line for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith(("#", "set ", "cd "))
    ]
    assert ci == ["make test"]


@pytest.mark.parametrize(
    "page",
    [ROOT / "README.md", *sorted(DOCS.glob("*.md"))],
    ids=lambda p: p.name,
)
def test_relative_links_resolve(page: Path) -> None:
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        linked = (page.parent / file_part).resolve() if file_part else page
        assert linked.is_file(), f"{page.name}: broken link {target}"
        if anchor:
            headings = re.findall(r"^#+ (.+)$", linked.read_text(), re.M)
            assert anchor in {_slug(h) for h in headings}, f"{page.name}: broken anchor {target}"


def test_design_md_names_the_settings_the_code_has() -> None:
    text = (DOCS / "design.md").read_text()
    for name in SETTING_NAMES:
        assert re.search(rf"^{name}:", text, re.M), f"docs/design.md's config sample lacks {name}"
