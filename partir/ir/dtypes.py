"""Element types: numpy-style dtype names <-> xDSL builtin element types.

PRNG key dtypes (``key<fry>``) are names too: their element type is `KeyType`, and each
element is one key (``uint32[2]`` of data for threefry2x32).
"""

from __future__ import annotations

import math
from functools import cache

from xdsl.dialects.builtin import (
    BFloat16Type,
    ComplexType,
    Float16Type,
    Float32Type,
    Float64Type,
    IntegerType,
    Signedness,
    TensorType,
)
from xdsl.ir import Attribute

from partir.errors import UnsupportedDtypeError
from partir.ir.types import KeyType

# dtype name (as numpy and jaxprs spell it) -> (short name used in jaxprs, xDSL type factory)
_DTYPES: dict[str, tuple[str, Attribute]] = {
    "float32": ("f32", Float32Type()),
    "float64": ("f64", Float64Type()),
    "float16": ("f16", Float16Type()),
    "bfloat16": ("bf16", BFloat16Type()),
    "int8": ("i8", IntegerType(8)),
    "int16": ("i16", IntegerType(16)),
    "int32": ("i32", IntegerType(32)),
    "int64": ("i64", IntegerType(64)),
    "uint8": ("u8", IntegerType(8, Signedness.UNSIGNED)),
    "uint16": ("u16", IntegerType(16, Signedness.UNSIGNED)),
    "uint32": ("u32", IntegerType(32, Signedness.UNSIGNED)),
    "uint64": ("u64", IntegerType(64, Signedness.UNSIGNED)),
    "bool": ("bool", IntegerType(1)),
    "complex64": ("c64", ComplexType(Float32Type())),
    "complex128": ("c128", ComplexType(Float64Type())),
}
_BY_TYPE: dict[Attribute, str] = {t: name for name, (_, t) in _DTYPES.items()}
_BY_SHORT: dict[str, str] = {short: name for name, (short, _) in _DTYPES.items()}

DTYPE_NAMES: tuple[str, ...] = tuple(_DTYPES)
"""Every numeric dtype name the IR can represent (key dtypes are in `KEY_DTYPES`)."""

KEY_DTYPES: dict[str, tuple[int, ...]] = {"key<fry>": (2,)}
"""PRNG key dtype name -> the shape of one key's ``uint32`` data. Only threefry2x32 (tag
``fry``, JAX's default implementation) is supported: its bits partir can generate tile by
tile (see ``docs/ir.md``)."""

_KEY_TYPES: dict[str, Attribute] = {name: KeyType(name[4:-1]) for name in KEY_DTYPES}
_BY_TYPE.update({t: name for name, t in _KEY_TYPES.items()})

ITEMSIZE: dict[str, int] = {
    "float32": 4, "float64": 8, "float16": 2, "bfloat16": 2, "int8": 1, "int16": 2,
    "int32": 4, "int64": 8, "uint8": 1, "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1,
    "complex64": 8, "complex128": 16, "key<fry>": 8,
}  # fmt: skip
"""Bytes per element, as XLA stores each dtype (bool takes a byte; a threefry key is its
``uint32[2]`` data)."""


def is_key_dtype(dtype_name: str) -> bool:
    """Whether a dtype name is a PRNG key dtype (``key<fry>``)."""
    return dtype_name in KEY_DTYPES


def element_type(dtype_name: str) -> Attribute:
    """The xDSL element type of a dtype name such as ``"float32"``."""
    if dtype_name in _KEY_TYPES:
        return _KEY_TYPES[dtype_name]
    try:
        return _DTYPES[dtype_name][1]
    except KeyError:
        supported = ", ".join([*_DTYPES, *KEY_DTYPES])
        raise UnsupportedDtypeError(
            f"dtype {dtype_name!r} has no partir element type; supported: {supported}"
        ) from None


def dtype_name(element: Attribute) -> str:
    """The dtype name of an xDSL element type (inverse of :func:`element_type`)."""
    try:
        return _BY_TYPE[element]
    except KeyError:
        raise UnsupportedDtypeError(f"element type {element} has no dtype name") from None


def short_name(dtype: str) -> str:
    """The jaxpr short spelling of a dtype (``float32`` -> ``f32``; ``key<fry>`` stays)."""
    return dtype if dtype in KEY_DTYPES else _DTYPES[dtype][0]


def from_short_name(short: str) -> str:
    """The dtype name of a jaxpr short spelling (``f32`` -> ``float32``)."""
    try:
        return _BY_SHORT[short]
    except KeyError:
        raise UnsupportedDtypeError(f"unknown short dtype {short!r}") from None


@cache
def tensor_type(shape: tuple[int, ...], dtype: str) -> TensorType:
    """The ranked tensor type of a shape and dtype name (cached: types are immutable)."""
    return TensorType(element_type(dtype), shape)


def shape_of(t: Attribute) -> tuple[int, ...]:
    """The static shape of a ranked tensor type."""
    assert isinstance(t, TensorType), f"expected a tensor type, got: {t}"
    return tuple(t.get_shape())


def dtype_of(t: Attribute) -> str:
    """The dtype name of a ranked tensor type's elements."""
    assert isinstance(t, TensorType), f"expected a tensor type, got: {t}"
    return dtype_name(t.element_type)


def nbytes_of(t: Attribute) -> int:
    """Bytes of a buffer of the ranked tensor type `t` (elements times `ITEMSIZE`)."""
    return math.prod(shape_of(t)) * ITEMSIZE[dtype_of(t)]
