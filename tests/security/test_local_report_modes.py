"""Red team: the local privacy report and the closest-pairs PNG hold figures measured on the
training images and the training images themselves. ``site-node privacy-check --out DIR`` (and
without ``--config``, the current folder) writes them outside the 0700 state directory, so
their own mode must keep other users out: 0600, like the site key."""

from __future__ import annotations

import stat

import torch

from ffsecure.privacy.memorization import closest_pairs_png
from site_node.privacy import write_report


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_local_report_and_the_closest_pairs_png_are_0600(tmp_path):
    write_report(tmp_path / "privacy-report.json", {"membership": {"auroc": 0.61}})
    images = torch.rand(4, 1, 8, 8)
    closest_pairs_png(
        tmp_path / "closest-pairs.png",
        images,
        images,
        torch.tensor([0.1, 0.2, 0.3, 0.4]),
        torch.tensor([0, 1, 2, 3]),
        n=2,
    )
    assert _mode(tmp_path / "privacy-report.json") == 0o600
    assert _mode(tmp_path / "closest-pairs.png") == 0o600
