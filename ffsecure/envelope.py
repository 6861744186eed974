"""HPKE envelope (RFC 9180, base mode): seal a signed package to the aggregator.

Only the aggregator's HPKE private key opens an envelope. The envelope header
(format version, suite, federation id, aggregator key id) is sent in clear so
the receiver can pick its key, and is bound into the HPKE key schedule as the
``info`` string, so changing any header byte makes opening fail.

Byte layout (all integers big-endian)::

    "FFSE"          4 bytes magic
    0x01            1 byte  format version
    header_len      2 bytes (at most 1024)
    header          canonical JSON {"federation_id","key_id","suite","v":1}
    hpke            enc || AEAD ciphertext (single-shot HPKE, empty aad)

    info = b"ffsecure/envelope/v1\\x00" || header

Suites (named in the federation manifest, ``aggregator.hpke_suite``):

* ``x25519``: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM (default);
* ``mlkem768-x25519``: the hybrid post-quantum KEM ML-KEM-768 + X25519
  (X-Wing style, as offered by ``cryptography``), HKDF-SHA256, AES-256-GCM.

Raw key encodings (ffsecure's own, since the hybrid has no standard one yet):
``x25519`` private/public keys are the 32-byte raw keys; ``mlkem768-x25519``
private = 64-byte ML-KEM seed || 32-byte X25519 private key, public =
1184-byte ML-KEM-768 public key || 32-byte X25519 public key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519

from ffsecure import canonical
from ffsecure.errors import (
    CryptoError,
    DefaultHint,
    FederationMismatchError,
    FFSecureError,
    FormatError,
    TooLargeError,
)
from ffsecure.files import write_secret_file
from ffsecure.records.ids import KEY_ID, check_id

MAGIC = b"FFSE"
VERSION = 1
INFO_CONTEXT = b"ffsecure/envelope/v1\x00"
KEY_ID_CONTEXT = b"ffsecure/hpke-key/v1\x00"
MAX_HEADER_BYTES = 1024
PREFIX_LEN = len(MAGIC) + 1 + 2
AEAD_TAG_LEN = 16

SUITES = {
    "x25519": (hpke.KEM.X25519, 32, 32),
    "mlkem768-x25519": (hpke.KEM.MLKEM768_X25519, 64 + 32, 1184 + 32),
}
DEFAULT_SUITE = "x25519"


class EnvelopeFormatError(DefaultHint, FormatError):
    """The envelope bytes are not a well-formed ffsecure envelope."""

    code = "E_ENVELOPE_FORMAT"
    default_hint = (
        "send a package sealed with ffsecure.envelope.seal (or `site-node`) "
        "to this aggregator's key"
    )


class EnvelopeSuiteError(CryptoError):
    """The envelope or key names an HPKE suite ffsecure does not offer."""

    code = "E_ENVELOPE_SUITE"


class EnvelopeOpenError(DefaultHint, CryptoError):
    """HPKE decryption failed: wrong key, or the envelope was altered."""

    code = "E_ENVELOPE_OPEN"
    default_hint = (
        "the envelope was altered or sealed to another key; seal the package again and re-send it"
    )


class KeyIdError(DefaultHint, CryptoError):
    """The envelope was sealed to a different aggregator key."""

    code = "E_KEY_ID"
    default_hint = "seal to the HPKE key named in the current federation manifest"


class KeyFormatError(CryptoError):
    """Key bytes have the wrong length or encoding for their suite."""

    code = "E_KEY_FORMAT"


def _suite(name: str) -> tuple[hpke.Suite, hpke.KEM, int, int]:
    if name not in SUITES:
        raise EnvelopeSuiteError(
            f"HPKE suite {name!r} is not offered", hint=f"use one of {sorted(SUITES)}"
        )
    kem, priv_len, pub_len = SUITES[name]
    return hpke.Suite(kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM), kem, priv_len, pub_len


# ------------------------------------------------------------------- keys


def generate_keypair(suite: str = DEFAULT_SUITE) -> tuple[bytes, bytes]:
    """A fresh HPKE key pair as ``(private_bytes, public_bytes)`` in the raw encoding."""
    _suite(suite)
    xk = x25519.X25519PrivateKey.generate()
    if suite == "x25519":
        return xk.private_bytes_raw(), xk.public_key().public_bytes_raw()
    mk = mlkem.MLKEM768PrivateKey.generate()
    private = mk.private_bytes_raw() + xk.private_bytes_raw()
    public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
    return private, public


def key_id(public_bytes: bytes) -> str:
    """SHA-256 over a context string and the raw public key, lowercase hex."""
    return hashlib.sha256(KEY_ID_CONTEXT + bytes(public_bytes)).hexdigest()


_compute_key_id = key_id  # the name ``key_id`` is also a keyword argument below


def _same(a: str, b: str) -> bool:
    """Constant-time equality of two strings (any characters: compared as UTF-8 bytes)."""
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def suite_of_public_key(public_bytes: bytes) -> str:
    for name, (_, _, pub_len) in SUITES.items():
        if len(public_bytes) == pub_len:
            return name
    raise KeyFormatError(f"a {len(public_bytes)}-byte public key matches no HPKE suite")


#: The recipient keys of the two suites (X25519 alone, or ML-KEM-768 + X25519).
_PublicKey = x25519.X25519PublicKey | hpke.MLKEM768X25519PublicKey
_PrivateKey = x25519.X25519PrivateKey | hpke.MLKEM768X25519PrivateKey


def _public_key(public_bytes: bytes, suite: str) -> _PublicKey:
    _, _, _, pub_len = _suite(suite)
    if not isinstance(public_bytes, (bytes, bytearray)) or len(public_bytes) != pub_len:
        raise KeyFormatError(f"{suite} public key must be {pub_len} bytes")
    try:
        if suite == "x25519":
            return x25519.X25519PublicKey.from_public_bytes(bytes(public_bytes))
        return hpke.MLKEM768X25519PublicKey(
            mlkem.MLKEM768PublicKey.from_public_bytes(bytes(public_bytes[:1184])),
            x25519.X25519PublicKey.from_public_bytes(bytes(public_bytes[1184:])),
        )
    except ValueError as exc:
        raise KeyFormatError(f"{suite} public key does not decode: {exc}") from None


def _private_key(private_bytes: bytes, suite: str) -> tuple[_PrivateKey, bytes]:
    """Return ``(hpke_private_key, public_bytes)``."""
    _, _, priv_len, _ = _suite(suite)
    if not isinstance(private_bytes, (bytes, bytearray)) or len(private_bytes) != priv_len:
        raise KeyFormatError(
            f"{suite} private key must be {priv_len} bytes",
            hint="use the aggregator's HPKE key file for this suite",
        )
    try:
        if suite == "x25519":
            key = x25519.X25519PrivateKey.from_private_bytes(bytes(private_bytes))
            return key, key.public_key().public_bytes_raw()
        mk = mlkem.MLKEM768PrivateKey.from_seed_bytes(bytes(private_bytes[:64]))
        xk = x25519.X25519PrivateKey.from_private_bytes(bytes(private_bytes[64:]))
        public = mk.public_key().public_bytes_raw() + xk.public_key().public_bytes_raw()
        return hpke.MLKEM768X25519PrivateKey(mk, xk), public
    except ValueError as exc:
        raise KeyFormatError(f"{suite} private key does not decode: {exc}") from None


def public_from_private(private_bytes: bytes, suite: str = DEFAULT_SUITE) -> bytes:
    return _private_key(private_bytes, suite)[1]


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str = "value") -> bytes:
    raw = canonical.b64decode_canonical(text)
    if raw is None:
        raise KeyFormatError(f"{what} is not canonical standard base64")
    return raw


def write_key_file(path: str | Path, private_bytes: bytes, suite: str = DEFAULT_SUITE) -> None:
    """Write an HPKE private key file (canonical JSON, mode 0600)."""
    public = public_from_private(private_bytes, suite)
    record = {
        "v": 1,
        "suite": suite,
        "private_key": b64encode(private_bytes),
        "key_id": key_id(public),
    }
    write_secret_file(path, canonical.dumps(record))


def read_key_file(path: str | Path) -> tuple[str, bytes, str]:
    """Read a key file written by :func:`write_key_file`: ``(suite, private_bytes, key_id)``."""
    try:
        record = canonical.loads_canonical(Path(path).read_bytes(), max_bytes=8192)
    except OSError as exc:
        raise FFSecureError(f"cannot read HPKE key {path}: {exc.strerror}", code="E_KEY") from None
    if not isinstance(record, dict) or set(record) != {"v", "suite", "private_key", "key_id"}:
        raise KeyFormatError(f"{path} is not an ffsecure HPKE key file")
    private = b64decode(record["private_key"], "private_key")
    public = public_from_private(private, record["suite"])
    if not _same(key_id(public), str(record["key_id"])):
        raise KeyFormatError(f"{path}: key_id does not match the key")
    return record["suite"], private, record["key_id"]


# --------------------------------------------------------------- envelope


@dataclass(frozen=True)
class EnvelopeHeader:
    suite: str
    federation_id: str
    key_id: str
    version: int = VERSION

    def to_bytes(self) -> bytes:
        return canonical.dumps(
            {
                "v": self.version,
                "suite": self.suite,
                "federation_id": self.federation_id,
                "key_id": self.key_id,
            }
        )


def seal(
    plaintext: bytes,
    public_key: bytes,
    *,
    federation_id: str,
    key_id: str,
    suite: str = DEFAULT_SUITE,
) -> bytes:
    """Encrypt ``plaintext`` to the aggregator's HPKE public key (raw bytes)."""
    hpke_suite, _, _, _ = _suite(suite)
    pub = _public_key(public_key, suite)
    if not _same(_compute_key_id(public_key), str(key_id)):
        raise KeyIdError(
            "key id does not belong to this public key",
            hint="take both from the federation manifest",
        )
    check_id(federation_id, "federation id")
    header = EnvelopeHeader(suite, federation_id, key_id).to_bytes()
    body = hpke_suite.encrypt(plaintext, pub, info=INFO_CONTEXT + header)
    return MAGIC + bytes([VERSION]) + struct.pack(">H", len(header)) + header + body


def parse_header(envelope: bytes) -> tuple[EnvelopeHeader, bytes, memoryview]:
    """Parse and check the clear header; returns (header, header_bytes, hpke_body)."""
    if not isinstance(envelope, (bytes, bytearray, memoryview)):
        raise EnvelopeFormatError("envelope must be bytes")
    view = memoryview(envelope)
    if len(view) < PREFIX_LEN or bytes(view[:4]) != MAGIC:
        raise EnvelopeFormatError("not an ffsecure envelope (bad magic)")
    if view[4] != VERSION:
        raise EnvelopeFormatError(
            f"envelope format version {view[4]} is not supported",
            hint="upgrade ffsecure on the sending or receiving side",
        )
    (hlen,) = struct.unpack(">H", view[5:7])
    if hlen > MAX_HEADER_BYTES or PREFIX_LEN + hlen > len(view):
        raise EnvelopeFormatError(f"envelope header length {hlen} is out of bounds")
    header_bytes = bytes(view[PREFIX_LEN : PREFIX_LEN + hlen])
    try:
        obj = canonical.loads_canonical(header_bytes, max_bytes=MAX_HEADER_BYTES)
    except FormatError as exc:
        raise EnvelopeFormatError(f"envelope header: {exc.message}") from None
    if (
        not isinstance(obj, dict)
        or set(obj) != {"v", "suite", "federation_id", "key_id"}
        or obj["v"] != VERSION
        or not all(isinstance(obj[k], str) for k in ("suite", "federation_id", "key_id"))
    ):
        raise EnvelopeFormatError("envelope header does not have the v1 fields")
    if not KEY_ID.matches(obj["key_id"]):
        raise EnvelopeFormatError("envelope header key_id is not 64 lowercase hex digits")
    header = EnvelopeHeader(obj["suite"], obj["federation_id"], obj["key_id"], obj["v"])
    return header, header_bytes, view[PREFIX_LEN + hlen :]


def open_sealed(
    envelope: bytes,
    private_key: bytes,
    *,
    federation_id: str,
    key_id: str,
    max_bytes: int | None = None,
) -> bytes:
    """Open an envelope with the aggregator's raw HPKE private key.

    Errors: E_TOO_LARGE, E_ENVELOPE_FORMAT, E_ENVELOPE_SUITE,
    E_FEDERATION_MISMATCH, E_KEY_ID, E_KEY_FORMAT, E_ENVELOPE_OPEN.
    """
    if max_bytes is not None and len(envelope) > max_bytes + PREFIX_LEN + MAX_HEADER_BYTES + 2048:
        raise TooLargeError(
            f"envelope is {len(envelope)} bytes, over the limit of {max_bytes}",
            hint="the federation's limits.max_module_bytes caps a package",
        )
    header, header_bytes, body = parse_header(envelope)
    hpke_suite, kem, _, _ = _suite(header.suite)
    if header.federation_id != federation_id:
        raise FederationMismatchError(
            f"envelope is for federation {header.federation_id!r}, not {federation_id!r}",
            hint="seal with this federation's manifest",
        )
    if not _same(header.key_id, str(key_id)):
        raise KeyIdError(
            "envelope was sealed to a different aggregator key",
            hint="re-seal with the key in the current federation manifest",
        )
    priv, public = _private_key(private_key, header.suite)
    if not _same(_compute_key_id(public), header.key_id):
        raise KeyIdError("this private key is not the one the envelope was sealed to")
    if len(body) < kem.enc_length() + AEAD_TAG_LEN:
        raise EnvelopeFormatError("envelope body is shorter than an HPKE encapsulation plus tag")
    try:
        return hpke_suite.decrypt(body, priv, info=INFO_CONTEXT + header_bytes)
    except (InvalidTag, ValueError) as exc:
        raise EnvelopeOpenError(
            "envelope does not open: it was altered or sealed to another key",
            hint="re-send the package; if it keeps failing, check the federation manifest",
        ) from exc
