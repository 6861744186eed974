"""The privacy check at the site: measure a module and judge it before it is sealed.

``site-node train`` and ``site-node run`` call :func:`gate` between building the manifest
and signing it, before every module by default (site.toml ``privacy.check = "always"``,
:class:`site_node.config.SitePrivacy`), and always when the federation manifest carries a
``privacy_policy`` (every present policy requires a report,
:func:`ffsecure.privacy.policy.effective_policy`): the privacy check
(:func:`ffsecure.privacy.check.run_check`) runs on the weights about to be signed, with the
site's training images of the module's classes as members and the same classes' held-out
images as non-members, under the manifest's sampler and the family's reference samplers
(each figure at its worst: the aggregator samples the weights as it likes). The report is
judged with :func:`ffsecure.privacy.policy.site_verdict`, which applies
:func:`~ffsecure.privacy.policy.evaluate`, the function the aggregator uses at
registration, under the same defaults, at the stricter of the federation's limit and the
site's own (``[privacy]``, :func:`ffsecure.privacy.policy.limits_in_force`) on each
figure: the federation's manifest may tighten the site's limits, never loosen them, as
with ``[dp]``'s ceiling. A module that fails either is stored ``refused`` with the reason
(``error.by = "site"``, the message naming whose limit it broke) and never sealed or sent.
The numbers-only report goes into the manifest (so the signature covers it) only when the
federation requires one: a site that checks on its own releases nothing it was not asked
for. ``site-node privacy-check`` uses the same measuring step.

A module with a DP claim signs no figure measured on the training images, whatever
the federation (:func:`ffsecure.privacy.report.releasable`): a site that trains under
DP, because the federation requires it or by its own choice, releases nothing about its
data outside its claim. The figures stay in the local report. Where the federation
bounds every DP claim (``dp_policy.max_epsilon`` and ``delta``:
:func:`ffsecure.privacy.report.dp_covers`), or sets no privacy policy so that only the
site's own limits apply, the claim covers the limits on them, and one they exceed is
logged as a warning for the site operator, never a refusal, so that no decision depends
on private data outside the claim. Where the federation sets a policy but bounds no
claim, the claim cannot stand in for the figures: the module is refused here, as the
aggregator would refuse it. Either way only a claim within the site's own ceiling
(``dp.max_epsilon``) covers anything.

The full local report (``privacy-report.json``, with the verdict under
``policy``) and ``closest-pairs.png`` are written beside the package.
Measuring is seeded by ``train.seed``: the check is evidence, not a
protection, so being repeatable is what is wanted.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ffsecure.dp import SITE_MAX_EPSILON
from ffsecure.errors import DataError
from ffsecure.federation import FederationManifest
from ffsecure.files import write_secret_file
from ffsecure.package import ModuleManifest
from ffsecure.privacy.policy import PolicyVerdict, SiteLimits, effective_policy, site_verdict
from ffsecure.privacy.report import DEFAULT_MAX_EXAMPLES, DEFAULT_SAMPLES, measured_report
from site_node.config import SitePrivacy

if TYPE_CHECKING:  # annotations only: torch is imported when a check runs
    import torch

    from site_node.training import SiteData

log = logging.getLogger("site_node.privacy")

REPORT_FILE = "privacy-report.json"
PAIRS_FILE = "closest-pairs.png"


def report_required(federation: FederationManifest) -> bool:
    """Whether the federation's (effective) privacy policy requires a privacy report: whenever
    the manifest carries one, so that every limit it sets binds every module."""
    policy = effective_policy(federation.privacy_policy)
    return bool(policy and policy["required"])


def own_limits(privacy: SitePrivacy, federation: FederationManifest) -> SiteLimits | None:
    """The site's own limits when its check runs under ``federation``, else None (no check)."""
    return privacy.limits if privacy.runs(report_required(federation)) else None


def select_classes(
    x: torch.Tensor, y: torch.Tensor, classes: list[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The images of ``x`` whose label is in ``classes``."""
    # heavy: torch, only when a privacy check runs
    import torch

    mask = torch.isin(y, torch.tensor(sorted(classes), dtype=torch.int64))
    return x[mask], y[mask]


Images = tuple["torch.Tensor", "torch.Tensor"]  # (x, y)


@dataclasses.dataclass(frozen=True)
class CheckSets:
    """The images a privacy check of one module is measured on (:func:`members_and_non_members`)."""

    members: Images  # training images of the module's classes, subsampled for the attack
    non_members: Images  # held-out images of those classes, subsampled
    split: str  # the held-out split: ``val`` or ``test``
    training_images: torch.Tensor  # every training image of those classes: the near-copy search


def members_and_non_members(
    train: Images,
    test: Images,
    classes: list[int],
    *,
    val: Images | None = None,
    max_examples: int,
    seed: int,
) -> CheckSets:
    """Members (training images) and non-members (held-out images) of ``classes``, subsampled
    to ``max_examples`` each for the membership attack, the held-out split's name (``val`` or
    ``test``, see :func:`ffsecure.privacy.check.held_out_pool`) and every training image of
    ``classes``, which the memorization test searches whatever ``max_examples`` is."""
    # heavy: torch, only when a privacy check runs
    from ffsecure.privacy.check import held_out_pool, subsample

    members = select_classes(*train, classes)
    non_members, split = held_out_pool(classes, test, val)
    if members[0].shape[0] < 1 or non_members[0].shape[0] < 2:
        raise DataError(
            f"the data holds {members[0].shape[0]} training and "
            f"{non_members[0].shape[0]} held-out images of classes {classes}; "
            "the privacy check needs >= 1 and >= 2",
            code="E_DATA_EMPTY",
            hint="check the data source, its test split and the module's classes",
        )
    return CheckSets(
        members=subsample(*members, max_examples, seed),
        non_members=subsample(*non_members, max_examples, seed + 1),
        split=split,
        training_images=members[0],
    )


def gate(
    manifest: ModuleManifest,
    weights: bytes,
    data: SiteData,
    federation: FederationManifest,
    *,
    seed: int,
    out_dir: Path,
    privacy: SitePrivacy,
    max_epsilon: float = SITE_MAX_EPSILON,
) -> tuple[ModuleManifest, PolicyVerdict | None]:
    """Measure the module, judge it, put the report in ``manifest``. Returns (manifest, verdict).

    ``privacy`` is the site's own check (site.toml ``[privacy]``): ``(manifest, None)``
    unchanged when it does not run (:func:`own_limits`). The report is signed into the
    manifest only when the federation requires one. ``max_epsilon`` is the site's own
    ceiling (site.toml ``dp.max_epsilon``): a DP claim above it covers no limit.
    Writes ``privacy-report.json`` and ``closest-pairs.png`` into ``out_dir``.
    """
    # heavy: torch, only when a privacy check runs
    from ffsecure import generators
    from ffsecure.privacy.check import run_check

    limits = own_limits(privacy, federation)
    if limits is None:
        return manifest, None
    sets = members_and_non_members(
        (data.train_x, data.train_y),
        (data.test_x, data.test_y),
        manifest.classes,
        val=None if data.val_x is None or data.val_y is None else (data.val_x, data.val_y),
        max_examples=DEFAULT_MAX_EXAMPLES,
        seed=seed,
    )
    family, config = manifest.generator["family"], manifest.generator["config"]
    gen = generators.from_state(family, config, weights)  # exactly the weights about to be signed
    out_dir.mkdir(parents=True, exist_ok=True)
    full = run_check(
        gen,
        members=sets.members,
        non_members=sets.non_members,
        dp=manifest.dp,
        n_generated=DEFAULT_SAMPLES,
        seed=seed,
        png=out_dir / PAIRS_FILE,
        training_images=sets.training_images,
    )
    report = full["manifest_report"]
    full["membership"]["non_member_split"] = sets.split
    full["module_id"] = manifest.module_id
    verdict = judge(
        full,
        manifest.dp,
        federation,
        max_epsilon=max_epsilon,
        limits=limits,
        report_path=out_dir / REPORT_FILE,
    )
    full["policy"] = verdict.to_dict()
    write_report(out_dir / REPORT_FILE, full)
    if not report_required(federation):  # the site's own check: nothing signed it was not asked
        return manifest, verdict
    return dataclasses.replace(manifest, privacy_report=dict(report)), verdict


def judge(
    full: dict[str, Any],
    dp: dict | None,
    federation: FederationManifest,
    *,
    max_epsilon: float = SITE_MAX_EPSILON,
    limits: SiteLimits | None = None,
    report_path: Path | None = None,
) -> PolicyVerdict:
    """The site's verdict on a full report under the federation's policy, the site's own limits
    (``limits``, site.toml ``[privacy]``; None: the federation's only) and its own ceiling
    (``max_epsilon``, site.toml ``dp.max_epsilon``); logs its warnings.

    A warning is about a figure kept out of the signed report, so its log line names the
    figure, the limit's key and that it fails, and points to ``report_path`` (the local report, mode
    0600), never the value: a log may be kept less tightly than that file.
    """
    verdict = site_verdict(
        measured_report(full),
        dp,
        federation.privacy_policy,
        dp_policy=federation.dp_policy,
        max_epsilon=max_epsilon,
        site=limits,
    )
    where = str(report_path) if report_path is not None else REPORT_FILE
    module_id = full.get("module_id")
    for check in verdict.warned:
        log.warning(
            "privacy check of module %s: the %s fails the %s's limit (%s); measured here, "
            "not released: the DP claim covers it; the figures are in %s",
            module_id,
            check.what,
            check.source,
            check.key,
            where,
            extra={
                "event": "privacy_warning",
                "module_id": module_id,
                "figure": check.key,
                "passes": False,
                "source": str(check.source),
                "report": where,
            },
        )
    return verdict


def write_report(path: Path, full: dict[str, Any]) -> None:
    """The full local report, as ``privacy-report.json`` (readable JSON, mode 0600: it holds
    figures measured on the training images, and ``--out`` may put it outside the state)."""
    write_secret_file(path, (json.dumps(full, indent=2, sort_keys=True) + "\n").encode())
