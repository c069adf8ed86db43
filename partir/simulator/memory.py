"""Peak device memory, counted the way XLA's buffer assignment counts it.

XLA reports a compiled program's memory as ``argument + output + temp - alias``
(`compiled.memory_analysis()`): the arguments, one buffer per result that the caller gets
back, and a heap of temporaries. This module predicts that sum from the device-local program
(per device, local shapes), with XLA's rules simplified:

- **Only fusion results are buffers.** Values fused into their consumers never reach memory
  (`partir.simulator.fusion.fusion_clusters`, the rules XLA's CPU and GPU fusion follows).
  A fused value keeps its operands alive until the last fusion that recomputes it runs.
  Dead code and constants (XLA keeps those in read-only storage) take nothing.
- **Views share their operand's buffer**: reshape, squeeze, expand_dims (bitcasts), and a
  transpose of a dot result nothing else reads (XLA emits the dot transposed).
- **In place**: an elementwise fusion writes into an operand buffer of its size that dies
  there (`CanShareOperandBufferWithUser`).
- **Layout copies**: a dot operand that is not a (batch of) row-major matrices, and a
  convolution operand or result not in XLA's canonical NHWC / HWIO layout, is copied just
  before the op (`DotDecomposer`, `ConvCanonicalization`).
- **Result buffers exist for the whole step**, and a temporary may live in one of them until
  that result is written: buffers are placed largest first into the smallest free result
  buffer that fits (`BufferAssigner`'s reuse of live-out allocations); the rest go to the
  temp heap, whose size is the peak of its live bytes (XLA's heap packs it almost exactly).
- **Donation** (``donate=True``, as ``jax.jit(donate_argnums=...)``): a result reuses a
  donated argument of the same size, so it adds nothing (XLA's ``alias``).
- **Loops and branches**: a region op adds its body's temporaries while it runs (one
  iteration; a loop body's results are written in place into the loop's own buffers).

So ``peak = arguments + results - donated + max over the program of the temp heap``.
Checked against `memory_analysis()` for every zoo model and preset schedule on the 8-device
CPU mesh (benchmarks/simulator_accuracy.py: within 15%, mostly within 10%). Not modelled:
XLA's reordering of the program (its scheduler picks the order with the smallest heap),
multi-output fusion, rematerialisation.

At the peak, what is live is split into *arguments*, *outputs* (the result buffers),
*temporaries* (made or last read by the op running at the peak, including layout copies and
a region's body) and *activations* (every other buffer: values held across ops, such as the
forward pass's residuals kept for the backward pass).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Block, Operation, SSAValue

from partir import ir
from partir.ir.locations import location_of
from partir.simulator.analysis import MEMOS, dead_ops
from partir.simulator.fusion import _ELEMENTWISE, fusion_clusters, is_matrix_layout, shape

_PLURAL = {
    "argument": "arguments", "output": "outputs", "activation": "activations",
    "temporary": "temporaries",
}  # fmt: skip
_VIEWS = frozenset({"reshape", "squeeze", "expand_dims"})
_MAX_PROBES = 64
"""Result buffers tried per size class before a temporary goes to the heap (bounds the time
of the placement on programs with thousands of results; XLA tries them all)."""

_MEMO: dict[tuple[int, bool, int], tuple[Block, tuple[int, ...], MemoryProfile]] = {}
"""(id(block), donate, top) -> (block, ids of its ops, result) for the last few programs: a
ranking loop re-simulates the same program on several profiles. Holding the block and its
ops keeps their ids unique; `clear_caches()` empties it."""
MEMOS.append(_MEMO)
_MEMO_SIZE = 2

_SIZES: dict[int, tuple[Any, int]] = {}
"""id(type) -> (type, bytes); the type is kept so its id stays unique."""


def value_bytes(value: SSAValue) -> int:
    """Bytes of one tensor value's buffer (its local shape times the dtype's item size)."""
    t = value.type
    hit = _SIZES.get(id(t))
    if hit is None:
        n = ir.nbytes_of(t)
        hit = _SIZES[id(t)] = (t, n)
        if len(_SIZES) > 100_000:
            _SIZES.clear()
            _SIZES[id(t)] = hit
    return hit[1]


@dataclass(frozen=True)
class LiveValue:
    """One buffer live at the peak.

    Attributes:
      description: the argument's pytree path, or ``"primitive at file:line"``.
      category: ``"argument"``, ``"output"``, ``"activation"`` or ``"temporary"``.
      bytes: its size on one device.
    """

    description: str
    category: str
    bytes: int


@dataclass(frozen=True)
class MemoryProfile:
    """Peak memory of one device, what is live at the peak, and the memory over time.

    Attributes:
      peak_bytes: arguments + result buffers - donated + the temp heap's peak: what XLA's
        ``memory_analysis()`` reports as argument + output + temp - alias.
      argument_bytes: all function arguments together.
      output_bytes: all function results together.
      by_category: bytes live at the peak: ``arguments``, ``outputs``, ``activations``,
        ``temporaries``; they add up to `peak_bytes`.
      live_at_peak: the largest buffers live at the peak, largest first (at most 20).
      peak_op: the op running at the peak (None: at entry).
      donated: whether arguments were treated as donated.
      timeline: bytes in use while each live op of the function body runs, in program order
        (arguments, result buffers and the temp heap then); its maximum is `peak_bytes`.
      timeline_ops: the op of each `timeline` entry.
    """

    peak_bytes: int
    argument_bytes: int
    output_bytes: int
    by_category: dict[str, int] = field(hash=False)
    live_at_peak: tuple[LiveValue, ...]
    peak_op: Operation | None = field(default=None, compare=False, repr=False)
    donated: bool = False
    timeline: tuple[int, ...] = field(default=(), compare=False, repr=False)
    timeline_ops: tuple[Operation, ...] = field(default=(), compare=False, repr=False)

    @property
    def peak_location(self) -> str:
        """The op at the peak, as ``"primitive at file:line"`` (``"entry"`` before any op)."""
        return _describe_op(self.peak_op) if self.peak_op is not None else "entry"


def _describe_op(op: Operation) -> str:
    name = getattr(op, "primitive_name", None) or op.name
    return f"{name} at {location_of(op)}"


# ---------------------------------------------------------------------------------------
# Buffers of one block
# ---------------------------------------------------------------------------------------


@dataclass
class _Buffer:
    size: int
    start: int
    end: int
    value: SSAValue | None  # None: a layout copy
    op: Operation


def _layout_copies(op: ir.PrimOp) -> int:
    """Bytes of the copies XLA makes to give a dot or convolution its operand layouts."""
    name = op.primitive_name
    total = 0
    if name == "dot_general":
        (lc, rc), (lb, rb) = op.params.find("dimension_numbers")
        for v, batch, contract in ((op.operands[0], lb, lc), (op.operands[1], rb, rc)):
            if not is_matrix_layout(shape(v), batch, contract):
                total += value_bytes(v)
    elif name == "conv_general_dilated":
        dn = op.params.find("dimension_numbers")
        n = len(dn.lhs_spec)
        canonical = (0, n - 1, *range(1, n - 1))  # N, C, spatial... of an NHWC array
        if tuple(dn.lhs_spec) != canonical:
            total += value_bytes(op.operands[0])
        if tuple(dn.rhs_spec) != (n - 1, n - 2, *range(n - 2)):  # O, I, spatial of HWIO
            total += value_bytes(op.operands[1])
        if tuple(dn.out_spec) != canonical:
            total += value_bytes(op.results[0])
    return total


def _buffers(
    block: Block, ops: Sequence[Operation], dead: set[Operation], outputs: Sequence[SSAValue]
) -> tuple[list[_Buffer], dict[int, int]]:
    """The buffers one block allocates (in program order) and id(value) -> buffer index.

    A buffer lives from the op that makes it to the last op reading any value stored in it
    (`len(ops)` for a value in `outputs`). Arguments have no entry.
    """
    clusters = fusion_clusters(block, ops, dead, reductions_read_memory=True)
    n = len(ops)
    index = {id(op): i for i, op in enumerate(ops)}
    last: dict[int, int] = {}  # id(value) -> last op index that reads it
    for i, op in enumerate(ops):
        mine = clusters.get(op)
        if mine is None:
            continue  # dead
        if op.regions:
            at = i
            for inner in op.walk():
                for v in inner.operands:
                    if last.get(id(v), -1) < i:
                        last[id(v)] = i
        elif len(mine) == 1:
            at = index[next(iter(mine))]
        else:
            at = max(index[c] for c in mine)
        for v in op.operands:
            if last.get(id(v), -1) < at:
                last[id(v)] = at
    for v in outputs:
        last[id(v)] = n
    buffers: list[_Buffer] = []
    where: dict[int, int] = {}  # id(value) -> index in buffers
    for i, op in enumerate(ops):
        mine = clusters.get(op)
        if mine is None or id(op) not in mine or isinstance(op, ir.ConstantOp):
            continue
        name = op.primitive_name if isinstance(op, ir.PrimOp) else ""
        for r in op.results:
            b = None
            if name in _VIEWS or (name == "transpose" and _sole_dot_result(op.operands[0])):
                src = op.operands[0]
                b = where.get(id(src))
                owner = src.owner
                if b is None and (
                    not isinstance(owner, Operation)
                    or owner.parent is not block
                    or isinstance(owner, ir.ConstantOp)
                ):
                    b = -1  # a view of an argument or a constant: no buffer of its own
            elif name in _ELEMENTWISE:
                size = value_bytes(r)
                for v in op.operands:
                    k = where.get(id(v))
                    if k is not None and buffers[k].end == i and buffers[k].size == size:
                        b = k  # written in place over an operand that dies here
                        break
            if b is None:
                b = len(buffers)
                buffers.append(_Buffer(value_bytes(r), i, i, r, op))
            if b >= 0:
                where[id(r)] = b
                buf = buffers[b]
                end = last.get(id(r), i)
                if end > buf.end:
                    buf.end = end
        if name in ("dot_general", "conv_general_dilated"):
            copies = _layout_copies(op)  # type: ignore[arg-type]
            if copies:
                buffers.append(_Buffer(copies, i, i, None, op))
    return buffers, where


def _sole_dot_result(value: SSAValue) -> bool:
    owner = value.owner
    if not (isinstance(owner, ir.PrimOp) and owner.primitive_name == "dot_general"):
        return False
    first = value.first_use
    return first is not None and first._next_use is None  # pyright: ignore[reportPrivateUsage]


def _region_heap(op: Operation) -> int:
    """Peak bytes a region op's body adds while it runs (the largest over its regions)."""
    extra = 0
    for region in op.regions:
        block = region.block
        ops = list(block.ops)
        yields = list(ops[-1].operands) if ops else []
        dead = dead_ops(ops)
        buffers, where = _buffers(block, ops, dead, yields)
        in_place = {where.get(id(v)) for v in yields}  # written into the loop's buffers
        heap = [b for k, b in enumerate(buffers) if k not in in_place]
        curve = _heap_curve(heap, ops, dead)
        extra = max(extra, max(curve, default=0))
    return extra


def _heap_curve(
    heap: Sequence[_Buffer], ops: Sequence[Operation], dead: set[Operation]
) -> list[int]:
    """Live heap bytes while each op runs (region ops add their body's heap)."""
    n = len(ops)
    delta = [0] * (n + 2)
    for b in heap:
        delta[b.start] += b.size
        delta[min(b.end, n) + 1] -= b.size
    for i, op in enumerate(ops):
        if op.regions and op not in dead:
            extra = _region_heap(op)
            delta[i] += extra
            delta[i + 1] -= extra
    curve = []
    live = 0
    for i in range(n):
        live += delta[i]
        curve.append(live)
    return curve


def _place_in_results(temps: list[_Buffer], results: list[_Buffer], n: int) -> list[_Buffer]:
    """Put temporaries into result buffers not yet written (largest first, smallest result
    that fits, no overlap in time); returns the temporaries left for the heap."""
    by_size: dict[int, list[tuple[int, list[tuple[int, int]]]]] = {}
    for r in results:
        # a result buffer is free before its value is made: [0, start) is usable
        by_size.setdefault(r.size, []).append((r.start, []))
    sizes = sorted(by_size)
    heap = []
    for t in sorted(temps, key=lambda b: -b.size):
        placed = False
        for size in sizes[bisect.bisect_left(sizes, t.size) :]:
            probes = 0
            for until, used in by_size[size]:
                if t.end >= until:
                    continue
                probes += 1
                if probes > _MAX_PROBES:
                    break
                k = bisect.bisect_left(used, (t.start, t.start))
                if (k == 0 or used[k - 1][1] < t.start) and (k == len(used) or used[k][0] > t.end):
                    used.insert(k, (t.start, t.end))
                    placed = True
                    break
            if placed:
                break
        if not placed:
            heap.append(t)
    return heap


def _arg_names(block: Block) -> dict[SSAValue, str]:
    parent = block.parent_op()
    names: dict[SSAValue, str] = {}
    if isinstance(parent, func.FuncOp) and parent.arg_attrs is not None:
        for arg, attrs in zip(block.args, parent.arg_attrs.data, strict=False):
            path = attrs.data.get("partir.path")  # type: ignore[attr-defined]
            if isinstance(path, StringAttr):
                names[arg] = path.data
    return names


def liveness(
    block: Block,
    *,
    donate: bool = False,
    top: int = 20,
    ops: Sequence[Operation] | None = None,
    dead: set[Operation] | None = None,
) -> MemoryProfile:
    """Peak memory of a function body, as XLA's buffer assignment would count it.

    Args:
      block: the function's entry block (a device-local program's ``func.func`` body).
      donate: the arguments are donated: a result may reuse an argument's buffer of the same
        size (``jax.jit(donate_argnums=...)``).
      top: how many of the largest live buffers to list in `MemoryProfile.live_at_peak`.
      ops: ``list(block.ops)`` when the caller has it already.
      dead: `dead_ops(ops)` when the caller has it already.
    """
    ops = list(block.ops) if ops is None else ops
    key = (id(block), donate, top)
    fingerprint = tuple(map(id, ops))
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is block and hit[1] == fingerprint:
        return hit[2]
    result = _liveness(block, ops, dead_ops(ops) if dead is None else dead, donate, top)
    if len(_MEMO) >= _MEMO_SIZE:
        del _MEMO[next(iter(_MEMO))]
    _MEMO[key] = (block, fingerprint, result)
    return result


def _liveness(
    block: Block, ops: Sequence[Operation], dead: set[Operation], donate: bool, top: int
) -> MemoryProfile:
    n = len(ops)
    outputs = list(ops[-1].operands) if ops else []
    buffers, where = _buffers(block, ops, dead, outputs)
    argument_bytes = sum(value_bytes(a) for a in block.args)
    output_bytes = sum(value_bytes(v) for v in outputs)
    result_ids = {where[id(v)] for v in outputs if id(v) in where}
    results = [buffers[k] for k in sorted(result_ids)]
    aliased = 0
    if donate:
        free = sorted(value_bytes(a) for a in block.args)
        for r in results:
            k = bisect.bisect_left(free, r.size)
            if k < len(free) and free[k] == r.size:
                aliased += free.pop(k)
    temps = [b for k, b in enumerate(buffers) if k not in result_ids]
    heap = _place_in_results(temps, results, n)
    curve = _heap_curve(heap, ops, dead)
    base = argument_bytes + output_bytes - aliased
    live_ops = [i for i in range(n) if ops[i] not in dead] if dead else list(range(n))
    p = max(live_ops, key=curve.__getitem__, default=-1)
    heap_peak = curve[p] if p >= 0 else 0
    live: list[tuple[int, str, Any]] = [(value_bytes(a), "argument", a) for a in block.args]
    live += [(value_bytes(v), "output", v) for v in outputs]
    totals = {"arguments": argument_bytes, "outputs": output_bytes - aliased,
              "activations": 0, "temporaries": 0}  # fmt: skip
    for b in heap:
        if b.start <= p <= b.end:
            category = "temporary" if p in (b.start, b.end) else "activation"
            totals[_PLURAL[category]] += b.size
            live.append((b.size, category, b))
    totals["temporaries"] += heap_peak - totals["activations"] - totals["temporaries"]
    live.sort(key=lambda t: -t[0])
    names = _arg_names(block)
    described = tuple(
        LiveValue(_describe(x, category, names), category, size) for size, category, x in live[:top]
    )
    return MemoryProfile(
        peak_bytes=int(base + heap_peak),
        argument_bytes=argument_bytes,
        output_bytes=output_bytes,
        by_category=totals,
        live_at_peak=described,
        peak_op=ops[p] if p >= 0 else None,
        donated=donate,
        timeline=tuple(base + curve[i] for i in live_ops),
        timeline_ops=tuple(ops[i] for i in live_ops),
    )


def _describe(x: Any, category: str, names: dict[SSAValue, str]) -> str:
    if category == "argument":
        return names.get(x, f"argument {x.index}")
    if category == "output":
        owner = x.owner
        return f"result of {_describe_op(owner)}" if isinstance(owner, Operation) else "result"
    if x.value is None:
        return f"layout copy for {_describe_op(x.op)}"
    return _describe_op(x.op)
