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

The code lives in private modules: `_program_core` (`RandomProgram`, `OpSpec`, the registry and
the generators' helpers), `_program_ops` (the basic generators) and `_program_rules` (generators
aimed at delicate sharding rules: partial sums feeding products, scatters, reversals, sorts,
region ops); importing this module registers them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
from hypothesis import strategies as st

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
from partir.testing._program_core import _size
from partir.testing._program_core import primitive_names as primitive_names
from partir.testing._program_core import register_op as register_op

# ------------------------------------------------------------------ strategies


@st.composite
def _input_shape(draw: Draw, dim_multiple: int, max_rank: int) -> Shape:
    shape: list[int] = []
    for _ in range(draw(st.integers(0, max_rank))):
        opts = [k * dim_multiple for k in (1, 2, 3)]
        opts = [n for n in opts if _size(shape) * n <= MAX_INPUT_ELEMENTS]
        if not opts:
            break
        shape.append(draw(st.sampled_from(opts)))
    return tuple(shape)


@st.composite
def _programs(draw: Draw, max_inputs: int, max_ops: int, dim_multiple: int, names: list[str]):
    inputs: dict[str, jax.ShapeDtypeStruct] = {}
    for k in range(draw(st.integers(1, max_inputs))):
        dtype = F32 if k == 0 else draw(st.sampled_from((F32, F32, F32, I32)))
        shape = draw(_input_shape(dim_multiple, MAX_RANK if dtype == F32 else 2))
        inputs[f"x{k}"] = jax.ShapeDtypeStruct(shape, dtype)
    pool: Pool = list(inputs.values())
    ops: list[OpSpec] = []
    for _ in range(draw(st.integers(1, max_ops))):
        name = draw(st.sampled_from(names))
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
    extra = draw(st.lists(st.sampled_from(sinks), max_size=2, unique=True)) if sinks else []
    return RandomProgram(inputs, tuple(ops), (len(pool) - 1, *extra))


def programs(
    *,
    max_inputs: int = 3,
    max_ops: int = 8,
    dim_multiple: int = 1,
    ops: Sequence[str] | None = None,
) -> st.SearchStrategy[RandomProgram]:
    """Strategy drawing `RandomProgram`s.

    Args:
      max_inputs: at most this many inputs, at least 1. ``x0`` is float32; later inputs are
        float32 or, about one in four, an int32 index array of rank <= 2.
      max_ops: at most this many ops, at least 1.
      dim_multiple: every input dim is ``k * dim_multiple`` with k in {1, 2, 3}; pass the product
        of the mesh axis sizes to make every input dim divisible by every axis (and product).
      ops: names in `OP_GENERATORS` to draw ops from (default: all).
    """
    names = list(OP_GENERATORS) if ops is None else list(ops)
    unknown = [n for n in names if n not in OP_GENERATORS]
    if unknown or not names:
        raise ValueError(f"unknown or no op names {unknown}; registered: {sorted(OP_GENERATORS)}")
    if min(max_inputs, max_ops, dim_multiple) < 1:
        raise ValueError("max_inputs, max_ops and dim_multiple must be >= 1")
    return _programs(max_inputs, max_ops, dim_multiple, names)


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
    draw: Draw, prog: RandomProgram, axes: tuple[tuple[str, int], ...], max_tactics: int
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
            options = [*dims, *dims, partir.REPLICATED] if dims else [partir.REPLICATED]
            inputs[f"inputs/{name}"] = draw(st.sampled_from(options))
        schedule.append(partir.ManualPartition(inputs, axis=axis))
    return schedule


def schedules(
    prog: RandomProgram, axes: tuple[tuple[str, int], ...], *, max_tactics: int = 3
) -> st.SearchStrategy[list]:
    """Strategy drawing 1 to `max_tactics` `partir.ManualPartition` tactics for `prog` on a mesh
    with `axes`: each picks an axis (repeats allowed, so tactics may conflict) and shards a
    non-empty set of inputs, each on a drawn dim (negative dims too) or, rarely, REPLICATED."""
    if max_tactics < 1 or not axes:
        raise ValueError(f"need max_tactics >= 1 and a mesh axis, got {max_tactics}, {axes}")
    return _schedules(prog, axes, max_tactics)
