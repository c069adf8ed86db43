"""Exact text form of constant tensors.

xDSL's dense elements attribute cannot round-trip -inf/nan splats (it prints
`dense<0xFF800000>` and parses that back as 4.28e9), so constants keep their raw
little-endian bytes and print their values in a form that parses back bit-exactly:
a scalar as itself, a short or uniform tensor as a list, anything longer as hex bytes.
"""

from __future__ import annotations

import numpy as np

from partir.ir.params import format_float

_NUMPY = {
    "float32": np.float32, "float64": np.float64, "float16": np.float16, "int8": np.int8,
    "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
    "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64, "bool": np.bool_,
    "complex64": np.complex64, "complex128": np.complex128,
}  # fmt: skip
MAX_LISTED = 16
"""Tensors with more elements than this (and not uniform) print as hex bytes."""


def _as_numbers(raw: bytes, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # numpy has no bf16: its bits are the top half of an f32
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    return np.frombuffer(raw, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<"))


def _to_bytes(values: list[float | int | bool], dtype: str) -> bytes:
    if dtype == "bfloat16":
        bits = np.asarray(values, dtype=np.float32).view(np.uint32) >> 16
        return bits.astype("<u2").tobytes()
    return np.asarray(values, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()


def _format_element(x: np.generic, dtype: str) -> str:
    if dtype == "bool":
        return "true" if x else "false"
    if dtype.startswith(("float", "bfloat")):
        # the dtype's own shortest repr, so an f32 prints as 0.1 and not 0.10000000149011612
        return format_float(float(str(x))) if np.isfinite(x) else format_float(float(x))
    return str(int(x))


_CANONICAL_NAN = {
    "float32": 0x7FC00000,
    "float64": 0x7FF8000000000000,
    "float16": 0x7E00,
    "bfloat16": 0x7FC0,
}
_BITS = {"float32": "<u4", "float64": "<u8", "float16": "<u2", "bfloat16": "<u2"}


def _odd_nan(raw: bytes, dtype: str, values: np.ndarray) -> bool:
    """Whether a NaN other than the canonical quiet NaN is present (its text would lose bits)."""
    if dtype not in _CANONICAL_NAN:
        return False
    nan = np.isnan(values)
    if not nan.any():
        return False
    bits = np.frombuffer(raw, dtype=_BITS[dtype])
    return bool((bits[nan] != _CANONICAL_NAN[dtype]).any())


def format_constant(raw: bytes, dtype: str, numel: int) -> str:
    """The text of a constant's value: ``-inf``, ``[1.0, 2.0]``, ``splat 0.0`` or ``"0x..."``.

    Values print as numbers only when that is bit-exact; a NaN with a sign or payload
    prints the whole constant as hex bytes, and so does every complex constant (its bytes
    are the exact form; a pair of floats per element would need a syntax of its own).
    """
    if dtype.startswith("complex"):
        return '"0x' + raw.hex().upper() + '"'
    values = _as_numbers(raw, dtype)
    if _odd_nan(raw, dtype, values):
        return '"0x' + raw.hex().upper() + '"'
    if numel == 1:
        return _format_element(values[0], dtype)
    width = len(raw) // numel if numel else 0
    if numel and raw == raw[:width] * numel:  # bitwise, so 0.0 and -0.0 stay apart
        return "splat " + _format_element(values[0], dtype)
    if numel <= MAX_LISTED:
        return "[" + ", ".join(_format_element(v, dtype) for v in values) + "]"
    return '"0x' + raw.hex().upper() + '"'


def parse_element(text: str, dtype: str) -> float | int | bool:
    """One element as written by `format_constant`."""
    if dtype == "bool":
        return text == "true"
    if dtype.startswith(("float", "bfloat")):
        return float(text)
    return int(text)


def constant_bytes(values: list[str] | str, dtype: str, numel: int, splat: bool) -> bytes:
    """Raw bytes of a constant from its parsed text (element strings or a hex string)."""
    if isinstance(values, str):
        return bytes.fromhex(values[2:])
    elements = [parse_element(v, dtype) for v in values]
    if splat:
        elements = elements * numel
    return _to_bytes(elements, dtype)


def encode_array(array: np.ndarray, dtype: str) -> bytes:
    """Raw little-endian bytes of an array of the given dtype (bf16 arrays pass their bits)."""
    if dtype == "bfloat16":
        return np.ascontiguousarray(array).view(np.uint16).astype("<u2").tobytes()
    return np.ascontiguousarray(array, dtype=np.dtype(_NUMPY[dtype]).newbyteorder("<")).tobytes()
