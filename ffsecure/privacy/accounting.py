"""The DP epsilon actually spent, re-computed from the recorded training parameters.

A DP-trained module's manifest records what DP-SGD ran
(``noise_multiplier``, ``sample_rate``, ``steps``, ``delta``, ``accountant``)
and the epsilon training reported. :func:`recompute` feeds the recorded
parameters to a fresh Opacus accountant (:func:`ffsecure.dp.compute_epsilon`)
and compares the result with the claim; anyone holding the manifest can
repeat it.
"""

from __future__ import annotations

import math
from typing import Any

from ffsecure.dp import compute_epsilon
from ffsecure.errors import DPError, VerificationError

RTOL = 1e-6
NEEDED = ("noise_multiplier", "sample_rate", "steps", "delta", "accountant", "epsilon")


class EpsilonMismatchError(VerificationError):
    """The recorded DP parameters do not give the epsilon the module claims."""

    code = "E_DP_EPSILON_MISMATCH"


def recompute(dp: dict[str, Any] | None, *, strict: bool = True) -> dict[str, Any]:
    """Re-compute epsilon from a manifest's ``dp`` record.

    Returns ``{"dp": False}`` for a module without DP, else the recorded and
    re-computed epsilon, delta and accountant and ``matches``. With
    ``strict`` a mismatch (relative tolerance 1e-6) raises
    ``E_DP_EPSILON_MISMATCH``; a record lacking a parameter raises ``E_DP``.
    """
    if dp is None:
        return {"dp": False}
    missing = [k for k in NEEDED if k not in dp]
    if missing:
        raise DPError(
            f"the DP record lacks {missing}, so its epsilon cannot be re-computed",
            hint="train with ffsecure.dp (the training report records every parameter)",
        )
    steps = dp["steps"]
    if isinstance(steps, float) and steps.is_integer():
        steps = int(steps)
    eps = compute_epsilon(
        noise_multiplier=dp["noise_multiplier"],
        sample_rate=dp["sample_rate"],
        steps=steps,
        delta=dp["delta"],
        accountant=dp["accountant"],
    )
    claimed = float(dp["epsilon"])
    matches = math.isclose(eps, claimed, rel_tol=RTOL, abs_tol=1e-9)
    if strict and not matches:
        raise EpsilonMismatchError(
            f"the recorded DP parameters give epsilon {eps:.6g} "
            f"with the {dp['accountant']} accountant, "
            f"but the module claims {claimed:.6g}",
            hint="the manifest's DP record was altered or written by other code; "
            "retrain with ffsecure",
        )
    return {
        "dp": True,
        "epsilon_claimed": claimed,
        "epsilon_recomputed": eps,
        "delta": float(dp["delta"]),
        "accountant": dp["accountant"],
        "noise_multiplier": float(dp["noise_multiplier"]),
        "sample_rate": float(dp["sample_rate"]),
        "steps": int(steps),
        "matches": matches,
    }
