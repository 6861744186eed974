"""Synthesis: class balance, deterministic split and seeds, uncovered classes, bit-for-bit
regeneration."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ffsecure import generators as G
from ffsecure import synthesis as S
from ffsecure.errors import ConfigError, NotFoundError, VerificationError

torch.set_num_threads(2)

K = 5
SHAPE = (1, 8, 8)


def _module(seed: int) -> G.Generator:
    """A tiny cvae with seeded random weights (sampling needs no training to be deterministic)."""
    gen = G.build("cvae", G.default_config("cvae", image_shape=SHAPE, num_classes=K, size="tiny"))
    from ffsecure.generators.training import init_weights

    init_weights(gen.model, seed)
    gen.model.eval()
    return gen


def _source(module_id: str, classes: list[int], seed: int) -> S.ModuleSource:
    gen = _module(seed)
    return S.ModuleSource(
        module_id, gen, classes, hashlib.sha256(G.to_safetensors(gen)).hexdigest()
    )


@pytest.fixture(scope="module")
def sources() -> list[S.ModuleSource]:
    # class 4 is covered by nobody; class 1 by three modules; class 0 by two
    return [
        _source("c" * 32, [1, 2], 3),
        _source("a" * 32, [0, 1], 1),
        _source("b" * 32, [0, 1, 3], 2),
    ]


def test_split_counts_even_with_rotating_remainder():
    assert S.split_counts(10, 0, 3) == [4, 3, 3]
    assert S.split_counts(10, 1, 3) == [3, 4, 3]
    assert S.split_counts(11, 2, 3) == [4, 3, 4]
    assert S.split_counts(2, 0, 3) == [1, 1, 0]
    for n in range(0, 20):
        for m in range(1, 5):
            for k in range(4):
                counts = S.split_counts(n, k, m)
                assert sum(counts) == n and max(counts) - min(counts) <= 1


def test_synthesize_balances_classes_and_reports_uncovered(sources):
    ds = S.synthesize(sources, num_classes=K, per_class=7, seed=42)
    assert ds.images.shape == (4 * 7, *SHAPE) and ds.images.dtype == torch.float32
    assert ds.labels.dtype == torch.int64
    assert torch.bincount(ds.labels, minlength=K).tolist() == [7, 7, 7, 7, 0]
    assert ds.uncovered == [4] and ds.recipe["uncovered"] == [4]
    assert float(ds.images.min()) >= -1 and float(ds.images.max()) <= 1
    # labels come out sorted by class
    assert torch.equal(ds.labels, torch.sort(ds.labels).values)
    by_class: dict[int, dict[str, int]] = {}
    for a in ds.recipe["assignments"]:
        by_class.setdefault(a["class"], {})[a["module_id"]] = a["count"]
        assert a["seed"] == S.assignment_seed(42, a["class"], a["module_id"])
        assert 0 <= a["seed"] < 2**63
    a_, b_, c_ = "a" * 32, "b" * 32, "c" * 32
    assert by_class[0] == {a_: 4, b_: 3}  # 7 = 4 + 3, the extra one rotates with the class
    assert by_class[1] == {a_: 2, b_: 3, c_: 2}
    assert by_class[2] == {c_: 7} and by_class[3] == {b_: 7}
    assert [m["module_id"] for m in ds.recipe["modules"]] == [a_, b_, c_]
    assert ds.recipe["dataset_sha256"] == S.dataset_hash(ds.images, ds.labels)


def test_each_assignment_comes_from_its_module(sources):
    ds = S.synthesize(sources, num_classes=K, per_class=3, seed=1)
    by_id = {s.module_id: s for s in sources}
    start = 0
    for a in ds.recipe["assignments"]:
        want = by_id[a["module_id"]].generator.sample([a["class"]] * a["count"], seed=a["seed"])
        assert torch.equal(ds.images[start : start + a["count"]], want)
        start += a["count"]
    assert start == ds.images.shape[0]


def test_regenerate_is_bit_for_bit_and_order_independent(sources):
    ds = S.synthesize(sources, num_classes=K, per_class=6, seed=9)
    again = S.regenerate(ds.recipe, list(reversed(sources)))
    assert torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)
    assert S.dataset_hash(again.images, again.labels) == ds.recipe["dataset_sha256"]
    shuffled = S.synthesize(
        [sources[2], sources[0], sources[1]], num_classes=K, per_class=6, seed=9
    )
    assert shuffled.recipe == ds.recipe


def test_different_seeds_differ(sources):
    a = S.synthesize(sources, num_classes=K, per_class=4, seed=1)
    b = S.synthesize(sources, num_classes=K, per_class=4, seed=2)
    assert torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, b.images)
    assert a.recipe["dataset_sha256"] != b.recipe["dataset_sha256"]


def test_regenerate_refuses_missing_or_swapped_modules(sources):
    ds = S.synthesize(sources, num_classes=K, per_class=2, seed=3)
    with pytest.raises(NotFoundError):
        S.regenerate(ds.recipe, sources[1:])
    swapped = [
        S.ModuleSource(s.module_id, s.generator, s.classes, "0" * 64) if i == 0 else s
        for i, s in enumerate(sources)
    ]
    with pytest.raises(VerificationError) as info:
        S.regenerate(ds.recipe, swapped)
    assert info.value.code == "E_HASH_MISMATCH"
    # same declared hash, different weights: the dataset hash check catches it
    impostor = [
        S.ModuleSource(s.module_id, _module(99), s.classes, s.weights_sha256) if i == 0 else s
        for i, s in enumerate(sources)
    ]
    with pytest.raises(VerificationError) as info:
        S.regenerate(ds.recipe, impostor)
    assert info.value.code == "E_DATASET_MISMATCH"

    # made here: the host is not the suspect, so the message does not blame it
    assert "another kind of host" not in str(info.value)


def test_recipe_records_the_host_and_a_mismatch_names_how_the_hosts_differ(sources):
    ds = S.synthesize(sources, num_classes=K, per_class=2, seed=3)
    assert ds.recipe["host"] == {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    here = ds.recipe["host"]["cpu_capability"]
    other = "AVX2" if here != "AVX2" else "AVX512"
    # a recipe made on a host with other kernels whose bytes this host does not reproduce
    foreign = {
        **ds.recipe,
        "host": {**ds.recipe["host"], "cpu_capability": other},
        "dataset_sha256": "1" * 64,
    }
    with pytest.raises(VerificationError) as info:
        S.regenerate(foreign, sources)
    assert info.value.code == "E_DATASET_MISMATCH"
    assert f"cpu_capability {other} there, {here} here" in str(info.value)
    assert f"torch {torch.__version__} there" not in str(info.value)  # only what differs is named
    assert "synthesize a new dataset" in info.value.hint
    # the same recipe on its own host regenerates: the host fields change nothing else
    again = S.regenerate({**ds.recipe}, sources)
    assert S.dataset_hash(again.images, again.labels) == ds.recipe["dataset_sha256"]


def test_dataset_hash_layout():
    images = torch.tensor([[[[0.5, -1.0]]]], dtype=torch.float32)  # (1, 1, 1, 2)
    labels = torch.tensor([3])
    import struct

    raw = (
        b"ffsecure/dataset/v1\x00"
        + struct.pack("<4Q", 1, 1, 1, 2)
        + struct.pack("<2f", 0.5, -1.0)
        + struct.pack("<q", 3)
    )
    assert S.dataset_hash(images, labels) == hashlib.sha256(raw).hexdigest()
    assert S.dataset_hash(images, torch.tensor([2])) != S.dataset_hash(images, labels)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"per_class": 0}, "per_class"),
        ({"seed": -1}, "seed"),
        ({"num_classes": 4}, "classes"),
        ({"per_class": 10**9}, "GiB"),
    ],
)
def test_bad_synthesis_settings_are_refused(sources, kwargs, fragment):
    args = {"num_classes": K, "per_class": 2, "seed": 0, **kwargs}
    with pytest.raises(ConfigError) as info:
        S.synthesize(sources, **args)
    assert info.value.code == "E_SYNTHESIS" and fragment in info.value.message


def test_bad_sources_are_refused(sources):
    dup = [sources[0], sources[0]]
    with pytest.raises(ConfigError, match="twice"):
        S.synthesize(dup, num_classes=K, per_class=1, seed=0)
    bad = [S.ModuleSource("x" * 32, sources[0].generator, [K], sources[0].weights_sha256)]
    with pytest.raises(ConfigError, match="classes"):
        S.synthesize(bad, num_classes=K, per_class=1, seed=0)
    with pytest.raises(ConfigError):
        S.synthesize([], num_classes=K, per_class=1, seed=0)
