"""Crash safety of the store: SIGKILL a real writer process at random points.

A child process registers modules (encrypted blob + row + entry + Merkle
nodes + checkpoint), appends plain events and deletes modules, printing the
log size after every commit. The parent kills it with SIGKILL at a random
moment, then reopens the store and checks that store and ledger agree
(``verify_integrity``: no module without its entry, no entry without its
module, deleted modules fully shredded, no stray blob, every node and
checkpoint right), that nothing acknowledged was lost, and that an exported
bundle verifies offline. The default run kills 5 times; the slow run kills
until 1,000 entries are written. Both run on SQLite and on PostgreSQL (a
server the test session starts, tests/pg_fixture.py), where the writer's
transactions commit before it prints a size.
"""

from __future__ import annotations

import random
import selectors
import signal
import subprocess
import sys
import time

import pytest

from aggregator.export import write_bundle
from aggregator.store import open_home_store
from ffsecure.ledger import verify_bundle_log
from tests.conftest import cli_env
from tests.pg_fixture import use_postgres

ORIGIN = "ffsecure.local/fault/log"

WORKER = f"ORIGIN = {ORIGIN!r}\n" + (
    r"""
import hashlib, random, secrets, sys
from aggregator.store import open_home_store
from ffsecure import canonical
from ffsecure.ledger import make_entry

home, target, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
store = open_home_store(home, origin=ORIGIN, create=True)
print("ready", store.size(), flush=True)
while store.size() < target:
    op = rng.random()
    active = [m.module_id for m in store.list_modules("active")] if op >= 0.85 else []
    if op < 0.7:
        mid = secrets.token_hex(16)
        weights = secrets.token_bytes(rng.randrange(1000, 60000))
        manifest = canonical.dumps({"module_id": mid, "site_id": "s1",
                                    "weights_sha256": hashlib.sha256(weights).hexdigest()})
        entry = make_entry("module.registered", "site:s1", {
            "module_id": mid, "site_id": "s1",
            "manifest_sha256": hashlib.sha256(manifest).hexdigest(),
            "weights_sha256": hashlib.sha256(weights).hexdigest()})
        store.register_module(module_id=mid, site_id="s1", manifest_bytes=manifest,
                              package_meta=canonical.dumps({"signature": "x"}),
                              weights=weights, entry=entry)
    elif op < 0.85 or not active:
        revoked = {"serial": secrets.token_hex(4), "reason": "t"}
        store.append(make_entry("cert.revoked", "operator:ops", revoked))
    else:
        store.delete_module(rng.choice(active), actor="operator:ops", reason="fault test")
    print("size", store.size(), flush=True)
print("done", store.size(), flush=True)
"""
)


def _run_until_killed(home, target: int, seed: int, rng: random.Random) -> tuple[int, bool]:
    """Start a writer, kill it at a random moment; returns (last acknowledged size, finished)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(home), str(target), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=cli_env(),
        text=True,
    )
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    acked, kill_at, finished = 0, None, False
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            if kill_at is not None and time.monotonic() >= kill_at:
                break
            timeout = 0.05 if kill_at is None else max(0.0, kill_at - time.monotonic())
            if not sel.select(timeout=timeout):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            word, value = line.split()
            acked = int(value)
            if word == "ready":
                kill_at = time.monotonic() + rng.uniform(0.0, 0.8)
            elif word == "done":
                finished = True
                break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        sel.close()
    if not finished and proc.returncode not in (-signal.SIGKILL, 0):
        raise AssertionError(f"writer failed on its own: {proc.stderr.read()[-2000:]}")
    proc.stdout.close()
    proc.stderr.close()
    return acked, finished


def _check(home, acked: int, tmp_path, round_no: int) -> int:
    store = open_home_store(home)
    try:
        summary = store.verify_integrity()
        assert summary["entries"] >= acked, "an acknowledged write was lost"
        bundle = write_bundle(
            store.snapshot(),
            tmp_path / f"bundle-{round_no}",
            ca_cert_pem=b"-----BEGIN CERTIFICATE-----\n",
            crl_pem=None,
        )
        report = verify_bundle_log(bundle)
        assert report.size == summary["entries"]
        return summary["entries"]
    finally:
        store.close()


def _kill_loop(
    tmp_path, *, kills: int | None, target: int, seed: int, dsn: str | None = None
) -> dict:
    """``dsn``: the writer's home uses the PostgreSQL store of that database."""
    rng = random.Random(seed)
    home = tmp_path / "agg"
    if dsn is not None:
        home.mkdir(mode=0o700)
        use_postgres(home / "aggregator.toml", dsn)
    done_kills, size, finished, rounds = 0, 0, False, 0
    while not finished and (kills is None or done_kills < kills):
        acked, finished = _run_until_killed(home, target, rng.randrange(1 << 30), rng)
        done_kills += 0 if finished else 1
        rounds += 1
        new_size = _check(home, acked, tmp_path, rounds)
        assert new_size >= size
        size = new_size
    assert done_kills >= 1
    if kills is None:
        assert finished and size >= target
    return {"kills": done_kills, "restarts_checked": rounds, "entries": size, "finished": finished}


def test_sigkill_during_writes_keeps_store_and_ledger_in_agreement(tmp_path):
    _kill_loop(tmp_path, kills=5, target=10_000, seed=20261122)


@pytest.mark.slow
def test_sigkill_while_writing_1000_entries(tmp_path):
    _kill_loop(tmp_path, kills=None, target=1000, seed=7)


def test_sigkill_during_writes_keeps_a_postgres_store_and_ledger_in_agreement(tmp_path, pg_dsn):
    _kill_loop(tmp_path, kills=5, target=10_000, seed=20261206, dsn=pg_dsn)


@pytest.mark.slow
def test_sigkill_while_writing_1000_entries_to_postgres(tmp_path, pg_dsn):
    _kill_loop(tmp_path, kills=None, target=1000, seed=8, dsn=pg_dsn)
