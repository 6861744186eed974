"""Class-conditional generator families and their serialisation.

A generator is described by ``(family, config)`` plus its weights as
safetensors. The config is a JSON-compatible dict that names the
architecture exactly; :func:`validate_config` checks it against a bounded
schema (unknown or missing keys, out-of-range sizes and oversize
architectures are refused with ``E_GENERATOR_CONFIG``) before anything is
built, and :func:`from_state` validates the config and then the weights'
header before loading a single tensor.

Families: ``cvae`` (convolutional conditional VAE, fast on CPU), ``ddpm``
(small UNet diffusion model with a deterministic DDIM sampler) and ``flow``
(conditional flow matching on the same UNet, EMA weights, a few-step
deterministic Heun sampler).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from ffsecure.generators import cvae, ddpm, flow, state
from ffsecure.generators.base import Generator, TrainReport, TrainSettings
from ffsecure.generators.schema import MAX_PARAMETERS, check_config, config_error
from ffsecure.generators.state import TensorValueError, check_finite, check_safetensors

__all__ = [
    "FAMILIES",
    "SIZES",
    "Generator",
    "TensorValueError",
    "TrainReport",
    "TrainSettings",
    "build",
    "check_finite",
    "check_safetensors",
    "default_config",
    "default_train_settings",
    "expected_tensor_specs",
    "from_state",
    "to_safetensors",
    "validate_config",
]

SIZES = ("tiny", "default", "full")


_MODULES: dict[str, Any] = {"cvae": cvae, "ddpm": ddpm, "flow": flow}
FAMILIES: dict[str, type[Generator]] = {"cvae": cvae.CVAE, "ddpm": ddpm.DDPM, "flow": flow.Flow}
_NETS = {"cvae": cvae.CVAENet, "ddpm": ddpm.UNet, "flow": flow.FlowNet}


def _family_module(family: Any):
    if not isinstance(family, str) or family not in _MODULES:
        raise config_error(f"unknown generator family {family!r}; known: {sorted(_MODULES)}")
    return _MODULES[family]


def default_config(
    family: str, *, image_shape: Sequence[int], num_classes: int, size: str = "default"
) -> dict[str, Any]:
    """A validated config for ``family``; ``size`` is ``tiny`` (tests, seconds),
    ``default`` or ``full``."""
    mod = _family_module(family)
    if size not in SIZES:
        raise config_error(f"unknown size {size!r}; use one of {list(SIZES)}")
    return validate_config(
        family, mod.default_config(image_shape=image_shape, num_classes=num_classes, size=size)
    )


def default_train_settings(
    family: str, size: str = "default", *, seed: int = 0, device: str = "cpu"
) -> TrainSettings:
    """Training schedule tuned for ``family`` at ``size`` (epochs, batch size, learning rate)."""
    mod = _family_module(family)
    if size not in SIZES:
        raise config_error(f"unknown size {size!r}; use one of {list(SIZES)}")
    return TrainSettings(**mod.TRAIN_SETTINGS[size], seed=seed, device=device)


def _build_net(
    family: str, config: dict[str, Any], device: str | torch.device = "cpu"
) -> torch.nn.Module:
    _family_module(family)
    with torch.device(device):
        return _NETS[family](config)


def validate_config(family: str, config: dict[str, Any]) -> dict[str, Any]:
    """Check ``config`` for ``family``; return a normalised copy (raises ``E_GENERATOR_CONFIG``)."""
    mod = _family_module(family)
    checked = check_config(family, mod.SCHEMA, config)
    mod.extra_checks(checked)
    meta = _build_net(family, checked, "meta")
    n_params = sum(math.prod(t.shape) for t in meta.state_dict().values())
    if n_params > MAX_PARAMETERS:
        raise config_error(
            f"{family} config builds {n_params:,} parameters, "
            f"more than the limit of {MAX_PARAMETERS:,}"
        )
    return checked


def build(family: str, config: dict[str, Any]) -> Generator:
    """A freshly initialised generator (deterministic initial weights; ``fit`` reseeds them)."""
    checked = validate_config(family, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FAMILIES[family](checked)


def to_safetensors(gen: Generator) -> bytes:
    """The generator's weights as safetensors bytes (no pickle)."""
    return state.to_bytes(gen.model)


def expected_tensor_specs(
    family: str, config: dict[str, Any]
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Name -> (shape, safetensors dtype) the config builds; computed on the meta device."""
    checked = validate_config(family, config)
    return state.specs_of(_build_net(family, checked, "meta"))


def from_state(
    family: str, config: dict[str, Any], weights: bytes, *, module_id: str | None = None
) -> Generator:
    """Rebuild a generator from ``(family, config, safetensors bytes)``; validates both first.

    ``module_id``, when given, is named in an ``E_TENSOR_VALUE`` refusal.
    """
    checked = validate_config(family, config)
    check_safetensors(weights, state.specs_of(_build_net(family, checked, "meta")))
    gen = build(family, checked)
    state.load_into(gen.model, weights, module_id=module_id)
    gen.model.eval()
    return gen
