"""Generate src/potluck/_proto from protos/ (run after editing a .proto file).

Usage: python scripts/gen_protos.py [OUT_DIR]

The generated modules are committed; tests/unit/test_protos.py fails when they are stale.
Imports in the generated code are rewritten to live under ``potluck._proto``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
IMPORT = re.compile(
    r"^from (potluck\.(?:core|jobservice)\.v1|feast\.(?:core|serving|types)) import", re.M
)


def generate(out: Path) -> None:
    """Generate every proto under protos/ into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    bin_dir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    include = Path(grpc_tools.__file__).parent / "_proto"
    files = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{include}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            f"--mypy_out={out}",
            *files,
        ]
    )
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")
    for path in [*out.rglob("*.py"), *out.rglob("*.pyi")]:
        text = IMPORT.sub(r"from potluck._proto.\1 import", path.read_text())
        path.write_text(text)
    for folder in [out, *(p for p in out.rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "src" / "potluck" / "_proto")
