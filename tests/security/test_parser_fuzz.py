"""Property-based fuzzing of the parsers and of the gRPC handlers (bounded for CI).

* canonical JSON, module manifests and safetensors headers built from
  hypothesis strategies: the only outcomes are "parsed, and re-encodes to
  the same bytes" or a typed :class:`FFSecureError`;
* every harness of ``fuzz/`` run through the pure-Python mutation driver;
* random ``UploadChunk`` streams and random unary requests sent over real
  mTLS to a running aggregator: every answer is a receipt or a typed refusal
  (never UNKNOWN or INTERNAL), and nothing reaches the store.

Long runs: ``python -m fuzz.run --target T --runs N`` (see ``fuzz/README.md``).
"""

from __future__ import annotations

import hashlib
import json
import struct

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffsecure import canonical
from ffsecure.errors import FFSecureError
from ffsecure.generators.state import DTYPES, check_safetensors
from ffsecure.package import MANIFEST_FIELDS, ModuleManifest
from ffsecure.v1 import aggregator_pb2 as pb
from fuzz import run as fuzz_run
from fuzz.targets import TARGETS
from site_node.client import RetryPolicy
from tests.federation_fixture import START_ENTRIES, build_federation
from tests.security.forge import Refusal, send

FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
U64 = st.one_of(st.integers(0, 70), st.integers(0, 2**64 - 1))
RPC = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**19), 10**19),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=30,
)


# ------------------------------------------------------------------ canonical


@FAST
@given(json_values)
def test_canonical_round_trip(value):
    data = canonical.dumps(value)
    assert canonical.dumps(canonical.loads_canonical(data)) == data


@FAST
@given(
    st.one_of(st.binary(max_size=512), json_values.map(lambda v: json.dumps(v, indent=1).encode()))
)
def test_canonical_parser_accepts_only_canonical_bytes(data):
    try:
        obj = canonical.loads_canonical(data)
    except FFSecureError as exc:
        assert exc.code in {"E_JSON", "E_JSON_DEPTH", "E_JSON_SIZE", "E_NOT_CANONICAL"} and exc.hint
        return
    assert canonical.dumps(obj) == data


# ------------------------------------------------------------------- manifest

_VALID = {
    "v": 1,
    "federation_id": "fedtest",
    "site_id": "st-mary",
    "module_id": "0" * 32,
    "created_at": "2026-01-01T00:00:00Z",
    "generator": {"family": "cvae", "config": {}},
    "image_shape": [1, 16, 16],
    "classes": [0, 1],
    "weights_sha256": "a" * 64,
    "weights_bytes": 10,
    "dp": None,
    "library_version": "0.1.0",
    "seed": 0,
    "privacy_report": None,
}


@FAST
@given(
    st.dictionaries(
        st.sampled_from(sorted(MANIFEST_FIELDS) + ["extra", "__proto__"]), json_values, max_size=6
    ),
    st.sets(st.sampled_from(sorted(MANIFEST_FIELDS)), max_size=2),
)
def test_manifest_parser_refuses_with_typed_errors(changes, dropped):
    d = {**_VALID, **changes}
    for k in dropped:
        d.pop(k, None)
    data = canonical.dumps(d)
    try:
        m = ModuleManifest.from_bytes(data)
    except FFSecureError as exc:
        assert exc.code.startswith("E_") and exc.code != "E_INTERNAL"
        return
    assert set(d) == MANIFEST_FIELDS
    assert m.to_bytes() == data


def test_valid_manifest_seed_parses():
    assert ModuleManifest.from_bytes(canonical.dumps(_VALID)).module_id == "0" * 32


# ---------------------------------------------------------------- safetensors

_SPECS = {"a": ((2, 3), "F32"), "b": ((4,), "I64")}

tensor_entry = st.fixed_dictionaries(
    {
        "dtype": st.one_of(st.sampled_from(sorted(DTYPES)), st.text(max_size=4)),
        "shape": st.lists(st.integers(-2, 6), max_size=3),
        "data_offsets": st.lists(st.integers(-8, 80), min_size=0, max_size=3),
    }
)


@FAST
@given(
    st.dictionaries(st.sampled_from(["a", "b", "c", "__metadata__"]), tensor_entry, max_size=3),
    st.binary(max_size=80),
    st.integers(0, 3),
)
def test_safetensors_header_checks_are_typed(header, data, length_trick):
    hb = json.dumps(header).encode()
    length = [len(hb), len(hb) + 1, max(len(hb) - 1, 0), 1 << 62][length_trick]
    weights = struct.pack("<Q", length) + hb + data
    try:
        check_safetensors(weights, _SPECS)
    except FFSecureError as exc:
        assert exc.code in {
            "E_SAFETENSORS_HEADER",
            "E_TENSOR_NAME",
            "E_TENSOR_DTYPE",
            "E_TENSOR_SHAPE",
        }
        return
    # accepted: it must then describe exactly the expected tensors
    assert set(header) - {"__metadata__"} == set(_SPECS)


# ----------------------------------------------------------- fuzz/ harnesses


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzz_harness_finds_no_crash(target, tmp_path):
    stats = fuzz_run.python_driver(target, runs=400, seed=11, crash_dir=tmp_path, quiet=True)
    assert stats["crashes"] == 0, list(tmp_path.iterdir())
    assert stats["runs"] == 400


# ------------------------------------------------------------- gRPC handlers


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = build_federation(
        tmp_path_factory.mktemp("rpc-fuzz"),
        sites=("st-mary",),
        uploads_per_minute=60000.0,
        upload_burst=100000,
        calls_per_second=10000.0,
        call_burst=100000,
    )
    text = f.config_path.read_text()
    f.config_path.write_text(
        text.replace("[uploads]\n", "[uploads]\nmax_parallel_per_site = 100000\n", 1)
    )
    return f


@pytest.fixture(scope="module")
def srv(fed):
    with (
        fed.serve() as running,
        fed.client("st-mary", running.address, retry=RetryPolicy(max_attempts=1)) as c,
    ):
        yield running, c.stub


_POOL = ["ab" * 16, "cd" * 16]
upload_ids = st.one_of(
    st.sampled_from(_POOL),
    st.binary(min_size=16, max_size=16).map(bytes.hex),
    st.text(max_size=40),
    st.just("../../etc/passwd"),
    st.just("A" * 32),
)
chunk = st.builds(
    pb.UploadChunk,
    upload_id=upload_ids,
    offset=st.one_of(st.integers(0, 4096), st.just(2**64 - 1), st.just(0)),
    data=st.one_of(st.binary(max_size=2048), st.just(b"\0" * (64 * 1024 + 1))),
    total_size=st.one_of(st.integers(0, 4096), st.integers(0, 2**64 - 1)),
    total_sha256=st.one_of(st.binary(min_size=32, max_size=32), st.binary(max_size=40)),
)


def _typed(got) -> None:
    assert isinstance(got, Refusal), f"random bytes were registered: {got}"
    assert got.code.startswith("E_") and got.code != "E_INTERNAL", got
    assert got.status not in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.OK,
    ), got


@RPC
@given(st.lists(chunk, max_size=5))
def test_random_upload_streams_get_typed_refusals(srv, chunks):
    running, stub = srv
    _typed(send(stub, chunks, timeout=20))
    assert running.runtime.store.size() == START_ENTRIES  # only those of the start


@RPC
@given(
    st.one_of(
        st.builds(pb.GetUploadStatusRequest, upload_id=upload_ids),
        st.builds(pb.GetInclusionProofRequest, index=U64, tree_size=U64),
        st.builds(pb.GetConsistencyProofRequest, old_size=U64, new_size=U64),
        st.builds(
            pb.DeletionRequest,
            module_ids=st.lists(
                st.one_of(st.text(max_size=40), st.sampled_from(_POOL)), max_size=70
            ),
            reason=st.text(max_size=600),
        ),
        st.builds(
            pb.EvaluationReport,
            classifier_id=st.one_of(st.text(max_size=70), st.just("clf-1")),
            n_test=U64,
            accuracy=st.floats(),
            macro_auroc=st.floats(),
            per_class_recall=st.lists(
                st.one_of(st.builds(pb.ClassRecall, recall=st.floats()), st.just(pb.ClassRecall())),
                max_size=6,
            ),
            confusion=st.lists(U64, max_size=20),
        ),
    )
)
def test_random_unary_requests_get_answers_or_typed_refusals(srv, request):
    running, stub = srv
    method = {
        pb.GetUploadStatusRequest: stub.GetUploadStatus,
        pb.GetInclusionProofRequest: stub.GetInclusionProof,
        pb.GetConsistencyProofRequest: stub.GetConsistencyProof,
        pb.DeletionRequest: stub.RequestDeletion,
        pb.EvaluationReport: stub.ReportEvaluation,
    }[type(request)]
    try:
        method(request, timeout=20)
    except grpc.RpcError as exc:
        from tests.security.forge import refusal_of

        _typed(refusal_of(exc))
    assert running.runtime.store.size() == START_ENTRIES  # only those of the start


def test_a_real_upload_still_works_after_the_fuzzing(fed, srv):
    running, _stub = srv
    sealed, pkg = fed.make_package("st-mary")
    with fed.client("st-mary", running.address, retry=RetryPolicy(max_attempts=1)) as c:
        receipt = c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
    assert receipt.index == START_ENTRIES and hashlib.sha256(sealed).digest()
