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

Every family declares which config keys only its sampler reads (``SAMPLING_KEYS``:
training never does, so the same weights sample under any value of them) and the
reference samplers the site's privacy check measures under besides the manifest's
(``reference_samplers``): :func:`sampler_variants` is the one home of that list.
"""

from __future__ import annotations

import copy
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
    "sampler_variants",
    "sampling_keys",
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


def sampling_keys(family: str) -> frozenset[str]:
    """The config keys of ``family`` that only its sampler reads (never training)."""
    return frozenset(_family_module(family).SAMPLING_KEYS)


#: The name :func:`sampler_variants` gives the generator under its own (the manifest's) config.
MANIFEST_SAMPLER = "manifest"


def sampler_variants(gen: Generator) -> dict[str, Generator]:
    """``gen`` under its own config (:data:`MANIFEST_SAMPLER`) and under each of its family's
    reference samplers that samples differently, by name, in that order.

    Every variant shares ``gen``'s weights (the same torch module, not a copy) and differs
    from ``gen``'s config in the family's sampling keys only, so each is exactly what
    whoever holds the weights gets by sampling them that way.
    """
    mod = _family_module(gen.family)
    keys = sampling_keys(gen.family)
    variants: dict[str, Generator] = {MANIFEST_SAMPLER: gen}
    seen = [{key: gen.config[key] for key in keys}]
    for name, settings in mod.reference_samplers(gen.config).items():
        if set(settings) != keys:  # pragma: no cover - a family's own declaration
            raise ValueError(f"{gen.family} sampler {name!r} must set exactly {sorted(keys)}")
        config = validate_config(gen.family, {**gen.config, **settings})
        if {key: config[key] for key in keys} in seen:
            continue
        seen.append({key: config[key] for key in keys})
        variant = copy.copy(gen)  # shares the model: the same weights, sampled another way
        variant.config = config
        variants[name] = variant
    return variants


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
