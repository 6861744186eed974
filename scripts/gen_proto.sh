#!/usr/bin/env bash
# Regenerate the Python gRPC code in ffsecure/v1/ from proto/ffsecure/v1/*.proto.
# The generated modules are committed; tests/unit/test_proto_drift.py fails when
# they no longer match the .proto files.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
"$PY" -m grpc_tools.protoc -Iproto --python_out=. --grpc_python_out=. --pyi_out=. proto/ffsecure/v1/*.proto
