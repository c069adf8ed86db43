"""Annotate-mode emission: `jax.jit` with the plan's in/out shardings and its layouts inside.

On a mesh of `AxisType.Auto` axes every value whose sharding the plan decided gets a
`with_sharding_constraint` and XLA's partitioner inserts the collectives. On a mesh of
`AxisType.Explicit` axes (`jax.make_mesh`'s default) layouts are part of the types: each op
is bound with the plan's result layout as its ``out_sharding``/``sharding`` and each value is
moved to its planned layout with `jax.sharding.reshard`; pending sums are ``unreduced`` axes
of the value's `PartitionSpec`, so XLA reduces where the plan does (`emit_explicit`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh, AxisType, Mesh, NamedSharding, PartitionSpec
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, SSAValue

from partir import ir
from partir.backend import evaluate, jax_compat, pipeline
from partir.errors import TacticError


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


SCOPE_PREFIX = "partir_op"
"""Each IR op is emitted inside ``jax.named_scope(f"{SCOPE_PREFIX}{k}")``, ``k`` its place in
`op_numbers`: the compiled HLO's ``op_name`` metadata then names the plan's op that every
instruction (XLA's own collectives included) was made for (`partir.plan.check_compiled`)."""


def op_numbers(module: ModuleOp) -> dict[Operation, int]:
    """Every op of `module`, nested ones included, numbered in walk order."""
    return {op: k for k, op in enumerate(module.walk())}


def _scope(numbers: Mapping[Operation, int], op: Operation) -> Any:
    return jax.named_scope(f"{SCOPE_PREFIX}{numbers.get(op, -1)}")


def _constrained_block(
    block: Block,
    args: Sequence[Any],
    constraints: Mapping[SSAValue, NamedSharding],
    operand_needs: Mapping[tuple[Operation, int], NamedSharding],
    numbers: Mapping[Operation, int],
) -> list[Any]:
    def run_block(b: Block, a: Sequence[Any]) -> list[Any]:
        return _constrained_block(b, a, constraints, operand_needs, numbers)

    env: dict[Any, Any] = dict(zip(block.args, args, strict=True))
    for arg in block.args:
        if arg in constraints:
            env[arg] = jax.lax.with_sharding_constraint(env[arg], constraints[arg])
    for op in block.ops:
        if isinstance(op, ir.YieldOp | func.ReturnOp):
            return [env[v] for v in op.operands]
        with _scope(numbers, op):
            operands = [env[v] for v in op.operands]
            for i in range(len(operands)):
                need = operand_needs.get((op, i))
                if need is not None:
                    operands[i] = jax.lax.with_sharding_constraint(operands[i], need)
            if pipeline.is_pipelined(op):  # PipelinePartition's loop (#16), weights unmoved
                outs = pipeline.run_annotated(op, [env[v] for v in op.operands], constraints)
            else:
                outs = evaluate.evaluate_op(op, operands, run_block)
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
    (`jax.jit`'s meaning). On a mesh of Explicit axes this is `emit_explicit`.
    """
    if is_explicit(mesh):
        return emit_explicit(
            module, mesh, decided, in_shardings, out_shardings, operand_needs, donate_argnums
        )
    constraints = {v: named_sharding(mesh, s) for v, s in decided.items() if not s.partial}
    needs = {k: named_sharding(mesh, s) for k, s in operand_needs.items() if not s.partial}
    block = evaluate.module_function(module).body.block
    numbers = op_numbers(module)

    def run(*leaves: Any) -> tuple[Any, ...]:
        return tuple(_constrained_block(block, leaves, constraints, needs, numbers))

    return jax.jit(
        run,
        in_shardings=tuple(in_shardings),
        out_shardings=tuple(out_shardings),
        donate_argnums=tuple(donate_argnums),
    )


# ---------------------------------------------------------------------------------------
# Explicit meshes: sharding in types
# ---------------------------------------------------------------------------------------


def is_explicit(mesh: Mesh | AbstractMesh) -> bool:
    """Whether every axis of `mesh` is `AxisType.Explicit` (layouts are part of the types)."""
    return bool(mesh.axis_names) and all(t == AxisType.Explicit for t in mesh.axis_types)


def explicit_spec(sharding: ir.Sharding, unreduced: bool = True) -> PartitionSpec:
    """The `PartitionSpec` of `sharding` with its pending-sum axes as ``unreduced`` (with
    `unreduced`; a pending max or min has no such spelling and is left reduced)."""
    spec = partition_spec(sharding)
    if unreduced and sharding.partial and sharding.reduction == "sum":
        return PartitionSpec(*spec, unreduced=frozenset(sharding.partial))
    return spec


def _padded(spec: PartitionSpec, rank: int) -> tuple[Any, ...]:
    entries = tuple(spec.partitions) + (None,) * (rank - len(spec.partitions))
    return (entries, frozenset(spec.unreduced))


def _moved(x: Any, target: PartitionSpec) -> Any:
    """`x` resharded to `target` unless its type already says so. A value cannot be made a
    pending sum by a reshard, so a target's unreduced axes apply only to a value that is."""
    have = jax_compat.typed_spec(x)
    rank = len(getattr(x, "shape", ()))
    if have is not None and have.unreduced != target.unreduced:
        kept = frozenset(target.unreduced) & frozenset(have.unreduced)
        target = PartitionSpec(*target.partitions, unreduced=kept)
    if have is not None and _padded(have, rank) == _padded(target, rank):
        return x
    return jax.sharding.reshard(x, target)


def _reduced(x: Any, keep: frozenset[str], toward: PartitionSpec | None = None) -> Any:
    """`x` with its unreduced axes outside `keep` summed: an all-reduce, or a reduce-scatter
    where `toward` (the layout its consumer makes) tiles a dimension by exactly those axes."""
    have = jax_compat.typed_spec(x)
    if have is None or not (frozenset(have.unreduced) - keep):
        return x
    kept = frozenset(have.unreduced) & keep
    if not kept and toward is not None:
        scattered = _scatter_dim(have, toward, len(x.shape))
        if scattered is not None:
            return _reduce_scatter(x, have, toward, *scattered)
    return jax.sharding.reshard(x, PartitionSpec(*have.partitions, unreduced=kept))


def _entry_axes(entry: Any) -> tuple[str, ...]:
    return () if entry is None else tuple(entry) if isinstance(entry, tuple) else (entry,)


def _scatter_dim(
    have: PartitionSpec, toward: PartitionSpec, rank: int
) -> tuple[int, tuple[str, ...]] | None:
    """The dimension `toward` tiles by `have`'s unreduced axes (appended, minor to what tiles
    it now) with every other dimension unchanged, and those axes in its order; else None."""
    before = [_entry_axes(e) for e in _padded(have, rank)[0]]
    after = [_entry_axes(e) for e in _padded(toward, rank)[0]]
    if toward.unreduced:
        return None
    changed = [d for d in range(rank) if before[d] != after[d]]
    if len(changed) != 1:
        return None
    d = changed[0]
    new = after[d][len(before[d]) :]
    if after[d][: len(before[d])] != before[d] or frozenset(new) != frozenset(have.unreduced):
        return None
    return d, new


def _reduce_scatter(
    x: Any, have: PartitionSpec, toward: PartitionSpec, dim: int, axes: tuple[str, ...]
) -> Any:
    # XLA's partitioner turns a reshard from unreduced to tiled into an all-reduce and a
    # slice; `psum_scatter` in a shard_map over the whole mesh is the plan's reduce-scatter
    local = jax.shard_map(
        lambda v: jax.lax.psum_scatter(v, axes, scatter_dimension=dim, tiled=True),
        in_specs=PartitionSpec(*have.partitions, unreduced=have.unreduced),
        out_specs=PartitionSpec(*toward.partitions),
    )
    return local(x)


_LAYOUT_PARAMS = ("out_sharding", "sharding")


def _bind_laid_out(
    op: ir.PrimOp, args: list[Any], result: PartitionSpec | None, mesh: Mesh
) -> list[Any] | None:
    """Bind `op` with its result layout set to `result`; None when JAX refuses it."""
    params = evaluate.decode_params(op)
    keys = [k for k in _LAYOUT_PARAMS if k in params]
    if not keys or result is None or len(op.results) != 1:
        return None
    prim = evaluate.lookup_primitive(op.primitive_name)
    params[keys[0]] = NamedSharding(mesh.abstract_mesh, result)
    try:
        out = prim.bind(*args, **params)
    except Exception as e:  # JAX refused this layout for this op: bind it plainly
        if _refused(e):
            return None
        raise
    return list(out) if prim.multiple_results else [out]


def _refused(e: Exception) -> bool:
    """Whether JAX refused to type an op on its operands' layouts (rather than a bug)."""
    return jax_compat.is_sharding_type_error(e) or isinstance(
        e, ValueError | TypeError | NotImplementedError
    )


def _local_dot_spec(
    params: Mapping[str, Any], specs: Sequence[PartitionSpec], ranks: Sequence[int]
) -> PartitionSpec | None:
    """The result layout of a dot_general computed shard by shard (no collective) from
    operands laid out as `specs`, one of which may be a pending sum; None when that is not
    a correct local computation (a contracting or batch dimension tiled differently on the
    two sides, both operands pending, or a pending axis also tiling the other operand)."""
    (lc, rc), (lb, rb) = params["dimension_numbers"]
    lhs, rhs = (
        [_entry_axes(e) for e in _padded(sp, r)[0]] for sp, r in zip(specs, ranks, strict=True)
    )
    ul, ur = (frozenset(sp.unreduced) for sp in specs)
    if ul and ur:
        return None
    if ul & frozenset(a for d in rhs for a in d) or ur & frozenset(a for d in lhs for a in d):
        return None
    if any(lhs[i] != rhs[j] for i, j in zip((*lc, *lb), (*rc, *rb), strict=True)):
        return None
    contracted = frozenset(a for i in lc for a in lhs[i])
    free_l = [d for i, d in enumerate(lhs) if i not in (*lc, *lb)]
    free_r = [d for j, d in enumerate(rhs) if j not in (*rc, *rb)]
    dims = [lhs[i] for i in lb] + free_l + free_r
    entries = [None if not d else d[0] if len(d) == 1 else d for d in dims]
    return PartitionSpec(*entries, unreduced=ul | ur | contracted)


def _local_dot(op: ir.PrimOp, operands: list[Any], result: PartitionSpec) -> list[Any] | None:
    """A dot_general of a pending-sum operand, which JAX's types refuse but the plan keeps
    pending (linear in that operand): each device multiplies its own shards in a
    `jax.shard_map` over the whole mesh. None unless the layouts make that correct."""
    specs = [jax_compat.typed_spec(x) for x in operands]
    if any(sp is None for sp in specs):
        return None
    params = evaluate.decode_params(op)
    ranks = [len(x.shape) for x in operands]
    local = _local_dot_spec(params, specs, ranks)  # type: ignore[arg-type]
    rank = len(op.results[0].type.get_shape())  # type: ignore[attr-defined]
    if local is None or _padded(local, rank) != _padded(result, rank):
        return None
    prim = evaluate.lookup_primitive(op.primitive_name)
    fn = jax.shard_map(
        lambda a, b: prim.bind(a, b, **params),
        in_specs=tuple(specs),
        out_specs=local,
        check_vma=False,
    )
    return [fn(*operands)]


def _marked_reduced(operands: list[Any]) -> list[Any] | None:
    """`operands` with the whole ones marked ``reduced`` over the other operands' pending
    axes (free: a replicated value is its own sum), which JAX asks of a pending sum's
    divisor; None when there is nothing to mark."""
    specs = [jax_compat.typed_spec(x) for x in operands]
    pending = frozenset().union(*(frozenset(sp.unreduced) for sp in specs if sp is not None))
    if not pending:
        return None
    out, changed = [], False
    for x, sp in zip(operands, specs, strict=True):
        tiled = (
            frozenset()
            if sp is None
            else frozenset(a for e in sp.partitions for a in _entry_axes(e))
        )
        if sp is not None and not sp.unreduced and not sp.reduced and not tiled & pending:
            x = jax.sharding.reshard(x, PartitionSpec(*sp.partitions, reduced=pending))
            changed = True
        out.append(x)
    return out if changed else None


def _explicit_op(
    op: Operation,
    operands: list[Any],
    results: list[PartitionSpec | None],
    mesh: Mesh,
    run_block: Callable[[Block, Sequence[Any]], list[Any]],
) -> list[Any]:
    if pipeline.is_pipelined(op):
        raise TacticError(
            f"PipelinePartition on a mesh of Explicit axes in annotate mode, for the layer "
            f"scan at {ir.location_of(op)}: the pipelined loop is emitted on Auto axes only. "
            "Pass mode='spmd', or a mesh made with axis_types=(AxisType.Auto, ...)."
        )
    if isinstance(op, ir.PrimOp) and op.primitive_name not in ("sharding_constraint", "shard_map"):
        outs = _bind_laid_out(op, operands, results[0] if results else None, mesh)
        if outs is not None:
            return outs
        pending = results and results[0] is not None and results[0].unreduced
        if op.primitive_name == "dot_general" and pending:
            outs = _local_dot(op, operands, results[0])  # type: ignore[arg-type]
            if outs is not None:
                return outs
    try:
        return evaluate.evaluate_op(op, operands, run_block)
    except Exception as e:
        if not _refused(e):
            raise
    marked = _marked_reduced(operands)
    if marked is not None:
        try:
            return evaluate.evaluate_op(op, marked, run_block)
        except Exception as e:
            if not _refused(e):
                raise
    # JAX has no unreduced rule for some linear ops: sum the operands first, one all-reduce
    # earlier than the plan's
    summed = [_reduced(x, frozenset()) for x in operands]
    if any(s is not x for s, x in zip(summed, operands, strict=True)):
        try:
            return evaluate.evaluate_op(op, summed, run_block)
        except Exception as e:
            if not _refused(e):
                raise
    # JAX cannot type the op on these layouts (a gather along a tiled dimension): let XLA's
    # partitioner place it, as on an Auto mesh, and hand the results back in the plan's layout
    specs = [PartitionSpec() if s is None else PartitionSpec(*s.partitions) for s in results]
    fn = jax.sharding.auto_axes(
        lambda *xs: evaluate.evaluate_op(op, list(xs), run_block), out_sharding=specs
    )
    return list(fn(*summed))


_Sums = dict[tuple[SSAValue, frozenset[str], PartitionSpec | None], Any]


def _shared_sum(
    sums: _Sums, v: SSAValue, x: Any, keep: frozenset[str], toward: PartitionSpec | None
) -> Any:
    """`_reduced(x, keep, toward)`, made once per value, summed axes and target: consumers
    needing a pending sum reduced over the same axes share one collective, and one needing
    more axes summed starts from the largest sum already made (the plan reduces a value
    once, where it is made, however many consumers it has)."""
    have = jax_compat.typed_spec(x)
    pending = frozenset(have.unreduced) if have is not None else frozenset()
    summed = pending - keep
    if not summed:
        return x
    key = (v, summed, toward)
    if key not in sums:
        start = x
        partial = [k for k in sums if k[0] is v and k[2] is None and k[1] < summed]
        if partial:
            start = sums[max(partial, key=lambda k: len(k[1]))]
        sums[key] = _reduced(start, pending - summed, toward)
    return sums[key]


def _operand_layout(op: Operation, value: SSAValue, result: PartitionSpec | None) -> Any:
    """The layout `op` makes its result `result` from, for operand `value`, where that is the
    result's own (an elementwise op) or the result's permuted back (a transpose); else None."""
    if result is None or len(op.results) != 1 or result.unreduced:
        return None
    rank = len(op.results[0].type.get_shape())  # type: ignore[attr-defined]
    if op.results[0].type == value.type:
        return result
    if isinstance(op, ir.PrimOp) and op.primitive_name == "transpose":
        perm = evaluate.decode_params(op)["permutation"]
        entries, _ = _padded(result, rank)
        back: list[Any] = [None] * rank
        for j, d in enumerate(perm):
            back[d] = entries[j]
        return PartitionSpec(*back)
    return None


def _scattered_out(x: Any, target: PartitionSpec | None) -> Any:
    """`x` reduce-scattered into `target` where that is a scatter of its pending axes, else
    `x` as it is (a pending sum the plan reduces after the loop stays pending)."""
    have = jax_compat.typed_spec(x)
    if target is None or have is None or not have.unreduced:
        return x
    scattered = _scatter_dim(have, target, len(x.shape))
    return x if scattered is None else _reduce_scatter(x, have, target, *scattered)


def _yield_layouts(
    block: Block, layouts: Mapping[SSAValue, PartitionSpec]
) -> list[PartitionSpec | None]:
    """Per operand of a scan body's yield, the planned layout of what it becomes (a carry:
    the loop's result; a per-iteration output: the stacked result without its leading
    dimension); None elsewhere (the body of a while, a branch, a remat)."""
    parent = block.parent_op()
    n = len(block.last_op.operands) if block.last_op is not None else 0
    if not isinstance(parent, ir.ScanOp):
        return [None] * n
    carries = dict(parent.params.items())["num_carry"]
    out: list[PartitionSpec | None] = []
    for k, r in enumerate(parent.results):
        spec = layouts.get(r)
        if spec is None or k < carries:
            out.append(spec)
        else:
            rest = tuple(spec.partitions[1:])
            out.append(
                None
                if spec.partitions[:1] not in ((), (None,))
                else PartitionSpec(*rest, unreduced=spec.unreduced)
            )
    return out


def _explicit_block(
    block: Block,
    args: Sequence[Any],
    layouts: Mapping[SSAValue, PartitionSpec],
    operand_needs: Mapping[tuple[Operation, int], PartitionSpec],
    mesh: Mesh,
    numbers: Mapping[Operation, int],
) -> list[Any]:
    def run_block(b: Block, a: Sequence[Any]) -> list[Any]:
        return _explicit_block(b, a, layouts, operand_needs, mesh, numbers)

    env: dict[Any, Any] = {}
    sums: _Sums = {}
    for arg, x in zip(block.args, args, strict=True):
        env[arg] = _moved(x, layouts[arg]) if arg in layouts else x
    for op in block.ops:
        if isinstance(op, ir.YieldOp):
            # a loop body's results leave in the layouts the plan gives the loop's results:
            # still pending (summed once, after the loop), or re-tiled for their consumers
            # (a scanned layer's gradients under ZeRO: one reduce-scatter per layer)
            targets = _yield_layouts(block, layouts)
            return [_scattered_out(env[v], t) for v, t in zip(op.operands, targets, strict=True)]
        if isinstance(op, func.ReturnOp):
            return [_shared_sum(sums, v, env[v], frozenset(), None) for v in op.operands]
        results = [layouts.get(r) for r in op.results]
        # a pending sum stays pending only into an op whose result the plan keeps pending
        # on the same axes (a linear op); anywhere else the plan reduces it first
        keep = frozenset().union(*(frozenset(s.unreduced) for s in results if s is not None))
        with _scope(numbers, op):
            operands = []
            for v in op.operands:
                # one reduction per value and kept axes, however many consumers need it;
                # into a same-shaped result tiled by the summed axes it is a reduce-scatter
                toward = _operand_layout(op, v, results[0] if results else None)
                have = jax_compat.typed_spec(env[v])
                if toward is not None and (
                    have is None or keep or _scatter_dim(have, toward, len(env[v].shape)) is None
                ):
                    toward = None  # an all-reduce, shared by every consumer
                operands.append(_shared_sum(sums, v, env[v], keep, toward))
            for i in range(len(operands)):
                need = operand_needs.get((op, i))
                if need is not None:
                    operands[i] = _moved(operands[i], need)
            outs = _explicit_op(op, operands, results, mesh, run_block)
            for result, value, spec in zip(op.results, outs, results, strict=True):
                env[result] = value if spec is None else _moved(value, spec)
    raise ValueError("block has no terminator")


def emit_explicit(
    module: ModuleOp,
    mesh: Mesh,
    decided: Mapping[SSAValue, ir.Sharding],
    in_shardings: Sequence[NamedSharding],
    out_shardings: Sequence[NamedSharding],
    operand_needs: Mapping[tuple[Operation, int], ir.Sharding] = {},
    donate_argnums: Sequence[int] = (),
    unreduced: bool = True,
) -> Callable[..., list[Any]]:
    """`emit_annotated` for a mesh of Explicit axes: code JAX's sharding-in-types checks.

    Each op whose primitive takes a result layout (``dot_general``'s ``out_sharding``,
    ``broadcast_in_dim``'s ``sharding``) is bound with the plan's; every decided value is then
    moved to its planned layout with `jax.sharding.reshard` (a no-op where its type already
    agrees), so the collectives sit where the plan's do. With `unreduced`, a pending sum is
    an ``unreduced`` axis of its spec and is summed (``reshard``) just before the first op
    whose planned result does not keep it pending. An op JAX cannot type on its operands'
    layouts runs under `jax.sharding.auto_axes`, placed by XLA's partitioner.
    """
    layouts = {v: explicit_spec(s, unreduced) for v, s in decided.items()}
    needs = {k: explicit_spec(s, False) for k, s in operand_needs.items()}
    block = evaluate.module_function(module).body.block
    numbers = op_numbers(module)

    def run(*leaves: Any) -> tuple[Any, ...]:
        with jax_compat.use_abstract_mesh(mesh.abstract_mesh):
            outs = _explicit_block(block, leaves, layouts, needs, mesh, numbers)
            return tuple(_reduced(x, frozenset()) for x in outs)

    return jax.jit(
        run,
        in_shardings=tuple(in_shardings),
        out_shardings=tuple(out_shardings),
        donate_argnums=tuple(donate_argnums),
    )
