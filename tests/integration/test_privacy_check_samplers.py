"""The site's privacy check does not depend on the sampler the federation manifest names.

A hostile operator's CA-signed manifest names the flow family with ``sample_steps = 1``, a
sampling-only setting (training is the same): one Euler step returns each class's average,
which is a near-copy of no training image. A site trains its flow module (scikit-learn's
digits, 30 training images of each of two classes, 200 epochs: a module that memorizes)
and its gate runs the privacy check through the library. Measured under the manifest's
sampler alone the module passes the federation's near-copy limit; the aggregator holds the
weights and samples them however it likes, so the check also measures under the family's
reference samplers, judges the worst, and the site refuses the module.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from sklearn.datasets import load_digits

from ffsecure import generators
from ffsecure.federation import create_signed_manifest
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import DIGITS, setup_site_in_process, write_site_config

POLICY = {"max_near_copy_fraction": 0.05, "max_membership_auroc": 1.0}


def _site_npz(root) -> str:
    """30 training and 45 held-out images of digits 0 and 1, as a MedMNIST-layout npz."""
    x, y = load_digits(return_X_y=True)
    x = (x.reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    idx = {c: np.where(y == c)[0] for c in (0, 1)}
    train = np.concatenate([idx[0][:30], idx[1][:30]])
    test = np.concatenate([idx[0][100:145], idx[1][100:145]])
    path = root / "site.npz"
    np.savez(
        path,
        train_images=x[train],
        train_labels=y[train][:, None],
        test_images=x[test],
        test_labels=y[test][:, None],
    )
    return f"npz:{path}"


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """The site's module record and local report under a manifest naming a one-step sampler."""
    root = tmp_path_factory.mktemp("sampler")
    fed = build_federation(root / "fed", labels=DIGITS, sites=())
    config = generators.default_config(
        "flow", image_shape=fed.manifest.image_shape, num_classes=len(DIGITS), size="tiny"
    )
    manifest = dataclasses.replace(
        fed.manifest,
        generator={"family": "flow", "config": {**config, "sample_steps": 1}},
        privacy_policy=dict(POLICY),
    )
    fed.home.federation.write_bytes(create_signed_manifest(manifest, fed.ca))
    # the site lifts its own AUROC limit as the policy does: the near-copy limit is judged
    lifted = "[privacy]\nmax_membership_auroc = 1.0\n"
    cfg = write_site_config(root, "st-flow", "127.0.0.1:1", [], extra=lifted)
    text = cfg.read_text().replace('source = "digits"', f'source = "{_site_npz(root)}"')
    cfg.write_text(text.replace("epochs = 1\n", "epochs = 200\nbatch_size = 30\n"))
    _cfg, _trust, record = setup_site_in_process(fed, cfg)
    folder = cfg.parent / "state" / "modules" / record.module_id
    return record, json.loads((folder / "privacy-report.json").read_text())


def test_the_site_refuses_a_module_that_only_the_manifests_sampler_would_pass(one_step):
    record, local = one_step
    # the worst over the samplers is judged, and the site refuses the module
    assert record.status == "refused" and record.error["by"] == "site"
    assert record.error["code"] == "E_PRIVACY_POLICY"
    assert "near-copy fraction" in record.error["message"]
    assert local["policy"]["passes"] is False
    assert local["manifest_report"]["near_copy_fraction"] > POLICY["max_near_copy_fraction"]
    # under the manifest's sampler alone it was within the limit, as the operator meant
    manifest = local["samplers"]["manifest"]
    assert manifest["settings"] == {"guidance_scale": 1.0, "sample_steps": 1, "solver": "heun"}
    assert manifest["memorization"]["near_copy_fraction"] <= POLICY["max_near_copy_fraction"]


def test_the_report_names_the_sampler_of_each_worst_figure(one_step):
    _record, local = one_step
    samplers, worst = local["samplers"], local["worst_sampler"]
    assert set(samplers) == {"manifest", "standard", "coarse"}
    assert samplers["standard"]["settings"]["sample_steps"] == 8
    assert samplers["coarse"]["settings"] == {
        "guidance_scale": 1.0,
        "sample_steps": 2,
        "solver": "euler",
    }
    assert worst["near_copy_fraction"] != "manifest"
    fractions = {n: s["memorization"]["near_copy_fraction"] for n, s in samplers.items()}
    assert local["memorization"]["near_copy_fraction"] == max(fractions.values())
    assert fractions[worst["near_copy_fraction"]] == max(fractions.values())
    assert local["memorization"]["sampler"] == worst["near_copy_fraction"]
    aurocs = {n: s["membership"]["auroc"] for n, s in samplers.items()}
    assert local["membership"]["auroc"] == max(aurocs.values())
    assert aurocs[worst["membership_auroc"]] == max(aurocs.values())
    assert local["manifest_report"]["membership_auroc"] == round(max(aurocs.values()), 6)
