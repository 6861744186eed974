"""Declarative field specs: one validator for every record parsed at the edge.

A record that arrives from outside (a signed manifest, a report, a TOML
config) is described once as a tree of frozen specs and checked by
:func:`check`, which returns the value normalised (ints as ``int``, floats as
``float``, lists as ``list``, tables as ``dict`` with defaults filled in).

Invariants, the same for every caller:

* a number is never a ``bool`` (``True`` is not 1 here) and is always finite
  (NaN and the infinities are refused, also where TOML allows them);
* a ``Float`` accepts an integer and returns it as ``float``; an ``Int``
  refuses ``2.0``;
* a string is checked with ``re.fullmatch`` against its pattern and its
  length is bounded before the pattern runs;
* a string with an ``rule`` (an :class:`ffsecure.records.ids.IdRule`) is checked by
  that rule, the one home of each id pattern;
* a ``Table`` holds an exact key set: an unknown key is refused, a key
  without a default is required, a default is filled in when absent (a
  ``dict`` default of a nested ``Table`` is checked through it, so the nested
  table's own defaults fill in too);
* ``Opaque`` marks a value the spec only places (its type at most) and its
  owner checks itself (a generator config, a signed body checked after its
  signature), and ``AnyOf`` takes the first of its specs that accepts;
* the first failure raises :class:`FieldError` naming the dotted key path,
  what was expected and what was found. The checks themselves hold no
  message policy: a caller passes ``error=`` to turn the ``FieldError`` into
  its own typed error with its stable code (``E_CONFIG``,
  ``E_MANIFEST_SCHEMA``, ...), so codes and messages stay the caller's.

:func:`is_int` and :func:`is_number` are the one home of "an integer, not a
bool" and "a finite number, not a bool"; import them instead of writing the
``isinstance`` ladder again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, TypeGuard

from ffsecure.errors import FFSecureError
from ffsecure.records.ids import IdRule

__all__ = [
    "MISSING",
    "OMIT",
    "AnyOf",
    "Bool",
    "Field",
    "FieldError",
    "IMAGE_CHANNELS",
    "Float",
    "Int",
    "List",
    "Nullable",
    "Opaque",
    "Problem",
    "Scalars",
    "Spec",
    "Str",
    "Table",
    "check",
    "check_image_shape",
    "is_int",
    "is_number",
    "is_scalar",
]


class _Missing:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The default of a required table key.
MISSING: Any = _Missing("MISSING")
#: The default of an optional table key that is left out of the result when absent.
OMIT: Any = _Missing("OMIT")


def is_int(value: object) -> TypeGuard[int]:
    """``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> TypeGuard[int | float]:
    """``value`` is a finite ``int`` or ``float`` and not a ``bool``."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_scalar(value: object) -> bool:
    """A JSON scalar leaf: ``None``, a string, a bool or a finite number."""
    return value is None or isinstance(value, (str, bool)) or is_number(value)


class Problem(StrEnum):
    """What kind of failure a :class:`FieldError` reports."""

    TYPE = "type"  # wrong JSON/TOML type
    BOUNDS = "bounds"  # right type, outside the bounds, length or pattern
    UNKNOWN = "unknown"  # a table holds keys it does not define
    MISSING = "missing"  # a table lacks a required key


class FieldError(FFSecureError):
    """A value does not match its field spec; callers re-raise it as their own error."""

    code = "E_FIELD"

    def __init__(
        self,
        key: str,
        problem: Problem,
        expect: str,
        value: object = None,
        *,
        fix: str | None = None,
        keys: tuple[str, ...] = (),
    ):
        if problem is Problem.UNKNOWN:
            text = f"{key} has unknown keys {list(keys)}; known keys: {expect}"
        elif problem is Problem.MISSING:
            text = f"{key} is required"
        else:
            text = f"{key} must be {expect}, got {value!r}"
        super().__init__(text, hint=fix)
        self.key = key
        self.problem = problem
        self.expect = expect
        self.value = value
        self.fix = fix
        self.keys = keys


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _range_text(kind: str, lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in [{_num(lo)}, {_num(hi)}]"
    if lo is not None:
        return f"{kind} >= {_num(lo)}"
    if hi is not None:
        return f"{kind} <= {_num(hi)}"
    return kind


@dataclass(frozen=True)
class Int:
    """An integer (not a bool) in ``[lo, hi]`` (either bound may be open-ended with None)."""

    lo: int | None = None
    hi: int | None = None
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        return self.expect or _range_text("an integer", self.lo, self.hi)


@dataclass(frozen=True)
class Float:
    """A finite number (int or float, not a bool) in ``[lo, hi]``; ``above`` excludes ``lo``,
    ``below`` excludes ``hi``."""

    lo: float | None = None
    hi: float | None = None
    above: bool = False
    below: bool = False
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        if self.expect:
            return self.expect
        if self.above and self.lo is not None and self.hi is None:
            return f"a number above {self.lo:g}"
        if (self.above or self.below) and self.lo is not None and self.hi is not None:
            left, right = "(" if self.above else "[", ")" if self.below else "]"
            return f"a number in {left}{self.lo:g}, {self.hi:g}{right}"
        return _range_text("a number", self.lo, self.hi)


@dataclass(frozen=True)
class Str:
    """A string of ``min_len..max_len`` characters, matching ``pattern`` in full, in ``options``,
    and of the id ``rule`` (its own length cap and ``fullmatch`` pattern) when one is given."""

    min_len: int = 0
    max_len: int = 1 << 16
    pattern: str | None = None
    options: tuple[str, ...] | None = None
    rule: IdRule | None = None
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        if self.expect:
            return self.expect
        if self.rule is not None:
            return f"a {self.rule.name} ({self.rule.rule})"
        if self.options is not None:
            return f"one of {list(self.options)}"
        return f"a string of {self.min_len}..{self.max_len} characters"


@dataclass(frozen=True)
class Bool:
    """``true`` or ``false``."""

    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        return self.expect or "true or false"


@dataclass(frozen=True)
class List:
    """A list (a JSON/TOML array: a ``list``, not a tuple) of ``min_len..max_len`` items, each
    checked against ``item``."""

    item: Spec
    min_len: int = 0
    max_len: int = 1 << 16
    unique: bool = False
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        distinct = "distinct " if self.unique else ""
        return self.expect or f"a list of {self.min_len}..{self.max_len} {distinct}items"


@dataclass(frozen=True)
class Nullable:
    """``None``, or a value of ``spec``."""

    spec: Spec

    @property
    def fix(self) -> str | None:
        return self.spec.fix

    def describe(self) -> str:
        return f"{self.spec.describe()} or null"


@dataclass(frozen=True)
class Scalars:
    """An object of at most ``max_keys`` string keys whose values are JSON scalars."""

    max_keys: int = 64
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        return self.expect or f"an object of at most {self.max_keys} scalar values"


@dataclass(frozen=True)
class Opaque:
    """Any value of ``types`` (any value at all when empty), left for its owner to check."""

    types: tuple[type, ...] = ()
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        names = " or ".join(t.__name__ for t in self.types)
        return self.expect or (f"a {names}" if names else "a value")


@dataclass(frozen=True)
class AnyOf:
    """A value of the first of ``options`` that accepts it."""

    options: tuple[Spec, ...]
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        return self.expect or " or ".join(o.describe() for o in self.options)


@dataclass(frozen=True)
class Field:
    """A table key: its spec and its default (:data:`MISSING`: the key is required;
    :data:`OMIT`: the key is optional and stays absent)."""

    spec: Spec
    default: Any = MISSING


@dataclass(frozen=True)
class Table:
    """An object with exactly the keys of ``fields`` (those with a default may be absent)."""

    fields: Mapping[str, Field | Spec] = field(default_factory=dict)
    expect: str | None = None
    fix: str | None = None

    def describe(self) -> str:
        return self.expect or "a table"

    def field(self, key: str) -> Field:
        entry = self.fields[key]
        return entry if isinstance(entry, Field) else Field(entry)


Spec = Int | Float | Str | Bool | List | Nullable | Scalars | Opaque | AnyOf | Table


def _fail(spec: Spec, key: str, problem: Problem, value: object) -> NoReturn:
    raise FieldError(key, problem, spec.describe(), value, fix=spec.fix)


def _check_int(spec: Int, value: object, key: str) -> int:
    if not is_int(value):
        _fail(spec, key, Problem.TYPE, value)
    if (spec.lo is not None and value < spec.lo) or (spec.hi is not None and value > spec.hi):
        _fail(spec, key, Problem.BOUNDS, value)
    return int(value)


def _check_float(spec: Float, value: object, key: str) -> float:
    if not is_number(value):
        _fail(spec, key, Problem.TYPE, value)
    low = spec.lo is not None and (value <= spec.lo if spec.above else value < spec.lo)
    high = spec.hi is not None and (value >= spec.hi if spec.below else value > spec.hi)
    if low or high:
        _fail(spec, key, Problem.BOUNDS, value)
    return float(value)


def _check_str(spec: Str, value: object, key: str) -> str:
    if not isinstance(value, str):
        _fail(spec, key, Problem.TYPE, value)
    if not spec.min_len <= len(value) <= spec.max_len:
        _fail(spec, key, Problem.BOUNDS, value)
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        _fail(spec, key, Problem.BOUNDS, value)
    if spec.rule is not None and not spec.rule.matches(value):
        _fail(spec, key, Problem.BOUNDS, value)
    if spec.options is not None and value not in spec.options:
        _fail(spec, key, Problem.BOUNDS, value)
    return value


def _check_list(spec: List, value: object, key: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(spec, key, Problem.TYPE, value)
    if not spec.min_len <= len(value) <= spec.max_len:
        _fail(spec, key, Problem.BOUNDS, value)
    items = [_check(spec.item, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if spec.unique and len(set(map(repr, items))) != len(items):
        _fail(spec, key, Problem.BOUNDS, value)
    return items


def _check_scalars(spec: Scalars, value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(spec, key, Problem.TYPE, value)
    if len(value) > spec.max_keys:
        _fail(spec, key, Problem.BOUNDS, value)
    if not all(isinstance(k, str) and is_scalar(v) for k, v in value.items()):
        _fail(spec, key, Problem.TYPE, value)
    return dict(value)


def _check_table(spec: Table, value: object, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(spec, key, Problem.TYPE, value)
    unknown = tuple(sorted((k for k in value if k not in spec.fields), key=str))
    if unknown:
        known = str(sorted(spec.fields))
        raise FieldError(key, Problem.UNKNOWN, known, value, fix=spec.fix, keys=unknown)
    out: dict[str, Any] = {}
    for name in spec.fields:
        entry = spec.field(name)
        path = f"{key}.{name}" if key else name
        if name in value:
            out[name] = _check(entry.spec, value[name], path)
        elif entry.default is MISSING:
            raise FieldError(path, Problem.MISSING, entry.spec.describe(), fix=entry.spec.fix)
        elif isinstance(entry.spec, Table) and isinstance(entry.default, dict):
            out[name] = _check(entry.spec, entry.default, path)
        elif entry.default is not OMIT:
            out[name] = entry.default
    return out


def _check_any_of(spec: AnyOf, value: object, key: str) -> Any:
    for option in spec.options:
        try:
            return _check(option, value, key)
        except FieldError:
            continue
    _fail(spec, key, Problem.TYPE, value)


def _check(spec: Spec, value: object, key: str) -> Any:
    if isinstance(spec, Nullable):
        if value is None:
            return None
        try:
            return _check(spec.spec, value, key)
        except FieldError as exc:
            if exc.key != key:  # a failure inside the value names itself
                raise
            raise FieldError(key, exc.problem, spec.describe(), value, fix=spec.fix) from None
    if isinstance(spec, Int):
        return _check_int(spec, value, key)
    if isinstance(spec, Float):
        return _check_float(spec, value, key)
    if isinstance(spec, Str):
        return _check_str(spec, value, key)
    if isinstance(spec, Bool):
        if not isinstance(value, bool):
            _fail(spec, key, Problem.TYPE, value)
        return value
    if isinstance(spec, List):
        return _check_list(spec, value, key)
    if isinstance(spec, Scalars):
        return _check_scalars(spec, value, key)
    if isinstance(spec, Table):
        return _check_table(spec, value, key)
    if isinstance(spec, Opaque):
        if spec.types and not isinstance(value, spec.types):
            _fail(spec, key, Problem.TYPE, value)
        return value
    if isinstance(spec, AnyOf):
        return _check_any_of(spec, value, key)
    raise TypeError(f"unknown field spec {spec!r}")  # pragma: no cover


def check(
    spec: Spec,
    value: object,
    key: str = "",
    *,
    error: Callable[[FieldError], FFSecureError] | None = None,
) -> Any:
    """Check ``value`` against ``spec`` (``key`` names it); return it normalised.

    Raises :class:`FieldError`, or ``error(field_error)`` when ``error`` is given.
    """
    try:
        return _check(spec, value, key)
    except FieldError as exc:
        if error is None:
            raise
        raise error(exc) from None


# ------------------------------------------------------------------ shared rules

#: Image channels and sizes every generator, dataset and manifest supports.
IMAGE_CHANNELS = (1, 3)
IMAGE_SIZE_MIN, IMAGE_SIZE_MAX, IMAGE_SIZE_STEP = 8, 64, 4


def _image_size_ok(size: int) -> bool:
    return IMAGE_SIZE_MIN <= size <= IMAGE_SIZE_MAX and size % IMAGE_SIZE_STEP == 0


def check_image_shape(
    shape: object,
    *,
    not_three: Callable[[Any], FFSecureError],
    unsupported: Callable[[tuple[int, int, int]], FFSecureError],
) -> tuple[int, int, int]:
    """The one image-shape rule: ``[C, H, W]`` ints, C in {1, 3}, H and W multiples of 4 in
    [8, 64]. ``not_three(shape)`` and ``unsupported((c, h, w))`` build the caller's error."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(map(is_int, shape)):
        raise not_three(shape)
    c, h, w = (int(v) for v in shape)
    if c not in IMAGE_CHANNELS or not (_image_size_ok(h) and _image_size_ok(w)):
        raise unsupported((c, h, w))
    return (c, h, w)
