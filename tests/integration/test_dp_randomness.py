"""DP randomness at a site: nobody else can reproduce it; without DP the seed repeats the fit.

The library function `site-node train` runs (`site_node.training.train_module`),
with real Opacus, on scikit-learn's digits and the federation's tiny cvae for one
epoch. The published manifest seed is the same in every run; with DP on, the noise
and the Poisson sampling come from the OS CSPRNG, so the weights differ.
"""

from __future__ import annotations

import pytest

from ffsecure.errors import ConfigError
from ffsecure.package import SignedPackage
from tests.federation_fixture import build_federation
from tests.integration.test_site_node import (
    DIGITS,
    setup_site_in_process,
    write_site_config,
)

#: Two trainings at epsilon 8 on one site's data spend more than the default cap of 8 in all
#: (dp.max_total_epsilon counts every DP module trained): this site raises it knowingly.
DP_TABLE = "\n[dp]\ntarget_epsilon = 8.0\nmax_total_epsilon = 100.0\n"


@pytest.fixture
def fed(tmp_path):
    return build_federation(tmp_path / "fed", labels=DIGITS, sites=())


def _train_twice(fed, tmp_path, site_id: str, extra: str):
    from site_node.config import load_config
    from site_node.training import train_module

    cfg_path = write_site_config(tmp_path, site_id, "127.0.0.1:1", [0, 1])
    cfg_path.write_text(cfg_path.read_text() + extra)
    _cfg, trust, first = setup_site_in_process(fed, cfg_path)
    second = train_module(load_config(cfg_path), trust)
    state = tmp_path / site_id / "state" / "modules"
    manifests = [
        SignedPackage.from_bytes((state / r.module_id / "package.ffpk").read_bytes()).manifest
        for r in (first, second)
    ]
    return first, second, manifests


def test_two_dp_trainings_of_one_site_config_give_different_weights(fed, tmp_path):
    first, second, manifests = _train_twice(fed, tmp_path, "st-dp", DP_TABLE)
    assert manifests[0].seed == manifests[1].seed == 0  # the same published seed
    assert manifests[0].dp["steps"] == manifests[1].dp["steps"] > 0
    assert "reproducible" not in manifests[0].dp
    assert first.train["weights_sha256"] != second.train["weights_sha256"]


def test_two_trainings_without_dp_of_one_site_config_give_identical_weights(fed, tmp_path):
    first, second, manifests = _train_twice(fed, tmp_path, "st-plain", "")
    assert manifests[0].dp is None and manifests[0].seed == manifests[1].seed
    assert first.module_id != second.module_id
    assert first.train["weights_sha256"] == second.train["weights_sha256"]


def test_a_site_config_cannot_ask_for_reproducible_dp_noise(tmp_path):
    from site_node.config import load_config

    cfg_path = write_site_config(tmp_path, "st-r", "127.0.0.1:1", [0, 1])
    cfg_path.write_text(cfg_path.read_text() + DP_TABLE + "reproducible = true\n")
    with pytest.raises(ConfigError, match="dp.reproducible"):
        load_config(cfg_path)
