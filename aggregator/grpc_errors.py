"""Turn :class:`~ffsecure.errors.FFSecureError` into gRPC statuses, and log every refusal.

A refusal travels three ways so that any client can act on it:

* the status code (UNAUTHENTICATED, PERMISSION_DENIED, INVALID_ARGUMENT, ...),
* the status message ``[E_CODE] what is wrong``,
* trailing metadata: ``ffsecure-error-code``, ``ffsecure-error-hint`` and
  ``ffsecure-error-bin`` (a serialized ``ffsecure.v1.ErrorDetail``), the keys
  of ``ffsecure.records.wire``, which the site's client reads.

The mapping is by error code first, then by error class, so a new code gets a
sensible status without touching this table.
"""

from __future__ import annotations

import logging

import grpc

from ffsecure import errors
from ffsecure.records.wire import MD_CODE, MD_DETAIL, MD_HINT
from ffsecure.v1 import aggregator_pb2 as pb

log = logging.getLogger("aggregator.refusal")

_BY_CODE: dict[str, grpc.StatusCode] = {
    # who the peer is
    "E_NO_PEER_CERT": grpc.StatusCode.UNAUTHENTICATED,
    "E_PEER_CERT": grpc.StatusCode.UNAUTHENTICATED,
    "E_CERT_CHAIN": grpc.StatusCode.UNAUTHENTICATED,
    "E_CERT_EXPIRED": grpc.StatusCode.UNAUTHENTICATED,
    "E_CERT_REVOKED": grpc.StatusCode.UNAUTHENTICATED,
    "E_CERT_USAGE": grpc.StatusCode.UNAUTHENTICATED,
    "E_IDENTITY": grpc.StatusCode.UNAUTHENTICATED,
    # what the peer may do
    "E_SITE_MISMATCH": grpc.StatusCode.PERMISSION_DENIED,
    "E_IMPERSONATION": grpc.StatusCode.PERMISSION_DENIED,
    "E_NOT_OWNER": grpc.StatusCode.PERMISSION_DENIED,
    "E_FEDERATION_MISMATCH": grpc.StatusCode.PERMISSION_DENIED,
    # limits
    "E_RATE_LIMIT": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "E_TOO_LARGE": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "E_UPLOAD_QUOTA": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "E_DISK_FULL": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "E_DEADLINE": grpc.StatusCode.DEADLINE_EXCEEDED,
    # state
    "E_DUPLICATE_MODULE": grpc.StatusCode.ALREADY_EXISTS,
    "E_EVALUATION_EXISTS": grpc.StatusCode.ALREADY_EXISTS,
    "E_NOT_FOUND": grpc.StatusCode.NOT_FOUND,
    "E_UPLOAD_UNKNOWN": grpc.StatusCode.NOT_FOUND,
    "E_UPLOAD_OFFSET": grpc.StatusCode.FAILED_PRECONDITION,
    "E_UPLOAD_MISMATCH": grpc.StatusCode.FAILED_PRECONDITION,
    "E_UPLOAD_INCOMPLETE": grpc.StatusCode.FAILED_PRECONDITION,
    "E_UPLOAD_HASH": grpc.StatusCode.FAILED_PRECONDITION,
    "E_MODULE_DELETED": grpc.StatusCode.FAILED_PRECONDITION,
    "E_CLASSIFIER_RETIRED": grpc.StatusCode.FAILED_PRECONDITION,
    "E_UPLOAD_BUSY": grpc.StatusCode.ABORTED,
    "E_DP_ACCOUNTING_TIMEOUT": grpc.StatusCode.ABORTED,  # a busy accounting pool: send again
    "E_SHUTTING_DOWN": grpc.StatusCode.UNAVAILABLE,
}

_BY_CLASS: list[tuple[type, grpc.StatusCode]] = [
    (errors.NotFoundError, grpc.StatusCode.NOT_FOUND),
    (errors.PolicyError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.VerificationError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.FormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.CryptoError, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ConfigError, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.StoreError, grpc.StatusCode.INTERNAL),
    (errors.LedgerError, grpc.StatusCode.INTERNAL),
]


class RequestError(errors.FFSecureError):
    """A request the service refuses for a reason of its own (limits, uploads, identity)."""

    code = "E_REQUEST"


def status_for(exc: errors.FFSecureError) -> grpc.StatusCode:
    """The gRPC status code for an error: by code, then by class, else INTERNAL."""
    if exc.code in _BY_CODE:
        return _BY_CODE[exc.code]
    for cls, status in _BY_CLASS:
        if isinstance(exc, cls):
            return status
    if isinstance(exc, RequestError):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _ascii(text: str) -> str:
    # Metadata values must be printable ASCII.
    return text.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ")[:1000]


def log_refusal(
    context: grpc.ServicerContext, exc: errors.FFSecureError, *, method: str, peer: str | None
) -> grpc.StatusCode:
    """Log a refusal (structured, with the peer identity); return its gRPC status."""
    status = status_for(exc)
    log.warning(
        "refused %s: [%s] %s",
        method,
        exc.code,
        exc.message,
        extra={
            "event": "refusal",
            "method": method,
            "peer_identity": peer,
            "code": exc.code,
            "grpc_status": status.name,
            "peer_address": _peer_address(context),
        },
    )
    return status


def abort_with(
    context: grpc.ServicerContext, exc: errors.FFSecureError, *, method: str, peer: str | None
) -> None:
    """Log the refusal (structured, with the peer identity) and end the call with its status."""
    status = log_refusal(context, exc, method=method, peer=peer)
    detail = pb.ErrorDetail(code=exc.code, message=exc.message, hint=exc.hint or "")
    context.set_trailing_metadata(
        (
            (MD_CODE, exc.code),
            (MD_HINT, _ascii(exc.hint or "")),
            (MD_DETAIL, detail.SerializeToString()),
        )
    )
    context.abort(status, _ascii(f"[{exc.code}] {exc.message}"))


def _peer_address(context: grpc.ServicerContext) -> str | None:
    try:
        return context.peer()
    except Exception:  # noqa: BLE001 - logging must never fail a refusal
        return None
