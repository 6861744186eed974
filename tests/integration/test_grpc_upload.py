"""Uploads over real mTLS gRPC on loopback: receipts, resume, idempotency, proofs, deletion."""

from __future__ import annotations

import hashlib
import threading
import time

import grpc
import pytest

from ffsecure.ledger import leaf_hash, open_checkpoint, validate_entry, verify_inclusion
from ffsecure.v1 import aggregator_pb2 as pb
from ffsecure.v1 import aggregator_pb2_grpc as pb_grpc
from site_node.client import AggregatorError, RetryPolicy, kept_receipt, verify_receipt
from site_node.state import StateDir
from site_node.sync import advance_checkpoint
from tests.federation_fixture import START_ENTRIES, build_federation


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    return build_federation(tmp_path_factory.mktemp("fed"))


@pytest.fixture(scope="module")
def srv(fed):
    with fed.serve() as running:
        yield running


def _raw_stub(fed, site, address):
    c = fed.sites[site]
    creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_pem, private_key=c.key_pem, certificate_chain=c.cert_pem
    )
    channel = grpc.secure_channel(
        address, creds, options=[("grpc.ssl_target_name_override", "localhost")]
    )
    return channel, pb_grpc.AggregatorStub(channel)


def test_full_upload_and_receipt_verification(fed, srv):
    sealed, pkg = fed.make_package("st-mary", classes=[0, 2])
    before = srv.runtime.store.size()
    with fed.client("st-mary", srv.address) as c:
        manifest = c.get_federation(fed.ca.cert)
        assert manifest.federation_id == fed.federation_id
        info = c.federation_info()
        assert info.peer_site_id == "st-mary" and info.max_chunk_bytes == 64 * 1024
        receipt = c.upload(sealed, module_id=pkg.manifest.module_id, site_id="st-mary")
    assert srv.runtime.store.size() == before + 1
    assert receipt.module_id == pkg.manifest.module_id and not receipt.existing
    assert receipt.index == before and receipt.tree_size == before + 1
    # verify again, offline, from the kept JSON form
    kept = kept_receipt(receipt.to_dict())
    cp = verify_receipt(
        kept,
        log_vkey=fed.log_vkey,
        log_origin=fed.manifest.aggregator["log_origin"],
        module_id=pkg.manifest.module_id,
        site_id="st-mary",
    )
    assert cp.size == receipt.tree_size
    entry = validate_entry(receipt.entry)
    assert entry["type"] == "module.registered" and entry["actor"] == "site:st-mary"
    assert entry["facts"]["weights_sha256"] == pkg.manifest.weights_sha256
    assert entry["facts"]["classes"] == [0, 2]
    # the stored weights are the uploaded ones (decrypted from the store)
    assert srv.runtime.store.module_weights(pkg.manifest.module_id) == pkg.weights


def test_tampered_receipt_is_refused(fed, srv):
    sealed, pkg = fed.make_package("st-mary")
    with fed.client("st-mary", srv.address) as c:
        receipt = c.upload(sealed)
    d = receipt.to_dict()
    bad_entry = kept_receipt({**d, "entry": kept_receipt(d).to_dict()["entry"][:-4] + "AAAA"})
    with pytest.raises(Exception) as err:
        verify_receipt(bad_entry, log_vkey=fed.log_vkey)
    assert getattr(err.value, "code", "") in ("E_PROOF", "E_ENTRY")
    with pytest.raises(Exception) as err:
        verify_receipt(receipt, log_vkey=fed.log_vkey, module_id="0" * 32)
    assert err.value.code == "E_RECEIPT"
    with pytest.raises(Exception) as err:
        verify_receipt(receipt, log_vkey=fed.log_vkey, site_id="st-john")
    assert err.value.code == "E_RECEIPT"


def test_resend_is_idempotent(fed, srv):
    sealed, pkg = fed.make_package("st-john", classes=[1])
    with fed.client("st-john", srv.address) as c:
        first = c.upload(sealed, upload_id="a" * 32)
        size = srv.runtime.store.size()
        again_same_id = c.upload(sealed, upload_id="a" * 32)
        # answered from the staging record, without sending the package again
        assert c.last_upload.bytes_sent == 0
        again_new_id = c.upload(sealed, upload_id="b" * 32)
        status = c.upload_status("a" * 32)
    assert srv.runtime.store.size() == size
    assert again_same_id.index == first.index == again_new_id.index
    assert again_same_id.entry == first.entry == again_new_id.entry
    assert again_new_id.existing and again_same_id.existing
    assert status.state == pb.UploadStatus.REGISTERED and status.receipt.index == first.index


def test_resume_after_the_stream_is_cut(fed, srv):
    sealed, pkg = fed.make_package("st-mary", classes=[3])
    sha = hashlib.sha256(sealed).digest()
    upload_id = "c" * 32
    chunk = 16 * 1024
    channel, stub = _raw_stub(fed, "st-mary", srv.address)

    class Cut(Exception):
        pass

    def first_part():
        for off in range(0, 5 * chunk, chunk):
            yield pb.UploadChunk(
                upload_id=upload_id,
                offset=off,
                data=sealed[off : off + chunk],
                total_size=len(sealed),
                total_sha256=sha,
            )
        time.sleep(0.3)  # let the server write what it received, then the connection "drops"
        raise Cut()

    size = srv.runtime.store.size()
    with pytest.raises(grpc.RpcError):
        stub.UploadModule(first_part(), timeout=10)
    channel.close()
    deadline = time.monotonic() + 10
    with fed.client("st-mary", srv.address) as c:
        # the server notices the cut, commits what it received and releases the upload
        while (
            srv.runtime.deps.staging.is_busy("st-mary", upload_id) and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        status = c.upload_status(upload_id)
        assert status.state == pb.UploadStatus.IN_PROGRESS
        assert 0 < status.committed_offset <= 5 * chunk
        assert srv.runtime.store.size() == size  # nothing registered from half a package
        receipt = c.upload(
            sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id="st-mary"
        )
        stats = c.last_upload
    assert stats.resumed_from[0] == status.committed_offset
    assert stats.bytes_sent == len(sealed) - status.committed_offset
    assert receipt.module_id == pkg.manifest.module_id
    assert srv.runtime.store.size() == size + 1


def test_bad_chunks_are_refused_with_typed_codes(fed, srv):
    sealed, _ = fed.make_package("st-mary")
    sha = hashlib.sha256(sealed).digest()
    channel, stub = _raw_stub(fed, "st-mary", srv.address)
    size = srv.runtime.store.size()

    def send(chunks):
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadModule(iter(chunks), timeout=10)
        md = dict(err.value.trailing_metadata())
        return err.value.code(), md["ffsecure-error-code"], err.value.details(), md

    status, code, details, md = send(
        [
            pb.UploadChunk(
                upload_id="d" * 32, offset=100, data=b"x", total_size=len(sealed), total_sha256=sha
            )
        ]
    )
    assert (status, code) == (grpc.StatusCode.FAILED_PRECONDITION, "E_UPLOAD_OFFSET")
    assert details.startswith("[E_UPLOAD_OFFSET] ") and "offset 0" in md["ffsecure-error-hint"]
    detail = pb.ErrorDetail.FromString(md["ffsecure-error-bin"])
    assert detail.code == "E_UPLOAD_OFFSET"
    status, code, _, _ = send(
        [pb.UploadChunk(upload_id="not-hex", offset=0, data=b"x", total_size=1, total_sha256=sha)]
    )
    assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "E_UPLOAD_ID")
    status, code, _, _ = send(
        [
            pb.UploadChunk(
                upload_id="e" * 32, offset=0, data=b"x", total_size=1 << 40, total_sha256=sha
            )
        ]
    )
    assert (status, code) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "E_TOO_LARGE")
    # complete but wrong hash
    status, code, _, _ = send(
        [
            pb.UploadChunk(
                upload_id="f" * 32, offset=0, data=sealed[:1000], total_size=1000, total_sha256=sha
            )
        ]
    )
    assert (status, code) == (grpc.StatusCode.FAILED_PRECONDITION, "E_UPLOAD_HASH")
    # a sealed package with one flipped byte: HPKE refuses it
    bad = bytearray(sealed)
    bad[-10] ^= 1
    bad = bytes(bad)
    step = 64 * 1024
    status, code, _, _ = send(
        [
            pb.UploadChunk(
                upload_id="9" * 32,
                offset=o,
                data=bad[o : o + step],
                total_size=len(bad),
                total_sha256=hashlib.sha256(bad).digest(),
            )
            for o in range(0, len(bad), step)
        ]
    )
    assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "E_ENVELOPE_OPEN")
    channel.close()
    assert srv.runtime.store.size() == size


def test_checkpoint_and_proofs_show_the_log_only_grows(fed, srv, tmp_path):
    state = StateDir(tmp_path / "state").ensure()
    with fed.client("st-john", srv.address) as c:
        old_note, old_size = c.get_checkpoint()
        state.write_checkpoint(old_note)
        sealed, _ = fed.make_package("st-john", classes=[2])
        receipt = c.upload(sealed)
        note, _ = c.get_checkpoint()
        advanced = advance_checkpoint(state, c, note)
        new = open_checkpoint(state.read_checkpoint(), c.log_vkey, origin=c.log_origin)
        assert advanced == {"size": new.size, "previous_size": old_size}
        assert new.size > old_size
        hashes, entry = c.get_inclusion_proof(receipt.index, new.size)
        assert entry == receipt.entry
        verify_inclusion(leaf_hash(entry), receipt.index, new.size, hashes, new.root_hash)
        with pytest.raises(AggregatorError) as err:
            c.get_inclusion_proof(new.size, new.size)
        assert (
            err.value.code == "E_PROOF_RANGE"
            and err.value.status == grpc.StatusCode.INVALID_ARGUMENT
        )
        with pytest.raises(AggregatorError) as err:
            c.get_consistency_proof(new.size, new.size + 5)
        assert err.value.code == "E_PROOF_RANGE"


def test_deletion_only_of_own_modules(fed, srv):
    sealed, pkg = fed.make_package("st-mary", classes=[1])
    with fed.client("st-mary", srv.address) as mary, fed.client("st-john", srv.address) as john:
        receipt = mary.upload(sealed, upload_id="7" * 32)
        size = srv.runtime.store.size()
        with pytest.raises(AggregatorError) as err:
            john.request_deletion([receipt.module_id], "not mine")
        assert (
            err.value.code == "E_NOT_OWNER"
            and err.value.status == grpc.StatusCode.PERMISSION_DENIED
        )
        with pytest.raises(AggregatorError) as err:
            mary.request_deletion([receipt.module_id], "")
        assert err.value.code == "E_REASON"
        with pytest.raises(AggregatorError) as err:
            mary.request_deletion(["0" * 32], "unknown")
        assert err.value.code == "E_NOT_FOUND" and err.value.status == grpc.StatusCode.NOT_FOUND
        assert srv.runtime.store.size() == size
        result = mary.request_deletion([receipt.module_id], "consent withdrawn")
        types = [validate_entry(e)["type"] for _, e in result.entries]
        assert types[0] == "module.deletion_requested" and "module.deleted" in types
        assert all(i >= size for i, _ in result.entries)
        assert open_checkpoint(result.checkpoint, fed.log_vkey).size == result.tree_size >= size + 2
        with pytest.raises(AggregatorError) as err:
            mary.request_deletion([receipt.module_id], "again")
        assert err.value.code == "E_MODULE_DELETED"
        # re-sending the deleted module cannot bring it back, under a new or the old upload id
        with pytest.raises(AggregatorError) as err:
            mary.upload(sealed)
        assert err.value.code == "E_MODULE_DELETED"
        with pytest.raises(AggregatorError) as err:
            mary.upload(sealed, upload_id="7" * 32)
        assert err.value.code == "E_MODULE_DELETED"
        assert mary.upload_status("7" * 32).state == pb.UploadStatus.DELETED
    assert srv.runtime.store.get_module(receipt.module_id).status == "deleted"


def test_rate_limit_refuses_with_retry_hint(tmp_path):
    fed = build_federation(tmp_path, calls_per_second=0.5, call_burst=3)
    with (
        fed.serve() as srv,
        fed.client("st-mary", srv.address, retry=RetryPolicy(max_attempts=1)) as c,
    ):
        for _ in range(3):
            c.get_checkpoint()
        with pytest.raises(AggregatorError) as err:
            c.get_checkpoint()
    assert (
        err.value.code == "E_RATE_LIMIT" and err.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    )
    assert "retry in" in err.value.hint


def test_health_service_over_mtls(fed, srv):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel, _ = _raw_stub(fed, "st-john", srv.address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "ffsecure.v1.Aggregator"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_server_deadline_cuts_a_stream_that_stops_sending(tmp_path, caplog):
    """A stream that sends one chunk and then nothing (never closing) is ended by the server at
    ``server.upload_deadline_s``, whatever deadline the client set: it cannot hold a worker for
    ever. The refusal is logged as E_DEADLINE and the received bytes stay staged for a resume."""
    fed = build_federation(tmp_path)
    text = fed.config_path.read_text()
    assert "upload_deadline_s = 60.0" in text
    fed.config_path.write_text(
        text.replace("upload_deadline_s = 60.0", "upload_deadline_s = 1.0", 1)
    )
    sealed, pkg = fed.make_package("st-mary")
    sha = hashlib.sha256(sealed).digest()
    upload_id = "5" * 32
    step = 16 * 1024
    release = threading.Event()

    def stalled():
        yield pb.UploadChunk(
            upload_id=upload_id,
            offset=0,
            data=sealed[:step],
            total_size=len(sealed),
            total_sha256=sha,
        )
        release.wait(30)  # the client stops sending but keeps the stream open

    with fed.serve() as running:
        channel, stub = _raw_stub(fed, "st-mary", running.address)
        t0 = time.monotonic()
        try:
            with caplog.at_level("WARNING", logger="aggregator.refusal"):
                with pytest.raises(grpc.RpcError) as err:
                    stub.UploadModule(stalled(), timeout=20)  # the client would wait 20 s
                elapsed = time.monotonic() - t0
                deadline = time.monotonic() + 10
                while (
                    running.runtime.deps.staging.is_busy("st-mary", upload_id)
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
        finally:
            release.set()
            channel.close()
        assert elapsed < 10, f"the server did not end the stalled stream ({elapsed:.1f} s)"
        assert err.value.code() != grpc.StatusCode.OK
        refusals = [r for r in caplog.records if getattr(r, "event", None) == "refusal"]
        assert (
            refusals and refusals[-1].code == "E_DEADLINE" and refusals[-1].method == "UploadModule"
        )
        assert refusals[-1].peer_identity.endswith("/site/st-mary")
        assert running.runtime.store.size() == START_ENTRIES  # only those of the start
        with fed.client("st-mary", running.address, retry=RetryPolicy(max_attempts=1)) as c:
            status = c.upload_status(upload_id)
            assert status.state == pb.UploadStatus.IN_PROGRESS and status.committed_offset == step
            receipt = c.upload(
                sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id="st-mary"
            )
            assert c.last_upload.resumed_from == [step] and receipt.index == START_ENTRIES


def test_receiving_an_upload_streams_it_to_disk_not_to_memory(fed, srv):
    """The receive path (chunks -> staging file -> SHA-256) holds a bounded buffer, not the upload.

    A 12 MiB upload whose announced hash is wrong is received, staged, hashed and refused
    (E_UPLOAD_HASH) by the in-process server while tracemalloc follows every Python allocation
    of client and server: the peak must stay a small fraction of the upload. (Verification of a
    complete package holds it whole; docs/threat-model.md names that limit.)"""
    import os
    import tracemalloc

    size, step = 12 << 20, 64 * 1024
    block = os.urandom(step)
    upload_id = os.urandom(16).hex()
    channel, stub = _raw_stub(fed, "st-john", srv.address)

    def stream():
        for off in range(0, size, step):
            yield pb.UploadChunk(
                upload_id=upload_id,
                offset=off,
                data=block,
                total_size=size,
                total_sha256=b"\0" * 32,
            )

    before = srv.runtime.store.size()
    tracemalloc.start()
    try:
        with pytest.raises(grpc.RpcError) as err:
            stub.UploadModule(stream(), timeout=120)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        channel.close()
    assert dict(err.value.trailing_metadata())["ffsecure-error-code"] == "E_UPLOAD_HASH"
    assert srv.runtime.deps.staging.status("st-john", upload_id) is None  # discarded
    assert srv.runtime.store.size() == before
    assert peak < size // 3, (
        f"peak Python memory {peak / 2**20:.1f} MiB while receiving {size >> 20} MiB"
    )
    print(f"peak traced memory while receiving {size >> 20} MiB: {peak / 2**20:.2f} MiB")


def _concurrent_completions_peak(tmp_path, verifications: int, n: int = 6):
    """``n`` sites finish a ~3.3 MB upload at the same moment; returns (receipts, entries added,
    tracemalloc peak, module size). Every byte but the last chunk is staged first, so the traced
    peak is the completion (open + verify + register), not the receive path."""
    import tracemalloc

    sites = [f"site-{i}" for i in range(n)]
    fed = build_federation(tmp_path, sites=sites, generator_size="default", image_shape=(1, 28, 28))
    text = fed.config_path.read_text()
    fed.config_path.write_text(
        text.replace(
            "upload_deadline_s = 60.0",
            f"upload_deadline_s = 60.0\nmax_concurrent_verifications = {verifications}",
            1,
        )
    )
    step = 64 * 1024
    packages = {s: fed.make_package(s)[0] for s in sites}
    size = len(packages[sites[0]])
    with fed.serve() as running:
        stubs = {s: _raw_stub(fed, s, running.address) for s in sites}

        def chunks(site, start, stop):
            sealed = packages[site]
            sha = hashlib.sha256(sealed).digest()
            for off in range(start, stop, step):
                yield pb.UploadChunk(
                    upload_id=f"{sites.index(site) + 1:032x}",
                    offset=off,
                    data=sealed[off : min(off + step, stop)],
                    total_size=len(sealed),
                    total_sha256=sha,
                )

        last = {s: (len(packages[s]) - 1) // step * step for s in sites}
        for s in sites:  # stage all but the last chunk (the stream ends early: E_UPLOAD_INCOMPLETE)
            with pytest.raises(grpc.RpcError) as err:
                stubs[s][1].UploadModule(chunks(s, 0, last[s]), timeout=60)
            assert (
                dict(err.value.trailing_metadata())["ffsecure-error-code"] == "E_UPLOAD_INCOMPLETE"
            )
        barrier, receipts = threading.Barrier(n), []

        def finish(site):
            requests = list(chunks(site, last[site], len(packages[site])))
            barrier.wait(30)
            receipts.append(stubs[site][1].UploadModule(iter(requests), timeout=120))

        threads = [threading.Thread(target=finish, args=(s,)) for s in sites]
        tracemalloc.start()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(180)
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            for channel, _stub in stubs.values():
                channel.close()
        return len(receipts), running.runtime.store.size() - START_ENTRIES, peak, size


def test_concurrent_completions_are_verified_within_the_memory_bound(tmp_path):
    """Six sites complete an upload at once; with ``server.max_concurrent_verifications = 1`` the
    server opens and verifies one package at a time (each held whole: single-shot AEAD), so the
    traced peak is about one verification's, not six. Measured with 3.3 MiB modules: ~4x the module
    size with the bound, ~18x with 6 verifications at once (this assertion then fails)."""
    count, stored, peak, size = _concurrent_completions_peak(tmp_path, verifications=1)
    print(
        f"peak traced memory, 6 completions of {size / 2**20:.1f} MiB, 1 verification at a time: "
        f"{peak / 2**20:.1f} MiB"
    )
    assert count == 6 and stored == 6
    assert peak < 8 * size, (
        f"peak {peak / 2**20:.1f} MiB for 6 completions of {size / 2**20:.1f} MiB"
    )
