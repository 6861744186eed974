"""The federation's privacy policy at the site: `site-node` processes against a real aggregator.

The aggregator serves over mTLS on loopback with a CA-signed manifest that
requires a privacy report. Sites hold CA-signed manifests of the same
federation (the one they installed): the same policy, a stricter one, or one
from before the federation required reports. Data: scikit-learn's digits;
generator: the federation's tiny cvae, one epoch. A limit of 0.0 on the
membership AUROC fails every module (an AUROC is never below 0) and a limit
of 1.0 passes every module, so verdicts do not depend on training noise.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from click.testing import CliRunner

from ffsecure.federation import create_signed_manifest
from ffsecure.package import SignedPackage
from site_node.cli import cli
from site_node.exitcodes import EXIT_REFUSED
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import (
    DIGITS,
    InProcessAggregator,
    free_port,
    ledger_entries,
    setup_site_in_process,
    site_node,
    write_site_config,
)

REQUIRED = {"required": True, "max_membership_auroc": 1.0}  # a report is required; any AUROC passes
STRICT = {"required": True, "max_membership_auroc": 0.0, "max_near_copy_fraction": 1.0}
#: the federation template's form: limits, no `required` (a report is required all the same)
LIMITS_ONLY = {"max_membership_auroc": 1.0, "max_near_copy_fraction": 1.0}


def federation(tmp_path: Path, policy: dict):
    """A federation whose aggregator serves a manifest with ``policy``."""
    fed = build_federation(
        tmp_path / "fed",
        labels=DIGITS,
        sites=(),
        chunk_bytes=16 * 1024,
        commit_every_bytes=16 * 1024,
    )
    manifest_file(fed, policy, fed.home.federation)
    fed.manifest = dataclasses.replace(fed.manifest, privacy_policy=policy)
    return fed


def manifest_file(fed, policy: dict | None, path: Path) -> Path:
    """The federation's manifest with ``policy``, signed by its CA, at ``path``."""
    manifest = dataclasses.replace(fed.manifest, privacy_policy=policy)
    path.write_bytes(create_signed_manifest(manifest, fed.ca))
    return path


def install(fed, cfg: Path, manifest: Path) -> str:
    """`site-node install-cert` (again) with ``manifest``; returns its human output."""
    args = [
        "install-cert",
        "--config",
        str(cfg),
        "--cert",
        str(cfg.parent / "site.pem"),
        "--ca",
        str(fed.home.ca_cert),
        "--federation",
        str(manifest),
    ]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def record(cfg: Path, module_id: str) -> dict:
    return json.loads((cfg.parent / "state" / "modules" / module_id / "module.json").read_text())


def module_ids(cfg: Path) -> list[str]:
    return sorted(p.parent.name for p in (cfg.parent / "state" / "modules").glob("*/module.json"))


def error_code(proc) -> str:
    return json.loads(proc.stderr.strip().splitlines()[-1])["error"]["code"]


def events(stderr: str) -> list[dict]:
    return [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def test_run_once_refuses_before_sealing_a_module_that_fails_the_policy_and_exits_4(tmp_path):
    """The strict site's module is refused locally and never sent; the compliant one registers."""
    fed = federation(tmp_path, REQUIRED)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        strict = write_site_config(tmp_path, "st-strict", agg.address, [0, 1, 2])
        setup_site_in_process(fed, strict, train=False)
        shown = install(fed, strict, manifest_file(fed, STRICT, tmp_path / "strict.json"))
        assert "privacy policy: report required" in shown
        assert "membership AUROC at most 0: max_membership_auroc\n" in shown
        ok = write_site_config(tmp_path, "st-ok", agg.address, [3, 4, 5])
        setup_site_in_process(fed, ok, train=False)
        shown = install(fed, ok, fed.home.federation)
        assert "membership AUROC at most 1: max_membership_auroc" in shown

        proc = site_node("run", "--config", strict, "--once", check=False)
        assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
        (refused,) = module_ids(strict)
        rec = record(strict, refused)
        assert rec["status"] == "refused" and rec["upload_id"] is None
        assert rec["error"]["code"] == "E_PRIVACY_POLICY" and rec["error"]["by"] == "site"
        assert "membership AUROC" in rec["error"]["message"]
        assert "max_membership_auroc" in rec["error"]["message"]
        folder = strict.parent / "state" / "modules" / refused
        assert not (folder / "sealed.bin").exists() and (folder / "closest-pairs.png").exists()
        report = json.loads((folder / "privacy-report.json").read_text())
        assert report["module_id"] == refused and report["policy"]["passes"] is False
        signed = SignedPackage.from_bytes((folder / "package.ffpk").read_bytes()).manifest
        signed = signed.privacy_report
        assert signed == report["manifest_report"]  # measured before signing, kept for inspection
        names = [e["event"] for e in events(proc.stderr)]
        assert "module_refused" in names and "upload_start" not in names
        stopped = next(e for e in events(proc.stderr) if e["event"] == "stopped")
        assert stopped["exit_status"] == EXIT_REFUSED

        proc = site_node("run", "--config", ok, "--once", check=False)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (registered,) = module_ids(ok)
        assert record(ok, registered)["status"] == "registered"
        signed = SignedPackage.from_bytes(
            (ok.parent / "state" / "modules" / registered / "package.ffpk").read_bytes()
        ).manifest.privacy_report
        assert signed["membership_auroc"] >= 0 and signed["members"] > 0  # measured and signed

        # only the compliant module reached the aggregator
        entries = ledger_entries(fed, agg.address)
        registrations = [
            e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"
        ]
        assert registrations == [registered]
        # nothing is pending at the strict site: a plain upload sends nothing
        up = json.loads(site_node("upload", "--config", strict, "--json").stdout)
        assert up == {"uploaded": []}
        # privacy-check judges the refused module again: PASS/FAIL per threshold, exit 4
        proc = site_node(
            "privacy-check", "--config", strict, "--module", refused, "--samples", 100, check=False
        )
        assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
        assert "privacy policy (report required): FAIL" in proc.stdout
        assert "  FAIL  membership AUROC" in proc.stdout
        assert "> 0 (max_membership_auroc)" in proc.stdout
        assert "  PASS  near-copy fraction" in proc.stdout
        assert "<= 1 (max_near_copy_fraction)" in proc.stdout
        assert "  PASS  membership TPR" not in proc.stdout  # the policy sets no such limit
    finally:
        agg.stop()


def test_upload_marks_a_module_the_aggregator_refuses_and_sends_the_next(tmp_path):
    """A module trained before reports were required is refused; the next one still registers.

    Then `discard` takes a trained module out of the queue for good, with its reason.
    """
    fed = federation(tmp_path, REQUIRED)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1, 2])
        site_cfg, trust, doomed = setup_site_in_process(fed, cfg, train=False)
        install(fed, cfg, manifest_file(fed, None, tmp_path / "before-the-policy.json"))
        from site_node import trust as trustlib
        from site_node.training import train_module

        doomed = train_module(site_cfg, trustlib.load(site_cfg))  # no report: doomed
        assert doomed.status == "trained"
        time.sleep(1.1)  # created_at has 1 s resolution: the doomed module is older, sent first
        install(fed, cfg, fed.home.federation)
        good = train_module(site_cfg, trustlib.load(site_cfg))
        spare = train_module(site_cfg, trustlib.load(site_cfg))
        assert good.status == spare.status == "trained"

        proc = site_node(
            "discard",
            "--config",
            cfg,
            "--module",
            spare.module_id,
            "--reason",
            "trained twice by mistake",
            "--json",
        )
        shown = json.loads(proc.stdout)
        assert shown["status"] == "discarded" and shown["reason"] == "trained twice by mistake"
        assert record(cfg, spare.module_id)["discarded"]["previous_status"] == "trained"

        proc = site_node("upload", "--config", cfg, "--json", check=False)
        assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
        results = {r["module_id"]: r for r in json.loads(proc.stdout)["uploaded"]}
        assert set(results) == {doomed.module_id, good.module_id}  # the discarded one is not tried
        assert results[doomed.module_id]["outcome"] == "refused"
        assert results[doomed.module_id]["error"]["code"] == "E_PRIVACY_POLICY"
        assert results[good.module_id]["outcome"] == "registered"
        assert results[good.module_id]["receipt_verified"]
        rec = record(cfg, doomed.module_id)
        assert rec["status"] == "refused" and rec["error"]["by"] == "aggregator"
        assert "requires a privacy report" in rec["error"]["message"]
        # the site's own privacy check of the package it sent agrees: an ordinary refusal
        assert rec["error"]["recheck"]["verdict"] == "agrees"
        assert "has none" in rec["error"]["recheck"]["finding"]
        assert not (cfg.parent / "state" / "modules" / doomed.module_id / "sealed.bin").exists()
        assert record(cfg, good.module_id)["status"] == "registered"
        assert record(cfg, spare.module_id)["status"] == "discarded"
        entries = ledger_entries(fed, agg.address)
        assert [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"] == [
            good.module_id
        ]

        # the next plain upload has nothing left to send, and says so
        again = site_node("upload", "--config", cfg)
        assert again.returncode == 0 and "nothing to upload" in again.stdout
        # a registered module is not discarded (it is forgotten instead), nor is a bad reason taken
        proc = site_node(
            "discard",
            "--config",
            cfg,
            "--module",
            good.module_id,
            "--reason",
            "x",
            "--json",
            check=False,
        )
        assert proc.returncode == 1
        assert error_code(proc) == "E_MODULE_STATUS"
        proc = site_node(
            "discard",
            "--config",
            cfg,
            "--module",
            doomed.module_id,
            "--reason",
            "a\nb",
            "--json",
            check=False,
        )
        assert proc.returncode == 1 and error_code(proc) == "E_REASON"
        assert record(cfg, good.module_id)["status"] == "registered"
        assert record(cfg, doomed.module_id)["status"] == "refused"
    finally:
        agg.stop()


def test_train_exits_4_and_prints_the_reason_when_its_module_is_refused(tmp_path):
    fed = federation(tmp_path, REQUIRED)
    cfg = write_site_config(tmp_path, "st-a", "127.0.0.1:1", [0, 1])
    setup_site_in_process(fed, cfg, train=False)
    install(fed, cfg, manifest_file(fed, STRICT, tmp_path / "strict.json"))
    res = CliRunner().invoke(
        cli, ["train", "--config", str(cfg), "--no-progress"], catch_exceptions=False
    )
    assert res.exit_code == EXIT_REFUSED, res.output
    assert "REFUSED by this site's privacy check (E_PRIVACY_POLICY)" in res.stdout
    assert "it will never be sent" in res.stdout and "send it: site-node upload" not in res.stdout
    (module_id,) = module_ids(cfg)
    assert record(cfg, module_id)["status"] == "refused"
    res = CliRunner().invoke(
        cli, ["upload", "--config", str(cfg), "--module", module_id], catch_exceptions=False
    )
    assert res.exit_code == 0 and f"module {module_id}: refused, not sent" in res.stdout


def test_the_site_s_own_limit_refuses_a_module_whatever_the_federation_s_manifest(tmp_path):
    """site.toml [privacy]: without a federation privacy_policy the site still measures its
    module and refuses it over its own limit; a federation limit of 1.0 does not loosen it;
    `check = "federation"` leaves the check to the manifest."""
    fed = federation(tmp_path, REQUIRED)
    own_limit = "[privacy]\nmax_membership_auroc = 0.0\n"  # every module is over it
    cfg = write_site_config(tmp_path, "st-a", "127.0.0.1:1", [0, 1], extra=own_limit)
    setup_site_in_process(fed, cfg, train=False)
    for manifest in (manifest_file(fed, None, tmp_path / "none.json"), fed.home.federation):
        install(fed, cfg, manifest)  # no privacy policy, then one that lifts the AUROC limit
        res = CliRunner().invoke(
            cli, ["train", "--config", str(cfg), "--no-progress"], catch_exceptions=False
        )
        assert res.exit_code == EXIT_REFUSED, res.output
        assert "REFUSED by this site's privacy check (E_PRIVACY_POLICY)" in res.stdout
        assert "is above this site's limit 0 (site.toml privacy.max_membership_auroc)" in (
            res.stdout
        )
    for module_id in module_ids(cfg):
        rec = record(cfg, module_id)
        assert rec["status"] == "refused" and rec["error"]["by"] == "site"
        assert "this site's limit" in rec["error"]["message"]
        assert not (cfg.parent / "state" / "modules" / module_id / "sealed.bin").exists()
    assert len(module_ids(cfg)) == 2

    opted_out = write_site_config(
        tmp_path, "st-b", "127.0.0.1:1", [0, 1], extra=own_limit + 'check = "federation"\n'
    )
    setup_site_in_process(fed, opted_out, train=False)
    install(fed, opted_out, manifest_file(fed, None, tmp_path / "none.json"))
    res = CliRunner().invoke(
        cli, ["train", "--config", str(opted_out), "--no-progress"], catch_exceptions=False
    )
    assert res.exit_code == 0, res.output
    (module_id,) = module_ids(opted_out)
    assert not (opted_out.parent / "state" / "modules" / module_id / "privacy-report.json").exists()


def test_limits_without_required_bind_every_module_and_the_site_measures_each(tmp_path):
    """A policy that sets limits but not `required` (the template's form): the site measures
    every module before sealing it, and the aggregator, over mTLS, refuses a module without a
    report instead of letting it past limits that would then bind only the honest."""
    fed = federation(tmp_path, LIMITS_ONLY)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg = write_site_config(tmp_path, "st-a", agg.address, [0, 1, 2])
        site_cfg, _trust, _ = setup_site_in_process(fed, cfg, train=False)
        install(fed, cfg, manifest_file(fed, None, tmp_path / "no-policy.json"))
        from site_node import trust as trustlib
        from site_node.training import train_module

        # no policy: the site's own check measures the module and signs no report
        silent = train_module(site_cfg, trustlib.load(site_cfg))
        assert silent.status == "trained"
        folder = cfg.parent / "state" / "modules"
        own = json.loads((folder / silent.module_id / "privacy-report.json").read_text())
        assert own["policy"]["policy"] is None and own["policy"]["passes"] is True
        assert [c["source"] for c in own["policy"]["thresholds"]] == ["site"]
        unsigned = SignedPackage.from_bytes(
            (folder / silent.module_id / "package.ffpk").read_bytes()
        )
        assert unsigned.manifest.privacy_report is None
        time.sleep(1.1)  # created_at has 1 s resolution: the unreported module is sent first
        shown = install(fed, cfg, fed.home.federation)
        assert "privacy policy: report required" in shown
        assert "measured on at least 20 members (training images): min_members (default)" in shown
        measured = train_module(site_cfg, trustlib.load(site_cfg))
        assert measured.status == "trained"
        local = json.loads((folder / measured.module_id / "privacy-report.json").read_text())
        assert local["policy"]["required"] is True and local["policy"]["passes"] is True
        signed = SignedPackage.from_bytes(
            (folder / measured.module_id / "package.ffpk").read_bytes()
        ).manifest.privacy_report
        assert signed == local["manifest_report"]
        assert signed["members"] >= 20 and signed["non_members"] >= 20
        assert signed["generated"] == 1000 and signed["near_copy_quantile"] == 0.01

        proc = site_node("upload", "--config", cfg, "--json", check=False)
        assert proc.returncode == EXIT_REFUSED, proc.stderr[-3000:]
        results = {r["module_id"]: r for r in json.loads(proc.stdout)["uploaded"]}
        assert results[silent.module_id]["outcome"] == "refused"
        assert results[silent.module_id]["error"]["code"] == "E_PRIVACY_POLICY"
        assert "requires a privacy report" in results[silent.module_id]["error"]["message"]
        assert results[measured.module_id]["outcome"] == "registered"
        entries = ledger_entries(fed, agg.address)
        assert [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"] == [
            measured.module_id
        ]
    finally:
        agg.stop()
