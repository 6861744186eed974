"""Signed DP records as a site writes them, for tests that sign, verify or tamper with one.

The feature-map fields come from :meth:`ffsecure.dp_embedding.FeatureSpec.record`, the
one home of those wire keys, so a test record cannot drift from what ``site-node train``
signs.
"""

from __future__ import annotations

from ffsecure.dp_embedding import FeatureSpec


def mean_embedding_record(*, epsilon: float, noise_multiplier: float, n_features: int) -> dict:
    """A mean-embedding release's record: one Gaussian step at sample rate 1 (PRV)."""
    return {
        "epsilon": epsilon,
        "delta": 1e-5,
        "noise_multiplier": noise_multiplier,
        "sample_rate": 1.0,
        "steps": 1,
        "max_grad_norm": 1.0,
        "accountant": "prv",
        "mechanism": "mean-embedding",
        **FeatureSpec(n_features=n_features).record(),
    }


#: A DP-SGD record of epsilon 3.70 (RDP); two compose to 4.86, so a second such module
#: overspends a ``max_epsilon`` between the two (the site's budget tests use 4.5 and 5.0).
DP_SGD_CLAIM = {
    "epsilon": 3.7,
    "delta": 1e-5,
    "accountant": "rdp",
    "noise_multiplier": 0.8,
    "sample_rate": 0.01,
    "steps": 1000,
}
