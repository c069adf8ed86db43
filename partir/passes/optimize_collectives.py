"""`partir-optimize-collectives`: peephole rewrites over the spmd collectives.

  all_slice(d, A) . all_reduce(A')          -> reduce_scatter(d, A) [. all_reduce(A' - A)]
  all_slice(d, A) . all_gather(d, A)        -> identity
  all_slice(e, A) . all_gather(d, A), d != e -> all_to_all(d -> e, A)
  f . all_gather(d, A) -> all_gather(d, A) . f   (f elementwise, narrowing the dtype)
  all_gather(d', A) . u(x) -> u(all_gather(d, A)(x)) when x is gathered anyway (u a
      one-operand op such as a transpose, d' the dim d becomes)

Separately, given the input layouts, `drop_duplicate_tokens` (TED's duplicate token
dropping): all_to_all(A)(x), x the same on every device of axes M ->
all_gather(e, M) . all_to_all(A) . all_slice(e, M)(x).

A rewrite applies only where the inner collective has no other user, so nothing is
computed twice; values gathered for several consumers are gathered once (lowering
reshards per use, and the common-subexpression step here merges identical gathers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import Operation, SSAValue
from xdsl.passes import ModulePass

from partir import ir
from partir.passes.localize import localize_params
from partir.rules import get_rule


def _erase(op: Operation) -> None:
    op.detach()
    op.erase()


def _single_use(op: Operation) -> bool:
    return sum(1 for _ in op.results[0].uses) == 1


def _fuse(op: ir.AllSliceOp, producer: Operation, new: Operation | None) -> bool:
    """Replace the pair `producer` -> `op` by `new` (None: by `producer`'s input)."""
    if new is None:
        op.result.replace_all_uses_with(producer.operands[0])
    else:
        _copy_why(op, new)
        block = op.parent_block()
        assert block is not None
        block.insert_op_before(new, op)
        op.result.replace_all_uses_with(new.results[0])
    _erase(op)
    _erase(producer)
    return True


def _rewrite_slice(op: ir.AllSliceOp) -> bool:
    producer = op.input.owner
    axes = op.axis_names
    d = op.dim.data
    if (
        isinstance(producer, ir.AllReduceOp)
        and _single_use(producer)
        and set(axes) <= set(producer.axis_names)
        and producer.kind.data == "sum"
    ):
        value = producer.input
        rest = [a for a in producer.axis_names if a not in axes]
        if rest:
            # the axes not sliced are still all-reduced, before the scatter
            inner = ir.AllReduceOp(value, value.type, rest, kind="sum")
            _copy_why(producer, inner)
            block = producer.parent_block()
            assert block is not None
            block.insert_op_before(inner, producer)
            value = inner.result
        return _fuse(
            op, producer, ir.ReduceScatterOp(value, op.result.type, list(axes), dim=d, kind="sum")
        )
    if (
        isinstance(producer, ir.AllGatherOp)
        and _single_use(producer)
        and producer.axis_names == axes
    ):
        if producer.dim.data == d:
            return _fuse(op, producer, None)
        src = producer.dim.data
        return _fuse(
            op, producer, ir.AllToAllOp(producer.input, op.result.type, list(axes), src=src, dst=d)
        )
    return False


def _sink_gather(op: ir.AllGatherOp) -> bool:
    """Gather after, not before, an elementwise op that narrows the dtype (fewer bytes).

    A parameter kept in float32 and gathered for a bfloat16 matmul is converted on its
    local shard and the bfloat16 shard is gathered: half the bytes on the wire.
    """
    if not _single_use(op):
        return False
    user = next(iter(op.result.uses)).operation
    if not isinstance(user, ir.PrimOp) or len(user.args) != 1 or len(user.outs) != 1:
        return False
    rule = get_rule(user)
    if rule is None or rule.operands[0] != rule.results[0] or rule.reduce:
        return False
    narrowed = ir.ITEMSIZE[ir.dtype_of(user.outs[0].type)]
    if narrowed >= ir.ITEMSIZE[ir.dtype_of(op.input.type)]:
        return False
    local_shape = ir.shape_of(op.input.type)
    local = ir.PrimOp(
        user.primitive_name,
        [op.input],
        [ir.tensor_type(local_shape, ir.dtype_of(user.outs[0].type))],
        user.params,
        user.location,
    )
    gather = ir.AllGatherOp(local.outs[0], user.outs[0].type, list(op.axis_names), dim=op.dim.data)
    _copy_why(op, gather)
    block = user.parent_block()
    assert block is not None
    block.insert_op_before(local, user)
    block.insert_op_before(gather, user)
    user.results[0].replace_all_uses_with(gather.result)
    _erase(user)
    _erase(op)
    return True


def _reuse_gather(op: ir.AllGatherOp) -> bool:
    """Apply a one-operand op to a gather the program already has, instead of gathering
    its result too: ZeRO's forward gather of a weight also serves its transpose in the
    backward pass, so each parameter is gathered once."""
    producer = op.input.owner
    if not isinstance(producer, ir.PrimOp) or len(producer.args) != 1 or len(producer.outs) != 1:
        return False
    rule = get_rule(producer)
    if rule is None or rule.reduce:
        return False
    source = producer.args[0]
    wanted = rule.results[0][op.dim.data]
    block = op.parent_block()
    assert block is not None
    for use in source.uses:
        other = use.operation
        if (
            isinstance(other, ir.AllGatherOp)
            and other.parent_block() is block
            and other.axis_names == op.axis_names
            and rule.operands[0][other.dim.data] == wanted
            and len(wanted) == 1
            and block.get_operation_index(other) < block.get_operation_index(op)
        ):
            shapes = ([ir.shape_of(other.result.type)], [ir.shape_of(op.result.type)])
            params = localize_params(producer, *shapes)
            applied = ir.PrimOp(
                producer.primitive_name,
                [other.result],
                [op.result.type],
                params,
                producer.location,
            )
            block.insert_op_before(applied, op)
            op.result.replace_all_uses_with(applied.outs[0])
            _erase(op)
            if not producer.outs[0].uses:
                _erase(producer)
            return True
    return False


def _split_reduce(op: ir.AllReduceOp) -> bool:
    """all_reduce whose users are all_slices on one dim and reduce_sums over that dim."""
    if op.kind.data != "sum":
        return False
    users = [use.operation for use in op.result.uses]
    slices = [u for u in users if isinstance(u, ir.AllSliceOp)]
    sums = [u for u in users if isinstance(u, ir.PrimOp) and u.primitive_name == "reduce_sum"]
    if not slices or not sums or len(slices) + len(sums) != len(users):
        return False
    dims = {s.dim.data for s in slices}
    if len(dims) != 1 or any(s.axis_names != op.axis_names for s in slices):
        return False
    (d,) = dims
    if any(d not in tuple(s.params["axes"]) for s in sums):
        return False
    block = op.parent_block()
    assert block is not None
    scatter = ir.ReduceScatterOp(
        op.input, slices[0].result.type, list(op.axis_names), dim=d, kind="sum"
    )
    _copy_why(slices[0], scatter)
    block.insert_op_before(scatter, op)
    for s in slices:
        s.result.replace_all_uses_with(scatter.result)
        _erase(s)
    for old in sums:
        local = ir.PrimOp(
            "reduce_sum", [scatter.result], list(old.result_types), old.params, old.location
        )
        reduced = ir.AllReduceOp(
            local.outs[0], old.result_types[0], list(op.axis_names), kind="sum"
        )
        _copy_why(op, reduced)
        reduced.location = old.location
        block.insert_op_before(local, old)
        block.insert_op_before(reduced, old)
        old.results[0].replace_all_uses_with(reduced.result)
        _erase(old)
    _erase(op)
    return True


def _copy_why(src: Operation, dst: Operation) -> None:
    why = src.attributes.get("partir.why")
    if isinstance(why, StringAttr):
        dst.attributes["partir.why"] = why
    dst.location = src.location


def _merge_duplicates(module: ModuleOp) -> None:
    """One collective per (value, kind, parameters): later copies reuse the first."""
    seen: dict[tuple[object, ...], Operation] = {}
    for op in list(module.walk()):
        if not isinstance(op, ir.CollectiveOp):
            continue
        key = (
            op.input,
            op.name,
            tuple(sorted((k, str(v)) for k, v in op.properties.items())),
            op.result.type,
        )
        first = seen.get(key)
        if first is None:
            seen[key] = op
        elif first.parent_block() is op.parent_block():
            op.result.replace_all_uses_with(first.results[0])
            _erase(op)


def optimize_collectives(module: ModuleOp, in_layouts: Sequence[ir.Sharding] | None = None) -> None:
    """Apply the rewrites to a fixed point, then merge identical collectives.

    Args:
      module: the device-local module, rewritten in place.
      in_layouts: the layout each entry argument arrives in. With them, all_to_alls of
        values that are the same on every device of another axis send each token once
        (`drop_duplicate_tokens`). That pays where the other axis has faster links than
        the all_to_all's (tensor-parallel ranks inside a node, experts across nodes) and
        costs more bytes in all where they are the same, so plans do not ask for it by
        default.
    """
    _merge_duplicates(module)
    changed = True
    while changed:
        changed = False
        for op in list(module.walk()):
            if op.parent is None:
                continue
            if isinstance(op, ir.AllSliceOp) and _rewrite_slice(op):
                changed = True
            elif isinstance(op, ir.AllReduceOp) and _split_reduce(op):
                changed = True
            elif isinstance(op, ir.AllGatherOp) and (_sink_gather(op) or _reuse_gather(op)):
                changed = True
    _merge_duplicates(module)
    if in_layouts is not None:
        drop_duplicate_tokens(module, list(in_layouts))
    ir.verify_if_enabled(module, "partir-optimize-collectives", local=True)


@dataclass(frozen=True)
class OptimizeCollectivesPass(ModulePass):
    """Fuse slice-of-reduce into reduce_scatter and slice-of-gather into all_to_all or
    nothing; gather after a narrowing elementwise op rather than before it."""

    name = "partir-optimize-collectives"

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        optimize_collectives(op)


# ----------------------------------------------------------------------------------------------
# Duplicate token dropping (tensor-expert-data MoE)


def _uniform_axes(
    module: ModuleOp, in_layouts: list[ir.Sharding]
) -> dict[SSAValue, frozenset[str]]:
    """value -> the mesh axes along which every device holds the same local value.

    A forward dataflow over the entry function: an input is the same along every axis its
    layout neither tiles nor leaves partial; an all_reduce or all_gather over A makes its
    result the same along A; an all_slice, reduce_scatter, all_to_all or permute over A
    makes it differ along A (and keeps the rest); any other op is the same along the axes
    all its operands are (a constant along all). Values inside regions, and region results,
    are taken to differ along every axis (conservative).
    """
    mesh = module.attributes["partir.mesh"]
    assert isinstance(mesh, ir.MeshAttr)
    every = frozenset(mesh.axis_names)
    fn = next(op for op in module.body.block.ops if isinstance(op, func.FuncOp))
    out: dict[SSAValue, frozenset[str]] = {}
    for arg, layout in zip(fn.body.block.args, in_layouts, strict=True):
        used = {a for d in layout.dims for a in d} | set(layout.partial)
        out[arg] = every - used
    for op in fn.body.block.ops:
        if isinstance(op, ir.AllReduceOp | ir.AllGatherOp):
            out[op.result] = out.get(op.input, frozenset()) | set(op.axis_names)
        elif isinstance(op, ir.CollectiveOp):
            out[op.result] = out.get(op.input, frozenset()) - set(op.axis_names)
        elif isinstance(op, ir.RegionPrimOp):
            for r in op.results:
                out[r] = frozenset()
        else:
            same = every
            for v in op.operands:
                same = same & out.get(v, frozenset())
            for r in op.results:
                out[r] = same
    return out


def drop_duplicate_tokens(module: ModuleOp, in_layouts: list[ir.Sharding]) -> int:
    """Duplicate token dropping (Singh et al. 2023, "A Hybrid Tensor-Expert-Data
    Parallelism Approach to Optimize Mixture-of-Experts Training", §4.1).

    An all_to_all over A whose operand is the same on every device of other axes M (the
    tokens of an expert group, replicated across its tensor-parallel ranks) sends every
    token |M| times. Each device of M sends a distinct 1/|M| of them instead, and M
    gathers the rest after::

        all_to_all(src -> dst, A)(x)
          -> all_gather(e, M) . all_to_all(src -> dst, A) . all_slice(e, M) (x)

    for a dim `e` other than `src` and `dst` that |M| divides. The all-to-all bytes per
    device fall by |M|; the gather runs over M (the tensor-parallel ranks, usually the
    faster links). Only entry-function all_to_alls are rewritten. Returns how many.
    """
    mesh = module.attributes["partir.mesh"]
    assert isinstance(mesh, ir.MeshAttr)
    uniform = _uniform_axes(module, in_layouts)
    done = 0
    for op in [o for o in module.walk() if isinstance(o, ir.AllToAllOp)]:
        if op.input not in uniform:
            continue
        axes = [a for a in mesh.axis_names if a in uniform[op.input]]
        axes = [a for a in axes if a not in op.axis_names and mesh.size_of([a]) > 1]
        if not axes:
            continue
        n = mesh.size_of(axes)
        src, dst = op.src.data, op.dst.data
        shape = ir.shape_of(op.input.type)
        # the largest free dim |M| divides: the slices stay as coarse as possible
        free = [d for d in range(len(shape)) if d not in (src, dst) and shape[d] % n == 0]
        if not free:
            continue
        e = max(free, key=lambda d: (shape[d], -d))
        dtype = ir.dtype_of(op.input.type)
        sliced_shape = tuple(s // n if d == e else s for d, s in enumerate(shape))
        out_shape = ir.shape_of(op.result.type)
        moved_shape = tuple(s // n if d == e else s for d, s in enumerate(out_shape))
        sliced = ir.AllSliceOp(op.input, ir.tensor_type(sliced_shape, dtype), axes, dim=e)
        moved = ir.AllToAllOp(
            sliced.result, ir.tensor_type(moved_shape, dtype), list(op.axis_names),
            src=src, dst=dst,
        )  # fmt: skip
        gathered = ir.AllGatherOp(moved.result, op.result.type, axes, dim=e)
        for new in (sliced, moved, gathered):
            _copy_why(op, new)
        block = op.parent_block()
        assert block is not None
        block.insert_ops_before([sliced, moved, gathered], op)
        op.result.replace_all_uses_with(gathered.result)
        _erase(op)
        done += 1
    if done:
        ir.verify_if_enabled(module, "partir-optimize-collectives", local=True)
    return done
