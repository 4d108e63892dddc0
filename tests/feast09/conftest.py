"""Feast 0.9's SDK in its own virtual environment, for the tests that run it as a client.

``make test`` builds it first (``scripts/feast09_venv.sh``, in ``.venv-feast09`` or
``$POTLUCK_FEAST09_VENV``); the fixture runs the same script, which returns at once when the venv
is already built. If it cannot be built (no package index),
the tests fail under ``CI=true`` and are skipped elsewhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def feast09_python() -> Path:
    """The Python of a venv that has ``feast==0.9.5.2`` installed."""
    venv = Path(os.environ.get("POTLUCK_FEAST09_VENV") or ROOT / ".venv-feast09")
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "feast09_venv.sh")],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        problem = f"Feast 0.9's SDK venv could not be built: {built.stderr[-2000:]}"
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    return venv / "bin" / "python"
