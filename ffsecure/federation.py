"""The federation manifest: everything a site trusts about the federation, signed by the CA.

A site believes nothing about the federation that this manifest does not say:
the label space, the image shape, the generator family and config, the DP
policy, the limits, and the aggregator's endpoint, HPKE key and log key.

Signed form (``federation.json``), canonical JSON::

    {"signatures":[{"alg":"ecdsa-p256-sha256","keyid":<CA cert SHA-256 hex>,"sig":<base64 DER>}],
     "signed":{...manifest fields...}}

The CA signs ``b"ffsecure/federation-manifest/v1\\x00" || SHA-256(canonical(signed))``.
See ``docs/formats.md`` for every field.
"""

from __future__ import annotations

import base64
import hashlib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from ffsecure import FORMAT_VERSION, canonical, envelope, pki, timefmt
from ffsecure.errors import ConfigError, FormatError, VerificationError
from ffsecure.ids import parse_port

SIGNATURE_CONTEXT = b"ffsecure/federation-manifest/v1\x00"
SIGNATURE_ALG = "ecdsa-p256-sha256"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODULE_BYTES_CAP = 2 << 30  # 2 GiB: no federation may allow more
DEFAULT_MAX_MODULE_BYTES = 64 << 20
MAX_CLASSES = 1000

SIGNED_FIELDS = {
    "v",
    "federation_id",
    "label_space",
    "image_shape",
    "generator",
    "dp_policy",
    "limits",
    "aggregator",
    "privacy_policy",
    "created_at",
}
AGGREGATOR_FIELDS = {
    "endpoint",
    "hpke_public_key",
    "hpke_key_id",
    "hpke_suite",
    "log_public_key",
    "log_origin",
}
DP_FIELDS = {"required", "max_epsilon", "delta"}
LIMIT_FIELDS = {"max_module_bytes"}


class ManifestSignatureError(VerificationError):
    """The federation manifest's CA signature does not verify."""

    code = "E_MANIFEST_SIGNATURE"


class ManifestSchemaError(FormatError):
    """A manifest field is missing, unknown, or out of bounds."""

    code = "E_MANIFEST_SCHEMA"


def _schema(msg: str) -> ManifestSchemaError:
    return ManifestSchemaError(msg, hint="fix federation.toml and run `ffsecure federation create`")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_image_shape(shape: Any) -> tuple[int, int, int]:
    if (
        not isinstance(shape, (list, tuple))
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
    ):
        raise _schema(f"image_shape {shape!r} must be [C, H, W]")
    c, h, w = shape
    if c not in (1, 3) or not all(8 <= v <= 64 and v % 4 == 0 for v in (h, w)):
        raise _schema(
            f"image_shape {list(shape)} must have C in {{1,3}} and H, W multiples "
            "of 4 between 8 and 64"
        )
    return (c, h, w)


def check_vkey(vkey: Any) -> str:
    """Check a C2SP signed-note verifier key (the log's Ed25519 key), or E_MANIFEST_SCHEMA."""
    from ffsecure.errors import LedgerError
    from ffsecure.ledger.checkpoint import parse_vkey

    if not isinstance(vkey, str) or len(vkey) > 512 or vkey != vkey.strip():
        raise _schema("log_public_key must be a signed-note verifier key string")
    try:
        parse_vkey(vkey)
    except LedgerError as exc:
        raise _schema(f"log_public_key: {exc.message}") from None
    return vkey


def _validate_generator(
    generator: Any, label_space: list[str], image_shape: tuple[int, int, int]
) -> dict:
    if not isinstance(generator, dict) or set(generator) != {"family", "config"}:
        raise _schema("generator must be {family, config}")
    family, config = generator["family"], generator["config"]
    if not isinstance(family, str) or not isinstance(config, dict):
        raise _schema("generator family must be a string and config an object")
    try:
        from ffsecure.generators import validate_config
    except ImportError:  # generator families not installed: structural checks only
        validate_config = None
    if validate_config is not None:
        try:
            config = validate_config(family, config)
        except (FormatError, ConfigError, VerificationError, ValueError) as exc:
            raise _schema(f"generator config: {getattr(exc, 'message', exc)}") from None
    for key, want in (("num_classes", len(label_space)), ("image_shape", list(image_shape))):
        if key in config:
            got = list(config[key]) if isinstance(config[key], (list, tuple)) else config[key]
            if got != want:
                raise _schema(f"generator config {key} is {got!r}, the federation has {want!r}")
    return {"family": family, "config": config}


@dataclass
class FederationManifest:
    """The typed federation manifest (the ``signed`` part of ``federation.json``)."""

    federation_id: str
    label_space: list[str]
    image_shape: tuple[int, int, int]
    generator: dict
    dp_policy: dict
    limits: dict
    aggregator: dict
    privacy_policy: dict | None = None
    created_at: str = field(default_factory=lambda: timefmt.now_rfc3339())
    version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        self.validate()

    # -- views -----------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.label_space)

    @property
    def hpke_public_key(self) -> bytes:
        return envelope.b64decode(self.aggregator["hpke_public_key"], "hpke_public_key")

    @property
    def hpke_key_id(self) -> str:
        return self.aggregator["hpke_key_id"]

    @property
    def hpke_suite(self) -> str:
        return self.aggregator["hpke_suite"]

    @property
    def max_module_bytes(self) -> int:
        return self.limits["max_module_bytes"]

    def to_dict(self) -> dict:
        return {
            "v": self.version,
            "federation_id": self.federation_id,
            "label_space": list(self.label_space),
            "image_shape": list(self.image_shape),
            "generator": self.generator,
            "dp_policy": self.dp_policy,
            "limits": self.limits,
            "aggregator": self.aggregator,
            "privacy_policy": self.privacy_policy,
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, obj: Any) -> FederationManifest:
        if not isinstance(obj, dict) or set(obj) != SIGNED_FIELDS:
            got = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
            raise _schema(f"manifest fields are {got}, expected {sorted(SIGNED_FIELDS)}")
        if obj["v"] != FORMAT_VERSION:
            raise _schema(f"manifest version {obj['v']!r} is not supported")
        shape = obj["image_shape"]
        return cls(
            federation_id=obj["federation_id"],
            label_space=obj["label_space"],
            image_shape=tuple(shape) if isinstance(shape, list) else shape,
            generator=obj["generator"],
            dp_policy=obj["dp_policy"],
            limits=obj["limits"],
            aggregator=obj["aggregator"],
            privacy_policy=obj["privacy_policy"],
            created_at=obj["created_at"],
            version=obj["v"],
        )

    # -- validation ------------------------------------------------------
    def validate(self) -> None:
        pki.check_id(self.federation_id, "federation id")
        labels = self.label_space
        if (
            not isinstance(labels, list)
            or not 1 <= len(labels) <= MAX_CLASSES
            or not all(isinstance(n, str) and 0 < len(n) <= 128 for n in labels)
            or len(set(labels)) != len(labels)
        ):
            raise _schema(f"label_space must be 1..{MAX_CLASSES} distinct non-empty names")
        self.image_shape = check_image_shape(self.image_shape)
        self.generator = _validate_generator(self.generator, labels, self.image_shape)
        dp = self.dp_policy
        if not isinstance(dp, dict) or set(dp) != DP_FIELDS or not isinstance(dp["required"], bool):
            raise _schema("dp_policy must be {required: bool, max_epsilon, delta}")
        for key in ("max_epsilon", "delta"):
            if dp[key] is not None and not (_number(dp[key]) and dp[key] > 0):
                raise _schema(f"dp_policy.{key} must be a positive number or null")
        if dp["delta"] is not None and dp["delta"] >= 1:
            raise _schema("dp_policy.delta must be below 1")
        if dp["required"] and (dp["max_epsilon"] is None or dp["delta"] is None):
            raise _schema("a required DP policy needs max_epsilon and delta")
        limits = self.limits
        if (
            not isinstance(limits, dict)
            or set(limits) != LIMIT_FIELDS
            or not isinstance(limits["max_module_bytes"], int)
            or isinstance(limits["max_module_bytes"], bool)
            or not 1024 <= limits["max_module_bytes"] <= MAX_MODULE_BYTES_CAP
        ):
            raise _schema("limits must be {max_module_bytes: 1 KiB .. 2 GiB}")
        agg = self.aggregator
        if not isinstance(agg, dict) or set(agg) != AGGREGATOR_FIELDS:
            raise _schema(f"aggregator must have exactly {sorted(AGGREGATOR_FIELDS)}")
        if not isinstance(agg["endpoint"], str) or not 0 < len(agg["endpoint"]) <= 255:
            raise _schema("aggregator.endpoint must be host:port")
        host, _, port = agg["endpoint"].rpartition(":")
        if not host or not parse_port(port):
            raise _schema(f"aggregator.endpoint {agg['endpoint']!r} must be host:port")
        if agg["hpke_suite"] not in envelope.SUITES:
            raise _schema(f"aggregator.hpke_suite must be one of {sorted(envelope.SUITES)}")
        try:
            public = envelope.b64decode(agg["hpke_public_key"], "hpke_public_key")
        except Exception:
            raise _schema("aggregator.hpke_public_key is not base64") from None
        if len(public) != envelope.SUITES[agg["hpke_suite"]][2]:
            raise _schema(
                f"aggregator.hpke_public_key has the wrong length for {agg['hpke_suite']}"
            )
        if agg["hpke_key_id"] != envelope.key_id(public):
            raise _schema("aggregator.hpke_key_id does not match hpke_public_key")
        check_vkey(agg["log_public_key"])
        if not isinstance(agg["log_origin"], str) or not 0 < len(agg["log_origin"]) <= 255:
            raise _schema("aggregator.log_origin must be a non-empty string")
        if self.privacy_policy is not None:
            pp = self.privacy_policy
            if not isinstance(pp, dict) or not all(
                isinstance(k, str) and (v is None or isinstance(v, (bool, str)) or _number(v))
                for k, v in pp.items()
            ):
                raise _schema("privacy_policy must be an object of scalar values")
            from ffsecure.privacy.policy import check_policy_fields

            try:
                check_policy_fields(pp)
            except FormatError as exc:
                raise _schema(exc.message) from None
        try:
            pki.parse_rfc3339(self.created_at)
        except FormatError:
            raise _schema(f"created_at {self.created_at!r} is not RFC 3339 UTC") from None


# ----------------------------------------------------------- sign / verify


def _message(signed_bytes: bytes) -> bytes:
    return SIGNATURE_CONTEXT + hashlib.sha256(signed_bytes).digest()


def create_signed_manifest(manifest: FederationManifest, ca: pki.CA) -> bytes:
    """Sign ``manifest`` with the CA key; returns the canonical ``federation.json`` bytes."""
    manifest.validate()
    if manifest.federation_id != ca.federation_id:
        raise envelope.FederationMismatchError(
            f"manifest is for {manifest.federation_id!r}, the CA serves {ca.federation_id!r}"
        )
    signed = canonical.dumps(manifest.to_dict())
    sig = ca.sign_bytes(_message(signed))
    return canonical.dumps(
        {
            "signed": manifest.to_dict(),
            "signatures": [
                {
                    "alg": SIGNATURE_ALG,
                    "keyid": pki.cert_fingerprint(ca.cert),
                    "sig": base64.b64encode(sig).decode("ascii"),
                }
            ],
        }
    )


def load_signed_manifest(data: bytes, ca_cert: x509.Certificate) -> FederationManifest:
    """Verify ``federation.json`` against the CA certificate and return the manifest.

    Errors: E_JSON*/E_NOT_CANONICAL (bytes), E_MANIFEST_SCHEMA (shape),
    E_MANIFEST_SIGNATURE (no valid CA signature), E_FEDERATION_MISMATCH.
    """
    obj = canonical.loads_canonical(data, max_bytes=MAX_MANIFEST_BYTES)
    if not isinstance(obj, dict) or set(obj) != {"signed", "signatures"}:
        raise _schema("federation.json must be {signed, signatures}")
    sigs = obj["signatures"]
    if not isinstance(sigs, list) or not 1 <= len(sigs) <= 4:
        raise _schema("federation.json must carry 1 to 4 signatures")
    message = _message(canonical.dumps(obj["signed"]))
    fingerprint = pki.cert_fingerprint(ca_cert)
    public = ca_cert.public_key()
    verified = False
    for entry in sigs:
        if (
            not isinstance(entry, dict)
            or set(entry) != {"alg", "keyid", "sig"}
            or entry["alg"] != SIGNATURE_ALG
            or not isinstance(entry["sig"], str)
            or len(entry["sig"]) > 512
        ):
            raise _schema("a signature entry must be {alg: ecdsa-p256-sha256, keyid, sig}")
        if entry["keyid"] != fingerprint:
            continue
        sig = canonical.b64decode_canonical(entry["sig"])
        if sig is None:
            continue
        try:
            public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
            verified = True
            break
        except (ValueError, InvalidSignature):
            continue
    if not verified:
        raise ManifestSignatureError(
            "federation manifest is not signed by this federation's CA",
            hint="get federation.json and ca.pem from the federation operator again",
        )
    manifest = FederationManifest.from_dict(obj["signed"])
    if manifest.federation_id != pki.ca_federation_id(ca_cert):
        raise envelope.FederationMismatchError(
            f"manifest is for {manifest.federation_id!r}, the CA serves "
            f"{pki.ca_federation_id(ca_cert)!r}"
        )
    return manifest


# ------------------------------------------------------- public-keys.json


def write_public_keys(
    path: str | Path,
    *,
    hpke_public_key: bytes,
    hpke_suite: str,
    log_public_key: str,
    log_origin: str,
) -> dict:
    """Write the aggregator's ``public-keys.json`` (what ``federation create`` reads)."""
    record = {
        "v": 1,
        "hpke_suite": hpke_suite,
        "hpke_public_key": envelope.b64encode(hpke_public_key),
        "hpke_key_id": envelope.key_id(hpke_public_key),
        "log_public_key": check_vkey(log_public_key),
        "log_origin": log_origin,
    }
    pki.write_public_file(path, canonical.dumps(record) + b"\n")
    return record


def load_public_keys(path: str | Path) -> dict:
    """Read ``public-keys.json``; returns the aggregator fields except the endpoint."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read {path}: {exc.strerror}",
            hint="copy public-keys.json from the aggregator host",
        ) from None
    obj = canonical.loads(data.rstrip(b"\n"), max_bytes=64 * 1024)
    expected = {"v", "hpke_suite", "hpke_public_key", "hpke_key_id", "log_public_key", "log_origin"}
    if not isinstance(obj, dict) or set(obj) != expected or obj["v"] != 1:
        raise ConfigError(
            f"{path} is not a v1 public-keys.json", hint=f"it must hold exactly {sorted(expected)}"
        )
    obj.pop("v")
    return obj


# ---------------------------------------------------------- federation.toml

TOML_TOP = {
    "federation_id",
    "label_space",
    "image_shape",
    "generator",
    "dp_policy",
    "limits",
    "aggregator",
    "privacy_policy",
}


def _config_error(msg: str) -> ConfigError:
    return ConfigError(msg, hint="see docs/pki.md for the federation.toml keys")


def manifest_from_toml(path: str | Path) -> FederationManifest:
    """Build a manifest from ``federation.toml`` (see docs/pki.md); unknown keys are errors."""
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _config_error(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _config_error(f"{path} is not valid TOML: {exc}") from None
    unknown = set(cfg) - TOML_TOP
    if unknown:
        raise _config_error(f"unknown keys in {path.name}: {sorted(unknown)}")
    for key in ("federation_id", "label_space", "image_shape", "generator", "aggregator"):
        if key not in cfg:
            raise _config_error(f"{path.name} lacks the key {key!r}")
    gen = cfg["generator"]
    if not isinstance(gen, dict) or set(gen) - {"family", "size", "config"} or "family" not in gen:
        raise _config_error(
            "[generator] takes family and either size or a [generator.config] table"
        )
    image_shape = check_image_shape(cfg["image_shape"])
    if "config" in gen:
        config = gen["config"]
    else:
        try:
            from ffsecure.generators import default_config
        except ImportError:
            raise _config_error(
                "generator families are not available; give [generator.config]"
            ) from None
        config = default_config(
            gen["family"],
            image_shape=image_shape,
            num_classes=len(cfg["label_space"]),
            size=gen.get("size", "default"),
        )
    dp = cfg.get("dp_policy", {})
    if not isinstance(dp, dict) or set(dp) - DP_FIELDS:
        raise _config_error(f"[dp_policy] takes only {sorted(DP_FIELDS)}")
    limits = cfg.get("limits", {})
    if not isinstance(limits, dict) or set(limits) - LIMIT_FIELDS:
        raise _config_error(f"[limits] takes only {sorted(LIMIT_FIELDS)}")
    agg = cfg["aggregator"]
    allowed = {"endpoint", "public_keys"} | AGGREGATOR_FIELDS - {"hpke_key_id"}
    if not isinstance(agg, dict) or set(agg) - allowed or "endpoint" not in agg:
        raise _config_error(f"[aggregator] takes endpoint and public_keys (or {sorted(allowed)})")
    if "public_keys" in agg:
        keys = load_public_keys(path.parent / agg["public_keys"])
    else:
        missing = {"hpke_public_key", "hpke_suite", "log_public_key", "log_origin"} - set(agg)
        if missing:
            raise _config_error(f"[aggregator] lacks {sorted(missing)} (or give public_keys)")
        keys = {
            k: agg[k] for k in ("hpke_public_key", "hpke_suite", "log_public_key", "log_origin")
        }
        keys["hpke_key_id"] = envelope.key_id(
            envelope.b64decode(agg["hpke_public_key"], "hpke_public_key")
        )
    try:
        return FederationManifest(
            federation_id=cfg["federation_id"],
            label_space=cfg["label_space"],
            image_shape=image_shape,
            generator={"family": gen["family"], "config": config},
            dp_policy={
                "required": dp.get("required", False),
                "max_epsilon": dp.get("max_epsilon"),
                "delta": dp.get("delta"),
            },
            limits={"max_module_bytes": limits.get("max_module_bytes", DEFAULT_MAX_MODULE_BYTES)},
            aggregator={"endpoint": agg["endpoint"], **keys},
            privacy_policy=cfg.get("privacy_policy"),
        )
    except (ManifestSchemaError, VerificationError) as exc:
        raise ConfigError(f"{path.name}: {exc.message}", hint=exc.hint) from None
