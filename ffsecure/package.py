"""The module package: manifest + safetensors weights, signed by the site.

A package is what a site sends (inside an HPKE envelope) and what the
aggregator verifies before storing anything. The manifest is canonical JSON
and holds the SHA-256 of the weights, so the site's signature over the
manifest covers the weights too. The signature is ECDSA P-256/SHA-256 by the
site's certificate key over::

    b"ffsecure/module-manifest/v1\\x00" || SHA-256(manifest_bytes)

Container bytes (``SignedPackage.to_bytes``), integers big-endian::

    "FFPK" | 0x01 | u32 len + manifest | u32 len + signature (DER)
         | u32 len + cert chain (PEM) | u64 len + weights (safetensors)

Every length is checked against its cap and the bytes left before anything
is sliced; trailing bytes are refused. See ``docs/formats.md``.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ffsecure import FORMAT_VERSION, __version__, canonical, pki, timefmt
from ffsecure import dp as dpmod
from ffsecure.errors import (
    DefaultHint,
    DPError,
    FederationMismatchError,
    FFSecureError,
    FormatError,
    PolicyError,
    TooLargeError,
    VerificationError,
)
from ffsecure.federation import FederationManifest, ManifestSchemaError, check_image_shape
from ffsecure.privacy.report import check_report
from ffsecure.records import fields
from ffsecure.records.fields import is_number

# ModuleIdError and check_module_id stay importable from here;
# the rule lives in ffsecure.records.ids.
from ffsecure.records.ids import FEDERATION_ID, MODULE_ID, SHA256_HEX, SITE_ID, check_module_id
from ffsecure.records.ids import ModuleIdError as ModuleIdError

SIGNATURE_CONTEXT = b"ffsecure/module-manifest/v1\x00"
SIGNATURE_ALG = "ecdsa-p256-sha256"
MAGIC = b"FFPK"
MAX_MANIFEST_BYTES = 256 * 1024
MAX_SIGNATURE_BYTES = 8 * 1024
MAX_CHAIN_BYTES = 16 * 1024


# --------------------------------------------------------------------- errors


class SignatureError(VerificationError):
    """The site's signature over the module manifest does not verify."""

    code = "E_SIGNATURE"


class SiteMismatchError(VerificationError):
    """The manifest's site id differs from the identity in the signing certificate."""

    code = "E_SITE_MISMATCH"


class WeightsHashError(VerificationError):
    """The weights do not hash to the manifest's ``weights_sha256`` (or size differs)."""

    code = "E_WEIGHTS_HASH"


class PackageFormatError(DefaultHint, FormatError):
    """The package container bytes are malformed."""

    code = "E_PACKAGE_FORMAT"
    default_hint = (
        "write packages with ffsecure.package.sign_package(...).to_bytes() (or `site-node`)"
    )


class ManifestTimeError(VerificationError):
    """The manifest's creation time lies in the future."""

    code = "E_MANIFEST_TIME"


class DPPolicyError(DefaultHint, PolicyError):
    code = "E_POLICY_DP"
    default_hint = (
        "train with DP under the federation's max_epsilon and delta "
        "(dp_policy in the federation manifest)"
    )


class ClassesPolicyError(DefaultHint, PolicyError):
    code = "E_POLICY_CLASSES"
    default_hint = (
        "declare only classes of the federation's label space, as sorted distinct indices"
    )


class GeneratorPolicyError(DefaultHint, PolicyError):
    code = "E_POLICY_GENERATOR"
    default_hint = "train the generator family and config the federation manifest fixes"


class ShapePolicyError(DefaultHint, PolicyError):
    code = "E_POLICY_SHAPE"
    default_hint = "train on images of the federation's image_shape"


def _schema(msg: str) -> ManifestSchemaError:
    return ManifestSchemaError(
        f"module manifest: {msg}", hint="build manifests with ffsecure.package.build_manifest"
    )


def _field_error(exc: fields.FieldError) -> FFSecureError:
    if exc.key == "module_id":  # the module id keeps its own code, E_MODULE_ID
        check_module_id(exc.value)
    return _schema(exc.message)


#: The module manifest's fields, in the order they are checked: an exact key set, each typed
#: and bounded (ids by their rules in ffsecure.records.ids). What a spec cannot say (the time, the
#: image shape, dp's epsilon and delta, the privacy report's own fields) follows in
#: :meth:`ModuleManifest.validate`.
MANIFEST_SPEC = fields.Table(
    {
        "v": fields.Int(FORMAT_VERSION, FORMAT_VERSION, expect=f"format version {FORMAT_VERSION}"),
        "federation_id": fields.Str(rule=FEDERATION_ID),
        "site_id": fields.Str(rule=SITE_ID),
        "module_id": fields.Str(rule=MODULE_ID),
        "created_at": fields.Str(max_len=64, expect="an RFC 3339 UTC time"),
        "generator": fields.Table(
            {"family": fields.Str(), "config": fields.Opaque((dict,))},
            expect="{family: str, config: object}",
        ),
        "image_shape": fields.Opaque(),  # check_image_shape
        "classes": fields.List(fields.Int(), 1, 1000, expect="a list of 1..1000 class indices"),
        "weights_sha256": fields.Str(rule=SHA256_HEX),
        "weights_bytes": fields.Int(1, (1 << 40) - 1, expect="a positive integer below 2^40"),
        "dp": fields.Nullable(fields.Scalars(max_keys=32)),
        "seed": fields.Int(0, (1 << 63) - 1, expect="an integer in [0, 2^63)"),
        "library_version": fields.Str(1, 32, expect="a short string"),
        "privacy_report": fields.Nullable(fields.Scalars(max_keys=64)),  # then check_report
    }
)
MANIFEST_FIELDS = set(MANIFEST_SPEC.fields)


def new_module_id() -> str:
    """A fresh random 128-bit module id (32 lowercase hex digits)."""
    return secrets.token_hex(16)


# ------------------------------------------------------------------ manifest


@dataclass
class ModuleManifest:
    """The typed module manifest (see DESIGN.md "Module package")."""

    federation_id: str
    site_id: str
    module_id: str
    created_at: str
    generator: dict[str, Any]  # {"family", "config"}
    image_shape: tuple[int, int, int]
    classes: list[int]
    weights_sha256: str
    weights_bytes: int
    dp: dict[str, Any] | None
    seed: int
    library_version: str = __version__
    privacy_report: dict[str, Any] | None = None
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Schema checks only (types, bounds); policy is checked by :func:`verify_package`."""
        fields.check(MANIFEST_SPEC, self._fields(), error=_field_error)
        try:
            pki.parse_rfc3339(self.created_at)
        except FFSecureError:
            raise _schema(f"created_at {self.created_at!r} is not RFC 3339 UTC") from None
        try:
            self.image_shape = check_image_shape(self.image_shape)
        except FFSecureError as exc:
            raise _schema(exc.message) from None
        if self.dp is not None and not (
            is_number(self.dp.get("epsilon")) and is_number(self.dp.get("delta"))
        ):
            raise _schema("dp must state the achieved epsilon and delta as numbers")
        if self.privacy_report is not None:
            try:
                check_report(self.privacy_report)
            except FFSecureError as exc:
                raise _schema(exc.message) from None

    def _fields(self) -> dict[str, Any]:
        """The fields as given (not normalised as :meth:`to_dict` does), for the spec check."""
        return {
            "v": self.version,
            "federation_id": self.federation_id,
            "site_id": self.site_id,
            "module_id": self.module_id,
            "created_at": self.created_at,
            "generator": self.generator,
            "image_shape": self.image_shape,
            "classes": self.classes,
            "weights_sha256": self.weights_sha256,
            "weights_bytes": self.weights_bytes,
            "dp": self.dp,
            "seed": self.seed,
            "library_version": self.library_version,
            "privacy_report": self.privacy_report,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "federation_id": self.federation_id,
            "site_id": self.site_id,
            "module_id": self.module_id,
            "created_at": self.created_at,
            "generator": self.generator,
            "image_shape": list(self.image_shape),
            "classes": list(self.classes),
            "weights_sha256": self.weights_sha256,
            "weights_bytes": self.weights_bytes,
            "dp": self.dp,
            "library_version": self.library_version,
            "seed": self.seed,
            "privacy_report": self.privacy_report,
        }

    def to_bytes(self) -> bytes:
        return canonical.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, obj: Any) -> ModuleManifest:
        if not isinstance(obj, dict) or set(obj) != MANIFEST_FIELDS:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise _schema(f"fields are {got}, expected {sorted(MANIFEST_FIELDS)}")
        shape = obj["image_shape"]
        return cls(
            federation_id=obj["federation_id"],
            site_id=obj["site_id"],
            module_id=obj["module_id"],
            created_at=obj["created_at"],
            generator=obj["generator"],
            image_shape=tuple(shape) if isinstance(shape, list) else shape,
            classes=obj["classes"],
            weights_sha256=obj["weights_sha256"],
            weights_bytes=obj["weights_bytes"],
            dp=obj["dp"],
            seed=obj["seed"],
            library_version=obj["library_version"],
            privacy_report=obj["privacy_report"],
            version=obj["v"],
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ModuleManifest:
        return cls.from_dict(canonical.loads_canonical(data, max_bytes=MAX_MANIFEST_BYTES))


def build_manifest(
    *,
    federation: FederationManifest,
    site_id: str,
    weights: bytes,
    classes: list[int],
    seed: int,
    dp: dict[str, Any] | None = None,
    module_id: str | None = None,
    created_at: str | None = None,
    privacy_report: dict[str, Any] | None = None,
    generator: dict[str, Any] | None = None,
) -> ModuleManifest:
    """A manifest for ``weights`` trained under ``federation`` (its generator unless given)."""
    return ModuleManifest(
        federation_id=federation.federation_id,
        site_id=site_id,
        module_id=module_id or new_module_id(),
        created_at=created_at or timefmt.now_rfc3339(),
        generator=copy.deepcopy(generator or federation.generator),
        image_shape=federation.image_shape,
        classes=sorted(set(int(c) for c in classes)),
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        weights_bytes=len(weights),
        dp=dp,
        seed=int(seed),
        privacy_report=privacy_report,
    )


# ------------------------------------------------------------ signed package


def _message(manifest_bytes: bytes) -> bytes:
    return SIGNATURE_CONTEXT + hashlib.sha256(manifest_bytes).digest()


@dataclass
class SignedPackage:
    """A manifest, its bytes, the site's signature and certificate, and the weights."""

    manifest_bytes: bytes
    manifest: ModuleManifest
    signature: bytes
    cert_chain_pem: bytes
    weights: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        return b"".join(
            [
                MAGIC,
                bytes([FORMAT_VERSION]),
                struct.pack(">I", len(self.manifest_bytes)),
                self.manifest_bytes,
                struct.pack(">I", len(self.signature)),
                self.signature,
                struct.pack(">I", len(self.cert_chain_pem)),
                self.cert_chain_pem,
                struct.pack(">Q", len(self.weights)),
                self.weights,
            ]
        )

    @property
    def size(self) -> int:
        return (
            len(MAGIC)
            + 1
            + 4 * 3
            + 8
            + len(self.manifest_bytes)
            + len(self.signature)
            + len(self.cert_chain_pem)
            + len(self.weights)
        )

    @classmethod
    def from_bytes(cls, data: bytes, max_bytes: int | None = None) -> SignedPackage:
        """Parse container bytes; lengths are checked before any slice (no code runs)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise PackageFormatError("package must be bytes")
        view = memoryview(data)
        if max_bytes is not None and len(view) > max_bytes:
            raise TooLargeError(
                f"package is {len(view)} bytes, over the limit of {max_bytes}",
                hint="the federation's limits.max_module_bytes caps a package",
            )
        if len(view) < 5 or bytes(view[:4]) != MAGIC:
            raise PackageFormatError("not an ffsecure module package (bad magic)")
        if view[4] != FORMAT_VERSION:
            raise PackageFormatError(f"package format version {view[4]} is not supported")
        pos = 5
        parts = []
        for name, fmt, cap in (
            ("manifest", ">I", MAX_MANIFEST_BYTES),
            ("signature", ">I", MAX_SIGNATURE_BYTES),
            ("cert chain", ">I", MAX_CHAIN_BYTES),
            ("weights", ">Q", max_bytes or (1 << 40)),
        ):
            width = struct.calcsize(fmt)
            if pos + width > len(view):
                raise PackageFormatError(f"package ends before the {name} length")
            (length,) = struct.unpack(fmt, view[pos : pos + width])
            pos += width
            if length > cap:
                raise PackageFormatError(f"{name} length {length} is over its cap of {cap}")
            if length > len(view) - pos:
                raise PackageFormatError(f"{name} length {length} runs past the end")
            parts.append(bytes(view[pos : pos + length]))
            pos += length
        if pos != len(view):
            raise PackageFormatError(f"{len(view) - pos} trailing bytes after the weights")
        manifest_bytes, signature, chain, weights = parts
        manifest = ModuleManifest.from_bytes(manifest_bytes)
        return cls(manifest_bytes, manifest, signature, chain, weights)


def sign_package(
    manifest: ModuleManifest,
    weights: bytes,
    key: ec.EllipticCurvePrivateKey,
    cert_chain: x509.Certificate | bytes,
) -> SignedPackage:
    """Sign ``manifest`` with the site key; the certificate must be that key's."""
    manifest.validate()
    if len(weights) != manifest.weights_bytes or not hmac.compare_digest(
        hashlib.sha256(weights).hexdigest(), manifest.weights_sha256
    ):
        raise WeightsHashError(
            "weights do not match the manifest's weights_sha256/weights_bytes",
            hint="build the manifest from these weights",
        )
    chain_pem = (
        pki.cert_pem(cert_chain) if isinstance(cert_chain, x509.Certificate) else bytes(cert_chain)
    )
    cert = pki.load_certs(chain_pem, max_count=1)[0]
    if cert.public_key() != key.public_key():
        raise FFSecureError(
            "the signing key does not belong to the certificate",
            code="E_KEY",
            hint="use the key and certificate issued together for this site",
        )
    manifest_bytes = manifest.to_bytes()
    signature = key.sign(_message(manifest_bytes), ec.ECDSA(hashes.SHA256()))
    return SignedPackage(manifest_bytes, manifest, signature, chain_pem, bytes(weights))


# -------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerifiedManifest:
    """A manifest whose signature, certificate and identity checked out."""

    manifest: ModuleManifest
    identity: pki.Identity
    cert_fingerprint: str
    manifest_sha256: str

    @property
    def module_id(self) -> str:
        return self.manifest.module_id

    @property
    def site_id(self) -> str:
        return self.manifest.site_id


@dataclass(frozen=True)
class VerifiedModule(VerifiedManifest):
    """A whole package that passed :func:`verify_package`."""


def verify_signed_manifest(
    manifest_bytes: bytes,
    signature: bytes,
    cert_chain_pem: bytes,
    *,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime | None = None,
) -> VerifiedManifest:
    """Check a manifest's signature, certificate and identity (no weights needed).

    This is what an auditor runs on an exported manifest. Errors: E_CERT_FORMAT,
    E_SIGNATURE, E_MANIFEST_SCHEMA/E_MODULE_ID, E_CERT_CHAIN/E_CERT_EXPIRED/
    E_CERT_REVOKED/E_CERT_USAGE/E_IDENTITY (at the manifest's creation time),
    E_MANIFEST_TIME, E_FEDERATION_MISMATCH, E_SITE_MISMATCH.
    """
    manifest_obj = canonical.loads_canonical(manifest_bytes, max_bytes=MAX_MANIFEST_BYTES)
    try:
        cert = pki.load_certs(cert_chain_pem, max_count=1)[0]
    except FormatError as exc:
        raise FormatError(
            f"package certificate: {exc.message}",
            code="E_CERT_FORMAT",
            hint="a package carries exactly one certificate: the site's",
        ) from None
    if pki.cert_pem(cert) != bytes(cert_chain_pem):
        raise FormatError(
            "package certificate is not in canonical PEM form",
            code="E_CERT_FORMAT",
            hint="carry the certificate exactly as `ffsecure pki` wrote it",
        )
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        raise pki.CertChainError("signing certificate key is not ECDSA")
    try:
        if len(signature) > MAX_SIGNATURE_BYTES:
            raise InvalidSignature
        public.verify(signature, _message(manifest_bytes), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        raise SignatureError(
            "module manifest signature does not verify with the site certificate",
            hint="re-sign the package with the site's current key",
        ) from None
    manifest = ModuleManifest.from_dict(manifest_obj)
    created = pki.parse_rfc3339(manifest.created_at)
    now = (now or pki.utcnow()).astimezone(dt.UTC)
    if created > now + timefmt.CLOCK_SKEW:
        raise ManifestTimeError(
            f"manifest created_at {manifest.created_at} is in the future",
            hint="check the site's clock",
        )
    try:
        identity = pki.verify_cert(cert, ca_cert=ca_cert, crl=crl, at=created, role="site")
    except FFSecureError as exc:
        if exc.hint:
            raise
        exc.hint = (
            "the signing certificate must be this federation's site certificate, valid and not "
            "revoked at the manifest's created_at"
        )
        raise
    if manifest.federation_id != identity.federation_id:
        raise FederationMismatchError(
            f"manifest is for federation {manifest.federation_id!r}, the certificate for "
            f"{identity.federation_id!r}"
        )
    if manifest.site_id != identity.site_id:
        raise SiteMismatchError(
            f"manifest names site {manifest.site_id!r} but is signed by {identity.site_id!r}",
            hint="a site can only publish modules under its own id",
        )
    return VerifiedManifest(
        manifest, identity, pki.cert_fingerprint(cert), hashlib.sha256(manifest_bytes).hexdigest()
    )


def check_policy(manifest: ModuleManifest, federation: FederationManifest) -> None:
    """Federation policy for a module: generator, image shape, classes, DP."""
    if manifest.federation_id != federation.federation_id:
        raise FederationMismatchError(
            f"module is for federation {manifest.federation_id!r}, not {federation.federation_id!r}"
        )
    if tuple(manifest.image_shape) != tuple(federation.image_shape):
        raise ShapePolicyError(
            f"image_shape {list(manifest.image_shape)} is not the federation's "
            f"{list(federation.image_shape)}"
        )
    if manifest.generator["family"] != federation.generator["family"]:
        raise GeneratorPolicyError(
            f"generator family {manifest.generator['family']!r} is not the federation's "
            f"{federation.generator['family']!r}"
        )
    if canonical.dumps(manifest.generator["config"]) != canonical.dumps(
        federation.generator["config"]
    ):
        raise GeneratorPolicyError(
            "generator config differs from the federation manifest's",
            hint="train with the generator config the federation fixes",
        )
    classes = manifest.classes
    if classes != sorted(set(classes)) or not all(0 <= c < federation.num_classes for c in classes):
        raise ClassesPolicyError(
            f"classes {classes[:10]} must be sorted, distinct indices below "
            f"{federation.num_classes} (the label space)"
        )
    policy = federation.dp_policy
    dp = manifest.dp
    if policy["required"] and dp is None:
        raise DPPolicyError(
            "the federation requires DP training; the module has no DP claim",
            hint="train with --dp under the federation's epsilon",
        )
    if dp is not None:
        # the signed bounds hold for every DP claim, required or not: an honest site refuses
        # a target above them (site_node.training), so a claim above them is not one
        for key, bound in (("epsilon", policy["max_epsilon"]), ("delta", policy["delta"])):
            value = dp.get(key)
            if bound is not None and not (is_number(value) and 0 < value <= bound):
                raise DPPolicyError(
                    f"{key} {value!r} is outside (0, {bound}], the federation's dp_policy",
                    hint=f"train to at most the federation's {key} {bound}",
                )
        ran = dpmod.record_mechanism(dp)
        try:  # the site's rule (resolve_mechanism), on the signed family and DP record
            dpmod.check_family(ran, manifest.generator["family"])
        except DPError as exc:
            raise dpmod.DPClaimError(
                f"the module's DP record does not fit its generator: {exc.message}"
            ) from None
        pinned = policy.get("mechanism", "auto")
        if pinned != "auto" and ran != pinned:
            raise DPPolicyError(
                f"the module's DP mechanism is {ran!r}; the federation pins {pinned!r}",
                hint=f"train with the {pinned} mechanism (dp_policy.mechanism)",
            )
        unit, pinned_unit = dpmod.record_privacy_unit(dp), dpmod.pinned_privacy_unit(policy)
        if not dpmod.meets_privacy_unit(unit, pinned_unit):
            raise DPPolicyError(
                f"the module's DP claim is per {unit!r}; the federation requires DP per "
                f"{pinned_unit!r} (dp_policy.privacy_unit)",
                hint=f'train with privacy_unit = "{pinned_unit}" in site.toml\'s [data] '
                "(a dicom: source, one image per patient)",
            )


def check_weights(manifest: ModuleManifest, weights: bytes) -> None:
    """Weights size + SHA-256, safetensors header, every tensor's name/shape/dtype, finite values.

    A NaN or an infinity anywhere is ``E_TENSOR_VALUE`` naming the module and the tensor:
    such a module would make every later synthesis fail, so it is never registered.
    """
    if len(weights) != manifest.weights_bytes or not hmac.compare_digest(
        hashlib.sha256(weights).hexdigest(), manifest.weights_sha256
    ):
        raise WeightsHashError(
            "weights do not hash to the manifest's weights_sha256",
            hint="the package was altered; re-send it",
        )
    # heavy: the generator families import torch; only when weights are checked
    from ffsecure.generators import (
        check_finite,
        check_safetensors,
        expected_tensor_specs,
        validate_config,
    )

    family = manifest.generator["family"]
    config = validate_config(family, manifest.generator["config"])
    check_safetensors(weights, expected_tensor_specs(family, config))
    check_finite(weights, module_id=manifest.module_id)


def verify_package(
    pkg: SignedPackage,
    *,
    federation: FederationManifest,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime | None = None,
) -> VerifiedModule:
    """Every check the aggregator runs before storing a module; raises the first failure."""
    if pkg.size > federation.max_module_bytes:
        raise TooLargeError(
            f"package is {pkg.size} bytes, over the federation limit of "
            f"{federation.max_module_bytes}",
            hint="use a smaller generator config",
        )
    checked = verify_signed_manifest(
        pkg.manifest_bytes, pkg.signature, pkg.cert_chain_pem, ca_cert=ca_cert, crl=crl, now=now
    )
    check_policy(checked.manifest, federation)
    check_weights(checked.manifest, pkg.weights)
    return VerifiedModule(
        checked.manifest, checked.identity, checked.cert_fingerprint, checked.manifest_sha256
    )


# -------------------------------------------------- exported metadata (audit)


def package_meta(pkg: SignedPackage) -> bytes:
    """Canonical JSON of manifest + signature + certificate (never weights), for the ledger."""
    return canonical.dumps(
        {
            "v": 1,
            "alg": SIGNATURE_ALG,
            "manifest": canonical.loads_canonical(pkg.manifest_bytes, max_bytes=MAX_MANIFEST_BYTES),
            "signature": base64.b64encode(pkg.signature).decode("ascii"),
            "cert_chain_pem": pkg.cert_chain_pem.decode("ascii"),
        }
    )


def verify_package_meta(
    meta: bytes,
    *,
    ca_cert: x509.Certificate,
    crl: x509.CertificateRevocationList | None = None,
    now: dt.datetime | None = None,
) -> VerifiedManifest:
    """Verify exported package metadata (:func:`package_meta`) offline."""
    obj = canonical.loads_canonical(meta, max_bytes=MAX_MANIFEST_BYTES + 64 * 1024)
    if (
        not isinstance(obj, dict)
        or set(obj) != {"v", "alg", "manifest", "signature", "cert_chain_pem"}
        or obj["v"] != 1
        or obj["alg"] != SIGNATURE_ALG
        or not isinstance(obj["signature"], str)
        or not isinstance(obj["cert_chain_pem"], str)
    ):
        raise _schema("package metadata must be {v:1, alg, manifest, signature, cert_chain_pem}")
    signature = canonical.b64decode_canonical(obj["signature"])
    if signature is None:
        raise SignatureError("package metadata signature is not canonical base64")
    return verify_signed_manifest(
        canonical.dumps(obj["manifest"]),
        signature,
        obj["cert_chain_pem"].encode("ascii", "replace"),
        ca_cert=ca_cert,
        crl=crl,
        now=now,
    )
