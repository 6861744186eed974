"""Encryption at rest: one random AES-256-GCM data key (DEK) per blob, wrapped by the KEK.

Blob file: ``b"FFSBLOB1" || nonce (12) || AES-256-GCM(DEK, nonce, plaintext, aad)``.
Wrapped DEK: ``nonce (12) || AES-256-GCM(KEK, nonce, DEK, aad')``.
Both AADs bind the object (``module\\0<id>`` or ``<kind>\\0<id>``), so a blob
or a wrapped key moved onto another object does not decrypt. Destroying the
wrapped DEK makes every copy of the blob unreadable (crypto-shredding).
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ffsecure.errors import CryptoError

BLOB_MAGIC = b"FFSBLOB1"
_DEK_CONTEXT = b"ffsecure/dek-wrap/v1\x00"
_NONCE = 12


def new_dek() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def kek_id(kek: bytes) -> str:
    """A public 16-hex-digit name of a KEK (never the key itself)."""
    return hashlib.sha256(b"ffsecure/kek-id/v1\x00" + kek).hexdigest()[:16]


def seal_blob(plaintext: bytes, dek: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return BLOB_MAGIC + nonce + AESGCM(dek).encrypt(nonce, plaintext, BLOB_MAGIC + aad)


def open_blob(data: bytes, dek: bytes, aad: bytes) -> bytes:
    if not data.startswith(BLOB_MAGIC) or len(data) < len(BLOB_MAGIC) + _NONCE + 16:
        raise CryptoError(
            "stored blob is not an ffsecure encrypted blob",
            code="E_STORE_CORRUPT",
            hint="the blob file was damaged; restore the store from a backup",
        )
    nonce = data[len(BLOB_MAGIC) : len(BLOB_MAGIC) + _NONCE]
    try:
        return AESGCM(dek).decrypt(nonce, data[len(BLOB_MAGIC) + _NONCE :], BLOB_MAGIC + aad)
    except InvalidTag:
        raise CryptoError(
            "stored blob does not decrypt: it was altered or belongs to another object",
            code="E_STORE_CORRUPT",
            hint="restore the store from a backup",
        ) from None


def wrap_dek(kek: bytes, dek: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(kek).encrypt(nonce, dek, _DEK_CONTEXT + aad)


def unwrap_dek(kek: bytes, wrapped: bytes, aad: bytes) -> bytes:
    try:
        return AESGCM(kek).decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _DEK_CONTEXT + aad)
    except (InvalidTag, ValueError):
        raise CryptoError(
            "a wrapped data key does not unwrap with this key-encryption key",
            code="E_KEK_MISMATCH",
            hint="the store must be opened with the keys/kek.key it was created with",
        ) from None
