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
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.passes import ModulePass
from xdsl.pattern_rewriter import (
    GreedyRewritePatternApplier,
    PatternRewriter,
    PatternRewriteWalker,
    RewritePattern,
    op_type_rewrite_pattern,
)
from xdsl.rewriter import InsertPoint
from xdsl.transforms.common_subexpression_elimination import cse

from partir import ir
from partir.passes.localize import localize_params
from partir.rules import get_rule

WHY = "partir.why"
"""The attribute saying what a collective converts (`ir.copy_why`)."""


def _erase(op: Operation) -> None:
    op.detach()
    op.erase()


def _sink_gather(op: ir.AllGatherOp, rw: PatternRewriter) -> bool:
    """Gather after, not before, an elementwise op that narrows the dtype (fewer bytes).

    A parameter kept in float32 and gathered for a bfloat16 matmul is converted on its
    local shard and the bfloat16 shard is gathered: half the bytes on the wire.
    """
    if not ir.single_use(op):
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
    ir.copy_why(op, gather)
    rw.insert(local, InsertPoint.before(user))
    rw.insert(gather, InsertPoint.before(user))
    rw.replace_all_uses_with(user.results[0], gather.result)
    rw.erase(user)
    rw.erase(op)
    return True


def _reuse_gather(op: ir.AllGatherOp, rw: PatternRewriter) -> bool:
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
            rw.insert(applied, InsertPoint.before(op))
            rw.replace_all_uses_with(op.result, applied.outs[0])
            rw.erase(op)
            if not producer.outs[0].uses:
                rw.erase(producer)
            return True
    return False


class MoveGather(RewritePattern):
    """Gather after a dtype-narrowing elementwise op, or reuse a gather of the operand."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: ir.AllGatherOp, rewriter: PatternRewriter) -> None:
        _sink_gather(op, rewriter) or _reuse_gather(op, rewriter)


PATTERNS: tuple[RewritePattern, ...] = (
    ir.FuseSliceOfCollective(),
    ir.SplitReduce(),
    MoveGather(),
)
"""The collective rewrites, applied greedily to a fixed point by `optimize_collectives`."""


def _merge_duplicates(module: ModuleOp) -> None:
    """One collective per (value, kind, parameters): later copies reuse the first.

    xDSL's common-subexpression elimination does it (the collectives are `Pure`), blind
    to ``partir.why``: two gathers of one value for different consumers say different
    things about why, and are still one gather. The survivor keeps its own note.
    """
    whys: dict[Operation, Attribute] = {}
    for op in module.walk():
        if isinstance(op, ir.CollectiveOp) and WHY in op.attributes:
            whys[op] = op.attributes.pop(WHY)
    cse(module)
    for op, why in whys.items():
        if op.parent is not None:  # erased ops have no parent
            op.attributes[WHY] = why


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
    PatternRewriteWalker(
        GreedyRewritePatternApplier(list(PATTERNS)), apply_recursively=True
    ).rewrite_module(module)
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
            ir.copy_why(op, new)
        block = op.parent_block()
        assert block is not None
        block.insert_ops_before([sliced, moved, gathered], op)
        op.result.replace_all_uses_with(gathered.result)
        _erase(op)
        done += 1
    if done:
        ir.verify_if_enabled(module, "partir-optimize-collectives", local=True)
    return done
