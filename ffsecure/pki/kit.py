"""Startup kits: one CA-signed archive per participant, checked against a pinned CA fingerprint.

A kit is what the CA operator hands a site (or the aggregator) instead of
loose files. It is an uncompressed POSIX tar (``tar tf`` lists it) holding a
fixed set of regular files, first ``kit.json`` and then the members in name
order:

* site: ``site.pem``, ``ca.pem``, ``federation.json``, ``site.toml`` (the
  template prefilled with the ids and the aggregator endpoint),
  ``site-node.service`` and ``README.txt``;
* aggregator: ``aggregator.pem``, ``ca.pem``, ``crl.pem``,
  ``federation.json``, ``aggregator.toml``, ``README.txt`` and, when the
  installed templates have one, ``aggregator.service``.

``kit.json`` is canonical JSON signed by the CA exactly as ``federation.json``
is (:func:`ffsecure.federation.ca_sign`, context :data:`SIGNATURE_CONTEXT`):
``{"signed": {"format", "role", "identity", "federation_id", "created_at",
"members": [{"name", "size", "sha256"}, ...]}, "signatures": [...]}``.

Opening a kit (:func:`open_kit`) trusts nothing in it before the pin:

1. the archive is parsed under bounds (:data:`MAX_KIT_BYTES` in all,
   :data:`MAX_MEMBERS` members, :data:`MAX_MEMBER_BYTES` each); every member
   is a plain regular file whose name is exactly one of the role's allowed
   names, once (no paths, ``..``, links, devices, directories, sparse
   files): else ``E_KIT``;
2. the SHA-256 fingerprint of its ``ca.pem`` must equal the one the person
   installing it was told out of band (constant-time): else
   ``E_KIT_FINGERPRINT``, before anything else of the kit is read;
3. ``kit.json`` must carry that CA's signature (``E_KIT_SIGNATURE``), be for
   the expected role and the CA's federation, and list exactly the members
   present with their sizes and SHA-256 (``E_KIT``).

A kit holds no private key: the CA builds it from the participant's CSR, so
keys never leave the host that made them. What the installer does with the
members (chain, key match, federation manifest) is the role's own install
step (``site-node install-kit``, ``aggregator install-kit``), which reuses
the checks of ``install-cert`` / ``aggregator init``.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from cryptography import x509

from ffsecure import canonical
from ffsecure.errors import FFSecureError, FormatError, VerificationError
from ffsecure.federation import ca_sign, ca_signature_verifies
from ffsecure.pki.ca import CA
from ffsecure.pki.certs import fingerprint_matches, load_cert
from ffsecure.pki.identity import ca_federation_id, identity_of
from ffsecure.records import fields
from ffsecure.records.ids import SHA256_HEX
from ffsecure.timefmt import rfc3339, utcnow

__all__ = [
    "FORMAT",
    "MANIFEST_NAME",
    "MAX_KIT_BYTES",
    "MAX_MEMBERS",
    "MAX_MEMBER_BYTES",
    "SIGNATURE_CONTEXT",
    "Kit",
    "KitError",
    "KitFingerprintError",
    "KitSignatureError",
    "Role",
    "build_kit",
    "open_kit",
    "read_kit_file",
    "unverified_ca_cert",
]

FORMAT = "ffsecure-kit/v1"
SIGNATURE_CONTEXT = b"ffsecure/startup-kit/v1\x00"
MANIFEST_NAME = "kit.json"
MAX_KIT_BYTES = 4 << 20
MAX_MEMBER_BYTES = 1 << 20
MAX_MEMBERS = 12
_MEMBER_MODE = 0o644


class KitError(FormatError):
    """A startup kit is malformed, over a bound, or its members do not match its manifest."""

    code = "E_KIT"


class KitSignatureError(VerificationError):
    """A startup kit's manifest is not signed by the CA certificate it carries."""

    code = "E_KIT_SIGNATURE"


class KitFingerprintError(VerificationError):
    """A startup kit's CA certificate is not the CA whose fingerprint the installer pinned."""

    code = "E_KIT_FINGERPRINT"


class Role(StrEnum):
    SITE = "site"
    AGGREGATOR = "aggregator"


#: role -> (members every kit of the role holds, members it may hold)
MEMBERS: Mapping[Role, tuple[frozenset[str], frozenset[str]]] = {
    Role.SITE: (
        frozenset(
            {
                "site.pem",
                "ca.pem",
                "federation.json",
                "site.toml",
                "site-node.service",
                "README.txt",
            }
        ),
        frozenset(),
    ),
    Role.AGGREGATOR: (
        frozenset(
            {
                "aggregator.pem",
                "ca.pem",
                "crl.pem",
                "federation.json",
                "aggregator.toml",
                "README.txt",
            }
        ),
        frozenset({"aggregator.service"}),
    ),
}

_MEMBER_SPEC = fields.Table(
    {
        "name": fields.Str(max_len=64),
        "size": fields.Int(0, MAX_MEMBER_BYTES),
        "sha256": fields.Str(rule=SHA256_HEX),
    }
)
_BODY_SPEC = fields.Table(
    {
        "format": fields.Str(options=(FORMAT,)),
        "role": fields.Str(options=tuple(Role)),
        "identity": fields.Str(max_len=256),
        "federation_id": fields.Str(max_len=64),
        "created_at": fields.Str(max_len=64),
        "members": fields.List(_MEMBER_SPEC, 1, MAX_MEMBERS),
    }
)


def _kit_error(exc: fields.FieldError) -> FFSecureError:
    return KitError(f"kit.json: {exc}", hint=_ASK_AGAIN)


_ASK_AGAIN = "ask the CA operator for the kit again (`ffsecure pki kit`)"


@dataclass(frozen=True)
class Kit:
    """A kit that passed :func:`open_kit`: its role, identity, CA and member bytes."""

    role: Role
    identity: str
    federation_id: str
    created_at: str
    ca_cert: x509.Certificate
    members: Mapping[str, bytes]

    def text(self, name: str) -> str:
        try:
            return self.members[name].decode("utf-8")
        except UnicodeDecodeError:
            raise KitError(f"kit member {name} is not UTF-8 text", hint=_ASK_AGAIN) from None


# ------------------------------------------------------------------ writing


def build_kit(
    ca: CA, role: Role, identity: str, members: Mapping[str, bytes], *, created_at: str = ""
) -> bytes:
    """The kit archive: ``kit.json`` signed by ``ca`` over ``members``, then the members."""
    _check_names(role, list(members))
    created_at = created_at or rfc3339(utcnow())
    body = {
        "format": FORMAT,
        "role": str(role),
        "identity": identity,
        "federation_id": ca.federation_id,
        "created_at": created_at,
        "members": [
            {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in sorted(members.items())
        ],
    }
    signed = ca_sign(body, ca, SIGNATURE_CONTEXT)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [(MANIFEST_NAME, signed), *sorted(members.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), _MEMBER_MODE, 0
            tar.addfile(info, io.BytesIO(data))
    if buffer.tell() > MAX_KIT_BYTES:
        raise KitError(f"the kit would be {buffer.tell()} bytes, over {MAX_KIT_BYTES}")
    return buffer.getvalue()


def _check_names(role: Role, names: list[str]) -> None:
    required, optional = MEMBERS[role]
    missing = sorted(required - set(names))
    unknown = sorted(set(names) - required - optional)
    if missing or unknown:
        raise KitError(
            f"a {role} kit needs {sorted(required)}; missing {missing}, not allowed {unknown}",
            hint=_ASK_AGAIN,
        )


# ------------------------------------------------------------------ reading


def read_kit_file(path: str | Path) -> bytes:
    """The bytes of a kit file, refused unbounded (over :data:`MAX_KIT_BYTES`)."""
    target = Path(path)
    if not target.is_file():
        raise KitError(f"{target} is not a file", hint="give the path of the .kit file")
    with open(target, "rb") as fh:
        data = fh.read(MAX_KIT_BYTES + 1)
    if len(data) > MAX_KIT_BYTES:
        raise KitError(f"{target} is over {MAX_KIT_BYTES} bytes; no kit is", hint=_ASK_AGAIN)
    return data


def _members(data: bytes, role: Role | None) -> dict[str, bytes]:
    """Every member of the archive, checked against the bounds and the role's names (None: the
    names of any role, and only ``ca.pem`` and ``kit.json`` required)."""
    if len(data) > MAX_KIT_BYTES:
        raise KitError(f"the kit is over {MAX_KIT_BYTES} bytes", hint=_ASK_AGAIN)
    if role is None:
        required = frozenset({"ca.pem"})
        optional = frozenset().union(*(names for pair in MEMBERS.values() for names in pair))
    else:
        required, optional = MEMBERS[role]
    allowed = required | optional | {MANIFEST_NAME}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            while (member := tar.next()) is not None:
                _check_member(member, allowed, found)
                handle = tar.extractfile(member)
                body = handle.read(member.size) if handle else b""
                if len(body) != member.size:
                    raise KitError(f"kit member {member.name} is truncated", hint=_ASK_AGAIN)
                found[member.name] = body
    except (tarfile.TarError, EOFError) as exc:
        raise KitError(f"not a kit archive: {exc}", hint=_ASK_AGAIN) from None
    missing = sorted((required | {MANIFEST_NAME}) - set(found))
    if missing:
        raise KitError(f"the kit lacks {', '.join(missing)}", hint=_ASK_AGAIN)
    return found


def unverified_ca_cert(data: bytes) -> x509.Certificate:
    """The ``ca.pem`` of a kit of any role, parsed under the same bounds but NOT verified:
    only for showing its fingerprint (``ffsecure pki fingerprint KIT``)."""
    return load_cert(_members(data, None)["ca.pem"])


def _check_member(
    member: tarfile.TarInfo, allowed: frozenset[str], found: dict[str, bytes]
) -> None:
    shown = ascii(member.name)
    if len(found) >= MAX_MEMBERS:
        raise KitError(f"the kit has more than {MAX_MEMBERS} members", hint=_ASK_AGAIN)
    if member.name not in allowed:
        raise KitError(f"the kit holds {shown}, which is not a kit member", hint=_ASK_AGAIN)
    if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE) or member.issparse():
        raise KitError(f"kit member {shown} is not a plain file", hint=_ASK_AGAIN)
    if member.name in found:
        raise KitError(f"kit member {shown} appears twice", hint=_ASK_AGAIN)
    if member.size > MAX_MEMBER_BYTES:
        raise KitError(
            f"kit member {shown} is {member.size} bytes, over {MAX_MEMBER_BYTES}",
            hint=_ASK_AGAIN,
        )


def open_kit(data: bytes, expected_fingerprint: str, role: Role) -> Kit:
    """Parse, pin and verify a kit (module docstring, steps 1 to 3); nothing is written."""
    found = _members(data, role)
    ca_cert = load_cert(found["ca.pem"])
    if not fingerprint_matches(ca_cert, expected_fingerprint):
        raise KitFingerprintError(
            "the kit's ca.pem is not the CA whose fingerprint you gave; nothing was installed",
            hint="compare the fingerprint with the CA operator again, by phone or in person "
            "(`ffsecure pki fingerprint ca.pem` on the CA host); a kit whose CA differs may "
            "have been swapped in transit",
        )
    manifest = canonical.loads_canonical(found.pop(MANIFEST_NAME), max_bytes=MAX_MEMBER_BYTES)
    if not ca_signature_verifies(manifest, ca_cert, SIGNATURE_CONTEXT, "kit.json", _kit_error):
        raise KitSignatureError(
            "the kit is not signed by the CA it carries; nothing was installed",
            hint=_ASK_AGAIN,
        )
    body = fields.check(_BODY_SPEC, manifest["signed"], "kit.json", error=_kit_error)
    _check_body(body, role, ca_cert, found)
    return Kit(
        role=role,
        identity=body["identity"],
        federation_id=body["federation_id"],
        created_at=body["created_at"],
        ca_cert=ca_cert,
        members=found,
    )


def _check_body(
    body: dict[str, Any], role: Role, ca_cert: x509.Certificate, found: dict[str, bytes]
) -> None:
    if body["role"] != role:
        raise KitError(
            f"this is a {body['role']} kit, not a {role} kit",
            hint="install it with the command of its role",
        )
    if body["federation_id"] != ca_federation_id(ca_cert):
        raise KitError("kit.json names another federation than its CA", hint=_ASK_AGAIN)
    listed = {entry["name"]: entry for entry in body["members"]}
    if len(listed) != len(body["members"]) or set(listed) != set(found):
        raise KitError(
            "kit.json does not list exactly the members the archive holds", hint=_ASK_AGAIN
        )
    for name, member in found.items():
        digest = hashlib.sha256(member).hexdigest()
        entry = listed[name]
        if entry["size"] != len(member) or not hmac.compare_digest(entry["sha256"], digest):
            raise KitError(
                f"kit member {name} is not the one the CA signed (altered after signing)",
                hint=_ASK_AGAIN,
            )
    if identity_of(load_cert(found[f"{role}.pem"])).uri != body["identity"]:
        raise KitError(f"{role}.pem is not for the identity kit.json names", hint=_ASK_AGAIN)
