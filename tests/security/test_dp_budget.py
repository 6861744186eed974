"""A site's DP budget covers all its modules: a second release of the same data is not free.

The federation's ``dp_policy.max_epsilon`` bounds what a site's data may leak. Each module
is a release of that data; k modules at epsilon E each leak more than E (and deleting a
module does not take back what it released). A real aggregator (`fed.serve()`: gRPC on
loopback with real certificates, SQLite store) receives modules that each meet the policy
alone; the composition of a site's modules must meet it too.
"""

from __future__ import annotations

import pytest

from ffsecure import dp
from site_node.client import RetryPolicy
from tests.federation_fixture import build_federation
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


def _upload(fed, srv, site: str, seed: int):
    sealed, d = forge.forge(fed, site, dp=CLAIM, seed=seed)
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
