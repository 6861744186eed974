"""The federation manifest: everything a site trusts about the federation, signed by the CA.

A site believes nothing about the federation that this manifest does not say:
the label space, the image shape, the generator family and config, the DP
policy, the limits, and the aggregator's endpoint, HPKE key and log key.

Signed form (``federation.json``), canonical JSON::

    {"signatures":[{"alg":"ecdsa-p256-sha256","keyid":<CA cert SHA-256 hex>,"sig":<base64 DER>}],
     "signed":{...manifest fields...}}

The CA signs ``b"ffsecure/federation-manifest/v1\\x00" || SHA-256(canonical(signed))``;
that SHA-256 names the manifest (:class:`SignedManifest`), and the aggregator records it
in its ledger when it puts the manifest in force (``federation.loaded``).
See ``docs/formats.md`` for every field.
"""

from __future__ import annotations

import base64
import bisect
import hashlib
import hmac
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes

from ffsecure import FORMAT_VERSION, canonical, envelope, pki, timefmt
from ffsecure.dp import MAX_DELTA, MECHANISM_CHOICES, PRIVACY_UNITS
from ffsecure.errors import (
    ConfigError,
    FederationMismatchError,
    FFSecureError,
    FormatError,
    LedgerError,
    VerificationError,
)
from ffsecure.ledger.checkpoint import parse_vkey
from ffsecure.privacy.policy import check_policy_fields
from ffsecure.records import fields
from ffsecure.records.ids import KEY_ID, parse_port

SIGNATURE_CONTEXT = b"ffsecure/federation-manifest/v1\x00"
SIGNATURE_ALG = "ecdsa-p256-sha256"
MAX_MANIFEST_BYTES = 1 << 20
MAX_MODULE_BYTES_CAP = 2 << 30  # 2 GiB: no federation may allow more
DEFAULT_MAX_MODULE_BYTES = 64 << 20
MAX_CLASSES = 1000


class ManifestSignatureError(VerificationError):
    """The federation manifest's CA signature does not verify."""

    code = "E_MANIFEST_SIGNATURE"


class ManifestSchemaError(FormatError):
    """A manifest field is missing, unknown, or out of bounds."""

    code = "E_MANIFEST_SCHEMA"


def _schema(msg: str) -> ManifestSchemaError:
    return ManifestSchemaError(msg, hint="fix federation.toml and run `ffsecure federation create`")


def _field_error(exc: fields.FieldError) -> ManifestSchemaError:
    return _schema(exc.message)


#: The signed manifest's fields: an exact key set, each placed and bounded; what needs more
#: than a spec (the image shape, the generator config, endpoint, keys, times) is checked by
#: :meth:`FederationManifest.validate` after it.
DP_POLICY_SPEC = fields.Table(
    {
        "required": fields.Bool(),
        "max_epsilon": fields.Nullable(fields.Float(0.0, above=True)),
        # every claim's delta is at most MAX_DELTA (ffsecure.dp.check_bounds); so is the policy's
        "delta": fields.Nullable(fields.Float(0.0, MAX_DELTA, above=True)),
        # absent in manifests written before it existed (= "auto"), so their bytes are unchanged
        "mechanism": fields.Field(fields.Str(options=MECHANISM_CHOICES), default=fields.OMIT),
        # the same for the unit every DP claim must protect (absent = "image": no requirement)
        "privacy_unit": fields.Field(fields.Str(options=PRIVACY_UNITS), default=fields.OMIT),
    },
    expect="{required: bool, max_epsilon, delta, mechanism?, privacy_unit?}",
)
LIMITS_SPEC = fields.Table(
    {"max_module_bytes": fields.Int(1024, MAX_MODULE_BYTES_CAP)},
    expect="{max_module_bytes: 1 KiB .. 2 GiB}",
)
AGGREGATOR_SPEC = fields.Table(
    {
        "endpoint": fields.Str(1, 255, expect="host:port"),
        "hpke_public_key": fields.Str(expect="base64"),
        "hpke_key_id": fields.Str(rule=KEY_ID),
        "hpke_suite": fields.Str(options=tuple(sorted(envelope.SUITES))),
        "log_public_key": fields.Str(max_len=512, expect="a signed-note verifier key string"),
        "log_origin": fields.Str(1, 255, expect="a non-empty string"),
    }
)
MANIFEST_SPEC = fields.Table(
    {
        "v": fields.Int(FORMAT_VERSION, FORMAT_VERSION, expect=f"{FORMAT_VERSION}"),
        "federation_id": fields.Opaque(),  # an id, checked first with its E_IDENTITY
        "label_space": fields.List(
            fields.Str(1, 128),
            1,
            MAX_CLASSES,
            unique=True,
            expect=f"1..{MAX_CLASSES} distinct non-empty names",
        ),
        "image_shape": fields.Opaque(),  # check_image_shape
        "generator": fields.Table(
            {"family": fields.Str(), "config": fields.Opaque((dict,))},
            expect="{family: str, config: object}",
        ),
        "dp_policy": DP_POLICY_SPEC,
        "limits": LIMITS_SPEC,
        "aggregator": AGGREGATOR_SPEC,
        "privacy_policy": fields.Nullable(fields.Scalars()),  # then check_policy_fields
        "created_at": fields.Str(max_len=64, expect="an RFC 3339 UTC time"),
    }
)
SIGNED_FIELDS = set(MANIFEST_SPEC.fields)
AGGREGATOR_FIELDS = set(AGGREGATOR_SPEC.fields)
DP_FIELDS = set(DP_POLICY_SPEC.fields)
LIMIT_FIELDS = set(LIMITS_SPEC.fields)
#: ``federation.json``: the signed body (checked after its signature) and 1 to 4 signatures.
SIGNED_FILE_SPEC = fields.Table(
    {"signed": fields.Opaque(), "signatures": fields.List(fields.Opaque(), 1, 4)}
)
#: One signature entry; checked as the entries are tried, in order, up to the one that verifies.
SIGNATURE_SPEC = fields.Table(
    {
        "alg": fields.Str(options=(SIGNATURE_ALG,)),
        "keyid": fields.Opaque(),  # an entry of another key is skipped, whatever its keyid
        "sig": fields.Str(max_len=512),
    },
    expect="{alg: ecdsa-p256-sha256, keyid, sig}",
)


def check_image_shape(shape: Any) -> tuple[int, int, int]:
    """The federation's image shape, or E_MANIFEST_SCHEMA (the rule lives in records.fields)."""
    return fields.check_image_shape(
        shape,
        not_three=lambda got: _schema(f"image_shape {got!r} must be [C, H, W]"),
        unsupported=lambda got: _schema(
            f"image_shape {list(got)} must have C in {{1,3}} and H, W multiples "
            "of 4 between 8 and 64"
        ),
    )


def check_vkey(vkey: Any) -> str:
    """Check a C2SP signed-note verifier key (the log's Ed25519 key), or E_MANIFEST_SCHEMA."""
    if not isinstance(vkey, str) or len(vkey) > 512 or vkey != vkey.strip():
        raise _schema("log_public_key must be a signed-note verifier key string")
    try:
        parse_vkey(vkey)
    except LedgerError as exc:
        raise _schema(f"log_public_key: {exc.message}") from None
    return vkey


def _validate_generator(
    generator: dict, label_space: list[str], image_shape: tuple[int, int, int]
) -> dict:
    family, config = generator["family"], generator["config"]
    try:
        # heavy: the generator families import torch; only when a manifest is validated
        from ffsecure.generators import validate_config
    except ImportError:  # generator families not installed: structural checks only
        pass
    else:
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
        version_spec = MANIFEST_SPEC.field("v").spec
        fields.check(version_spec, obj["v"], "manifest version", error=_field_error)
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
        fields.check(MANIFEST_SPEC, self._fields(), error=_field_error)
        self.image_shape = check_image_shape(self.image_shape)
        self.generator = _validate_generator(self.generator, self.label_space, self.image_shape)
        dp = self.dp_policy
        if dp["required"] and (dp["max_epsilon"] is None or dp["delta"] is None):
            raise _schema("a required DP policy needs max_epsilon and delta")
        agg = self.aggregator
        host, _, port = agg["endpoint"].rpartition(":")
        if not host or not parse_port(port):
            raise _schema(f"aggregator.endpoint {agg['endpoint']!r} must be host:port")
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
        if self.privacy_policy is not None:
            pp = self.privacy_policy
            try:
                check_policy_fields(pp)
            except FormatError as exc:
                raise _schema(exc.message) from None
        try:
            pki.parse_rfc3339(self.created_at)
        except FormatError:
            raise _schema(f"created_at {self.created_at!r} is not RFC 3339 UTC") from None

    def _fields(self) -> dict[str, Any]:
        """The fields as given (not normalised as :meth:`to_dict` does), for the spec check."""
        return {
            "v": self.version,
            "federation_id": self.federation_id,
            "label_space": self.label_space,
            "image_shape": self.image_shape,
            "generator": self.generator,
            "dp_policy": self.dp_policy,
            "limits": self.limits,
            "aggregator": self.aggregator,
            "privacy_policy": self.privacy_policy,
            "created_at": self.created_at,
        }


# ----------------------------------------------------------- sign / verify


def _message(context: bytes, signed_bytes: bytes) -> bytes:
    return context + hashlib.sha256(signed_bytes).digest()


def ca_sign(body: Any, ca: pki.CA, context: bytes) -> bytes:
    """``{"signed": body, "signatures": [...]}`` as canonical JSON, signed by the CA.

    The CA signs ``context || SHA-256(canonical(body))``; ``context`` names what
    is signed (:data:`SIGNATURE_CONTEXT` for the federation manifest, the
    startup kit's own for a kit), so one signature is never valid as another.
    """
    signed = canonical.dumps(body)
    sig = ca.sign_bytes(_message(context, signed))
    return canonical.dumps(
        {
            "signed": body,
            "signatures": [
                {
                    "alg": SIGNATURE_ALG,
                    "keyid": pki.cert_fingerprint(ca.cert),
                    "sig": base64.b64encode(sig).decode("ascii"),
                }
            ],
        }
    )


def ca_signature_verifies(
    obj: Any,
    ca_cert: x509.Certificate,
    context: bytes,
    what: str,
    error: Callable[[fields.FieldError], FFSecureError],
) -> bool:
    """Whether ``obj`` (parsed canonical JSON, shaped as :func:`ca_sign` writes it) carries a
    valid signature of ``ca_cert`` over its ``signed`` body under ``context``.

    A shape error is raised through ``error`` (the caller's code); entries of
    another key are skipped.
    """
    fields.check(SIGNED_FILE_SPEC, obj, what, error=error)
    message = _message(context, canonical.dumps(obj["signed"]))
    fingerprint = pki.cert_fingerprint(ca_cert)
    public = ca_cert.public_key()
    for entry in obj["signatures"]:
        fields.check(SIGNATURE_SPEC, entry, "signature entry", error=error)
        if entry["keyid"] != fingerprint:
            continue
        sig = canonical.b64decode_canonical(entry["sig"])
        if sig is not None and _ecdsa_valid(public, sig, message):
            return True
    return False


def create_signed_manifest(manifest: FederationManifest, ca: pki.CA) -> bytes:
    """Sign ``manifest`` with the CA key; returns the canonical ``federation.json`` bytes."""
    manifest.validate()
    if manifest.federation_id != ca.federation_id:
        raise FederationMismatchError(
            f"manifest is for {manifest.federation_id!r}, the CA serves {ca.federation_id!r}"
        )
    return ca_sign(manifest.to_dict(), ca, SIGNATURE_CONTEXT)


def _ecdsa_valid(public: CertificatePublicKeyTypes, sig: bytes, message: bytes) -> bool:
    """Whether ``sig`` is the CA's ECDSA/SHA-256 signature of ``message`` (:data:`SIGNATURE_ALG`);
    a CA key of another kind verifies no signature."""
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(sig, message, ec.ECDSA(hashes.SHA256()))
    except (ValueError, InvalidSignature):
        return False
    return True


@dataclass(frozen=True)
class SignedManifest:
    """A ``federation.json`` whose CA signature verified: the manifest and which one it is.

    ``sha256`` is the SHA-256 of the canonical ``signed`` body, the very digest the
    CA's signature covers (:func:`_message`). It names the policy, not the file: the
    ``signatures`` list is authentication only (ECDSA signatures are randomised, and
    entries of other keys are skipped), so two files carrying the same signed body
    enforce the same manifest and have the same ``sha256``, while any change to a
    signed field (a looser ``dp_policy``, another ``created_at``) changes it.
    """

    manifest: FederationManifest
    sha256: str

    def facts(self) -> dict[str, str]:
        """The facts of a ``federation.loaded`` ledger entry (docs/audit-bundle.md)."""
        return {
            "federation_id": self.manifest.federation_id,
            "federation_sha256": self.sha256,
            "created_at": self.manifest.created_at,
        }


#: ``(index, facts)`` of one ``federation.loaded`` entry (facts already validated).
Recorded = tuple[int, dict[str, Any]]


def newest_recorded(
    records: list[Recorded],
) -> tuple[Recorded | None, list[tuple[Recorded, Recorded]]]:
    """The newest manifest a log records, and each record that went back to an older one.

    ``records``: every ``federation.loaded`` entry, in log order (none: ``(None, [])``). The newest
    is the one with the latest ``created_at`` (the last on a tie): the CA may have signed
    several manifests, each still valid, and a restart puts whichever the home holds in
    force, so log order alone would let an older, looser manifest put back count as the
    newest. A record dated before the newest one recorded before it is a rollback, given
    with that newest one. The audit (``E_AUDIT_FEDERATION_STALE`` / ``_ROLLBACK``) and
    ``aggregator ledger export``'s warning read this one rule.
    """
    newest: Recorded | None = None
    rollbacks: list[tuple[Recorded, Recorded]] = []
    for record in records:
        created = pki.parse_rfc3339(record[1]["created_at"])
        if newest is not None and created < pki.parse_rfc3339(newest[1]["created_at"]):
            rollbacks.append((record, newest))
            continue
        newest = record
    return newest, rollbacks


def in_force_at(
    records: list[Recorded], registrations: Iterable[int]
) -> dict[int, tuple[Recorded, ...]]:
    """The manifests that bind each registration: one or two records before its entry.

    ``records``: every ``federation.loaded`` entry, in log order; ``registrations``: the
    indexes of ``module.registered`` entries. Bound are the last record before the entry
    (the manifest the aggregator loaded last, whatever its date: what it had to enforce)
    and the newest one by ``created_at`` among those before it (:func:`newest_recorded`: a
    restart with an older, looser manifest, a rollback, does not loosen the CA's newest
    word); one record when they are the same. A registration before any record (a log
    written before the entry existed) is left out. The audit's check of each module
    against the manifests that bound its registration and ``aggregator ledger export``'s
    warning about a missing document read this one rule.
    """
    starts = [index for index, _ in records]
    # the newest by created_at among records[: k + 1], for each k (newest_recorded's rule)
    newest_so_far: list[Recorded] = []
    for k in range(len(records)):
        newest, _ = newest_recorded(
            [newest_so_far[-1], records[k]] if newest_so_far else [records[k]]
        )
        assert newest is not None  # one or two records
        newest_so_far.append(newest)
    out: dict[int, tuple[Recorded, ...]] = {}
    for index in registrations:
        before = bisect.bisect_left(starts, index)
        if before:
            last, newest = records[before - 1], newest_so_far[before - 1]
            out[index] = (last,) if newest[0] == last[0] else (last, newest)
    return out


#: The audit's finding for a manifest that bound a registration and whose document is not at
#: hand (``ffsecure.audit.anchor``); ``aggregator ledger export`` warns with it first.
HISTORY_CODE = "E_AUDIT_FEDERATION_HISTORY"

#: How the manifest in force stands against the log (:func:`recorded_problem`).
UNRECORDED, MISDATED, STALE = "unrecorded", "misdated", "stale"


def recorded_problem(signed: SignedManifest, newest: Recorded | None, modules: int) -> str | None:
    """Why ``signed`` is not the manifest the log says was enforced, or None.

    ``newest`` is :func:`newest_recorded`'s (None when the log records no manifest) and
    ``modules`` the number of ``module.registered`` entries. :data:`UNRECORDED`: modules
    are registered but no manifest is recorded; :data:`MISDATED`: ``newest`` has
    ``signed``'s digest but another ``created_at``; :data:`STALE`: ``newest`` is another
    manifest. The audit's ``E_AUDIT_FEDERATION_UNRECORDED`` / ``E_AUDIT_FEDERATION_STALE``
    and ``aggregator ledger export``'s warning read this one decision.
    """
    if newest is None:
        return UNRECORDED if modules > 0 else None
    facts = newest[1]
    if not hmac.compare_digest(signed.sha256, str(facts["federation_sha256"])):
        return STALE
    return MISDATED if signed.manifest.created_at != facts["created_at"] else None


def verify_federation_json(data: bytes, ca_cert: x509.Certificate) -> SignedManifest:
    """Verify ``federation.json`` against the CA certificate; the manifest and its digest.

    Errors: E_JSON*/E_NOT_CANONICAL (bytes), E_MANIFEST_SCHEMA (shape),
    E_MANIFEST_SIGNATURE (no valid CA signature), E_FEDERATION_MISMATCH.
    """
    obj = canonical.loads_canonical(data, max_bytes=MAX_MANIFEST_BYTES)
    if not ca_signature_verifies(obj, ca_cert, SIGNATURE_CONTEXT, "federation.json", _field_error):
        raise ManifestSignatureError(
            "federation manifest is not signed by this federation's CA",
            hint="get federation.json and ca.pem from the federation operator again",
        )
    manifest = FederationManifest.from_dict(obj["signed"])
    if manifest.federation_id != pki.ca_federation_id(ca_cert):
        raise FederationMismatchError(
            f"manifest is for {manifest.federation_id!r}, the CA serves "
            f"{pki.ca_federation_id(ca_cert)!r}"
        )
    return SignedManifest(manifest, hashlib.sha256(canonical.dumps(obj["signed"])).hexdigest())


def load_signed_manifest(data: bytes, ca_cert: x509.Certificate) -> FederationManifest:
    """Verify ``federation.json`` against the CA certificate and return the manifest
    (errors as :func:`verify_federation_json`)."""
    return verify_federation_json(data, ca_cert).manifest


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

_OPTIONAL = fields.Field(fields.Opaque(), default=fields.OMIT)
_KEY_NAMES = ("hpke_public_key", "hpke_suite", "log_public_key", "log_origin")
#: ``federation.toml``: its key sets and defaults. Values are only placed here; the manifest
#: built from them checks them (:data:`MANIFEST_SPEC`), so a bad value reads the same in both.
TOML_SPEC = fields.Table(
    {
        "federation_id": fields.Opaque(),
        "label_space": fields.Opaque(),
        "image_shape": fields.Opaque(),
        "generator": fields.Table(
            {"family": fields.Opaque(), "size": _OPTIONAL, "config": _OPTIONAL}
        ),
        "dp_policy": fields.Field(
            fields.Table(
                {
                    "required": fields.Field(fields.Opaque(), default=False),
                    "max_epsilon": fields.Field(fields.Opaque(), default=None),
                    "delta": fields.Field(fields.Opaque(), default=None),
                    "mechanism": _OPTIONAL,
                    "privacy_unit": _OPTIONAL,
                }
            ),
            default={},
        ),
        "limits": fields.Field(
            fields.Table(
                {"max_module_bytes": fields.Field(fields.Opaque(), DEFAULT_MAX_MODULE_BYTES)}
            ),
            default={},
        ),
        "aggregator": fields.Table(
            {
                "endpoint": fields.Opaque(),
                "public_keys": fields.Field(fields.Str(1, 4096), default=fields.OMIT),
                **{name: _OPTIONAL for name in _KEY_NAMES},
            }
        ),
        "privacy_policy": fields.Field(fields.Opaque(), default=None),
    }
)
TOML_TOP = set(TOML_SPEC.fields)


def _config_error(msg: str) -> ConfigError:
    return ConfigError(msg, hint="see docs/pki.md for the federation.toml keys")


def _toml_error(name: str, exc: fields.FieldError) -> ConfigError:
    """The federation.toml messages: what a table takes, or what the file lacks."""
    table = exc.key.partition(".")[0]
    if exc.key in TOML_TOP and exc.problem is fields.Problem.MISSING:
        return _config_error(f"{name} lacks the key {exc.key!r}")
    if not exc.key:
        return _config_error(f"unknown keys in {name}: {list(exc.keys)}")
    if table == "generator":
        return _config_error(
            "[generator] takes family and either size or a [generator.config] table"
        )
    if table in ("dp_policy", "limits"):
        known = sorted(DP_FIELDS if table == "dp_policy" else LIMIT_FIELDS)
        return _config_error(f"[{table}] takes only {known}")
    if exc.key == "aggregator.public_keys":
        return _config_error(exc.message)
    allowed = sorted({"endpoint", "public_keys", *_KEY_NAMES})
    return _config_error(f"[aggregator] takes endpoint and public_keys (or {allowed})")


def manifest_from_toml(path: str | Path) -> FederationManifest:
    """Build a manifest from ``federation.toml`` (see docs/pki.md); unknown keys are errors."""
    path = Path(path)
    try:
        cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise _config_error(f"cannot read {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _config_error(f"{path} is not valid TOML: {exc}") from None
    cfg = fields.check(TOML_SPEC, cfg, error=lambda exc: _toml_error(path.name, exc))
    gen = cfg["generator"]
    image_shape = check_image_shape(cfg["image_shape"])
    if "config" in gen:
        config = gen["config"]
    else:
        try:
            # heavy: the generator families import torch; only for a template
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
    agg = cfg["aggregator"]
    if "public_keys" in agg:
        keys = load_public_keys(path.parent / agg["public_keys"])
    else:
        missing = set(_KEY_NAMES) - set(agg)
        if missing:
            raise _config_error(f"[aggregator] lacks {sorted(missing)} (or give public_keys)")
        keys = {k: agg[k] for k in _KEY_NAMES}
        keys["hpke_key_id"] = envelope.key_id(
            envelope.b64decode(agg["hpke_public_key"], "hpke_public_key")
        )
    try:
        return FederationManifest(
            federation_id=cfg["federation_id"],
            label_space=cfg["label_space"],
            image_shape=image_shape,
            generator={"family": gen["family"], "config": config},
            dp_policy=cfg["dp_policy"],
            limits=cfg["limits"],
            aggregator={"endpoint": agg["endpoint"], **keys},
            privacy_policy=cfg["privacy_policy"],
        )
    except (ManifestSchemaError, VerificationError) as exc:
        raise ConfigError(f"{path.name}: {exc.message}", hint=exc.hint) from None
