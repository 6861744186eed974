"""One training loop for every generator family, with or without DP-SGD.

Each family supplies a loss function that returns one loss per example
(shape ``(B,)``); the loop mean-reduces it, which is what Opacus needs to
compute per-sample gradients (``loss_reduction="mean"``).

Randomness: ``settings.seed`` (published in the module manifest) seeds only
what is safe to repeat: the weight initialisation, and, in a fit without DP,
the model's own sampling noise (e.g. the VAE's reparameterisation) and the
batch order. Under DP the loss's own noise is drawn by batch position from a
generator seeded by the OS CSPRNG (:func:`_model_seed`): seeded from the
published seed, one example would shift the draws of the others and move a
step's clipped-gradient sum by more than the clipping norm. So a fit without
DP is repeatable bit for bit on the CPU. With DP, the Gaussian noise and the Poisson sampling come
from the OS CSPRNG (:mod:`ffsecure.dprandom`) and are never derived from the
seed, so no two DP fits are alike. Only ``DPConfig(reproducible=True)``, a
research switch of ``ffsecure simulate --dp-reproducible`` and the
benchmarks that ``site-node`` cannot set, seeds them from the seed instead;
its training report then says ``"reproducible": true``.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch

from ffsecure import dp as dpmod
from ffsecure.errors import ConfigError, DataError, DPError, FFSecureError
from ffsecure.generators.base import ProgressFn, TrainReport, TrainSettings

log = logging.getLogger(__name__)

# loss_fn(module, images, labels, rng, fraction_of_training_done) -> per-example losses (B,)
LossFn = Callable[
    [torch.nn.Module, torch.Tensor, torch.Tensor, torch.Generator, float], torch.Tensor
]

MAX_EPOCHS = 10_000


def _seed(seed: int, stream: int) -> int:
    """Independent seeds for the separate random streams of one fit."""
    return (int(seed) * 1_000_003 + stream * 7919) % (2**63 - 1)


def _model_seed(seed: int, dp: dpmod.DPConfig | None) -> int:
    """Seed of the loss's own randomness (reparameterisation noise, timesteps, ...).

    Every family draws it by position in the batch, so under DP a stream anyone can
    reproduce from the published ``seed`` lets one example shift the draws of the others
    (and of every later step): the step's sum of clipped gradients then moves by more than
    the clipping norm the accountant assumes. Under DP (unless ``reproducible``, the
    research switch) the stream is seeded from the OS CSPRNG, so its draws are unknown
    and i.i.d.; without DP it stays seeded, so a fit is repeatable bit for bit.
    """
    if dp is not None and dp.reproducible is not True:
        return secrets.randbits(63)
    return _seed(seed, 2)


def init_weights(net: torch.nn.Module, seed: int) -> None:
    """Re-initialise every layer from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_seed(seed, 0))
        for module in net.modules():
            reset = getattr(module, "reset_parameters", None)
            if module is not net and callable(reset):
                reset()
        reset_extra = getattr(net, "reset_extra", None)
        if callable(reset_extra):
            reset_extra()


def check_data(
    images: Any, labels: Any, image_shape: list[int], num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate training data against the generator's config; return float32/int64 copies on CPU."""
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise DataError(
            "images and labels must be torch tensors",
            code="E_DATA_FORMAT",
            hint="load data with ffsecure.data.load_dataset",
        )
    if images.dim() != 4 or list(images.shape[1:]) != list(image_shape):
        raise DataError(
            f"images have shape {list(images.shape)}, "
            f"the generator needs (N, {', '.join(map(str, image_shape))})",
            code="E_DATA_FORMAT",
            hint="resize the data to the federation's image shape",
        )
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            "labels must be a 1-D tensor with one label per image",
            code="E_DATA_FORMAT",
            hint="pass labels of shape (N,)",
        )
    if images.shape[0] == 0:
        raise DataError(
            "no training images", code="E_DATA_FORMAT", hint="train on at least one image"
        )
    images = images.detach().to("cpu", torch.float32).contiguous()
    labels = labels.detach().to("cpu", torch.int64).contiguous()
    if (
        not bool(torch.isfinite(images).all())
        or float(images.min()) < -1.0 - 1e-4
        or float(images.max()) > 1.0 + 1e-4
    ):
        raise DataError(
            "images must be finite and in [-1, 1]",
            code="E_DATA_FORMAT",
            hint="scale pixels with x / 127.5 - 1",
        )
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise DataError(
            f"labels must be in [0, {num_classes - 1}], "
            f"got [{int(labels.min())}, {int(labels.max())}]",
            code="E_DATA_FORMAT",
            hint="map site labels onto the federation's label space",
        )
    return images.clamp(-1.0, 1.0), labels


def _check_settings(settings: TrainSettings) -> None:
    if not isinstance(settings.epochs, int) or not 1 <= settings.epochs <= MAX_EPOCHS:
        raise ConfigError(
            f"epochs must be an integer in [1, {MAX_EPOCHS}], got {settings.epochs!r}",
            code="E_TRAIN_SETTINGS",
            hint="train for at least one epoch",
        )
    if not isinstance(settings.batch_size, int) or settings.batch_size < 1:
        raise ConfigError(
            f"batch_size must be a positive integer, got {settings.batch_size!r}",
            code="E_TRAIN_SETTINGS",
            hint="use e.g. 64",
        )
    if (
        not isinstance(settings.lr, (int, float))
        or not math.isfinite(settings.lr)
        or settings.lr <= 0
    ):
        raise ConfigError(
            f"lr must be a finite number > 0, got {settings.lr!r}",
            code="E_TRAIN_SETTINGS",
            hint="use e.g. 2e-3",
        )


def train(
    net: torch.nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    settings: TrainSettings,
    *,
    family: str,
    loss_fn: LossFn,
    dp: dpmod.DPConfig | None = None,
    progress: ProgressFn | None = None,
    grad_clip: float | None = None,
) -> TrainReport:
    """Train ``net`` from a fresh seeded initialisation; return the report.

    Without DP, batches are a seeded shuffle; with ``dp`` (a
    :class:`ffsecure.dp.DPConfig`) Opacus wraps the model, optimizer and
    loader (Poisson sampling, clipping, noise) and the report carries the
    achieved epsilon. ``grad_clip`` (non-DP only) clips the global gradient
    norm for stability.
    """
    _check_settings(settings)
    start = time.perf_counter()
    device = torch.device(settings.device)
    n = int(images.shape[0])
    dp_plan = None
    if dp is not None:  # refuse DP settings before anything changes
        if dpmod.resolve_mechanism(dp.mechanism, family, n, dp.target_epsilon) != "dp-sgd":
            raise DPError(
                f"the {family} training loop runs DP-SGD, not the {dp.mechanism} mechanism",
                hint="set the DP mechanism to dp-sgd",
            )
        dp_plan = dpmod.plan(dp, n=n, batch_size=settings.batch_size, epochs=settings.epochs)
    init_weights(net, settings.seed)
    net.to(device)
    net.train()

    data_rng = torch.Generator().manual_seed(_seed(settings.seed, 1))
    model_rng = torch.Generator(device=device).manual_seed(_model_seed(settings.seed, dp))
    optimizer = torch.optim.Adam(net.parameters(), lr=float(settings.lr))

    engine = None
    module: torch.nn.Module = net
    steps_per_epoch = math.ceil(n / settings.batch_size)
    if dp_plan is not None:
        module, optimizer, loader, engine = _make_private(
            net, optimizer, images, labels, settings, dp, dp_plan
        )
        if len(loader) != dp_plan.steps_per_epoch:  # pragma: no cover - guards an Opacus change
            raise RuntimeError("Opacus loader length disagrees with the DP plan")
        batches = lambda: ((x.to(device), y.to(device)) for x, y in loader)  # noqa: E731
    else:

        def batches():
            order = torch.randperm(n, generator=data_rng)
            for i in range(0, n, settings.batch_size):
                idx = order[i : i + settings.batch_size]
                yield images[idx].to(device), labels[idx].to(device)

    total_steps = steps_per_epoch * settings.epochs
    every = dpmod.progress_interval(total_steps)
    step = 0
    history: list[float] = []
    epsilon = None
    for epoch in range(settings.epochs):
        loss_sum, count = 0.0, 0
        for x, y in batches():
            optimizer.zero_grad(set_to_none=True)
            losses = loss_fn(module, x, y, model_rng, step / max(1, total_steps))
            loss = losses.mean() if losses.numel() else losses.sum()
            with warnings.catch_warnings():
                # Opacus' full backward hooks warn when the inputs (images) need no gradient
                warnings.filterwarnings("ignore", message="Full backward hook")
                loss.backward()
            if grad_clip is not None and dp is None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
            optimizer.step()
            step += 1
            loss_sum += float(losses.detach().sum())
            count += int(losses.numel())
            if engine is not None and (step % every == 0 or step == total_steps):
                # a line every few percent, also when no terminal shows the progress bar
                dpmod.log_progress(log, "dp-sgd", step, total_steps, _epsilon(engine, dp_plan))
        epoch_loss = loss_sum / max(1, count)
        if not math.isfinite(epoch_loss):
            raise FFSecureError(
                f"{family} training diverged (loss {epoch_loss}) in epoch {epoch + 1}",
                code="E_TRAIN_DIVERGED",
                hint="lower the learning rate",
            )
        history.append(epoch_loss)
        if engine is not None and progress is not None:
            epsilon = _epsilon(engine, dp_plan)
        if progress is not None:
            progress(epoch + 1, settings.epochs, epoch_loss, epsilon)
        if dp is None:  # under DP the loss is measured on private batches without noise
            log.debug("%s epoch %d/%d loss %.5f", family, epoch + 1, settings.epochs, epoch_loss)

    dp_report = None
    if engine is not None and dp is not None and dp_plan is not None:
        dp_report = {**dp_plan.report(_epsilon(engine, dp_plan)), "mechanism": "dp-sgd"}
        if dp.reproducible is True:
            dp_report["reproducible"] = True  # research switch: visible wherever the report goes
        accounted = engine.accountant.history  # (noise multiplier, sample rate, steps) runs
        history_steps = sum(s for _nm, _sr, s in accounted)
        if history_steps != dp_plan.steps or step != dp_plan.steps:  # pragma: no cover
            raise RuntimeError("DP step count disagrees with the plan")
        if any(rate != dp_plan.sample_rate for _nm, rate, _s in accounted):  # pragma: no cover
            raise RuntimeError("DP sample rate accounted disagrees with the plan")
        module._close()  # type: ignore[operator]  # opacus' GradSampleModule, untyped
    net.eval()
    net.to("cpu")
    return TrainReport(
        family=family,
        epochs=settings.epochs,
        steps=step,
        final_loss=history[-1],
        seconds=time.perf_counter() - start,
        dp=dp_report,
        history=history,
    )


def _epsilon(engine, dp_plan) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(engine.accountant.get_epsilon(delta=dp_plan.delta))


def _private_loader(images, labels, dp_plan, generator):
    """Opacus' Poisson loader at the plan's sample rate, for exactly the plan's steps per epoch.

    Opacus gives a Poisson loader ``int(1 / sample_rate)`` steps, and the plan's
    ``sample_rate = 1 / k`` makes that ``k - 1`` for some k (93, 99, 105, 117, ...: in floating
    point ``1 / (1 / 93)`` is just below 93). ``make_private`` then takes the accountant's sample
    rate and the expected batch size from the loader's length, so with ``steps`` set here the
    loader, the accountant and the plan (:func:`ffsecure.dp.plan`) agree for every ``k``.
    """
    # heavy: opacus, only when training with DP
    from opacus.data_loader import DPDataLoader
    from opacus.utils.uniform_sampler import UniformWithReplacementSampler

    loader = DPDataLoader(
        torch.utils.data.TensorDataset(images, labels),
        sample_rate=dp_plan.sample_rate,
        generator=generator,
    )
    sampler = loader.batch_sampler
    if not isinstance(sampler, UniformWithReplacementSampler):  # pragma: no cover - Opacus change
        raise RuntimeError(f"Opacus' Poisson loader samples with {type(sampler).__name__}")
    sampler.steps = dp_plan.steps_per_epoch
    return loader


def _make_private(net, optimizer, images, labels, settings, dp, dp_plan):
    # heavy: opacus (dprandom imports it too), only when training with DP
    from opacus import PrivacyEngine

    from ffsecure import dprandom

    reproducible = dp.reproducible is True
    # Reproducible (research only): Poisson sampling and noise from seeded generators. Otherwise
    # the loader's generator only feeds DataLoader's worker base seed (no workers here), and the
    # sampler and the optimizer are switched to the OS CSPRNG below.
    loader_rng = (
        torch.Generator().manual_seed(_seed(settings.seed, 3))
        if reproducible
        else torch.Generator()
    )
    noise_rng = (
        torch.Generator(device=settings.device).manual_seed(_seed(settings.seed, 4))
        if reproducible
        else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant=dp_plan.accountant, secure_mode=False)
        # the loader is Poisson already (_private_loader): make_private must not rebuild it, so
        # it is told poisson_sampling=False and its one other Poisson step is taken below
        module, optimizer, loader = engine.make_private(
            module=net,
            optimizer=optimizer,
            data_loader=_private_loader(images, labels, dp_plan, loader_rng),
            noise_multiplier=dp_plan.noise_multiplier,
            max_grad_norm=dp_plan.max_grad_norm,
            poisson_sampling=False,
            noise_generator=noise_rng,
        )
        module.forbid_grad_accumulation()  # as make_private does under Poisson sampling
    if not reproducible:
        dprandom.use_os_randomness(optimizer, loader)
    return module, optimizer, loader, engine
