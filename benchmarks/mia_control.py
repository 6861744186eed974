"""The membership attack without a generator: how far apart members and non-members start.

``site-node privacy-check`` (and ``benchmarks.dp``, through ``ffsecure simulate``) scores
each training image (member) and each held-out image (non-member) by its distance to
the nearest generated image of its class. If the held-out images differ from the
training images as collections (another acquisition, another selection), that distance
separates them whatever the generator learnt, and the AUROC measures the split, not
membership. This control runs the same statistic with no generator at all: the
"generated" images are real images of the class that are neither members nor
non-members (the other held-out split), so nothing in them depends on the members. An
AUROC away from 0.5 here is the part of the attack's figure that no DP mechanism can
remove. Members and non-members are chosen exactly as in a pathological-split simulation
(one class per site; :func:`ffsecure.privacy.check.held_out_pool`, 500 of each, seeded).

    python -m benchmarks.mia_control [--datasets retinamnist,breastmnist,pneumoniamnist]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks import common

DATASETS = ("breastmnist", "pneumoniamnist", "retinamnist")


def control_points(dataset: str, *, seed: int, data_root: str | None) -> list[dict[str, Any]]:
    # heavy: torch, only when this part runs
    import torch

    from ffsecure.data import load_dataset
    from ffsecure.privacy.check import held_out_pool, subsample
    from ffsecure.privacy.membership import auroc, auroc_interval
    from ffsecure.simulate import MEMBERSHIP_EXAMPLES

    ds = load_dataset(dataset, root=data_root, seed=seed)
    test = (ds.test_x, ds.test_y)
    val = None if ds.val_x is None or ds.val_y is None else (ds.val_x, ds.val_y)
    points = []
    for c in range(ds.num_classes):
        keep = ds.train_y == c
        members = subsample(ds.train_x[keep], ds.train_y[keep], MEMBERSHIP_EXAMPLES, seed)
        pool, split = held_out_pool([c], test, val)
        non_members = subsample(*pool, MEMBERSHIP_EXAMPLES, seed)
        other = val if split == "test" else test
        point: dict[str, Any] = {
            "dataset": dataset,
            "class": c,
            "members": int(members[0].shape[0]),
            "non_member_split": split,
            "non_members": int(non_members[0].shape[0]),
            "reference_split": "val" if split == "test" else "test",
        }
        ref = None if other is None else other[0][other[1] == c]
        point["reference_images"] = 0 if ref is None else int(ref.shape[0])
        if ref is None or ref.shape[0] == 0:
            points.append(point)
            continue
        flat = ref.reshape(ref.shape[0], -1).double()

        def nearest(x: torch.Tensor, flat: torch.Tensor = flat) -> torch.Tensor:
            return torch.cdist(x.reshape(x.shape[0], -1).double(), flat).amin(1)

        value = auroc(-nearest(members[0]).numpy(), -nearest(non_members[0]).numpy())
        point["control_auroc"] = round(value, 3)
        lo, hi = auroc_interval(value, point["members"], point["non_members"])
        point["control_auroc_ci95"] = [round(lo, 3), round(hi, 3)]
        points.append(point)
    return points


def markdown(result: dict[str, Any]) -> str:
    md = "# Membership attack without a generator (control)\n\n"
    md += common.meta_line(result["meta"]) + "\n\n"
    md += (
        "Members: a class's training images; non-members: its held-out images from the split "
        "`held_out_pool` picks (validation when it holds at least 20 of the class, else "
        "test); both capped at 500 (seed 0), as in `ffsecure simulate` with one class per "
        "site. Each image is scored by its distance to the nearest *real* image of its class "
        "from the other held-out split (the reference, which is neither), the statistic of "
        "the nearest-sample attack with no generator in it. AUROC 0.5: the two sets start "
        "alike; away from 0.5: the attack's figure for that site includes this much that "
        "does not come from membership.\n\n"
    )
    rows = [
        [
            p["dataset"],
            p["class"],
            p["members"],
            f"{p['non_members']} ({p['non_member_split']})",
            f"{p['reference_images']} ({p['reference_split']})",
            "—"
            if "control_auroc" not in p
            else f"{p['control_auroc']:.3f} [{p['control_auroc_ci95'][0]:.2f}, "
            f"{p['control_auroc_ci95'][1]:.2f}]",
        ]
        for p in result["points"]
    ]
    md += common.table(
        [
            "data set",
            "class (site)",
            "members",
            "non-members (split)",
            "reference images (split)",
            "control AUROC [95% interval]",
        ],
        rows,
        "lrrrrr",
    )
    return md


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    p.add_argument("--name", default="mia_control")
    a = p.parse_args(argv)
    result: dict[str, Any] = {
        "meta": common.meta(a.name, {"datasets": a.datasets, "seed": a.seed}),
        "points": [],
    }
    for dataset in a.datasets.split(","):
        result["points"] += control_points(dataset, seed=a.seed, data_root=a.data_root)
    common.write_result(Path(a.out), a.name, result, markdown(result) + "\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
