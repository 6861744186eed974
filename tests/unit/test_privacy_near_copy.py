"""The near-copy figure along the site's check path: which training images are searched, and
which held-out images set the threshold.

The path is the gate's own: :func:`site_node.privacy.members_and_non_members`, then
:func:`ffsecure.privacy.check.run_check` and the policy's :func:`site_verdict` on the
measured report. The module is a real tiny cvae (its loss attack runs on its weights)
whose sampler replays training images of the sampled class, drawn from the whole
training split: a memorizing module at its most obvious, without minutes of overfitting.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from ffsecure import generators
from ffsecure.data import load_digits
from ffsecure.generators.cvae import CVAE
from ffsecure.privacy.check import run_check
from ffsecure.privacy.policy import site_verdict
from ffsecure.privacy.report import NEAR_COPY_FLOOR, measured_report
from site_node.privacy import members_and_non_members

CLASSES = [0, 1, 2, 3]
SHAPE = (1, 16, 16)


class Replayer(CVAE):
    """A cvae whose samples are training images of the sampled class (plus ``noise``)."""

    def __init__(self, config, images: torch.Tensor, labels: torch.Tensor, noise: float = 0.0):
        super().__init__(config)
        self.images, self.labels, self.noise = images, labels, noise

    def sample(
        self, labels: Sequence[int] | torch.Tensor, seed: int, *, device: str = "cpu"
    ) -> torch.Tensor:
        y = torch.as_tensor(labels, dtype=torch.int64)
        rng = torch.Generator().manual_seed(int(seed) + 17)
        out = torch.empty(y.shape[0], *self.images.shape[1:])
        for label in y.unique().tolist():
            rows = (y == label).nonzero()[:, 0]
            pool = self.images[self.labels == label]
            out[rows] = pool[torch.randint(pool.shape[0], (rows.numel(),), generator=rng)]
        noise = self.noise * torch.randn(out.shape, generator=rng)
        return (out + noise).clamp(-1, 1)


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    ds = load_digits(image_shape=SHAPE)
    return (ds.train_x, ds.train_y), (ds.test_x, ds.test_y)


def _config():
    return generators.default_config("cvae", image_shape=SHAPE, num_classes=10, size="tiny")


def _near_copy_check(train, held_out, module_noise: float = 0.0, *, max_examples: int = 2000):
    """The gate's path on ``held_out`` for a module replaying training images with
    ``module_noise``; returns (the sets measured on, the measured report, its verdict on the
    near-copy fraction under a limit of 0.05)."""
    sets = members_and_non_members(train, held_out, CLASSES, max_examples=max_examples, seed=0)
    gen = Replayer(_config(), *train, noise=module_noise)
    full = run_check(
        gen,
        members=sets.members,
        non_members=sets.non_members,
        n_generated=200,
        training_images=sets.training_images,
    )
    report = measured_report(full)
    verdict = site_verdict(report, None, {"max_near_copy_fraction": 0.05})
    (near_copy,) = [c for c in verdict.thresholds if c.key == "max_near_copy_fraction"]
    return sets, report, near_copy


def test_a_copy_of_a_training_image_outside_the_attack_subsample_counts(digits):
    """Members are subsampled to 100 of the site's ~540 training images for the attack; the
    module's samples are all exact training images, most of them outside that subsample. Each
    is still a near-copy: the test searches every training image of the module's classes."""
    train, test = digits
    sets, report, near_copy = _near_copy_check(train, test, max_examples=100)
    assert sets.members[0].shape[0] == 100 < sets.training_images.shape[0]
    assert report["near_copy_fraction"] == 1.0
    assert report["members"] == 100
    assert report["near_copy_searched"] == sets.training_images.shape[0]
    assert near_copy.measurement is None and not near_copy.passes


def _with_duplicates(train, test, count: int, noise: float, *, fresh: int | None = None):
    """The held-out split of ``CLASSES`` (its first ``fresh`` images) plus ``count`` training
    images of those classes with Gaussian ``noise``: the same patient's repeat images on both
    sides of a split, as MedMNIST's official splits hold them."""
    keep = torch.isin(test[1], torch.tensor(CLASSES))
    x, y = test[0][keep][:fresh], test[1][keep][:fresh]
    pool = torch.isin(train[1], torch.tensor(CLASSES)).nonzero()[:, 0]
    rng = torch.Generator().manual_seed(5)
    picked = pool[torch.randperm(pool.numel(), generator=rng)[:count]]
    repeats = train[0][picked] + noise * torch.randn(train[0][picked].shape, generator=rng)
    return torch.cat([x, repeats.clamp(-1, 1)]), torch.cat([y, train[1][picked]])


@pytest.mark.parametrize(
    "repeat_noise, module_noise",
    [(0.0, 0.0), (0.005, 0.02)],
    ids=["exact-duplicates-exact-replays", "near-duplicates-noisy-replays"],
)
def test_held_out_images_that_duplicate_training_images_do_not_set_the_threshold(
    digits, repeat_noise, module_noise
):
    """18 of the 198 held-out images repeat a training image (about 9%, BreastMNIST's val
    split has 15% within 0.03). Were they to set the threshold (the 1% quantile), it would be
    their own distance: exact duplicates give 0 (the figure refused), near ones about 0.005,
    under which a module whose every sample is a training image plus noise counts no copy.
    They are left out: the threshold is the quantile of the other held-out images, never
    below the floor, and every sample of the module is a near-copy."""
    train, test = digits
    held_out = _with_duplicates(train, test, 18, repeat_noise)
    sets, report, near_copy = _near_copy_check(train, held_out, module_noise)
    assert report["near_copy_fraction"] == 1.0
    assert near_copy.measurement is None and not near_copy.passes
    assert report["near_copy_threshold"] >= NEAR_COPY_FLOOR
    assert report["near_copy_holdout"] == sets.non_members[0].shape[0] - 18


def test_a_held_out_split_of_mostly_duplicates_gives_no_near_copy_figure(digits):
    """30 of 45 held-out images repeat a training image: the 15 left are fewer than the
    policy's min_non_members (20), too few for their 1% quantile to be a threshold, so the
    near-copy figure does not count (as at threshold 0) and the module fails the limit."""
    train, test = digits
    held_out = _with_duplicates(train, test, 30, 0.005, fresh=15)
    _, report, near_copy = _near_copy_check(train, held_out, 0.02)
    assert near_copy.measurement is not None and not near_copy.passes
    assert "only 15 of its 45 held-out images lie at least 0.03" in near_copy.measurement
    assert report["non_members"] == 45 and report["near_copy_holdout"] == 15
