"""Generator weights as safetensors: writing, header-first validation, loading.

Weights from a site are untrusted bytes. Before any tensor is materialised,
:func:`check_safetensors` parses only the header (length capped, JSON parsed
with size/depth/duplicate-key limits) and checks that the tensor names,
dtypes and shapes are exactly those the declared architecture builds and
that the data offsets tile the data section contiguously, without gaps or
overlaps, and end at the end of the buffer. Only then does
:func:`load_into` hand the bytes to the safetensors parser. Nothing is ever
unpickled.

Values: :func:`check_finite` refuses a NaN or an infinity in any floating
tensor (``E_TENSOR_VALUE``, naming the tensor and, when the caller knows it,
the module). It reads the data section in place through integer views (an
IEEE value is non-finite exactly when its exponent bits are all ones, the
same test for F16, BF16, F32 and F64), so it allocates no float copy and
runs on untrusted bytes before the safetensors parser sees them.

Safetensors layout: ``u64 little-endian header length N`` + ``N bytes of
JSON header`` + ``data``; the header maps each tensor name to
``{"dtype", "shape", "data_offsets": [begin, end]}`` (offsets relative to
the data section) and may hold a ``__metadata__`` map of strings.
"""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np
import torch
from safetensors.torch import load, save

from ffsecure import canonical
from ffsecure.errors import FFSecureError, FormatError
from ffsecure.records.fields import is_int

MAX_HEADER_BYTES = 1 << 20
MAX_METADATA_ENTRIES = 64
MAX_TENSORS = 4096

# safetensors dtype code -> (torch dtype, bytes per element)
DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_TORCH_TO_CODE = {dtype: code for code, (dtype, _size) in DTYPES.items()}

TensorSpecs = dict[str, tuple[tuple[int, ...], str]]


def _header_error(message: str) -> FormatError:
    return FormatError(
        message,
        code="E_SAFETENSORS_HEADER",
        hint="the weights file is malformed; re-export it with ffsecure.generators.to_safetensors",
    )


def _is_small_string_map(metadata: object) -> bool:
    """Whether a safetensors ``__metadata__`` is a map of at most the allowed strings."""
    return (
        isinstance(metadata, dict)
        and len(metadata) <= MAX_METADATA_ENTRIES
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    )


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors dtype code (e.g. ``"F32"``) of a torch dtype."""
    try:
        return _TORCH_TO_CODE[dtype]
    except KeyError:
        raise FormatError(f"dtype {dtype} has no safetensors code", code="E_TENSOR_DTYPE") from None


def specs_of(module: torch.nn.Module) -> TensorSpecs:
    """Name -> (shape, dtype code) of everything ``module.state_dict()`` holds.

    Works on modules built on the ``meta`` device (no memory allocated).
    """
    return {
        name: (tuple(int(d) for d in tensor.shape), dtype_code(tensor.dtype))
        for name, tensor in module.state_dict().items()
    }


def to_bytes(module: torch.nn.Module) -> bytes:
    """Serialise ``module.state_dict()`` as safetensors (deterministic bytes)."""
    tensors = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in module.state_dict().items()
    }
    return save(tensors)


def parse_header(weights: bytes) -> tuple[dict[str, dict[str, Any]], int]:
    """Parse and structurally validate the header; return (tensor entries, data start).

    Checks the length prefix, the JSON, the entry fields and the offsets
    (contiguous from 0, non-overlapping, matching each tensor's byte size,
    ending exactly at the end of the buffer). Raises ``E_SAFETENSORS_HEADER``.
    """
    if not isinstance(weights, (bytes, bytearray, memoryview)):
        raise _header_error("weights must be bytes")
    weights = bytes(weights)
    if len(weights) < 8:
        raise _header_error(
            f"weights are {len(weights)} bytes, shorter than the 8-byte header length"
        )
    (header_len,) = struct.unpack("<Q", weights[:8])
    if header_len > MAX_HEADER_BYTES:
        raise _header_error(
            f"safetensors header length {header_len} exceeds the limit of {MAX_HEADER_BYTES} bytes"
        )
    if 8 + header_len > len(weights):
        raise _header_error(
            f"safetensors header length {header_len} runs past the end of "
            f"a {len(weights)}-byte buffer"
        )
    try:
        header = canonical.loads(weights[8 : 8 + header_len], max_bytes=MAX_HEADER_BYTES)
    except FFSecureError as exc:
        raise _header_error(f"safetensors header is not valid JSON: {exc.message}") from None
    if not isinstance(header, dict):
        raise _header_error("safetensors header is not a JSON object")

    metadata = header.pop("__metadata__", None)
    if metadata is not None and not _is_small_string_map(metadata):
        raise _header_error("safetensors __metadata__ must be a small map of strings to strings")
    if len(header) > MAX_TENSORS:
        raise _header_error(
            f"safetensors header lists {len(header)} tensors, more than {MAX_TENSORS}"
        )

    data_len = len(weights) - 8 - header_len
    spans: list[tuple[int, int, str]] = []
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise _header_error(
                f"tensor {name!r}: entry must have exactly dtype, shape, data_offsets"
            )
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in DTYPES:
            raise _header_error(f"tensor {name!r}: unknown dtype {dtype!r}")
        if (
            not isinstance(shape, list)
            or len(shape) > 8
            or not all(is_int(d) and d >= 0 for d in shape)
        ):
            raise _header_error(
                f"tensor {name!r}: shape must be a list of at most 8 non-negative ints"
            )
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(map(is_int, offsets)):
            raise _header_error(f"tensor {name!r}: data_offsets must be two ints")
        begin, end = offsets
        if not 0 <= begin <= end <= data_len:
            raise _header_error(
                f"tensor {name!r}: data_offsets [{begin}, {end}] fall outside "
                f"the {data_len}-byte data section"
            )
        nbytes = math.prod(shape) * DTYPES[dtype][1]
        if end - begin != nbytes:
            raise _header_error(
                f"tensor {name!r}: data_offsets span {end - begin} bytes "
                f"but dtype and shape need {nbytes}"
            )
        spans.append((begin, end, name))

    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            kind = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise _header_error(
                f"tensor {name!r}: data_offsets start at {begin}, "
                f"which {kind} (expected {position})"
            )
        position = end
    if position != data_len:
        raise _header_error(
            f"tensors cover {position} bytes but the data section holds {data_len}: trailing bytes"
        )
    return header, 8 + header_len


def check_safetensors(weights: bytes, expected: TensorSpecs) -> None:
    """Validate ``weights`` against ``expected`` (name -> (shape, dtype code))
    from the header alone.

    Raises :class:`FormatError` with ``E_SAFETENSORS_HEADER`` (malformed
    header or offsets), ``E_TENSOR_NAME`` (extra or missing tensor),
    ``E_TENSOR_DTYPE`` or ``E_TENSOR_SHAPE``.
    """
    header, _start = parse_header(weights)
    missing = sorted(set(expected) - set(header))
    extra = sorted(set(header) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}")
        if extra:
            parts.append(f"unexpected {extra[:5]}")
        raise FormatError(
            "weights do not hold the tensors the declared architecture builds: " + ", ".join(parts),
            code="E_TENSOR_NAME",
            hint="the weights and the (family, config) in the manifest "
            "must come from the same generator",
        )
    for name in sorted(expected):
        want_shape, want_dtype = expected[name]
        entry = header[name]
        if entry["dtype"] != want_dtype:
            raise FormatError(
                f"tensor {name!r} has dtype {entry['dtype']}, the architecture needs {want_dtype}",
                code="E_TENSOR_DTYPE",
                hint="export the weights in the dtype the architecture declares",
            )
        if tuple(entry["shape"]) != tuple(want_shape):
            raise FormatError(
                f"tensor {name!r} has shape {entry['shape']}, "
                f"the architecture needs {list(want_shape)}",
                code="E_TENSOR_SHAPE",
                hint="the weights and the config in the manifest must come from the same generator",
            )


# float dtype code -> (little-endian unsigned view, exponent mask): all ones means NaN or inf
_EXPONENT_MASKS: dict[str, tuple[str, int]] = {
    "F64": ("<u8", 0x7FF0_0000_0000_0000),
    "F32": ("<u4", 0x7F80_0000),
    "F16": ("<u2", 0x7C00),
    "BF16": ("<u2", 0x7F80),
}


class TensorValueError(FormatError):
    """A floating tensor holds NaN or an infinity (a diverged or tampered generator)."""

    code = "E_TENSOR_VALUE"

    def __init__(self, tensor: str, module_id: str | None = None):
        where = f"module {module_id}: " if module_id else ""
        super().__init__(
            f"{where}tensor {tensor!r} holds NaN or infinite values",
            hint="the generator diverged or the weights were tampered with; retrain it",
        )
        self.tensor = tensor
        self.module_id = module_id


def check_finite(weights: bytes, *, module_id: str | None = None) -> None:
    """Refuse ``weights`` whose floating tensors hold NaN or inf (:class:`TensorValueError`).

    Parses the header first (``E_SAFETENSORS_HEADER``), so it is safe on untrusted bytes.
    """
    header, start = parse_header(weights)
    data = memoryview(weights)[start:]
    for name in sorted(header, key=lambda k: header[k]["data_offsets"][0]):
        entry = header[name]
        if entry["dtype"] not in _EXPONENT_MASKS:
            continue
        view, mask = _EXPONENT_MASKS[entry["dtype"]]
        begin, end = entry["data_offsets"]
        bits = np.frombuffer(data[begin:end], dtype=view)
        if bool(np.any((bits & np.array(mask, dtype=view)) == mask)):
            raise TensorValueError(name, module_id)


def load_into(module: torch.nn.Module, weights: bytes, *, module_id: str | None = None) -> None:
    """Check ``weights`` against ``module`` and copy them in (strict, finite values only)."""
    check_safetensors(weights, specs_of(module))
    check_finite(weights, module_id=module_id)
    module.load_state_dict(load(bytes(weights)), strict=True)
