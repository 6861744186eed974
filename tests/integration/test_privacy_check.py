"""privacy-check on a memorizing module, its signed report, and the aggregator refusing it over
mTLS.

A real chain: a tiny cvae overfit on 16 images (a module that memorizes) ->
the privacy check measures it and the site signs the report into the package
(in-process, and, in the slow tests, through `site-node privacy-check --attach`
as a real process) -> the aggregator of a federation whose privacy policy
caps the membership AUROC refuses the upload with E_PRIVACY_POLICY over real
mTLS gRPC, and its store and log do not change; a compliant module is accepted.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from ffsecure import envelope, generators, pki
from ffsecure.data import load_digits, load_npz
from ffsecure.federation import create_signed_manifest
from ffsecure.package import SignedPackage, build_manifest, sign_package, verify_package
from ffsecure.privacy.attach import attach_report
from ffsecure.privacy.policy import effective_policy
from site_node.client import AggregatorError
from tests.conftest import cli_env
from tests.federation_fixture import build_federation

# the site below holds 16 training images: the federation accepts figures measured on 16 members
POLICY = {
    "required": True,
    "max_membership_auroc": 0.6,
    "max_near_copy_fraction": 0.05,
    "min_members": 16,
}
#: how an honest check measures (default --samples, the quantile rule), for hand-made reports
MEASURED = {
    "generated": 1000,
    "near_copy_threshold": 0.12,
    "near_copy_quantile": 0.01,
    "near_copy_holdout": 64,
}


def _seal(fed, pkg) -> bytes:
    return envelope.seal(
        pkg.to_bytes(),
        fed.manifest.hpke_public_key,
        federation_id=fed.federation_id,
        key_id=fed.manifest.hpke_key_id,
        suite=fed.manifest.hpke_suite,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("privacy")
    fed = build_federation(root / "fed")
    # the federation's CA signs a manifest with a privacy policy
    fed.manifest = dataclasses.replace(fed.manifest, privacy_policy=dict(POLICY))
    fed.signed_manifest = create_signed_manifest(fed.manifest, fed.ca)
    pki.write_public_file(fed.home.federation, fed.signed_manifest)

    # the site's data: 16 training images, 64 held-out ones (classes 0..3 of digits), as a
    # MedMNIST-layout npz
    ds = load_digits()
    keep = ds.train_y < 4
    x, y = ds.train_x[keep][:80], ds.train_y[keep][:80]
    u8 = ((x[:, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    npz = root / "site.npz"
    np.savez(
        npz,
        train_images=u8[:16],
        train_labels=y[:16].numpy()[:, None],
        test_images=u8[16:],
        test_labels=y[16:].numpy()[:, None],
    )
    site = load_npz(npz)

    family, config = fed.manifest.generator["family"], fed.manifest.generator["config"]
    gen = generators.build(family, config)
    gen.fit(
        site.train_x,
        site.train_y,
        generators.TrainSettings(epochs=120, batch_size=16, lr=5e-3, seed=0),
    )
    weights = generators.to_safetensors(gen)
    creds = fed.sites["st-mary"]
    manifest = build_manifest(
        federation=fed.manifest,
        site_id="st-mary",
        weights=weights,
        classes=sorted({int(v) for v in site.train_y}),
        seed=0,
    )
    pkg = sign_package(manifest, weights, creds.key, creds.cert)
    path = root / "package.ffpk"
    path.write_bytes(pkg.to_bytes())
    return fed, root, npz, path, pkg


def _site_node(*args):
    return subprocess.run(
        [sys.executable, "-m", "site_node", *args],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def leaky_report(world):
    """The library's check of the memorizing module, in-process (what privacy-check signs)."""
    from ffsecure.privacy.check import run_check

    _fed, _root, npz, _path, pkg = world
    site = load_npz(npz)
    gen = generators.from_state(
        pkg.manifest.generator["family"], pkg.manifest.generator["config"], pkg.weights
    )
    full = run_check(
        gen,
        members=(site.train_x, site.train_y),
        non_members=(site.test_x, site.test_y),
        n_generated=200,
    )
    assert full["membership"]["auroc"] > 0.9
    return full["manifest_report"]


@pytest.fixture(scope="module")
def checked(world):
    fed, root, npz, path, _pkg = world
    creds = fed.sites["st-mary"]
    out = root / "report"
    proc = _site_node(
        "privacy-check",
        "--module",
        str(path),
        "--data",
        f"npz:{npz}",
        "--samples",
        "200",
        "--attach",
        "--key",
        str(creds.key_path),
        "--cert",
        str(creds.cert_path),
        "--output",
        str(root / "attached.ffpk"),
        "--out",
        str(out),
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout), out, root / "attached.ffpk"


def test_privacy_check_command_in_process(world, tmp_path):
    """The same click command, in-process, so that the default suite runs it (the slow tests run it
    as a process)."""
    from click.testing import CliRunner

    from site_node.cli import cli

    fed, _root, npz, path, pkg = world
    creds = fed.sites["st-mary"]
    out, attached_path = tmp_path / "out", tmp_path / "attached.ffpk"
    r = CliRunner().invoke(
        cli,
        [
            "privacy-check",
            "--module",
            str(path),
            "--data",
            f"npz:{npz}",
            "--samples",
            "100",
            "--attach",
            "--key",
            str(creds.key_path),
            "--cert",
            str(creds.cert_path),
            "--output",
            str(attached_path),
            "--out",
            str(out),
            "--json",
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    full = json.loads(r.stdout)
    assert full["module_id"] == pkg.manifest.module_id and full["attached_to"] == str(attached_path)
    assert full["membership"]["auroc"] > 0.9 and full["memorization"]["near_copy_fraction"] > 0.1
    assert full["accounting"] == {"dp": False}
    assert full["membership"]["non_member_split"] == "test"  # this npz has no val split
    assert (out / "closest-pairs.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        json.loads((out / "privacy-report.json").read_text())["manifest_report"]
        == full["manifest_report"]
    )
    assert path.read_bytes() == pkg.to_bytes()
    attached = SignedPackage.from_bytes(attached_path.read_bytes())
    assert (
        attached.manifest.privacy_report == full["manifest_report"]
        and attached.weights == pkg.weights
    )
    verify_package(attached, federation=fed.manifest, ca_cert=fed.ca.cert)
    # the person-readable summary, without --attach: nothing new is signed
    r = CliRunner().invoke(
        cli,
        [
            "privacy-check",
            "--module",
            str(attached_path),
            "--data",
            f"npz:{npz}",
            "--samples",
            "50",
            "--out",
            str(tmp_path / "again"),
        ],
        catch_exceptions=False,
    )
    assert r.exit_code == 0, r.output
    assert (
        "membership inference: AUROC 0.9" in r.stdout
        or "membership inference: AUROC 1.000" in r.stdout
    )
    assert "DP: none (no formal guarantee)" in r.stdout and "closest pairs:" in r.stdout
    assert SignedPackage.from_bytes(attached_path.read_bytes()).manifest == attached.manifest


def test_privacy_check_takes_non_members_from_the_validation_split(world, tmp_path):
    """A source with a validation split: its images (drawn with the training split) are the
    non-members, never the test split's."""
    from click.testing import CliRunner

    from site_node.cli import cli

    _fed, _root, npz, path, _pkg = world
    arrays = dict(np.load(npz))
    with_val = tmp_path / "with-val.npz"
    np.savez(
        with_val,
        train_images=arrays["train_images"],
        train_labels=arrays["train_labels"],
        val_images=arrays["test_images"][:32],
        val_labels=arrays["test_labels"][:32],
        test_images=arrays["test_images"][32:],
        test_labels=arrays["test_labels"][32:],
    )
    args = ["privacy-check", "--module", str(path), "--data", f"npz:{with_val}"]
    args += ["--samples", "50", "--out", str(tmp_path / "out")]
    r = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    mia = json.loads(r.stdout)["membership"]
    assert mia["non_member_split"] == "val" and mia["non_members"] == 32
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert "(16 members vs 32 held-out val images;" in r.stdout


@pytest.mark.slow
def test_privacy_check_flags_the_memorizing_module_and_signs_the_report(world, checked):
    fed, _root, _npz, path, pkg = world
    full, out, attached_path = checked
    assert full["module_id"] == pkg.manifest.module_id
    assert full["membership"]["members"] == 16 and full["membership"]["non_members"] == 64
    assert full["membership"]["auroc"] > 0.9
    assert full["memorization"]["near_copy_fraction"] > 0.1
    assert full["accounting"] == {"dp": False}
    assert (
        json.loads((out / "privacy-report.json").read_text())["manifest_report"]
        == full["manifest_report"]
    )
    assert (out / "closest-pairs.png").read_bytes()[:4] == b"\x89PNG"
    # the original package is untouched; the new one carries the report under the site's signature
    assert path.read_bytes() == pkg.to_bytes()
    attached = SignedPackage.from_bytes(attached_path.read_bytes())
    assert attached.manifest.privacy_report == full["manifest_report"]
    assert attached.manifest.module_id == pkg.manifest.module_id and attached.weights == pkg.weights
    verified = verify_package(attached, federation=fed.manifest, ca_cert=fed.ca.cert)
    assert verified.site_id == "st-mary"


def test_aggregator_refuses_modules_that_break_the_privacy_policy(world, leaky_report):
    fed, _root, _npz, _path, pkg = world
    creds = fed.sites["st-mary"]
    leaky = attach_report(pkg, leaky_report, creds.key, creds.cert)
    compliant = attach_report(
        pkg,
        {
            "v": 1,
            "members": 16,
            "non_members": 64,
            "membership_auroc": 0.52,
            "near_copy_fraction": 0.0,
            **MEASURED,
        },
        creds.key,
        creds.cert,
    )
    # the memorizing module measured on two members, at --threshold 0: nothing counts
    weak = attach_report(
        pkg,
        {
            "v": 1,
            "members": 2,
            "non_members": 2,
            "generated": 1000,
            "membership_auroc": 0.5,
            "near_copy_fraction": 0.0,
            "near_copy_threshold": 0.0,
        },
        creds.key,
        creds.cert,
    )
    with fed.serve() as srv:
        store = srv.runtime.store
        before = (store.size(), len(store.list_modules()))
        with fed.client("st-mary", srv.address) as c:
            for bad, needle in (
                (leaky, "is above the federation's limit 0.6 (max_membership_auroc)"),
                (pkg, "requires a privacy report"),
                (weak, "measured on 2 members"),
            ):
                with pytest.raises(AggregatorError) as err:
                    c.upload(_seal(fed, bad), module_id=bad.manifest.module_id, site_id="st-mary")
                assert err.value.code == "E_PRIVACY_POLICY" and needle in err.value.message
                assert (store.size(), len(store.list_modules())) == before  # nothing written
            receipt = c.upload(
                _seal(fed, compliant), module_id=compliant.manifest.module_id, site_id="st-mary"
            )
        assert receipt.index == before[0] and store.size() == before[0] + 1
        assert [m.module_id for m in store.list_modules()] == [compliant.manifest.module_id]


def test_aggregator_modules_list_and_show_the_privacy_report(world, tmp_path):
    """`aggregator modules list/show` (the operator's view): the signed report's numbers, a dash
    without one.

    On a copy of the home: a compliant module with a report, registered through the real Registrar,
    and a module without one, registered before the federation set its (required) privacy policy.
    """
    from click.testing import CliRunner

    from aggregator.cli import cli as aggregator_cli
    from aggregator.store import open_home_store
    from tests.ops_fixture import peer, registrar, trained_package

    fed, _root, _npz, _path, _pkg = world
    home = tmp_path / "agg"
    shutil.copytree(fed.home.root, home)
    report = {
        "v": 1,
        "members": 40,
        "non_members": 40,
        "membership_auroc": 0.52,
        "membership_calibrated_auroc": 0.555,
        "near_copy_fraction": 0.02,
        **MEASURED,
    }
    _sealed, pkg = trained_package(fed, "st-john", [0, 1], 7)
    creds = fed.sites["st-john"]
    with_report = attach_report(pkg, report, creds.key, creds.cert)
    without, _ = trained_package(fed, "st-mary", [2, 3], 8)
    with open_home_store(home) as store:
        reg = registrar(fed, store)
        rid = reg.register(_seal(fed, with_report), peer(fed, "st-john")).module_id
        reg.federation = dataclasses.replace(
            fed.manifest, privacy_policy=None
        )  # before the policy was set
        nid = reg.register(without, peer(fed, "st-mary")).module_id

    def invoke(*args):
        r = CliRunner().invoke(
            aggregator_cli, ["modules", *args, "--dir", str(home)], catch_exceptions=False
        )
        assert r.exit_code == 0, r.output
        return r.stdout

    rows = {r["module_id"]: r for r in json.loads(invoke("list", "--json"))}
    assert rows[rid]["privacy_report"] == report and rows[nid]["privacy_report"] is None
    table = invoke("list")
    line = next(ln for ln in table.splitlines() if rid in ln)
    assert (
        "0.555" in line and "0.020" in line
    )  # the stronger (calibrated) attack's AUROC; near-copy fraction
    assert next(ln for ln in table.splitlines() if nid in ln).count("\u2014") == 2
    assert "MIA" in table and "near-copy" in table

    shown = json.loads(invoke("show", rid, "--json"))
    assert shown["privacy_report"] == report
    assert shown["privacy_policy"] == {
        "policy": effective_policy(POLICY),  # the policy in force: its size minima included
        "required": True,
        "passes": True,
        "reason": None,
        "covered_by_dp": [],  # no DP claim: every threshold is judged on the report's figures
    }
    text = invoke("show", rid)
    assert "  membership_calibrated_auroc: 0.555" in text and "  near_copy_fraction: 0.02" in text
    assert "privacy_policy: report required; passes" in text
    shown = json.loads(invoke("show", nid, "--json"))
    assert shown["privacy_report"] is None and shown["privacy_policy"]["passes"] is False
    assert "requires a privacy report" in shown["privacy_policy"]["reason"]
    text = invoke("show", nid)
    assert "privacy_report: \u2014 (none)" in text
    assert (
        "privacy_policy: report required; FAILS: the federation requires a privacy report" in text
    )


@pytest.mark.slow
def test_cli_errors_are_typed_and_change_nothing(world):
    _fed, root, npz, path, pkg = world
    proc = _site_node("privacy-check", "--module", str(path), "--data", f"npz:{npz}", "--attach")
    assert proc.returncode == 1
    assert "error[E_CONFIG]" in proc.stderr and "--key" in proc.stderr
    proc = _site_node(
        "privacy-check", "--module", str(path), "--data", f"npz:{root / 'missing.npz'}", "--json"
    )
    assert proc.returncode == 1
    assert json.loads(proc.stderr.strip().splitlines()[-1])["error"]["code"] == "E_DATA_MISSING"
    assert path.read_bytes() == pkg.to_bytes()


def _site_with_optional_report(fed, tmp_path, npz):
    """st-john's site.toml and trust, under the federation's manifest without a privacy policy
    (any policy requires a report, so `train` would run the check of its own), and a site that
    leaves the check to the federation (`privacy.check = "federation"`): `train` measures
    nothing, `privacy-check` is the only measurement."""
    from site_node import trust as trustlib
    from site_node.config import load_config

    creds = fed.sites["st-john"]
    cfg_path = tmp_path / "site.toml"
    cfg_path.write_text(f"""\
[site]
federation_id = "{fed.federation_id}"
site_id = "st-john"
state_dir = "state"

[pki]
key = "{creds.key_path}"

[data]
source = "npz:{npz}"
label_match = "index"

[train]
size = "tiny"
epochs = 2
threads = 1

[privacy]
check = "federation"
""")
    cfg = load_config(cfg_path)
    optional = dataclasses.replace(fed.manifest, privacy_policy=None)
    optional_path = tmp_path / "federation-optional.json"
    optional_path.write_bytes(create_signed_manifest(optional, fed.ca))
    trust = trustlib.install(
        cfg, cert_file=creds.cert_path, ca_file=fed.home.ca_cert, federation_file=optional_path
    )
    return cfg_path, cfg, trust


def test_privacy_check_refuses_data_that_changed_since_the_module_trained(world, tmp_path):
    """Members are the module's training images: after the data changes they cannot be told
    apart, so the check refuses (E_STATE) rather than measure, or sign, other images."""
    from site_node.state import StateDir
    from site_node.training import train_module

    fed, _root, npz, _path, _pkg = world
    data = tmp_path / "site.npz"
    data.write_bytes(npz.read_bytes())
    cfg_path, cfg, trust = _site_with_optional_report(fed, tmp_path, data)
    record = train_module(cfg, trust)
    state = StateDir(cfg.state_dir)
    before = state.package_path(record.module_id).read_bytes()
    arrays = dict(np.load(data))
    arrays["train_images"] = arrays["train_images"][1:]  # one training image removed
    arrays["train_labels"] = arrays["train_labels"][1:]
    np.savez(data, **arrays)
    proc = _site_node("privacy-check", "--config", str(cfg_path), "--attach", "--json")
    assert proc.returncode == 1
    error = json.loads(proc.stderr.strip().splitlines()[-1])["error"]
    assert error["code"] == "E_STATE"
    assert f"no longer holds the data module {record.module_id} was trained on" in error["message"]
    assert "site-node train" in error["hint"]
    assert state.package_path(record.module_id).read_bytes() == before  # nothing attached
    assert not (state.module_dir(record.module_id) / "privacy-report.json").exists()


@pytest.mark.slow
def test_privacy_check_from_site_config_attaches_to_the_trained_module(world, tmp_path):
    """`--config site.toml`: the newest trained module in the state dir, the site's data, its key.

    The site holds a manifest without a privacy policy, so that the 2-epoch module's report
    attaches.
    """
    from site_node.state import StateDir
    from site_node.training import train_module

    fed, _root, npz, _path, _pkg = world
    cfg_path, cfg, trust = _site_with_optional_report(fed, tmp_path, npz)
    record = train_module(cfg, trust)
    state = StateDir(cfg.state_dir)
    assert record.status == "trained"
    assert not (state.module_dir(record.module_id) / "privacy-report.json").exists()  # not measured
    proc = _site_node(
        "privacy-check", "--config", str(cfg_path), "--samples", "50", "--attach", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    full = json.loads(proc.stdout)
    assert full["module_id"] == record.module_id
    assert full["membership"]["members"] == 16 and full["membership"]["non_members"] == 64
    assert full["policy"]["passes"] and not full["policy"]["required"]
    assert full["policy"]["policy"] is None and full["policy"]["thresholds"] == []
    assert state.load_module(record.module_id).status == "trained"
    pkg = SignedPackage.from_bytes(state.package_path(record.module_id).read_bytes())
    assert pkg.manifest.privacy_report == full["manifest_report"]
    verify_package(pkg, federation=fed.manifest, ca_cert=fed.ca.cert)
    assert (state.module_dir(record.module_id) / "closest-pairs.png").exists()
    # once the package is sealed for upload, a report can no longer be attached
    state.save_module(dataclasses.replace(record, status="sealed"))
    proc = _site_node(
        "privacy-check", "--config", str(cfg_path), "--module", record.module_id, "--attach"
    )
    assert proc.returncode == 1 and "error[E_STATE]" in proc.stderr
    assert (
        SignedPackage.from_bytes(state.package_path(record.module_id).read_bytes()).manifest
        == pkg.manifest
    )


def test_aggregator_refuses_a_membership_auroc_above_the_default_limit(tmp_path):
    """No AUROC limit set: above 0.55 is refused (digits cvae at epsilon 8: 0.575), over mTLS."""
    fed = build_federation(tmp_path / "fed")
    fed.manifest = dataclasses.replace(fed.manifest, privacy_policy={"required": True})
    fed.signed_manifest = create_signed_manifest(fed.manifest, fed.ca)
    pki.write_public_file(fed.home.federation, fed.signed_manifest)
    creds = fed.sites["st-mary"]
    reports = {
        auroc: {"v": 1, "members": 128, "non_members": 128, "membership_auroc": auroc}
        for auroc in (0.575, 0.55)
    }
    with fed.serve() as srv:
        store = srv.runtime.store
        size_before = store.size()  # serve's federation.loaded and crl.loaded
        with fed.client("st-mary", srv.address) as c:
            _sealed, pkg = fed.make_package("st-mary", seed=1)
            leaky = attach_report(pkg, reports[0.575], creds.key, creds.cert)
            with pytest.raises(AggregatorError) as err:
                c.upload(_seal(fed, leaky), module_id=leaky.manifest.module_id, site_id="st-mary")
            assert err.value.code == "E_PRIVACY_POLICY"
            assert (
                "membership AUROC 0.575 is above the federation's limit 0.55" in err.value.message
            )
            assert store.size() == size_before and store.list_modules() == []  # nothing written
            _sealed, pkg = fed.make_package("st-mary", seed=2)
            at_limit = attach_report(pkg, reports[0.55], creds.key, creds.cert)
            receipt = c.upload(
                _seal(fed, at_limit), module_id=at_limit.manifest.module_id, site_id="st-mary"
            )
        assert receipt.index == size_before and [m.module_id for m in store.list_modules()] == [
            at_limit.manifest.module_id
        ]
