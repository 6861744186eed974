"""Fuzz targets: each takes untrusted bytes and must either succeed or raise a typed FFSecureError.

Any other exception (IndexError, struct.error, RecursionError, MemoryError,
UnicodeDecodeError, ...) is a bug: the drivers report it as a crash.
Targets, and the seed inputs each starts from (real, valid records):

``canonical``   ffsecure.canonical.loads_canonical
``manifest``    ffsecure.package.ModuleManifest.from_bytes
``package``     SignedPackage.from_bytes + verify_package (signature, policy, weights)
``envelope``    ffsecure.envelope.open_sealed with the aggregator's key, then the package path
``safetensors`` ffsecure.generators.check_safetensors against the federation's generator
``federation``  ffsecure.federation.load_signed_manifest against the CA
``upload_chunk`` ffsecure.v1 UploadChunk decoding + the staging area (open, write, verify) as the
servicer runs it
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from google.protobuf.message import DecodeError

from aggregator.home import LogSigner
from aggregator.uploads import UploadStaging
from ffsecure import canonical, envelope, package, pki
from ffsecure.errors import FFSecureError
from ffsecure.federation import FederationManifest, create_signed_manifest, load_signed_manifest
from ffsecure.package import ModuleManifest
from ffsecure.v1 import aggregator_pb2 as pb


class Setup:
    """A federation with real keys, built once per process in a temp dir."""

    def __init__(self) -> None:
        # heavy: torch, only when a target needs this federation (canonical does not)
        from ffsecure import generators

        self._tmp = tempfile.TemporaryDirectory(prefix="ffsecure-fuzz-")
        root = Path(self._tmp.name)
        self.ca = pki.init_ca(root / "ca", "fedfuzz")
        self.crl = self.ca.crl()
        self.private, public = envelope.generate_keypair("x25519")
        config = generators.default_config(
            "cvae", image_shape=(1, 16, 16), num_classes=4, size="tiny"
        )
        self.federation = FederationManifest(
            federation_id="fedfuzz",
            label_space=["a", "b", "c", "d"],
            image_shape=(1, 16, 16),
            generator={"family": "cvae", "config": config},
            dp_policy={"required": True, "max_epsilon": 8.0, "delta": 1e-5},
            limits={"max_module_bytes": 4 << 20},
            aggregator={
                "endpoint": "localhost:8443",
                "hpke_public_key": envelope.b64encode(public),
                "hpke_key_id": envelope.key_id(public),
                "hpke_suite": "x25519",
                "log_public_key": _log_vkey(),
                "log_origin": "fedfuzz.local/log",
            },
        )
        self.signed_federation = create_signed_manifest(self.federation, self.ca)
        self.weights = generators.to_safetensors(generators.build("cvae", config))
        self.specs = generators.expected_tensor_specs(
            "cvae", generators.validate_config("cvae", config)
        )
        cert, key = self.ca.issue_site("st-fuzz")
        manifest = package.build_manifest(
            federation=self.federation,
            site_id="st-fuzz",
            weights=self.weights,
            classes=[0, 1],
            seed=1,
            dp={"epsilon": 3.0, "delta": 1e-5},
        )
        self.manifest_bytes = manifest.to_bytes()
        self.package = package.sign_package(manifest, self.weights, key, cert).to_bytes()
        self.sealed = envelope.seal(
            self.package, public, federation_id="fedfuzz", key_id=self.federation.hpke_key_id
        )
        self.canonical_seed = canonical.dumps({"a": [1, 2.5, "x", None, True], "b": {"c": "é"}})


def _log_vkey() -> str:

    return LogSigner.generate("fedfuzz.local/log").vkey


@functools.lru_cache(maxsize=1)
def setup() -> Setup:
    return Setup()


# --------------------------------------------------------------------- targets


def t_canonical(data: bytes) -> None:

    obj = canonical.loads_canonical(data)
    assert canonical.dumps(obj) == data  # canonical means one encoding


def t_manifest(data: bytes) -> None:

    m = ModuleManifest.from_bytes(data)
    assert m.to_bytes() == data


def t_package(data: bytes) -> None:

    s = setup()
    pkg = package.SignedPackage.from_bytes(data, max_bytes=s.federation.max_module_bytes)
    package.verify_package(pkg, federation=s.federation, ca_cert=s.ca.cert, crl=s.crl)
    assert data == s.package, "a package other than the seed verified"


def t_envelope(data: bytes) -> None:

    s = setup()
    plain = envelope.open_sealed(
        data,
        s.private,
        federation_id="fedfuzz",
        key_id=s.federation.hpke_key_id,
        max_bytes=s.federation.max_module_bytes,
    )
    t_package(plain)


def t_safetensors(data: bytes) -> None:
    # heavy: torch, only for the targets that build or check a generator
    from ffsecure.generators import check_safetensors

    check_safetensors(data, setup().specs)


def t_federation(data: bytes) -> None:

    s = setup()
    load_signed_manifest(data, s.ca.cert)
    assert data == s.signed_federation, "a federation manifest other than the seed verified"


@functools.lru_cache(maxsize=1)
def _staging():

    tmp = tempfile.mkdtemp(prefix="ffsecure-fuzz-staging-")
    return UploadStaging(
        Path(tmp), max_upload_bytes=1 << 20, commit_every_bytes=4096, max_parallel_per_site=1 << 30
    )


def t_upload_chunk(data: bytes) -> None:
    """Decode an UploadChunk and run it through the staging area as the servicer does (first chunk
    of a stream: open or resume, write at the offset, verify when complete), then drop the
    upload."""

    try:
        chunk = pb.UploadChunk.FromString(data)
    except DecodeError:
        return  # gRPC refuses it before the servicer sees it
    staging = _staging()
    try:
        staged = staging.open(
            "st-fuzz", chunk.upload_id, total_size=chunk.total_size, total_sha256=chunk.total_sha256
        )
        try:
            staged.write(chunk.offset, chunk.data)
            if staged.complete:
                got = staged.read_verified()
                assert hashlib.sha256(got).digest() == chunk.total_sha256
        finally:
            staged.close()
    finally:
        shutil.rmtree(staging.root / "st-fuzz", ignore_errors=True)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "canonical": t_canonical,
    "manifest": t_manifest,
    "package": t_package,
    "envelope": t_envelope,
    "safetensors": t_safetensors,
    "federation": t_federation,
    "upload_chunk": t_upload_chunk,
}


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start mutating from."""
    s = setup()

    small = s.sealed[:256]
    chunk = pb.UploadChunk(
        upload_id="0" * 32,
        offset=0,
        data=small,
        total_size=len(small),
        total_sha256=hashlib.sha256(small).digest(),
    ).SerializeToString()
    return {
        "canonical": [s.canonical_seed, s.manifest_bytes],
        "manifest": [s.manifest_bytes],
        "package": [s.package],
        "envelope": [s.sealed],
        "safetensors": [s.weights],
        "federation": [s.signed_federation],
        "upload_chunk": [chunk],
    }[target]


def run_one(target: str, data: bytes) -> None:
    """Run a target; typed refusals are the expected outcome, anything else propagates."""
    try:
        TARGETS[target](data)
    except FFSecureError as exc:
        if not (isinstance(exc.code, str) and exc.code.startswith("E_")):
            raise AssertionError(f"FFSecureError without a stable code: {exc!r}") from None
