"""Annotate-mode emission: `jax.jit` with in/out shardings and a `with_sharding_constraint`
on every value whose sharding the plan decided; XLA's partitioner inserts collectives."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from partir import ir
from partir.backend import evaluate


def partition_spec(sharding: ir.Sharding) -> PartitionSpec:
    """The `PartitionSpec` of a sharding's tiled dimensions (partial axes are not expressible)."""
    entries: list[Any] = []
    for axes in sharding.dims:
        entries.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    while entries and entries[-1] is None:
        entries.pop()
    return PartitionSpec(*entries)


def named_sharding(mesh: Mesh | AbstractMesh, sharding: ir.Sharding | None) -> NamedSharding:
    """A `NamedSharding` on `mesh` (replicated when `sharding` is None); an `AbstractMesh`
    gives one to read (its spec, shard shapes), not to place arrays with."""
    return NamedSharding(mesh, PartitionSpec() if sharding is None else partition_spec(sharding))


def _constrained_block(
    block: Block,
    args: Sequence[Any],
    constraints: Mapping[SSAValue, NamedSharding],
    operand_needs: Mapping[tuple[Operation, int], NamedSharding],
) -> list[Any]:
    env: dict[Any, Any] = dict(zip(block.args, args, strict=True))
    for arg in block.args:
        if arg in constraints:
            env[arg] = jax.lax.with_sharding_constraint(env[arg], constraints[arg])
    for op in block.ops:
        if isinstance(op, ir.YieldOp | func.ReturnOp):
            return [env[v] for v in op.operands]
        operands = [env[v] for v in op.operands]
        for i in range(len(operands)):
            need = operand_needs.get((op, i))
            if need is not None:
                operands[i] = jax.lax.with_sharding_constraint(operands[i], need)
        outs = evaluate.evaluate_op(
            op, operands, lambda b, a: _constrained_block(b, a, constraints, operand_needs)
        )
        for result, value in zip(op.results, outs, strict=True):
            if result in constraints:
                value = jax.lax.with_sharding_constraint(value, constraints[result])
            env[result] = value
    raise ValueError("block has no terminator")


def emit_annotated(
    module: ModuleOp,
    mesh: Mesh,
    decided: Mapping[SSAValue, ir.Sharding],
    in_shardings: Sequence[NamedSharding],
    out_shardings: Sequence[NamedSharding],
    operand_needs: Mapping[tuple[Operation, int], ir.Sharding] = {},
    donate_argnums: Sequence[int] = (),
) -> Callable[..., list[Any]]:
    """A jitted callable on flat input leaves that runs `module` with the plan's shardings.

    `decided` maps every value whose sharding the plan decided to it; partial values are
    left to XLA (a constraint would force an early reduction). `operand_needs` maps an
    (op, operand index) to the sharding the op must see that operand in (a dimension it
    slices, pads or sorts must be whole), constrained just before the op.
    `donate_argnums` are the flat input leaves whose buffers XLA may reuse for outputs
    (`jax.jit`'s meaning).
    """
    constraints = {v: named_sharding(mesh, s) for v, s in decided.items() if not s.partial}
    needs = {k: named_sharding(mesh, s) for k, s in operand_needs.items() if not s.partial}
    block = evaluate.module_function(module).body.block

    def run(*leaves: Any) -> tuple[Any, ...]:
        return tuple(_constrained_block(block, leaves, constraints, needs))

    return jax.jit(
        run,
        in_shardings=tuple(in_shardings),
        out_shardings=tuple(out_shardings),
        donate_argnums=tuple(donate_argnums),
    )
