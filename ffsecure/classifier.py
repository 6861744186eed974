"""The downstream classifier: models, deterministic training, evaluation, safetensors I/O.

Two architectures, both described by a config dict so a model can be rebuilt
from ``(config, safetensors bytes)`` alone:

* ``cnn``: a small CNN that trains in seconds per epoch on a CPU;
* ``resnet18``: torchvision's ResNet-18 adapted to 28x28 inputs as in the
  MedMNIST benchmark (3x3 stride-1 stem, no max-pool), no pretrained weights.

Both take ``norm`` (``group`` or ``batch``) and ``input_blur`` (the sigma of a
fixed Gaussian low-pass filter in front of the network, 0 for none). The
defaults, GroupNorm and sigma 1, are chosen for training on synthetic images
and testing on real ones: with one generator per class (a pathological
split) every generator's own texture and intensity statistics are perfectly
correlated with its class. BatchNorm then normalises real test images with
statistics of the synthetic training set, and the network keys on
high-frequency detail that a VAE renders smoother than the real images; both
push the classifier to predict one class for every real image. Per-sample
normalisation and a fixed low-pass front end remove both shortcuts (measured
on pneumoniamnist, one class per site, cvae: accuracy 0.41 with BatchNorm and
no filter, 0.81 with GroupNorm and sigma 1; the centralized classifier on real
data loses nothing: 0.881 vs 0.878). See docs/simulate.md.

Training is deterministic on the CPU: the weights are initialised under a
forked RNG seeded from ``seed``, batches are shuffled (and optionally
augmented) with a local ``torch.Generator``, and
``torch.use_deterministic_algorithms(True)`` is on for the duration. The same
seed, data and thread count give bit-identical weights, which is what lets
an auditor check that "retrain without module M" equals "train from scratch
without M".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load, save

from ffsecure import canonical
from ffsecure.errors import ConfigError, FormatError
from ffsecure.records.fields import is_number

ARCHS = ("cnn", "resnet18")
NORMS = ("group", "batch")
DEFAULT_NORM = "group"
DEFAULT_INPUT_BLUR = 1.0
MAX_INPUT_BLUR = 4.0
CONFIG_KEY = "ffsecure.classifier.config"
MAX_HEADER_BYTES = 1 << 20


# --------------------------------------------------------------------------- models


def model_config(
    arch: str,
    *,
    image_shape,
    num_classes: int,
    width: int | None = None,
    norm: str = DEFAULT_NORM,
    input_blur: float = DEFAULT_INPUT_BLUR,
) -> dict[str, Any]:
    """The config dict that fully describes a classifier architecture."""
    if arch not in ARCHS:
        raise ConfigError(f"unknown classifier {arch!r}", hint=f"use one of {', '.join(ARCHS)}")
    c, h, w = (int(v) for v in image_shape)
    cfg: dict[str, Any] = {
        "arch": arch,
        "in_channels": c,
        "image_size": [h, w],
        "num_classes": int(num_classes),
        "norm": norm,
        "input_blur": float(input_blur),
    }
    if arch == "cnn":
        cfg["width"] = int(width or 32)
    return validate_config(cfg)


def validate_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """Check a classifier config (keys, types, bounds) before anything is allocated."""
    if not isinstance(cfg, dict):
        raise ConfigError("classifier config must be an object")
    arch = cfg.get("arch")
    allowed = {"arch", "in_channels", "image_size", "num_classes", "norm", "input_blur"} | (
        {"width"} if arch == "cnn" else set()
    )
    if arch not in ARCHS:
        raise ConfigError(f"unknown classifier {arch!r}", hint=f"use one of {', '.join(ARCHS)}")
    extra, missing = set(cfg) - allowed, allowed - set(cfg)
    if extra or missing:
        raise ConfigError(
            f"classifier config keys wrong: extra {sorted(extra)}, missing {sorted(missing)}"
        )
    ok = (
        cfg["in_channels"] in (1, 3)
        and isinstance(cfg["image_size"], list)
        and len(cfg["image_size"]) == 2
        and all(isinstance(v, int) and 8 <= v <= 64 and v % 4 == 0 for v in cfg["image_size"])
        and isinstance(cfg["num_classes"], int)
        and 2 <= cfg["num_classes"] <= 1000
        and (arch != "cnn" or (isinstance(cfg["width"], int) and 4 <= cfg["width"] <= 256))
        and cfg["norm"] in NORMS
        and is_number(cfg["input_blur"])
        and 0.0 <= cfg["input_blur"] <= MAX_INPUT_BLUR
    )
    if not ok:
        raise ConfigError(
            f"classifier config out of bounds: {cfg}",
            hint="C in {1,3}; H, W multiples of 4 in [8,64]; 2..1000 classes; width 4..256; "
            f"norm in {list(NORMS)}; input_blur in [0, {MAX_INPUT_BLUR}]",
        )
    return dict(cfg)


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(math.gcd(8, channels), channels)


class LowPass(nn.Module):
    """A fixed (not learned) depthwise Gaussian blur with reflect padding; identity at sigma 0."""

    kernel: torch.Tensor  # a non-persistent buffer, registered in __init__

    def __init__(self, channels: int, sigma: float):
        super().__init__()
        self.channels, self.sigma = channels, float(sigma)
        radius = max(1, math.ceil(2 * self.sigma)) if self.sigma > 0 else 0
        t = torch.arange(-radius, radius + 1, dtype=torch.float32)
        k1 = torch.exp(-0.5 * (t / self.sigma) ** 2) if self.sigma > 0 else torch.ones(1)
        k1 = k1 / k1.sum()
        kernel = (k1[:, None] * k1[None, :]).expand(channels, 1, -1, -1).contiguous()
        # a buffer that is not saved: it is a function of the config, not a weight
        self.register_buffer("kernel", kernel, persistent=False)
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.radius == 0:
            return x
        x = F.pad(x, (self.radius,) * 4, mode="reflect")
        return F.conv2d(x, self.kernel, groups=self.channels)


class SmallCNN(nn.Module):
    """A fixed low-pass front end, three conv stages (norm, ReLU), two 2x2 pools,
    global average pool, linear head."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        width: int = 32,
        *,
        norm: str = DEFAULT_NORM,
        input_blur: float = DEFAULT_INPUT_BLUR,
    ):
        super().__init__()
        w = width
        self.lowpass = LowPass(in_channels, input_blur)

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                _norm_layer(norm, cout),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(in_channels, w),
            *block(w, w),
            nn.MaxPool2d(2),
            *block(w, 2 * w),
            *block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            *block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(4 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(self.lowpass(x))))


def _resnet18(in_channels: int, num_classes: int, *, norm: str, input_blur: float) -> nn.Module:
    # heavy: torchvision, only for the resnet18 architecture
    from torchvision.models import resnet18

    model = resnet18(
        weights=None, num_classes=num_classes, norm_layer=lambda c: _norm_layer(norm, c)
    )
    model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return _WithLowPass(LowPass(in_channels, input_blur), model)


class _WithLowPass(nn.Module):
    def __init__(self, lowpass: LowPass, net: nn.Module):
        super().__init__()
        self.lowpass, self.net = lowpass, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.lowpass(x))


def build_model(cfg: dict[str, Any], *, seed: int = 0) -> nn.Module:
    """Build the architecture in ``cfg`` with weights initialised from ``seed``
    (global RNG untouched)."""
    cfg = validate_config(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if cfg["arch"] == "cnn":
            return SmallCNN(
                cfg["in_channels"],
                cfg["num_classes"],
                cfg["width"],
                norm=cfg["norm"],
                input_blur=cfg["input_blur"],
            )
        return _resnet18(
            cfg["in_channels"], cfg["num_classes"], norm=cfg["norm"], input_blur=cfg["input_blur"]
        )


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    """How a classifier is trained. Defaults suit the small CNN on a CPU."""

    epochs: int = 15
    # At least this many optimizer steps: a small training set gets more
    # epochs (GroupNorm networks need a few hundred steps whatever the data
    # size); 0 trains for exactly ``epochs``.
    min_steps: int = 0
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    augment: bool = True
    label_smoothing: float = 0.0
    schedule: str = "cosine"  # "cosine" (decay to 0 over the run) or "constant"
    seed: int = 0
    device: str = "cpu"
    # Processes training data-parallel (DistributedDataParallel, ffsecure.distributed); part
    # of the determinism contract: the same world size gives the same bits.
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    config: dict[str, Any]
    train_config: dict[str, Any]
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


# progress(epoch, total_epochs, mean_loss)
EpochFn = Callable[[int, int, float], None]


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Turn on deterministic algorithms for the block and restore the previous setting."""
    before = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light augmentation: random shifts of up to 2 pixels (reflect-padded), drawn from ``gen``."""
    n, _, h, w = x.shape
    pad = 2
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)  # n,h
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)  # n,w
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]  # n,h,w,c
    return out.permute(0, 3, 1, 2).contiguous()


def _check_data(x: torch.Tensor, y: torch.Tensor, cfg: dict[str, Any]) -> None:
    want = (cfg["in_channels"], *cfg["image_size"])
    if x.ndim != 4 or tuple(x.shape[1:]) != want or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ConfigError(
            f"training data {tuple(x.shape)} / {tuple(y.shape)} does not fit the classifier {want}",
            hint="images must be (N,C,H,W) with the federation's shape, one label each",
        )
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= cfg["num_classes"]):
        raise ConfigError("labels lie outside the classifier's label space")


def _check_settings(settings: TrainConfig) -> None:
    if settings.epochs < 1 or settings.batch_size < 1 or settings.min_steps < 0:
        raise ConfigError(
            "classifier epochs and batch size must be at least 1, min_steps at least 0"
        )
    if settings.schedule not in ("cosine", "constant"):
        raise ConfigError(
            f"unknown learning-rate schedule {settings.schedule!r}", hint="use cosine or constant"
        )


def train_classifier(
    cfg: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainConfig | None = None,
    *,
    init_state: dict[str, torch.Tensor] | None = None,
    progress: EpochFn | None = None,
    threads: int | None = None,
) -> TrainResult:
    """Train a classifier on tensors with AdamW and a cosine schedule; deterministic on CPU.

    With ``settings.world_size`` above 1 the training runs data-parallel in that many
    processes (:mod:`ffsecure.distributed`), each on ``threads`` torch threads.
    """
    settings = settings or TrainConfig()
    cfg = validate_config(cfg)
    _check_data(x, y, cfg)
    _check_settings(settings)
    if settings.world_size == 1:
        return train_local(cfg, x, y, settings, init_state=init_state, progress=progress)
    from ffsecure import distributed  # heavy: spawns worker processes

    if init_state is not None:
        raise ConfigError("a distributed training run starts from the seed, not a given state")
    distributed.check_world_size(settings.world_size, settings.device)
    state, losses, seconds = distributed.train(
        cfg,
        x.to(torch.float32),
        y.to(torch.int64),
        settings.to_dict(),
        world_size=settings.world_size,
        threads=threads,
        progress=progress,
    )
    model = build_model(cfg, seed=settings.seed)
    model.load_state_dict(state)
    return TrainResult(model.eval(), cfg, settings.to_dict(), losses, seconds)


def train_local(
    cfg: dict[str, Any],
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainConfig,
    *,
    rank: int = 0,
    world_size: int = 1,
    init_state: dict[str, torch.Tensor] | None = None,
    progress: EpochFn | None = None,
) -> TrainResult:
    """The training loop of one process: the whole run, or rank ``rank`` of ``world_size``.

    Every rank draws the same shuffle and augmentation and trains on its shard of each
    global batch (:func:`ffsecure.distributed.shard`); its summed loss is scaled by
    ``world_size / len(batch)``, so that DistributedDataParallel's gradient average is the
    gradient of the global batch mean.
    """
    start = time.perf_counter()
    device = torch.device(settings.device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Dropout draws from the global RNG: fork it and seed it, so training is a
    # pure function of (config, data, settings) and leaves the caller's RNG alone.
    with deterministic(), torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)
        model = build_model(cfg, seed=settings.seed)
        if init_state is not None:
            model.load_state_dict(init_state)
        model.to(device).train()
        net: nn.Module = model
        if world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            net = DistributedDataParallel(model, device_ids=[device] if cuda else None)
        losses = _epochs(net, model, x, y, settings, device, rank, world_size, progress)
        model.eval().cpu()
    return TrainResult(model, cfg, settings.to_dict(), losses, time.perf_counter() - start)


def _epochs(
    net: nn.Module,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    settings: TrainConfig,
    device: torch.device,
    rank: int,
    world_size: int,
    progress: EpochFn | None,
) -> list[float]:
    x = x.to(torch.float32)
    y = y.to(torch.int64)
    n = x.shape[0]
    steps_per_epoch = math.ceil(n / settings.batch_size)
    epochs = max(settings.epochs, math.ceil(settings.min_steps / steps_per_epoch))
    total = steps_per_epoch * epochs
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.schedule == "cosine":
        factor = lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total))  # noqa: E731
    else:
        factor = lambda s: 1.0  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    gen = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        running, seen = 0.0, 0
        for s in range(steps_per_epoch):
            idx = perm[s * settings.batch_size : (s + 1) * settings.batch_size]
            xb, yb = x[idx], y[idx]
            if settings.augment:
                xb = augment_batch(xb, gen)
            if world_size > 1:
                xb, yb = xb[rank::world_size], yb[rank::world_size]
            xb, yb = xb.to(device), yb.to(device)
            out = net(xb)
            if world_size == 1:
                loss = F.cross_entropy(out, yb, label_smoothing=settings.label_smoothing)
                batch_sum = float(loss.detach()) * len(idx)
            else:
                summed = F.cross_entropy(
                    out, yb, reduction="sum", label_smoothing=settings.label_smoothing
                )
                loss = summed * (world_size / len(idx))
                batch_sum = float(summed.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += batch_sum
            seen += len(idx)
        if world_size > 1:
            from ffsecure.distributed import all_reduce_sum

            running = all_reduce_sum(running, str(device))
        losses.append(running / seen)
        if progress is not None:
            progress(epoch + 1, epochs, losses[-1])
    return losses


# --------------------------------------------------------------------------- evaluation


@dataclass
class Evaluation:
    accuracy: float
    auroc: float | None
    per_class_recall: list[float | None]
    confusion: list[list[int]]
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@torch.no_grad()
def predict_proba(
    model: nn.Module, x: torch.Tensor, *, batch_size: int = 512, device: str = "cpu"
) -> torch.Tensor:
    model.eval().to(device)
    out = [
        F.softmax(model(x[i : i + batch_size].to(device)), dim=1).cpu()
        for i in range(0, x.shape[0], batch_size)
    ]
    model.cpu()
    return torch.cat(out) if out else torch.empty(0)


def auroc(y: np.ndarray, proba: np.ndarray, num_classes: int) -> float | None:
    """Macro one-vs-rest AUROC (binary: AUROC of the positive class); None if undefined."""
    # heavy: scikit-learn, only when a classifier is evaluated
    from sklearn.metrics import roc_auc_score

    try:
        if num_classes == 2:
            return float(roc_auc_score(y, proba[:, 1]))
        present = np.unique(y)
        if len(present) < 2:
            return None
        if len(present) < num_classes:  # OvR AUROC over the classes the test set holds
            sub = proba[:, present]
            sub = sub / sub.sum(axis=1, keepdims=True)
            return float(roc_auc_score(y, sub, multi_class="ovr", average="macro", labels=present))
        return float(
            roc_auc_score(
                y, proba, multi_class="ovr", average="macro", labels=np.arange(num_classes)
            )
        )
    except ValueError:
        return None


def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, *, device: str = "cpu"
) -> Evaluation:
    """Accuracy, macro AUROC, per-class recall and the confusion matrix on real test data."""
    # heavy: scikit-learn, only when a classifier is evaluated
    from sklearn.metrics import confusion_matrix

    proba = predict_proba(model, x, device=device).numpy().astype(np.float64)
    yt = y.numpy()
    pred = proba.argmax(axis=1)
    cm = confusion_matrix(yt, pred, labels=np.arange(num_classes))
    support = cm.sum(axis=1)
    recall = [float(cm[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
    return Evaluation(
        accuracy=float((pred == yt).mean()) if len(yt) else 0.0,
        auroc=auroc(yt, proba, num_classes),
        per_class_recall=recall,
        confusion=cm.astype(int).tolist(),
        n=int(len(yt)),
    )


# --------------------------------------------------------------------------- safetensors I/O


def to_safetensors(model: nn.Module, cfg: dict[str, Any]) -> bytes:
    """Weights as safetensors bytes, with the config (canonical JSON) in the header metadata."""
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    return save(state, metadata={CONFIG_KEY: canonical.dumps(validate_config(cfg)).decode()})


def _header(data: bytes) -> dict[str, Any]:
    if len(data) < 8:
        raise FormatError(
            "classifier file is shorter than a safetensors header", code="E_SAFETENSORS_HEADER"
        )
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(data):
        raise FormatError(
            f"safetensors header length {n} is out of bounds", code="E_SAFETENSORS_HEADER"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as exc:
        raise FormatError(
            f"safetensors header is not JSON: {exc}", code="E_SAFETENSORS_HEADER"
        ) from None
    if not isinstance(header, dict):
        raise FormatError("safetensors header is not an object", code="E_SAFETENSORS_HEADER")
    return header


def from_safetensors(
    data: bytes, cfg: dict[str, Any] | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a classifier from safetensors bytes (config from ``cfg`` or the file's metadata)."""
    header = _header(data)
    if cfg is None:
        meta = header.get("__metadata__") or {}
        if CONFIG_KEY not in meta:
            raise FormatError(
                "classifier file carries no config",
                code="E_FORMAT",
                hint="pass the config dict saved with the weights",
            )
        cfg = canonical.loads(meta[CONFIG_KEY].encode())
    cfg = validate_config(cfg)
    model = build_model(cfg)
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    declared = {k: tuple(v.get("shape", ())) for k, v in header.items() if k != "__metadata__"}
    if set(declared) != set(expected) or any(declared[k] != expected[k][0] for k in expected):
        raise FormatError(
            "classifier weights do not match the architecture in the config", code="E_TENSOR_SHAPE"
        )
    try:
        state = load(bytes(data))
    except Exception as exc:  # safetensors raises its own error types
        raise FormatError(
            f"classifier weights could not be parsed: {exc}", code="E_SAFETENSORS_HEADER"
        ) from None
    if any(state[k].dtype != expected[k][1] for k in expected):
        raise FormatError("classifier weights have unexpected dtypes", code="E_TENSOR_DTYPE")
    model.load_state_dict(state)
    return model.eval(), cfg


def save_classifier(path: str | os.PathLike, model: nn.Module, cfg: dict[str, Any]) -> str:
    """Write ``path`` (safetensors with embedded config); returns the file's SHA-256."""
    data = to_safetensors(model, cfg)
    tmp = f"{os.fspath(path)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def load_classifier(path: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    with open(path, "rb") as fh:
        return from_safetensors(fh.read())


def weights_sha256(model: nn.Module, cfg: dict[str, Any]) -> str:
    return hashlib.sha256(to_safetensors(model, cfg)).hexdigest()
