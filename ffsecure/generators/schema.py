"""Bounded schemas for generator configs.

A config arrives from a site inside a signed manifest, so it is untrusted:
every key must be known, every value typed and inside bounds, and the
architecture it describes must stay under a parameter budget, so that a
hostile config cannot make the aggregator allocate without bound.
Configs are plain JSON-compatible dicts (ints, floats, strings, lists).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ffsecure.errors import ConfigError
from ffsecure.records import fields

MAX_PARAMETERS = 64_000_000  # 256 MB of float32 weights
CHANNEL_CHOICES = fields.IMAGE_CHANNELS


def config_error(message: str) -> ConfigError:
    return ConfigError(
        message,
        code="E_GENERATOR_CONFIG",
        hint="start from ffsecure.generators.default_config(...) and change only documented keys",
    )


@dataclass(frozen=True)
class Int:
    lo: int
    hi: int


@dataclass(frozen=True)
class Float:
    lo: float
    hi: float


@dataclass(frozen=True)
class Choice:
    options: tuple[str, ...]


@dataclass(frozen=True)
class IntList:
    min_len: int
    max_len: int
    lo: int
    hi: int


@dataclass(frozen=True)
class ImageShape:
    pass


Field = Int | Float | Choice | IntList | ImageShape


def _unsupported_shape(shape: tuple[int, int, int]) -> ConfigError:
    c, h, w = shape
    if c not in CHANNEL_CHOICES:
        return config_error(f"image channels must be 1 or 3, got {c}")
    name, size = ("height", h) if h % 4 or not 8 <= h <= 64 else ("width", w)
    return config_error(f"image {name} must be a multiple of 4 in [8, 64], got {size}")


def check_field(key: str, spec: Field, value: Any) -> Any:
    """Validate one value; return it normalised (ints as int, floats as float, lists as lists)."""
    if isinstance(spec, Int):
        if not fields.is_int(value) or not spec.lo <= value <= spec.hi:
            raise config_error(
                f"config key {key!r} must be an integer in [{spec.lo}, {spec.hi}], got {value!r}"
            )
        return int(value)
    if isinstance(spec, Float):
        if not fields.is_number(value) or not spec.lo <= value <= spec.hi:
            raise config_error(
                f"config key {key!r} must be a number in [{spec.lo}, {spec.hi}], got {value!r}"
            )
        return float(value)
    if isinstance(spec, Choice):
        if not isinstance(value, str) or value not in spec.options:
            raise config_error(
                f"config key {key!r} must be one of {list(spec.options)}, got {value!r}"
            )
        return value
    if isinstance(spec, IntList):
        if (
            not isinstance(value, (list, tuple))
            or not spec.min_len <= len(value) <= spec.max_len
            or not all(fields.is_int(v) and spec.lo <= v <= spec.hi for v in value)
        ):
            raise config_error(
                f"config key {key!r} must be a list of {spec.min_len}..{spec.max_len} integers "
                f"in [{spec.lo}, {spec.hi}], got {value!r}"
            )
        return [int(v) for v in value]
    if isinstance(spec, ImageShape):
        return list(
            fields.check_image_shape(
                value,
                not_three=lambda got: config_error(
                    f"config key {key!r} must be [C, H, W], got {got!r}"
                ),
                unsupported=_unsupported_shape,
            )
        )
    raise TypeError(f"unknown field spec {spec!r}")  # pragma: no cover


def check_config(family: str, schema: dict[str, Field], config: Any) -> dict[str, Any]:
    """Check that ``config`` has exactly the keys of ``schema`` with valid values."""
    if not isinstance(config, dict):
        raise config_error(f"{family} config must be a JSON object, got {type(config).__name__}")
    unknown = sorted(set(config) - set(schema), key=str)
    if unknown:
        raise config_error(f"unknown {family} config keys: {unknown}")
    missing = sorted(set(schema) - set(config))
    if missing:
        raise config_error(f"{family} config is missing keys: {missing}")
    return {key: check_field(key, spec, config[key]) for key, spec in schema.items()}
