"""An aggregator's refusal held against the site's own re-run of the same check.

A real aggregator serves over mTLS on loopback with a CA-signed manifest. A hostile one is
the same server whose registration opens and verifies every upload as the real one does
(so it holds the module) and then refuses it with a made-up reason and a hint asking for a
differently trained module: the site must show that refusal as an alarm, never as advice.
An honest refusal the site's own check agrees with stays an ordinary refusal. Data:
scikit-learn's digits; generator: the federation's tiny cvae, one epoch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json

import pytest
from click.testing import CliRunner

from ffsecure import pki
from ffsecure.dp import DPBudgetError, DPClaimError
from ffsecure.errors import FFSecureError
from ffsecure.federation import create_signed_manifest
from ffsecure.package import ClassesPolicyError, SignatureError
from ffsecure.privacy.policy import PrivacyPolicyError
from site_node import trust as trustlib
from site_node.budget import released
from site_node.cli import cli
from site_node.exitcodes import EXIT_ALARM, EXIT_OK, EXIT_REFUSED
from site_node.state import StateDir
from site_node.training import train_module
from tests.integration.test_site_node import (
    InProcessAggregator,
    free_port,
    ledger_entries,
    setup_site_in_process,
    site_node,
    write_site_config,
)
from tests.integration.test_site_privacy_policy import (
    REQUIRED,
    STRICT,
    events,
    federation,
    install,
    manifest_file,
    record,
)

MADE_UP = "near-copy fraction 0.41 is above the federation's limit 0.05"
BAIT = "retrain with more epochs and dp.enabled = false, then upload again"


def lie(monkeypatch, agg: InProcessAggregator, error: FFSecureError) -> list[str]:
    """Make ``agg`` hostile: it opens and verifies each upload, keeps its module id, then
    refuses it with ``error`` and registers nothing. Returns the ids it opened."""
    registrar = agg.running.runtime.deps.registrar
    opened: list[str] = []

    def register(sealed: bytes, peer):
        package, _verified = registrar.verify(sealed, peer)  # the module is in its hands
        opened.append(package.manifest.module_id)
        raise error

    monkeypatch.setattr(registrar, "register", register)
    return opened


def serve(agg: InProcessAggregator, fed, policy: dict | None, *, later: int) -> None:
    """Make ``agg`` serve (GetFederationInfo) a CA-signed manifest of this federation with
    ``policy``, created ``later`` seconds after the federation's (negative: before)."""
    created = pki.parse_rfc3339(fed.manifest.created_at) + dt.timedelta(seconds=later)
    manifest = dataclasses.replace(
        fed.manifest, privacy_policy=policy, created_at=pki.rfc3339(created)
    )
    agg.running.runtime.deps.signed_manifest = create_signed_manifest(manifest, fed.ca)


def cli_run(*args) -> tuple[int, str]:
    """A site-node command in this process (the aggregator is here too); its stdout."""
    res = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.stdout


def registered(fed, agg) -> list[str]:
    entries = ledger_entries(fed, agg.address)
    return [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"]


def test_a_privacy_refusal_the_site_s_own_check_contradicts_is_an_alarm_not_advice(
    tmp_path, monkeypatch
):
    """The site's module passes the federation's privacy policy (its signed report, the same
    pure function); the aggregator refuses it as E_PRIVACY_POLICY with a hint to retrain
    without DP. `run --once` stops on an ALARM (exit 3), and `status` keeps showing it."""
    fed = federation(tmp_path, REQUIRED)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        opened = lie(monkeypatch, agg, PrivacyPolicyError(MADE_UP, hint=BAIT))
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1, 2])
        setup_site_in_process(fed, cfg, train=False)

        proc = site_node("run", "--config", cfg, "--once", check=False)
        assert proc.returncode == EXIT_ALARM, proc.stderr[-3000:]
        (module_id,) = opened
        rec = record(cfg, module_id)
        assert rec["status"] == "refused" and rec["upload_id"] is not None
        error = rec["error"]
        assert error["code"] == "E_REFUSAL_CONTRADICTED" and error["by"] == "aggregator"
        assert error["aggregator"]["code"] == "E_PRIVACY_POLICY"
        assert error["aggregator"]["message"] == MADE_UP and error["aggregator"]["hint"] == BAIT
        assert BAIT not in error["hint"] and "ALARM" in error["hint"]
        assert "E_PRIVACY_POLICY" in error["message"] and "passes" in error["message"]
        assert error["recheck"]["verdict"] == "contradicts"
        assert error["recheck"]["checks"] == ["federation policy", "privacy policy"]
        # it stays a release of the site's data: the aggregator holds the module
        assert released(StateDir(cfg.parent / "state").load_module(module_id))
        assert registered(fed, agg) == []
        found = events(proc.stderr)
        (alarm,) = [e for e in found if e["event"] == "refusal_contradicted"]
        assert alarm["level"] == "error" and alarm["aggregator_code"] == "E_PRIVACY_POLICY"
        assert "untrusted" in alarm["msg"]
        assert not [e for e in found if e["event"] == "upload_refused"]
        stopped = next(e for e in found if e["event"] == "stopped")
        assert stopped["exit_status"] == EXIT_ALARM

        code, out = cli_run("status", "--config", cfg, "--offline")
        assert code == EXIT_ALARM, out
        assert f"ALARM  module {module_id}: " in out and "E_REFUSAL_CONTRADICTED" in out
        assert f"(its words, untrusted, not advice): [E_PRIVACY_POLICY] {MADE_UP}" in out
        assert BAIT not in out and "hint:" not in out
        code, out = cli_run("status", "--config", cfg, "--offline", "--json")
        assert code == EXIT_ALARM
        (shown,) = json.loads(out)["alarms"]
        assert shown["module_id"] == module_id and shown["code"] == "E_REFUSAL_CONTRADICTED"
        # discarding it records that the operator dealt with it; the evidence stays
        code, out = cli_run(
            "discard", "--config", cfg, "--module", module_id, "--reason", "reported"
        )
        assert code == EXIT_OK, out
        code, out = cli_run("status", "--config", cfg, "--offline")
        assert code == EXIT_OK and "ALARM" not in out, out
        assert record(cfg, module_id)["error"]["aggregator"]["hint"] == BAIT
    finally:
        agg.stop()


def test_an_honest_privacy_refusal_the_site_s_check_agrees_with_stays_an_ordinary_refusal(
    tmp_path,
):
    """The aggregator runs a newer, stricter manifest the CA signed than the one the site
    installed: its refusal is honest, the site's re-check under the manifest the aggregator
    serves agrees, and `upload` shows the aggregator's words as its own, with no alarm."""
    fed = federation(tmp_path, STRICT)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1, 2])
        site_cfg, _trust, _ = setup_site_in_process(fed, cfg, train=False)
        install(fed, cfg, manifest_file(fed, REQUIRED, tmp_path / "required.json"))
        serve(agg, fed, STRICT, later=3600)  # the operator's update the site has not installed
        module = train_module(site_cfg, trustlib.load(site_cfg))
        assert module.status == "trained"  # it passes the manifest this site holds

        code, out = cli_run("upload", "--config", cfg)
        assert code == EXIT_REFUSED, out
        assert f"module {module.module_id}: REFUSED by the aggregator (E_PRIVACY_POLICY)" in out
        assert "the aggregator says (its words, untrusted): membership AUROC" in out
        assert "the aggregator's hint (its words, untrusted): run `site-node privacy" in out
        agrees = "this site's re-check (agrees): under the newer manifest the aggregator serves"
        assert agrees in out
        assert "ALARM" not in out
        error = record(cfg, module.module_id)["error"]
        assert error["code"] == "E_PRIVACY_POLICY" and error["by"] == "aggregator"
        assert error["recheck"]["verdict"] == "agrees"
        assert "max_membership_auroc" in error["recheck"]["finding"]
        code, out = cli_run("status", "--config", cfg, "--offline")
        assert code == EXIT_OK and "ALARM" not in out, out
        assert registered(fed, agg) == []
    finally:
        agg.stop()


@pytest.mark.parametrize(
    ("error", "outcome", "verdict"),
    [
        (ClassesPolicyError("classes [0, 1] are outside the label space"), "contradicted", None),
        (DPClaimError("the DP claim cannot be re-accounted"), "contradicted", None),
        (DPBudgetError("site st-a has a module without DP"), "contradicted", None),
        (SignatureError("the signature does not verify"), "refused", "not_rerun"),
    ],
    ids=lambda v: getattr(v, "code", v),
)
def test_each_refusal_the_site_can_re_run_is_re_run_and_the_others_stay_refusals(
    tmp_path, monkeypatch, error, outcome, verdict
):
    """The federation fixes no privacy policy and requires no DP: the module's classes are in
    the label space, it makes no DP claim, so no honest aggregator refuses it for its classes,
    its claim or the DP budget; a signature the site cannot check for the aggregator."""
    fed = federation(tmp_path, None)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        lie(monkeypatch, agg, error)
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1])
        setup_site_in_process(fed, cfg)
        code, out = cli_run("upload", "--config", cfg, "--json")
        (result,) = json.loads(out)["uploaded"]
        assert result["outcome"] == outcome
        if outcome == "contradicted":
            assert code == EXIT_ALARM
            assert result["error"]["code"] == "E_REFUSAL_CONTRADICTED"
            assert result["error"]["aggregator"]["code"] == error.code
            assert result["error"]["recheck"]["verdict"] == "contradicts"
        else:
            assert code == EXIT_REFUSED
            assert result["error"]["code"] == error.code
            assert result["error"]["recheck"]["verdict"] == verdict
    finally:
        agg.stop()


@pytest.mark.parametrize(
    ("error", "verdict", "exit_code"),
    [
        # the older manifest refuses the module with another code: no excuse for this one
        (DPBudgetError("site st-a is over the federation's budget"), "contradicts", EXIT_ALARM),
        # with the refusal's own code: an aggregator not yet restarted, or a hostile one
        (PrivacyPolicyError(MADE_UP, hint=BAIT), "agrees", EXIT_REFUSED),
    ],
    ids=lambda v: getattr(v, "code", v),
)
def test_an_older_manifest_the_aggregator_serves_excuses_only_its_own_refusal_code(
    tmp_path, monkeypatch, error, verdict, exit_code
):
    """The aggregator refuses a module this site's check passes and serves an older manifest
    the CA once signed, under which the module fails the privacy policy. That excuses only a
    privacy refusal, and the finding says an older manifest is in play; a made-up budget
    refusal stays an alarm."""
    fed = federation(tmp_path, None)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        lie(monkeypatch, agg, error)
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1])
        site_cfg, _trust, _ = setup_site_in_process(fed, cfg, train=False)
        module = train_module(site_cfg, trustlib.load(site_cfg))
        serve(agg, fed, {**STRICT, "max_membership_auroc": 0.0}, later=-3600)
        code, out = cli_run("upload", "--config", cfg)
        assert code == exit_code, out
        recheck = record(cfg, module.module_id)["error"]["recheck"]
        assert recheck["verdict"] == verdict
        if verdict == "agrees":
            assert "serves an older manifest" in recheck["finding"]
            assert "tell the federation's auditors" in recheck["finding"]
        else:
            assert "no check gives E_DP_BUDGET" in recheck["finding"]
    finally:
        agg.stop()
