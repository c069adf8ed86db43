"""The pipelined loop a `PipelinePartition` scan runs as (docs/pipeline.md, "Emission").

`partir.tactics.pipeline` marks each layer scan with a ``partir.pipeline`` attribute (the
spec, and per block argument and yield its batch dim or INVARIANT / ACCUMULATED) and each
body op with ``partir.mb`` (its results' batch dims). Here the scan runs as a loop of
``R*M + P - 1`` ticks over a ``[P, ...]`` state with one row per stage: on tick t the stage
at pipeline position q works on iteration i = t - q (microbatch i mod M, repeat i // M),
applying its chunk of L/(P*R) layers (an inner `lax.scan` of the body run on microbatch
shapes), and the rows shift one stage on (`jnp.roll` on the stage-sharded dim, which XLA
turns into a collective-permute: GSPMD, arXiv 2105.04663 §3.3). A reverse (transposed)
scan runs the stages in the other order. Stage s holds layer chunks s, s+P, ... (chunk c
is layers c*Lc ... (c+1)*Lc - 1); with R = 1 that is the contiguous block of L/P layers its
dim-0 shard of the stacked weights already is.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec
from xdsl.ir import Block

from partir import ir
from partir.backend import evaluate, jax_compat
from partir.backend.primitives import lookup_primitive
from partir.errors import TacticError
from partir.ir.attrs import ACCUMULATED, MB_ATTR, PIPELINE_ATTR

Constrain = Callable[[Any], Any]
"""Lays a ``[P, ...]`` per-stage array out on the stage axis (annotate mode), or not."""


def is_pipelined(op: Any) -> bool:
    """Whether `op` is a layer scan the backend runs as a pipelined loop."""
    return isinstance(op, ir.ScanOp) and PIPELINE_ATTR in op.attributes


def spec_of(op: ir.ScanOp) -> dict[str, Any]:
    """The pipeline attribute of a marked scan, decoded."""
    return json.loads(op.attributes[PIPELINE_ATTR].data)  # type: ignore[attr-defined]


# -- the body on microbatch shapes -----------------------------------------------------------


def _shrunk(shape: Sequence[int], dim: int, m: int) -> tuple[int, ...]:
    out = list(shape)
    if dim >= 0:
        out[dim] //= m
    return tuple(out)


def _bind_micro(op: ir.PrimOp, args: list[Any], m: int) -> list[Any]:
    """Bind `op` on microbatch operands, its shape-valued parameters rewritten to match
    (the same rewrite lowering makes for device-local shapes, `passes/localize.py`)."""
    dims = json.loads(op.attributes[MB_ATTR].data) if MB_ATTR in op.attributes else []  # type: ignore[attr-defined]
    if all(d < 0 for d in dims) and all(
        tuple(a.shape) == ir.shape_of(t) for a, t in zip(args, op.operand_types, strict=True)
    ):
        return evaluate.evaluate_op(op, args)
    if op.primitive_name == "sharding_constraint":
        return list(args)
    params = evaluate.decode_params(op)
    results = [_shrunk(ir.shape_of(t), d, m) for t, d in zip(op.result_types, dims, strict=True)]
    name = op.primitive_name
    if name in ("broadcast_in_dim", "iota"):
        params["shape"] = results[0]
    elif name == "reshape":
        params["new_sizes"] = results[0]
    elif name in ("dynamic_slice", "gather", "slice"):
        key = "limit_indices" if name == "slice" else "slice_sizes"
        full = ir.shape_of(op.operand_types[0])
        params[key] = tuple(
            local if size == whole else size
            for size, whole, local in zip(params[key], full, args[0].shape, strict=True)
        )
    prim = lookup_primitive(name)
    out = prim.bind(*args, **params)
    return list(out) if prim.multiple_results else [out]


def _micro_block(block: Block, args: Sequence[Any], m: int, prepare: Callable) -> list[Any]:
    env: dict[Any, Any] = dict(zip(block.args, args, strict=True))
    for op in block.ops:
        if isinstance(op, ir.YieldOp):
            return [env[v] for v in op.operands]
        operands = [env[v] for v in op.operands]
        if isinstance(op, ir.PrimOp):
            outs = _bind_micro(op, prepare(operands), m)
        else:
            outs = evaluate.evaluate_op(op, operands)
        for result, value in zip(op.results, outs, strict=True):
            env[result] = value
    raise ValueError("block has no terminator")


# -- layouts ---------------------------------------------------------------------------------


def split_batch(x: Any, dim: int, m: int) -> Any:
    """``[..., B, ...]`` -> ``[M, ..., B/M, ...]``; microbatch k is rows k, k+M, ... (so a
    batch tiled contiguously over a data axis keeps every microbatch spread over it)."""
    shape = list(x.shape)
    x = x.reshape(*shape[:dim], shape[dim] // m, m, *shape[dim + 1 :])
    return jnp.moveaxis(x, dim + 1, 0)


def merge_batch(x: Any, dim: int) -> Any:
    """The inverse of `split_batch`: ``[M, ..., B/M at dim, ...]`` -> ``[..., B, ...]``."""
    x = jnp.moveaxis(x, 0, dim + 1)
    shape = list(x.shape)
    return x.reshape(*shape[:dim], shape[dim] * shape[dim + 1], *shape[dim + 2 :])


def to_stages(x: Any, p: int, r: int) -> Any:
    """Stacked ``[L, ...]`` -> ``[P, R, L/(P*R), ...]``: stage s, repeat j holds chunk j*P + s."""
    lc = x.shape[0] // (p * r)
    return jnp.swapaxes(x.reshape(r, p, lc, *x.shape[1:]), 0, 1)


def from_stages(x: Any) -> Any:
    """The inverse of `to_stages`."""
    p, r, lc = x.shape[:3]
    return jnp.swapaxes(x, 0, 1).reshape(r * p * lc, *x.shape[3:])


# -- the loop (global view: every stage a row of a [P, ...] array) ---------------------------


def _tick_indices(t: Any, position: Any, m: int, r: int, reverse: bool) -> tuple:
    """On tick `t`, at pipeline `position`: whether the iteration is real, its microbatch,
    its repeat's layer chunk, and the microbatch entering the first stage."""
    i = t - position
    ic = jnp.clip(i, 0, r * m - 1)
    rep = ic // m
    entering = jnp.clip(t, 0, r * m - 1) % m
    return (i >= 0) & (i < r * m), ic % m, (r - 1 - rep) if reverse else rep, entering


def _loop_shape(op: ir.ScanOp) -> tuple[int, bool, list[int], Block, int]:
    """(carries, reverse, per-yield batch dims, body, ticks) of a marked scan's loop."""
    spec = spec_of(op)
    ticks = spec["repeats"] * spec["microbatches"] + spec["stages"] - 1
    return (
        op.params["num_carry"],
        bool(op.params["reverse"]),
        spec["yields"],
        op.bodies[0].block,
        ticks,
    )


def _operand_groups(op: ir.ScanOp, args: Sequence[Any]) -> tuple[tuple, tuple]:
    """(consts, carries, xs) of `args` and the same split of their batch dims."""
    nc, nk, dims = op.params["num_consts"], op.params["num_carry"], spec_of(op)["args"]

    def cut(v: Sequence[Any]) -> tuple[list[Any], list[Any], list[Any]]:
        return list(v[:nc]), list(v[nc : nc + nk]), list(v[nc + nk :])

    return cut(args), cut(dims)


def run_global(op: ir.ScanOp, args: list[Any], constrain: Constrain = lambda x: x) -> list[Any]:
    """Run a marked scan on global values as the pipelined loop (annotate mode).

    Per-stage arrays have the stage dim first and go through `constrain`, which lays them
    out on the stage axis; the shift is a `jnp.roll` over it."""
    spec = spec_of(op)
    p, m, r = spec["stages"], spec["microbatches"], spec["repeats"]
    nk, reverse, y_dims, block, ticks = _loop_shape(op)
    (consts, init, xs), (c_dims, k_dims, x_dims) = _operand_groups(op, args)

    # microbatched inputs: consts [M, ...] or whole; xs [P, R, Lc, (M,) ...]
    consts_mb = [split_batch(c, d, m) if d >= 0 else c for c, d in zip(consts, c_dims, strict=True)]
    xs_st = []
    for x, d in zip(xs, x_dims, strict=True):
        st = to_stages(x, p, r)
        if d >= 0:
            st = jnp.moveaxis(split_batch(st, d + 3, m), 0, 3)
        xs_st.append(constrain(st))
    io = [split_batch(c, d, m) for c, d in zip(init, k_dims, strict=True)]
    state = [constrain(jnp.zeros((p, *c.shape[1:]), c.dtype)) for c in io]

    stage_ids = jnp.arange(p)
    position = (p - 1 - stage_ids) if reverse else stage_ids
    first, last = (p - 1, 0) if reverse else (0, p - 1)

    def body_fn(carry_in: list[Any], consts_s: list[Any], xs_s: list[Any]) -> tuple:
        def layer(carry: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
            outs = _micro_block(block, [*consts_s, *carry, *x], m, lambda a: a)
            return outs[:nk], outs[nk:]

        return jax.lax.scan(layer, carry_in, xs_s, reverse=reverse)

    shapes = jax.eval_shape(
        lambda: body_fn(
            [c[0] for c in io],
            [c[0] if d >= 0 else c for c, d in zip(consts_mb, c_dims, strict=True)],
            [x[0, 0] if d < 0 else x[0, 0, :, 0] for x, d in zip(xs_st, x_dims, strict=True)],
        )
    )[1]
    ybuf = []
    for s, d in zip(shapes, y_dims[nk:], strict=True):
        lc = s.shape[0]
        rest = s.shape[1:]
        shape = (p, r, lc, m, *rest) if d >= 0 else (p, r, lc, *rest)
        ybuf.append(constrain(jnp.zeros(shape, s.dtype)))

    def tick(loop: tuple, t: Any) -> tuple:
        io, state, ybuf = loop
        valid, mb, rep_layer, entering = _tick_indices(t, position, m, r, reverse)
        carry_in = [
            jnp.where(
                (stage_ids == first).reshape(-1, *([1] * (s.ndim - 1))),
                jnp.broadcast_to(jax.lax.dynamic_index_in_dim(b, entering, 0, False), s.shape),
                s,
            )
            for b, s in zip(io, state, strict=True)
        ]

        def one_stage(carry_s: list[Any], mb_s: Any, rep_s: Any, xs_all: list[Any]) -> tuple:
            consts_s = [
                jax.lax.dynamic_index_in_dim(c, mb_s, 0, False) if d >= 0 else c
                for c, d in zip(consts_mb, c_dims, strict=True)
            ]
            xs_s = []
            for x, d in zip(xs_all, x_dims, strict=True):
                x = jax.lax.dynamic_index_in_dim(x, rep_s, 0, False)
                if d >= 0:
                    x = jax.lax.dynamic_index_in_dim(x, mb_s, 1, False)
                xs_s.append(x)
            return body_fn(carry_s, consts_s, xs_s)

        carry_out, ys = jax.vmap(one_stage)(carry_in, mb, rep_layer, xs_st)
        carry_out = [constrain(c) for c in carry_out]
        leaving = jnp.clip(t - (p - 1), 0, r * m - 1) % m
        done = valid[last]
        io = [
            jnp.where(done, jax.lax.dynamic_update_index_in_dim(b, c[last], leaving, 0), b)
            for b, c in zip(io, carry_out, strict=True)
        ]
        ybuf = [
            constrain(
                jax.vmap(_write_y, in_axes=(0, 0, 0, 0, 0, None))(buf, y, rep_layer, mb, valid, d)
            )
            for buf, y, d in zip(ybuf, ys, y_dims[nk:], strict=True)
        ]
        # the shift: stage s receives what its predecessor made (a collective-permute)
        state = [constrain(jnp.roll(c, -1 if reverse else 1, axis=0)) for c in carry_out]
        return (io, state, ybuf), None

    (io, _, ybuf), _ = jax.lax.scan(tick, (io, state, ybuf), jnp.arange(ticks))
    carries = [merge_batch(b, d) for b, d in zip(io, k_dims, strict=True)]
    outs = []
    for buf, d in zip(ybuf, y_dims[nk:], strict=True):
        if d >= 0:
            buf = merge_batch(jnp.moveaxis(buf, 3, 0), d + 3)
        outs.append(from_stages(buf))
    return [*carries, *outs]


def _write_y(buf: Any, y: Any, rep: Any, mb: Any, valid: Any, dim: int) -> Any:
    """One stage's ys of one tick into its ``[R, Lc, (M,) ...]`` buffer."""
    row = jax.lax.dynamic_index_in_dim(buf, rep, 0, False)
    if dim >= 0:
        new = jax.lax.dynamic_update_index_in_dim(row, y, mb, 1)
    elif dim == ACCUMULATED:
        new = row + y
    else:
        new = y
    return jax.lax.dynamic_update_index_in_dim(buf, jnp.where(valid, new, row), rep, 0)


def run_annotated(op: ir.ScanOp, args: list[Any], constraints: Mapping[Any, Any]) -> list[Any]:
    """`run_global` with every per-stage array constrained to the stage axis on its dim 0
    (its other dims left to XLA); the mesh is the one the plan's constraints are on."""
    axis = spec_of(op)["axis"]
    nc, nk = op.params["num_consts"], op.params["num_carry"]
    stacked = [constraints.get(x) for x in list(op.args)[nc + nk :]]
    if not all(s is not None and s.spec[:1] == (axis,) for s in stacked):
        # a plan of this program without the pipeline (the mark is on the traced op)
        return evaluate.evaluate_op(op, args)
    mesh = stacked[0].mesh  # type: ignore[union-attr]

    def constrain(x: Any) -> Any:
        spec = PartitionSpec(axis, *([PartitionSpec.UNCONSTRAINED] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))

    return run_global(op, args, constrain)


# -- the loop (device-local view: spmd mode, one stage per device) ---------------------------


def run_local(
    op: ir.ScanOp,
    args: list[Any],
    sizes: dict[str, int],
    collective: Callable[[Any, Any, dict[str, int]], Any],
    prepare: Callable[[list[Any]], list[Any]],
) -> list[Any]:
    """Run a marked, lowered scan on one device's values inside spmd mode's `shard_map`.

    The stacked operands arrive as this stage's contiguous L/P layers (under the circular
    schedule an all-to-all on the stage axis first moves them to chunks s, s+P, ...), the
    carries whole on the stage axis. Each tick runs this stage's iteration and a
    `ppermute` over the stage axis hands the activation on (round the ring under the
    circular schedule: stage 0 keeps what comes back until its next repeat); at the end
    the last stage's results reach every stage (a `psum` of them and zeros), as the
    carries' replicated layout needs."""
    spec = spec_of(op)
    axis, p, m, r = spec["axis"], spec["stages"], spec["microbatches"], spec["repeats"]
    if r > 1 and r % p:
        raise TacticError(
            f"PipelinePartition(axis={axis!r}, schedule='circular', repeats={r}) in "
            f"mode='spmd' needs repeats divisible by the {p} stages: one all-to-all then "
            "moves each stage's contiguous layers to its chunks s, s+P, ... "
            "(docs/pipeline.md). Use such repeats or mode='annotate'."
        )
    nk, reverse, y_dims, block, ticks = _loop_shape(op)
    (consts, init, xs), (c_dims, k_dims, x_dims) = _operand_groups(op, args)
    stage = jax.lax.axis_index(axis)
    position = (p - 1 - stage) if reverse else stage
    step = -1 if reverse else 1
    ring = r > 1
    pairs = [(s, (s + step) % p) for s in range(p) if ring or 0 <= s + step < p]

    def run_body(b: Block, a: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = dict(zip(b.args, a, strict=True))
        for o in b.ops:
            if isinstance(o, ir.YieldOp):
                return [env[v] for v in o.operands]
            if isinstance(o, ir.CollectiveOp):
                outs = [collective(o, env[o.input], sizes)]
            elif isinstance(o, ir.PrimOp):
                outs = _bind_micro(o, prepare([env[v] for v in o.operands]), m)
            else:
                outs = evaluate.evaluate_op(o, [env[v] for v in o.operands])
            for res, val in zip(o.results, outs, strict=True):
                env[res] = val
        raise ValueError("block has no terminator")

    consts_mb = [split_batch(c, d, m) if d >= 0 else c for c, d in zip(consts, c_dims, strict=True)]
    xs_mb = []
    for x, d in zip(xs, x_dims, strict=True):
        x = _to_chunks(x, axis, p, r)  # [R, Lc, ...]
        xs_mb.append(jnp.moveaxis(split_batch(x, d + 2, m), 0, 2) if d >= 0 else x)

    def stage_step(carry: list[Any], rep: Any, mb: Any) -> tuple[list[Any], list[Any]]:
        consts_s = [
            jax.lax.dynamic_index_in_dim(c, mb, 0, False) if d >= 0 else c
            for c, d in zip(consts_mb, c_dims, strict=True)
        ]
        xs_s = []
        for x, d in zip(xs_mb, x_dims, strict=True):
            x = jax.lax.dynamic_index_in_dim(x, rep, 0, False)
            xs_s.append(jax.lax.dynamic_index_in_dim(x, mb, 1, False) if d >= 0 else x)

        def layer(c: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
            outs = run_body(block, [*consts_s, *c, *x])
            return outs[:nk], outs[nk:]

        inner = evaluate._carry_variance(
            lambda c: layer(c, [x[0] for x in xs_s])[0], carry, [*consts_s, *xs_s, *carry]
        )

        def cast_layer(c: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
            new, ys = layer(c, x)
            return [jax_compat.vary_over(v, a) for v, a in zip(new, inner, strict=True)], ys

        carry = [jax_compat.vary_over(v, a) for v, a in zip(carry, inner, strict=True)]
        return jax.lax.scan(cast_layer, carry, xs_s, reverse=reverse)

    io = [split_batch(c, d, m) for c, d in zip(init, k_dims, strict=True)]
    shapes = jax.eval_shape(lambda: stage_step([b[0] for b in io], 0, 0))[1]
    ybuf = [
        jnp.zeros((r, s.shape[0], m, *s.shape[1:]) if d >= 0 else (r, *s.shape), s.dtype)
        for s, d in zip(shapes, y_dims[nk:], strict=True)
    ]
    state = [b[0] for b in io]

    def tick(loop: list[Any], t: Any) -> list[Any]:
        io, state, ybuf = loop[:nk], loop[nk : 2 * nk], loop[2 * nk :]
        if ring:  # what came back round the ring waits in io for its next repeat
            back = t - p
            keep = (position == 0) & (back >= 0) & (back < (r - 1) * m)
            io = [
                jnp.where(keep, jax.lax.dynamic_update_index_in_dim(b, s, back % m, 0), b)
                for b, s in zip(io, state, strict=True)
            ]
        valid, mb, rep_layer, entering = _tick_indices(t, position, m, r, reverse)
        carry_in = [
            jnp.where(position == 0, jax.lax.dynamic_index_in_dim(b, entering, 0, False), s)
            for b, s in zip(io, state, strict=True)
        ]
        carry_out, ys = stage_step(carry_in, rep_layer, mb)
        done = valid & (position == p - 1)
        io = [
            jnp.where(done, jax.lax.dynamic_update_index_in_dim(b, c, mb, 0), b)
            for b, c in zip(io, carry_out, strict=True)
        ]
        ybuf = [
            _write_y(buf, y, rep_layer, mb, valid, d)
            for buf, y, d in zip(ybuf, ys, y_dims[nk:], strict=True)
        ]
        # the shift: this stage's activation to the next stage on the stage axis
        state = [jax.lax.ppermute(c, axis, perm=pairs) for c in carry_out]
        return [*io, *state, *ybuf]

    init_loop = [*io, *state, *ybuf]
    vma = evaluate._carry_variance(lambda c: tick(c, jnp.int32(0)), init_loop, [*args, stage])

    def cast(values: list[Any]) -> list[Any]:
        return [jax_compat.vary_over(v, a) for v, a in zip(values, vma, strict=True)]

    final, _ = jax.lax.scan(
        lambda c, t: (cast(tick(c, t)), None), cast(init_loop), jnp.arange(ticks)
    )
    io, ybuf = final[:nk], final[2 * nk :]
    last = position == p - 1
    carries = [
        merge_batch(jax.lax.psum(jnp.where(last, b, jnp.zeros_like(b)), axis), d)
        for b, d in zip(io, k_dims, strict=True)
    ]
    outs = []
    for buf, d in zip(ybuf, y_dims[nk:], strict=True):
        if d >= 0:
            buf = merge_batch(jnp.moveaxis(buf, 2, 0), d + 2)
        outs.append(_from_chunks(buf, axis, p, r))
    return [*carries, *outs]


def _to_chunks(x: Any, axis: str, p: int, r: int) -> Any:
    """This stage's contiguous ``[R*Lc, ...]`` layers -> its chunks ``[R, Lc, ...]`` of the
    circular schedule (slot j: chunk j*P + s), by one all-to-all on the stage axis
    (R = k*P: local chunk b1*P + b2 goes to stage b2, slot a*k + b1 from stage a)."""
    lc = x.shape[0] // r
    if r == 1:
        return x.reshape(1, lc, *x.shape[1:])
    k = r // p
    x = x.reshape(k, p, lc, *x.shape[1:])
    x = jax.lax.all_to_all(x, axis, split_axis=1, concat_axis=1, tiled=True)
    return jnp.swapaxes(x, 0, 1).reshape(r, lc, *x.shape[3:])


def _from_chunks(x: Any, axis: str, p: int, r: int) -> Any:
    """The inverse of `_to_chunks`: ``[R, Lc, ...]`` -> ``[R*Lc, ...]``."""
    lc = x.shape[1]
    if r == 1:
        return x.reshape(lc, *x.shape[2:])
    k = r // p
    x = jnp.swapaxes(x.reshape(p, k, lc, *x.shape[2:]), 0, 1)
    x = jax.lax.all_to_all(x, axis, split_axis=1, concat_axis=1, tiled=True)
    return x.reshape(r * lc, *x.shape[3:])


def loop_collectives(
    op: ir.ScanOp,
) -> list[tuple[str, tuple[str, ...], str, tuple[int, ...], int, str]]:
    """The collectives `run_local` adds for a marked, lowered scan: per carry a
    collective-permute on the stage axis every tick (one microbatch's activation) and
    an all-reduce on it at the end (the last stage's results to every stage), as
    ``(kind, axes, dtype, per-device shape, bytes, reason)``."""
    spec = spec_of(op)
    axis, p, m = spec["axis"], spec["stages"], spec["microbatches"]
    nc, nk = op.params["num_consts"], op.params["num_carry"]
    ticks = spec["repeats"] * m + p - 1
    out: list[tuple[str, tuple[str, ...], str, tuple[int, ...], int, str]] = []
    for k, carry in enumerate(list(op.args)[nc : nc + nk]):
        full = ir.shape_of(carry.type)
        dtype = ir.dtype_of(carry.type)
        shape = _shrunk(full, spec["args"][nc + k], m)
        n = ir.ITEMSIZE[dtype]
        out.append(
            (
                "collective_permute",
                (axis,),
                dtype,
                shape,
                math.prod(shape) * n,
                f"carry {k} of the pipelined scan, once per tick ({ticks} ticks)",
            )
        )
        out.append(
            (
                "all_reduce",
                (axis,),
                dtype,
                full,
                math.prod(full) * n,
                f"carry {k} of the pipelined scan: the last stage's results to every stage",
            )
        )
    if spec["repeats"] > 1:  # the circular schedule's chunks in, and its ys back
        stacked = [*list(op.args)[nc + nk :], *list(op.outs)[nk:]]
        for k, value in enumerate(stacked):
            shape, dtype = ir.shape_of(value.type), ir.dtype_of(value.type)
            side = "operand" if k < len(op.args) - nc - nk else "result"
            out.append(
                (
                    "all_to_all",
                    (axis,),
                    dtype,
                    shape,
                    math.prod(shape) * ir.ITEMSIZE[dtype],
                    f"stacked {side} of the pipelined scan to/from the circular chunks",
                )
            )
    return out


def microbatch_shape(op: Any) -> tuple[int, ...] | None:
    """The per-device shape a collective in a marked scan's body runs on (its batch dim
    cut to one microbatch), or None for a collective outside a pipelined body."""
    scan = op.parent_op()
    if not is_pipelined(scan):
        return None
    spec = spec_of(scan)
    value, dim = op.input, -1
    while True:
        owner = value.owner
        if isinstance(owner, ir.CollectiveOp):  # a collective keeps its operand's dims
            value = owner.input
        elif isinstance(owner, Block):
            dim = spec["args"][value.index] if owner is scan.bodies[0].block else -1
            break
        else:
            attr = owner.attributes.get(MB_ATTR)
            dim = json.loads(attr.data)[value.index] if attr is not None else -1
            break
    return _shrunk(ir.shape_of(op.result.type), dim, spec["microbatches"])
