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

Bounded accounting (the one home of these bounds). A DP claim in a module
manifest is untrusted input: ``steps = 10**9`` makes Opacus' PRV accountant
ask for hundreds of GiB. Every accounting here first checks the parameters
against explicit bounds (at least one step and at most :data:`MAX_STEPS`,
:data:`MAX_EPOCHS` for ``sample_rate * steps``, the noise multiplier, delta at
most :data:`MAX_DELTA` and below the sample rate) and, for PRV, the size
of the accountant's grid (:data:`MAX_PRV_GRID_POINTS`, computed from the RDP
bound Opacus uses to size it) before anything is allocated; :func:`plan`
refuses a schedule outside them at the site, so an honest module is never
refused. :func:`reaccount_claim` parses a manifest's ``dp`` record once,
checks it, and re-accounts it in a worker under a time budget
(:data:`ACCOUNTING_BUDGET_S`); :func:`check_claim` is the aggregator's
strict form. Both raise :class:`DPClaimError` (``E_DP_CLAIM``).
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from ffsecure.errors import DefaultHint, DPError, PolicyError
from ffsecure.privacy.report import bounds_dp_claims
from ffsecure.records.fields import is_int, is_number

ACCOUNTANTS = ("prv", "rdp")
#: The DP mechanisms a site can run; ``auto`` picks one (:func:`resolve_mechanism`).
MECHANISMS = ("mean-embedding", "dp-sgd")
MECHANISM_CHOICES = ("auto", *MECHANISMS)
#: Families whose modules the mean-embedding fit can train (the cvae decoder).
MEAN_EMBEDDING_FAMILIES = ("cvae",)


def record_mechanism(record: Mapping[str, Any]) -> Any:
    """The mechanism a module's DP record names; records written before the key are DP-SGD.

    The value is returned as it stands (a verifier checks it against :data:`MECHANISMS`).
    """
    return record.get("mechanism", "dp-sgd")


#: What one DP example is (docs/privacy.md, "Unit of privacy"): ``image``, every image a site
#: holds, so a patient with k images is protected only as a group of k; or ``patient``, one
#: image kept per patient, so that one patient changes at most one example.
PRIVACY_UNITS = ("image", "patient")


def record_privacy_unit(record: Mapping[str, Any]) -> Any:
    """The unit a module's DP record names; records written before the key are per image.

    The value is returned as it stands (:meth:`DPClaim.from_record` checks it).
    """
    return record.get("privacy_unit", "image")


def pinned_privacy_unit(policy: Mapping[str, Any]) -> str:
    """The unit a federation's ``dp_policy`` requires of every DP claim; manifests written
    before the key (and those that leave it out) say ``image``, which every claim meets."""
    return str(policy.get("privacy_unit", "image"))


def meets_privacy_unit(unit: Any, pinned: str) -> bool:
    """Whether a DP claim per ``unit`` meets a policy that pins ``pinned``.

    ``image`` asks nothing more than a DP claim; ``patient`` needs a claim per patient: one
    per image protects a patient with k images only as a group of k (docs/privacy.md).
    """
    return pinned == "image" or unit == pinned


#: Most DP-SGD steps a plan may take and a claim may state (honest runs: a few thousand).
MAX_STEPS = 100_000
#: Most expected passes over the data, ``sample_rate * steps`` (= epochs with Poisson sampling).
MAX_EPOCHS = 10_000
#: Noise multipliers outside this range are no plausible DP-SGD run.
NOISE_MULTIPLIER_RANGE = (1e-3, 1e6)
#: Smallest delta accepted (below it Opacus' error terms underflow).
MIN_DELTA = 1e-20
#: Largest delta a plan may use and a claim may state. Delta is the probability that the
#: epsilon bound fails outright, so it must be far below 1/n; a site's default is
#: ``min(1e-5, 1 / (10 N))`` (:func:`default_delta`) and the federation template's 1e-5.
#: 1e-3 is below 1/n for every site of up to 1,000 images and a hundred times the default: no
#: honest run comes near it, and a claim such as "epsilon 1e-6 at delta 0.999999", which
#: promises nothing, is refused.
MAX_DELTA = 1e-3
#: Largest epsilon a claim may state.
MAX_CLAIMED_EPSILON = 1e6
#: A site's own ceiling by default (site.toml ``dp.max_epsilon``, and its total
#: ``dp.max_total_epsilon``): the largest epsilon a site trains one release at, and spends over
#: all its releases, whatever the federation's manifest allows. 8 is the largest epsilon this
#: project measured as useful (docs/privacy.md: every DP benchmark runs at 1 to 8; at 8 the
#: mean-embedding release keeps 0.951 of centralized accuracy on digits) and the upper end of
#: the single-digit epsilons common guidance and practice use for DP-SGD; above it the
#: guarantee says little (the digits cvae at 8 already shows membership AUROC 0.575). The
#: federation operator chooses ``dp_policy.max_epsilon``: without a bound of its own, a site
#: would adopt any epsilon a CA-signed manifest names (100 is signable).
SITE_MAX_EPSILON = 8.0
#: Largest PRV discretisation grid (points) an accounting may build: 32 MiB per float64 array.
MAX_PRV_GRID_POINTS = 2**22
#: Wall-clock budget of one re-accounting of a claim (the grid cap keeps honest ones near 1 s).
ACCOUNTING_BUDGET_S = 30.0
#: Relative tolerance when a re-accounted epsilon is compared with the claimed one.
CLAIM_RTOL = 1e-6
#: The accounting parameters of a DP claim (``accountant`` defaults to ``prv``).
CLAIM_PARAMETERS = ("noise_multiplier", "sample_rate", "steps")
#: Opacus' PRV accountant defaults, used to size its grid.
_PRV_EPS_ERROR = 0.01


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
    # "auto" (resolve_mechanism: the best measured one for the family), "mean-embedding" or
    # "dp-sgd"; what ran is recorded in the signed DP record.
    mechanism: str = "auto"


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


#: A DP fit logs one progress line every this fraction of its steps, through ``logging``, so
#: that a site running as a service (no terminal, no progress bar) shows it in its journal.
PROGRESS_EVERY = 0.05


def progress_interval(steps: int) -> int:
    """Steps between two progress lines of a fit of ``steps`` steps (at least 1)."""
    return max(1, int(steps * PROGRESS_EVERY))


def log_progress(
    logger: Any, mechanism: str, step: int, steps: int, epsilon: float, note: str = ""
) -> None:
    """One progress line of a DP fit: step, percent and the epsilon spent so far.

    No loss: DP-SGD's running loss is computed on the private batches without noise, outside
    the DP claim, and a log may be kept less tightly than the site's state.
    """
    logger.info(
        "%s fit: step %d/%d (%d%%), epsilon spent %.3f%s",
        mechanism,
        step,
        steps,
        round(100 * step / steps),
        epsilon,
        note,
        extra={
            "event": "dp_fit_progress",
            "mechanism": mechanism,
            "step": step,
            "steps": steps,
            "epsilon": epsilon,
        },
    )


def _dp_error(message: str, hint: str) -> DPError:
    return DPError(message, hint=hint)


#: :func:`default_delta` in words, for hints and help texts
DEFAULT_DELTA_RULE = "min(1e-5, 1/(10 N)), N = n rounded up to a power of ten"


def default_delta(n: int) -> float:
    """Delta well below ``1/n``: ``min(1e-5, 1 / (10 N))``, ``N`` the smallest power of ten
    at or above ``n``.

    Not ``1 / (10 n)``: the delta is signed in the DP record, outside the claim, and that one
    gave back a large site's exact number of images (or, per patient, of patients); this one
    says only its order of magnitude, and is at most ``1 / (10 n)``. (A DP-SGD record's
    ``sample_rate`` and ``steps`` still give ``n`` to within a batch: the number of examples
    is public in the accounting; the mean-embedding release's do not.)
    """
    if not isinstance(n, int) or n <= 0:
        raise _dp_error(
            f"cannot choose delta for {n!r} training examples", "train on at least one example"
        )
    power = 10 ** len(str(n - 1)) if n > 1 else 1
    return min(1e-5, 1.0 / (10 * power))


def _finite_positive(name: str, value: Any) -> float:
    if not is_number(value) or value <= 0:
        raise _dp_error(
            f"{name} must be a finite number > 0, got {value!r}", f"set {name} to a positive value"
        )
    return float(value)


def _check_accountant(accountant: Any) -> str:
    if accountant not in ACCOUNTANTS:
        raise _dp_error(
            f"unknown privacy accountant {accountant!r}",
            f"use one of {list(ACCOUNTANTS)} (prv is the tightest Opacus offers)",
        )
    return accountant


def _accountant(name: str):
    # heavy: opacus, only when an accountant runs
    from opacus.accountants import create_accountant

    return create_accountant(mechanism=name)


class DPClaimError(DefaultHint, PolicyError):
    """A DP claim that is malformed, out of bounds, not re-accountable in time, or understated."""

    code = "E_DP_CLAIM"
    default_hint = (
        "train with ffsecure (site-node train), whose DP record states every parameter "
        "within the bounds of docs/privacy.md"
    )


class DPAccountingTimeoutError(DPClaimError):
    """Re-accounting a DP claim did not finish within its time budget: no judgement of the claim.

    Its own code, not ``E_DP_CLAIM``: the time includes waiting for a free accounting worker,
    so a sound claim can run out of it on a busy aggregator, and a site that re-accounts the
    claim itself must not read this refusal as a false one (``site_node.refusals``)."""

    code = "E_DP_ACCOUNTING_TIMEOUT"


def check_bounds(*, noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    """``E_DP`` unless the parameters lie inside the accounting bounds (allocates nothing).

    A run takes at least one step (zero steps release nothing and would re-account to
    epsilon 0, so a thousand such claims would compose to nothing). Delta lies in
    [:data:`MIN_DELTA`, :data:`MAX_DELTA`] and below ``sample_rate``: a plan's delta is
    below ``1 / n`` (:func:`plan`), and ``sample_rate = 1 / ceil(n / batch) >= 1 / n``, so a
    claim with ``delta >= sample_rate`` cannot come from an honest plan.
    """
    lo, hi = NOISE_MULTIPLIER_RANGE
    _finite_positive("noise_multiplier", noise_multiplier)
    if not lo <= noise_multiplier <= hi:
        raise _dp_error(
            f"noise_multiplier {noise_multiplier!r} is outside [{lo:g}, {hi:g}]",
            "no DP-SGD run uses such noise",
        )
    if not is_number(sample_rate) or not 0 < sample_rate <= 1:
        raise _dp_error(f"sample_rate must be in (0, 1], got {sample_rate!r}", "use batch_size / n")
    if not is_int(steps) or not 1 <= steps <= MAX_STEPS:
        raise _dp_error(
            f"steps must be an integer in [1, {MAX_STEPS}], got {steps!r}",
            f"train for at least one and at most {MAX_STEPS} steps",
        )
    if sample_rate * steps > MAX_EPOCHS:
        raise _dp_error(
            f"sample_rate x steps = {sample_rate * steps:.6g} passes over the data, "
            f"above {MAX_EPOCHS}",
            f"train for at most {MAX_EPOCHS} epochs",
        )
    if not is_number(delta) or not MIN_DELTA <= delta <= MAX_DELTA:
        raise _dp_error(
            f"delta must be in [{MIN_DELTA:g}, {MAX_DELTA:g}], got {delta!r}",
            f"use default_delta(n): {DEFAULT_DELTA_RULE}",
        )
    if delta >= sample_rate:
        raise _dp_error(
            f"delta {delta:g} is not below the sample rate {sample_rate:g}, so not below "
            "1/n for any n the sample rate allows: such a delta allows releasing a whole record",
            f"use default_delta(n): {DEFAULT_DELTA_RULE}",
        )


def prv_grid_points(
    *, noise_multiplier: float, sample_rate: float, steps: int, delta: float
) -> float:
    """Points of the grid Opacus' PRV accountant would build (allocates nothing)."""
    # heavy: opacus, only when an accountant runs
    from opacus.accountants.analysis.prv import (
        PoissonSubsampledGaussianPRV,
        compute_safe_domain_size,
    )

    delta_error = delta / 1000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half_width = compute_safe_domain_size(
            [PoissonSubsampledGaussianPRV(float(sample_rate), float(noise_multiplier))],
            [int(steps)],
            eps_error=_PRV_EPS_ERROR,
            delta_error=delta_error,
        )
    mesh = _PRV_EPS_ERROR / math.sqrt(steps * math.log(12 / delta_error) / 2)
    return 2 * half_width / mesh


def _check_grid(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> None:
    points = prv_grid_points(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
    )
    if not points <= MAX_PRV_GRID_POINTS:
        raise _dp_error(
            f"the prv accountant would need a grid of {points:.3g} points for these "
            f"parameters, above the bound of {MAX_PRV_GRID_POINTS}",
            "use the rdp accountant, more noise or fewer steps",
        )


def compute_epsilon(
    *,
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: str = "prv",
) -> float:
    """Epsilon spent by ``steps`` Poisson-sampled Gaussian steps, as Opacus accounts it.

    The parameters are checked against the accounting bounds, and the PRV grid is
    sized, before the accountant allocates anything (``E_DP`` otherwise).
    """
    _check_accountant(accountant)
    check_bounds(
        noise_multiplier=noise_multiplier, sample_rate=sample_rate, steps=steps, delta=delta
    )
    if accountant == "prv":
        _check_grid(noise_multiplier, sample_rate, steps, delta)
    acct = _accountant(accountant)
    acct.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(acct.get_epsilon(delta=delta))
    except (ValueError, RuntimeError, OverflowError, ArithmeticError, MemoryError) as exc:
        raise _dp_error(
            f"the {accountant} accountant cannot evaluate these parameters: {exc}",
            "use the rdp accountant or fewer steps",
        ) from None


@functools.lru_cache(maxsize=256)
def _noise_multiplier(
    target: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """Opacus' binary search for the smallest noise reaching ``target`` (pure, so cached)."""
    # heavy: opacus, only when a noise multiplier is computed
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


def plan(dp: DPConfig, *, n: int, batch_size: int, epochs: int) -> DPPlan:
    """Check ``dp`` for ``n`` examples and the schedule; compute the noise multiplier.

    Raises ``E_DP`` for: epsilon <= 0 or not finite, delta <= 0 or >= 1/n,
    max_grad_norm <= 0, an unknown accountant, Poisson sampling turned off,
    a schedule with zero steps, or a target no noise level reaches.
    """
    if not isinstance(dp, DPConfig):
        raise _dp_error(
            f"dp must be a DPConfig, got {type(dp).__name__}", "build one with ffsecure.dp.DPConfig"
        )
    target = _finite_positive("target_epsilon", dp.target_epsilon)
    accountant = _check_accountant(dp.accountant)
    clip = _finite_positive("max_grad_norm", dp.max_grad_norm)
    if not dp.poisson:
        raise _dp_error(
            "DP-SGD without Poisson sampling is not supported: "
            "the accountant's guarantee assumes it",
            "leave poisson=True",
        )
    for name, value in (("number of examples", n), ("batch size", batch_size), ("epochs", epochs)):
        if not is_int(value) or value <= 0:
            raise _dp_error(
                f"{name} is {value!r}, so DP training would take zero steps",
                "train on at least one example, with batch size >= 1 and epochs >= 1",
            )
    delta = _checked_delta(dp, n)
    steps_per_epoch = math.ceil(n / batch_size)
    sample_rate = 1.0 / steps_per_epoch
    steps = steps_per_epoch * epochs
    if steps > MAX_STEPS or epochs > MAX_EPOCHS:
        raise _dp_error(
            f"{steps} DP-SGD steps ({epochs} epochs) exceed the bounds every verifier "
            f"applies ({MAX_STEPS} steps, {MAX_EPOCHS} epochs)",
            "train fewer epochs or use a larger batch size",
        )

    try:
        sigma = _noise_multiplier(target, float(delta), sample_rate, steps, accountant)
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise _dp_error(
            f"target epsilon {target:g} at delta {delta:g} cannot be reached with sample rate "
            f"{sample_rate:.4g} over {steps} steps: {exc}",
            "raise target_epsilon, train fewer epochs, or use a smaller batch size",
        ) from None
    # what the aggregator and auditors will re-account must be re-accountable within the bounds
    check_bounds(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, delta=float(delta))
    if accountant == "prv":
        _check_grid(sigma, sample_rate, steps, float(delta))
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


def _checked_delta(dp: DPConfig, n: int) -> float:
    delta = default_delta(n) if dp.delta is None else dp.delta
    if not is_number(delta) or delta <= 0:
        raise _dp_error(
            f"delta must be > 0, got {delta!r}", f"omit delta to use {DEFAULT_DELTA_RULE}"
        )
    if delta >= 1.0 / n:
        raise _dp_error(
            f"delta {delta:g} is not below 1/n = {1.0 / n:g} for n = {n} examples; "
            "such a delta allows releasing a whole record",
            f"omit delta to use {DEFAULT_DELTA_RULE}",
        )
    if delta > MAX_DELTA:
        raise _dp_error(
            f"delta {delta:g} is above {MAX_DELTA:g}, the largest delta every verifier of a "
            "DP claim accepts",
            f"omit delta to use {DEFAULT_DELTA_RULE}",
        )
    return float(delta)


def check_family(mechanism: Any, family: Any) -> None:
    """``E_DP`` unless ``mechanism`` can train a ``family`` module.

    The one rule, from the one table (:data:`MEAN_EMBEDDING_FAMILIES`): the site applies
    it before training (:func:`resolve_mechanism`), every verifier of a module's claim
    (``ffsecure.package.check_policy``: the aggregator at registration, the audit) to the
    signed manifest's generator family and DP record. A ddpm module whose record claims a
    one-step mean-embedding release states an accounting for a run that cannot happen.
    """
    if mechanism == "mean-embedding" and family not in MEAN_EMBEDDING_FAMILIES:
        raise _dp_error(
            f"the mean-embedding mechanism cannot train a {family} module",
            f"use mechanism dp-sgd, or the {'/'.join(MEAN_EMBEDDING_FAMILIES)} family",
        )


def resolve_mechanism(
    mechanism: Any, family: str, n: int, target_epsilon: float | None = None
) -> str:
    """The mechanism a site runs: ``auto`` is the best measured one for ``family``.

    The rule, measured on scikit-learn digits only (public; benchmarks/results/dp.json,
    docs/privacy.md "Which data chose each default"), ten sites of about 134 images, cvae:
    the mean-embedding release keeps 0.802 +- 0.020 of the centralized accuracy at epsilon 1
    against DP-SGD's 0.532 +- 0.053, and 0.951 +- 0.021 at epsilon 8 against DP-SGD's
    0.900 +- 0.038 (3 seeds each), DP-SGD at a site's default schedule (20 epochs, fresh
    OS noise). So ``auto`` is ``mean-embedding`` for the cvae at every epsilon; other
    families have no mean-embedding fit, so it is ``dp-sgd`` for them. Within sites of
    about 130 to 1,347 images size does not change it: with 1, 2, 5 or 10 digit classes
    per site (3 seeds, benchmarks/results/dp_size.md) the release keeps 0.765-0.827 at
    epsilon 1 against DP-SGD's 0.594-0.731 and 0.953-0.964 at epsilon 8 against
    0.852-0.889; its lead at epsilon 1 narrows with size, and larger sites are not
    measured. ``n`` and ``target_epsilon`` are part of the signature so that a threshold
    measured on public data can be added without changing callers.
    """
    if mechanism not in MECHANISM_CHOICES:
        raise _dp_error(
            f"unknown DP mechanism {mechanism!r}", f"use one of {list(MECHANISM_CHOICES)}"
        )
    if mechanism == "auto":
        return "mean-embedding" if family in MEAN_EMBEDDING_FAMILIES else "dp-sgd"
    check_family(mechanism, family)
    del n, target_epsilon  # no size or epsilon threshold measured yet (see the docstring)
    return str(mechanism)


def plan_mean_embedding(dp: DPConfig, *, n: int) -> DPPlan:
    """The one Gaussian release of sensitivity 1 that reaches ``dp``'s target (``E_DP``).

    Accounted as Opacus accounts one step of noise ``sigma`` at sample rate 1 (no
    subsampling), so the claim is re-accountable by :func:`reaccount_claim` as it is.
    """
    if not isinstance(dp, DPConfig):
        raise _dp_error(
            f"dp must be a DPConfig, got {type(dp).__name__}", "build one with ffsecure.dp.DPConfig"
        )
    target = _finite_positive("target_epsilon", dp.target_epsilon)
    accountant = _check_accountant(dp.accountant)
    if not is_int(n) or n <= 0:
        raise _dp_error(f"number of examples is {n!r}", "train on at least one example")
    delta = _checked_delta(dp, n)
    try:
        sigma = _noise_multiplier(target, delta, 1.0, 1, accountant)
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise _dp_error(
            f"target epsilon {target:g} at delta {delta:g} cannot be reached: {exc}",
            "raise target_epsilon",
        ) from None
    check_bounds(noise_multiplier=sigma, sample_rate=1.0, steps=1, delta=delta)
    return DPPlan(
        target_epsilon=target,
        delta=delta,
        noise_multiplier=float(sigma),
        sample_rate=1.0,
        steps=1,
        steps_per_epoch=1,
        max_grad_norm=1.0,  # the L2 sensitivity of the release: ||phi(x)|| = 1
        accountant=accountant,
    )


def release_group_epsilon(
    noise_multiplier: float, delta: float, k: int, accountant: str = "prv"
) -> float:
    """Epsilon of a mean-embedding release for a group of ``k`` examples (one patient's images).

    The release has sensitivity 1 per example, so ``k`` examples move it by up to ``k``: for
    the group it is the same Gaussian mechanism at noise multiplier ``noise_multiplier / k``,
    accounted as :func:`plan_mean_embedding` accounts the release itself (``E_DP`` when
    that noise is outside the accounting bounds).
    """
    if not is_int(k) or k < 1:
        raise _dp_error(f"group size is {k!r}", "give a group of at least one example")
    return compute_epsilon(
        noise_multiplier=noise_multiplier / k,
        sample_rate=1.0,
        steps=1,
        delta=delta,
        accountant=accountant,
    )


def group_privacy_bound(epsilon: float, delta: float, k: int) -> tuple[float, float]:
    """The standard group-privacy bound: ``(epsilon, delta)`` per example gives
    ``(k epsilon, k e^((k-1) epsilon) delta)`` for a group of ``k`` (any mechanism)."""
    if not is_int(k) or k < 1:
        raise _dp_error(f"group size is {k!r}", "give a group of at least one example")
    try:
        spread = math.exp((k - 1) * epsilon)
    except OverflowError:
        spread = math.inf
    return k * epsilon, k * spread * delta


def group_claim(record: Mapping[str, Any], k: int) -> tuple[float, float, bool]:
    """``(epsilon, delta, exact)`` that a DP record gives a group of ``k`` examples.

    A mean-embedding record: :func:`release_group_epsilon` of its noise multiplier at its
    delta (``exact``: the release's own accounting). A DP-SGD record: only
    :func:`group_privacy_bound` of its epsilon and delta (``exact`` False: an upper bound,
    no tighter figure for subsampled DP-SGD is computed here).
    """
    epsilon, delta = float(record["epsilon"]), float(record["delta"])
    if k == 1:
        return epsilon, delta, True
    if record_mechanism(record) == "mean-embedding":
        sigma = float(record["noise_multiplier"])
        accountant = str(record.get("accountant", "prv"))
        return release_group_epsilon(sigma, delta, k, accountant), delta, True
    return (*group_privacy_bound(epsilon, delta, k), False)


def config_dict(dp: DPConfig) -> dict[str, Any]:
    """The DPConfig as a plain dict (for logs and manifests)."""
    return asdict(dp)


# ------------------------------------------------------------------ DP claims of modules


@dataclass(frozen=True)
class DPClaim:
    """A module manifest's ``dp`` record, parsed once: what it claims and how it was spent."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float
    steps: int
    accountant: str
    mechanism: str = "dp-sgd"

    @classmethod
    def from_record(cls, record: Any, *, require_parameters: bool) -> DPClaim | None:
        """Parse and bound-check ``record``; ``None`` if it states no accounting parameter at all.

        A record lacking some of :data:`CLAIM_PARAMETERS` is ``None`` too unless
        ``require_parameters`` (the aggregator's rule), when it is refused. Any value
        present is checked strictly: numbers are numbers (no bool, no string), steps an
        integer, every bound of :func:`check_bounds`. Raises :class:`DPClaimError`.
        """
        if not isinstance(record, dict):
            raise DPClaimError("the DP record is not an object")
        if "reproducible" in record:
            raise DPClaimError(
                "the DP record says its noise and sampling were seeded "
                "(reproducible): anyone who knows the seed can remove the noise"
            )
        if record_privacy_unit(record) not in PRIVACY_UNITS:
            raise DPClaimError(
                f"the DP record names the unknown privacy unit {record_privacy_unit(record)!r}"
            )
        missing = [k for k in CLAIM_PARAMETERS if k not in record]
        if missing:
            if require_parameters:
                raise DPClaimError(
                    f"the DP record lacks {missing}, so its epsilon cannot be re-accounted"
                )
            return None
        claim = cls(
            epsilon=_claim_number(record, "epsilon"),
            delta=_claim_number(record, "delta"),
            noise_multiplier=_claim_number(record, "noise_multiplier"),
            sample_rate=_claim_number(record, "sample_rate"),
            steps=_claim_steps(record),
            accountant=record.get("accountant", "prv"),
            mechanism=record_mechanism(record),
        )
        if claim.accountant not in ACCOUNTANTS:
            raise DPClaimError(f"the DP record names the unknown accountant {claim.accountant!r}")
        _check_mechanism(claim, record)
        if not 0 < claim.epsilon <= MAX_CLAIMED_EPSILON:
            raise DPClaimError(
                f"claimed epsilon {claim.epsilon!r} is outside (0, {MAX_CLAIMED_EPSILON:g}]"
            )
        try:
            check_bounds(
                noise_multiplier=claim.noise_multiplier,
                sample_rate=claim.sample_rate,
                steps=claim.steps,
                delta=claim.delta,
            )
        except DPError as exc:
            raise DPClaimError(f"implausible DP claim: {exc.message}") from None
        return claim


#: What a mean-embedding DP record states besides the accounting: its public feature map.
MEAN_EMBEDDING_FIELDS = ("feature_seed", "n_features", "feature_bandwidth", "count_weight")
#: Most random frequencies a feature map may draw (honest runs: about a thousand).
MAX_FEATURES = 2**16
#: Largest feature length scale (a multiple of sqrt(pixels); honest runs: about 0.5).
MAX_BANDWIDTH = 1e6
#: Feature seeds are what ``torch.Generator.manual_seed`` takes without wrapping.
MAX_FEATURE_SEED = 2**63 - 1


def check_feature_map(
    *, feature_seed: Any, n_features: Any, feature_bandwidth: Any, count_weight: Any
) -> None:
    """``E_DP`` unless the values describe a feature map of rows of norm exactly 1.

    ``phi(x) = [a, sqrt(1 - a^2) / sqrt(D) * (cos, sin)(W x)]`` is a unit vector only for
    ``0 <= a <= 1``, ``D >= 1`` and a finite bandwidth > 0 (else ``W`` is infinite and
    ``phi`` NaN); ``a = 0`` leaves no count to divide by and ``a = 1`` no features, so
    ``a`` lies strictly between. Outside these bounds the release's sensitivity is not
    the 1 its accounting assumes. One rule for the site (``FeatureSpec``) and every
    verifier of a claim (:meth:`DPClaim.from_record`).
    """
    if not is_int(feature_seed) or not 0 <= feature_seed <= MAX_FEATURE_SEED:
        raise _dp_error(
            f"feature_seed must be an integer in [0, 2^63 - 1], got {feature_seed!r}",
            "use the default feature map (ffsecure.dp_embedding.DEFAULT_FEATURES)",
        )
    if not is_int(n_features) or not 1 <= n_features <= MAX_FEATURES:
        raise _dp_error(
            f"n_features must be an integer in [1, {MAX_FEATURES}], got {n_features!r}",
            "use the default feature map (ffsecure.dp_embedding.DEFAULT_FEATURES)",
        )
    if not is_number(feature_bandwidth) or not 0 < feature_bandwidth <= MAX_BANDWIDTH:
        raise _dp_error(
            f"feature_bandwidth must be a number in (0, {MAX_BANDWIDTH:g}], "
            f"got {feature_bandwidth!r}",
            "use the default feature map (ffsecure.dp_embedding.DEFAULT_FEATURES)",
        )
    if not is_number(count_weight) or not 0 < count_weight < 1:
        raise _dp_error(
            f"count_weight must be a number in (0, 1), got {count_weight!r}: only then is "
            "every feature vector of norm 1",
            "use the default feature map (ffsecure.dp_embedding.DEFAULT_FEATURES)",
        )


def _check_mechanism(claim: DPClaim, record: dict) -> None:
    """The record's mechanism must be known and its parameters must be that mechanism's.

    A mean-embedding release is one Gaussian step on the whole data (sample rate 1, one
    step, sensitivity 1) and names its feature map; a DP-SGD record names none. A record
    whose mechanism was swapped, or whose sampling does not fit it, is refused: its
    epsilon would be accounted for a run that did not happen.
    """
    if claim.mechanism not in MECHANISMS:
        raise DPClaimError(f"the DP record names the unknown mechanism {claim.mechanism!r}")
    feature_keys = [k for k in MEAN_EMBEDDING_FIELDS if k in record]
    if claim.mechanism == "dp-sgd":
        if feature_keys:
            raise DPClaimError(
                f"the DP record says dp-sgd but carries the mean-embedding fields {feature_keys}"
            )
        return
    missing = [k for k in MEAN_EMBEDDING_FIELDS if k not in record]
    if missing:
        raise DPClaimError(f"the mean-embedding DP record lacks {missing}")
    if claim.sample_rate != 1.0 or claim.steps != 1:
        raise DPClaimError(
            "a mean-embedding release is one step at sample rate 1, but the DP record "
            f"states sample rate {claim.sample_rate:g} and {claim.steps} steps"
        )
    clip = record.get("max_grad_norm", 1.0)
    if not is_number(clip) or clip != 1.0:
        raise DPClaimError(
            "a mean-embedding release has sensitivity 1, but the DP record states "
            f"max_grad_norm {clip!r}"
        )
    try:
        check_feature_map(**{key: record[key] for key in MEAN_EMBEDDING_FIELDS})
    except DPError as exc:
        raise DPClaimError(f"the mean-embedding DP record's {exc.message}") from None


def _claim_number(record: dict, key: str) -> float:
    value = record.get(key)
    if not is_number(value):
        raise DPClaimError(f"the DP record's {key} is {value!r}, not a finite number")
    return float(value)


def _claim_steps(record: dict) -> int:
    steps = record.get("steps")
    if isinstance(steps, float) and steps.is_integer() and abs(steps) <= 2**53:
        steps = int(steps)
    if not is_int(steps):
        raise DPClaimError(f"the DP record's steps is {steps!r}, not an integer")
    return steps


@dataclass(frozen=True)
class ClaimCheck:
    """A re-accounted claim: the epsilon its own parameters spend, and whether it understates it."""

    claim: DPClaim
    epsilon_recomputed: float

    @property
    def understated(self) -> bool:
        return self.epsilon_recomputed > self.claim.epsilon * (1 + CLAIM_RTOL) + 1e-9


#: At most two accountings run at once in a process; a timed-out one finishes in its worker,
#: bounded by the grid cap, while its caller has already been refused.
_ACCOUNTING_POOL = concurrent.futures.ThreadPoolExecutor(
    max_workers=2, thread_name_prefix="dp-accounting"
)


def _within_budget(fn: Callable[[], float], budget_s: float) -> float:
    future = _ACCOUNTING_POOL.submit(fn)
    try:
        return future.result(timeout=budget_s)
    except DPError:
        raise
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise DPAccountingTimeoutError(
            f"re-accounting the DP claim took longer than its budget of {budget_s:g} s "
            "(waiting for a free accounting worker included)",
            hint="a busy aggregator: the site sends the module again later; if it persists, "
            "the parameters need an unusually large accounting: retrain with the rdp "
            "accountant or fewer steps",
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure of the accountant on untrusted input is a refusal
        raise DPClaimError(
            f"the accountant failed on the DP claim: {type(exc).__name__}: {str(exc)[:200]}"
        ) from None


def reaccount_claim(
    record: Any, *, require_parameters: bool = False, budget_s: float = ACCOUNTING_BUDGET_S
) -> ClaimCheck | None:
    """Parse, bound and re-account a manifest's ``dp`` record; ``None`` if it has no parameters.

    Raises :class:`DPClaimError` for a malformed or out-of-bounds record, or one the
    accountant cannot evaluate within ``budget_s``; an understated claim is returned
    (``understated``) for the caller to judge.
    """
    claim = DPClaim.from_record(record, require_parameters=require_parameters)
    if claim is None:
        return None

    def account() -> float:
        return compute_epsilon(
            noise_multiplier=claim.noise_multiplier,
            sample_rate=claim.sample_rate,
            steps=claim.steps,
            delta=claim.delta,
            accountant=claim.accountant,
        )

    try:
        eps = _within_budget(account, budget_s)
    except DPError as exc:
        raise DPClaimError(f"the DP claim cannot be re-accounted: {exc.message}") from None
    return ClaimCheck(claim, eps)


class DPBudgetError(DefaultHint, PolicyError):
    """A site's modules together spend more than the federation's ``max_epsilon``, or (at the
    site, :mod:`site_node.budget`) than the site's own ``dp.max_total_epsilon``."""

    code = "E_DP_BUDGET"
    default_hint = (
        "every module is a release of the site's data, and deleting one does not take back "
        "what it released: the federation operator must raise dp_policy.max_epsilon (a new "
        "signed manifest) before this site's data is released again"
    )


def site_epsilon(claims: Sequence[DPClaim], delta: float) -> float:
    """Epsilon, at ``delta``, that a site's data has spent over all of ``claims``.

    The smaller of two sound bounds: basic composition (the sum of the claimed epsilons,
    valid when the claimed deltas sum to at most ``delta``) and Opacus' RDP accountant run
    on the history of every claim's mechanism (the RDP of Gaussian mechanisms adds up,
    whatever delta each was claimed at). For one claim at a delta within ``delta`` this is
    at most the claim itself, so a site's first module is judged as before.
    """
    if not claims:
        return 0.0
    basic = (
        math.fsum(c.epsilon for c in claims)
        if math.fsum(c.delta for c in claims) <= delta
        else math.inf
    )
    acct = _accountant("rdp")
    acct.history = [(c.noise_multiplier, c.sample_rate, c.steps) for c in claims]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            composed = float(acct.get_epsilon(delta=delta))
    except (ValueError, RuntimeError, OverflowError, ArithmeticError) as exc:
        raise DPClaimError(f"the site's DP claims cannot be composed: {exc}") from None
    return min(basic, composed)


def check_site_budget(records: Sequence[Any], policy: dict, *, site_id: str) -> float:
    """The federation's rule for a site's modules (``E_DP_BUDGET``): its DP claims composed.

    ``records`` are the ``dp`` records of every module the site ever registered (deleted
    ones included: their release happened) and, last, the new one; a ``None`` is a module
    without DP. The rule holds wherever ``policy`` bounds DP claims
    (:func:`ffsecure.privacy.report.bounds_dp_claims`: ``max_epsilon`` and ``delta`` set),
    required or not, since there each claim stands in for the privacy policy's measured
    limits (``dp_covers``): the site's claims composed at the policy's ``delta`` stay within
    ``max_epsilon``. Under a required policy a module without DP spends without bound and is
    refused. Under one that is not, it is allowed and judged by its privacy figures, so only
    the claims compose, and a new module without DP is judged by nothing here. Returns the
    composed epsilon at the policy's delta (0 where the policy bounds no claim).
    """
    if not bounds_dp_claims(policy):
        return 0.0
    if policy.get("required") and any(record is None for record in records):
        raise DPBudgetError(f"site {site_id} has a module without DP: its data has no DP bound")
    parsed = [DPClaim.from_record(r, require_parameters=True) for r in records if r is not None]
    composed = [claim for claim in parsed if claim is not None]
    spent = site_epsilon(composed, float(policy["delta"]))
    if records and records[-1] is None:
        return spent  # a release without DP spends none of the DP budget
    if spent > float(policy["max_epsilon"]) * (1 + CLAIM_RTOL):
        raise DPBudgetError(
            f"site {site_id}'s {len(composed)} {_dp_modules(len(composed), len(records))} "
            f"together spend epsilon {spent:.4g} at delta {policy['delta']:g}, above the "
            f"federation's max_epsilon {policy['max_epsilon']:g}"
        )
    return spent


def _dp_modules(claims: int, modules: int) -> str:
    """How :func:`check_site_budget` names the modules it composed."""
    return "modules" if claims == modules else f"modules with a DP claim (of {modules})"


def check_claim(record: Any, *, budget_s: float = ACCOUNTING_BUDGET_S) -> ClaimCheck:
    """The aggregator's rule: every DP claim carries its parameters and spends what it claims."""
    checked = reaccount_claim(record, require_parameters=True, budget_s=budget_s)
    assert checked is not None  # require_parameters
    if checked.understated:
        c = checked.claim
        raise DPClaimError(
            f"the module claims epsilon {c.epsilon:g} but its own parameters (noise "
            f"{c.noise_multiplier:g}, sample rate {c.sample_rate:g}, {c.steps} steps, delta "
            f"{c.delta:g}) spend epsilon {checked.epsilon_recomputed:.6g} with the "
            f"{c.accountant} accountant"
        )
    return checked
