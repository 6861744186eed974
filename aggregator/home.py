"""The aggregator home directory: where each file lives, and its private keys.

Layout (docs/decisions.md, "Aggregator home directory")::

    DIR/aggregator.toml  DIR/federation.json  DIR/ca.pem  DIR/crl.pem  DIR/tls.pem
    DIR/store.sqlite     0600, SQLite (WAL, its -wal/-shm 0600 too): modules, ledger,
                         checkpoints, artifacts, wrapped data keys, evaluation reports
    DIR/blobs/           0700: encrypted module weights and artifacts
    DIR/keys/            0700: kek.key, log.key, hpke.key, tls.key (0600 each)
    DIR/uploads/         0700: staged uploads (default ``uploads.dir``)
    DIR/cosignatures/    witness cosignature lines per checkpoint size (public, see
                         aggregator/cosignatures.py)
    DIR/federations/     0700: <sha256>.json (0600), the bytes of every federation manifest
                         ``serve`` put in force (aggregator/federation_ledger.py)

``DIR`` itself is 0700: the store holds wrapped data keys and the numbers
that the ledger hides behind salted commitments. Opening a home made by an
earlier release (0755 home, 0644 store) tightens it and logs a warning.

Private key files are created with mode 0600 through ``os.open`` (never
world-readable, not even for an instant), written to a temporary name,
fsynced and linked into place, so a crash never leaves half a key; an
existing key is never overwritten. Loading refuses a key file that group or
others can read.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ffsecure.errors import ConfigError
from ffsecure.files import private_dir, write_secret_file
from ffsecure.ledger.checkpoint import (
    Checkpoint,
    encode_signer_key,
    make_vkey,
    parse_signer_key,
    sign_checkpoint,
)

KEK_PREFIX = "ffsecure-kek-v1:"
KEK_BYTES = 32
#: the home's folder of kept federation manifests (aggregator/federation_ledger.py)
FEDERATIONS_DIR = "federations"


@dataclass(frozen=True)
class AggregatorHome:
    """Paths inside one aggregator home directory."""

    root: Path

    @classmethod
    def at(cls, path: str | os.PathLike) -> AggregatorHome:
        return cls(Path(path).resolve())

    @property
    def config(self) -> Path:
        return self.root / "aggregator.toml"

    @property
    def federation(self) -> Path:
        return self.root / "federation.json"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.pem"

    @property
    def crl(self) -> Path:
        return self.root / "crl.pem"

    @property
    def tls_cert(self) -> Path:
        return self.root / "tls.pem"

    @property
    def store_db(self) -> Path:
        return self.root / "store.sqlite"

    @property
    def blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def cosignatures(self) -> Path:
        return self.root / "cosignatures"

    @property
    def federations(self) -> Path:
        return self.root / FEDERATIONS_DIR

    @property
    def kek_key(self) -> Path:
        return self.keys / "kek.key"

    @property
    def log_key(self) -> Path:
        return self.keys / "log.key"

    @property
    def hpke_key(self) -> Path:
        return self.keys / "hpke.key"

    @property
    def tls_key(self) -> Path:
        return self.keys / "tls.key"

    def ensure_dirs(self) -> None:
        """Create the home, ``blobs/`` and ``keys/`` 0700 if missing; tighten them if open."""
        for d in (self.root, self.blobs, self.keys):
            private_dir(d)


def write_private_file(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 holding ``data``, durably; refuse to overwrite."""
    try:
        write_secret_file(path, data, overwrite=False)
    except FileExistsError:
        raise ConfigError(
            f"{path} already exists; a key is never overwritten",
            code="E_KEY_EXISTS",
            hint="move the old key away first if you mean to replace it",
        ) from None


def read_private_file(path: Path) -> bytes:
    """Read a key file, refusing one that group or others may read."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ConfigError(
            f"key file {path} does not exist",
            code="E_KEY_MISSING",
            hint="run `aggregator init` or restore the key from its backup",
        ) from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"key file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):o})",
            code="E_KEY_PERMISSIONS",
            hint=f"run `chmod 600 {path}`",
        )
    return path.read_bytes()


def create_kek(home: AggregatorHome) -> bytes:
    """Create a fresh random 256-bit key-encryption key in ``keys/kek.key``."""
    home.ensure_dirs()
    kek = secrets.token_bytes(KEK_BYTES)
    write_private_file(home.kek_key, (KEK_PREFIX + base64.b64encode(kek).decode() + "\n").encode())
    return kek


def load_kek(home: AggregatorHome) -> bytes:
    text = read_private_file(home.kek_key).decode("ascii", "replace").strip()
    try:
        if not text.startswith(KEK_PREFIX):
            raise ValueError
        kek = base64.b64decode(text[len(KEK_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        kek = b""
    if len(kek) != KEK_BYTES:
        raise ConfigError(
            f"{home.kek_key} is not a ffsecure key-encryption key",
            code="E_KEY_FORMAT",
            hint="restore keys/kek.key from its backup; without it stored weights are unreadable",
        )
    return kek


def load_or_create_kek(home: AggregatorHome) -> bytes:
    return load_kek(home) if home.kek_key.exists() else create_kek(home)


@dataclass(frozen=True)
class LogSigner:
    """The log's Ed25519 signing key and its note key name (= the log origin)."""

    name: str
    key: Ed25519PrivateKey

    @property
    def vkey(self) -> str:
        return make_vkey(self.name, self.key.public_key())

    def sign(self, cp: Checkpoint) -> str:
        return sign_checkpoint(cp, self.name, self.key)

    @classmethod
    def generate(cls, name: str) -> LogSigner:
        signer = cls(name, Ed25519PrivateKey.generate())
        _ = signer.vkey  # make_vkey refuses a name the note format cannot carry
        return signer


def create_log_key(home: AggregatorHome, origin: str) -> LogSigner:
    """Create the log signing key (note signer format) named ``origin``."""
    home.ensure_dirs()
    signer = LogSigner.generate(origin)
    write_private_file(home.log_key, (encode_signer_key(origin, signer.key) + "\n").encode())
    return signer


def load_log_key(home: AggregatorHome) -> LogSigner:
    name, key = parse_signer_key(read_private_file(home.log_key).decode("utf-8", "replace"))
    return LogSigner(name, key)


def load_or_create_log_key(home: AggregatorHome, origin: str | None = None) -> LogSigner:
    if home.log_key.exists():
        signer = load_log_key(home)
        if origin is not None and signer.name != origin:
            raise ConfigError(
                f"the log key is named {signer.name!r}, not {origin!r}",
                code="E_CONFIG",
                hint="a log keeps its origin for life; use the existing origin",
            )
        return signer
    if origin is None:
        raise ConfigError(
            f"{home.log_key} does not exist and no log origin was given",
            code="E_KEY_MISSING",
            hint="run `aggregator init`, which names the log after the federation",
        )
    return create_log_key(home, origin)


def default_origin(federation_id: str) -> str:
    """The log origin used for a federation: ``ffsecure.local/<federation-id>/log``."""
    return f"ffsecure.local/{federation_id}/log"
