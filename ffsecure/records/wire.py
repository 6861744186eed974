"""The gRPC contract both sides share beyond the ``.proto`` files.

A refusal travels as the status code, the message ``[E_CODE] what is wrong``
and three trailing-metadata keys: :data:`MD_CODE` (the stable ``E_...`` code),
:data:`MD_HINT` (what a person can do, printable ASCII) and :data:`MD_DETAIL`
(a serialized ``ffsecure.v1.ErrorDetail``; the ``-bin`` suffix makes gRPC
carry it as bytes). The aggregator writes them (``aggregator.grpc_errors``)
and the site reads them (``site_node.client``); both import them from here.

Retries: a client retries a call that failed with a status in
:data:`RETRYABLE` (the server was away, slow or busy), and a
RESOURCE_EXHAUSTED refusal only when its code is in :data:`RETRYABLE_CODES`
(a rate limit passes; a quota or a full disk does not).
"""

from __future__ import annotations

import grpc

__all__ = ["MD_CODE", "MD_DETAIL", "MD_HINT", "RETRYABLE", "RETRYABLE_CODES", "is_retryable"]

MD_CODE = "ffsecure-error-code"
MD_HINT = "ffsecure-error-hint"
MD_DETAIL = "ffsecure-error-bin"

#: Statuses a client retries with backoff, whatever the error code.
RETRYABLE: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
    }
)
#: Error codes of a RESOURCE_EXHAUSTED refusal that are worth retrying later.
RETRYABLE_CODES = frozenset({"E_RATE_LIMIT"})


def is_retryable(status: grpc.StatusCode | None, code: str | None) -> bool:
    """Whether a call that failed with ``status`` and error ``code`` may be retried."""
    if status in RETRYABLE:
        return True
    return status == grpc.StatusCode.RESOURCE_EXHAUSTED and code in RETRYABLE_CODES
