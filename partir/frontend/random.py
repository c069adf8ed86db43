"""PRNG keys in the frontend: key types, and the key primitives rewritten on key data.

A key array stays a key-typed value in the IR (`tensor<4x!partir.key<fry>>`), so the
structural ops JAX applies to it (`unstack`, `slice`, `broadcast_in_dim`, a scan over
per-layer keys) keep their ordinary rules and are bound again on key arrays. The
primitives that *compute* on keys are replaced, at tracing, by the function of the key
data that JAX's own lowering runs for them (`jax_compat.physical_random_fn`):

    random_bits(k)     ->  random_unwrap(k), then threefry2x32 on counters, xor, ...
    random_split(k)    ->  random_unwrap(k), threefry2x32 on counters, then random_wrap
    random_fold_in(k)  ->  random_unwrap(k), threefry2x32 of (data, msg), random_wrap
    random_seed(s)     ->  shifts and converts of the seed, then random_wrap
    random_clone(k)    ->  k

so every op the IR holds is an ordinary primitive with an exact sharding rule, and the
program draws the very numbers `jax.jit` of the function draws. Under
``jax_threefry_partitionable`` (JAX's default) the counters are the element's index in the
output, `iota_2x32_shape`; `counters_jaxpr` rewrites that as sums of broadcast 1-D iotas,
whose tiles every device computes for itself, so sharded bits are generated locally.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from partir import ir
from partir.backend import jax_compat

EXPANDED = ("random_bits", "random_split", "random_fold_in", "random_seed")
"""Key primitives replaced by the computation JAX's lowering runs for them."""

IDENTITY = ("random_clone",)
"""Key primitives that return their operand unchanged (a copy JAX may not elide)."""

KEY_RESULTS = ("random_split", "random_fold_in", "random_seed")
"""Expanded primitives whose result is a key array (their expansion ends in `random_wrap`)."""

_COUNTER_LIMIT = 2**32
"""Outputs of at most this many elements have a zero high counter word (see below)."""

MSG_KEY_IMPL = (
    "partir supports PRNG keys of the threefry2x32 implementation only (jax.random.key(seed) "
    "and jax.random.PRNGKey(seed) with the default jax_default_prng_impl)"
)
"""What the error for a key of another implementation (``rbg``, ...) says is supported."""


def key_dtype_name(aval: Any) -> str:
    """The IR dtype name of a key aval (``key<fry>``); raises for an unsupported impl."""
    impl = jax_compat.key_impl(aval.dtype)
    name = f"key<{impl.tag}>"
    if not ir.dtypes.is_key_dtype(name):
        raise ir.UnsupportedDtypeError(
            f"partir cannot represent a value of type {aval}: its keys use the {impl.name!r} "
            f"implementation, and {MSG_KEY_IMPL}. Make the keys with "
            "jax.random.key(seed, impl='threefry2x32')."
        )
    return name


def key_data_type(key_type: Any) -> Any:
    """The IR type of a key-typed value's data: ``key<fry>[4]`` -> ``u32[4, 2]``."""
    data = ir.dtypes.KEY_DTYPES[ir.dtype_of(key_type)]
    return ir.tensor_type((*ir.shape_of(key_type), *data), "uint32")


def impl_param(dtype_name: str) -> tuple[tuple[str, Any], ...]:
    """The parameters of a `random_wrap` to `dtype_name` keys, as the IR stores them."""
    assert dtype_name == "key<fry>", dtype_name
    return (("impl", ir.EnumValue("PRNGImpl", "threefry2x32")),)


def _spec(aval: Any) -> tuple[tuple[int, ...], Any]:
    return tuple(aval.shape), aval.dtype


def physical_jaxpr(primitive: str, params: dict[str, Any], in_avals: list[Any]) -> Any:
    """The closed jaxpr of `primitive` on key data (see the module docstring)."""
    hashable = tuple(sorted((k, v) for k, v in params.items() if k != "impl"))
    impl = params.get("impl")
    return _physical_jaxpr(
        primitive,
        hashable,
        impl,
        tuple(_spec(a) for a in in_avals),
        jax_compat.threefry_partitionable(),
    )


@functools.cache
def _physical_jaxpr(
    primitive: str, params: tuple, impl: Any, specs: tuple, partitionable: bool
) -> Any:
    del partitionable  # a cache key only: the flag changes what the impl traces to
    avals = [jax.ShapeDtypeStruct(shape, dtype) for shape, dtype in specs]
    fn = jax_compat.physical_random_fn(primitive, {**dict(params), "impl": impl}, avals)
    if primitive == "random_seed":
        phys = avals
    else:
        key, *rest = avals
        data_shape = (*key.shape, *jax_compat.key_impl(key.dtype).key_shape)
        phys = [jax.ShapeDtypeStruct(data_shape, jnp.uint32), *rest]
    return jax.make_jaxpr(fn)(*phys)


def has_local_counters(shape: tuple[int, ...]) -> bool:
    """Whether `iota_2x32_shape` of `shape` is rewritten by `counters_jaxpr`."""
    return math.prod(shape) < _COUNTER_LIMIT


@functools.cache
def counters_jaxpr(shape: tuple[int, ...]) -> Any:
    """`iota_2x32_shape(shape)` (each element's row-major index as (high, low) uint32
    words) as a sum of broadcast 1-D iotas, for outputs of fewer than 2**32 elements.

    JAX lowers `iota_2x32_shape` to a sum of uint64 iotas times the strides; below 2**32
    elements the high word is zero and the low word is the same sum in uint32, so the values
    are identical. Each 1-D iota is broadcast along one dimension: tiled on any dimension,
    a device computes its own tile from a slice of a tiny iota, no communication.
    """
    assert has_local_counters(shape), shape
    strides = [math.prod(shape[d + 1 :]) for d in range(len(shape))]

    def counters() -> tuple[jax.Array, jax.Array]:
        low: jax.Array | None = None
        for d, (size, stride) in enumerate(zip(shape, strides, strict=True)):
            if size == 1:
                continue  # index 0 along this dim: contributes nothing
            index = jax.lax.iota(jnp.uint32, size)
            if stride != 1:
                index = index * np.uint32(stride)
            term = jax.lax.broadcast_in_dim(index, shape, (d,))
            low = term if low is None else low + term
        high = jnp.zeros(shape, jnp.uint32)
        return high, high if low is None else low

    return jax.make_jaxpr(counters)()


def key_constant_data(value: Any) -> np.ndarray:
    """The ``uint32`` data of a closed-over key array constant."""
    return np.asarray(jax.random.key_data(value))
