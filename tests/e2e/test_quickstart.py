"""The README's quickstart, run as a user runs it: examples/quickstart/quickstart.py in a fresh
copy of the folder, with the venv's python, on embedded defaults."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from potluck import Client
from potluck.config import Settings
from potluck.definitions.loader import load_definitions

QUICKSTART = Path(__file__).resolve().parents[2] / "examples" / "quickstart"
POTLUCK = Path(sys.executable).parent / "potluck"


@pytest.fixture()
def quickstart(tmp_path: Path) -> Path:
    folder = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, folder, ignore=shutil.ignore_patterns(".potluck", "__pycache__"))
    return folder


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POTLUCK_")}
    env["COLUMNS"] = "120"
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_quickstart_applies_and_lists_the_driver_definitions(quickstart: Path) -> None:
    first = _run([sys.executable, "quickstart.py"], quickstart)
    assert (first.returncode, first.stderr) == (0, "")
    out = first.stdout
    assert out.startswith("potluck quickstart, project 'default'\n")
    assert "Step 1: Apply the definitions" in out
    assert re.search(r"│ entity\s+│ driver_id\s+│ create\s+│\s+│", out)
    assert re.search(r"│ feature_table\s+│ driver_stats\s+│ create\s+│ 1\s+│", out)
    assert "Step 2: List the registry" in out
    assert re.search(r"│ driver_id\s+│ INT64\s+│ A driver's id\.\s+│", out)
    assert re.search(
        r"│ driver_stats\s+│ driver_id\s+│ conv_rate, acc_rate, avg_daily_trips\s+│ 1d\s+│ 1\s+│",
        out,
    )
    assert out.endswith("Done. Try: potluck feature-tables describe driver_stats --history\n")

    with Client(settings=Settings(root=quickstart)) as client:
        stored = [*client.list_entities(), *client.list_feature_tables()]
    assert stored == load_definitions(quickstart / "definitions.py")
    assert (quickstart / ".potluck" / "registry.db").is_file()

    second = _run([sys.executable, "quickstart.py"], quickstart)
    assert (second.returncode, second.stderr) == (0, "")
    assert re.search(r"│ entity\s+│ driver_id\s+│ unchanged\s+│", second.stdout)
    assert re.search(r"│ feature_table\s+│ driver_stats\s+│ unchanged\s+│ 1\s+│", second.stdout)
    assert " create " not in second.stdout

    described = _run(
        [str(POTLUCK), "feature-tables", "describe", "driver_stats", "--history", "-o", "json"],
        quickstart,
    )
    assert (described.returncode, described.stderr) == (0, "")
    table = json.loads(described.stdout)
    assert (table["revision"], [h["revision"] for h in table["history"]]) == (1, [1])
