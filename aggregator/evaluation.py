"""The operator's test set (``[evaluation]`` in aggregator.toml), used to score trained classifiers.

The aggregator never sees a site's data. An operator who holds a public or
own labelled test set names it in ``aggregator.toml``::

    [evaluation]
    data = "digits"          # or a MedMNIST flag, "npz:PATH", "folder:PATH", "dicom:PATH"
    root = "/data/medmnist"  # optional: folder of MedMNIST .npz files
    seed = 0                 # optional: split seed for sources split by seed (digits, folders)
    max_samples = 0          # optional: use only the first N test images (0 = all)

Only the *test* split is used. It must have as many classes as the
federation's label space, label ``k`` meaning ``label_space[k]`` (the count
is checked, ``E_EVAL_CLASSES``), and images are loaded at the federation's
image shape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ffsecure.data import load_dataset
from ffsecure.errors import ConfigError
from ffsecure.records.fields import is_int

_KEYS = {"data", "root", "seed", "max_samples"}


@dataclass
class EvalSet:
    name: str
    x: torch.Tensor
    y: torch.Tensor
    class_names: list[str]


def _error(message: str, code: str = "E_CONFIG") -> ConfigError:
    return ConfigError(
        message,
        code=code,
        hint="fix the [evaluation] section of aggregator.toml "
        "(keys: data, root, seed, max_samples)",
    )


def load_evaluation(
    section: dict[str, Any] | None, *, label_space: list[str], image_shape: tuple[int, int, int]
) -> EvalSet | None:
    """Load the configured test set, or ``None`` when no ``[evaluation]`` is configured."""
    if not section:
        return None
    unknown = set(section) - _KEYS
    if unknown:
        raise _error(f"unknown key(s) {sorted(unknown)} in [evaluation]")
    spec = section.get("data")
    if not isinstance(spec, str) or not spec:
        raise _error('[evaluation] needs data = "<source>"')
    seed = section.get("seed", 0)
    max_samples = section.get("max_samples", 0)
    if not is_int(seed) or seed < 0:
        raise _error("[evaluation] seed must be a non-negative integer")
    if not is_int(max_samples) or max_samples < 0:
        raise _error("[evaluation] max_samples must be a non-negative integer")
    root = section.get("root")
    if root is not None and not isinstance(root, str):
        raise _error("[evaluation] root must be a path string")

    ds = load_dataset(spec, image_shape=image_shape, root=root, seed=seed)
    if len(ds.class_names) != len(label_space):
        raise _error(
            f"the test set has {len(ds.class_names)} classes, the federation {len(label_space)}",
            code="E_EVAL_CLASSES",
        )
    x, y = ds.test_x, ds.test_y
    if max_samples:
        x, y = x[:max_samples], y[:max_samples]
    return EvalSet(name=spec, x=x, y=y, class_names=list(label_space))
