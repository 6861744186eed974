"""Disk full on the aggregator: a clear typed error, nothing corrupted, and recovery once space is
back.

The aggregator's ``blobs/`` (or its upload staging area) is a small tmpfs
mounted for the test (we run as root in CI; without mount rights the test
is skipped with the reason; the slow
``test_file_size_limit_on_the_aggregator_process_refuses_cleanly`` needs no
mount: it caps RLIMIT_FSIZE of a real ``aggregator serve`` process). Uploads go over real mTLS to an
in-process aggregator; the site sees ``E_DISK_FULL`` (``RESOURCE_EXHAUSTED``) from the error
details, the ledger and module table do not change, no partial blob or temp file is left,
``verify_integrity`` passes, earlier modules still decrypt, and after the file system grows the same
upload completes.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import subprocess
from pathlib import Path

import grpc
import pytest

from site_node.client import RetryPolicy
from tests.federation_fixture import START_ENTRIES, build_federation
from tests.security.forge import Refusal, chunks, send

NO_RETRY = RetryPolicy(max_attempts=1)


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({r.stderr.strip()}); the disk-full test needs mount rights"
        )
    try:
        yield lambda new_size: subprocess.run(
            ["mount", "-o", f"remount,size={new_size}", str(path)], check=True
        )
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _fed(tmp_path):
    # 3x64x64 tiny cvae: ~2 MB of weights per module
    return build_federation(
        tmp_path / "fed",
        image_shape=(3, 64, 64),
        labels=[f"c{i}" for i in range(10)],
        chunk_bytes=256 * 1024,
        commit_every_bytes=256 * 1024,
    )


def _state(srv) -> tuple:
    store = srv.runtime.store
    with srv.runtime.deps.store_lock:
        size = store.size()
        return (
            size,
            store.root_hash(size) if size else b"",
            sorted(m.module_id for m in store.list_modules()),
        )


def test_blob_store_full_refuses_cleanly_and_recovers(tmp_path, caplog):
    fed = _fed(tmp_path)
    with small_tmpfs(fed.home.blobs, "3m") as resize, fed.serve() as srv:
        first, p1 = fed.make_package("st-mary", classes=[0])
        second, p2 = fed.make_package("st-mary", classes=[1], seed=1)
        with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
            r1 = c.upload(first, module_id=p1.manifest.module_id, site_id="st-mary")
            before = _state(srv)
            blobs_before = sorted(p.name for p in fed.home.blobs.iterdir())
            upload_id = secrets.token_hex(16)
            with caplog.at_level("WARNING", logger="aggregator.refusal"):
                got = send(c.stub, chunks(second, upload_id=upload_id, chunk_bytes=256 * 1024))
            assert isinstance(got, Refusal) and got.code == "E_DISK_FULL", got
            assert (
                got.status == grpc.StatusCode.RESOURCE_EXHAUSTED
                and "disk" in got.message
                and got.hint
            )
            assert any(getattr(r, "code", None) == "E_DISK_FULL" for r in caplog.records)
            # nothing changed, nothing half-written
            assert _state(srv) == before
            assert sorted(p.name for p in fed.home.blobs.iterdir()) == blobs_before
            with srv.runtime.deps.store_lock:
                srv.runtime.store.verify_integrity()
                w = srv.runtime.store.module_weights(r1.module_id)
            assert hashlib.sha256(w).hexdigest() == p1.manifest.weights_sha256
            # space comes back: the same module registers (a refused package's staged bytes were
            # dropped, so the site sends it again)
            resize("64m")
            r2 = c.upload(second, module_id=p2.manifest.module_id, site_id="st-mary")
            assert r2.index == before[0] and not r2.existing
            with srv.runtime.deps.store_lock:
                srv.runtime.store.verify_integrity()


def test_staging_area_full_keeps_the_committed_prefix_and_resumes(tmp_path, caplog):
    fed = _fed(tmp_path)
    uploads = fed.home.root / "uploads"
    with small_tmpfs(uploads, "1m") as resize, fed.serve() as srv:
        sealed, pkg = fed.make_package("st-mary", classes=[2])
        upload_id = secrets.token_hex(16)
        with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
            with caplog.at_level("WARNING", logger="aggregator.refusal"):
                got = send(c.stub, chunks(sealed, upload_id=upload_id, chunk_bytes=256 * 1024))
            assert isinstance(got, Refusal) and got.code == "E_DISK_FULL", got
            assert got.status == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert srv.runtime.store.size() == START_ENTRIES  # only those of the start
            state = srv.runtime.deps.staging.status("st-mary", upload_id)
            # the durable prefix is what the state says, and the data file holds exactly that
            assert (
                state is not None
                and 0 < state.committed_offset < len(sealed)
                and not state.registered
            )
            data = uploads / "st-mary" / upload_id / "data"
            assert data.stat().st_size == state.committed_offset
            assert data.read_bytes() == sealed[: state.committed_offset]
            resize("64m")
            receipt = c.upload(
                sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id="st-mary"
            )
            assert receipt.index == START_ENTRIES
            assert c.last_upload.resumed_from == [state.committed_offset]
            assert srv.runtime.store.size() == START_ENTRIES + 1


def test_disk_full_is_not_an_internal_error():
    import errno

    from aggregator.registration import DiskFullError, disk_error

    err = disk_error(OSError(errno.ENOSPC, "No space left on device"), "storing the module")
    assert isinstance(err, DiskFullError) and err.code == "E_DISK_FULL" and err.hint
    other = disk_error(OSError(errno.EIO, "I/O error"), "storing the module")
    assert other.code == "E_STORE" and "I/O error" in other.message


@pytest.mark.slow
def test_file_size_limit_on_the_aggregator_process_refuses_cleanly(tmp_path):
    """Without mount rights: RLIMIT_FSIZE on a real ``aggregator serve`` process (Python ignores
    SIGXFSZ, so writes past the limit fail with EFBIG) gives the same typed refusal."""
    import resource

    from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port

    fed = _fed(tmp_path)
    address = pin_port(fed.config_path, free_port())
    sealed, pkg = fed.make_package("st-mary", classes=[3])
    limit = len(sealed) // 2

    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with AggregatorProcess(
        fed.config_path, tmp_path / "serve.log", preexec=cap_file_size
    ) as server:
        upload_id = secrets.token_hex(16)
        with fed.client("st-mary", address, retry=NO_RETRY) as c:
            got = send(c.stub, chunks(sealed, upload_id=upload_id, chunk_bytes=256 * 1024))
            assert isinstance(got, Refusal) and got.code == "E_DISK_FULL", got
            assert got.status == grpc.StatusCode.RESOURCE_EXHAUSTED
            status = c.upload_status(upload_id)
            assert 0 < status.committed_offset <= limit and status.state == status.IN_PROGRESS
            _note, size = c.get_checkpoint()
            assert size == START_ENTRIES  # only those of the start
        assert server.proc.poll() is None, "the aggregator must survive a failed write"
        assert server.stop() == 0
    assert "E_DISK_FULL" in server.log_tail(20000)  # the refusal is in the server's log
