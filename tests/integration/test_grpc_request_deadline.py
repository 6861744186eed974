"""The server's bound on the wait for a unary call's request message
(aggregator/request_deadline.py).

gRPC reads the single request message of a unary-request method in a worker
thread before the handler runs; a client that opens such a call as a stream and
never sends holds that worker. The server reads it itself under
``server.request_deadline_s`` and refuses zero or several request messages.
Real server, real mTLS on loopback, one worker thread.
"""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import RetryPolicy
from tests.federation_fixture import START_ENTRIES, build_federation

BOUND_S = 1.5
GET_CHECKPOINT = "/ffsecure.v1.Aggregator/GetCheckpoint"
GET_CLASSIFIER = "/ffsecure.v1.Aggregator/GetClassifier"


def _identity(x: bytes) -> bytes:
    return x


def _channel(fed, address: str, site: str = "st-mary") -> grpc.Channel:
    c = fed.sites[site]
    creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_pem, private_key=c.key_pem, certificate_chain=c.cert_pem
    )
    return grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )


def _refusals(caplog) -> list:
    return [r for r in caplog.records if getattr(r, "event", None) == "refusal"]


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return build_federation(
        tmp_path_factory.mktemp("reqdl"),
        sites=("st-mary",),
        max_workers=1,
        request_deadline_s=BOUND_S,
    )


def test_server_deadline_frees_a_worker_whose_request_never_arrives(fed, caplog):
    """A client opens GetCheckpoint as a stream and never sends its request (nor closes the
    stream), with a long deadline of its own. With one worker thread, the next ordinary call
    can only be served once the server has cut the stalled one at ``server.request_deadline_s``;
    the cut is logged once as E_DEADLINE with the peer identity, and the client sees CANCELLED."""
    release = threading.Event()

    def never_sends():
        release.wait(60)
        return
        yield  # pragma: no cover - a generator that yields nothing

    with fed.serve() as srv:
        channel = _channel(fed, srv.address)
        try:
            with caplog.at_level("WARNING", logger="aggregator.refusal"):
                t0 = time.monotonic()
                stalled = channel.stream_unary(
                    GET_CHECKPOINT, request_serializer=_identity, response_deserializer=_identity
                ).future(never_sends(), timeout=30)
                time.sleep(0.2)  # the stalled call holds the only worker
                with fed.client(
                    "st-mary", srv.address, timeout_s=8, retry=RetryPolicy(max_attempts=1)
                ) as client:
                    _, size = client.get_checkpoint()  # waits for the only worker
                waited = time.monotonic() - t0
                assert size == START_ENTRIES  # only those of the start
                assert BOUND_S - 0.5 < waited < 8, f"the next call waited {waited:.1f} s"
                with pytest.raises(grpc.RpcError) as err:
                    stalled.result(timeout=5)
                assert err.value.code() == grpc.StatusCode.CANCELLED
                time.sleep(
                    BOUND_S + 0.5
                )  # past the bound of the completed call: its timer was cancelled
        finally:
            release.set()
            channel.close()
    refusals = _refusals(caplog)
    assert len(refusals) == 1, [r.getMessage() for r in refusals]
    r = refusals[0]
    assert (
        r.code == "E_DEADLINE"
        and r.method == "GetCheckpoint"
        and r.grpc_status == "DEADLINE_EXCEEDED"
    )
    assert r.peer_identity.endswith("/site/st-mary")


@pytest.mark.parametrize("method,streaming", [(GET_CHECKPOINT, False), (GET_CLASSIFIER, True)])
@pytest.mark.parametrize("messages", [2, 0])
def test_unary_method_refuses_other_than_one_request_message(
    fed, caplog, method, streaming, messages
):
    """A unary-request method sent two request messages (or none) on one call is refused with a
    typed E_REQUEST_FORMAT (INVALID_ARGUMENT, code in the trailing metadata), logged with the
    peer."""
    with fed.serve() as srv:
        channel = _channel(fed, srv.address)
        try:
            opener = channel.stream_stream if streaming else channel.stream_unary
            call = opener(method, request_serializer=_identity, response_deserializer=_identity)
            with (
                caplog.at_level("WARNING", logger="aggregator.refusal"),
                pytest.raises(grpc.RpcError) as err,
            ):
                got = call(iter([b""] * messages), timeout=10)
                if streaming:
                    list(got)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert dict(err.value.trailing_metadata())["ffsecure-error-code"] == "E_REQUEST_FORMAT"
            assert "[E_REQUEST_FORMAT]" in err.value.details()
            # the worker is free and an ordinary call is served as before
            assert (
                pb_grpc.AggregatorStub(channel)
                .GetCheckpoint(pb.GetCheckpointRequest(), timeout=5)
                .tree_size
                == START_ENTRIES
            )
        finally:
            channel.close()
    refusals = _refusals(caplog)
    assert [r.code for r in refusals] == ["E_REQUEST_FORMAT"]
    assert refusals[0].method == method.rpartition("/")[2]
    assert refusals[0].peer_identity.endswith("/site/st-mary")


def test_health_service_and_unknown_methods_unchanged(fed):
    """The health service (unary Check, non-blocking server-streaming Watch) still answers through
    the interceptor, and a method the server does not have is still UNIMPLEMENTED."""
    with fed.serve() as srv:
        channel = _channel(fed, srv.address)
        try:
            health = health_pb2_grpc.HealthStub(channel)
            assert (
                health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            assert (
                health.Check(
                    health_pb2.HealthCheckRequest(service="ffsecure.v1.Aggregator"), timeout=5
                ).status
                == health_pb2.HealthCheckResponse.SERVING
            )
            with pytest.raises(grpc.RpcError) as err:
                health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
            watch = health.Watch(health_pb2.HealthCheckRequest(), timeout=5)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            for path in ("/ffsecure.v1.Aggregator/NoSuchMethod", "/no.such.Service/Method"):
                with pytest.raises(grpc.RpcError) as err:
                    channel.unary_unary(
                        path, request_serializer=_identity, response_deserializer=_identity
                    )(b"", timeout=5)
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert (
                pb_grpc.AggregatorStub(channel)
                .GetCheckpoint(pb.GetCheckpointRequest(), timeout=5)
                .tree_size
                == START_ENTRIES
            )
        finally:
            channel.close()
