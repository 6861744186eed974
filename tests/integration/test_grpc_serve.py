"""``aggregator serve`` as a real process: TLS 1.3 only, SIGTERM drains in-flight uploads, restarts
lose nothing."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import AggregatorError
from site_node.state import StateDir
from site_node.sync import advance_checkpoint
from tests.conftest import cli_env
from tests.federation_fixture import START_ENTRIES, build_federation

REPO = Path(__file__).resolve().parents[2]


class ServeProcess:
    def __init__(self, fed):
        self.fed = fed
        port_file = fed.home.root / "serve.port"
        port_file.unlink(missing_ok=True)
        self.log_path = fed.root / f"serve-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "aggregator", "serve", "--config", str(fed.config_path)],
                cwd=REPO,
                env=cli_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 60
        while not port_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"aggregator serve did not start:\n{self.log_path.read_text()[-3000:]}"
                )
            time.sleep(0.05)
        self.port = int(port_file.read_text())
        self.address = f"127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)

    def log_lines(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                out.append(json.loads(line))
        return out


@pytest.fixture
def fed(tmp_path):
    return build_federation(
        tmp_path, shutdown_grace_s=10.0, chunk_bytes=32 * 1024, commit_every_bytes=32 * 1024
    )


def _tls_version(address: str, site, ca_pem: bytes, max_version) -> str:
    host, port = address.rsplit(":", 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.load_cert_chain(site.cert_path, site.key_path)
    ctx.set_alpn_protocols(["h2"])
    ctx.maximum_version = max_version
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version()


def _stub(fed, site, address):
    c = fed.sites[site]
    creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_pem, private_key=c.key_pem, certificate_chain=c.cert_pem
    )
    ch = grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    return ch, pb_grpc.AggregatorStub(ch)


def test_serve_tls13_only_drain_on_sigterm_and_restart(fed, tmp_path):
    srv = ServeProcess(fed)
    try:
        site = fed.sites["st-mary"]
        assert _tls_version(srv.address, site, fed.ca_pem, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        with pytest.raises((ssl.SSLError, OSError)):
            _tls_version(srv.address, site, fed.ca_pem, ssl.TLSVersion.TLSv1_2)

        with fed.client("st-mary", srv.address) as c:
            first_sealed, first_pkg = fed.make_package("st-mary", classes=[0])
            first = c.upload(first_sealed, upload_id="1" * 32)
            old_note, _ = c.get_checkpoint()
            with pytest.raises(
                AggregatorError
            ) as refused:  # a refusal, to find in the JSON log below
                c.get_inclusion_proof(1000, 1000)
            assert refused.value.code == "E_PROOF_RANGE"

        # an upload in flight when SIGTERM arrives is finished, not dropped
        sealed, pkg = fed.make_package("st-mary", classes=[2])
        sha = hashlib.sha256(sealed).digest()
        chunk = 32 * 1024
        half_sent = threading.Event()

        def slow_chunks():
            for off in range(0, len(sealed), chunk):
                yield pb.UploadChunk(
                    upload_id="2" * 32,
                    offset=off,
                    data=sealed[off : off + chunk],
                    total_size=len(sealed),
                    total_sha256=sha,
                )
                if off >= len(sealed) // 2 and not half_sent.is_set():
                    half_sent.set()
                    time.sleep(1.5)  # SIGTERM lands while the stream is open

        ch, stub = _stub(fed, "st-mary", srv.address)
        result: dict = {}

        def run_upload():
            try:
                result["receipt"] = stub.UploadModule(slow_chunks(), timeout=30)
            except grpc.RpcError as exc:  # pragma: no cover - reported by the assertion below
                result["error"] = exc

        t = threading.Thread(target=run_upload)
        t.start()
        assert half_sent.wait(20)
        srv.proc.send_signal(signal.SIGTERM)
        t.join(30)
        ch.close()
        assert "error" not in result, result.get("error")
        drained = result["receipt"]
        assert drained.module_id == pkg.manifest.module_id
        assert srv.stop() == 0
        lines = srv.log_lines()
        events = [line.get("event") for line in lines]
        assert "draining" in events and "stopped" in events
        # every refusal is one structured JSON line naming the verified peer
        refusals = [line for line in lines if line.get("event") == "refusal"]
        assert [(r["code"], r["method"], r["grpc_status"], r["level"]) for r in refusals] == [
            ("E_PROOF_RANGE", "GetInclusionProof", "INVALID_ARGUMENT", "warning")
        ]
        assert refusals[0]["peer_identity"] == f"ffsecure://{fed.federation_id}/site/st-mary"
        assert refusals[0]["logger"] == "aggregator.refusal" and refusals[0]["peer_address"]
    finally:
        if srv.proc.poll() is None:
            srv.stop(signal.SIGKILL)

    # restart: everything acknowledged is still there
    srv2 = ServeProcess(fed)
    try:
        with fed.client("st-mary", srv2.address) as c:
            status = c.upload_status("2" * 32)
            assert (
                status.state == pb.UploadStatus.REGISTERED and status.receipt.index == drained.index
            )
            again = c.upload(
                first_sealed, upload_id="3" * 32, module_id=first_pkg.manifest.module_id
            )
            assert again.existing and again.index == first.index and again.entry == first.entry
            state = StateDir(tmp_path / "site-state").ensure()
            state.write_checkpoint(old_note)
            note, _ = c.get_checkpoint()
            advanced = advance_checkpoint(state, c, note)
            assert advanced["size"] == drained.tree_size
            assert state.read_checkpoint() == note
    finally:
        assert srv2.stop() == 0


@pytest.mark.slow
def test_upload_resumes_after_the_server_is_killed(fed):
    sealed, pkg = fed.make_package("st-john", classes=[1])
    sha = hashlib.sha256(sealed).digest()
    chunk = 32 * 1024
    srv = ServeProcess(fed)
    sent_enough = threading.Event()

    def chunks():
        for off in range(0, len(sealed), chunk):
            yield pb.UploadChunk(
                upload_id="4" * 32,
                offset=off,
                data=sealed[off : off + chunk],
                total_size=len(sealed),
                total_sha256=sha,
            )
            if off >= 3 * chunk:
                sent_enough.set()
                time.sleep(5)

    ch, stub = _stub(fed, "st-john", srv.address)
    errors = []
    t = threading.Thread(
        target=lambda: errors.append(
            pytest.raises(grpc.RpcError, stub.UploadModule, chunks(), timeout=30)
        )
    )
    t.start()
    assert sent_enough.wait(20)
    time.sleep(0.5)
    srv.stop(signal.SIGKILL)
    t.join(30)
    ch.close()
    srv2 = ServeProcess(fed)
    try:
        with fed.client("st-john", srv2.address) as c:
            status = c.upload_status("4" * 32)
            assert (
                status.state == pb.UploadStatus.IN_PROGRESS and status.committed_offset >= 3 * chunk
            )
            receipt = c.upload(
                sealed, upload_id="4" * 32, module_id=pkg.manifest.module_id, site_id="st-john"
            )
            assert c.last_upload.resumed_from == [status.committed_offset]
            assert receipt.index == START_ENTRIES  # after those of the first start
    finally:
        assert srv2.stop() == 0
