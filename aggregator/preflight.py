"""``aggregator check``: everything ``serve`` needs, checked before it starts (or beside it).

Steps, in order (each yields :class:`ffsecure.preflight.CheckLine` records; a
step whose prerequisite failed is not run and is listed as skipped):

* ``config``: ``aggregator.toml`` parses (:func:`aggregator.config.load_config`);
* ``permissions``: the home, ``keys/`` and ``blobs/`` 0700, every key file present
  and 0600, ``store.sqlite`` (and its ``-wal``/``-shm``) 0600, by the rule of
  :func:`ffsecure.files.loose_mode`. A loose key is FAIL (``serve`` refuses to
  load it); a loose directory or store is WARN (``serve`` tightens it at start,
  :func:`ffsecure.files.restrict`, but it was open until then);
* ``federation``: the manifest verifies under ``ca.pem`` and names this home's
  HPKE and log keys (:func:`aggregator.initialize.check_manifest_keys`); its
  endpoint's port against ``server.listen`` (a difference is WARN: right only
  behind a port forward);
* ``tls``: days left of ``tls.pem``, ``ca.pem`` and the CRL's nextUpdate
  (:func:`aggregator.site_status.home_expiries`, the list ``aggregator status``
  shows, by the rule of :mod:`ffsecure.pki.expiry`: under 30 days WARN,
  expired FAIL); the CRL is
  present (without it ``serve`` checks no revocation: FAIL) and signed by the
  CA; ``tls.pem`` chains to the CA, has the aggregator role, is not revoked
  and holds ``keys/tls.key`` (:func:`aggregator.initialize.check_tls_cert`);
  its SAN covers the host of
  the manifest's endpoint (what sites dial; a miss is FAIL: their TLS refuses);
* ``listen``: a bind test on ``server.listen`` (closed at once) says the port
  is free; when it is taken, a TLS handshake tells a running ``serve`` of
  this home (its peer certificate equals ``tls.pem``: the health service only
  answers enrolled sites, and this host holds no site certificate) from
  another process (FAIL naming the port);
* ``store``: opened without disturbing a running ``serve``
  (:func:`aggregator.store.open_store_for_reading`: SQLite read-only, with no
  write lock, no chmod, no clean-up; PostgreSQL the normal way, which takes no
  file lock and changes nothing on a store of this release) and
  :meth:`~aggregator.store.SQLStore.verify_integrity`: every entry rehashed,
  every Merkle node and checkpoint checked; SQLite's blob files are compared
  and decrypted only while ``serve`` is not running (it writes them outside a
  reader's snapshot), PostgreSQL's blobs always (they are rows of the snapshot);
* ``disk``: free space in the home (under 1 GiB WARN, under 100 MiB FAIL);
* ``evaluation``: the ``[evaluation]`` test set, when configured, loads.

Nothing is written. Torch is imported only by the evaluation step.
"""

from __future__ import annotations

import errno
import hmac
import ipaddress
import os
import shutil
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from aggregator.config import AggregatorConfig, load_config
from aggregator.home import AggregatorHome, load_kek, load_log_key
from aggregator.initialize import check_manifest_keys, check_tls_cert
from aggregator.site_status import home_expiries
from aggregator.store import PostgresStore, open_store_for_reading
from aggregator.store.postgres import redact_dsn
from ffsecure import pki
from ffsecure.federation import FederationManifest, load_signed_manifest
from ffsecure.files import loose_mode
from ffsecure.preflight import Check, CheckLine, Status, expiry_line, fail, passed, warn

GiB = 1 << 30
MiB = 1 << 20
#: Free space in the home under which ``check`` warns, and under which it fails.
DISK_WARN_BYTES = 1 * GiB
DISK_FAIL_BYTES = 100 * MiB
#: How long the TLS handshake with whatever holds the port may take.
PROBE_TIMEOUT_S = 3.0

RENEW_TLS = (
    "run `aggregator init` step 1's CSR again (keys/tls.key stays), have the CA operator "
    "sign it (`ffsecure pki sign-csr --role aggregator --host HOST`) and replace tls.pem"
)
RENEW_CA = "ask the federation CA operator for the renewed ca.pem and federation.json"
RENEW_CRL = "copy the CA operator's newest crl.pem (`ffsecure pki crl`) into the home"
#: The check name and the fix of each expiry that :func:`aggregator.site_status.home_expiries`
#: (the one list, shared with ``aggregator status``) names.
EXPIRY_CHECKS = {
    "aggregator certificate": ("TLS certificate expiry", RENEW_TLS),
    "CA certificate": ("CA certificate expiry", RENEW_CA),
    "CRL": ("CRL next update", RENEW_CRL),
}
NEW_MANIFEST = (
    "have the CA operator re-create federation.json from this home's public-keys.json "
    "(`ffsecure federation create`) and install it"
)


def _split_host_port(address: str) -> tuple[str, int]:
    """``host:port`` (validated by config and manifest parsing) as (host without [], port)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _mode_line(check: str, path: Path, want: int, *, loose: Status) -> CheckLine:
    mode = loose_mode(path)
    if mode is None:
        return passed(check, f"{path} is mode {os.stat(path).st_mode & 0o777:03o}")
    found = f"{path} is mode {mode:03o}, open to group or others"
    fix = f"run `chmod {want:o} {path}`"
    if loose is Status.FAIL:
        return fail(check, f"{found}; serve refuses to load it", fix)
    return warn(check, f"{found}; serve tightens it at start", fix)


def san_covers(cert: x509.Certificate, host: str) -> bool:
    """Whether ``cert``'s subjectAltName names ``host`` (a DNS name or an IP address)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host.lower().rstrip(".") in {
            n.lower() for n in san.get_values_for_type(x509.DNSName)
        }
    return ip in san.get_values_for_type(x509.IPAddress)


def _peer_certificate(host: str, port: int) -> bytes | None:
    """The DER certificate a TLS server on ``host:port`` presents, or None (not TLS, no answer).

    The certificate is not verified here: the caller compares it byte for byte with
    ``tls.pem``, which is a stricter test than any chain.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as raw,
            context.wrap_socket(raw) as tls,
        ):
            return tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError):
        return None


def _bind_error(listen: str) -> OSError | None:
    """Bind a socket to ``listen`` and close it: None when the address is free."""
    host, port = _split_host_port(listen)
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:  # a host name this machine cannot resolve
        return exc
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
        try:
            sock.bind(address)
        except OSError as exc:
            return exc
    return None


def _dial_host(listen_host: str) -> str:
    """Where to connect to reach a server listening on ``listen_host``."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)


@dataclass
class AggregatorPreflight:
    """The steps of ``aggregator check`` for one aggregator home (module docstring)."""

    home: AggregatorHome
    cfg: AggregatorConfig | None = None
    federation: FederationManifest | None = None
    serving: bool = False

    def checks(self) -> list[Check]:
        return [
            Check("config", self.check_config),
            Check("permissions", self.check_permissions, needs=("config",)),
            Check("federation", self.check_federation, needs=("permissions",)),
            Check("tls", self.check_tls, needs=("federation",)),
            Check("listen", self.check_listen, needs=("config",)),
            Check("store", self.check_store, needs=("permissions",), slow=True),
            Check("disk", self.check_disk, needs=("config",)),
            Check("evaluation", self.check_evaluation, needs=("federation",), slow=True),
        ]

    # -- steps -------------------------------------------------------------
    def check_config(self) -> Iterator[CheckLine]:
        self.cfg = load_config(self.home.config)
        yield passed("config", f"{self.home.config}: listen {self.cfg.server.listen}")

    def check_permissions(self) -> Iterator[CheckLine]:
        home = self.home
        for directory in (home.root, home.keys, home.blobs):
            if directory.is_dir():
                yield _mode_line("permissions", directory, 0o700, loose=Status.WARN)
        missing = [
            path.name
            for path in (home.kek_key, home.log_key, home.hpke_key, home.tls_key)
            if not path.is_file()
        ]
        if missing:
            yield fail(
                "keys",
                f"{home.keys} lacks {', '.join(missing)}",
                "restore keys/ from its backup (or create the home with `aggregator init`)",
            )
        for key in (home.kek_key, home.log_key, home.hpke_key, home.tls_key):
            if key.is_file():
                yield _mode_line("keys", key, 0o600, loose=Status.FAIL)
        for suffix in ("", "-wal", "-shm"):
            path = home.store_db.with_name(home.store_db.name + suffix)
            if path.is_file():
                yield _mode_line("permissions", path, 0o600, loose=Status.WARN)

    def check_federation(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        ca_cert = pki.load_cert(self.home.ca_cert.read_bytes())
        fed = load_signed_manifest(self.home.federation.read_bytes(), ca_cert)
        self.federation = fed
        check_manifest_keys(self.home, fed)
        endpoint = fed.aggregator["endpoint"]
        yield passed(
            "federation manifest",
            f"signature verifies under the CA; federation {fed.federation_id}; names this "
            f"home's HPKE key {fed.hpke_key_id[:16]}... and log key {fed.aggregator['log_origin']}",
        )
        _, listen_port = _split_host_port(self.cfg.server.listen)
        _, port = _split_host_port(endpoint)
        if listen_port == port:
            yield passed("endpoint", f"sites dial {endpoint}; serve listens on that port")
        elif listen_port == 0:
            yield warn(
                "endpoint",
                f"sites dial {endpoint} but server.listen = {self.cfg.server.listen!r} picks "
                "another free port at every start",
                f"set server.listen to port {port} in aggregator.toml",
            )
        else:
            yield warn(
                "endpoint",
                f"sites dial {endpoint} but serve listens on port {listen_port}",
                f"right only behind a port forward to {listen_port}; otherwise set "
                f"server.listen to port {port}",
            )

    def check_tls(self) -> Iterator[CheckLine]:
        assert self.federation is not None
        ca_cert = pki.load_cert(self.home.ca_cert.read_bytes())
        tls_cert = pki.load_cert(self.home.tls_cert.read_bytes())
        crl = pki.load_crl(self.home.crl.read_bytes(), ca_cert) if self.home.crl.is_file() else None
        expiries = [
            expiry_line(EXPIRY_CHECKS[e.what][0], e, EXPIRY_CHECKS[e.what][1])
            for e in home_expiries(self.home)
        ]
        if crl is None:
            expiries.append(
                fail(
                    "CRL",
                    f"{self.home.crl} does not exist: serve would check no revocation and "
                    "accept a revoked site's certificate",
                    RENEW_CRL,
                )
            )
        if any(line.status is Status.FAIL for line in expiries):
            yield from expiries  # renewing is the fix; the chain is judged once it is valid
            return
        assert crl is not None  # a missing CRL is a FAIL line above
        check_tls_cert(self.home, tls_cert, self.federation, ca_cert=ca_cert, crl=crl)
        yield passed(
            "TLS certificate",
            "chains to the CA, role aggregator, holds keys/tls.key, "
            f"not on CRL #{pki.crl_info(crl).number} (signed by the CA)",
        )
        yield from expiries
        host, _ = _split_host_port(self.federation.aggregator["endpoint"])
        if san_covers(tls_cert, host):
            yield passed("TLS host name", f"the certificate's subjectAltName covers {host}")
        else:
            yield fail(
                "TLS host name",
                f"sites dial {host} (the manifest's endpoint) but the certificate does not name it",
                f"have the CA operator sign aggregator.csr again with `--host {host}` "
                "and replace tls.pem",
            )

    def check_listen(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        listen = self.cfg.server.listen
        host, port = _split_host_port(listen)
        if port == 0:
            running = self._running_port()
            if running is None:
                yield passed("listen", f"{listen}: serve picks a free port at start")
                return
            port = running
        else:
            error = _bind_error(listen)
            if error is None:
                yield passed("listen", f"{listen} is free")
                return
            if error.errno != errno.EADDRINUSE:
                yield fail(
                    "listen",
                    f"cannot bind {listen}: {error.strerror}",
                    "set server.listen to an address of this host (0.0.0.0:PORT for all) and a "
                    "port this user may bind (1024 or above unless granted)",
                )
                return
        yield self._port_holder(_dial_host(host), port)

    def _running_port(self) -> int | None:
        """The port in ``serve.port`` (written by a serve with a port-0 listen), if any."""
        assert self.cfg is not None
        try:
            text = self.cfg.port_file.read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            return None
        return int(text) if text.isdigit() and 0 < int(text) < 65536 else None

    def _port_holder(self, host: str, port: int) -> CheckLine:
        peer = _peer_certificate(host, port)
        ours = pki.load_cert(self.home.tls_cert.read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
        if peer is not None and hmac.compare_digest(peer, ours):
            self.serving = True
            return passed("listen", f"port {port}: serve is running (it presents this tls.pem)")
        what = "a TLS server with another certificate" if peer else "a process that is not serve"
        return fail(
            "listen",
            f"port {port} is held by {what}",
            f"stop that process (`ss -ltnp 'sport = :{port}'` names it) or set server.listen "
            "to a free port (and have the manifest's endpoint follow)",
        )

    def check_store(self) -> Iterator[CheckLine]:
        assert self.cfg is not None
        store = open_store_for_reading(
            self.cfg, kek=load_kek(self.home), log_signer=load_log_key(self.home)
        )
        with store:
            blobs = store.BLOBS_IN_SNAPSHOT or not self.serving
            summary = store.verify_integrity(files=blobs)
        checked = (
            "every blob decrypts to its registered weights"
            if blobs
            else "serve is running: blob files not compared (serve writes them)"
        )
        if isinstance(store, PostgresStore):
            opened = f"PostgreSQL store {redact_dsn(self.cfg.store_dsn())} opens"
        else:
            opened = f"{self.home.store_db} opens read-only"
        yield passed(
            "store",
            f"{opened}; ledger of {summary['entries']} entries and "
            f"{summary['checkpoints']} checkpoints verifies, {summary['modules']} modules; "
            f"{checked}",
        )

    def check_disk(self) -> Iterator[CheckLine]:
        free = shutil.disk_usage(self.home.root).free
        detail = f"{free / GiB:.1f} GiB free in {self.home.root}"
        fix = "free space on that file system, or move the home to a larger one"
        if free < DISK_FAIL_BYTES:
            yield fail("disk", f"{detail}; uploads and the ledger stop below 100 MiB", fix)
        elif free < DISK_WARN_BYTES:
            yield warn("disk", f"{detail}; under 1 GiB", fix)
        else:
            yield passed("disk", detail)

    def check_evaluation(self) -> Iterator[CheckLine]:
        assert self.cfg is not None and self.federation is not None
        if not self.cfg.evaluation:
            yield passed("evaluation", "no [evaluation] test set configured")
            return
        # heavy: torch, only when a test set is configured
        from aggregator.evaluation import load_evaluation

        eval_set = load_evaluation(
            self.cfg.evaluation,
            label_space=self.federation.label_space,
            image_shape=self.federation.image_shape,
        )
        assert eval_set is not None  # the section is not empty
        yield passed(
            "evaluation",
            f"[evaluation] {eval_set.name}: {len(eval_set.y)} test images loaded at the "
            "federation's image shape",
        )
