"""A site composes its own DP releases before a new module leaves it.

The federation requires DP with ``max_epsilon`` 8; a site trains at the default target,
the whole ``max_epsilon`` per module, so its second module would take its data over the
budget. The aggregator would refuse it (``E_DP_BUDGET``), but only once the sealed module
had left the site. Here the site refuses it first, with the aggregator's own rule
(``ffsecure.dp.check_site_budget``): `site-node upload` before sealing, `site-node train`
before training. The site's own cap (``dp.max_total_epsilon``) counts every DP module it
trained, discarded ones too. Real processes against a real aggregator (loopback, mTLS);
scikit-learn's digits, the federation's tiny cvae, one epoch.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from ffsecure import dp
from ffsecure.federation import create_signed_manifest
from site_node.exitcodes import EXIT_ERROR, EXIT_REFUSED
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import (
    DIGITS,
    InProcessAggregator,
    free_port,
    setup_site_in_process,
    site_node,
    write_site_config,
)

POLICY = {"required": True, "max_epsilon": 8.0, "delta": 1e-5}


def _record(cfg: Path, module_id: str) -> dict:
    return json.loads((cfg.parent / "state" / "modules" / module_id / "module.json").read_text())


def test_a_site_refuses_a_module_that_would_overspend_its_budget_before_it_leaves(tmp_path):
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    fed.manifest = dataclasses.replace(fed.manifest, dp_policy=dict(POLICY))
    fed.home.federation.write_bytes(create_signed_manifest(fed.manifest, fed.ca))
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        # the site's own cap, which counts every DP module trained, out of the way: this test
        # is about the federation's rule, which counts what left the site
        roomy = "[dp]\nmax_total_epsilon = 100.0\n"
        cfg = write_site_config(tmp_path, "st-dp", agg.address, [0, 1], extra=roomy)
        site_cfg, trust, first = setup_site_in_process(fed, cfg)
        from site_node.training import train_module

        second = train_module(site_cfg, trust)  # nothing has left the site yet: both pass
        assert first.status == second.status == "trained"
        claims = [
            dp.DPClaim.from_record(r.train["dp"], require_parameters=True) for r in (first, second)
        ]
        assert all(c is not None and c.epsilon <= POLICY["max_epsilon"] for c in claims)
        assert dp.site_epsilon(claims, POLICY["delta"]) > POLICY["max_epsilon"]

        # upload: the first registers; the second is refused here, neither sealed nor sent
        proc = site_node("upload", "--config", cfg, "--json", check=False)
        assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
        outcomes = {r["module_id"]: r for r in json.loads(proc.stdout)["uploaded"]}
        assert outcomes[first.module_id]["outcome"] == "registered"
        refused = outcomes[second.module_id]
        assert refused["outcome"] == "refused" and refused["error"]["by"] == "site"
        assert refused["error"]["code"] == "E_DP_BUDGET"
        assert first.module_id in refused["error"]["message"]
        assert "max_epsilon 8" in refused["error"]["message"]
        assert "not sealed or sent" in refused["error"]["message"]
        assert "dp_policy.max_epsilon" in refused["error"]["hint"]
        rec = _record(cfg, second.module_id)
        assert rec["status"] == "refused" and rec["upload_id"] is None
        assert rec["error"]["code"] == "E_DP_BUDGET" and rec["error"]["by"] == "site"
        assert not (cfg.parent / "state" / "modules" / second.module_id / "sealed.bin").exists()
        # the aggregator holds the first module only and never saw the second (no refusal)
        store = agg.running.runtime.store
        assert [m.module_id for m in store.list_modules()] == [first.module_id]
        (activity,) = store.list_site_activity()
        assert activity.site_id == "st-dp" and activity.last_refusal_code is None

        # train: a third module is refused before it is trained (its planned release composed
        # with the first goes over), with what to do; nothing is written
        proc = site_node("train", "--config", cfg, "--no-progress", check=False)
        assert proc.returncode == EXIT_ERROR, proc.stderr[-3000:]
        assert "error[E_DP_BUDGET]" in proc.stderr and "nothing was trained" in proc.stderr
        assert first.module_id in proc.stderr and "max_epsilon 8" in proc.stderr
        assert "hint: each module releases the site's data again" in proc.stderr
        modules = {m.name for m in (cfg.parent / "state" / "modules").iterdir()}
        assert modules == {first.module_id, second.module_id}
        # nothing is pending: a plain upload sends nothing, and the aggregator still has one
        assert json.loads(site_node("upload", "--config", cfg, "--json").stdout) == {"uploaded": []}
        assert len(store.list_modules()) == 1
    finally:
        agg.stop()


def _hostile_federation(tmp_path: Path, dp_policy: dict):
    """A federation whose CA signed the operator's dp_policy."""
    fed = build_federation(tmp_path / "fed", labels=DIGITS, sites=())
    fed.manifest = dataclasses.replace(fed.manifest, dp_policy=dp_policy)
    fed.home.federation.write_bytes(create_signed_manifest(fed.manifest, fed.ca))
    return fed


def test_a_manifest_s_max_epsilon_above_the_site_s_ceiling_is_not_adopted(tmp_path):
    """Red team: with the template's [dp] (target 0), a CA-signed ``max_epsilon = 100`` became
    the site's target (noise multiplier 0.095) and `site-node check` passed. The site trains at
    its own ceiling, dp.max_epsilon (8 by default), and `check` says so."""
    fed = _hostile_federation(tmp_path, {"required": True, "max_epsilon": 100.0, "delta": 1e-5})
    cfg = write_site_config(tmp_path, "st-dp", "127.0.0.1:1", [0, 1], attempts=1)
    _, _, first = setup_site_in_process(fed, cfg)
    signed = first.train["dp"]
    assert signed["epsilon"] == pytest.approx(8.0, rel=1e-3) and signed["epsilon"] <= 8.0
    proc = site_node("check", "--config", cfg, "--json", check=False)
    (line,) = [c for c in json.loads(proc.stdout)["checks"] if c["check"] == "DP policy"]
    assert line["status"] == "PASS" and "max epsilon 100" in line["detail"]
    assert "with DP to epsilon 8 " in line["detail"] and "own ceiling: epsilon 8" in line["detail"]


def test_without_required_dp_a_site_keeps_its_own_budget_and_refuses_before_training(tmp_path):
    """Red team: under ``required = false`` a site with its own [dp] released the same data four
    times (composed 2.12 against its target 1), each check saying "spent 0.0". Its own cap,
    dp.max_total_epsilon, binds its DP releases whatever the policy, and a release that would
    go over is refused before it is trained; `site-node status` shows the composed total."""
    from site_node.budget import check_release
    from site_node.state import StateDir
    from site_node.training import train_module

    optional = {"required": False, "max_epsilon": None, "delta": None}
    fed = _hostile_federation(tmp_path, optional)
    dp_table = '[dp]\ntarget_epsilon = 3.0\nmax_total_epsilon = 4.0\nmechanism = "dp-sgd"\n'
    cfg = write_site_config(tmp_path, "st-dp", "127.0.0.1:1", [0, 1], extra=dp_table, attempts=1)
    site_cfg, trust, first = setup_site_in_process(fed, cfg)
    state = StateDir(site_cfg.state_dir)
    assert first.status == "trained" and first.train["dp"]["epsilon"] <= 3.0
    spent_alone = check_release(
        state,
        optional,
        site_cfg.dp_limits,
        site_id="st-dp",
        module_id=first.module_id,
        dp=first.train["dp"],
    )
    assert spent_alone == pytest.approx(first.train["dp"]["epsilon"], rel=1e-6)  # not 0.0
    first.status = "registered"  # as after its upload: its data has left the site
    state.save_module(first)

    with pytest.raises(dp.DPBudgetError) as info:
        train_module(site_cfg, trust)
    assert "dp.max_total_epsilon 4" in info.value.message
    assert "nothing was trained" in info.value.message and first.module_id in info.value.message
    assert "knowingly" in (info.value.hint or "")
    assert [r.module_id for r in state.modules()] == [first.module_id]

    report = json.loads(site_node("status", "--config", cfg, "--offline", "--json").stdout)
    budget = report["dp_budget"]
    assert budget["epsilon"] == pytest.approx(first.train["dp"]["epsilon"], rel=1e-6)
    assert budget["max_total_epsilon"] == 4.0 and budget["releases_with_dp"] == [first.module_id]
    assert budget["modules_with_dp"] == [first.module_id]
    assert budget["left"] == pytest.approx(4.0 - budget["epsilon"])
    text = " ".join(site_node("status", "--config", cfg, "--offline").stdout.split())  # unwrap
    assert "DP budget: 1 DP module(s) trained on this site's data (1 released;" in text
    assert "of dp.max_total_epsilon 4" in text


def test_a_dp_module_discarded_before_sealing_still_spends_the_site_s_budget(tmp_path):
    """Red team: a site trained DP candidates on the same data, read their local privacy
    reports, discarded those it did not like and sent one; the discarded ones cost nothing, so
    the signed epsilon understated what the choice leaked. A discarded DP module counts against
    dp.max_total_epsilon: the next module that would go over it is refused before training."""
    from site_node.state import StateDir
    from site_node.training import train_module

    optional = {"required": False, "max_epsilon": None, "delta": None}
    fed = _hostile_federation(tmp_path, optional)
    dp_table = '[dp]\ntarget_epsilon = 3.0\nmax_total_epsilon = 4.0\nmechanism = "dp-sgd"\n'
    cfg = write_site_config(tmp_path, "st-dp", "127.0.0.1:1", [0, 1], extra=dp_table, attempts=1)
    site_cfg, trust, first = setup_site_in_process(fed, cfg)
    site_node("discard", "--config", cfg, "--module", first.module_id, "--reason", "try again")
    state = StateDir(site_cfg.state_dir)
    assert state.load_module(first.module_id).status == "discarded"

    with pytest.raises(dp.DPBudgetError) as info:
        train_module(site_cfg, trust)
    message, hint = info.value.message, info.value.hint or ""
    assert "dp.max_total_epsilon 4" in message and "nothing was trained" in message
    assert first.module_id in message and "1 of them never sent" in message
    assert "discarded and refused ones too" in hint
    assert [r.module_id for r in state.modules()] == [first.module_id]

    budget = json.loads(site_node("status", "--config", cfg, "--offline", "--json").stdout)
    spent = budget["dp_budget"]
    assert spent["epsilon"] == pytest.approx(first.train["dp"]["epsilon"], rel=1e-6)
    assert spent["modules_with_dp"] == [first.module_id] and spent["releases_with_dp"] == []
