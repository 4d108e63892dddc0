"""The generated protobuf code under src/potluck/_proto matches protos/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_protos_are_current(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_protos", ROOT / "scripts" / "gen_protos.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_protos"] = module
    spec.loader.exec_module(module)
    module.generate(tmp_path)
    committed = ROOT / "src" / "potluck" / "_proto"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    current = sorted(
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert fresh == current
    stale = [str(p) for p in fresh if (tmp_path / p).read_bytes() != (committed / p).read_bytes()]
    assert stale == [], f"run `make protos`: stale generated files {stale}"


def test_serving_service_keeps_feasts_wire_names() -> None:
    from potluck._proto.feast.serving import ServingService_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["ServingService"]
    assert service.full_name == "feast.serving.ServingService"
    assert [m.name for m in service.methods] == ["GetFeastServingInfo", "GetOnlineFeatures"]
    assert pb.FieldStatus.Value("OUTSIDE_MAX_AGE") == 4
