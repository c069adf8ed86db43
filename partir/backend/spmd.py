"""spmd-mode emission: a `jax.shard_map` program that runs the device-local IR op by op.

Collectives map to `jax.lax`: all_gather -> `all_gather(tiled=True)`, all_reduce ->
`psum`/`pmax`/`pmin`, reduce_scatter -> `psum_scatter(tiled=True)`, all_to_all ->
`all_to_all(tiled=True)`, all_slice -> `axis_index` + `dynamic_slice`,
collective_permute -> `ppermute`. What runs is exactly what was planned.

Host callbacks (`io_callback`, `jax.debug.callback`, `jax.debug.print`) run once per call,
not once per device: lowering hands them whole (replicated) operands, and the emitter runs
them under a `lax.cond` on the first device of the mesh; an `io_callback`'s results reach
the other devices through a `psum` of that device's values and zeros (`docs/emission.md`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, NamedSharding
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation

from partir import ir
from partir.backend import evaluate, jax_compat, pipeline
from partir.backend.annotate import partition_spec
from partir.backend.jax_compat import use_abstract_mesh, varying_axes
from partir.backend.known import numpy_dtype
from partir.errors import ShardMapError
from partir.ir.locations import location_of


def _axis_names(axes: Sequence[str]) -> str | tuple[str, ...]:
    return axes[0] if len(axes) == 1 else tuple(axes)


def _linear_index(axes: Sequence[str], sizes: dict[str, int]) -> Any:
    index: Any = 0
    for axis in axes:
        index = index * sizes[axis] + jax.lax.axis_index(axis)
    return index


def _collective(op: Operation, x: Any, sizes: dict[str, int]) -> Any:
    axes = _axis_names(op.axis_names)  # type: ignore[attr-defined]
    if isinstance(op, ir.AllGatherOp):
        # every device of the group holds the same result: invariant over the gathered axes
        return jax.lax.all_gather(x, axes, axis=op.dim.data, tiled=True, to="invarying")
    if isinstance(op, ir.AllReduceOp):
        return {"sum": jax.lax.psum, "max": jax.lax.pmax, "min": jax.lax.pmin}[op.kind.data](
            x, axes
        )
    if isinstance(op, ir.ReduceScatterOp):
        if op.kind.data != "sum":
            raise NotImplementedError(f"reduce_scatter of kind {op.kind.data}")
        return jax.lax.psum_scatter(x, axes, scatter_dimension=op.dim.data, tiled=True)
    if isinstance(op, ir.AllToAllOp):
        return jax.lax.all_to_all(
            x, axes, split_axis=op.dst.data, concat_axis=op.src.data, tiled=True
        )
    if isinstance(op, ir.AllSliceOp):
        d = op.dim.data
        size = ir.shape_of(op.result.type)[d]
        start = _linear_index(op.axis_names, sizes) * size
        return jax.lax.dynamic_slice_in_dim(x, start, size, axis=d)
    if isinstance(op, ir.CollectivePermuteOp):
        pairs = [tuple(p.data[i].data for i in range(2)) for p in op.pairs.data] if op.pairs else []  # type: ignore[attr-defined]
        return jax.lax.ppermute(x, axes, perm=pairs)
    raise NotImplementedError(f"cannot emit {op.name}")


def _match_vma(args: list[Any]) -> list[Any]:
    """Mark every operand varying over the union of the operands' varying axes.

    Binding a primitive directly skips the implicit cast `jax.numpy` inserts, and
    `check_vma` requires an op's operands to vary over the same manual axes.
    """
    union = frozenset().union(*(varying_axes(a) for a in args)) if args else frozenset()
    return [
        a
        if varying_axes(a) == union
        else jax.lax.pcast(a, tuple(sorted(union - varying_axes(a))), to="varying")
        for a in args
    ]


HOST_CALLBACKS = frozenset({"io_callback", "debug_callback", "debug_print"})
"""Primitives that call back into Python: run on one device, not on every device."""


def _on_first_device(op: ir.PrimOp, operands: list[Any], sizes: dict[str, int]) -> list[Any]:
    """Run a host callback on the device whose axis indices are all 0.

    Inside `shard_map` every device runs the program, so a bare callback would run once per
    device. Its operands are replicated (lowering gathers them: callbacks have no sharding
    rule, or a replicated one), so the first device sees the whole values. Results are
    zeros on the other devices and a `psum` over every axis gives all devices the first
    device's values, as each consumer of the (replicated) result expects.
    """
    axes = tuple(sizes)
    if not axes:
        return evaluate.evaluate_op(op, operands)
    first = functools.reduce(jax.numpy.logical_and, [jax.lax.axis_index(a) == 0 for a in axes])
    result_types = [(ir.shape_of(t), numpy_dtype(ir.dtype_of(t))) for t in op.result_types]

    def run(*xs: Any) -> list[Any]:
        return [_to_varying(v, axes) for v in evaluate.evaluate_op(op, list(xs))]

    def skip(*xs: Any) -> list[Any]:
        return [_to_varying(jax.numpy.zeros(s, d), axes) for s, d in result_types]

    outs = jax.lax.cond(first, run, skip, *operands)
    return [_broadcast_from_first(v, axes) for v in outs]


def _to_varying(x: Any, axes: tuple[str, ...]) -> Any:
    missing = tuple(a for a in axes if a not in varying_axes(x))
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def _broadcast_from_first(x: Any, axes: tuple[str, ...]) -> Any:
    # psum has no boolean form: sum the bits as int8 (only one device contributes)
    if x.dtype == jax.numpy.bool_:
        return jax.lax.psum(x.astype(jax.numpy.int8), axes).astype(jax.numpy.bool_)
    return jax.lax.psum(x, axes)


def _shard_map_region(op: ir.PrimOp, operands: list[Any], sizes: dict[str, int]) -> list[Any]:
    """Run the user's `jax.shard_map` region inside spmd mode's own `shard_map`.

    Its body is per-device code on the region's mesh; spmd mode already runs per device
    on the partitioning mesh, so the body runs directly, on the blocks its ``in_specs``
    name. Lowering hands each operand in the layout of its ``in_specs`` (resharding into it
    is planned communication), and the body's results are the per-device blocks of its
    ``out_specs``: the layout lowering gave them.
    """
    params = evaluate.decode_params(op)
    where = f"jax.shard_map at {location_of(op)}"
    axes = dict(params["axes"])
    if axes != sizes or set(params["manual"]) != set(sizes):
        raise ShardMapError(
            f"{where} is on mesh {axes} (manual over {sorted(params['manual'])}); spmd mode "
            f"runs its body per device of the partitioning mesh {sizes}, so the two must be "
            "the same mesh, manual over every axis. Pass the partitioning mesh to "
            "jax.shard_map (or partition on the region's mesh), or use mode='annotate'."
        )
    # lowering hands each operand as the block its in_spec names (`_region_specs` in
    # lower_to_spmd): the body runs on them as they are
    outs = jax_compat.eval_jaxpr_with(params["jaxpr"], list(operands), _match_vma)
    return [
        _to_layout(value, spec, ir.shape_of(t), sizes, f"{where}: result {k}")
        for k, (value, spec, t) in enumerate(
            zip(outs, params["out_specs"], op.result_types, strict=True)
        )
    ]


def _to_layout(
    block: Any,
    spec: Sequence[Sequence[str]],
    local: tuple[int, ...],
    sizes: dict[str, int],
    what: str,
) -> Any:
    """A result block (tiled as `spec`) as the `local` shape lowering planned for it.

    Lowering lets a mesh axis tile one factor of an op, so when two results of a region
    are tiled on the same axis, only the first keeps it: the others are planned with a
    prefix of their axes, and the minor axes are gathered here (a collective of the
    region's own, like the ones its body runs, not in `plan.collectives()`)."""
    for d, axes in enumerate(spec):
        have, want = block.shape[d], local[d]
        k = len(axes)
        while want > have and k > 0:
            k -= 1
            have *= sizes[axes[k]]
        if have != want:
            raise ShardMapError(
                f"{what} is a block of shape {tuple(block.shape)} per device, but the plan "
                f"lays it out as {local} per device: a tactic disagrees with the region's "
                "out_specs (see plan.conflicts). Make the schedule agree with the out_specs, "
                "or use mode='annotate'."
            )
        if k < len(axes):
            block = jax.lax.all_gather(
                block, _axis_names(axes[k:]), axis=d, tiled=True, to="invarying"
            )
    if tuple(block.shape) != tuple(local):
        raise ShardMapError(
            f"{what} is a block of shape {tuple(block.shape)} per device, but the plan lays "
            f"it out as {local} per device (see plan.conflicts); use mode='annotate'."
        )
    return block


def _run_block(block: Block, args: Sequence[Any], sizes: dict[str, int]) -> list[Any]:
    env: dict[Any, Any] = dict(zip(block.args, args, strict=True))
    for op in block.ops:
        if isinstance(op, ir.YieldOp | func.ReturnOp):
            return [env[v] for v in op.operands]
        if isinstance(op, ir.CollectiveOp):
            outs = [_collective(op, env[op.input], sizes)]
        else:
            operands = [env[v] for v in op.operands]
            if isinstance(op, ir.PrimOp):
                operands = _match_vma(operands)
            if isinstance(op, ir.PrimOp) and op.primitive_name in HOST_CALLBACKS:
                outs = _on_first_device(op, operands, sizes)
            elif isinstance(op, ir.PrimOp) and op.primitive_name == "shard_map":
                outs = _shard_map_region(op, operands, sizes)
            elif pipeline.is_pipelined(op):  # PipelinePartition's loop (#16)
                outs = pipeline.run_local(op, operands, sizes, _collective, _match_vma)
            else:
                outs = evaluate.evaluate_op(op, operands, lambda b, a: _run_block(b, a, sizes))
        for result, value in zip(op.results, outs, strict=True):
            env[result] = value
    raise ValueError("block has no terminator")


def emit_spmd(
    module: ModuleOp,
    mesh: Mesh,
    in_layouts: Sequence[ir.Sharding],
    out_layouts: Sequence[ir.Sharding],
    donate_argnums: Sequence[int] = (),
) -> Callable[..., tuple[Any, ...]]:
    """A jitted callable on flat (global) input leaves running the device-local `module`.

    `in_layouts`/`out_layouts` are the planned shardings of the inputs and outputs (the
    shard_map's specs); `donate_argnums` are the flat input leaves XLA may reuse.
    """
    block = evaluate.module_function(module).body.block
    sizes = {str(k): int(v) for k, v in mesh.shape.items()}
    in_specs = tuple(partition_spec(s) for s in in_layouts)
    out_specs = tuple(partition_spec(s) for s in out_layouts)

    def local(*leaves: Any) -> tuple[Any, ...]:
        return tuple(_run_block(block, leaves, sizes))

    # a user region typed without manual-axis variance (`check_vma=False`) has loop bodies
    # whose carries are not typed varying: the whole program is then run unchecked too
    unchecked = any(
        isinstance(op, ir.PrimOp)
        and op.primitive_name == "shard_map"
        and not evaluate.decode_params(op)["check_vma"]
        for op in module.walk()
    )
    mapped = jax.shard_map(
        local, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=not unchecked
    )

    def run(*leaves: Any) -> tuple[Any, ...]:
        # the user may call the step inside `jax.set_mesh(their_mesh)` (MaxText does);
        # shard_map requires the context mesh to be its own, so trace under the plan's
        with use_abstract_mesh(mesh.abstract_mesh):
            return mapped(*leaves)

    return jax.jit(
        run,
        in_shardings=tuple(NamedSharding(mesh, s) for s in in_specs),
        out_shardings=tuple(NamedSharding(mesh, s) for s in out_specs),
        donate_argnums=tuple(donate_argnums),
    )
