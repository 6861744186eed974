"""The committed generated gRPC code must describe exactly the .proto files.

The contract is the file descriptor: what protoc compiles from
``proto/ffsecure/v1/*.proto`` must equal, message for message, the descriptor
serialized into the committed ``ffsecure/v1/*_pb2.py``. A release of the code
generator that only changes its banner (``GRPC_GENERATED_VERSION``, the
protobuf runtime check) is not a contract change; a renamed field, a new
method or a changed type is, and fails here.

The service stubs (``*_pb2_grpc.py``) and type stubs (``*_pb2.pyi``) carry no
descriptor; they are regenerated with the installed (locked) grpcio-tools and
compared with their version banners masked. ``make lock`` regenerates all of
them when it moves grpcio-tools.
"""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

REPO = Path(__file__).resolve().parents[2]
PROTO_DIR = REPO / "proto"
GEN_DIR = REPO / "ffsecure" / "v1"

# Lines whose content is the generator's version, not the contract.
_BANNERS = (
    re.compile(r"^GRPC_GENERATED_VERSION = '[0-9.]+'$", re.MULTILINE),
    re.compile(r"^# Protobuf Python Version: [0-9.]+$", re.MULTILINE),
)


def _protos(proto_dir: Path) -> list[str]:
    protos = sorted(
        str(p.relative_to(proto_dir)) for p in (proto_dir / "ffsecure" / "v1").glob("*.proto")
    )
    assert protos, f"no .proto files found under {proto_dir}/ffsecure/v1"
    return protos


def _protoc(proto_dir: Path, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_dir}", *args, *_protos(proto_dir)],
        cwd=proto_dir,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"protoc failed: {done.stderr}"


def _without_json_names(
    proto: descriptor_pb2.FileDescriptorProto,
) -> descriptor_pb2.FileDescriptorProto:
    """protoc's descriptor sets fill in json_name, which the Python generator
    leaves out of the embedded descriptor; it is derived from the field name,
    so dropping it loses nothing the contract says."""

    def clear(messages) -> None:
        for message in messages:
            for field in message.field:
                field.ClearField("json_name")
            clear(message.nested_type)

    clear(proto.message_type)
    return proto


def compiled_descriptors(
    proto_dir: Path, scratch: Path
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """Compile the .proto files under proto_dir into their file descriptors."""
    out = scratch / "descriptors.pb"
    _protoc(proto_dir, f"--descriptor_set_out={out}")
    files = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    return {f.name: _without_json_names(f) for f in files}


def committed_descriptors() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The descriptors serialized into the committed *_pb2.py modules."""
    found = {}
    for path in sorted(GEN_DIR.glob("*_pb2.py")):
        module = importlib.import_module(f"ffsecure.v1.{path.stem}")
        proto = descriptor_pb2.FileDescriptorProto.FromString(module.DESCRIPTOR.serialized_pb)
        found[proto.name] = _without_json_names(proto)
    return found


def contract_differences(
    compiled: dict[str, descriptor_pb2.FileDescriptorProto],
    committed: dict[str, descriptor_pb2.FileDescriptorProto],
) -> list[str]:
    """Human-readable differences between two descriptor sets; empty when equal."""
    problems = []
    for name in sorted(set(compiled) ^ set(committed)):
        where = "only in the .proto files" if name in compiled else "only in the committed code"
        problems.append(f"{name}: {where}")
    for name in sorted(set(compiled) & set(committed)):
        if compiled[name] != committed[name]:
            problems.append(f"{name}: the committed descriptor differs from the .proto file")
    return problems


def _masked(text: str) -> str:
    for banner in _BANNERS:
        text = banner.sub("<generator version>", text)
    return text


def test_committed_descriptors_equal_the_proto_files(tmp_path: Path) -> None:
    problems = contract_differences(
        compiled_descriptors(PROTO_DIR, tmp_path), committed_descriptors()
    )
    assert problems == [], "; ".join(problems) + ": run scripts/gen_proto.sh"


def test_a_renamed_field_is_a_contract_change(tmp_path: Path) -> None:
    edited = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, edited)
    proto = edited / "ffsecure" / "v1" / "aggregator.proto"
    text = proto.read_text(encoding="utf-8")
    assert "bytes signed_manifest = 1;" in text
    proto.write_text(
        text.replace("bytes signed_manifest = 1;", "bytes signed_manifest_v2 = 1;"),
        encoding="utf-8",
    )
    problems = contract_differences(compiled_descriptors(edited, tmp_path), committed_descriptors())
    assert problems == [
        "ffsecure/v1/aggregator.proto: the committed descriptor differs from the .proto file"
    ]


def test_an_added_method_is_a_contract_change(tmp_path: Path) -> None:
    edited = tmp_path / "proto"
    shutil.copytree(PROTO_DIR, edited)
    proto = edited / "ffsecure" / "v1" / "aggregator.proto"
    text = proto.read_text(encoding="utf-8")
    anchor = "service Aggregator {"
    assert anchor in text
    proto.write_text(
        text.replace(anchor, anchor + "\n  rpc Ping(GetCheckpointRequest) returns (Checkpoint);"),
        encoding="utf-8",
    )
    problems = contract_differences(compiled_descriptors(edited, tmp_path), committed_descriptors())
    assert len(problems) == 1 and "differs" in problems[0]


def test_generator_banner_is_not_a_contract_change() -> None:
    stub = (GEN_DIR / "aggregator_pb2_grpc.py").read_text(encoding="utf-8")
    bumped = re.sub(
        r"GRPC_GENERATED_VERSION = '[0-9.]+'", "GRPC_GENERATED_VERSION = '9.99.9'", stub
    )
    assert bumped != stub
    assert _masked(bumped) == _masked(stub)


def test_stubs_match_the_locked_generator(tmp_path: Path) -> None:
    _protoc(
        PROTO_DIR,
        f"--python_out={tmp_path}",
        f"--grpc_python_out={tmp_path}",
        f"--pyi_out={tmp_path}",
    )
    fresh_dir = tmp_path / "ffsecure" / "v1"
    fresh = {p.name for p in fresh_dir.iterdir() if p.is_file()}
    committed = {p.name for p in GEN_DIR.iterdir() if p.is_file() and p.name != "__init__.py"}
    assert fresh == committed, "generated file set differs: run scripts/gen_proto.sh"
    for name in sorted(n for n in fresh if n.endswith(("_pb2_grpc.py", ".pyi"))):
        assert _masked((GEN_DIR / name).read_text(encoding="utf-8")) == _masked(
            (fresh_dir / name).read_text(encoding="utf-8")
        ), f"ffsecure/v1/{name} is stale: run scripts/gen_proto.sh"


def test_service_has_the_contract_methods() -> None:
    from ffsecure.v1 import aggregator_pb2

    service = aggregator_pb2.DESCRIPTOR.services_by_name["Aggregator"]
    names = {m.name for m in service.methods}
    assert {
        "GetFederationInfo",
        "UploadModule",
        "GetUploadStatus",
        "GetCheckpoint",
        "GetInclusionProof",
        "GetConsistencyProof",
        "RequestDeletion",
        "GetClassifier",
        "ReportEvaluation",
    } <= names
    upload = service.methods_by_name["UploadModule"]
    assert upload.client_streaming and not upload.server_streaming
    assert aggregator_pb2.DESCRIPTOR.package == "ffsecure.v1"
