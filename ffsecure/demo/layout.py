"""The files each role of the demo starts from: data shards, federation.toml, site.toml.

Pure functions of the demo settings (no processes): every site gets its own
``data.npz`` in the MedMNIST layout holding its part of the training set
(the pathological split) and its share of the test set, as a hospital would
hold its own images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffsecure.dp import SITE_MAX_EPSILON


@dataclass(frozen=True)
class SiteSpec:
    site_id: str
    index: int
    classes: list[int]
    n_train: int
    n_test: int
    data_path: Path


def site_ids(n: int) -> list[str]:
    return [f"site-{i + 1}" for i in range(n)]


def split_test(test_y: np.ndarray, sites: int, seed: int) -> list[np.ndarray]:
    """Disjoint, stratified shares of the test set, one per site (every class in
    every share when it can)."""
    rng = np.random.default_rng(seed + 7919)
    shares: list[list[np.ndarray]] = [[] for _ in range(sites)]
    for c in np.unique(test_y):
        idx = np.flatnonzero(test_y == c)
        rng.shuffle(idx)
        for s, chunk in enumerate(np.array_split(idx, sites)):
            shares[s].append(chunk)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in shares]


def to_unit_images(x) -> np.ndarray:
    """Pipeline tensors ``(N,C,H,W)`` in ``[-1,1]`` as float32 images in ``[0,1]``,
    ``(N,H,W)`` or ``(N,H,W,3)``."""
    arr = ((x.detach().cpu().numpy().astype(np.float32) + 1.0) / 2.0).clip(0.0, 1.0)
    arr = arr.transpose(0, 2, 3, 1)
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def write_site_shards(ds, partition, root: Path, seed: int) -> list[SiteSpec]:
    """Write ``root/<site-id>/data.npz`` for every site of ``partition``; return what each holds."""
    ids = site_ids(partition.num_sites)
    test_y = ds.test_y.numpy()
    tests = split_test(test_y, partition.num_sites, seed)
    specs = []
    for i, (sid, idx, tidx) in enumerate(zip(ids, partition.indices, tests, strict=True)):
        d = root / sid
        d.mkdir(parents=True, exist_ok=True)
        path = d / "data.npz"
        train_y = ds.train_y.numpy()[idx]
        np.savez(
            path,
            train_images=to_unit_images(ds.train_x[idx]),
            train_labels=train_y.reshape(-1, 1),
            test_images=to_unit_images(ds.test_x[tidx]),
            test_labels=test_y[tidx].reshape(-1, 1),
        )
        specs.append(
            SiteSpec(
                sid,
                i,
                sorted(int(c) for c in np.unique(train_y)),
                int(len(idx)),
                int(len(tidx)),
                path,
            )
        )
    return specs


def _toml_str(value: str) -> str:
    return json.dumps(value)


def federation_toml(
    *,
    federation_id: str,
    label_space: list[str],
    image_shape: tuple[int, int, int],
    generator: str,
    generator_size: str,
    endpoint: str,
    public_keys: str,
    dp_epsilon: float | None = None,
    dp_delta: float = 1e-5,
    dp_mechanism: str = "auto",
) -> str:
    """The CA operator's federation.toml (docs/pki.md) for the demo; a mechanism other than
    ``auto`` is pinned in ``dp_policy`` (every site must run it)."""
    lines = [
        "# written by `ffsecure demo`; see docs/pki.md",
        f"federation_id = {_toml_str(federation_id)}",
        f"label_space = {json.dumps(label_space)}",
        f"image_shape = {json.dumps(list(image_shape))}",
        "",
        "[generator]",
        f"family = {_toml_str(generator)}",
        f"size = {_toml_str(generator_size)}",
        "",
        "[dp_policy]",
    ]
    if dp_epsilon is None:
        lines.append("required = false")
    else:
        lines += [
            "required = true",
            f"max_epsilon = {float(dp_epsilon)!r}",
            f"delta = {float(dp_delta)!r}",
        ]
        if dp_mechanism != "auto":
            lines.append(f"mechanism = {_toml_str(dp_mechanism)}")
    lines += [
        "",
        "[aggregator]",
        f"endpoint = {_toml_str(endpoint)}",
        f"public_keys = {_toml_str(public_keys)}",
        "",
    ]
    return "\n".join(lines)


def site_toml(
    *,
    federation_id: str,
    site_id: str,
    endpoint: str,
    data_path: Path,
    epochs: int,
    size: str,
    seed: int,
    dp_epsilon: float | None = None,
    textfile_dir: Path | None = None,
) -> str:
    """A site's site.toml (docs/site-operator.md): its own data file, the demo's
    training schedule, and where `run` writes its node-exporter textfile."""
    lines = [
        "# written by `ffsecure demo`; see docs/site-operator.md",
        "[site]",
        f"federation_id = {_toml_str(federation_id)}",
        f"site_id = {_toml_str(site_id)}",
        'state_dir = "state"',
        "",
        "[aggregator]",
        f"endpoint = {_toml_str(endpoint)}",
        'server_name = "localhost"',
        "max_attempts = 20",
        "max_delay_s = 2.0",
        "",
        "[data]",
        f"source = {_toml_str('npz:' + str(Path(data_path).resolve()))}",
        'label_match = "index"',
        "",
        "[train]",
        f"size = {_toml_str(size)}",
        f"epochs = {int(epochs)}",
        f"seed = {int(seed)}",
        "threads = 1",
        "",
        "[privacy]",
        "# the demo's data are public and its short non-DP fits leak measurably: this site leaves",
        "# the privacy check to the federation's manifest (docs/site-operator.md); a hospital's",
        '# site keeps the default, check = "always"',
        'check = "federation"',
        "",
    ]
    if dp_epsilon is not None:
        lines += ["[dp]", f"target_epsilon = {float(dp_epsilon)!r}"]
        if dp_epsilon > SITE_MAX_EPSILON:  # the demo's --dp-epsilon is each site's choice too
            lines += [f"max_epsilon = {float(dp_epsilon)!r}"]
        lines += [""]
    if textfile_dir is not None:
        lines += ["[monitoring]", f"textfile_dir = {_toml_str(str(Path(textfile_dir)))}", ""]
    return "\n".join(lines)


def evaluation_toml(dataset: str, *, root: str | None, seed: int) -> str:
    """The aggregator's [evaluation] section: the data set's whole test split."""
    for prefix in ("npz:", "folder:", "dicom:"):
        if dataset.startswith(prefix):
            dataset = prefix + str(Path(dataset[len(prefix) :]).resolve())
    lines = [
        "",
        "# added by `ffsecure demo`: the test set `aggregator train` reports accuracy on",
        "[evaluation]",
        f"data = {_toml_str(dataset)}",
    ]
    if root:
        lines.append(f"root = {_toml_str(str(Path(root).resolve()))}")
    lines += [f"seed = {int(seed)}", ""]
    return "\n".join(lines)
