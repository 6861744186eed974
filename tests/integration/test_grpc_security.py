"""Transport security: who may talk to the aggregator, and as whom. Each refusal leaves the ledger
as it was."""

from __future__ import annotations

import socket
import ssl

import grpc
import pytest

from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import AggregatorClient, AggregatorError, RetryPolicy
from tests.federation_fixture import build_federation

NO_RETRY = RetryPolicy(max_attempts=1)


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return build_federation(tmp_path_factory.mktemp("fed"), sites=("st-mary", "st-john", "st-paul"))


@pytest.fixture(scope="module")
def srv(fed):
    with fed.serve() as running:
        # one legitimate module so that the log is not empty
        sealed, _ = fed.make_package("st-mary")
        with fed.client("st-mary", running.address) as c:
            c.upload(sealed)
        yield running


def _try_upload(fed, srv, client) -> AggregatorError:
    sealed, _ = fed.make_package("st-mary", classes=[1])
    size = srv.runtime.store.size()
    with pytest.raises(AggregatorError) as err:
        client.upload(sealed)
    assert srv.runtime.store.size() == size, "a refused upload must not grow the ledger"
    return err.value


def test_client_without_certificate_is_refused(fed, srv):
    creds = grpc.ssl_channel_credentials(root_certificates=fed.ca_pem)
    with grpc.secure_channel(
        srv.address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    ) as ch:
        stub = pb_grpc.AggregatorStub(ch)
        size = srv.runtime.store.size()
        with pytest.raises(grpc.RpcError) as err:
            stub.GetFederationInfo(pb.GetFederationInfoRequest(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails
        with pytest.raises(grpc.RpcError):
            stub.UploadModule(
                iter(
                    [
                        pb.UploadChunk(
                            upload_id="a" * 32,
                            offset=0,
                            data=b"x",
                            total_size=1,
                            total_sha256=b"\0" * 32,
                        )
                    ]
                ),
                timeout=5,
            )
        assert srv.runtime.store.size() == size


def test_plaintext_connection_is_refused(fed, srv):
    with grpc.insecure_channel(srv.address) as ch, pytest.raises(grpc.RpcError) as err:
        pb_grpc.AggregatorStub(ch).GetCheckpoint(pb.GetCheckpointRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(fed, srv):
    creds = fed.foreign_site("st-mary")
    with fed.client("st-mary", srv.address, creds=creds, retry=NO_RETRY) as c:
        err = _try_upload(fed, srv, c)
    assert err.code == "E_RPC_UNAVAILABLE"


def test_expired_certificate_is_refused(fed, srv):
    creds = fed.expired_site("st-mary")
    with fed.client("st-mary", srv.address, creds=creds, retry=NO_RETRY) as c:
        err = _try_upload(fed, srv, c)
    assert err.code == "E_RPC_UNAVAILABLE"  # TLS refuses an expired client certificate


def test_revoked_certificate_is_refused_at_once(fed, srv):
    with fed.client("st-paul", srv.address, retry=NO_RETRY) as c:
        note, _ = c.get_checkpoint()  # allowed before the revocation
        assert note
        fed.revoke_site("st-paul")
        size = srv.runtime.store.size()
        srv.runtime.deps.authenticator.crl.current()  # what the next call does: load, record
        assert srv.runtime.store.size() == size + 1  # crl.loaded; the refusal adds nothing
        err = _try_upload(fed, srv, c)
        assert err.code == "E_CERT_REVOKED" and err.status == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(AggregatorError) as err2:
            c.get_checkpoint()
        assert err2.value.code == "E_CERT_REVOKED"


def test_site_cannot_upload_another_sites_module(fed, srv):
    # st-john's connection carries a package that st-mary signed: the peer is not the signer
    sealed, _ = fed.make_package("st-mary", signer="st-mary")
    size = srv.runtime.store.size()
    with (
        fed.client("st-john", srv.address, retry=NO_RETRY) as c,
        pytest.raises(AggregatorError) as err,
    ):
        c.upload(sealed)
    assert (
        err.value.code == "E_IMPERSONATION"
        and err.value.status == grpc.StatusCode.PERMISSION_DENIED
    )
    # st-john signs a manifest that claims to be st-mary's: the package itself is inconsistent
    sealed, _ = fed.make_package("st-john", manifest_site="st-mary", signer="st-john")
    with (
        fed.client("st-john", srv.address, retry=NO_RETRY) as c,
        pytest.raises(AggregatorError) as err,
    ):
        c.upload(sealed)
    assert (
        err.value.code == "E_SITE_MISMATCH"
        and err.value.status == grpc.StatusCode.PERMISSION_DENIED
    )
    assert srv.runtime.store.size() == size


def test_refusals_are_logged_with_the_peer_identity(fed, srv, caplog):
    sealed, _ = fed.make_package("st-mary")
    with (
        caplog.at_level("WARNING", logger="aggregator.refusal"),
        fed.client("st-john", srv.address, retry=NO_RETRY) as c,
        pytest.raises(AggregatorError),
    ):
        c.upload(sealed)
    records = [r for r in caplog.records if getattr(r, "event", None) == "refusal"]
    assert records, "the refusal was not logged"
    rec = records[-1]
    assert rec.code == "E_IMPERSONATION" and rec.method == "UploadModule"
    assert rec.peer_identity == f"ffsecure://{fed.federation_id}/site/st-john"
    assert rec.grpc_status == "PERMISSION_DENIED"


def test_server_negotiates_tls13_and_requires_client_cert(fed, srv):
    host, port = srv.address.rsplit(":", 1)
    site = fed.sites["st-mary"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=fed.ca_pem.decode())
    ctx.load_cert_chain(site.cert_path, site.key_path)
    ctx.set_alpn_protocols(["h2"])
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.version() == "TLSv1.3"
        assert tls.selected_alpn_protocol() == "h2"
        cert = tls.getpeercert()
        assert ("URI", f"ffsecure://{fed.federation_id}/aggregator") in cert["subjectAltName"]


def test_client_checks_the_server_certificate(fed, srv, tmp_path):
    # a client that trusts another CA refuses this aggregator
    from ffsecure import pki

    other = pki.init_ca(tmp_path / "elsewhere", fed.federation_id)
    site = fed.sites["st-mary"]
    c = AggregatorClient(
        srv.address,
        ca_cert_pem=other.cert_pem,
        cert_pem=site.cert_pem,
        key_pem=site.key_pem,
        server_name="localhost",
        retry=NO_RETRY,
    )
    with c, pytest.raises(AggregatorError) as err:
        c.get_checkpoint()
    assert err.value.code == "E_RPC_UNAVAILABLE"


def _health_call(fed, srv, creds, method: str):
    """One health Check (or the first message of a Watch) with ``creds``: a status, or the
    RpcError."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel_creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_pem, private_key=creds.key_pem, certificate_chain=creds.cert_pem
    )
    options = [("grpc.ssl_target_name_override", "localhost")]
    with grpc.secure_channel(srv.address, channel_creds, options=options) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        request = health_pb2.HealthCheckRequest(service="")
        try:
            if method == "Check":
                return stub.Check(request, timeout=10).status
            stream = stub.Watch(request, timeout=10)
            try:
                return next(stream).status
            finally:
                stream.cancel()
        except grpc.RpcError as exc:
            return exc


def test_health_service_answers_only_callers_every_other_rpc_accepts(fed, srv, caplog):
    """A revoked certificate, or one of this CA naming another federation, gets no health status."""
    from grpc_health.v1 import health_pb2

    from ffsecure.records.wire import MD_CODE

    luke = fed.add_site("st-luke")
    for method in ("Check", "Watch"):
        assert _health_call(fed, srv, luke, method) == health_pb2.HealthCheckResponse.SERVING
    fed.revoke_site("st-luke")
    refused = {
        "revoked": (fed.sites["st-luke"], "E_CERT_REVOKED"),
        "other federation": (fed.other_federation_site("st-luke"), "E_IDENTITY"),
    }
    with caplog.at_level("WARNING", logger="aggregator.refusal"):
        for what, (creds, code) in refused.items():
            for method in ("Check", "Watch"):
                got = _health_call(fed, srv, creds, method)
                assert isinstance(got, grpc.RpcError), f"{what} {method}: answered {got}"
                assert got.code() == grpc.StatusCode.UNAUTHENTICATED, (what, method, got)
                assert dict(got.trailing_metadata() or ())[MD_CODE] == code, (what, method)
    logged = {(r.method, r.code) for r in caplog.records if getattr(r, "event", None) == "refusal"}
    assert {("Health.Check", "E_CERT_REVOKED"), ("Health.Watch", "E_IDENTITY")} <= logged
