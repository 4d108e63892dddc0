"""The docs cover what the code declares: settings, plug-ins, commands, and the README's promise."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.main import get_command

from potluck.cli.main import COMMAND_MODULES, app
from potluck.config import SETTING_NAMES
from potluck.plugins import INTERFACES, Interface, plugin_class

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _walk(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from _walk(sub, (*path, name))


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _section(text: str, heading: str, level: int) -> str:
    """Return the text under the markdown heading line ``heading`` (``level`` #s) up to the next
    heading of that level or higher; empty if there is no such heading."""
    pattern = rf"^{'#' * level} {re.escape(heading)}\n(.*?)(?=^#{{1,{level}}} |\Z)"
    match = re.search(pattern, text, re.M | re.S)
    return match.group(1) if match else ""


LEAF_COMMANDS = {
    " ".join(path): command
    for path, command in _walk(get_command(app))
    if path and not getattr(command, "commands", None)
}
"""Every command a user can run, by its name (``jobs list``), from the registered typer app."""

CLI_HEADING = re.compile(r"^### `potluck ([a-z][a-z\- ]*?)(?=`| [A-Z\[-])(.*)`$", re.M)
"""A command's heading in docs/cli.md: the command name, then its synopsis."""


def _cli_sections() -> dict[str, tuple[str, str]]:
    """docs/cli.md's command sections: name -> (synopsis in the heading, the section's text)."""
    text = (DOCS / "cli.md").read_text()
    return {
        m.group(1): (m.group(2), _section(text, m.group(0)[4:], 3))
        for m in CLI_HEADING.finditer(text)
    }


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_every_setting_has_a_section_in_configuration_md(name: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert re.search(rf"^### `{name}`$", text, re.M), f"docs/configuration.md lacks ### `{name}`"


@pytest.mark.parametrize(
    ("interface", "name"),
    [(i, n) for i in INTERFACES for n in i.builtins],
    ids=lambda v: v.name if isinstance(v, Interface) else v,
)
def test_every_builtin_plugin_and_config_key_is_documented(interface: Interface, name: str) -> None:
    text = (DOCS / "configuration.md").read_text()
    plugins = _section(text, f"`{interface.name}` plug-ins", 3)
    section = _section(plugins, f"`type: {name}`", 4)
    assert section.strip(), f"configuration.md lacks #### `type: {name}` under {interface.name}"
    fields = set(plugin_class(interface, name).config_class.model_fields) - {"type"}
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == fields, f"{interface.name} {name}: keys in the docs != config fields"


def test_every_command_and_parameter_has_help() -> None:
    missing = []
    for path, command in _walk(get_command(app), ("potluck",)):
        if not (command.help or "").strip():
            missing.append(" ".join(path))
        for param in command.params:
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{' '.join(path)} {param.name}")
    assert missing == []


def test_the_command_walk_sees_every_command_module() -> None:
    modules = {
        getattr(command.callback, "__wrapped__", command.callback).__module__
        for command in LEAF_COMMANDS.values()
    }
    assert modules == set(COMMAND_MODULES)


@pytest.mark.parametrize("name", sorted(LEAF_COMMANDS))
def test_every_command_has_a_section_in_cli_md_naming_its_parameters(name: str) -> None:
    sections = _cli_sections()
    assert name in sections, f"docs/cli.md lacks ### `potluck {name} ...`"
    synopsis, body = sections[name]
    assert body.strip(), f"docs/cli.md: the section of potluck {name} is empty"
    for param in LEAF_COMMANDS[name].params:
        if param.param_type_name == "option" and param.name != "help":
            flag = max(param.opts, key=len)
            mentioned = re.search(rf"{re.escape(flag)}(?![\w-])", synopsis + body)
            assert mentioned, f"docs/cli.md: potluck {name} lacks {flag}"
        elif param.param_type_name == "argument":
            metavar = param.metavar or param.name.upper()
            assert metavar in synopsis, f"docs/cli.md: potluck {name} lacks {metavar}"


def test_every_command_section_in_cli_md_is_a_real_command() -> None:
    assert sorted(set(_cli_sections()) - set(LEAF_COMMANDS)) == []


def test_every_global_option_is_in_cli_md() -> None:
    options = _section((DOCS / "cli.md").read_text(), "Global options", 2)
    for param in get_command(app).params:
        if param.name != "help":
            assert all(f"`{opt}" in options for opt in param.opts), param.name


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
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
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
