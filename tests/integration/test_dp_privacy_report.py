"""A DP module's signed privacy report releases nothing outside its DP claim, whatever the
federation, and a DP claim stands in for the privacy policy's figures only where the
federation bounds every DP claim (dp_policy max_epsilon and delta).

A real chain: a site trains the federation's tiny cvae under DP-SGD (Opacus,
one epoch on scikit-learn's digits) with `site-node run --once` as a real
process, against an aggregator serving over mTLS on loopback whose CA-signed
manifest requires a privacy report.

- DP required (max_epsilon 10^4): the policy limits the membership AUROC to 0.0
  (an AUROC is never below 0, so any stated AUROC breaks it and verdicts do not
  depend on training noise). The site measures the module, signs only the
  data-independent figures, keeps the measured ones in its local report with a
  warning, and the aggregator registers it, and the same weights re-signed with a
  claim of epsilon 10^4 (within the federation's bound) and no figures;
  `aggregator ledger export` and `ffsecure audit verify` VERIFY the bundle. The
  same weights signed the old way (a DP module stating its figures) are refused
  over the same mTLS channel with E_PRIVACY_POLICY.
- DP not required, DP claims bounded (max_epsilon 10^4, delta): a site that runs DP
  by its own choice ([dp] in site.toml) signs no measured figure either, and the
  module registers, its claim covering the limits; what `site-node privacy-check
  --attach` signs without --config is the same. The same weights without a DP claim
  and without figures are refused.
- DP not required, no bound on DP claims: the site signs no measured figure, the
  claim cannot stand in for them, and the site refuses its own module, as the
  aggregator would.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from click.testing import CliRunner

from ffsecure import envelope
from ffsecure.federation import create_signed_manifest
from ffsecure.package import SignedPackage, new_module_id, sign_package
from ffsecure.privacy.report import DATA_DEPENDENT
from site_node import trust as trustlib
from site_node.cli import cli
from site_node.client import AggregatorError
from site_node.config import load_config
from tests.conftest import REPO, cli_env
from tests.integration.test_site_node import (
    InProcessAggregator,
    free_port,
    ledger_entries,
    setup_site_in_process,
    site_node,
    write_site_config,
)
from tests.integration.test_site_privacy_policy import events, federation, module_ids, record

POLICY = {"required": True, "max_membership_auroc": 0.0, "max_near_copy_fraction": 1.0}
LAX = {"required": True, "max_membership_auroc": 1.0, "max_near_copy_fraction": 1.0}
DP_TABLE = "\n[dp]\ntarget_epsilon = 8.0\ndelta = 1e-4\n"
DP_REQUIRED = {"required": True, "max_epsilon": 1e4, "delta": 1e-4}
DP_BOUNDED = {"required": False, "max_epsilon": 1e4, "delta": 1e-4}
#: the figures a DP module signs
DATA_INDEPENDENT = {"v", "generated", "near_copy_quantile", "dp_epsilon_recomputed", "dp_delta"}
NO_FIGURES = {"v": 1, "generated": 1000}


def _federation(tmp_path, policy: dict, dp_policy: dict | None):
    """A federation whose CA-signed manifest has ``policy`` and, if given, ``dp_policy``."""
    fed = federation(tmp_path, policy)
    if dp_policy is not None:
        fed.manifest = dataclasses.replace(fed.manifest, dp_policy=dp_policy)
        fed.home.federation.write_bytes(create_signed_manifest(fed.manifest, fed.ca))
    return fed


def _trained(tmp_path, fed, address: str) -> tuple:
    """`site-node run --once` of a DP site: (site.toml, its stderr events, module id, package)."""
    cfg = write_site_config(tmp_path, "st-dp", address, [0, 1])
    cfg.write_text(cfg.read_text() + DP_TABLE)
    setup_site_in_process(fed, cfg, train=False)
    proc = site_node("run", "--config", cfg, "--once", check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = events(proc.stderr)
    (module_id,) = module_ids(cfg)
    assert record(cfg, module_id)["status"] == "registered"
    folder = cfg.parent / "state" / "modules" / module_id
    return cfg, found, folder, SignedPackage.from_bytes((folder / "package.ffpk").read_bytes())


def _cli_json(prog: str, *args) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", prog, *map(str, args), "--json"],
        cwd=REPO,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode in (0, 3), f"{prog} {args[:2]}: {proc.stderr[-3000:]}"
    return proc.returncode, json.loads(proc.stdout)


def _upload(cfg_path, pkg: SignedPackage) -> AggregatorError | None:
    """Seal ``pkg`` for the federation and send it over the site's mTLS client; the refusal."""
    cfg = load_config(cfg_path)
    trust = trustlib.load(cfg)
    sealed = envelope.seal(
        pkg.to_bytes(),
        trust.federation.hpke_public_key,
        federation_id=trust.federation.federation_id,
        key_id=trust.federation.hpke_key_id,
        suite=trust.federation.hpke_suite,
    )
    with trustlib.make_client(cfg, trust) as client:
        try:
            client.upload(sealed, module_id=pkg.manifest.module_id, site_id=cfg.site_id)
        except AggregatorError as exc:
            return exc
    return None


def _upload_refused(cfg_path, pkg: SignedPackage) -> AggregatorError:
    refused = _upload(cfg_path, pkg)
    assert refused is not None, f"module {pkg.manifest.module_id} was registered"
    return refused


def _resigned(cfg_path, pkg: SignedPackage, **changes) -> SignedPackage:
    """``pkg``'s weights under a fresh module id with ``changes``, signed by the site's key."""
    trust = trustlib.load(load_config(cfg_path))
    manifest = dataclasses.replace(pkg.manifest, module_id=new_module_id(), **changes)
    return sign_package(manifest, pkg.weights, trust.key, trust.cert)


def test_a_dp_module_signs_no_measured_figure_and_registers_and_verifies(tmp_path):
    fed = _federation(tmp_path, POLICY, DP_REQUIRED)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg, found, folder, pkg = _trained(tmp_path, fed, agg.address)
        (warning,) = [e for e in found if e["event"] == "privacy_warning"]
        assert "membership AUROC" in warning["msg"] and "DP claim covers it" in (warning["msg"])
        module_id = warning["module_id"]

        # the signed manifest: the DP claim and data-independent figures only
        dp = pkg.manifest.dp
        assert dp is not None and 0 < dp["epsilon"] <= 8.0
        signed = pkg.manifest.privacy_report
        assert set(signed) == {
            "v",
            "generated",
            "near_copy_quantile",
            "dp_epsilon_recomputed",
            "dp_delta",
        }
        assert signed["generated"] == 1000 and signed["dp_delta"] == dp["delta"]
        for key in DATA_DEPENDENT:
            assert f'"{key}"'.encode() not in pkg.manifest_bytes, key

        # the local report keeps every measured figure, and the verdict says what covers what
        local = json.loads((folder / "privacy-report.json").read_text())
        assert local["manifest_report"] == signed
        assert local["membership"]["members"] > 0 and local["membership"]["non_members"] > 0
        assert 0.0 < local["membership"]["auroc"] <= 1.0
        assert local["memorization"]["generated"] == 1000
        assert set(local["withheld"]) >= {"members", "non_members", "membership_auroc"}
        assert local["policy"]["passes"] is True and local["policy"]["dp_claim"] is True
        assert local["policy"]["dp_covers"] is True
        assert local["policy"]["covered_by_dp"] == [
            "max_membership_auroc",
            "max_near_copy_fraction",
        ]
        assert local["policy"]["problems"] == [] and len(local["policy"]["warnings"]) == 1

        # the same check again, shown to the site operator: covered, a warning, exit 0
        res = CliRunner().invoke(
            cli,
            ["privacy-check", "--config", str(cfg), "--module", module_id, "--samples", "50"],
            catch_exceptions=False,
        )
        assert res.exit_code == 0, res.output
        assert "privacy policy (report required): PASS" in res.output
        assert "  PASS  membership AUROC not released: covered by the DP claim" in res.output
        assert "  WARN  membership AUROC" in res.output and "FAIL" not in res.output
        assert "signed report leaves out" in res.output and "membership_auroc" in res.output

        # epsilon 10^4 without figures: within the federation's bound, so the claim covers them
        huge = _resigned(cfg, pkg, dp={**dp, "epsilon": 1e4}, privacy_report=NO_FIGURES)
        assert _upload(cfg, huge) is None
        # the old format (a DP module stating its figures)
        old = _resigned(
            cfg, pkg, privacy_report={**signed, "membership_auroc": local["membership"]["auroc"]}
        )
        refused = _upload_refused(cfg, old)
        assert refused.code == "E_PRIVACY_POLICY" and "membership AUROC" in refused.message

        entries = ledger_entries(fed, agg.address)
        registered = [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"]
        assert registered == [module_id, huge.manifest.module_id]
    finally:
        agg.stop()

    # the operator's view and the auditor's verdict
    home = fed.home.root
    _code, shown = _cli_json("aggregator", "modules", "show", "--dir", home, module_id)
    assert shown["privacy_report"] == signed
    assert shown["privacy_policy"]["passes"] is True
    assert shown["privacy_policy"]["covered_by_dp"] == [
        "max_membership_auroc",
        "max_near_copy_fraction",
    ]
    bundle = tmp_path / "bundle"
    _cli_json("aggregator", "ledger", "export", "--dir", home, "--out", bundle)
    (tmp_path / "ca.pem").write_bytes(fed.ca_pem)
    code, verdict = _cli_json("ffsecure", "audit", "verify", bundle, "--ca", tmp_path / "ca.pem")
    assert (code, verdict["verdict"], verdict["findings"]) == (0, "VERIFIED", [])


def test_a_sites_own_dp_module_signs_no_figure_where_dp_is_not_required(tmp_path):
    """The federation bounds every DP claim without requiring DP: the claim covers the limits."""
    fed = _federation(tmp_path, LAX, DP_BOUNDED)
    agg = InProcessAggregator(fed, free_port()).start()
    try:
        cfg, found, folder, pkg = _trained(tmp_path, fed, agg.address)
        assert not [e for e in found if e["event"] == "privacy_warning"]  # LAX: none exceeded
        module_id = pkg.manifest.module_id

        # the DP claim and data-independent figures only, as under required DP
        dp, signed = pkg.manifest.dp, pkg.manifest.privacy_report
        assert dp is not None and 0 < dp["epsilon"] <= 8.0
        assert set(signed) == DATA_INDEPENDENT
        for key in DATA_DEPENDENT:
            assert f'"{key}"'.encode() not in pkg.manifest_bytes, key
        # the local report keeps them for the site
        local = json.loads((folder / "privacy-report.json").read_text())
        assert local["manifest_report"] == signed
        assert local["membership"]["members"] > 0 and 0.0 < local["membership"]["auroc"] <= 1.0
        assert set(local["withheld"]) == set(measured_keys(local)) & DATA_DEPENDENT
        assert local["policy"]["dp_claim"] is True and local["policy"]["dp_covers"] is True
        assert local["policy"]["passes"] is True
        assert local["policy"]["covered_by_dp"] == [
            "max_membership_auroc",
            "max_near_copy_fraction",
        ]

        # a module without a DP claim and without figures is refused, as before
        bare = _resigned(cfg, pkg, dp=None, privacy_report=NO_FIGURES)
        refused = _upload_refused(cfg, bare)
        assert refused.code == "E_PRIVACY_POLICY" and "does not state it" in refused.message

        # without --config the site signs exactly what it signs with it
        blind_path = tmp_path / "blind.ffpk"
        args = ["privacy-check", "--module", folder / "package.ffpk", "--data", "digits"]
        args += ["--samples", "50", "--out", tmp_path / "blind", "--attach"]
        args += ["--key", load_config(cfg).key_path, "--cert", cfg.parent / "site.pem"]
        res = CliRunner().invoke(
            cli, [*map(str, args), "--output", str(blind_path)], catch_exceptions=False
        )
        assert res.exit_code == 0, res.output
        assert "withheld under the DP claim" in res.output
        blind = SignedPackage.from_bytes(blind_path.read_bytes())
        assert set(blind.manifest.privacy_report) == DATA_INDEPENDENT
        assert _upload(cfg, _resigned(cfg, blind)) is None

        entries = ledger_entries(fed, agg.address)
        registered = [e["facts"]["module_id"] for e in entries if e["type"] == "module.registered"]
        assert len(registered) == 2 and registered[0] == module_id
    finally:
        agg.stop()


def measured_keys(local: dict) -> list[str]:
    """The manifest report keys of every figure the site measured (signed or not)."""
    from ffsecure.privacy.report import measured_report

    return sorted(measured_report(local))


def test_a_dp_module_the_federation_bounds_no_claim_for_is_refused_by_its_site(tmp_path):
    """Nothing bounds the claim (epsilon 10^4 would be as good), so it cannot stand in for the
    figures it withholds: the site refuses the module rather than release them."""
    fed = _federation(tmp_path, LAX, None)
    assert fed.manifest.dp_policy["max_epsilon"] is None
    cfg = write_site_config(tmp_path, "st-dp", "127.0.0.1:1", [0, 1])
    cfg.write_text(cfg.read_text() + DP_TABLE)
    _cfg, _trust, rec = setup_site_in_process(fed, cfg)
    assert rec.status == "refused" and rec.error["by"] == "site"
    assert rec.error["code"] == "E_PRIVACY_POLICY"
    assert "bounds no DP claim" in rec.error["message"]
    folder = cfg.parent / "state" / "modules" / rec.module_id
    pkg = SignedPackage.from_bytes((folder / "package.ffpk").read_bytes())
    assert pkg.manifest.dp is not None
    assert set(pkg.manifest.privacy_report) == DATA_INDEPENDENT
    local = json.loads((folder / "privacy-report.json").read_text())
    assert local["policy"]["dp_covers"] is False and local["policy"]["passes"] is False
    assert 0.0 < local["membership"]["auroc"] <= 1.0  # measured, kept local
