"""A site's DP budget covers all its modules: a second release of the same data is not free.

The federation's ``dp_policy.max_epsilon`` bounds what a site's data may leak. Each module
is a release of that data; k modules at epsilon E each leak more than E (and deleting a
module does not take back what it released). A real aggregator (`fed.serve()`: gRPC on
loopback with real certificates, SQLite store) receives modules that each meet the policy
alone; the composition of a site's modules must meet it too, also when two ``aggregator
serve`` processes share one store (a real PostgreSQL server, or one SQLite file) and the
site sends one module to each at once.
"""

from __future__ import annotations

import threading

import pytest

from aggregator.home import load_kek, load_log_key
from aggregator.store import PostgresStore, SQLiteStore, open_home_store
from ffsecure import dp
from ffsecure.errors import FFSecureError
from site_node.client import RetryPolicy
from tests.federation_fixture import build_federation
from tests.ops_fixture import peer, registrar
from tests.pg_fixture import use_postgres
from tests.security import forge
from tests.security.forge import Refusal, chunks, send

NO_RETRY = RetryPolicy(max_attempts=1)
POLICY = {"required": True, "max_epsilon": 5.0, "delta": 1e-5}
#: DP-SGD parameters that spend epsilon 3.70 alone (RDP), 4.86 twice, 5.85 three times.
PARAMS = {
    "delta": 1e-5,
    "accountant": "rdp",
    "noise_multiplier": 0.8,
    "sample_rate": 0.01,
    "steps": 1000,
}
CLAIM = {"epsilon": 3.7, **PARAMS}


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    f = build_federation(tmp_path_factory.mktemp("dp-budget"))
    forge.require_dp(f, POLICY)
    return f


@pytest.fixture(scope="module")
def srv(fed):
    with fed.serve() as running:
        yield running


def _upload(fed, srv, site: str, seed: int, dp: dict | None = CLAIM):
    sealed, d = forge.forge(fed, site, dp=dp, seed=seed)
    with fed.client(site, srv.address, retry=NO_RETRY) as c:
        return send(c.stub, chunks(sealed)), sealed, d


def _state(srv) -> tuple:
    store = srv.runtime.store
    with srv.runtime.deps.store_lock:
        return store.size(), sorted((m.module_id, m.status) for m in store.list_modules())


def test_the_composition_of_a_site_s_modules_must_meet_the_policy(fed, srv):
    assert dp.compute_epsilon(**{k: v for k, v in PARAMS.items()}) < POLICY["max_epsilon"]
    first, sealed, d = _upload(fed, srv, "st-mary", 1)
    assert not isinstance(first, Refusal), first
    second, _s, _d = _upload(fed, srv, "st-mary", 2)  # composed: epsilon 4.86 <= 5
    assert not isinstance(second, Refusal), second
    before = _state(srv)
    third, _s, _d = _upload(fed, srv, "st-mary", 3)  # composed: epsilon 5.85 > 5
    assert isinstance(third, Refusal), "a third release of st-mary's data was accepted"
    assert third.code == "E_DP_BUDGET" and third.hint
    assert "st-mary" in third.message and "5.8" in third.message
    assert _state(srv) == before  # nothing written
    # another site has its own budget; a re-sent registered module is not a new release
    other, _s, _d = _upload(fed, srv, "st-john", 4)
    assert not isinstance(other, Refusal), other
    with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
        again = c.upload(sealed, module_id=d["module_id"], site_id="st-mary")
    assert again.existing


def test_a_deleted_module_still_counts_against_its_site_s_budget(fed, srv):
    """Deleting a module shreds its weights; what its release leaked stays leaked."""
    store = srv.runtime.store
    mary = [m.module_id for m in store.list_modules("active") if m.site_id == "st-mary"]
    assert len(mary) == 2
    with fed.client("st-mary", srv.address, retry=NO_RETRY) as c:
        c.request_deletion([mary[0]], reason="retrain")
    assert store.get_module(mary[0]).status == "deleted"
    got, _s, _d = _upload(fed, srv, "st-mary", 5)
    assert isinstance(got, Refusal) and got.code == "E_DP_BUDGET"


def test_where_dp_is_optional_but_bounded_a_site_s_dp_claims_must_meet_the_policy(tmp_path, caplog):
    """``required = false`` with ``max_epsilon`` and ``delta`` set: every DP claim stands in
    for the privacy policy's measured limits (``dp_covers``), so the site's claims together
    must stay within ``max_epsilon`` as under a required policy. Modules without DP stay
    allowed beside them (judged by their privacy figures) and compose with nothing."""
    bounded = build_federation(tmp_path / "fed")
    forge.require_dp(bounded, {**POLICY, "required": False})
    with bounded.serve() as running:
        for seed, dp_record in ((1, CLAIM), (2, None), (3, CLAIM)):  # claims: epsilon 4.86
            got, _s, _d = _upload(bounded, running, "st-mary", seed, dp=dp_record)
            assert not isinstance(got, Refusal), got
        before = _state(running)
        with caplog.at_level("WARNING", logger="aggregator.refusal"):
            third, _s, _d = _upload(bounded, running, "st-mary", 4)  # claims: epsilon 5.85 > 5
        assert isinstance(third, Refusal), "a DP claim over the site's bounded budget was accepted"
        assert third.code == "E_DP_BUDGET" and third.hint
        assert "st-mary" in third.message and "5.8" in third.message
        assert "3 modules with a DP claim (of 4)" in third.message
        assert _state(running) == before  # nothing written
        logged = [r for r in caplog.records if getattr(r, "code", None) == "E_DP_BUDGET"]
        assert logged and logged[-1].method == "UploadModule"
        # a module without DP spends none of the DP budget: still accepted
        plain, _s, _d = _upload(bounded, running, "st-mary", 5, dp=None)
        assert not isinstance(plain, Refusal), plain


class _PausesInsideItsTransaction:
    """A real store (mixed into its backend's class) whose registration, once its
    precondition has passed and before anything is written, waits until released: server 1
    holding its write transaction open while server 2's upload of the same site arrives."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checked, self.release = threading.Event(), threading.Event()

    def register_module(self, *, precondition=None, **kwargs):
        def paused(rows):
            if precondition is not None:
                precondition(rows)
            self.checked.set()
            assert self.release.wait(60), "the test never released server 1"

        return super().register_module(precondition=paused, **kwargs)


@pytest.mark.parametrize("backend", ["postgres", "sqlite"])
def test_two_servers_on_one_store_cannot_both_spend_a_site_s_budget(tmp_path, backend, request):
    """Two ``serve`` processes share a store; st-mary sends one module to each at once, each
    within max_epsilon alone, both together over it. Server 1 has checked the budget and not
    yet committed when server 2 checks: server 2 must see server 1's module, and refuse."""
    fed = build_federation(tmp_path / "fed")
    policy = {"required": True, "max_epsilon": 4.0, "delta": 1e-5}  # CLAIM: 3.70; two: 4.86
    forge.require_dp(fed, policy)
    kek, signer = load_kek(fed.home), load_log_key(fed.home)
    keys = {"origin": signer.name, "kek": kek, "log_signer": signer}
    if backend == "postgres":
        dsn = request.getfixturevalue("pg_dsn")
        use_postgres(fed.config_path, dsn)
        paused = type("PausedPostgres", (_PausesInsideItsTransaction, PostgresStore), {})
        store1 = paused.open(dsn, **keys)
    else:
        paused = type("PausedSQLite", (_PausesInsideItsTransaction, SQLiteStore), {})
        store1 = paused.open(fed.home, **keys)
    store2 = open_home_store(fed.home)  # the second server's own connection to the same store
    server1, server2 = registrar(fed, store1), registrar(fed, store2)
    assert server1.store_lock is not server2.store_lock  # two processes share no lock in memory
    (sealed1, d1), (sealed2, d2) = (forge.forge(fed, "st-mary", dp=CLAIM, seed=s) for s in (1, 2))
    mary = peer(fed, "st-mary")
    got: dict[str, object] = {}

    def upload(name, server, sealed):
        try:
            got[name] = server.register(sealed, mary)
        except FFSecureError as exc:
            got[name] = exc

    first = threading.Thread(target=upload, args=("first", server1, sealed1))
    second = threading.Thread(target=upload, args=("second", server2, sealed2))
    try:
        first.start()
        assert store1.checked.wait(60), got.get("first")
        second.start()  # server 2's check runs now, or waits for server 1's commit
        second.join(1.0)
        assert second.is_alive(), f"server 2 did not wait for server 1's write: {got}"
    finally:
        store1.release.set()
        first.join(60)
        second.join(60)
    assert not isinstance(got["first"], Exception), got["first"]
    refused = got["second"]
    assert isinstance(refused, FFSecureError) and refused.code == "E_DP_BUDGET", refused
    assert "st-mary" in refused.message and "4.8" in refused.message and refused.hint
    # nothing of the refused module was written: one module, one entry for it, and the store
    # agrees
    rows = store2.list_modules()
    assert [r.module_id for r in rows] == [d1["module_id"]]
    # the first registrar recorded the manifest in force (federation.loaded), the second
    # found it recorded already; then one module.registered
    assert store2.size() == 2 and store1.size() == 2
    assert store2.verify_integrity()["modules"] == 1
    # the refusal stands serially too, from either server
    with pytest.raises(FFSecureError) as again:
        server1.register(sealed2, mary)
    assert again.value.code == "E_DP_BUDGET"
    store1.close()
    store2.close()
