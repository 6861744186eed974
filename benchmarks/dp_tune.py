"""Choose the mean-embedding defaults on public data only: scikit-learn digits.

For each candidate (number of random features, bandwidth, fit steps) and epsilon, one
generator per digit class is fitted by the DP mean-embedding mechanism to that class's
training images (as a pathological-split site would be), ``--samples`` images per class
are generated, and a logistic regression trained on them is scored on the digits test
split. Digits is public (shipped with scikit-learn), so looking at its test split breaks
no DP guarantee; no MedMNIST file is read. The winner's knobs are the defaults of
``ffsecure.dp_embedding`` (docs/privacy.md, "Which data chose each default").

    python -m benchmarks.dp_tune [--features 200,1000] [--bandwidths 0.5,1.0] [--epsilons 1,8]
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Any

from benchmarks import common


def score(features: int, bandwidth: float, steps: int, eps: float, *, samples: int, seed: int):
    # heavy: torch and sklearn, only when this part runs
    import torch
    from sklearn.linear_model import LogisticRegression

    from ffsecure import dp, dp_embedding
    from ffsecure import generators as G
    from ffsecure.data import load_dataset

    ds = load_dataset("digits", seed=seed)
    k = len(ds.class_names)
    cfg = G.default_config("cvae", image_shape=ds.image_shape, num_classes=k)
    spec = dp_embedding.FeatureSpec(seed=seed, n_features=features, bandwidth=bandwidth)
    xs, ys = [], []
    t0 = time.perf_counter()
    for c in range(k):
        gen = G.build("cvae", cfg)
        keep = ds.train_y == c
        settings = G.TrainSettings(seed=seed * 100 + c, embedding_steps=steps)
        plan = dp.plan_mean_embedding(dp.DPConfig(eps, delta=1e-5), n=int(keep.sum()))
        dp_embedding.fit_cvae(gen, ds.train_x[keep], ds.train_y[keep], settings, plan, spec=spec)
        xs.append(gen.sample([c] * samples, seed=seed))
        ys += [c] * samples
    fit_s = time.perf_counter() - t0
    clf = LogisticRegression(max_iter=300)
    clf.fit(torch.cat(xs).flatten(1).numpy(), ys)
    acc = float(clf.score(ds.test_x.flatten(1).numpy(), ds.test_y.numpy()))
    return {"accuracy": round(acc, 4), "fit_s_all_sites": round(fit_s, 1)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--features", default="200,1000")
    p.add_argument("--bandwidths", default="0.5,1.0")
    p.add_argument("--steps", default="300")
    p.add_argument("--epsilons", default="1,8")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(common.DEFAULT_OUT))
    p.add_argument("--name", default="dp_tune")
    a = p.parse_args(argv)
    grid = list(
        itertools.product(
            [int(v) for v in a.features.split(",")],
            [float(v) for v in a.bandwidths.split(",")],
            [int(v) for v in a.steps.split(",")],
            [float(v) for v in a.epsilons.split(",")],
        )
    )
    settings = {k: getattr(a, k) for k in ("features", "bandwidths", "steps", "epsilons")}
    result: dict[str, Any] = {"meta": common.meta(a.name, settings), "points": []}
    for features, bandwidth, steps, eps in grid:
        point = {"features": features, "bandwidth": bandwidth, "steps": steps, "epsilon": eps}
        point.update(score(features, bandwidth, steps, eps, samples=a.samples, seed=a.seed))
        print(point, flush=True)
        result["points"].append(point)
    rows = [
        [p["features"], p["bandwidth"], p["steps"], p["epsilon"], p["accuracy"]]
        for p in result["points"]
    ]
    md = "# Mean-embedding knobs on digits (public)\n\n" + common.meta_line(result["meta"]) + "\n\n"
    md += common.table(["features", "bandwidth", "steps", "epsilon", "accuracy"], rows, "rrrrr")
    common.write_result(Path(a.out), a.name, result, md + "\n")
    return result


if __name__ == "__main__":
    main()
