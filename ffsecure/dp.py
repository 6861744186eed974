"""Differentially private training settings and privacy accounting (Opacus).

A site may train its generator with DP-SGD: per-sample gradients clipped to
``max_grad_norm``, Gaussian noise added, batches drawn by Poisson sampling,
and the privacy spent tracked by an Opacus accountant (PRV by default, RDP on
request). :func:`plan` checks a :class:`DPConfig` against the data size and
schedule *before* any training and turns it into the exact noise multiplier,
sample rate and step count that Opacus will run; settings that Opacus cannot
honour raise :class:`DPError` (``E_DP``) with a specific message.

Step counting follows Opacus: a loader of ``n`` examples and batch size
``b`` has ``ceil(n / b)`` batches, the sample rate is ``1 / ceil(n / b)``
and one epoch is ``ceil(n / b)`` steps.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

from ffsecure.errors import DPError

ACCOUNTANTS = ("prv", "rdp")


@dataclass
class DPConfig:
    """What the site asks for: a target (epsilon, delta) and the clipping norm."""

    target_epsilon: float
    delta: float | None = None  # None: default_delta(n)
    max_grad_norm: float = 1.0
    accountant: str = "prv"
    poisson: bool = True
    # Research only (simulate/benchmarks --dp-reproducible; site-node cannot set it): seed the DP
    # noise and Poisson sampling from the training seed. False: both come from the OS CSPRNG.
    reproducible: bool = False


@dataclass(frozen=True)
class DPPlan:
    """The exact DP-SGD run: what the accountant is fed and what the report records."""

    target_epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    steps_per_epoch: int
    max_grad_norm: float
    accountant: str

    def report(self, epsilon: float) -> dict[str, Any]:
        """The ``TrainReport.dp`` record for this plan and the achieved epsilon."""
        return {
            "target_epsilon": self.target_epsilon,
            "epsilon": float(epsilon),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
        }


def _dp_error(message: str, hint: str) -> DPError:
    return DPError(message, hint=hint)


def default_delta(n: int) -> float:
    """Delta well below ``1/n``: ``min(1e-5, 1 / (10 n))``."""
    if not isinstance(n, int) or n <= 0:
        raise _dp_error(f"cannot choose delta for {n!r} training examples", "train on at least one example")
    return min(1e-5, 1.0 / (10 * n))


def _finite_positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise _dp_error(f"{name} must be a finite number > 0, got {value!r}", f"set {name} to a positive value")
    return float(value)


def _check_accountant(accountant: Any) -> str:
    if accountant not in ACCOUNTANTS:
        raise _dp_error(
            f"unknown privacy accountant {accountant!r}",
            f"use one of {list(ACCOUNTANTS)} (prv is the tightest Opacus offers)",
        )
    return accountant


def _accountant(name: str):
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


def compute_epsilon(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str = "prv"
) -> float:
    """Epsilon spent by ``steps`` Poisson-sampled Gaussian steps, as Opacus accounts it."""
    _check_accountant(accountant)
    _finite_positive("noise_multiplier", noise_multiplier)
    if not 0 < sample_rate <= 1:
        raise _dp_error(f"sample_rate must be in (0, 1], got {sample_rate!r}", "use batch_size / n")
    if not isinstance(steps, int) or steps < 0:
        raise _dp_error(f"steps must be a non-negative integer, got {steps!r}", "count optimizer steps")
    if not 0 < delta < 1:
        raise _dp_error(f"delta must be in (0, 1), got {delta!r}", "use default_delta(n)")
    if steps == 0:
        return 0.0
    acct = _accountant(accountant)
    acct.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(acct.get_epsilon(delta=delta))
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise _dp_error(f"the {accountant} accountant cannot evaluate these parameters: {exc}",
                        "use the rdp accountant or fewer steps") from None


@functools.lru_cache(maxsize=256)
def _noise_multiplier(target: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """Opacus' binary search for the smallest noise reaching ``target`` (pure, so cached)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(get_noise_multiplier(
            target_epsilon=target, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant,
        ))


def plan(dp: DPConfig, *, n: int, batch_size: int, epochs: int) -> DPPlan:
    """Check ``dp`` for ``n`` examples and the schedule; compute the noise multiplier.

    Raises ``E_DP`` for: epsilon <= 0 or not finite, delta <= 0 or >= 1/n,
    max_grad_norm <= 0, an unknown accountant, Poisson sampling turned off,
    a schedule with zero steps, or a target no noise level reaches.
    """
    if not isinstance(dp, DPConfig):
        raise _dp_error(f"dp must be a DPConfig, got {type(dp).__name__}", "build one with ffsecure.dp.DPConfig")
    target = _finite_positive("target_epsilon", dp.target_epsilon)
    accountant = _check_accountant(dp.accountant)
    clip = _finite_positive("max_grad_norm", dp.max_grad_norm)
    if not dp.poisson:
        raise _dp_error(
            "DP-SGD without Poisson sampling is not supported: the accountant's guarantee assumes it",
            "leave poisson=True",
        )
    for name, value in (("number of examples", n), ("batch size", batch_size), ("epochs", epochs)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise _dp_error(
                f"{name} is {value!r}, so DP training would take zero steps",
                "train on at least one example, with batch size >= 1 and epochs >= 1",
            )
    delta = default_delta(n) if dp.delta is None else dp.delta
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not math.isfinite(delta) or delta <= 0:
        raise _dp_error(f"delta must be > 0, got {delta!r}", "omit delta to use min(1e-5, 1/(10 n))")
    if delta >= 1.0 / n:
        raise _dp_error(
            f"delta {delta:g} is not below 1/n = {1.0 / n:g} for n = {n} examples; "
            "such a delta allows releasing a whole record",
            "omit delta to use min(1e-5, 1/(10 n))",
        )
    steps_per_epoch = math.ceil(n / batch_size)
    sample_rate = 1.0 / steps_per_epoch
    steps = steps_per_epoch * epochs

    try:
        sigma = _noise_multiplier(target, float(delta), sample_rate, steps, accountant)
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise _dp_error(
            f"target epsilon {target:g} at delta {delta:g} cannot be reached with sample rate "
            f"{sample_rate:.4g} over {steps} steps: {exc}",
            "raise target_epsilon, train fewer epochs, or use a smaller batch size",
        ) from None
    return DPPlan(
        target_epsilon=target,
        delta=float(delta),
        noise_multiplier=float(sigma),
        sample_rate=sample_rate,
        steps=steps,
        steps_per_epoch=steps_per_epoch,
        max_grad_norm=clip,
        accountant=accountant,
    )


def config_dict(dp: DPConfig) -> dict[str, Any]:
    """The DPConfig as a plain dict (for logs and manifests)."""
    return asdict(dp)
