"""Red team: a DP module's signed ``privacy_report`` states the delta of its claim, exactly.

The signed report's ``dp_delta`` is shown to operators and auditors beside the claim's
epsilon. It was rounded to 6 decimals, so an honest site with more than 10,000 images
(default delta ``1 / (10 n)``) signed a smaller delta than its claim (3.3e-6 -> 3e-06, and
5e-8 -> 0: "delta 0", pure DP), and nothing compared it with the claim, so a site could
sign any ``dp_delta`` beside a claim at another delta.
"""

from __future__ import annotations

import pytest

from ffsecure import dp as dpmod
from ffsecure.errors import FFSecureError
from ffsecure.privacy.policy import check_module
from ffsecure.privacy.report import measured_report

REQUIRED = {"required": True, "max_epsilon": 8.0, "delta": 1e-5}


def _claim(delta: float) -> dict:
    eps = dpmod.compute_epsilon(noise_multiplier=1.0, sample_rate=0.01, steps=1000, delta=delta)
    return {
        "epsilon": eps,
        "delta": delta,
        "noise_multiplier": 1.0,
        "sample_rate": 0.01,
        "steps": 1000,
        "accountant": "prv",
        "mechanism": "dp-sgd",
    }


@pytest.mark.parametrize("n", [30_000, 2_000_000])
def test_the_signed_delta_is_the_claim_s_delta_for_a_large_site(n):
    delta = dpmod.default_delta(n)
    claim = _claim(delta)
    report = measured_report(
        {"accounting": {"epsilon_recomputed": claim["epsilon"], "delta": delta}}
    )
    assert report["dp_delta"] == pytest.approx(delta, rel=1e-6)


def test_a_report_whose_delta_is_not_the_claim_s_is_refused():
    claim = _claim(1e-5)
    report = {"v": 1, "dp_epsilon_recomputed": round(claim["epsilon"], 6), "dp_delta": 1e-20}
    with pytest.raises(FFSecureError) as info:
        check_module(report, claim, {}, dp_policy=REQUIRED)
    assert info.value.code == "E_PRIVACY_POLICY" and "delta" in info.value.message
    report["dp_delta"] = 1e-5
    check_module(report, claim, {}, dp_policy=REQUIRED)  # the claim's own delta passes
