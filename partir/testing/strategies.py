"""Hypothesis strategies that draw random JAX programs and device meshes.

`programs()` draws a `RandomProgram`: named inputs, a DAG of `OpSpec` steps and the value ids it
returns. Programs are *constructed*, not filtered: each op generator (registered with
`register_op`) looks at the pool of values defined so far and draws an application valid for it,
choosing operands whose shapes fit, or reshaping/broadcasting them so they do.

Invariants every generator keeps, so that properties can compare numerics with tight tolerances:

* float values are float32 with ``|v| <= 1``: inputs are uniform in [-1, 1] and every op maps
  that range into itself (sums are averaged, dot products scaled and squashed with tanh, ...);
* int values are int32 and non-negative (int inputs lie in ``[0, INT_INPUT_HIGH)``); an int used
  as an index is brought into range with ``rem``;
* every value has rank <= `MAX_RANK` and at most `MAX_ELEMENTS` elements; every input dimension
  is a multiple of ``dim_multiple`` and inputs have at most `MAX_INPUT_ELEMENTS` elements.

A few ops are discontinuous (argmax, comparisons, float->int casts, bf16 rounding): a partitioned
program that reassociates a sum can, rarely, land on the other side of a boundary.

`meshes()` draws mesh axes such as ``(("a", 2), ("b", 4))``.

`schedules()` draws a list of `ManualPartition` tactics for a program and a mesh.

`targeted_programs()` draws programs that apply every ``aim_*`` generator (defined here) once:
each builds, along every dim of its operand, a pattern where one wrong rule, propagation step or
collective rewrite gives wrong numbers in spmd mode (`AIMED_OPS`).

The code lives in private modules: `_program_core` (`RandomProgram`, `OpSpec`, the registry and
the generators' helpers), `_program_ops` (the basic generators) and `_program_rules` (generators
aimed at delicate sharding rules: partial sums feeding products, scatters, reversals, sorts,
region ops); importing this module registers them all.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
from hypothesis import strategies as st
from jax import lax

from partir.testing import _program_ops as _program_ops  # registers the op generators
from partir.testing import _program_rules as _program_rules  # and those aimed at the rules
from partir.testing._program_core import AXIS_NAMES as AXIS_NAMES
from partir.testing._program_core import F32 as F32
from partir.testing._program_core import I32 as I32
from partir.testing._program_core import INT_INPUT_HIGH as INT_INPUT_HIGH
from partir.testing._program_core import MAX_ELEMENTS as MAX_ELEMENTS
from partir.testing._program_core import MAX_INPUT_ELEMENTS as MAX_INPUT_ELEMENTS
from partir.testing._program_core import MAX_RANK as MAX_RANK
from partir.testing._program_core import OP_GENERATORS as OP_GENERATORS
from partir.testing._program_core import Draw as Draw
from partir.testing._program_core import OpGenerator as OpGenerator
from partir.testing._program_core import OpSpec as OpSpec
from partir.testing._program_core import Pool as Pool
from partir.testing._program_core import RandomProgram as RandomProgram
from partir.testing._program_core import Ref as Ref
from partir.testing._program_core import Shape as Shape
from partir.testing._program_core import _ids, _operand, _size
from partir.testing._program_core import primitive_names as primitive_names
from partir.testing._program_core import register_op as register_op

# ------------------------------------------------------------------ aimed at the rules
# Generators named ``aim_*``: each builds a pattern that gives wrong numbers in spmd mode when
# one rule, propagation step or collective rewrite is wrong, and builds it along *every* dim
# of its operand (or over all of them), so that whichever dim a schedule shards the pattern is
# exposed. The ``_program_rules`` generators each use one drawn dim, which a schedule shards
# one time in ``rank``.


_SQUARE_MAX = 64


def _all_but(x: Any, d: int) -> tuple[int, ...]:
    return tuple(k for k in range(x.ndim) if k != d)


def _mean_all(x: Any) -> Any:
    return lax.reduce_sum(x, tuple(range(x.ndim))) * (1 / max(1, x.size))


def _sum_all(x: Any, scale: float = 1.0) -> Any:
    # scaled before the reduction: a pending sum reaches its consumer as the reduction's own
    # result (a mul by a constant in between would reduce it there)
    return lax.reduce_sum(x * scale, tuple(range(x.ndim)))


# pending reductions of x over every dim (pending wherever x is sharded) meeting an op they
# must not flow through. In "skewed_product" one sum is an op further from x than the other:
# the nearer one turns pending and flows through the mul first, so lowering must reduce the
# later one before the product (tests/passes/test_mutant_kills.py has the fixed case).
_PENDING = {
    "product": lambda x, y: _sum_all(lax.cos(x), 1 / x.size) * _sum_all(lax.sin(x), 1 / x.size),
    "skewed_product": lambda x, y: (
        _sum_all(x, 1 / x.size) * _sum_all(lax.sin(lax.cos(y)), 1 / y.size)
    ),
    "divisor": lambda x, y: x * 0.5 / _sum_all(y * y + 1.0, 1 / y.size),
    "max_linear": lambda x, y: (
        (
            lax.neg(lax.reduce_max(x, tuple(range(x.ndim))))
            + lax.reduce_max(y * 0.5, tuple(range(y.ndim)))
        )
        * 0.5
    ),
    "min_linear": lambda x, y: (
        (lax.reduce_min(x, tuple(range(x.ndim))) - lax.reduce_min(lax.sin(y), tuple(range(y.ndim))))
        * 0.5
    ),
}


def _pending(how: str, doc: str):
    def gen(draw: Draw, pool: Pool):
        a, shape = _operand(draw, pool, min_rank=1)
        same = [i for i in _ids(pool, pred=lambda s: tuple(s) == shape) if i != a]
        b = draw(st.sampled_from([a, *same]))
        return (a, b), {}, lambda x, y: _PENDING[how](x, y)

    gen.__doc__ = doc
    return gen


# one generator per pattern, so that each is drawn as often as any other aimed generator
_aim_product = register_op("aim_product", primitives=("mul",))(
    _pending("product", "``mean(cos x) * mean(sin x)``: two pending sums multiplied.")
)
register_op("aim_skewed_product", primitives=("mul",))(
    _pending("skewed_product", "``mean(x) * mean(sin cos y)``: sums made at different depths.")
)
register_op("aim_divisor", primitives=("div",))(
    _pending("divisor", "``x / 2 / mean(y^2 + 1)``: a pending sum as divisor.")
)
register_op("aim_pending_max", primitives=("reduce_max", "neg"))(
    _pending("max_linear", "``(max(y / 2) - max(x)) / 2``: pending maxes through neg and add.")
)
register_op("aim_pending_min", primitives=("reduce_min", "sub"))(
    _pending("min_linear", "``(min(x) - min(sin y)) / 2``: pending mins through sub.")
)


def _non_involutive(rank: int) -> list[tuple[int, ...]]:
    ident = tuple(range(rank))
    return [p for p in itertools.permutations(ident) if tuple(p[p[k]] for k in ident) != ident]


@register_op("aim_transpose", primitives=("transpose",))
def _aim_transpose(draw: Draw, pool: Pool):
    """``transpose`` of a rank >= 3 value (lower ranks get leading unit dims) by a permutation
    that is not its own inverse, so reading it backwards moves a dim to the wrong place."""
    a, shape = _operand(draw, pool, min_rank=3)
    perm = draw(st.sampled_from(_non_involutive(len(shape))))
    return (a,), {"perm": perm}, lambda x, perm: lax.transpose(x, perm)


@register_op("aim_rev", primitives=("rev",))
def _aim_rev(draw: Draw, pool: Pool):
    """``rev`` along every dim of x: reversing any sharded dim moves data between devices."""
    a, _ = _operand(draw, pool, min_rank=1)
    return (a,), {}, lambda x: lax.rev(x, tuple(range(x.ndim)))


@register_op("aim_iota", primitives=("iota", "add"))
def _aim_iota(draw: Draw, pool: Pool):
    """``(x + mean_k(iota_k / n_k)) / 2``: an iota counting along every dim of x, each added to
    x, so the one counting along a sharded dim must count globally."""
    a, _ = _operand(draw, pool, min_rank=1)

    def apply(x):
        ramps = [
            lax.convert_element_type(lax.broadcasted_iota(I32, x.shape, k), F32) * (1 / n)
            for k, n in enumerate(x.shape)
        ]
        return (x + sum(ramps[1:], ramps[0]) * (1 / x.ndim)) * 0.5

    return (a,), {}, apply


@register_op("aim_scatter_add", primitives=("scatter-add",))
def _aim_scatter_add(draw: Draw, pool: Pool):
    """``base.at[i_0, ..., i_r-1].add(x) / (1 + m)``: every element of x added into a nonzero
    base at ``i_k = (c_k * iota_k + s_k) mod n_k``, so every dim of x is a scatter dim (a
    sum-reduce factor: sharded, the result is a pending sum and the base must be added once);
    m bounds how many updates meet at one element. The base, ``cos`` of a sum of iotas, is
    made from no operand: a base holding x's axis on a scattered dim would conflict with the
    updates, and the result would never be a pending sum."""
    a, shape = _operand(draw, pool, min_rank=1)
    coef = tuple(draw(st.sampled_from((1, 1, 2, 3))) for _ in shape)
    shift = tuple(draw(st.integers(0, n - 1)) for n in shape)

    def apply(x, *, coef, shift):
        ramps = [lax.broadcasted_iota(I32, x.shape, k) for k in range(x.ndim)]
        base = lax.cos(
            sum(
                (
                    lax.convert_element_type(r, F32) * (0.7 / n)
                    for r, n in zip(ramps, x.shape, strict=True)
                ),
                lax.full((), 0.3),
            )
        )
        idx = tuple(
            lax.rem(r * c + s, n) for r, n, c, s in zip(ramps, x.shape, coef, shift, strict=True)
        )
        meet = math.prod(math.gcd(c, n) for c, n in zip(coef, x.shape, strict=True))
        return base.at[idx].add(x) * (1 / (1 + meet))

    return (a,), {"coef": coef, "shift": shift}, apply


def _per_square_dim(draw: Draw, pool: Pool, term: Callable[[Any, int], Any]):
    """An op applying ``term(x, d)`` for every dim d of a drawn x small enough for an N x N
    intermediate, averaging the terms; `_aim_product` when no dim is small enough."""
    a, shape = _operand(draw, pool, min_rank=1)
    dims = tuple(d for d, n in enumerate(shape) if n <= _SQUARE_MAX)
    if not dims:
        return _aim_product(draw, pool)

    def apply(x, *, dims):
        terms = [term(x, d) for d in dims]
        return sum(terms[1:], terms[0]) * (1 / len(terms))

    return (a,), {"dims": dims}, apply


def _split_reduce_term(x, d):
    n = x.shape[d]
    xd = lax.reshape(lax.transpose(x, (d, *_all_but(x, d))), (n, x.size // n))
    v = lax.reduce_sum(xd, (1,)) * (1 / xd.shape[1])
    big = lax.broadcast_in_dim(v, (n, n), (0,))
    p = lax.dot_general(xd * (1 / n), big, (((0,), (0,)), ((), ())))
    tiled = p * lax.broadcast_in_dim(v, p.shape, (1,))
    summed = lax.reduce_sum(p, (1,)) * (1 / n)
    return (_mean_all(tiled) + _mean_all(summed)) * 0.5


@register_op("aim_split_reduce", primitives=())  # falls back to aim_product
def _aim_split_reduce(draw: Draw, pool: Pool):
    """For every dim d of x (size N, moved first and the rest flattened: X is N x R): the
    pending sum ``P = X^T B / N`` (B: the row means v of X broadcast to N x N) is used tiled
    like v, ``P * v``, and summed over that dim, ``mean_1(P)``: a reduced value feeding both a
    tiled use and a reduction over the tiled dim, which the collective optimizer splits into
    reduce_scatter + all_reduce. The result is the mean over d of both uses' means."""
    return _per_square_dim(draw, pool, _split_reduce_term)


def _outer_term(x, d):
    n = x.shape[d]
    v = lax.reduce_sum(x, _all_but(x, d)) * (1 / (x.size // n))
    outer = lax.broadcast_in_dim(v, (n, n), (0,)) * lax.broadcast_in_dim(lax.sin(v), (n, n), (1,))
    return _mean_all(outer)


@register_op("aim_outer", primitives=())  # falls back to aim_product
def _aim_outer(draw: Draw, pool: Pool):
    """For every dim d of x: the outer product of v (x's means over the other dims) with sin(v),
    whose two operands hold a sharded d's axis on different dims (a conflict the plan must
    record and resolve); the result is the mean over d of the products' means."""
    return _per_square_dim(draw, pool, _outer_term)


# ------------------------------------------------------------------ strategies


@st.composite
def _input_shape(draw: Draw, dim_multiple: int, max_rank: int, min_rank: int = 0) -> Shape:
    shape: list[int] = []
    for _ in range(draw(st.integers(min(min_rank, max_rank), max_rank))):
        opts = [k * dim_multiple for k in (1, 2, 3)]
        opts = [n for n in opts if _size(shape) * n <= MAX_INPUT_ELEMENTS]
        if not opts:
            break
        shape.append(draw(st.sampled_from(opts)))
    return tuple(shape)


@st.composite
def _programs(
    draw: Draw,
    max_inputs: int,
    max_ops: int,
    dim_multiple: int,
    names: list[str],
    min_rank: int,
    each_once: bool = False,
):
    inputs: dict[str, jax.ShapeDtypeStruct] = {}
    for k in range(draw(st.integers(1, max_inputs))):
        dtype = F32 if k == 0 else draw(st.sampled_from((F32, F32, F32, I32)))
        shape = draw(
            _input_shape(dim_multiple, MAX_RANK, min_rank)
            if dtype == F32
            else _input_shape(dim_multiple, 2)
        )
        inputs[f"x{k}"] = jax.ShapeDtypeStruct(shape, dtype)
    pool: Pool = list(inputs.values())
    ops: list[OpSpec] = []
    # each_once: every name once, in a drawn order (a program that reaches every pattern)
    order = draw(st.permutations(names)) if each_once else None
    for k in range(len(names) if each_once else draw(st.integers(1, max_ops))):
        name = order[k] if order is not None else draw(st.sampled_from(names))
        refs, params, apply = OP_GENERATORS[name].draw(draw, pool)
        ids = tuple(r if isinstance(r, int) else r[0] for r in refs)
        reshapes = tuple(None if isinstance(r, int) else tuple(r[1]) for r in refs)
        spec = OpSpec(name, ids, reshapes, tuple(sorted(params.items())), pool[0], apply)
        out = jax.eval_shape(spec, *(pool[i] for i in ids))
        assert _size(out.shape) <= MAX_ELEMENTS and len(out.shape) <= MAX_RANK, (name, out)
        pool.append(jax.ShapeDtypeStruct(out.shape, out.dtype))
        ops.append(dataclasses.replace(spec, out=pool[-1]))
    used = {i for op in ops for i in op.operands}
    sinks = [i for i in range(len(inputs), len(pool) - 1) if i not in used]
    if each_once:  # a value no one reads would be dead code: the pattern it holds unchecked
        extra = sinks
    else:
        extra = draw(st.lists(st.sampled_from(sinks), max_size=2, unique=True)) if sinks else []
    return RandomProgram(inputs, tuple(ops), (len(pool) - 1, *extra))


def programs(
    *,
    max_inputs: int = 3,
    max_ops: int = 8,
    dim_multiple: int = 1,
    ops: Sequence[str] | None = None,
    min_rank: int = 0,
) -> st.SearchStrategy[RandomProgram]:
    """Strategy drawing `RandomProgram`s.

    Args:
      max_inputs: at most this many inputs, at least 1. ``x0`` is float32; later inputs are
        float32 or, about one in four, an int32 index array of rank <= 2.
      max_ops: at most this many ops, at least 1.
      dim_multiple: every input dim is ``k * dim_multiple`` with k in {1, 2, 3}; pass the product
        of the mesh axis sizes to make every input dim divisible by every axis (and product).
      ops: names in `OP_GENERATORS` to draw ops from (default: all).
      min_rank: float inputs have at least this rank (where `MAX_INPUT_ELEMENTS` allows): a
        scalar input gives a schedule nothing to shard.
    """
    names = list(OP_GENERATORS) if ops is None else list(ops)
    unknown = [n for n in names if n not in OP_GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown or no op names {unknown}; registered: {sorted(OP_GENERATORS)}")
    if min(max_inputs, max_ops, dim_multiple) < 1:
        raise ValueError("max_inputs, max_ops and dim_multiple must be >= 1")
    if not 0 <= min_rank <= MAX_RANK:
        raise ValueError(f"min_rank must be in [0, {MAX_RANK}], got {min_rank}")
    return _programs(max_inputs, max_ops, dim_multiple, names, min_rank)


AIMED_OPS = tuple(n for n in OP_GENERATORS if n.startswith("aim_"))
"""The generators aimed at one bug each, along every dim of their operand (see above)."""


def targeted_programs(
    *, max_inputs: int = 2, dim_multiple: int = 1, ops: Sequence[str] = AIMED_OPS
) -> st.SearchStrategy[RandomProgram]:
    """Strategy drawing `RandomProgram`s that apply every generator in `ops` once, in a drawn
    order, to float inputs of rank >= 1 (and the values made so far), and return every value
    no op reads: each program reaches every pattern, and the schedule decides which dims of
    it are sharded. Arguments as for `programs`."""
    names = list(ops)
    unknown = [n for n in names if n not in OP_GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown or no op names {unknown}; registered: {sorted(OP_GENERATORS)}")
    if min(max_inputs, dim_multiple) < 1:
        raise ValueError("max_inputs and dim_multiple must be >= 1")
    return _programs(max_inputs, len(names), dim_multiple, names, 1, each_once=True)


@st.composite
def _meshes(draw: Draw, max_axes: int, sizes: tuple[int, ...], max_devices: int):
    names = draw(st.permutations(AXIS_NAMES))
    axes: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(1, max_axes))):
        opts = [s for s in sizes if _size(n for _, n in axes) * s <= max_devices]
        if not opts:
            break
        axes.append((names[len(axes)], draw(st.sampled_from(opts))))
    return tuple(axes)


def meshes(
    *, max_axes: int = 3, sizes: Sequence[int] = (1, 2, 4), max_devices: int = 8
) -> st.SearchStrategy[tuple[tuple[str, int], ...]]:
    """Strategy drawing mesh axes ``((name, size), ...)``, e.g. ``(("a", 2), ("b", 4))``.

    Args:
      max_axes: 1 to this many axes (at most ``len(AXIS_NAMES)``); fewer when no size fits.
      sizes: the axis sizes to draw from (the smallest must be <= max_devices).
      max_devices: the product of the axis sizes is at most this.
    Names are distinct, taken from `AXIS_NAMES` in a drawn order.
    """
    sizes = tuple(sorted(sizes))
    if not 1 <= max_axes <= len(AXIS_NAMES) or not sizes or not 1 <= sizes[0] <= max_devices:
        raise ValueError(
            f"bad mesh bounds: max_axes={max_axes} sizes={sizes} max_devices={max_devices}"
        )
    return _meshes(max_axes, sizes, max_devices)


@st.composite
def _schedules(
    draw: Draw,
    prog: RandomProgram,
    axes: tuple[tuple[str, int], ...],
    max_tactics: int,
    replicated: bool,
):
    import partir  # the API layer imports jax and the passes: only needed when drawing

    names = list(prog.inputs)
    schedule = []
    for _ in range(draw(st.integers(1, max_tactics))):
        # a repeated axis is drawn as often as a fresh one: two tactics on one axis may conflict
        axis = draw(st.sampled_from([a for a, _ in axes]))
        chosen = draw(
            st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True)
        )
        inputs: dict[str, Any] = {}
        for name in chosen:
            rank = len(prog.inputs[name].shape)
            # REPLICATED is one choice in about eight: a tactic should usually shard something
            dims: list[Any] = [*range(rank), *range(-rank, 0)] if rank else []
            options = [*dims, *dims] + ([partir.REPLICATED] if replicated or not dims else [])
            inputs[f"inputs/{name}"] = draw(st.sampled_from(options))
        schedule.append(partir.ManualPartition(inputs, axis=axis))
    return schedule


def schedules(
    prog: RandomProgram,
    axes: tuple[tuple[str, int], ...],
    *,
    max_tactics: int = 3,
    replicated: bool = True,
) -> st.SearchStrategy[list]:
    """Strategy drawing 1 to `max_tactics` `partir.ManualPartition` tactics for `prog` on a mesh
    with `axes`: each picks an axis (repeats allowed, so tactics may conflict) and shards a
    non-empty set of inputs, each on a drawn dim (negative dims too) or, rarely, REPLICATED
    (never for an input of rank >= 1 when `replicated` is False)."""
    if max_tactics < 1 or not axes:
        raise ValueError(f"need max_tactics >= 1 and a mesh axis, got {max_tactics}, {axes}")
    return _schedules(prog, axes, max_tactics, replicated)
