"""An auditor's own verifier, written from docs/audit-bundle.md, RFC 9162 and C2SP signed-note
alone.

The bundles are real (tests/audit_fixture.py: CA, site certificates, signed
tiny-cvae packages, a SQLite store, the export of `aggregator ledger export`).
Nothing from ffsecure is used to *check* them: JSON encoding, Merkle hashing,
note signatures, module signatures, certificate and revocation rules are
re-implemented here from the page. If the page leaves a rule out or states it
wrongly, this verifier disagrees with the bundle and the test fails.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.audit_fixture import AuditLab, standard_history

# ---------------------------------------------------- canonical base64, per the page


def _b64(text: str) -> bytes:
    raw = base64.b64decode(text, validate=True)
    assert base64.b64encode(raw).decode() == text, f"base64 {text[:16]}... is not canonical"
    return raw


# ---------------------------------------------------- canonical JSON, per the page

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _string(s: str) -> str:
    return (
        '"' + "".join(_ESCAPES.get(c, f"\\u{ord(c):04x}" if ord(c) < 0x20 else c) for c in s) + '"'
    )


def _double(x: float) -> str:
    sign = "-" if math.copysign(1.0, x) < 0 else ""
    x = abs(x)
    if x == 0:
        return sign + "0.0"
    for precision in range(17):  # the shortest digit string that reads back as x
        text = f"{x:.{precision}e}"
        if float(text) == x:
            break
    mantissa, exp = text.split("e")
    digits, e = mantissa.replace(".", ""), int(exp)
    if -4 <= e < 16:
        if e >= 0:
            whole = digits[: e + 1].ljust(e + 1, "0")
            return f"{sign}{whole}.{digits[e + 1 :] or '0'}"
        return f"{sign}0.{'0' * (-e - 1)}{digits}"
    point = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{point}e{'-' if e < 0 else '+'}{abs(e):02d}"


def encode(v) -> str:
    if v is None:
        return "null"
    if v is True or v is False:
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _double(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list):
        return "[" + ",".join(encode(x) for x in v) + "]"
    return "{" + ",".join(_string(k) + ":" + encode(v[k]) for k in sorted(v)) + "}"


def canonical(v) -> bytes:
    return encode(v).encode("utf-8")


@pytest.mark.parametrize(
    "value",
    [
        1e-05,
        1.5e-07,
        1e16,
        1e15,
        0.0001,
        0.00025,
        3.0,
        -0.0,
        0.0,
        3.9,
        1e-5,
        8.0,
        123456789012345678.0,
        1e100,
        2.2250738585072014e-308,
        5e-324,
        1.7976931348623157e308,
        0.1 + 0.2,
        -12.5,
        1234.5678,
        9999999999999998.0,
        'a"b\\c\n\r\t\b\f\x00\x1f\x7f/é\u2028😀',
        {"b": 1, "a": [True, False, None], "é": {"z": -3, "A": 0.5}},
    ],
)
def test_the_page_s_canonical_json_is_what_ffsecure_writes(value):
    from ffsecure import canonical as ffsecure_canonical

    assert canonical(value) == ffsecure_canonical.dumps(value)


# ------------------------------------------------------------ the log, per the page


def _mth(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(leaves[:k]) + _mth(leaves[k:])).digest()


def check_log(bundle: Path) -> tuple[list[dict], str]:
    vkey = (bundle / "log.vkey").read_text(encoding="utf-8").strip()
    name, key_hash_hex, key_b64 = vkey.split("+", 2)  # the base64 may hold "+"
    raw = _b64(key_b64)
    assert raw[0] == 0x01 and len(raw) == 33
    key_hash = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
    assert key_hash.hex() == key_hash_hex
    public = Ed25519PublicKey.from_public_bytes(raw[1:])

    data = (bundle / "entries.jsonl").read_bytes()
    entries = data[:-1].split(b"\n") if data else []
    parsed = []
    for line in entries:
        obj = json.loads(line)
        assert canonical(obj) == line, "an entry line is not canonical JSON as the page defines it"
        assert set(obj) == {"v", "type", "time", "actor", "facts"} and obj["v"] == 1
        parsed.append(obj)

    sizes = []
    for path in (bundle / "checkpoints").iterdir():
        note = path.read_bytes().decode("utf-8")
        split = note.rindex("\n\n")
        text, sigs = note[: split + 1], note[split + 2 :]
        ok = False
        for line in sigs[:-1].split("\n"):
            assert line.startswith("\u2014 ")
            signer, blob_b64 = line[2:].split(" ")
            blob = _b64(blob_b64)
            if signer == name and blob[:4] == key_hash:
                public.verify(blob[4:], text.encode("utf-8"))  # raises InvalidSignature
                ok = True
        assert ok, f"checkpoint {path.name} carries no signature by the log key"
        origin, size, root_b64, *_ = text[:-1].split("\n")
        assert origin == name and size == path.name and str(int(size)) == size
        assert int(size) <= len(entries)
        assert _b64(root_b64) == _mth(entries[: int(size)]), f"checkpoint {size} root"
        sizes.append(int(size))
    assert max(sizes) == len(entries)
    return parsed, vkey


# ----------------------------------------------------- modules and PKI, per the page

_LATER_ONLY = {
    x509.ReasonFlags.superseded,
    x509.ReasonFlags.cessation_of_operation,
    x509.ReasonFlags.affiliation_changed,
    x509.ReasonFlags.privilege_withdrawn,
}


def _fed_id_of_ca(ca: x509.Certificate) -> str:
    uris = ca.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    (uri,) = [u for u in uris if u.startswith("ffsecure://") and u.endswith("/ca")]
    return uri[len("ffsecure://") : -len("/ca")]


def check_module(
    record: dict, entries: list[dict], ca: x509.Certificate, crl: x509.CertificateRevocationList
) -> str:
    """'valid', or the reason the page's rules refuse the module."""
    package = json.loads(_b64(record["package_b64"]))
    assert canonical(package) == _b64(record["package_b64"])
    assert package == record["package"]
    manifest = package["manifest"]
    m = canonical(manifest)
    digest = hashlib.sha256(m).digest()
    assert digest.hex() == record["manifest_sha256"]
    reg = entries[record["registered_index"]]
    assert reg["type"] == "module.registered"
    assert (
        reg["facts"]["manifest_sha256"],
        reg["facts"]["module_id"],
        reg["facts"]["site_id"],
    ) == (record["manifest_sha256"], record["module_id"], record["site_id"])
    assert manifest["weights_sha256"] == record["weights_sha256"]
    assert package["alg"] == "ecdsa-p256-sha256"

    (cert,) = x509.load_pem_x509_certificates(package["cert_chain_pem"].encode())
    try:
        cert.public_key().verify(
            _b64(package["signature"]),
            b"ffsecure/module-manifest/v1\x00" + digest,
            ec.ECDSA(hashes.SHA256()),
        )
    except InvalidSignature:
        return "signature"
    cert.verify_directly_issued_by(ca)
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (
        isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
        and cert.public_key().curve.name == "secp256r1"
    )
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    uris = [
        u
        for u in cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        if u.startswith("ffsecure://")
    ]
    fed = _fed_id_of_ca(ca)
    assert (
        uris == [f"ffsecure://{fed}/site/{manifest['site_id']}"]
        and manifest["federation_id"] == fed
    )
    created = dt.datetime.strptime(manifest["created_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=dt.UTC
    )
    for c in (cert, ca):
        assert c.not_valid_before_utc <= created <= c.not_valid_after_utc
    assert crl.issuer == ca.subject and crl.is_signature_valid(ca.public_key())
    listed = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
    if listed is not None:
        try:
            reason = listed.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reason = None
        if reason not in _LATER_ONLY or created >= listed.revocation_date_utc:
            return "revoked"
    return "valid"


def check_federation(bundle: Path, ca: x509.Certificate, vkey: str) -> None:
    obj = json.loads((bundle / "federation.json").read_bytes())
    assert canonical(obj) == (bundle / "federation.json").read_bytes()
    fingerprint = hashlib.sha256(ca.public_bytes(serialization.Encoding.DER)).hexdigest()
    message = (
        b"ffsecure/federation-manifest/v1\x00" + hashlib.sha256(canonical(obj["signed"])).digest()
    )
    good = 0
    for sig in obj["signatures"]:
        if sig["alg"] == "ecdsa-p256-sha256" and sig["keyid"] == fingerprint:
            ca.public_key().verify(_b64(sig["sig"]), message, ec.ECDSA(hashes.SHA256()))
            good += 1
    assert good >= 1
    assert obj["signed"]["federation_id"] == _fed_id_of_ca(ca)
    assert obj["signed"]["aggregator"]["log_public_key"].strip() == vkey
    assert obj["signed"]["aggregator"]["log_origin"] == vkey.split("+", 1)[0]


def verify_bundle(bundle: Path) -> dict[str, str]:
    entries, vkey = check_log(bundle)
    ca = x509.load_pem_x509_certificate((bundle / "ca.pem").read_bytes())
    crl = x509.load_pem_x509_crl((bundle / "crl.pem").read_bytes())
    check_federation(bundle, ca, vkey)
    out = {}
    for path in sorted((bundle / "modules").iterdir()):
        raw = path.read_bytes()
        record = json.loads(raw)
        assert canonical(record) + b"\n" == raw and path.name == f"{record['module_id']}.json"
        out[record["module_id"]] = check_module(record, entries, ca, crl)
        if record["status"] == "deleted":
            assert entries[record["deleted_index"]]["type"] == "module.deleted"
            assert entries[record["deleted_index"]]["facts"]["module_id"] == record["module_id"]
    return out


# ------------------------------------------------------------------------ tests


def test_an_independent_verifier_written_from_the_page_accepts_a_real_bundle(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        idx = standard_history(
            lab
        )  # DP claims with floats such as delta 1e-05, a deletion, lineage
        bundle = lab.export()
    finally:
        lab.close()
    verdicts = verify_bundle(bundle)
    assert verdicts == {idx["a"]: "valid", idx["b"]: "valid", idx["c"]: "valid"}


def test_the_page_s_revocation_rule_matches_the_bundle(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        before = (now - dt.timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
        rotated = lab.register("st-mary", (0,), created_at=before)
        compromised = lab.register("st-john", (1,), created_at=before)
        lab.revoke("st-mary", "superseded", at=now - dt.timedelta(minutes=1))
        lab.revoke("st-john", "key_compromise", at=now - dt.timedelta(minutes=1))
        late = lab.register("st-mary", (1,))  # signed with the superseded key afterwards
        bundle = lab.export()
    finally:
        lab.close()
    assert verify_bundle(bundle) == {rotated: "valid", compromised: "revoked", late: "revoked"}


def test_a_forged_module_signature_is_refused_by_the_page_s_rules(tmp_path):
    lab = AuditLab(tmp_path)
    try:
        mid = lab.register("st-mary", (0, 1))
        bundle = lab.export()
    finally:
        lab.close()
    path = bundle / "modules" / f"{mid}.json"
    record = json.loads(path.read_bytes())
    package = record["package"]
    sig = bytearray(_b64(package["signature"]))
    sig[-1] ^= 0x01
    package["signature"] = base64.b64encode(bytes(sig)).decode()
    record["package_b64"] = base64.b64encode(canonical(package)).decode()
    path.write_bytes(canonical(record) + b"\n")
    assert verify_bundle(bundle) == {mid: "signature"}
