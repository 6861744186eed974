"""Class-balanced synthetic datasets from a set of generator modules, reproducible from a recipe.

Rules (the recipe records their outcome, so a dataset can be regenerated
bit for bit and audited):

* every class ``k`` of the label space gets ``per_class`` samples, drawn
  from the modules whose ``classes`` include ``k``;
* modules are ordered by ``module_id``; a class covered by ``m`` modules
  gives each ``per_class // m`` samples, and the ``per_class % m`` left
  over go one each to the modules at positions ``(k + j) mod m`` for
  ``j = 0 .. remainder-1`` (rotating with the class, so no module is
  always favoured);
* each (class, module) assignment samples with its own seed
  ``SHA-256("ffsecure/synthesis/v1" || canonical_json({"class", "module_id",
  "seed"}))``, first 8 bytes big-endian, shifted right by one bit (a
  non-negative 63-bit integer);
* classes that no module covers are reported in ``uncovered`` (in the
  result and in the recipe), never silently dropped;
* the output is ordered by class, then by module id.

:func:`dataset_hash` fixes the bytes of a dataset: SHA-256 over the ASCII
tag ``ffsecure/dataset/v1`` and a zero byte, then ``N, C, H, W`` as
unsigned 64-bit little-endian integers, then the images as C-contiguous
little-endian float32 ``(N, C, H, W)``, then the labels as little-endian
int64 ``(N,)``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ffsecure import canonical
from ffsecure.errors import ConfigError, NotFoundError, VerificationError
from ffsecure.generators.base import Generator
from ffsecure.records.fields import is_int
from ffsecure.records.lineage import split_counts as split_counts  # its one home

log = logging.getLogger(__name__)

RECIPE_VERSION = 1
SEED_CONTEXT = b"ffsecure/synthesis/v1"
DATASET_CONTEXT = b"ffsecure/dataset/v1\x00"
MAX_DATASET_BYTES = 8 << 30  # refuse to materialise more than 8 GiB of images
MAX_MODULE_ID_LEN = 128

ProgressFn = Callable[[int, int], None]  # progress(samples_done, samples_total)


@dataclass
class ModuleSource:
    """One generator module available for synthesis."""

    module_id: str
    generator: Generator
    classes: list[int]
    weights_sha256: str


@dataclass
class SyntheticDataset:
    images: torch.Tensor  # (N, C, H, W) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64
    recipe: dict[str, Any]
    uncovered: list[int]


def _error(message: str, hint: str = "check the modules and the synthesis settings") -> ConfigError:
    return ConfigError(message, code="E_SYNTHESIS", hint=hint)


def assignment_seed(seed: int, class_index: int, module_id: str) -> int:
    """The sampling seed of one (class, module) assignment, derived with SHA-256."""
    message = SEED_CONTEXT + canonical.dumps(
        {"class": int(class_index), "module_id": module_id, "seed": int(seed)}
    )
    return int.from_bytes(hashlib.sha256(message).digest()[:8], "big") >> 1


def dataset_hash(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 (hex) of a dataset in the canonical byte layout described in the module docstring."""
    if images.dim() != 4 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise _error("dataset_hash needs images (N, C, H, W) and labels (N,)")
    digest = hashlib.sha256(DATASET_CONTEXT)
    digest.update(struct.pack("<4Q", *images.shape))
    x = images.detach().to("cpu", torch.float32).contiguous().numpy()
    digest.update(x.astype("<f4", copy=False).tobytes(order="C"))
    y = labels.detach().to("cpu", torch.int64).contiguous().numpy()
    digest.update(y.astype("<i8", copy=False).tobytes(order="C"))
    return digest.hexdigest()


def _check_sources(
    sources: Iterable[ModuleSource], num_classes: int
) -> tuple[list[ModuleSource], list[int]]:
    sources = list(sources)
    if not sources:
        raise _error("no modules to synthesize from", "register at least one module")
    seen: set[str] = set()
    shape: list[int] | None = None
    for src in sources:
        if not isinstance(src, ModuleSource):
            raise _error(f"expected ModuleSource, got {type(src).__name__}")
        if not isinstance(src.module_id, str) or not 0 < len(src.module_id) <= MAX_MODULE_ID_LEN:
            raise _error(
                f"module id {src.module_id!r} must be a non-empty string "
                f"of at most {MAX_MODULE_ID_LEN} characters"
            )
        if src.module_id in seen:
            raise _error(f"module {src.module_id} is listed twice")
        seen.add(src.module_id)
        cfg = src.generator.config
        if cfg.get("num_classes") != num_classes:
            raise _error(
                f"module {src.module_id} was built for {cfg.get('num_classes')} classes, "
                f"the label space has {num_classes}",
                "synthesize only from modules of this federation",
            )
        if shape is None:
            shape = list(cfg["image_shape"])
        elif list(cfg["image_shape"]) != shape:
            raise _error(
                f"module {src.module_id} makes images of shape {cfg['image_shape']}, others {shape}"
            )
        if (
            not src.classes
            or any(not is_int(k) or not 0 <= k < num_classes for k in src.classes)
            or len(set(src.classes)) != len(src.classes)
        ):
            raise _error(
                f"module {src.module_id} lists classes {src.classes!r}: "
                f"need distinct ints in [0, {num_classes - 1}]"
            )
        if not isinstance(src.weights_sha256, str) or len(src.weights_sha256) != 64:
            raise _error(f"module {src.module_id} has no 64-hex-digit weights_sha256")
    assert shape is not None  # sources is not empty
    return sorted(sources, key=lambda s: s.module_id), shape


def plan_assignments(
    sources: Sequence[ModuleSource], *, num_classes: int, per_class: int, seed: int
) -> tuple[list[dict[str, Any]], list[int]]:
    """The (class, module, count, seed) assignments and the uncovered classes;
    sources sorted by id."""
    assignments: list[dict[str, Any]] = []
    uncovered: list[int] = []
    for k in range(num_classes):
        covering = [s for s in sources if k in s.classes]
        if not covering:
            uncovered.append(k)
            continue
        for src, count in zip(covering, split_counts(per_class, k, len(covering)), strict=True):
            if count:
                assignments.append(
                    {
                        "class": k,
                        "module_id": src.module_id,
                        "count": count,
                        "seed": assignment_seed(seed, k, src.module_id),
                    }
                )
    return assignments, uncovered


def _run(
    assignments, by_id, shape, device, progress, world_size: int = 1, threads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    if world_size > 1:
        return _run_distributed(assignments, by_id, shape, device, progress, world_size, threads)
    total = sum(a["count"] for a in assignments)
    images = torch.empty(total, *shape, dtype=torch.float32)
    labels = torch.empty(total, dtype=torch.int64)
    done = 0
    for a in assignments:
        gen = by_id[a["module_id"]].generator
        out = gen.sample([a["class"]] * a["count"], seed=a["seed"], device=device)
        if tuple(out.shape) != (a["count"], *shape):  # pragma: no cover - a family bug
            raise RuntimeError(f"module {a['module_id']} returned shape {tuple(out.shape)}")
        images[done : done + a["count"]] = out
        labels[done : done + a["count"]] = a["class"]
        done += a["count"]
        if progress is not None:
            progress(done, total)
    return images, labels


def _run_distributed(
    assignments, by_id, shape, device, progress, world_size: int, threads: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    from ffsecure import distributed  # heavy: spawns worker processes

    generators = {mid: src.generator for mid, src in by_id.items()}
    images = distributed.sample_assignments(
        assignments,
        generators,
        shape,
        world_size=world_size,
        device=device,
        threads=threads,
        progress=progress,
    )
    labels = torch.cat(
        [torch.full((a["count"],), a["class"], dtype=torch.int64) for a in assignments]
        or [torch.empty(0, dtype=torch.int64)]
    )
    return images, labels


def _device_type(device: Any) -> str:
    return torch.device(device).type


def host_facts() -> dict[str, str]:
    """What besides the recipe decides the sampled floats: torch's version and its CPU kernel path.

    The same recipe and modules give the same bytes on hosts that agree on both; a host
    with other SIMD kernels (``AVX2`` against ``AVX512``, say) rounds differently.
    """
    get = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return {"torch": torch.__version__, "cpu_capability": str(get()) if get else "unknown"}


def _host_hint(made_on: Any) -> tuple[str, str]:
    """(what differs, what to do) when a regenerated dataset's hash differs from its recipe's."""
    here = host_facts()
    if isinstance(made_on, dict):
        differs = [
            f"{k} {made_on.get(k)!s} there, {here[k]} here"
            for k in sorted(here)
            if made_on.get(k) != here[k]
        ]
        if differs:
            return (
                "; the recipe was made on another kind of host (" + ", ".join(differs) + ")",
                "regenerate on a host with the recipe's torch version and CPU kernels, "
                "or synthesize a new dataset from the live modules on this host",
            )
    return "", "regenerate on the same device type and library version"


def synthesize(
    sources: Iterable[ModuleSource],
    *,
    num_classes: int,
    per_class: int,
    seed: int,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    world_size: int = 1,
    threads: int | None = None,
) -> SyntheticDataset:
    """Sample ``per_class`` images of every covered class from the modules that cover it.

    ``world_size`` processes share the sampling (:mod:`ffsecure.distributed`, modules
    dealt by id); the dataset's bytes are the same for every world size.
    """
    if not isinstance(num_classes, int) or not 1 <= num_classes <= 1000:
        raise _error(f"num_classes must be in [1, 1000], got {num_classes!r}")
    if not is_int(per_class) or per_class < 1:
        raise _error(f"per_class must be a positive integer, got {per_class!r}")
    if not is_int(seed) or not 0 <= seed < 2**63:
        raise _error(f"seed must be an integer in [0, 2^63), got {seed!r}")
    ordered, shape = _check_sources(sources, num_classes)
    nbytes = per_class * num_classes * int(np.prod(shape)) * 4
    if nbytes > MAX_DATASET_BYTES:
        raise _error(
            f"{per_class} per class x {num_classes} classes would need "
            f"{nbytes / 2**30:.1f} GiB of images",
            "lower per_class",
        )
    assignments, uncovered = plan_assignments(
        ordered, num_classes=num_classes, per_class=per_class, seed=seed
    )
    if uncovered:
        log.warning(
            "no module covers classes %s; the synthetic dataset has none of them", uncovered
        )
    images, labels = _run(
        assignments,
        {s.module_id: s for s in ordered},
        shape,
        device,
        progress,
        world_size,
        threads,
    )
    recipe = {
        "v": RECIPE_VERSION,
        "seed": seed,
        "num_classes": num_classes,
        "per_class": per_class,
        "image_shape": shape,
        "device_type": _device_type(device),
        "host": host_facts(),
        "modules": [
            {
                "module_id": s.module_id,
                "weights_sha256": s.weights_sha256,
                "classes": sorted(s.classes),
                "family": s.generator.family,
            }
            for s in ordered
        ],
        "assignments": assignments,
        "uncovered": uncovered,
        "dataset_sha256": dataset_hash(images, labels),
    }
    return SyntheticDataset(images=images, labels=labels, recipe=recipe, uncovered=list(uncovered))


def regenerate(
    recipe: dict[str, Any],
    sources: Iterable[ModuleSource],
    *,
    device: str | None = None,
    progress: ProgressFn | None = None,
    world_size: int = 1,
    threads: int | None = None,
) -> SyntheticDataset:
    """Re-run a recipe with the same modules; the result must hash to the
    recipe's ``dataset_sha256``.

    Modules are matched by id and their weights hash (constant-time compare);
    a missing module raises ``E_NOT_FOUND``, a different module or a
    different result raises a verification error.
    """
    if not isinstance(recipe, dict) or recipe.get("v") != RECIPE_VERSION:
        raise _error(
            "not a version-1 synthesis recipe", "pass the recipe that synthesize() returned"
        )
    try:
        num_classes = recipe["num_classes"]
        wanted = {m["module_id"]: m for m in recipe["modules"]}
        assignments = recipe["assignments"]
        shape = list(recipe["image_shape"])
        expected_hash = recipe["dataset_sha256"]
    except (KeyError, TypeError) as exc:
        raise _error(
            f"synthesis recipe lacks a field: {exc}", "pass the recipe that synthesize() returned"
        ) from None
    given = {s.module_id: s for s in sources}
    by_id: dict[str, ModuleSource] = {}
    for module_id, entry in wanted.items():
        src = given.get(module_id)
        if src is None:
            raise NotFoundError(
                f"module {module_id} named in the recipe is not available",
                code="E_NOT_FOUND",
                hint="a deleted module cannot be used to regenerate; re-synthesize",
            )
        if not hmac.compare_digest(str(src.weights_sha256), str(entry["weights_sha256"])):
            raise VerificationError(
                f"module {module_id} has different weights than the recipe records",
                code="E_HASH_MISMATCH",
                hint="regenerate with the exact modules of the recipe",
            )
        by_id[module_id] = src
    _check_sources(by_id.values(), num_classes)
    for a in assignments:
        if a.get("module_id") not in by_id:
            raise _error(f"recipe assignment names unknown module {a.get('module_id')!r}")
    images, labels = _run(
        assignments,
        by_id,
        shape,
        device or recipe.get("device_type", "cpu"),
        progress,
        world_size,
        threads,
    )
    got = dataset_hash(images, labels)
    if not hmac.compare_digest(got, str(expected_hash)):
        why, hint = _host_hint(recipe.get("host"))
        raise VerificationError(
            f"regenerated dataset differs from the recipe's dataset_sha256{why}",
            code="E_DATASET_MISMATCH",
            hint=hint,
        )
    return SyntheticDataset(
        images=images, labels=labels, recipe=recipe, uncovered=list(recipe.get("uncovered", []))
    )
