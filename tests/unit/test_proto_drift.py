"""The committed generated gRPC code must match what protoc makes from the .proto files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
GEN_DIR = REPO / "ffsecure" / "v1"


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in (PROTO_DIR / "ffsecure" / "v1").glob("*.proto"))
    assert protos, "no .proto files found under proto/ffsecure/v1"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{PROTO_DIR}",
         f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}", *protos],
        check=True, cwd=PROTO_DIR, capture_output=True,
    )


def test_generated_code_matches_proto(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    _generate(tmp_path)
    fresh = {p.name: p.read_bytes() for p in (tmp_path / "ffsecure" / "v1").iterdir() if p.is_file()}
    committed = {
        p.name: p.read_bytes() for p in GEN_DIR.iterdir()
        if p.is_file() and (p.name.endswith("_pb2.py") or p.name.endswith("_pb2_grpc.py") or p.name.endswith("_pb2.pyi"))
    }
    assert sorted(fresh) == sorted(committed), "generated file set differs: run scripts/gen_proto.sh"
    for name, data in fresh.items():
        assert committed[name] == data, f"ffsecure/v1/{name} is stale: run scripts/gen_proto.sh"


def test_service_has_the_contract_methods() -> None:
    from ffsecure.v1 import aggregator_pb2

    service = aggregator_pb2.DESCRIPTOR.services_by_name["Aggregator"]
    names = {m.name for m in service.methods}
    assert {"GetFederationInfo", "UploadModule", "GetUploadStatus", "GetCheckpoint",
            "GetInclusionProof", "GetConsistencyProof", "RequestDeletion", "GetClassifier",
            "ReportEvaluation"} <= names
    upload = service.methods_by_name["UploadModule"]
    assert upload.client_streaming and not upload.server_streaming
    assert aggregator_pb2.DESCRIPTOR.package == "ffsecure.v1"
