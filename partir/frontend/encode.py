"""JAX primitive parameters -> plain IR parameter values (see `partir.ir.params`)."""

from __future__ import annotations

import enum
from typing import Any

import numpy as np

from partir import ir
from partir.backend import jax_compat
from partir.backend.known import KNOWN_ENUMS, KNOWN_RECORDS, SCATTER_COMBINERS

_ATOMS = (bool, int, float, str, type(None))
_cache: dict[tuple[type, Any], Any] = {}


def _describe(value: Any) -> str:
    name = getattr(value, "__qualname__", None) or getattr(value, "__name__", None)
    text = f"{type(value).__name__} {name}" if name else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def encode_value(value: Any) -> Any:
    """One parameter value in IR form; values with no text form are kept by reference."""
    if type(value) in _ATOMS:
        return value
    if type(value) is tuple or type(value) is list:
        return tuple(encode_value(v) for v in value)
    key = (type(value), value) if is_hashable(value) else None
    if key is not None and (hit := _cache.get(key)) is not None:
        return hit
    encoded = _encode_object(value)
    if key is not None and not isinstance(encoded, ir.Opaque):
        _cache[key] = encoded
    return encoded


def is_hashable(value: Any) -> bool:
    """Whether `value` can be a dict key (a cached parameter, a static argument)."""
    try:
        hash(value)
    except TypeError:
        return False
    return True


def _encode_object(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return ir.Dtype(np.dtype(value).name)
    if jax_compat.is_prng_impl(value):
        # `random_wrap[impl=fry]`: the implementation by its registered name
        return ir.EnumValue("PRNGImpl", value.name)
    if isinstance(value, enum.Enum) and type(value).__name__ in KNOWN_ENUMS:
        return ir.EnumValue(type(value).__name__, value.name)
    if type(value).__name__ in KNOWN_RECORDS and hasattr(value, "_fields"):
        return ir.Record(
            type(value).__name__, tuple((f, encode_value(getattr(value, f))) for f in value._fields)
        )
    if jax_compat.is_shaped_array(value):
        return ir.TensorSpec(tuple(value.shape), np.dtype(value.dtype).name)
    if isinstance(value, jax_compat.Jaxpr | jax_compat.ClosedJaxpr):
        return ir.keep_opaque(value, "jaxpr")
    return ir.keep_opaque(value, _describe(value))


def encode_params(
    primitive: str, params: dict[str, Any], skip: frozenset[str] = frozenset()
) -> tuple[tuple[str, Any], ...]:
    """A primitive's parameters in IR form, in their original order, without `skip`."""
    out = []
    for name, value in jax_compat.canonical_params(primitive, params).items():
        if name in skip:
            continue
        if name == "update_jaxpr" and primitive in SCATTER_COMBINERS:
            # the backend rebuilds the combiner from the primitive's name
            out.append((name, ir.keep_opaque(value, f"{primitive} combiner, rebuilt on emission")))
            continue
        out.append((name, encode_value(value)))
    return tuple(out)
