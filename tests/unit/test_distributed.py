"""torch.distributed on the CPU (gloo, world size 2): synthesis equal to one process, training
bit-identical per world size, failures typed."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ffsecure import classifier as C
from ffsecure import data, distributed
from ffsecure import synthesis as S
from tests.unit.test_synthesis import _source

K = 5


@pytest.fixture(scope="module")
def digits():
    return data.load_dataset("digits")


def test_synthesis_at_world_size_two_is_the_one_process_dataset():
    sources = [
        _source("c" * 32, [1, 2], 3),
        _source("a" * 32, [0, 1], 1),
        _source("b" * 32, [0, 1, 3], 2),
    ]
    one = S.synthesize(sources, num_classes=K, per_class=9, seed=4)
    seen: list[int] = []
    two = S.synthesize(
        sources,
        num_classes=K,
        per_class=9,
        seed=4,
        world_size=2,
        progress=lambda d, t: seen.append(d),
    )
    assert two.recipe["dataset_sha256"] == one.recipe["dataset_sha256"]
    assert torch.equal(two.images, one.images) and torch.equal(two.labels, one.labels)
    assert seen[-1] == one.labels.numel() and seen == sorted(seen)


def test_modules_are_dealt_to_ranks_in_id_order():
    assert distributed.module_ranks(["c", "a", "b"], 2) == {"a": 0, "b": 1, "c": 0}


def _train(ds, world_size: int, seed: int = 3, progress=None):
    cfg = C.model_config("cnn", image_shape=ds.image_shape, num_classes=10, width=8)
    # 129 examples in batches of 64: the last global batch has one example, so rank 1's
    # shard of it is empty
    settings = C.TrainConfig(epochs=2, batch_size=64, seed=seed, world_size=world_size)
    return C.train_classifier(
        cfg, ds.train_x[:129], ds.train_y[:129], settings, threads=1, progress=progress
    )


def _digest(result) -> str:
    return hashlib.sha256(C.to_safetensors(result.model, result.config)).hexdigest()


def test_training_at_world_size_two_is_bit_identical_across_runs(digits):
    got: list[tuple[int, int]] = []
    a = _train(digits, 2, progress=lambda e, n, loss: got.append((e, n)))
    b = _train(digits, 2)
    assert _digest(a) == _digest(b)
    assert a.losses == b.losses and len(a.losses) == 2
    assert a.train_config["world_size"] == 2
    assert got == [(1, 2), (2, 2)]  # rank 0's progress reaches the caller


@pytest.mark.slow
def test_world_size_two_runs_differ_by_seed_and_regenerate_the_same_dataset(digits):
    assert _digest(_train(digits, 2, seed=4)) != _digest(_train(digits, 2))
    sources = [_source("a" * 32, [0, 1], 1), _source("b" * 32, [0, 1, 3], 2)]
    one = S.synthesize(sources, num_classes=K, per_class=9, seed=4)
    again = S.regenerate(one.recipe, sources, world_size=2)  # hash-checked inside
    assert torch.equal(again.images, one.images)


def _failing_worker(rank, world_size, payload, emit):
    if rank == 1:
        raise ValueError(f"rank {rank} could not {payload}")


def test_a_failing_worker_is_a_typed_error():
    with pytest.raises(
        distributed.DistributedError, match="worker 1: ValueError: rank 1 could not sample"
    ) as err:
        distributed.launch(_failing_worker, 2, "sample", threads=1)
    assert err.value.code == "E_DISTRIBUTED" and "--nproc 1" in err.value.hint


@pytest.mark.parametrize("bad", [0, 65, True, 1.5, "2"])
def test_world_size_is_bounded(bad):
    with pytest.raises(distributed.DistributedError, match="world size"):
        distributed.check_world_size(bad)


def test_more_gpu_processes_than_gpus_are_refused():
    if torch.cuda.device_count() >= 64:  # pragma: no cover
        pytest.fail("this test needs a host with fewer than 64 GPUs")
    with pytest.raises(distributed.DistributedError, match="GPUs"):
        distributed.check_world_size(64, "cuda")


def test_many_modules_fit_in_a_small_file_descriptor_limit():
    """Workers get modules as bytes: shared-memory tensors cost one descriptor each, which a
    thousand-module federation (or 40 modules under a limit of 256) exhausts."""
    import resource

    sources = [_source(f"{i:032x}", [i % K], i) for i in range(40)]
    one = S.synthesize(sources, num_classes=K, per_class=8, seed=1)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(256, hard), hard))
    try:
        two = S.synthesize(sources, num_classes=K, per_class=8, seed=1, world_size=2)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert two.recipe["dataset_sha256"] == one.recipe["dataset_sha256"]
