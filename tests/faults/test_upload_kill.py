"""SIGKILL the aggregator at random moments while many sites upload at once.

A real ``aggregator serve`` process (mTLS, HPKE, SQLite store, Merkle log)
receives one module from each of N sites, all started together. A killer
thread sends SIGKILL at random moments while uploads are still in flight (after a
random number of acknowledged uploads, plus jitter) and
restarts the server from the same home each time; the sites keep retrying
with the same upload id (resuming at the committed offset) until they hold a
verified receipt. Afterwards, offline:

* every site completed, and every acknowledged module (receipt) is in the
  store, its blob decrypts to the weights the manifest hashes, its
  ``module.registered`` entry is the one in the receipt, and the log at the
  receipt's checkpoint is a prefix of today's log (consistency proof);
* nothing else is there: one ``module.registered`` entry per module, no
  module without an acknowledgement, no stray blob, no staged upload left
  holding bytes (``verify_integrity``);
* an exported bundle verifies offline.

Default: 10 uploads, 2 kills, on SQLite. Slow: 100 uploads, 10 kills, on
SQLite, and 6 then 100 uploads on PostgreSQL (a server the test session starts,
tests/pg_fixture.py; the default run kills a PostgreSQL writer in
tests/faults/test_store_kill.py and runs two servers in test_store_fork.py).
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
import time

import pytest

from aggregator.export import write_bundle
from aggregator.store import open_home_store
from ffsecure.ledger import (
    leaf_hash,
    open_checkpoint,
    verify_bundle_log,
    verify_consistency,
    verify_inclusion,
)
from site_node.client import AggregatorError, RetryPolicy
from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port
from tests.federation_fixture import START_ENTRIES, build_federation
from tests.pg_fixture import use_postgres

RETRY_CODES = {
    "E_RPC_UNAVAILABLE",
    "E_RPC_DEADLINE_EXCEEDED",
    "E_RPC_ABORTED",
    "E_RPC_CANCELLED",
    "E_RPC_UNKNOWN",
    "E_RPC_INTERNAL",
    "E_UPLOAD_BUSY",
    "E_RATE_LIMIT",
    "E_SHUTTING_DOWN",
}


def _kill_run(
    tmp_path,
    *,
    n_uploads: int,
    kills: int,
    seed: int,
    deadline_s: float,
    dsn: str | None = None,
) -> dict:
    """``dsn``: run ``serve`` on the PostgreSQL store of that database instead of SQLite."""
    rng = random.Random(seed)
    sites = [f"s{i:03d}" for i in range(n_uploads)]
    # 3x64x64 tiny cvae: ~2 MB per sealed module, so that a kill lands mid-stream
    fed = build_federation(
        tmp_path / "fed",
        sites=sites,
        image_shape=(3, 64, 64),
        labels=[f"c{i}" for i in range(10)],
        chunk_bytes=64 * 1024,
        commit_every_bytes=256 * 1024,
        max_workers=16,
        calls_per_second=500.0,
        call_burst=1000,
        uploads_per_minute=6000.0,
        upload_burst=1000,
    )
    if dsn is not None:
        use_postgres(fed.config_path, dsn)
    address = pin_port(fed.config_path, free_port())
    packages = {s: fed.make_package(s, classes=[i % 10], seed=i) for i, s in enumerate(sites)}
    acked: dict[str, object] = {}
    failed: dict[str, str] = {}
    attempts: dict[str, int] = {}
    lock = threading.Lock()
    start = threading.Event()
    stop_at = time.monotonic() + deadline_s

    def site_worker(site: str, wrng: random.Random) -> None:
        sealed, pkg = packages[site]
        upload_id = secrets.token_hex(16)
        start.wait()
        time.sleep(wrng.uniform(0.0, 1.5))  # staggered starts: completions spread over time
        n = 0
        while time.monotonic() < stop_at:
            n += 1
            try:
                with fed.client(
                    site,
                    address,
                    retry=RetryPolicy(max_attempts=2, base_delay_s=0.05, max_delay_s=0.5, rng=wrng),
                    timeout_s=10,
                    upload_timeout_s=60,
                ) as c:
                    receipt = c.upload(
                        sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id=site
                    )
                with lock:
                    acked[site] = receipt
                    attempts[site] = n
                return
            except AggregatorError as exc:
                if exc.code not in RETRY_CODES:
                    with lock:
                        failed[site] = f"{exc.code}: {exc.message}"
                    return
                time.sleep(wrng.uniform(0.05, 0.4))
        with lock:
            failed[site] = "deadline"

    server = AggregatorProcess(fed.config_path, tmp_path / "serve.log")
    kill_log: list[dict] = []
    with server:
        threads = [
            threading.Thread(target=site_worker, args=(s, random.Random(rng.random())), daemon=True)
            for s in sites
        ]
        for t in threads:
            t.start()
        start.set()
        t0 = time.monotonic()
        # Kill points spread over the run: after a random number of acknowledged uploads, plus
        # jitter, so that kills land in every phase (transfer, hashing, verification,
        # registration, reply).
        # (thresholds leave uploads outstanding, so that every kill lands while some are in flight)
        thresholds = sorted(rng.sample(range(0, max(kills, n_uploads - 2 * kills)), kills))
        # A kill also comes after a random budget scaled by how long a restart takes (slow, loaded
        # machines), or just before the last uploads would finish (fast machines), whichever
        # is first.
        restart_s = 1.0
        for k, threshold in enumerate(thresholds):
            budget = time.monotonic() + 0.2 + restart_s * rng.uniform(0.5, 3.0)
            kills_left = kills - k
            while time.monotonic() < min(stop_at, budget):
                with lock:
                    outstanding = n_uploads - len(acked) - len(failed)
                    if len(acked) >= threshold or outstanding <= kills_left + 1:
                        break
                time.sleep(0.005)
            with lock:
                in_flight = n_uploads - len(acked) - len(failed)
                done = len(acked)
            if in_flight == 0 or time.monotonic() >= stop_at:
                break
            server.kill()
            kill_log.append(
                {
                    "at_s": round(time.monotonic() - t0, 3),
                    "acked_before": done,
                    "in_flight": in_flight,
                }
            )
            t_restart = time.monotonic()
            server.start()
            restart_s = time.monotonic() - t_restart
        for t in threads:
            t.join(max(1.0, stop_at - time.monotonic()))
        assert server.stop() == 0, server.log_tail()

    assert not failed, f"sites that did not complete: {failed}"
    _check_store(fed, packages, acked, tmp_path)
    assert len(kill_log) == kills, (
        f"only {len(kill_log)} kills landed while uploads were in flight: {kill_log}"
    )
    return {
        "kills": kill_log,
        "acknowledged": len(acked),
        "lost": 0,
        "retried_sites": sum(1 for v in attempts.values() if v > 1),
    }


def _check_store(fed, packages, acked, tmp_path) -> None:
    store = open_home_store(fed.home)
    try:
        summary = store.verify_integrity()  # store and log agree; blobs decrypt; no stray blob
        size = store.size()
        final_root = store.root_hash(size)
        final = open_checkpoint(
            store.checkpoint(), fed.log_vkey, origin=fed.manifest.aggregator["log_origin"]
        )
        assert final.size == size and final.root_hash == final_root
        modules = {m.module_id: m for m in store.list_modules()}
        # exactly the acknowledged modules, each once
        assert (
            set(modules)
            == {r.module_id for r in acked.values()}
            == {p.manifest.module_id for _s, p in packages.values()}
        )
        registered = [i for i in range(size) if b'"type":"module.registered"' in store.entry(i)]
        assert len(registered) == len(modules) == summary.get("modules", len(modules))
        for site, receipt in acked.items():
            _sealed, pkg = packages[site]
            row = modules[receipt.module_id]
            assert row.site_id == site and row.status == "active"
            assert store.entry(receipt.index) == receipt.entry
            weights = store.module_weights(receipt.module_id)
            assert hashlib.sha256(weights).hexdigest() == pkg.manifest.weights_sha256
            # the receipt's view of the log is a prefix of today's
            cp = open_checkpoint(
                receipt.checkpoint, fed.log_vkey, origin=fed.manifest.aggregator["log_origin"]
            )
            verify_inclusion(
                leaf_hash(receipt.entry),
                receipt.index,
                cp.size,
                receipt.inclusion_proof,
                cp.root_hash,
            )
            if cp.size < size:
                verify_consistency(
                    cp.size, size, cp.root_hash, final_root, store.consistency_proof(cp.size, size)
                )
            else:
                assert cp.root_hash == final_root
        bundle = write_bundle(
            store.snapshot(), tmp_path / "bundle", ca_cert_pem=fed.ca_pem, crl_pem=fed.ca.crl_pem()
        )
        assert verify_bundle_log(bundle).size == size
    finally:
        store.close()
    # no staged upload holds bytes: every upload ended registered
    leftovers = [p for p in (fed.home.root / "uploads").rglob("data")]
    assert not leftovers, leftovers


def test_sigkill_during_concurrent_uploads_loses_nothing(tmp_path):
    result = _kill_run(tmp_path, n_uploads=10, kills=2, seed=1123, deadline_s=150)
    assert result["acknowledged"] == 10
    print("fault run:", result)


@pytest.mark.slow
def test_sigkill_during_100_concurrent_uploads_loses_nothing(tmp_path):
    result = _kill_run(tmp_path, n_uploads=100, kills=10, seed=20261123, deadline_s=540)
    assert result["acknowledged"] == 100
    print("fault run:", result)


@pytest.mark.slow
def test_sigkill_during_concurrent_uploads_loses_nothing_on_postgres(tmp_path, pg_dsn):
    result = _kill_run(tmp_path, n_uploads=6, kills=2, seed=2411, deadline_s=150, dsn=pg_dsn)
    assert result["acknowledged"] == 6
    print("fault run (postgres):", result)


@pytest.mark.slow
def test_sigkill_during_100_concurrent_uploads_loses_nothing_on_postgres(tmp_path, pg_dsn):
    result = _kill_run(tmp_path, n_uploads=100, kills=10, seed=20261124, deadline_s=540, dsn=pg_dsn)
    assert result["acknowledged"] == 100
    print("fault run (postgres):", result)


def test_upload_complete_on_disk_but_unregistered_is_finished_after_restart(tmp_path):
    """The window a kill can hit between the last committed byte and the registration.

    All bytes are durable (committed offset == total size) but the server died
    before registering: no stream can resume it (nothing is left to send), so
    ``GetUploadStatus`` finishes it and the site gets its receipt.
    """
    fed = build_federation(tmp_path / "fed")
    sealed, pkg = fed.make_package("st-mary")
    upload_id = secrets.token_hex(16)
    with fed.serve() as srv:
        staging = srv.runtime.deps.staging
        with staging.open(
            "st-mary",
            upload_id,
            total_size=len(sealed),
            total_sha256=hashlib.sha256(sealed).digest(),
        ) as staged:
            staged.write(
                0, sealed
            )  # then the "crash": closed with every byte committed, nothing registered
        state = staging.status("st-mary", upload_id)
        assert state.committed_offset == len(sealed) and not state.registered
        assert srv.runtime.store.size() == START_ENTRIES  # only those of the start
        with fed.client("st-mary", srv.address, retry=RetryPolicy(max_attempts=1)) as c:
            receipt = c.upload(
                sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id="st-mary"
            )
            assert receipt.index == START_ENTRIES and srv.runtime.store.size() == START_ENTRIES + 1
            assert staging.status("st-mary", upload_id).registered
            # and again: the same receipt, nothing added
            again = c.upload(
                sealed, upload_id=upload_id, module_id=pkg.manifest.module_id, site_id="st-mary"
            )
            assert again.index == START_ENTRIES and again.existing
            assert srv.runtime.store.size() == START_ENTRIES + 1


def test_staged_bytes_left_by_a_crash_after_registration_are_removed_at_start(tmp_path):
    """A kill between recording ``module_id`` in state.json and unlinking ``data`` leaves the bytes;
    the next start removes them (the upload stays registered)."""
    from aggregator.uploads import UploadStaging

    staging = UploadStaging(tmp_path / "uploads", max_upload_bytes=1 << 20)
    upload_id = secrets.token_hex(16)
    blob = b"x" * 1000
    with staging.open(
        "st-mary", upload_id, total_size=len(blob), total_sha256=hashlib.sha256(blob).digest()
    ) as st:
        st.write(0, blob)
        st.commit()
        st.state.module_id = "0" * 32  # as mark_registered records it, before it unlinks the data
        from aggregator.uploads import _write_state

        _write_state(st.directory, st.state)
    data = tmp_path / "uploads" / "st-mary" / upload_id / "data"
    assert data.exists()
    assert staging.cleanup_stale() == 0
    assert not data.exists() and staging.status("st-mary", upload_id).registered
