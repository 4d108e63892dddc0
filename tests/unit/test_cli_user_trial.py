"""Faults a new user's trial of issue 8 found: markup in data, ports out of range, a config file
that is not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from potluck.cli.main import app

runner = CliRunner()


@pytest.fixture()
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith("POTLUCK_") and not name.startswith("POTLUCK_TEST_"):
            monkeypatch.delenv(name)
    assert runner.invoke(app, ["init"]).exit_code == 0
    return tmp_path


def test_text_in_square_brackets_is_printed_literally(project: Path) -> None:
    (project / "odd.yaml").write_text(
        "entities:\n"
        '  - {name: k2, value_type: STRING, description: "[/bold] oops [red]x[/red]", '
        'labels: {team: "[/x]"}}\n'
    )
    assert runner.invoke(app, ["apply", "-f", "odd.yaml"]).exit_code == 0
    listed = runner.invoke(app, ["entities", "list"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0, listed.output
    assert "[/bold] oops [red]x[/red]" in listed.stdout
    assert "team=[/x]" in listed.stdout
    described = runner.invoke(app, ["entities", "describe", "k2"], env={"COLUMNS": "200"})
    assert described.exit_code == 0, described.output
    assert "[/bold] oops [red]x[/red]" in described.stdout


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["serve", "--grpc-port", "70000"], "--grpc-port"),
        (["serve", "--http-port", "65536"], "--http-port"),
        (["core", "--port", "70000"], "--port"),
    ],
)
def test_ports_beyond_65535_are_refused(project: Path, args: list[str], option: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert f"'{option}'" in result.output
    assert "65535" in result.output


def test_a_config_file_that_is_not_utf8_is_one_clear_error(project: Path) -> None:
    (project / "potluck.yaml").write_bytes(b"\x00\xff\n")
    result = runner.invoke(app, ["entities", "list"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: config file {project / 'potluck.yaml'} is not UTF-8 text (byte 1 cannot be "
        "read); save it as UTF-8"
    )


@pytest.mark.parametrize("name", ["training.parquet", "training.csv"])
def test_out_under_a_file_names_the_file(project: Path, name: str) -> None:
    import pyarrow as pa

    from potluck.errors import ValidationError
    from potluck.offline.files import write_atomically

    (project / "notes.txt").write_text("x")
    with pytest.raises(ValidationError) as refused:
        write_atomically(
            pa.table({"a": [1]}), str(project / "notes.txt" / name), file_format="parquet"
        )
    assert refused.value.message == (
        f"cannot write {str(project / 'notes.txt' / name)!r}: "
        f"{str(project / 'notes.txt')!r} is a file, so no folder can be made there; "
        "choose another path"
    )
