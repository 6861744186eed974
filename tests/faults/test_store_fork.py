"""Two ``aggregator serve`` processes on one PostgreSQL database never fork the log.

Two real servers (mTLS, HPKE, the PostgreSQL store) run from two copies of one
aggregator home, as two machines behind one address would, each on its own
port and sharing one database. Sites upload at once, each to either server.
Afterwards, offline, the log is one chain:

* every index holds one entry (``entries.idx`` is the primary key) and the
  entries are exactly one ``module.registered`` per acknowledged upload and
  the ``federation.loaded`` and ``crl.loaded`` of the server starts (a start
  that finds its manifest or CRL already recorded appends none), nothing else;
* every receipt, from either server, is included in today's log at its index
  with its entry bytes, and its signed checkpoint is a prefix of today's log
  (consistency proof): a fork would leave some receipt's checkpoint with a
  root no consistency proof reaches;
* ``verify_integrity`` passes and an exported bundle verifies offline.

Default: 6 sites. Slow: 40 sites, and one server is SIGKILLed and restarted
mid-run.
"""

from __future__ import annotations

import random
import secrets
import shutil
import threading
import time

import pytest

from aggregator.home import AggregatorHome
from site_node.client import AggregatorError, RetryPolicy
from tests.faults.aggregator_proc import AggregatorProcess, free_port, pin_port
from tests.faults.test_upload_kill import RETRY_CODES, _check_store
from tests.federation_fixture import build_federation
from tests.pg_fixture import use_postgres


def _second_home(fed, tmp_path) -> AggregatorHome:
    """A copy of the aggregator home (keys, certificates, config) for the second server."""
    second = tmp_path / "aggregator-2"
    shutil.copytree(fed.home.root, second, symlinks=False)
    shutil.rmtree(second / "uploads", ignore_errors=True)
    (second / "serve.port").unlink(missing_ok=True)
    return AggregatorHome.at(second)


def _fork_run(tmp_path, pg_dsn: str, *, n_sites: int, seed: int, kill_one: bool) -> dict:
    rng = random.Random(seed)
    sites = [f"s{i:03d}" for i in range(n_sites)]
    fed = build_federation(
        tmp_path / "fed",
        sites=sites,
        calls_per_second=500.0,
        call_burst=1000,
        uploads_per_minute=6000.0,
        upload_burst=1000,
    )
    use_postgres(fed.config_path, pg_dsn)
    second = _second_home(fed, tmp_path)
    addresses = [pin_port(fed.config_path, free_port()), pin_port(second.config, free_port())]
    packages = {s: fed.make_package(s, classes=[i % 4], seed=i) for i, s in enumerate(sites)}
    acked: dict[str, object] = {}
    failed: dict[str, str] = {}
    lock = threading.Lock()
    start = threading.Event()
    stop_at = time.monotonic() + 240

    def site_worker(site: str, wrng: random.Random) -> None:
        sealed, pkg = packages[site]
        upload_id = secrets.token_hex(16)
        start.wait()
        while time.monotonic() < stop_at:
            address = wrng.choice(addresses)  # behind one name, either server may answer
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
                return
            except AggregatorError as exc:
                if exc.code not in RETRY_CODES:
                    with lock:
                        failed[site] = f"{exc.code}: {exc.message}"
                    return
                time.sleep(wrng.uniform(0.05, 0.3))
        with lock:
            failed[site] = "deadline"

    servers = [
        AggregatorProcess(fed.config_path, tmp_path / "serve-1.log"),
        AggregatorProcess(second.config, tmp_path / "serve-2.log"),
    ]
    threads = [
        threading.Thread(target=site_worker, args=(s, random.Random(rng.random())), daemon=True)
        for s in sites
    ]
    with servers[0], servers[1]:
        for t in threads:
            t.start()
        start.set()
        if kill_one:
            while len(acked) < n_sites // 3 and time.monotonic() < stop_at:
                time.sleep(0.01)
            servers[1].kill()
            servers[1].start()
        for t in threads:
            t.join(max(1.0, stop_at - time.monotonic()))
        assert [s.stop() for s in servers] == [0, 0], servers[1].log_tail()

    assert not failed, f"sites that did not complete: {failed}"
    _check_store(fed, packages, acked, tmp_path)  # one chain: every receipt a prefix of it
    return _count_entries(fed, acked, starts=sum(s.starts for s in servers))


def _count_entries(fed, acked: dict, *, starts: int) -> dict:
    from aggregator.store import open_home_store

    with open_home_store(fed.home) as store:
        types = [store.entry(i).split(b'"type":"')[1].split(b'"')[0] for i in range(store.size())]
    assert types.count(b"module.registered") == len(acked)
    started = types.count(b"federation.loaded") + types.count(b"crl.loaded")
    assert 1 <= types.count(b"federation.loaded") <= starts and types[0] == b"federation.loaded"
    assert 1 <= types.count(b"crl.loaded") <= starts
    assert len(types) == len(acked) + started, "an entry nothing explains"
    by_server = {r.index for r in acked.values()}
    assert len(by_server) == len(acked), "two receipts name one index"
    return {"acknowledged": len(acked), "entries": len(types), "forks": 0, "starts": starts}


def test_two_servers_on_one_database_never_fork_the_log(tmp_path, pg_dsn):
    result = _fork_run(tmp_path, pg_dsn, n_sites=6, seed=24, kill_one=False)
    assert result["acknowledged"] == 6
    print("two servers:", result)


@pytest.mark.slow
def test_two_servers_under_load_and_a_kill_never_fork_the_log(tmp_path, pg_dsn):
    result = _fork_run(tmp_path, pg_dsn, n_sites=40, seed=2424, kill_one=True)
    assert result["acknowledged"] == 40
    print("two servers, one killed:", result)
