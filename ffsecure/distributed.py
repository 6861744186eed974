"""Data-parallel synthesis and classifier training on one host, on torch.distributed.

``aggregator synthesize --nproc N`` and ``aggregator train --nproc N`` run
their heavy part in ``N`` worker processes started here:

* :func:`launch` starts the workers with ``torch.multiprocessing`` (the
  ``spawn`` method: a worker never inherits the parent's threads, its gRPC
  server or its open store), and each joins one process group: ``gloo`` on
  the CPU, ``nccl`` when the work runs on CUDA (rank ``r`` on ``cuda:r``).
  The group meets through a ``FileStore`` in a fresh 0700 temporary folder
  (no rendezvous port); gloo then moves tensors over loopback TCP
  (``GLOO_SOCKET_IFNAME=lo`` unless the environment names an interface).
* Workers report through one queue: progress, and their results as plain
  bytes (safetensors, raw float32), so nothing outlives the worker that
  made it. What crosses the queue is made by this program's own processes;
  no input from outside the aggregator is ever unpickled.
* A worker that fails makes :func:`launch` raise :class:`DistributedError`
  (``E_DISTRIBUTED``) with the worker's message; the other workers are
  stopped.

Determinism, per world size (what exact unlearning needs):

* **Synthesis is the same for every world size.** Modules are dealt to the
  ranks in module-id order (module ``i`` to rank ``i mod N``); every (class,
  module) assignment samples with its own seed (:mod:`ffsecure.synthesis`),
  on one rank, into its fixed slot of the dataset, with the torch thread
  count the calling process has (CPU kernels round differently with another
  count). The dataset bytes, and so its ``dataset_sha256``, do not depend on
  ``N``.
* **Training depends on the world size, and only through it.** Every rank
  draws the same shuffle and augmentation from the seed and takes every
  ``N``-th example of each global batch; the loss is scaled so that
  DistributedDataParallel's averaged gradient is the gradient of the global
  batch mean. The same modules, seeds and world size give bit-identical
  weights; another world size sums the gradients in another order and gives
  other bits (and, with ``norm = "batch"``, other batch statistics). The
  world size is recorded in ``classifier.trained`` (``config.world_size``),
  and retraining after a deletion uses the recorded one.

Multi-node training (``torchrun`` across hosts) is not offered: the workers
here share the aggregator's host, its decrypted modules stay in its memory.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ffsecure.errors import DefaultHint, FFSecureError

#: Most worker processes one command may start.
MAX_WORLD_SIZE = 64

Emit = Callable[[str, Any], None]
Worker = Callable[[int, int, Any, Emit], None]
OnMessage = Callable[[int, str, Any], None]


class DistributedError(DefaultHint, FFSecureError):
    """A distributed run could not start or one of its workers failed."""

    code = "E_DISTRIBUTED"
    default_hint = "run again with --nproc 1 to see the error in the main process"


def check_world_size(world_size: Any, device: str = "cpu") -> int:
    """``world_size`` as an int in ``[1, MAX_WORLD_SIZE]`` that the device can serve."""
    if isinstance(world_size, bool) or not isinstance(world_size, int):
        raise DistributedError(f"world size must be an integer, got {world_size!r}")
    if not 1 <= world_size <= MAX_WORLD_SIZE:
        raise DistributedError(
            f"world size {world_size} is outside [1, {MAX_WORLD_SIZE}]",
            hint=f"use --nproc between 1 and {MAX_WORLD_SIZE}",
        )
    if torch.device(device).type == "cuda" and world_size > 1:
        have = torch.cuda.device_count()
        if world_size > have:
            raise DistributedError(
                f"--nproc {world_size} on CUDA needs {world_size} GPUs, this host sees {have}",
                hint="use at most one process per visible GPU",
            )
    return world_size


def threads_per_rank(threads: int | None, world_size: int) -> int:
    """torch threads each rank uses: ``threads`` if given, else an even share of the host's."""
    if threads is not None:
        return max(1, int(threads))
    return max(1, torch.get_num_threads() // world_size)


def backend_for(device: str) -> str:
    return "nccl" if torch.device(device).type == "cuda" else "gloo"


def rank_device(device: str, rank: int) -> str:
    """The device rank ``rank`` works on: ``cuda:rank`` on CUDA, else ``device``."""
    return f"cuda:{rank}" if torch.device(device).type == "cuda" else device


def _entry(
    rank: int,
    worker: Worker,
    world_size: int,
    init_file: str,
    backend: str,
    threads: int,
    payload: Any,
    channel: Any,
) -> None:
    import torch.distributed as dist

    from ffsecure.torchutil import torch_threads

    def emit(kind: str, value: Any) -> None:
        channel.put((rank, kind, value))

    if os.path.isdir("/sys/class/net/lo"):
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group(
        backend, init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        with torch_threads(threads):
            worker(rank, world_size, payload, emit)
        dist.barrier()
    except Exception as exc:
        # the first failure, before its peers see only a closed connection
        emit("error", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        dist.destroy_process_group()


def launch(
    worker: Worker,
    world_size: int,
    payload: Any,
    *,
    device: str = "cpu",
    threads: int | None = None,
    on_message: OnMessage | None = None,
) -> None:
    """Run ``worker(rank, world_size, payload, emit)`` in ``world_size`` processes.

    ``worker`` must be a module-level function (spawned workers import it).
    Every ``emit(kind, value)`` reaches ``on_message(rank, kind, value)`` in
    this process, in the order each rank sent them.
    """
    import torch.multiprocessing as mp

    world_size = check_world_size(world_size, device)
    folder = tempfile.mkdtemp(prefix="ffsecure-dist-")  # 0700
    ctx = mp.get_context("spawn")
    channel = ctx.SimpleQueue()
    args = (
        worker,
        world_size,
        os.path.join(folder, "store"),
        backend_for(device),
        threads_per_rank(threads, world_size),
        payload,
        channel,
    )
    try:
        procs = mp.start_processes(
            _entry, args=args, nprocs=world_size, join=False, start_method="spawn"
        )
        _pump(procs, channel, on_message)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _drain(channel: Any, on_message: OnMessage | None, errors: list[str]) -> None:
    while not channel.empty():
        rank, kind, value = channel.get()
        if kind == "error":
            errors.append(f"worker {rank}: {value}")
        elif on_message is not None:
            on_message(rank, kind, value)


def _pump(procs: Any, channel: Any, on_message: OnMessage | None) -> None:
    import torch.multiprocessing as mp

    errors: list[str] = []
    try:
        while True:
            _drain(channel, on_message, errors)
            if procs.join(timeout=0.05):
                break
    except mp.ProcessRaisedException as exc:
        _drain(channel, None, errors)
        text = str(exc).strip()
        first = errors[0] if errors else (text.splitlines()[-1] if text else repr(exc))
        raise DistributedError(f"a worker process failed: {first}") from None
    except mp.ProcessExitedException as exc:
        raise DistributedError(
            f"a worker process died (exit code {exc.exit_code})",
            hint="check memory and the host's logs; run again with --nproc 1",
        ) from None
    _drain(channel, on_message, errors)


# --------------------------------------------------------------------------- synthesis


def module_ranks(module_ids: Sequence[str], world_size: int) -> dict[str, int]:
    """The rank that samples each module: ``i mod N`` in module-id order."""
    return {mid: i % world_size for i, mid in enumerate(sorted(module_ids))}


def _sample_worker(rank: int, world_size: int, payload: Any, emit: Emit) -> None:
    from ffsecure import generators as G

    assignments, states, device = payload
    owner = module_ranks(list(states), world_size)
    built: dict[str, Any] = {}
    for i, a in enumerate(assignments):
        if owner[a["module_id"]] != rank:
            continue
        gen = built.get(a["module_id"])
        if gen is None:
            family, config, weights = states[a["module_id"]]
            gen = built[a["module_id"]] = G.from_state(
                family, config, weights, module_id=a["module_id"]
            )
            gen.model.eval()
        out = gen.sample([a["class"]] * a["count"], seed=a["seed"], device=device)
        out = out.detach().to("cpu", torch.float32).contiguous()
        emit("part", (i, tuple(out.shape), out.numpy().tobytes()))


def sample_assignments(
    assignments: Sequence[dict[str, Any]],
    generators: dict[str, Any],
    shape: Sequence[int],
    *,
    world_size: int,
    device: str = "cpu",
    threads: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """The images of ``assignments``, in order, sampled by ``world_size`` processes.

    Each worker gets the modules as ``(family, config, safetensors bytes)`` and rebuilds
    them: shared-memory tensors would cost one file descriptor per tensor, which a
    federation of a thousand modules exhausts.
    """
    import numpy as np

    from ffsecure import generators as G

    counts = [int(a["count"]) for a in assignments]
    offsets = [0, *np.cumsum(counts).tolist()]
    total = offsets[-1]
    images = torch.empty(total, *shape, dtype=torch.float32)
    filled = [False] * len(assignments)
    done = 0

    def on_message(rank: int, kind: str, value: Any) -> None:
        nonlocal done
        i, got_shape, raw = value
        if kind != "part" or filled[i] or tuple(got_shape) != (counts[i], *shape):
            raise DistributedError(f"worker {rank} returned an unexpected part {i}")
        part = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(got_shape)
        images[offsets[i] : offsets[i + 1]] = part
        filled[i] = True
        done += counts[i]
        if progress is not None:
            progress(done, total)

    launch(
        _sample_worker,
        world_size,
        (
            list(assignments),
            {
                mid: (gen.family, dict(gen.config), G.to_safetensors(gen))
                for mid, gen in generators.items()
            },
            device,
        ),
        device=device,
        # sampled floats depend on the thread count: each worker uses the one this process
        # would, so the dataset is the same for every world size
        threads=threads or torch.get_num_threads(),
        on_message=on_message,
    )
    if not all(filled):
        raise DistributedError("the workers did not return every part of the dataset")
    return images


# --------------------------------------------------------------------------- training


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank ``rank``'s part of a global batch: every ``world_size``-th row from ``rank``."""
    return batch[rank::world_size]


def all_reduce_sum(value: float, device: str) -> float:
    """The sum of ``value`` over the ranks (float64)."""
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def _train_worker(rank: int, world_size: int, payload: Any, emit: Emit) -> None:
    import warnings

    from safetensors.torch import save

    from ffsecure import classifier

    # A one-channel conv's gradient has other (equivalent) strides than DDP's bucket view.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    cfg, x, y, settings_dict = payload
    settings = classifier.TrainConfig(**settings_dict)
    settings.device = rank_device(settings.device, rank)
    if torch.device(settings.device).type == "cuda":
        torch.cuda.set_device(settings.device)

    def progress(epoch: int, total: int, loss: float) -> None:
        if rank == 0:
            emit("progress", (epoch, total, loss))

    result = classifier.train_local(
        cfg, x, y, settings, rank=rank, world_size=world_size, progress=progress
    )
    if rank == 0:
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        emit("result", (save(state), result.losses))


def train(
    cfg: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    settings_dict: dict[str, Any],
    *,
    world_size: int,
    threads: int | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[dict[str, torch.Tensor], list[float], float]:
    """Train with DistributedDataParallel on ``world_size`` processes.

    Returns rank 0's weights (a state dict), the per-epoch mean losses and the seconds taken.
    """
    from safetensors.torch import load

    start = time.perf_counter()
    out: dict[str, Any] = {}

    def on_message(rank: int, kind: str, value: Any) -> None:
        if kind == "progress" and progress is not None:
            progress(*value)
        elif kind == "result":
            out["state"], out["losses"] = load(value[0]), list(value[1])

    launch(
        _train_worker,
        world_size,
        (cfg, x, y, settings_dict),
        device=settings_dict.get("device", "cpu"),
        threads=threads,
        on_message=on_message,
    )
    if "state" not in out:
        raise DistributedError("rank 0 returned no weights")
    losses = out["losses"]
    if any(not math.isfinite(v) for v in losses):
        raise DistributedError("distributed training produced a non-finite loss")
    return out["state"], losses, time.perf_counter() - start
