"""Run one of the ``_sdk_*_client.py`` scripts with Feast 0.9's own SDK, in its own venv."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any


def run_feast_script(
    python: Path,
    script: Path,
    order: dict[str, Any],
    *,
    home: Path,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Run ``script`` with the Feast venv's ``python``, ``order`` as JSON on its stdin.

    Returns:
        The JSON object the script prints on its last stdout line.

    Raises:
        AssertionError: If the script exits non-zero (with the end of its stderr).
    """
    run = subprocess.run(
        [str(python), str(script)],
        input=json.dumps(order),
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python",
            "FEAST_TELEMETRY": "False",
            **(env or {}),
        },
        timeout=timeout,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    result: dict[str, Any] = json.loads(run.stdout.splitlines()[-1])
    return result
