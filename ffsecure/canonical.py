"""Canonical JSON: the only JSON encoding that is hashed or signed.

Canonical form: UTF-8, keys sorted, no insignificant whitespace, no NaN or
infinities. Parsing is bounded (size and nesting depth are checked before
and during decoding) and ``loads_canonical`` insists that the input is
already in canonical form, so that one record has exactly one byte string.

A string (a value or a key) never holds a surrogate code point (U+D800 to
U+DFFF): UTF-8 cannot encode one, so ``dumps`` could not write it back. JSON's
``\\ud800`` escape decodes to one, and ``loads`` refuses it with ``E_JSON``,
as ``dumps`` refuses such a string built in memory: every reader of untrusted
JSON gets a :class:`~ffsecure.errors.FormatError`, never a ``UnicodeEncodeError``.
(An escaped surrogate *pair* decodes to one ordinary character; canonical JSON
writes that character as itself, so ``loads_canonical`` refuses the escape as
not canonical.)
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from ffsecure.errors import FormatError
from ffsecure.records.fields import is_int

MAX_JSON_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 20
HINT = (
    "encode the record with ffsecure.canonical.dumps: UTF-8, sorted keys, no whitespace, "
    "no NaN, unique keys, no lone surrogates, at most 32 levels deep"
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_string(text: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise FormatError(
            f"JSON string holds the lone surrogate U+{ord(found.group()):04X}, "
            "which UTF-8 cannot encode",
            code="E_JSON",
            hint=HINT,
        )


def _check_values(obj: Any, depth: int = 0) -> None:
    """Depth, integer size, finite floats, string keys, and strings UTF-8 can encode."""
    if depth > MAX_JSON_DEPTH:
        raise FormatError(
            f"JSON nesting deeper than {MAX_JSON_DEPTH}", code="E_JSON_DEPTH", hint=HINT
        )
    if is_int(obj) and len(str(abs(obj))) > MAX_INT_DIGITS:
        raise FormatError(
            f"JSON integer has more than {MAX_INT_DIGITS} digits", code="E_JSON", hint=HINT
        )
    if isinstance(obj, str):
        _check_string(obj)
    elif isinstance(obj, float) and not math.isfinite(obj):
        raise FormatError(
            "JSON holds NaN or infinity, which canonical JSON forbids", code="E_JSON", hint=HINT
        )
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise FormatError("JSON object keys must be strings", code="E_JSON", hint=HINT)
            _check_string(key)
            _check_values(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _check_values(value, depth + 1)


def dumps(obj: Any) -> bytes:
    """Encode ``obj`` as canonical JSON bytes."""
    _check_values(obj)
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _depth_guard(text: str) -> None:
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise FormatError(
                    f"JSON nesting deeper than {MAX_JSON_DEPTH}", code="E_JSON_DEPTH", hint=HINT
                )
        elif ch in "]}":
            depth -= 1


def _reject_constant(name: str) -> Any:
    raise FormatError(f"JSON holds {name}, which canonical JSON forbids", code="E_JSON", hint=HINT)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise FormatError(f"JSON object has the key {key!r} twice", code="E_JSON", hint=HINT)
        out[key] = value
    return out


def loads(data: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON bytes with size, depth, duplicate-key, number and surrogate checks."""
    if not isinstance(data, (bytes, bytearray)):
        raise FormatError("JSON input must be bytes", code="E_JSON", hint=HINT)
    if len(data) > max_bytes:
        raise FormatError(
            f"JSON document is {len(data)} bytes, more than the limit of {max_bytes}",
            code="E_JSON_SIZE",
            hint="send a smaller record; the limit protects the parser",
        )
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"JSON is not valid UTF-8: {exc}", code="E_JSON", hint=HINT) from None
    _depth_guard(text)
    try:
        obj = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_int=_bounded_int,
        )
    except FormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise FormatError(f"not valid JSON: {exc}", code="E_JSON", hint=HINT) from None
    _check_values(obj)
    return obj


def _bounded_int(text: str) -> int:
    # the same bound as dumps: what one side writes, the other reads
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise FormatError(
            f"JSON integer has more than {MAX_INT_DIGITS} digits", code="E_JSON", hint=HINT
        )
    return int(text)


def loads_canonical(data: bytes, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """Parse JSON that must already be canonical; anything else is refused."""
    obj = loads(data, max_bytes=max_bytes)
    if dumps(obj) != bytes(data):
        raise FormatError(
            "JSON is not in canonical form (sorted keys, no whitespace, UTF-8)",
            code="E_NOT_CANONICAL",
            hint="re-encode it with ffsecure.canonical.dumps",
        )
    return obj


def b64decode_canonical(text: str) -> bytes | None:
    """Decode standard padded base64, or None unless ``text`` is the one encoding of its bytes.

    Python's decoder ignores the unused low bits of a final partial group, so
    several strings decode to the same bytes; a signed or hashed record must
    have one spelling, or a changed character would go unnoticed.
    """
    if not isinstance(text, str):
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == text else None
