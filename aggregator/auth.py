"""Who is calling: the peer identity, read from the client certificate and nothing else.

TLS (with ``require_client_auth``) has already checked that the peer holds the
key of a certificate chaining to the federation CA. Here the certificate is
checked again with :func:`ffsecure.pki.verify_cert`, which adds what TLS does
not know: the federation CRL, the ``clientAuth`` usage, and the identity URI
(``ffsecure://<federation>/site/<id>``) of this federation. The returned
identity is the only one the service believes; no request field can change it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509

from aggregator.grpc_errors import RequestError
from ffsecure import pki
from ffsecure.errors import FFSecureError
from ffsecure.timefmt import rfc3339

log = logging.getLogger("aggregator.auth")

#: Seconds between attempts to record a loaded CRL that the ledger did not take.
RECORD_RETRY_S = 30


@dataclass(frozen=True)
class Peer:
    """An authenticated caller."""

    identity: pki.Identity
    cert: x509.Certificate
    fingerprint: str

    @property
    def site_id(self) -> str:
        assert self.identity.site_id is not None
        return self.identity.site_id

    @property
    def actor(self) -> str:
        return self.identity.actor


class CrlSource:
    """The current CRL from a file, re-read when the file changes (so a revocation applies at once).

    ``on_load`` (``aggregator.crl_ledger.CrlRecorder.record`` in ``serve``) is called with each
    CRL loaded, under this source's lock so that records keep the order of loads. A CRL that
    cannot be recorded (the store refuses the write) is applied all the same, since its
    revocations matter more than its record; the failure is logged and recording is retried at
    a call ``RECORD_RETRY_S`` later.
    """

    def __init__(
        self,
        path: Path,
        ca_cert: x509.Certificate,
        on_load: Callable[[x509.CertificateRevocationList], object] | None = None,
    ):
        self.path = Path(path)
        self.ca_cert = ca_cert
        self.on_load = on_load
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._crl: x509.CertificateRevocationList | None = None
        self._pem: bytes = b""
        self._unrecorded: x509.CertificateRevocationList | None = None
        self._retry_at = 0.0

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._crl, self._pem = None, None, b""
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            return
        pem = self.path.read_bytes()
        # A CRL that does not verify against the CA is an operator error: refuse to serve
        # (fail closed) rather than silently forgetting revocations.
        self._crl = pki.load_crl(pem, self.ca_cert)
        self._pem = pem
        self._stamp = stamp
        self._unrecorded, self._retry_at = self._crl, 0.0
        next_update = self._crl.next_update_utc
        if next_update is not None and pki.crl_expired(self._crl):
            log.warning(
                "the CRL %s is past its nextUpdate (%s): "
                "certificates revoked since then are not in it; "
                "re-sign it with `ffsecure pki crl` and copy it here",
                self.path,
                rfc3339(next_update),
            )

    def _record(self, *, strict: bool) -> None:
        if self._unrecorded is None or self.on_load is None or time.monotonic() < self._retry_at:
            return
        try:
            self.on_load(self._unrecorded)
        except (FFSecureError, OSError) as exc:
            if strict:
                raise
            self._retry_at = time.monotonic() + RECORD_RETRY_S
            log.error(
                "the CRL %s is applied but could not be recorded in the ledger "
                "(retried in %d s): %s",
                self.path,
                RECORD_RETRY_S,
                exc,
                extra={"event": "crl_record_failed"},
            )
            return
        self._unrecorded = None

    def record_now(self) -> None:
        """Load the CRL and record it, raising on any failure (``serve`` start-up)."""
        with self._lock:
            self._refresh()
            self._record(strict=True)

    def current(self) -> x509.CertificateRevocationList | None:
        with self._lock:
            self._refresh()
            self._record(strict=False)
            return self._crl

    def pem(self) -> bytes:
        with self._lock:
            self._refresh()
            self._record(strict=False)
            return self._pem


class Authenticator:
    """Turns a call's TLS auth context into a :class:`Peer`, or refuses it."""

    def __init__(self, ca_cert: x509.Certificate, crl: CrlSource):
        self.ca_cert = ca_cert
        self.crl = crl
        self.federation_id = pki.ca_federation_id(ca_cert)

    def peer_cert(self, context: grpc.ServicerContext) -> x509.Certificate:
        auth = context.auth_context() or {}
        if auth.get("transport_security_type") != [b"ssl"]:
            raise RequestError(
                "the call did not arrive over TLS",
                code="E_NO_PEER_CERT",
                hint="connect with TLS and a client certificate",
            )
        pems = auth.get("x509_pem_cert") or []
        if len(pems) != 1:
            raise RequestError(
                "the call carries no client certificate",
                code="E_NO_PEER_CERT",
                hint="connect with the site certificate issued by the federation CA",
            )
        try:
            return pki.load_cert(pems[0])
        except FFSecureError as exc:
            raise RequestError(
                f"client certificate does not parse: {exc.message}",
                code="E_PEER_CERT",
                hint="use the certificate issued by the federation CA",
            ) from None

    def authenticate(self, context: grpc.ServicerContext) -> Peer:
        """The verified site identity of the caller (E_CERT_*, E_IDENTITY, E_NO_PEER_CERT)."""
        cert = self.peer_cert(context)
        identity = pki.verify_cert(cert, ca_cert=self.ca_cert, crl=self.crl.current(), role="site")
        return Peer(identity=identity, cert=cert, fingerprint=pki.cert_fingerprint(cert))

    def unverified_site_id(self, context: grpc.ServicerContext) -> str | None:
        """For refusal records only: the site id a refused certificate claims, if any.

        TLS checked that the certificate chains to the federation CA, so the CA bounds these ids.
        """
        try:
            return pki.identity_of(self.peer_cert(context)).site_id
        except FFSecureError:
            return None

    def unverified_name(self, context: grpc.ServicerContext) -> str | None:
        """For refusal logs only: the identity URI a refused certificate claims, if any."""
        try:
            return pki.identity_of(self.peer_cert(context)).uri
        except FFSecureError:
            return None
