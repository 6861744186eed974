"""Make the aggregator's TLS endpoint refuse anything older than TLS 1.3.

gRPC's BoringSSL negotiates TLS 1.3 with every client that offers it, but
grpc's Python API has no minimum-version switch, and a client limited to
TLS 1.2 would otherwise be served. The federation PKI uses ECDSA P-256 keys
only, so restricting gRPC's TLS 1.2 cipher list (``GRPC_SSL_CIPHER_SUITES``)
to a single RSA-authenticated suite leaves TLS 1.2 without any usable cipher:
TLS 1.2 handshakes fail with ``NO_SHARED_CIPHER``, while TLS 1.3 (whose
suites that list does not govern) is unaffected.

gRPC reads the variable once, when ``grpc`` is first imported, so
:func:`require_tls13` must run before that (``aggregator serve`` calls it
first thing). ``tests/integration/test_grpc_serve.py`` checks the result on a
real ``aggregator serve`` process.
"""

from __future__ import annotations

import os
import sys

CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"
TLS12_UNUSABLE = "ECDHE-RSA-AES128-GCM-SHA256"


def require_tls13(environ=os.environ) -> bool:
    """Set the cipher restriction; returns False when grpc was imported already (too late)."""
    environ[CIPHER_ENV] = TLS12_UNUSABLE
    return "grpc" not in sys.modules


def tls13_enforced(environ=os.environ) -> bool:
    """Whether this process's gRPC was started with the restriction in place (best effort)."""
    return environ.get(CIPHER_ENV) == TLS12_UNUSABLE
