"""One privacy check of a generator module: memorization, membership inference, DP accounting.

:func:`run_check` takes the module (a built generator plus its manifest's
``dp`` record), the site's training images (members, which the membership attack may
use a subsample of, and every one of them, which the memorization test searches), real
images of the same classes it never trained on (non-members), and optionally a reference
generator for the calibrated attack; it returns the full local report
(JSON-ready) whose numbers-only part (:func:`ffsecure.privacy.report.manifest_report`)
goes into the signed manifest.

The check measures the module under every sampler of
:func:`ffsecure.generators.sampler_variants`: the manifest's config and the family's
reference samplers, fixed in the library. Whoever holds the weights samples them as they
like, so a sampler the manifest names (one Euler step, say, which returns class averages)
must not decide what the site sees. Each figure that depends on sampling
(:data:`SAMPLED_FIGURES`: the membership AUROC and TPR, through the black-box attack, the
near-copy fraction and the memorization ratio) is reported and judged at its worst over
the samplers, and ``worst_sampler`` names the sampler that gave it. The loss attack and the
near-copy threshold do not sample and are measured once.

Under a DP claim the signed part leaves out every figure measured on the training images
(:func:`ffsecure.privacy.report.withholds`; ``withheld`` in the full report names them):
they stay in the local report only.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ffsecure import generators
from ffsecure.errors import DataError
from ffsecure.privacy import accounting, membership, memorization
from ffsecure.privacy.report import (
    DEFAULT_SAMPLES,
    REPORT_VERSION,
    manifest_report,
    measured_report,
    withheld,
)

log = logging.getLogger(__name__)


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


def _fitted_by_loss(dp: dict[str, Any] | None) -> bool:
    # a mean-embedding module's encoder never saw data: its loss says nothing, only samples do
    return (dp or {}).get("mechanism") != "mean-embedding"


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
    """The attacks that apply to this module (its ``dp`` record says how it was fitted), each
    figure at its worst over every sampler, as :func:`run_check` measures and judges them
    (``sampler`` names the one that gave the AUROC and ``tpr_sampler`` the one that gave the
    TPR, ``samplers`` holds each sampler's AUROC); without the memorization test."""
    timings: dict[str, float] = {}
    loss = _loss_attack(gen, members, non_members, dp, reference, draws, seed, timings)
    variants = generators.sampler_variants(gen)
    runs = {
        name: _SamplerRun({}, mia, {})
        for name, mia in _membership_runs(variants, members, non_members, loss, seed, timings)
    }
    names = _worst_samplers(runs, MEMBERSHIP_FIGURES)
    return {
        **_worst_membership(runs, names),
        "tpr_sampler": names["membership_tpr_at_1pct_fpr"],
        "samplers": {name: run.membership["auroc"] for name, run in runs.items()},
    }


@contextlib.contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall time to ``timings[key]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


@dataclass
class _SamplerRun:
    """What one sampler of the module gave: its settings, attack and memorization figures."""

    settings: dict[str, Any]
    membership: dict[str, Any]
    memorization: dict[str, Any]  # memorization.memorization's result, tensors included


#: The sampler-dependent figures (manifest report keys) and how each is worst: the highest
#: (True) or the lowest (False) value any sampler gave.
SAMPLED_FIGURES: dict[str, tuple[str, str, bool]] = {
    "membership_auroc": ("membership", "auroc", True),
    "membership_tpr_at_1pct_fpr": ("membership", "tpr_at_1pct_fpr", True),
    "near_copy_fraction": ("memorization", "near_copy_fraction", True),
    "memorization_ratio": ("memorization", "ratio", False),
}


#: The sampler-dependent figures of the membership attack alone.
MEMBERSHIP_FIGURES = {k: v for k, v in SAMPLED_FIGURES.items() if v[0] == "membership"}


def _worst_samplers(
    runs: dict[str, _SamplerRun], figures: dict[str, tuple[str, str, bool]] = SAMPLED_FIGURES
) -> dict[str, str]:
    """Report key -> the sampler that gave its worst value (the first one on a tie)."""
    worst = {}
    for key, (part, figure, highest) in figures.items():
        sign = 1.0 if highest else -1.0
        worst[key] = max(runs, key=lambda name: sign * getattr(runs[name], part)[figure])
    return worst


def _loss_attack(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    dp: dict[str, Any] | None,
    reference: Any | None,
    draws: int | None,
    seed: int,
    timings: dict[str, float],
) -> dict[str, Any] | None:
    """The loss attack where it applies (:func:`_fitted_by_loss`): it does not sample, so it
    is run once for every sampler."""
    if not _fitted_by_loss(dp):
        return None
    with _timed(timings, "membership_s"):
        return membership.loss_based_attack(
            gen, members, non_members, reference=reference, draws=draws, seed=seed
        )


def _membership_runs(
    variants: dict[str, Any],
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    loss: dict[str, Any] | None,
    seed: int,
    timings: dict[str, float],
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(sampler name, the strongest attack under it) for every sampler in ``variants``."""
    for name, variant in variants.items():
        with _timed(timings, "membership_s"):
            black_box = membership.black_box_attack(variant, members, non_members, seed=seed)
            mia = membership.strongest(
                members[0].shape[0], non_members[0].shape[0], loss, black_box
            )
        # outside the timer: the caller's work between two samplers is not the attack's
        yield name, mia


def _worst_membership(runs: dict[str, _SamplerRun], worst: dict[str, str]) -> dict[str, Any]:
    """The attack's result at its worst sampler, with the TPR at the TPR's worst sampler."""
    at = worst["membership_auroc"]
    return {
        **runs[at].membership,
        "sampler": at,
        "tpr_at_1pct_fpr": runs[worst["membership_tpr_at_1pct_fpr"]].membership["tpr_at_1pct_fpr"],
    }


def _measure_samplers(
    gen: Any,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    *,
    loss: dict[str, Any] | None,
    n_generated: int,
    seed: int,
    near_copies: memorization.NearCopyReference,
    timings: dict[str, float],
) -> tuple[dict[str, _SamplerRun], dict[str, torch.Tensor]]:
    """Every sampler of :func:`~ffsecure.generators.sampler_variants`: its figures, and the
    samples it generated for the memorization test (measured against ``near_copies``)."""
    runs, samples = {}, {}
    keys = sorted(generators.sampling_keys(gen.family))
    labels = generation_labels(members[1], n_generated)
    variants = generators.sampler_variants(gen)
    attacks = _membership_runs(variants, members, non_members, loss, seed, timings)
    start = time.perf_counter()
    for done, (name, mia) in enumerate(attacks, 1):
        variant = variants[name]
        with _timed(timings, "memorization_s"):
            samples[name] = variant.sample(labels, seed=seed)
            memo = memorization.measure(samples[name], near_copies)
        settings = {key: variant.config[key] for key in keys}
        runs[name] = _SamplerRun(settings, mia, memo)
        # progress only: the figures stay in the report (a log may be kept less tightly)
        log.info(
            "privacy check: sampler %s measured (%d of %d, %.0f s so far)",
            name,
            done,
            len(variants),
            time.perf_counter() - start,
            extra={"event": "privacy_check_progress", "sampler": name, "done": done},
        )
    return runs, samples


def _sampler_summary(run: _SamplerRun) -> dict[str, Any]:
    mia = run.membership
    return {
        "settings": run.settings,
        "membership": {
            key: mia[key] for key in ("attack", "auroc", "tpr_at_1pct_fpr", "black_box")
        },
        "memorization": memorization.summary(run.memorization),
    }


def run_check(
    gen: Any,
    *,
    members: tuple[torch.Tensor, torch.Tensor],
    non_members: tuple[torch.Tensor, torch.Tensor],
    dp: dict[str, Any] | None = None,
    reference: Any | None = None,
    n_generated: int = DEFAULT_SAMPLES,
    seed: int = 0,
    draws: int | None = None,
    png: str | Path | None = None,
    near_copy_threshold: float | None = None,
    training_images: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Measure the module under every sampler; return the full report (see ``docs/privacy.md``).

    ``membership`` and ``memorization`` hold each sampler-dependent figure at its worst
    (:data:`SAMPLED_FIGURES`), ``worst_sampler`` names the sampler that gave it, and
    ``samplers`` holds every sampler's settings and figures.

    ``training_images`` is every image the module was trained on (of its classes): the set
    the memorization test searches for each sample's nearest training image. Pass it
    whenever ``members`` is a subsample for the attack's cost; None means ``members``'
    images are all of them.
    """
    if n_generated < 1:
        raise DataError(
            "generate at least one sample", code="E_DATA_FORMAT", hint="use --samples 1000"
        )
    timings: dict[str, float] = {}
    loss = _loss_attack(gen, members, non_members, dp, reference, draws, seed, timings)
    with _timed(timings, "memorization_s"):
        near_copies = memorization.reference(
            members[0] if training_images is None else training_images,
            non_members[0],
            threshold=near_copy_threshold,
        )
    runs, samples = _measure_samplers(
        gen,
        members,
        non_members,
        loss=loss,
        n_generated=n_generated,
        seed=seed,
        near_copies=near_copies,
        timings=timings,
    )
    worst = _worst_samplers(runs)
    mia = _worst_membership(runs, worst)
    copies = runs[worst["near_copy_fraction"]].memorization
    memo = {
        **memorization.summary(copies),
        "sampler": worst["near_copy_fraction"],
        "ratio": runs[worst["memorization_ratio"]].memorization["ratio"],
    }
    files = {}
    if png is not None:
        with _timed(timings, "memorization_s"):
            memorization.closest_pairs_png(
                png,
                samples[worst["near_copy_fraction"]],
                near_copies.train,
                copies["d_gen"],
                copies["nn_gen"],
                threshold=copies["near_copy_threshold"],
            )
        files["closest_pairs_png"] = str(png)

    acct = accounting.recompute(dp, strict=True)
    full = {
        "v": REPORT_VERSION,
        "family": gen.family,
        "membership": mia,
        "memorization": memo,
        "worst_sampler": worst,
        "samplers": {name: _sampler_summary(run) for name, run in runs.items()},
        "accounting": acct,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "files": files,
    }
    measured = measured_report(full)
    full["manifest_report"] = manifest_report(full, dp)
    full["withheld"] = withheld(measured, dp)  # measured, never released
    return full
