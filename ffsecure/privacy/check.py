"""One privacy check of a generator module: memorization, membership inference, DP accounting.

:func:`run_check` takes the module (a built generator plus its manifest's
``dp`` record), the site's training images (members), real images of the
same classes it never trained on (non-members), and optionally a reference
generator for the calibrated attack; it returns the full local report
(JSON-ready) whose numbers-only part (:func:`ffsecure.privacy.report.manifest_report`)
goes into the signed manifest. Where the DP claim covers them
(:func:`ffsecure.privacy.report.withholds`: the federation's ``dp_policy`` requires DP,
or no federation is known) that part leaves out every figure measured on the training
images (``withheld`` in the full report names them): they stay in the local report
only. A DP module in a federation that does not require DP signs them, and
``released_outside_dp_claim`` in the full report names them: they are released outside
the DP claim.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from ffsecure.errors import DataError
from ffsecure.privacy import accounting, membership, memorization
from ffsecure.privacy.report import (
    DEFAULT_SAMPLES,
    REPORT_VERSION,
    UNKNOWN_FEDERATION,
    manifest_report,
    measured_report,
    released_outside_claim,
    withheld,
)


def split_holdout(
    x: torch.Tensor, y: torch.Tensor, *, seed: int, reference_fraction: float
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor] | None]:
    """Split held-out images at random (seeded) into (evaluation non-members,
    reference-training set or None)."""
    if reference_fraction <= 0:
        return (x, y), None
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    k = int(round(x.shape[0] * reference_fraction))
    if k < 1 or x.shape[0] - k < 1:
        raise DataError(
            f"{x.shape[0]} held-out images cannot be split for a reference model",
            code="E_DATA_FORMAT",
            hint="use more held-out images or --no-reference",
        )
    ref, ev = perm[:k], perm[k:]
    return (x[ev], y[ev]), (x[ref], y[ref])


#: Fewest held-out images of a module's classes the validation split must hold to be the
#: non-member set; below it the test split is used (the report names which).
MIN_VALIDATION_NON_MEMBERS = 20


def held_out_pool(
    classes: list[int],
    test: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """The held-out images a membership attack compares members with, and the split's name.

    Non-members must come from the members' own distribution, or the attack measures the
    difference between two collections instead of membership: MedMNIST's test splits are
    such a different collection (a nearest-neighbour test tells PneumoniaMNIST's training
    images from its test images with AUROC 0.535 without any generator), its validation
    splits are not (0.504). So the validation split, drawn with the training split, is used
    when it holds at least :data:`MIN_VALIDATION_NON_MEMBERS` images of ``classes``; the
    test split otherwise. Neither is ever trained on.
    """
    if val is not None:
        keep = torch.isin(val[1], torch.tensor(sorted(classes), dtype=val[1].dtype))
        if int(keep.sum()) >= MIN_VALIDATION_NON_MEMBERS:
            return (val[0][keep], val[1][keep]), "val"
    keep = torch.isin(test[1], torch.tensor(sorted(classes), dtype=test[1].dtype))
    return (test[0][keep], test[1][keep]), "test"


def subsample(
    x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if n is None or x.shape[0] <= n:
        return x, y
    idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def generation_labels(labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` labels with the class proportions of ``labels`` (largest remainder), sorted."""
    classes, counts = torch.unique(labels, return_counts=True)
    share = counts.double() / counts.sum() * n
    base = share.floor().long()
    rest = n - int(base.sum())
    base[torch.argsort(share - base.double(), descending=True)[:rest]] += 1
    return torch.repeat_interleave(classes, base)


def membership_attack(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    *,
    dp: dict[str, Any] | None,
    reference: Any | None = None,
    draws: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The attacks that apply to this module (its ``dp`` record says how it was fitted)."""
    # a mean-embedding module's encoder never saw data: its loss says nothing, only samples do
    fitted_by_loss = (dp or {}).get("mechanism") != "mean-embedding"
    return membership.attack(
        gen,
        members,
        non_members,
        reference=reference if fitted_by_loss else None,
        draws=draws,
        seed=seed,
        loss_attack=fitted_by_loss,
    )


def run_check(
    gen: Any,
    *,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    dp: dict[str, Any] | None = None,
    dp_policy: Any = UNKNOWN_FEDERATION,
    reference: Any | None = None,
    n_generated: int = DEFAULT_SAMPLES,
    seed: int = 0,
    draws: int | None = None,
    png: str | Path | None = None,
    near_copy_threshold: float | None = None,
) -> dict[str, Any]:
    """Measure the module; return the full report (see ``docs/privacy.md``).

    ``dp_policy`` is the federation manifest's (it decides what the signed part holds);
    the default, ``UNKNOWN_FEDERATION``, withholds the measured figures under a DP claim.
    """
    if n_generated < 1:
        raise DataError(
            "generate at least one sample", code="E_DATA_FORMAT", hint="use --samples 1000"
        )
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    mia = membership_attack(
        gen, members, non_members, dp=dp, reference=reference, draws=draws, seed=seed
    )
    timings["membership_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    labels = generation_labels(members[1], n_generated)
    generated = gen.sample(labels, seed=seed)
    memo = memorization.memorization(
        generated, members[0], non_members[0], threshold=near_copy_threshold
    )
    files = {}
    if png is not None:
        memorization.closest_pairs_png(
            png,
            generated,
            members[0],
            memo["d_gen"],
            memo["nn_gen"],
            threshold=memo["near_copy_threshold"],
        )
        files["closest_pairs_png"] = str(png)
    timings["memorization_s"] = time.perf_counter() - t0

    acct = accounting.recompute(dp, strict=True)
    full = {
        "v": REPORT_VERSION,
        "family": gen.family,
        "membership": mia,
        "memorization": memorization.summary(memo),
        "accounting": acct,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "files": files,
    }
    measured = measured_report(full)
    full["manifest_report"] = manifest_report(full, dp, dp_policy=dp_policy)
    full["withheld"] = withheld(measured, dp, dp_policy=dp_policy)  # measured, never released
    full["released_outside_dp_claim"] = released_outside_claim(measured, dp, dp_policy=dp_policy)
    return full
