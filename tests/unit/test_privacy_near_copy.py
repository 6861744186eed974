"""The near-copy figure along the site's check path: which training images are searched.

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
from ffsecure.privacy.report import measured_report
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


def test_a_copy_of_a_training_image_outside_the_attack_subsample_counts(digits):
    """Members are subsampled to 100 of the site's ~540 training images for the attack; the
    module's samples are all exact training images, most of them outside that subsample. Each
    is still a near-copy: the test searches every training image of the module's classes."""
    train, test = digits
    sets = members_and_non_members(train, test, CLASSES, max_examples=100, seed=0)
    assert sets.members[0].shape[0] == 100 < sets.training_images.shape[0]
    gen = Replayer(_config(), *train)
    full = run_check(
        gen,
        members=sets.members,
        non_members=sets.non_members,
        n_generated=200,
        training_images=sets.training_images,
    )
    report = measured_report(full)
    assert report["near_copy_fraction"] == 1.0
    assert report["members"] == 100
    assert report["near_copy_searched"] == sets.training_images.shape[0]
    verdict = site_verdict(report, None, {"max_near_copy_fraction": 0.5})
    (near_copy,) = [c for c in verdict.thresholds if c.key == "max_near_copy_fraction"]
    assert near_copy.measurement is None and not near_copy.passes
