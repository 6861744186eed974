"""Bad input against a real running aggregator over mTLS.

Each case sends one hostile UploadModule stream from a site with a valid
certificate (or, for the revoked case, a revoked one) to an in-process
aggregator on loopback (real TLS 1.3 with client certificates, real HPKE,
real SQLite store and Merkle ledger) and asserts:

* a refusal whose typed code is read from the gRPC error details
  (``ffsecure-error-bin``, a serialized ``ErrorDetail``), with a non-OK,
  non-INTERNAL status;
* a ``refusal`` log line naming the method, the code and the caller;
* no change to the ledger (size and root hash), the module table, or the
  blob directory, and no registered staging state for the upload.

The table of cases, with their codes, is in ``tests/security/CASES.md``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import secrets
import struct
import threading
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator.grpc_errors import _BY_CODE
from ffsecure import canonical, envelope, pki
from ffsecure.generators.state import parse_header
from ffsecure.package import SIGNATURE_CONTEXT
from site_node.client import RetryPolicy
from tests.federation_fixture import START_ENTRIES, build_federation
from tests.ops_fixture import poisoned_weights
from tests.security import forge
from tests.security.forge import Refusal, chunks, send

NO_RETRY = RetryPolicy(max_attempts=1)
SITES = ("st-mary", "st-john", "st-paul")


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = build_federation(tmp_path_factory.mktemp("bad-input"), sites=SITES)
    forge.require_dp(f)
    # Many stream-level cases leave an unfinished upload behind (by design: it can be resumed);
    # give the sites room so that the quota never answers for another case.
    text = f.config_path.read_text()
    f.config_path.write_text(
        text.replace("[uploads]\n", "[uploads]\nmax_parallel_per_site = 64\n", 1)
    )
    return f


@pytest.fixture(scope="module")
def srv(fed):
    with fed.serve() as running:
        yield running


@pytest.fixture(scope="module")
def baseline(fed, srv):
    """One legitimate module of st-mary, so that the ledger and store are not empty."""
    sealed, d = forge.forge(fed, "st-mary", classes=[0, 1])
    with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
        receipt = c.upload(sealed, module_id=d["module_id"], site_id="st-mary")
    assert receipt.index == START_ENTRIES and not receipt.existing  # after the start's
    return {"sealed": sealed, "manifest": d, "receipt": receipt}


def expected_status(code: str) -> grpc.StatusCode:
    """docs/grpc.md: by code, else INVALID_ARGUMENT for every format, policy and request error
    here."""
    return _BY_CODE.get(code, grpc.StatusCode.INVALID_ARGUMENT)


def snapshot(srv) -> dict:
    """Everything a refused upload must leave as it was."""
    rt = srv.runtime
    store = rt.store
    with rt.deps.store_lock:
        size = store.size()
        root = store.root_hash(size).hex() if size else ""
        modules = sorted((m.module_id, m.status) for m in store.list_modules())
    blobs = sorted(str(p.relative_to(rt.home.blobs)) for p in rt.home.blobs.rglob("*"))
    return {"size": size, "root": root, "modules": modules, "blobs": blobs}


# -------------------------------------------------------------------- cases


@dataclass
class Ctx:
    fed: object
    srv: object
    baseline: dict
    tmp: Path


@dataclass
class Case:
    name: str
    code: str
    build: Callable[[Ctx], list]  # -> UploadChunk messages
    site: str = "st-mary"
    staged: str = (
        "gone"  # after the refusal: "gone" (removed), "kept" (resumable, unregistered), "n/a"
    )
    before: Callable[[Ctx], None] | None = None
    notes: str = ""


def _sealed_pkg(ctx: Ctx, site: str = "st-mary", **kw) -> bytes:
    return forge.forge(ctx.fed, site, **kw)[0]


def _header_and_data(weights: bytes) -> tuple[dict, bytes]:
    header, start = parse_header(weights)
    return header, weights[start:]


def _safetensors(header: dict, data: bytes) -> bytes:
    hb = json.dumps(header, separators=(",", ":")).encode()
    return struct.pack("<Q", len(hb)) + hb + data


def _weights_edit(edit: Callable[[dict, bytes], tuple[dict, bytes]]) -> Callable[[Ctx], bytes]:
    def make(ctx: Ctx) -> bytes:
        header, data = _header_and_data(forge.federation_weights(ctx.fed))
        header, data = edit({k: dict(v) for k, v in header.items()}, data)
        return _safetensors(header, data)

    return make


def _overlap(header: dict, data: bytes) -> tuple[dict, bytes]:
    # the second tensor starts 4 bytes early, over the end of the first; sizes stay right
    name = sorted(header, key=lambda k: header[k]["data_offsets"][0])[1]
    b, e = header[name]["data_offsets"]
    header[name]["data_offsets"] = [b - 4, e - 4]
    return header, data


def _dtype(header: dict, data: bytes) -> tuple[dict, bytes]:
    name = next(k for k, v in header.items() if v["dtype"] == "F32")
    header[name]["dtype"] = "I32"  # same element size: only the declared architecture can tell
    return header, data


def _shape(header: dict, data: bytes) -> tuple[dict, bytes]:
    name = next(
        k for k, v in header.items() if len(v["shape"]) == 2 and v["shape"][0] != v["shape"][1]
    )
    header[name]["shape"] = header[name]["shape"][::-1]  # same element count, transposed
    return header, data


def _extra_tensor(header: dict, data: bytes) -> tuple[dict, bytes]:
    header["smuggled.payload"] = {
        "dtype": "U8",
        "shape": [64],
        "data_offsets": [len(data), len(data) + 64],
    }
    return header, data + b"\x90" * 64


def _oversized_header(ctx: Ctx) -> bytes:
    return (
        struct.pack("<Q", 1 << 40)
        + b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
        + b"\0" * 4
    )


class _TouchOnLoad:
    """Unpickling this creates ``path``: proof that a loader ran code from the bytes."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _marker(ctx: Ctx) -> Path:
    return ctx.tmp / "UNPICKLED-MARKER"


def _pickle_weights(ctx: Ctx) -> bytes:
    return pickle.dumps({"dec_mlp.0.bias": _TouchOnLoad(_marker(ctx))}, protocol=4)


def _torch_zip_weights(ctx: Ctx) -> bytes:
    # the layout torch.save writes: a zip archive whose data.pkl is a pickle
    import io

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", _pickle_weights(ctx))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _c(ctx: Ctx, data: bytes, **kw) -> list:
    return chunks(data, **kw)


def _revoke_st_paul(ctx: Ctx) -> None:
    ctx.fed.revoke_site("st-paul")
    ctx.srv.runtime.deps.authenticator.crl.current()  # loaded and recorded (crl.loaded) first


def _other_hpke_key(ctx: Ctx) -> list:
    _priv, pub = envelope.generate_keypair("x25519")
    pkg = _package_bytes(ctx)
    sealed = envelope.seal(
        pkg, pub, federation_id=ctx.fed.federation_id, key_id=envelope.key_id(pub)
    )
    return _c(ctx, sealed)


def _package_bytes(ctx: Ctx, site: str = "st-mary") -> bytes:
    w = forge.federation_weights(ctx.fed)
    d = forge.manifest_dict(ctx.fed, site, weights=w)
    mb = canonical.dumps(d)
    return forge.container(mb, forge.sign_bytes(ctx.fed, site, mb), ctx.fed.sites[site].cert_pem, w)


def _non_ascii_key_id(ctx: Ctx) -> list:
    # found by atheris: a non-ASCII key id made hmac.compare_digest raise TypeError (an internal
    # error)
    header = canonical.dumps(
        {
            "v": envelope.VERSION,
            "suite": "x25519",
            "federation_id": ctx.fed.federation_id,
            "key_id": "\u00e9" * 64,
        }
    )
    sealed = (
        envelope.MAGIC
        + bytes([envelope.VERSION])
        + struct.pack(">H", len(header))
        + header
        + os.urandom(256)
    )
    return _c(ctx, sealed)


def _flip_last(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _deep(ctx: Ctx) -> list:
    d = forge.manifest_dict(ctx.fed, "st-mary", weights=forge.federation_weights(ctx.fed))
    body = canonical.dumps(d)[:-1] + b',"zz":' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"}"
    return _c(ctx, _sealed_pkg(ctx, manifest_bytes=body))


def _huge_int(ctx: Ctx) -> list:
    d = forge.manifest_dict(ctx.fed, "st-mary", weights=forge.federation_weights(ctx.fed))
    body = canonical.dumps(d).replace(b'"seed":0', b'"seed":' + b"9" * 400)
    assert b"9" * 400 in body
    return _c(ctx, _sealed_pkg(ctx, manifest_bytes=body))


def _non_canonical(ctx: Ctx) -> list:
    d = forge.manifest_dict(ctx.fed, "st-mary", weights=forge.federation_weights(ctx.fed))
    return _c(
        ctx, _sealed_pkg(ctx, manifest_bytes=json.dumps(d, sort_keys=True, indent=1).encode())
    )


def _duplicate_key(ctx: Ctx) -> list:
    d = forge.manifest_dict(ctx.fed, "st-mary", weights=forge.federation_weights(ctx.fed))
    body = canonical.dumps(d)[:-1] + b',"v":1}'
    return _c(ctx, _sealed_pkg(ctx, manifest_bytes=body))


def _other_generator(d: dict) -> None:
    d["generator"]["config"]["hidden"] = d["generator"]["config"]["hidden"] * 2


def _trailing_bytes(ctx: Ctx) -> list:
    return _c(ctx, forge.seal(ctx.fed, _package_bytes(ctx) + b"\0"))


def _length_past_end(ctx: Ctx) -> list:
    pkg = bytearray(_package_bytes(ctx))
    pkg[5:9] = struct.pack(">I", len(pkg))  # manifest length runs past the end
    return _c(ctx, forge.seal(ctx.fed, bytes(pkg)))


def _future(ctx: Ctx) -> list:
    import datetime as dt

    when = pki.rfc3339(pki.utcnow() + dt.timedelta(hours=1))
    return _c(ctx, _sealed_pkg(ctx, created_at=when))


def _before_cert(ctx: Ctx) -> list:
    # a creation time before the site's certificate existed (backdating)
    return _c(ctx, _sealed_pkg(ctx, created_at="2001-01-01T00:00:00Z"))


def _duplicate_module(ctx: Ctx) -> list:
    mid = ctx.baseline["manifest"]["module_id"]
    return _c(ctx, _sealed_pkg(ctx, module_id=mid, classes=[2]))


def _offset_gap(ctx: Ctx) -> list:
    msgs = chunks(_sealed_pkg(ctx), chunk_bytes=32 * 1024)
    msgs[1].offset += 1
    return msgs


def _mixed(ctx: Ctx) -> list:
    msgs = chunks(_sealed_pkg(ctx), chunk_bytes=32 * 1024)
    msgs[1].upload_id = secrets.token_hex(16)
    return msgs


def _truncated(ctx: Ctx) -> list:
    msgs = chunks(_sealed_pkg(ctx), chunk_bytes=32 * 1024)
    return msgs[: len(msgs) // 2]


def _more_than_announced(ctx: Ctx) -> list:
    sealed = _sealed_pkg(ctx)
    return chunks(sealed, total_size=len(sealed) - 100, chunk_bytes=32 * 1024)


def _chunk_too_big(ctx: Ctx) -> list:
    limit = ctx.srv.runtime.deps.max_chunk_bytes
    data = os.urandom(limit + 1)
    return chunks(data, chunk_bytes=limit + 1)


def _too_large(ctx: Ctx) -> list:
    limit = ctx.srv.runtime.deps.staging.max_upload_bytes
    return [
        forge.pb.UploadChunk(
            upload_id=secrets.token_hex(16),
            offset=0,
            data=b"\0" * 1024,
            total_size=limit + 1,
            total_sha256=b"\1" * 32,
        )
    ]


def _other_ca_backdated(ctx: Ctx) -> list:
    # a site certificate of an attacker's CA with this federation's id (and so the same CA name),
    # on a package dated before this federation's CA existed
    other = pki.init_ca(ctx.tmp / "other-ca", ctx.fed.federation_id)
    cert, key = other.issue_site("st-mary")
    d = forge.manifest_dict(
        ctx.fed,
        "st-mary",
        weights=forge.federation_weights(ctx.fed),
        created_at="2001-01-01T00:00:00Z",
    )
    mb = canonical.dumps(d)
    sig = key.sign(SIGNATURE_CONTEXT + hashlib.sha256(mb).digest(), ec.ECDSA(hashes.SHA256()))
    sealed = forge.seal(
        ctx.fed, forge.container(mb, sig, pki.cert_pem(cert), forge.federation_weights(ctx.fed))
    )
    return _c(ctx, sealed)


def _path_upload_id(ctx: Ctx) -> list:
    return chunks(_sealed_pkg(ctx), upload_id="../../../../tmp/ffsecure-escape")


CASES: list[Case] = [
    # transport / stream
    Case("garbage bytes", "E_ENVELOPE_FORMAT", lambda ctx: _c(ctx, os.urandom(4096))),
    Case("truncated stream", "E_UPLOAD_INCOMPLETE", _truncated, staged="kept"),
    Case(
        "wrong total hash",
        "E_UPLOAD_HASH",
        lambda ctx: _c(ctx, _sealed_pkg(ctx), total_sha256=hashlib.sha256(b"other").digest()),
    ),
    Case("more bytes than announced", "E_UPLOAD_MISMATCH", _more_than_announced, staged="kept"),
    Case("gap between chunk offsets", "E_UPLOAD_OFFSET", _offset_gap, staged="kept"),
    Case("chunks naming two uploads", "E_UPLOAD_MISMATCH", _mixed, staged="kept"),
    Case("empty stream", "E_UPLOAD_EMPTY", lambda ctx: [], staged="n/a"),
    Case("chunk over max_chunk_bytes", "E_TOO_LARGE", _chunk_too_big),
    Case("module over the size limit", "E_TOO_LARGE", _too_large),
    Case("upload id with path characters", "E_UPLOAD_ID", _path_upload_id, staged="n/a"),
    # envelope
    Case(
        "sealed for another federation",
        "E_FEDERATION_MISMATCH",
        lambda ctx: _c(ctx, forge.seal(ctx.fed, _package_bytes(ctx), federation_id="otherfed")),
    ),
    Case("sealed to another aggregator key", "E_KEY_ID", _other_hpke_key),
    Case(
        "ciphertext altered", "E_ENVELOPE_OPEN", lambda ctx: _c(ctx, _flip_last(_sealed_pkg(ctx)))
    ),
    Case("envelope key id with non-ASCII characters", "E_ENVELOPE_FORMAT", _non_ascii_key_id),
    # package container
    Case(
        "not a package inside a valid envelope",
        "E_PACKAGE_FORMAT",
        lambda ctx: _c(ctx, forge.seal(ctx.fed, b"GIF89a" + os.urandom(512))),
    ),
    Case("package length past the end", "E_PACKAGE_FORMAT", _length_past_end),
    Case("trailing bytes after the weights", "E_PACKAGE_FORMAT", _trailing_bytes),
    # identity
    Case(
        "package of site B claiming site A",
        "E_SITE_MISMATCH",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, "st-mary", signer="st-john")),
    ),
    Case(
        "site A's package over site B's connection",
        "E_IMPERSONATION",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, "st-mary")),
        site="st-john",
    ),
    Case(
        "valid package from a revoked site",
        "E_CERT_REVOKED",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, "st-paul")),
        site="st-paul",
        before=_revoke_st_paul,
        staged="n/a",
    ),
    Case(
        "signature by B's key under A's certificate",
        "E_SIGNATURE",
        lambda ctx: _c(
            ctx,
            _sealed_pkg(
                ctx, "st-mary", signer="st-john", chain_pem=ctx.fed.sites["st-mary"].cert_pem
            ),
        ),
    ),
    Case(
        "signature bytes altered",
        "E_SIGNATURE",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, signature=b"\x30\x06\x02\x01\x01\x02\x01\x01")),
    ),
    Case(
        "garbage certificate",
        "E_CERT_FORMAT",
        lambda ctx: _c(
            ctx,
            _sealed_pkg(
                ctx, chain_pem=b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            ),
        ),
    ),
    Case(
        "manifest for another federation",
        "E_FEDERATION_MISMATCH",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=lambda d: d.update(federation_id="otherfed"))),
    ),
    Case(
        "replay of a registered module id with other content",
        "E_DUPLICATE_MODULE",
        _duplicate_module,
    ),
    # manifest
    Case(
        "manifest with an extra field",
        "E_MANIFEST_SCHEMA",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=lambda d: d.update(extra="x"))),
    ),
    Case(
        "manifest with a missing field",
        "E_MANIFEST_SCHEMA",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=lambda d: d.pop("seed"))),
    ),
    Case("manifest nested 40 deep", "E_JSON_DEPTH", _deep),
    Case("manifest with a 400-digit integer", "E_JSON", _huge_int),
    Case(
        "manifest with an out-of-range number",
        "E_MANIFEST_SCHEMA",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=lambda d: d.update(weights_bytes=1 << 62))),
    ),
    Case(
        "manifest with a float where an int belongs",
        "E_MANIFEST_SCHEMA",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=lambda d: d.update(seed=1e300))),
    ),
    Case("non-canonical manifest encoding", "E_NOT_CANONICAL", _non_canonical),
    Case("manifest with a duplicate key", "E_JSON", _duplicate_key),
    Case(
        "module id with path characters",
        "E_MODULE_ID",
        lambda ctx: _c(
            ctx, _sealed_pkg(ctx, mutate=lambda d: d.update(module_id="../../blobs/evil"))
        ),
    ),
    Case("creation time 1 h in the future", "E_MANIFEST_TIME", _future),
    Case("creation time before the certificate", "E_CERT_EXPIRED", _before_cert),
    # policy
    Case(
        "classes outside the label space",
        "E_POLICY_CLASSES",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, classes=[0, 7])),
    ),
    Case(
        "DP epsilon above the policy",
        "E_POLICY_DP",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp={**forge.GOOD_DP, "epsilon": 50.0})),
    ),
    Case(
        "no DP claim where DP is required",
        "E_POLICY_DP",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp=None)),
    ),
    Case(
        "DP claim of 10^9 steps",
        "E_DP_CLAIM",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp={**forge.GOOD_DP, "steps": 1_000_000_000})),
    ),
    Case(
        "DP claim whose prv accounting needs a huge grid",
        "E_DP_CLAIM",
        lambda ctx: _c(
            ctx,
            _sealed_pkg(
                ctx,
                dp={
                    **forge.GOOD_DP,
                    "accountant": "prv",
                    "noise_multiplier": 0.6,
                    "sample_rate": 0.05,
                    "steps": 10_000,
                },
            ),
        ),
    ),
    Case(
        "DP claim below what its parameters spend",
        "E_DP_CLAIM",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp={**forge.GOOD_DP, "epsilon": 0.5})),
    ),
    Case(
        "DP claim without its accounting parameters",
        "E_DP_CLAIM",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp={"epsilon": 4.0, "delta": 1e-5})),
    ),
    Case(
        "DP claim whose noise was seeded",
        "E_DP_CLAIM",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, dp={**forge.GOOD_DP, "reproducible": True})),
    ),
    Case(
        "another generator config",
        "E_POLICY_GENERATOR",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, mutate=_other_generator)),
    ),
    # weights
    Case(
        "weights changed after signing",
        "E_WEIGHTS_HASH",
        lambda ctx: _c(
            ctx,
            _sealed_pkg(
                ctx, weights=_flip_last(forge.federation_weights(ctx.fed)), hash_weights=False
            ),
        ),
    ),
    Case(
        "safetensors header length 2^40",
        "E_SAFETENSORS_HEADER",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_oversized_header(ctx))),
    ),
    Case(
        "safetensors overlapping offsets",
        "E_SAFETENSORS_HEADER",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_weights_edit(_overlap)(ctx))),
    ),
    Case(
        "safetensors dtype not the config's",
        "E_TENSOR_DTYPE",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_weights_edit(_dtype)(ctx))),
    ),
    Case(
        "safetensors shape not the config's",
        "E_TENSOR_SHAPE",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_weights_edit(_shape)(ctx))),
    ),
    Case(
        "smuggled extra tensor",
        "E_TENSOR_NAME",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_weights_edit(_extra_tensor)(ctx))),
    ),
    Case(
        "pickle disguised as weights",
        "E_SAFETENSORS_HEADER",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_pickle_weights(ctx))),
    ),
    Case(
        "torch.save zip disguised as weights",
        "E_SAFETENSORS_HEADER",
        lambda ctx: _c(ctx, _sealed_pkg(ctx, weights=_torch_zip_weights(ctx))),
    ),
    Case(
        "NaN in a weight tensor",
        "E_TENSOR_VALUE",
        lambda ctx: _c(
            ctx, _sealed_pkg(ctx, weights=poisoned_weights(forge.federation_weights(ctx.fed))[0])
        ),
    ),
    Case(
        "infinity in a weight tensor",
        "E_TENSOR_VALUE",
        lambda ctx: _c(
            ctx,
            _sealed_pkg(
                ctx, weights=poisoned_weights(forge.federation_weights(ctx.fed), float("-inf"))[0]
            ),
        ),
    ),
    Case("another CA's certificate on a backdated package", "E_CERT_CHAIN", _other_ca_backdated),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_logged_and_changes_nothing(
    case: Case, fed, srv, baseline, tmp_path, caplog
):
    ctx = Ctx(fed, srv, baseline, tmp_path)
    if case.before is not None:
        case.before(ctx)
    messages = case.build(ctx)
    upload_id = messages[0].upload_id if messages else None
    before = snapshot(srv)
    with (
        caplog.at_level("WARNING", logger="aggregator.refusal"),
        fed.client(case.site, srv.address, retry=NO_RETRY) as c,
    ):
        got = send(c.stub, messages)
    # 1. refused with the typed code, carried in the error details
    assert isinstance(got, Refusal), f"{case.name}: accepted ({got.module_id})"
    assert got.code == case.code, (
        f"{case.name}: refused with {got.code} ({got.message}), expected {case.code}"
    )
    assert got.status == expected_status(case.code), f"{case.name}: status {got.status}"
    assert got.details.startswith(f"[{case.code}]") and got.message
    assert got.hint, f"{case.name}: {case.code} carries no hint"
    # 2. logged, with the method, the code and the caller
    logged = [
        r for r in caplog.records if getattr(r, "event", None) == "refusal" and r.code == case.code
    ]
    assert logged, f"{case.name}: no refusal log line"
    assert logged[-1].method == "UploadModule"
    assert (logged[-1].peer_identity or "").endswith(f"/site/{case.site}")
    # 3. nothing changed: ledger size + root, module table, blob files
    assert snapshot(srv) == before
    # 4. the upload is not registered; a refused package's staged bytes are gone
    if case.staged != "n/a":
        state = srv.runtime.deps.staging.status(case.site, upload_id)
        if case.staged == "gone":
            assert state is None, f"{case.name}: staged bytes left behind"
        else:
            assert state is not None and not state.registered
    # the pickle payload was never executed by any parser on the way
    assert not _marker(ctx).exists()


def test_pickle_payload_is_live_when_unpickled(tmp_path):
    """The disguised-weights payload really runs code when unpickled, so its refusal above means
    something."""
    ctx = Ctx(None, None, {}, tmp_path)
    pickle.loads(_pickle_weights(ctx))  # noqa: S301 - our own payload, in a temp dir, to prove it is live
    assert _marker(ctx).exists()


def test_replayed_identical_package_adds_nothing(fed, srv, baseline):
    """Re-sending a registered package (new upload id) returns the existing entry and appends
    nothing."""
    before = snapshot(srv)
    with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
        receipt = c.upload(
            baseline["sealed"], module_id=baseline["manifest"]["module_id"], site_id="st-mary"
        )
    assert receipt.existing and receipt.index == baseline["receipt"].index
    assert snapshot(srv) == before


def test_non_finite_weights_are_refused_naming_the_module_and_the_tensor(fed, srv, baseline):
    """The refusal says which module and which tensor, so the site knows what to retrain."""
    weights, tensor = poisoned_weights(forge.federation_weights(fed))
    sealed, manifest = forge.forge(fed, "st-mary", weights=weights)
    before = snapshot(srv)
    with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
        got = send(c.stub, chunks(sealed))
    assert isinstance(got, Refusal) and got.code == "E_TENSOR_VALUE", got
    assert manifest["module_id"] in got.message and repr(tensor) in got.message
    assert snapshot(srv) == before


def test_cases_table_lists_every_case(repo_root):
    table = (repo_root / "tests" / "security" / "CASES.md").read_text()
    for case in CASES:
        assert f"| {case.name} | `{case.code}` |" in table, f"CASES.md lacks {case.name!r}"


# --------------------------------------------------------------- rate limit


def test_flood_from_one_site_is_rate_limited_while_others_succeed(tmp_path, caplog):
    fed = build_federation(
        tmp_path,
        sites=("flooder", "st-quiet"),
        uploads_per_minute=6.0,
        upload_burst=3,
        calls_per_second=200.0,
        call_burst=400,
    )
    with fed.serve() as running:
        flood = [fed.make_package("flooder", seed=i) for i in range(12)]
        quiet = [fed.make_package("st-quiet", seed=i) for i in range(2)]
        results: dict[str, list] = {"flooder": [], "st-quiet": []}

        def run(site: str, items) -> None:
            with fed.client(site, running.address, retry=NO_RETRY) as c:
                for sealed, _pkg in items:
                    results[site].append(send(c.stub, chunks(sealed)))

        with caplog.at_level("WARNING", logger="aggregator.refusal"):
            threads = [
                threading.Thread(target=run, args=("flooder", flood)),
                threading.Thread(target=run, args=("st-quiet", quiet)),
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
        flooded = results["flooder"]
        accepted = [r for r in flooded if not isinstance(r, Refusal)]
        refused = [r for r in flooded if isinstance(r, Refusal)]
        assert len(accepted) <= 3 and len(refused) >= 9
        assert {r.code for r in refused} == {"E_RATE_LIMIT"}
        assert all(
            r.status == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry in" in r.hint for r in refused
        )
        # the quiet site is unaffected
        assert all(not isinstance(r, Refusal) for r in results["st-quiet"]), results["st-quiet"]
        # only accepted uploads reached the store
        store = running.runtime.store
        by_site = {}
        for m in store.list_modules():
            by_site[m.site_id] = by_site.get(m.site_id, 0) + 1
        assert by_site == {"flooder": len(accepted), "st-quiet": 2} if accepted else {"st-quiet": 2}
        assert store.size() == len(accepted) + 2 + START_ENTRIES  # and those of the start
        assert sum(1 for r in caplog.records if getattr(r, "code", None) == "E_RATE_LIMIT") == len(
            refused
        )


def test_streams_refused_at_their_first_chunk_leave_nothing_against_the_quota(tmp_path, caplog):
    """A refused stream with no durable byte leaves no staged upload, so it never fills the site's
    quota."""
    fed = build_federation(tmp_path, sites=("st-mary",))
    text = fed.config_path.read_text()
    fed.config_path.write_text(
        text.replace("[uploads]\n", "[uploads]\nmax_parallel_per_site = 2\n", 1)
    )
    with fed.serve() as running:
        limit = running.runtime.deps.max_chunk_bytes
        size_before = running.runtime.store.size()  # serve's start entries
        sealed = forge.forge(fed, "st-mary")[0]
        bad_first_chunks = [
            chunks(os.urandom(limit + 1), chunk_bytes=limit + 1),  # E_TOO_LARGE
            [
                forge.pb.UploadChunk(
                    upload_id=secrets.token_hex(16),
                    offset=5,
                    data=b"x",
                    total_size=10,
                    total_sha256=b"\1" * 32,
                )
            ],  # E_UPLOAD_OFFSET
            [
                forge.pb.UploadChunk(
                    upload_id=secrets.token_hex(16),
                    offset=0,
                    data=b"x" * 20,
                    total_size=10,
                    total_sha256=b"\1" * 32,
                )
            ],  # E_UPLOAD_MISMATCH
            [
                forge.pb.UploadChunk(
                    upload_id=secrets.token_hex(16),
                    offset=0,
                    data=b"",
                    total_size=10,
                    total_sha256=b"\1" * 32,
                )
            ],  # E_UPLOAD_INCOMPLETE, nothing received
        ]
        staging = running.runtime.deps.staging
        with fed.client("st-mary", running.address, retry=NO_RETRY) as c:
            for messages in bad_first_chunks:
                got = send(c.stub, messages)
                assert isinstance(got, Refusal) and got.code != "E_UPLOAD_QUOTA", got
                assert staging.status("st-mary", messages[0].upload_id) is None, got.code
            receipt = send(c.stub, chunks(sealed))
        assert not isinstance(receipt, Refusal), receipt
        assert running.runtime.store.size() == size_before + 1
