"""Error code -> gRPC status mapping, and the client's backoff bounds."""

import random

import grpc
import pytest

from aggregator.grpc_errors import RequestError, status_for
from ffsecure import errors
from ffsecure.pki import CertRevokedError
from site_node.client import RetryPolicy


@pytest.mark.parametrize(
    "exc,status",
    [
        (CertRevokedError("revoked"), grpc.StatusCode.UNAUTHENTICATED),
        (RequestError("x", code="E_NO_PEER_CERT"), grpc.StatusCode.UNAUTHENTICATED),
        (errors.VerificationError("x", code="E_IMPERSONATION"), grpc.StatusCode.PERMISSION_DENIED),
        (RequestError("x", code="E_RATE_LIMIT"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.StoreError("x", code="E_DUPLICATE_MODULE"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.NotFoundError("x"), grpc.StatusCode.NOT_FOUND),
        (RequestError("x", code="E_UPLOAD_OFFSET"), grpc.StatusCode.FAILED_PRECONDITION),
        (RequestError("x", code="E_UPLOAD_BUSY"), grpc.StatusCode.ABORTED),
        (errors.PolicyError("x", code="E_POLICY_DP"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.FormatError("x", code="E_TENSOR_SHAPE"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.CryptoError("x", code="E_ENVELOPE_OPEN"), grpc.StatusCode.INVALID_ARGUMENT),
        (RequestError("x", code="E_REASON"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.StoreError("x", code="E_STORE_CORRUPT"), grpc.StatusCode.INTERNAL),
        (errors.FFSecureError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_status_for(exc, status):
    assert status_for(exc) == status


def test_backoff_is_bounded_full_jitter():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0, rng=random.Random(1))
    for attempt in range(10):
        cap = min(4.0, 0.5 * 2**attempt)
        delays = [policy.delay(attempt) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in delays)
        assert max(delays) > cap * 0.8  # jitter spreads over the whole window
