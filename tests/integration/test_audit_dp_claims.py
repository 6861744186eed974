"""The auditor's `dp-claims` check on hostile DP claims: a finding on the module, never a crash.

A site signs whatever `dp` record it likes; an aggregator of an older release (or one
that is itself hostile) may have registered it. These bundles are built with the real
store and ledger (tests/audit_fixture.py) and audited through the real `ffsecure audit`
commands, in-process (CliRunner), with the same bounds the aggregator applies at
registration (`ffsecure.dp`).
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from ffsecure.dp import MAX_DELTA, MAX_STEPS
from tests.audit_fixture import AuditLab, standard_history
from tests.dp_records import mean_embedding_record

torch.set_num_threads(1)

GOOD = {
    "epsilon": 4.0,
    "delta": 1e-5,
    "noise_multiplier": 1.1,
    "sample_rate": 0.01,
    "steps": 100,
    "accountant": "rdp",
}
HOSTILE = {
    "a billion steps": {**GOOD, "accountant": "prv", "steps": 1_000_000_000},
    "a million steps": {**GOOD, "accountant": "prv", "sample_rate": 0.001, "steps": 1_000_000},
    "a prv grid of 14 million points": {
        **GOOD,
        "accountant": "prv",
        "noise_multiplier": 0.6,
        "sample_rate": 0.05,
        "steps": 10_000,
    },
    "steps as a string": {**GOOD, "steps": "100"},
    "seeded noise": {**GOOD, "reproducible": True},
    # re-accounted to epsilon 0: a thousand of them would compose to a site epsilon of 0
    "zero steps": {**GOOD, "epsilon": 1e-9, "steps": 0},
    "zero steps as -0.0": {**GOOD, "epsilon": 1e-9, "steps": -0.0},
    # an epsilon that holds except with probability 0.999999 promises nothing
    "delta near 1": {**GOOD, "epsilon": 1e-6, "delta": 0.999999},
}
#: A mean-embedding release at epsilon 4 (noise multiplier from Opacus' search, PRV).
MEAN_EMBEDDING = mean_embedding_record(epsilon=3.999, noise_multiplier=1.083984375, n_features=2000)
#: A dishonest site (or exporter with its key) alters one signed parameter of that record.
HOSTILE_MEAN_EMBEDDING = {
    "mean-embedding noise halved": {**MEAN_EMBEDDING, "noise_multiplier": 0.54},
    "mean-embedding sample rate altered": {**MEAN_EMBEDDING, "sample_rate": 0.01},
    "mean-embedding steps altered": {**MEAN_EMBEDDING, "steps": 2},
    "mechanism swapped to dp-sgd": {**MEAN_EMBEDDING, "mechanism": "dp-sgd"},
    "mechanism unknown": {**MEAN_EMBEDDING, "mechanism": "laplace"},
}
HOSTILE.update(HOSTILE_MEAN_EMBEDDING)


def invoke(*args):
    from click.testing import CliRunner

    from ffsecure.cli import cli

    r = CliRunner().invoke(cli, ["audit", *map(str, args)])
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return r.exit_code, r.stdout


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit-dp")
    lab = AuditLab(root)
    standard_history(lab)
    hostile = {
        name: lab.register("st-john", (3,), seed=10 + i, dp=dp)
        for i, (name, dp) in enumerate(HOSTILE.items())
    }
    honest = lab.register("st-mary", (3,), seed=30, dp=GOOD)
    lab.register("st-mary", (3,), seed=31, dp=MEAN_EMBEDDING)
    bundle = lab.export("hostile-dp")
    ca = root / "ca.pem"
    ca.write_bytes(lab.fed.ca_pem)
    lab.close()
    return hostile, honest, bundle, ca


def test_hostile_dp_claims_in_a_bundle_are_findings_on_their_modules(world):
    hostile, _honest, bundle, ca = world
    t0 = time.perf_counter()
    code, stdout = invoke("verify", bundle, "--ca", ca, "--json")
    seconds = time.perf_counter() - t0
    assert code == 3
    out = json.loads(stdout)
    assert out["verdict"] == "FAILED"
    dp_findings = {f["module_id"]: f for f in out["findings"] if f["code"] == "E_AUDIT_DP_CLAIM"}
    assert set(dp_findings) == set(hostile.values())
    assert all(
        f["severity"] == "error" and f["entry_type"] == "module.registered"
        for f in dp_findings.values()
    )
    assert "1000000000" in dp_findings[hostile["a billion steps"]]["message"]
    assert f"[1, {MAX_STEPS}]" in dp_findings[hostile["a million steps"]]["message"]
    for name in ("zero steps", "zero steps as -0.0"):
        assert f"[1, {MAX_STEPS}], got 0" in dp_findings[hostile[name]]["message"]
    assert (
        f"delta must be in [1e-20, {MAX_DELTA:g}]"
        in (dp_findings[hostile["delta near 1"]]["message"])
    )
    assert "grid" in dp_findings[hostile["a prv grid of 14 million points"]]["message"]
    assert "reproducible" in dp_findings[hostile["seeded noise"]]["message"]
    message = {name: dp_findings[hostile[name]]["message"] for name in HOSTILE_MEAN_EMBEDDING}
    assert "claims epsilon 3.999" in message["mean-embedding noise halved"]
    assert "sample rate 0.01" in message["mean-embedding sample rate altered"]
    assert "2 steps" in message["mean-embedding steps altered"]
    assert "says dp-sgd but carries" in message["mechanism swapped to dp-sgd"]
    assert "unknown mechanism 'laplace'" in message["mechanism unknown"]
    assert {f["code"] for f in out["findings"]} == {"E_AUDIT_DP_CLAIM"}  # nothing else is wrong
    assert seconds < 20, f"the audit took {seconds:.1f} s"


def test_report_of_a_bundle_with_hostile_dp_claims_is_written_with_its_verdict(world, tmp_path):
    hostile, _honest, bundle, ca = world
    code, stdout = invoke("report", bundle, "--ca", ca, "-o", tmp_path / "r.html", "--json")
    assert code == 0
    assert json.loads(stdout)["verdict"] == "FAILED"
    html = (tmp_path / "r.html").read_text()
    assert all(module_id[:8] in html for module_id in hostile.values())


def test_a_registered_claim_without_its_accounting_parameters_is_a_finding(tmp_path):
    """The aggregator refuses a DP record of epsilon and delta only (nothing re-accounts it);
    a bundle whose log registered one anyway must not read VERIFIED."""
    lab = AuditLab(tmp_path)
    try:
        bare = lab.register("st-mary", (0,), seed=1, dp={"epsilon": 0.1, "delta": 1e-5})
        bundle = lab.export("bare")
        (tmp_path / "ca.pem").write_bytes(lab.fed.ca_pem)
    finally:
        lab.close()
    code, stdout = invoke("verify", bundle, "--ca", tmp_path / "ca.pem", "--json")
    out = json.loads(stdout)
    assert code == 3 and out["verdict"] == "FAILED"
    (f,) = out["findings"]
    assert (f["code"], f["module_id"], f["check"]) == ("E_AUDIT_DP_CLAIM", bare, "dp-claims")
    assert "lacks" in f["message"]
