"""Private key files: PKCS#8 PEM, created 0600 atomically, optionally passphrase-encrypted.

Keys are written through :func:`ffsecure.files.write_secret_file` (never
briefly readable by others) and loaded with a typed ``E_KEY`` error for an
unreadable file, a wrong or missing passphrase, or bytes that are not a key.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from ffsecure.errors import ConfigError, FFSecureError
from ffsecure.files import write_secret_file


def write_private_key(
    path: str | os.PathLike[str], key: PrivateKeyTypes, passphrase: bytes | None = None
) -> None:
    """Write ``key`` as PKCS#8 PEM to ``path``, created 0600, atomically."""
    enc = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    write_secret_file(path, data)


def load_private_key(
    path: str | os.PathLike[str], passphrase: bytes | None = None
) -> PrivateKeyTypes:
    """Load a PEM private key; a wrong or missing passphrase raises E_KEY."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read key file {path}: {exc.strerror}", code="E_KEY") from None
    try:
        return serialization.load_pem_private_key(data, password=passphrase)
    except (ValueError, TypeError) as exc:
        raise FFSecureError(
            f"cannot load private key {path}: {exc}",
            code="E_KEY",
            hint="check the passphrase (--passphrase-file) and that the file is a PEM key",
        ) from None
