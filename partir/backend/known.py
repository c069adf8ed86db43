"""JAX objects that primitive parameters may hold, by the class name the IR prints.

The frontend writes these as `Record`/`EnumValue` parameters; the backend rebuilds the
JAX object from the same table. A parameter of any other class is kept by reference.
"""

from __future__ import annotations

import jax
import numpy as np

from partir.backend import jax_compat


class PRNGImpl:
    """The registered PRNG implementations by name, so `PRNGImpl.threefry2x32` (the `impl`
    parameter of `random_wrap`) decodes to JAX's `PRNGImpl` object."""


for _name, _impl in jax_compat.prng_impls().items():
    setattr(PRNGImpl, _name, _impl)

KNOWN_RECORDS: dict[str, type] = {
    "GatherDimensionNumbers": jax.lax.GatherDimensionNumbers,
    "ScatterDimensionNumbers": jax.lax.ScatterDimensionNumbers,
    "ConvDimensionNumbers": jax.lax.ConvDimensionNumbers,
}
"""Record (NamedTuple) parameter classes, by name."""

KNOWN_ENUMS: dict[str, type] = {
    "GatherScatterMode": jax.lax.GatherScatterMode,
    "Precision": jax.lax.Precision,
    "RoundingMethod": jax.lax.RoundingMethod,
    "DotAlgorithmPreset": jax.lax.DotAlgorithmPreset,
    "FftType": jax.lax.FftType,
    "PRNGImpl": PRNGImpl,
}
"""Enumeration parameter classes, by name."""

SCATTER_COMBINERS = {
    "scatter-add": jax.lax.add,
    "scatter-sub": jax.lax.sub,
    "scatter-mul": jax.lax.mul,
    "scatter-min": jax.lax.min,
    "scatter-max": jax.lax.max,
}
"""Scatter primitives whose `update_jaxpr` is rebuilt from the combining function."""


def numpy_dtype(name: str) -> np.dtype:
    """The numpy dtype of a dtype name, bfloat16 included (a key dtype has none: raises)."""
    if name.startswith("key<"):
        raise TypeError(f"dtype {name} is a PRNG key dtype; it has no numpy dtype")
    return np.dtype(jax.numpy.bfloat16) if name == "bfloat16" else np.dtype(name)
