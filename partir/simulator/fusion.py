"""What XLA's fusion makes of a device-local program: its FLOP count and its buffers.

XLA's instruction fusion (CPU and GPU) clones a cheap producer into every consumer fusion that
reads it, and `HloCostAnalysis` counts each clone. So the compiled program's FLOP count exceeds
the program's own by the recomputed elementwise work: on the zoo's small GPT, 5-12%. Fusion
also decides which values are ever written to memory: only a fusion's result is a buffer.
This module estimates both from the device-local program with XLA's rules
(`InstructionFusion`, `CpuInstructionFusion::ShouldFuse`), simplified:

- A loop-fusible op (elementwise, broadcast, reshape, transpose, slice, pad, concatenate,
  iota, reduce, ...) is fused into its loop-fusible users. Walking the program backwards, an
  op belongs to the union of the fusions its users belong to, plus a fusion of its own when
  some user cannot fuse it (a dot, a collective, a region, the function's result).
- An op that would land in more than one fusion is duplicated, unless it is *expensive*
  (divide, exp, log, tanh, sqrt, rsqrt, pow, reduce, gather, ...; a broadcast or a widening
  convert is always duplicable), or it reads more elements than it writes through more than
  one large operand while some user cannot fuse it (`ComputeGloballyUnfusible`: not
  "effectively at most unary"); then it is its own fusion, counted once.
- For buffers (not FLOPs), a fusion rooted at a reduction takes no duplicated producer: an
  op that other fusions also read is written out once and the reduction reads it (XLA's CPU
  backend emits reductions as YNNPACK fusions of the reduce and its single-use elementwise
  producers, as the compiled zoo programs show).
- A transpose read only by dots folds into them (XLA's transpose folding) when the dot still
  sees batch dims first and each operand as a matrix; otherwise it is a copy.
- Every op's FLOPs count once per fusion it is in. Loop bodies count once (HloCostAnalysis
  does not know trip counts), a cond its most expensive branch, an all_reduce one flop per
  element.

Not modelled: XLA's algebraic simplifier (CSE, ``a + neg(b) -> a - b``, ...), the limit on
code duplication inside one fusion, multi-output fusion. On the zoo's programs the FLOP
estimate is within 3.6% of `cost_analysis()` on the 8-device CPU mesh (tests/simulator).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from xdsl.ir import Block, Operation, SSAValue

from partir import ir
from partir.simulator.analysis import MEMOS, dead_ops
from partir.simulator.costs import ELEMENTWISE

_ELEMENTWISE = ELEMENTWISE
_MOVEMENT = frozenset(
    "broadcast_in_dim reshape squeeze expand_dims transpose rev concatenate pad slice "
    "dynamic_slice dynamic_update_slice gather iota copy copy_p stop_gradient".split()
)
_REDUCTIONS = frozenset(
    "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin".split()
)
_YNN_REDUCTIONS = frozenset({"reduce_sum", "reduce_max", "reduce_min"})
LOOP_FUSIBLE = _ELEMENTWISE | _MOVEMENT | _REDUCTIONS
"""Primitives XLA's CPU backend fuses into loop fusions (`CanBeLoopFused`)."""

EXPENSIVE = (
    frozenset(
        "div rem exp log log1p expm1 tanh logistic sqrt rsqrt cbrt pow atan2 erf erfc erf_inv "
        "acosh asinh atanh acos asin atan cosh exp2 log2 gather".split()
    )
    | _REDUCTIONS
)
"""Primitives `InstructionFusion::IsExpensive` will not duplicate (float division included)."""


_SHAPES: dict[int, tuple[Any, tuple[int, ...], int, int]] = {}
"""id(type) -> (type, shape, elements, dims > 1); the type is kept so its id stays unique."""


def _shape_info(value: SSAValue) -> tuple[Any, tuple[int, ...], int, int]:
    t = value.type
    hit = _SHAPES.get(id(t))
    if hit is None:
        shape = ir.shape_of(t)
        n = 1
        for d in shape:
            n *= d
        if len(_SHAPES) > 100_000:
            _SHAPES.clear()
        hit = _SHAPES[id(t)] = (t, shape, n, sum(1 for d in shape if d > 1))
    return hit


def shape(value: SSAValue) -> tuple[int, ...]:
    """A tensor value's shape (cached per type: xDSL rebuilds it on every call)."""
    return _shape_info(value)[1]


def _elements(value: SSAValue) -> int:
    return _shape_info(value)[2]


def _true_rank(value: SSAValue) -> int:
    return _shape_info(value)[3]


def _negligible(value: SSAValue) -> bool:
    owner = value.owner
    if isinstance(owner, ir.ConstantOp):
        return _elements(value) == 1
    return isinstance(owner, ir.PrimOp) and owner.primitive_name in ("broadcast_in_dim", "iota")


def _strict(op: Operation) -> bool:
    """XLA's duplication guard: more than one large operand and more elements read than written."""
    rank = max((_true_rank(r) for r in op.results), default=0)
    large = sum(1 for v in op.operands if not _negligible(v) and _true_rank(v) >= rank)
    if large <= 1:
        return False
    read = sum(_elements(v) for v in set(op.operands))
    return read > sum(_elements(r) for r in op.results)


def _always_duplicable(op: ir.PrimOp) -> bool:
    if op.primitive_name == "broadcast_in_dim":
        return True
    if op.primitive_name == "convert_element_type":
        src, dst = op.operands[0].type, op.results[0].type
        return ir.ITEMSIZE[ir.dtype_of(src)] < ir.ITEMSIZE[ir.dtype_of(dst)]
    return False


def _fusible(op: Operation) -> bool:
    if isinstance(op, ir.PrimOp):
        return op.primitive_name in LOOP_FUSIBLE
    return isinstance(op, ir.AllSliceOp)  # a dynamic slice once emitted


def _dot_dims(dot: ir.PrimOp, operand: int) -> tuple[Sequence[int], Sequence[int]]:
    (lc, rc), (lb, rb) = dot.params.find("dimension_numbers")
    return (lb, lc) if operand == 0 else (rb, rc)


def is_matrix_layout(shape: Sequence[int], batch: Sequence[int], contract: Sequence[int]) -> bool:
    """Whether a dot operand is, per batch element, a plain (or transposed) row-major matrix.

    XLA's CPU dot kernels take an operand whose batch dims come first and whose free and
    contracting dims form two contiguous blocks; anything else is copied to that layout
    first (`DotDecomposer`). Size-1 dims do not count.

    Args:
      shape: the operand's shape.
      batch: its batch dims.
      contract: its contracting dims.
    """
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    b = [d for d in batch if shape[d] != 1]
    c = [d for d in contract if shape[d] != 1]
    free = [d for d in dims if d not in b and d not in c]
    return dims in (b + free + c, b + c + free)


def _folds_into(transpose: Operation, dot: Operation) -> bool:
    """Whether XLA folds `transpose` into the operand dims of `dot` (no copy)."""
    perm = transpose.params.find("permutation")  # type: ignore[attr-defined]
    dims = shape(transpose.operands[0])
    result = transpose.results[0]
    for i, v in enumerate(dot.operands[:2]):
        if v is result:
            batch, contract = _dot_dims(dot, i)  # type: ignore[arg-type]
            if not is_matrix_layout(dims, [perm[d] for d in batch], [perm[d] for d in contract]):
                return False
    return True


def fusion_clusters(
    block: Block,
    ops: Sequence[Operation] | None = None,
    dead: set[Operation] | None = None,
    *,
    reductions_read_memory: bool = False,
) -> dict[Operation, set[int]]:
    """Which fusions each live op of one block lands in, by the rules of the module doc.

    Returns op -> the ids of the ops rooting the fusions that compute it (a fusion is named
    by the id of its root op). An op whose own id is in its set is a fusion root: XLA writes
    its result to memory. Region ops and ops that cannot fuse are their own root. Ops of
    nested regions are not included (call again on the region's block).

    Args:
      block: a device-local function body (or a region body).
      ops: ``list(block.ops)`` when the caller has it already.
      dead: `dead_ops(ops)` when the caller has it already.
      reductions_read_memory: apply the reduction rule of the module doc (an op shared with
        other fusions is written out rather than fused into a reduction). It decides which
        values are buffers, not how often XLA computes them, so the FLOP count leaves it off.
    """
    ops = list(block.ops) if ops is None else ops
    key = (id(block), reductions_read_memory)
    fingerprint = tuple(map(id, ops))
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is block and hit[1] == fingerprint:
        return hit[2]
    clusters = _clusters(block, ops, dead, reductions_read_memory)
    while len(_MEMO) >= _MEMO_SIZE:
        del _MEMO[next(iter(_MEMO))]
    _MEMO[key] = (block, fingerprint, clusters)
    return clusters


_MEMO: dict[tuple[int, bool], tuple[Block, tuple[int, ...], dict[Operation, set[int]]]] = {}
"""(id(block), reductions_read_memory) -> (block, ids of its ops, clusters) for the blocks
simulated last: a ranking loop simulates one program on several profiles, and the walker,
the memory analysis and the FLOP count each ask. Holding the block and its ops keeps their
ids unique; `clear_caches()` empties it."""
MEMOS.append(_MEMO)
_MEMO_SIZE = 64
"""Blocks kept: a program's function body and its region bodies."""


def _clusters(
    block: Block,
    ops: Sequence[Operation],
    dead: set[Operation] | None,
    reductions_read_memory: bool,
) -> dict[Operation, set[int]]:
    dead = dead_ops(ops) if dead is None else dead
    # id(value) -> the live ops of this block reading it (a region op for reads inside it);
    # built from operands, which is much faster than walking xDSL's use lists
    readers: dict[int, list[Operation]] = {}
    for op in ops:
        if dead and op in dead:
            continue
        for v in op.operands:
            got = readers.get(id(v))
            if got is None:
                readers[id(v)] = [op]
            else:
                got.append(op)
        if op.regions:
            for inner in op.walk():
                if inner is not op:
                    for v in inner.operands:
                        readers.setdefault(id(v), []).append(op)
    clusters: dict[Operation, set[int]] = {}
    reduce_roots: set[int] = set()
    folded: set[Operation] = set()
    for op in reversed(ops):
        if dead and op in dead:
            continue
        if op.regions or not _fusible(op):
            clusters[op] = {id(op)}
            continue
        name = op.primitive_name if isinstance(op, ir.PrimOp) else ""
        results = op.results
        if len(results) == 1:
            users = readers.get(id(results[0]), [])
        else:
            users = [u for r in results for u in readers.get(id(r), ())]
        if (
            name == "transpose"
            and users
            and all(
                isinstance(u, ir.PrimOp)
                and u.primitive_name == "dot_general"
                and _folds_into(op, u)
                for u in users
            )
        ):
            clusters[op] = {id(u) for u in users}
            folded.add(op)  # a view the dots read: its producers are written out
            continue
        mine: set[int] = set()
        unfusible_user = written = False
        shared = len(users) > 1
        for user in users:
            theirs = None
            if not user.regions and _fusible(user) and user not in folded:
                theirs = clusters.get(user)
            if theirs is None:
                unfusible_user = True
                continue
            if reductions_read_memory and shared and not reduce_roots.isdisjoint(theirs):
                written = True  # the reduction reads it from memory
                theirs = theirs - reduce_roots
            mine |= theirs
        if unfusible_user or written or not mine:
            mine.add(id(op))
        if len(mine) > 1 and isinstance(op, ir.PrimOp):
            expensive = name in EXPENSIVE and not _always_duplicable(op)
            if expensive or (unfusible_user and _strict(op)):
                mine = {id(op)}
        clusters[op] = mine
        if name in _YNN_REDUCTIONS and id(op) in mine:
            reduce_roots.add(id(op))
    return clusters


def xla_flops(block: Block, flops_of: Callable[[Operation], float]) -> float:
    """Estimated `cost_analysis()["flops"]` of the compiled program of one block.

    Args:
      block: a device-local function body (or a region body).
      flops_of: the FLOPs of one run of one op (compute ops and collectives), e.g. from the
        simulator's cost cache.
    """
    total = 0.0
    for op, mine in fusion_clusters(block).items():
        if op.regions:
            bodies = [xla_flops(r.block, flops_of) for r in op.regions]
            total += max(bodies) if isinstance(op, ir.CondOp) else sum(bodies)
        else:
            total += flops_of(op) * len(mine)
    return total
