"""Build hostile module packages and upload streams for the security and fault suites.

Everything here is made with the real primitives: the site's real key signs
whatever manifest bytes a case wants (so the aggregator must refuse for the
reason the case is about, not because the signature is wrong), the real
HPKE envelope seals the package to the aggregator's real key, and the bytes
go over a real mTLS connection. Nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import grpc
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ffsecure import FORMAT_VERSION, canonical, envelope, pki
from ffsecure.federation import create_signed_manifest
from ffsecure.package import MAGIC, SIGNATURE_CONTEXT, build_manifest
from ffsecure.records.wire import MD_CODE, MD_DETAIL
from ffsecure.v1 import aggregator_pb2 as pb
from tests.federation_fixture import Federation, generator_weights

DP_POLICY = {"required": True, "max_epsilon": 8.0, "delta": 1e-5}
# a claim the aggregator can re-account: these parameters spend epsilon 0.956 (rdp), at most 4.0
GOOD_DP = {
    "epsilon": 4.0,
    "delta": 1e-5,
    "accountant": "rdp",
    "noise_multiplier": 1.1,
    "sample_rate": 0.01,
    "steps": 100,
}


def require_dp(fed: Federation, policy: dict = DP_POLICY) -> None:
    """Re-sign the federation manifest with a DP policy (before the server starts)."""
    fed.manifest = dataclasses.replace(fed.manifest, dp_policy=dict(policy))
    fed.signed_manifest = create_signed_manifest(fed.manifest, fed.ca)
    pki.write_public_file(fed.home.federation, fed.signed_manifest)


def federation_weights(fed: Federation) -> bytes:
    """The real safetensors weights of the federation's generator."""
    return generator_weights(
        fed.manifest.generator["family"], canonical.dumps(fed.manifest.generator["config"])
    )


def manifest_dict(
    fed: Federation,
    site_id: str,
    *,
    weights: bytes,
    classes=(0,),
    dp: dict | None = GOOD_DP,
    module_id: str | None = None,
    created_at: str | None = None,
    seed: int = 0,
) -> dict:
    """A valid manifest (as a dict) for ``weights``; cases edit it before signing."""
    m = build_manifest(
        federation=fed.manifest,
        site_id=site_id,
        weights=weights,
        classes=list(classes),
        seed=seed,
        dp=dp,
        module_id=module_id,
        created_at=created_at,
    )
    return m.to_dict()


def container(manifest_bytes: bytes, signature: bytes, chain_pem: bytes, weights: bytes) -> bytes:
    """Package container bytes (docs/formats.md) around arbitrary parts, without validating them."""
    return b"".join(
        [
            MAGIC,
            bytes([FORMAT_VERSION]),
            struct.pack(">I", len(manifest_bytes)),
            manifest_bytes,
            struct.pack(">I", len(signature)),
            signature,
            struct.pack(">I", len(chain_pem)),
            chain_pem,
            struct.pack(">Q", len(weights)),
            weights,
        ]
    )


def sign_bytes(fed: Federation, signer: str, manifest_bytes: bytes) -> bytes:
    """The signer site's real ECDSA signature over any manifest bytes."""
    key = fed.sites[signer].key
    return key.sign(
        SIGNATURE_CONTEXT + hashlib.sha256(manifest_bytes).digest(), ec.ECDSA(hashes.SHA256())
    )


def seal(fed: Federation, plaintext: bytes, *, federation_id: str | None = None) -> bytes:
    """HPKE-seal ``plaintext`` to the aggregator's key (optionally naming another federation)."""
    m = fed.manifest
    return envelope.seal(
        plaintext,
        m.hpke_public_key,
        federation_id=federation_id or fed.federation_id,
        key_id=m.hpke_key_id,
        suite=m.hpke_suite,
    )


def forge(
    fed: Federation,
    site_id: str,
    *,
    weights: bytes | None = None,
    mutate: Callable[[dict], Any] | None = None,
    manifest_bytes: bytes | None = None,
    signer: str | None = None,
    chain_pem: bytes | None = None,
    signature: bytes | None = None,
    hash_weights: bool = True,
    **manifest_kwargs,
) -> tuple[bytes, dict]:
    """A sealed package from ``site_id``, signed by ``signer`` (default: the same site).

    ``weights`` replaces the real generator weights (the manifest's hash and
    size follow them when ``hash_weights``); ``mutate(d)`` edits the manifest
    dict before it is encoded; ``manifest_bytes`` replaces the encoded
    manifest altogether. Returns ``(sealed, manifest_dict)``.
    """
    real = federation_weights(fed)
    w = real if weights is None else weights
    d = manifest_dict(fed, site_id, weights=w if hash_weights else real, **manifest_kwargs)
    if mutate is not None:
        mutate(d)
    mb = canonical.dumps(d) if manifest_bytes is None else manifest_bytes
    signer = signer or site_id
    sig = sign_bytes(fed, signer, mb) if signature is None else signature
    chain = fed.sites[signer].cert_pem if chain_pem is None else chain_pem
    return seal(fed, container(mb, sig, chain, w)), d


# ----------------------------------------------------------------- streams


def chunks(
    data: bytes,
    *,
    upload_id: str | None = None,
    chunk_bytes: int = 64 * 1024,
    total_size: int | None = None,
    total_sha256: bytes | None = None,
) -> list[pb.UploadChunk]:
    """The UploadChunk messages of one honest stream of ``data`` (fields overridable)."""
    upload_id = upload_id or secrets.token_hex(16)
    total = len(data) if total_size is None else total_size
    sha = hashlib.sha256(data).digest() if total_sha256 is None else total_sha256
    return [
        pb.UploadChunk(
            upload_id=upload_id,
            offset=o,
            data=data[o : o + chunk_bytes],
            total_size=total,
            total_sha256=sha,
        )
        for o in range(0, max(len(data), 1), chunk_bytes)
    ]


@dataclasses.dataclass
class Refusal:
    status: grpc.StatusCode
    code: str
    message: str
    hint: str
    details: str


def send(stub, messages: Iterable[pb.UploadChunk], timeout: float = 30.0) -> pb.Receipt | Refusal:
    """One UploadModule stream; a refusal is decoded from the ``ffsecure-error-bin`` trailing
    metadata."""
    try:
        return stub.UploadModule(iter(list(messages)), timeout=timeout)
    except grpc.RpcError as exc:
        return refusal_of(exc)


def refusal_of(exc: grpc.RpcError) -> Refusal:
    md = dict(exc.trailing_metadata() or ())
    raw = md.get(MD_DETAIL)
    detail = pb.ErrorDetail.FromString(raw) if raw else pb.ErrorDetail()
    if raw and md.get(MD_CODE) != detail.code:
        raise AssertionError(
            f"error code metadata {md.get(MD_CODE)!r} disagrees with details {detail.code!r}"
        )
    return Refusal(exc.code(), detail.code, detail.message, detail.hint, exc.details() or "")


def stream(messages: Iterable[pb.UploadChunk]) -> Iterator[pb.UploadChunk]:
    yield from messages
