"""Walk a device-local program: per-op cost, per-collective cost, and the two step times.

Time, no overlap: the sum of every op's roofline time and every collective's time.

Time, full overlap: two in-order streams, compute and communication. An op starts when its
operands are ready and its stream is free; a collective therefore overlaps with any compute
that does not need its result, and compute waits only for the collectives it consumes (a
latency-hiding scheduler's best case; bandwidth shared between the streams is not modelled).
A region op runs alone: both streams wait for it.

Fusion: XLA fuses elementwise, movement and reduction ops into loop fusions
(`partir.simulator.fusion`), so such an op's memory traffic is only what crosses its
fusion's boundary: it reads an operand from memory unless the operand's producer is fused
into every fusion the op is in, and writes its result only if it roots a fusion. Its
roofline uses those bytes (its FLOPs are unchanged). Matrix kernels, collectives and
region ops read and write every operand and result. On a profile with a per-kernel
overhead (`Hardware.kernel_overhead_s`, the CPU), every fusion root also costs that
overhead on top of its roofline time.

Loops: a scan costs `length` times its body; a while loop costs its condition and body once
(its trip count is not known statically; XLA's HloCostAnalysis does the same); a cond costs
its most expensive branch; a remat region costs its body once.

Costs are cached per (primitive, local types, parameters) in a process-wide table, per
hardware for times, and per op object (weakly), so re-simulating a program, or another program
of the same model, mostly hits the cache. An op changed in place after it was simulated keeps
its cached cost unless its first result type changed, and the memory analysis of the last
programs is kept while their ops are the same objects: call `clear_caches()` after such
edits.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np
from xdsl.ir import Block, Operation

from partir import ir
from partir.simulator import collectives as _collectives  # noqa: F401  (registers the costs)
from partir.simulator.analysis import MEMOS as MEMOS
from partir.simulator.analysis import dead_ops as dead_ops
from partir.simulator.collectives import KIND_OF, CollectiveSig, CommCost
from partir.simulator.costs import (
    COSTS,
    ELEMENTWISE,
    HEAVY,
    OpCost,
    compute_cost,
    roofline_time,
    signature_of,
)
from partir.simulator.fusion import fusion_clusters
from partir.simulator.hardware import Hardware, SimulatorError
from partir.simulator.topology import AxisLink, Topology

_TYPES: dict[int, Any] = {}
"""id(type) -> type: keeps every type of a cached key alive, so a key's ids stay unique."""
_COSTS: dict[tuple[Any, ...], OpCost] = {}
_TIMES: dict[Hardware, dict[tuple[Any, ...], tuple[OpCost, float, str, bool]]] = {}
_COMMS: dict[tuple[Hardware, Topology], dict[tuple[Any, ...], CommCost]] = {}
_BY_OP: dict[Hardware, weakref.WeakKeyDictionary[Operation, tuple[Any, Any]]] = {}
"""Per hardware, op -> (its cost entry, its first result type): re-simulating skips the key."""
_CACHE_LIMIT = 200_000
_FREE = (OpCost(), 0.0, "float32", False)

_FOLDABLE = {"add": 0, "add_any": 0, "sub": 0, "mul": 1, "div": 1}
"""Binary ops XLA's algebraic simplifier removes when one side is a constant 0 (1 for mul/div)."""
_ONE_BITS = {
    "float32": 0x3F800000, "float64": 0x3FF0000000000000, "float16": 0x3C00, "bfloat16": 0x3F80,
}  # fmt: skip
_UINT = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}


def clear_caches() -> None:
    """Forget every cached op cost, time and memory analysis (after changing a registered
    cost function, or a program in place)."""
    _TYPES.clear()
    _COSTS.clear()
    _BY_OP.clear()
    _TIMES.clear()
    _COMMS.clear()
    for memo in MEMOS:
        memo.clear()


def _constant_is(op: ir.ConstantOp, identity: int) -> bool:
    dtype = op.dtype
    raw = np.frombuffer(op.value.data, dtype=_UINT[ir.ITEMSIZE[dtype]])
    if identity == 0:
        if dtype in _ONE_BITS:
            sign = np.uint64(1) << np.uint64(8 * ir.ITEMSIZE[dtype] - 1)
            return bool(np.all((raw.astype(np.uint64) & ~sign) == 0))
        return bool(np.all(raw == 0))
    return bool(np.all(raw == _ONE_BITS.get(dtype, 1)))


def is_folded(op: ir.PrimOp, cache: dict[Operation, bool] | None = None) -> bool:
    """Whether XLA's algebraic simplifier removes `op`: x + 0, x - 0, x * 1, x / 1 (no broadcast).

    Args:
      op: a `partir.prim` op.
      cache: constant op -> whether it is the identity, shared across calls.
    """
    name = op.primitive.data
    identity = _FOLDABLE.get(name)
    operands = op.operands
    if identity is None or len(operands) != 2:
        return False
    for i, v in enumerate(operands):
        owner = v.owner
        if not isinstance(owner, ir.ConstantOp):
            continue
        if i == 0 and name in ("sub", "div"):
            continue  # 0 - x and 1 / x are real work
        if operands[1 - i].type != op.results[0].type:
            continue  # the constant broadcasts: XLA keeps a broadcast
        hit = cache.get(owner) if cache is not None else None
        if hit is None:
            hit = _constant_is(owner, identity)
            if cache is not None:
                cache[owner] = hit
        if hit:
            return True
    return False


class Walker:
    """Accumulates the costs of one block (and, recursively, its regions).

    Args:
      hardware: the device profile.
      topology: the mesh axes' links.
      mult: how many times the block runs per step (a scan body: its length).

    Attributes hold totals over the block, each op counted `mult` times; `records` holds
    ``(op, count, cost, seconds)`` per op, `OpCost` for compute ops and `CommCost` for
    collectives.
    """

    def __init__(self, hardware: Hardware, topology: Topology, mult: float = 1.0):
        self.hw = hardware
        self.topology = topology
        self.mult = mult
        self.times = _TIMES.setdefault(hardware, {})
        self.by_op = _BY_OP.setdefault(hardware, weakref.WeakKeyDictionary())
        self.comms = _COMMS.setdefault((hardware, topology), {})
        self.records: list[tuple[Operation, float, OpCost | CommCost, float]] = []
        self.flops = 0.0
        self.transcendentals = 0.0
        self.bytes_accessed = 0.0
        self.compute_s = 0.0
        self.comm_s = 0.0
        self.comm_bytes = 0.0
        self.heavy_flops: dict[str, float] = {}
        self.compute_free = 0.0
        self.comm_free = 0.0
        self.ready: dict[int, float] = {}  # id(value) -> when it is ready (values outlive us)
        self.folded: dict[Operation, bool] = {}
        self.kernels: set[Operation] | None = None
        """The ops XLA launches as kernels (fusion roots), when the profile charges a
        per-kernel overhead."""
        self.loop_reads: set[int] = set()
        """ids of values a same-shape elementwise loop has read (multi-output fusion)."""
        self.clusters: dict[Operation, set[int]] = {}
        """Op -> ids of the fusion roots computing it (`fusion.fusion_clusters`)."""

    @property
    def makespan(self) -> float:
        """One execution of the block with full overlap (seconds, not times `mult`)."""
        return max(self.compute_free, self.comm_free)

    def _start(self, op: Operation) -> float:
        ready = self.ready
        t = 0.0
        for v in op.operands:
            r = ready.get(id(v))
            if r is not None and r > t:
                t = r
        return t

    def _finish(self, op: Operation, end: float) -> None:
        for r in op.results:
            self.ready[id(r)] = end

    def walk(
        self,
        block: Block,
        ops: Sequence[Operation] | None = None,
        dead: set[Operation] | None = None,
    ) -> Walker:
        """Cost every op of `block` in order, skipping dead code; returns self.

        Args:
          block: the block to walk.
          ops: ``list(block.ops)`` when the caller has it already.
          dead: `dead_ops(ops)` when the caller has it already.
        """
        ops = list(block.ops) if ops is None else ops
        dead = dead_ops(ops) if dead is None else dead

        clusters = fusion_clusters(block, ops, dead, reductions_read_memory=True)
        self.clusters = clusters
        if self.hw.kernel_overhead_s:
            self.kernels = {op for op, mine in clusters.items() if id(op) in mine}
        for op in ops:
            if dead and op in dead:
                continue
            kind = type(op)
            if kind is ir.PrimOp:
                self._prim(op)  # type: ignore[arg-type]
            elif kind in KIND_OF:
                self._collective(op)  # type: ignore[arg-type]
            elif kind is ir.ScanOp:
                length = int(op.params["length"])  # type: ignore[attr-defined]
                self._region(op, [op.regions[0].block], length)
            elif kind is ir.WhileOp or kind is ir.RematOp:
                self._region(op, [r.block for r in op.regions], 1)
            elif kind is ir.CondOp:
                self._cond(op)  # type: ignore[arg-type]
        return self

    # -- compute ---------------------------------------------------------------------------

    def _prim(self, op: ir.PrimOp) -> None:
        hit = self.by_op.get(op)
        results = op.results
        if hit is not None and (not results or hit[1] is results[0].type):
            entry = hit[0]
        else:
            entry = self._entry(op)
            self.by_op[op] = (entry, results[0].type if results else None)
        c, t, dtype, heavy = entry
        if not heavy and c.bytes_accessed:
            t = self._fused_time(op, c, t, dtype)
        # emulated devices sharing a host's cores: their kernels and kernel launches contend
        # (Hardware.compute_contention, dispatch_contention; 1 on accelerators)
        t *= self.hw.compute_contention
        if self.kernels is not None and op in self.kernels:
            t += self.hw.kernel_overhead_s * self.hw.dispatch_contention
        m = self.mult
        self.records.append((op, m, c, t))
        self.flops += c.flops * m
        self.transcendentals += c.transcendentals * m
        self.bytes_accessed += c.bytes_accessed * m
        self.compute_s += t * m
        if heavy:
            self.heavy_flops[dtype] = self.heavy_flops.get(dtype, 0.0) + c.flops * m
        start = self._start(op)
        if t:
            if self.compute_free > start:
                start = self.compute_free
            self.compute_free = start = start + t
        for r in results:
            self.ready[id(r)] = start

    def _fused_time(self, op: ir.PrimOp, c: OpCost, t: float, dtype: str) -> float:
        """The roofline of `op` counting only the bytes crossing its fusion's boundary."""
        mine = self.clusters.get(op)
        if not mine:
            return t
        merge = self.hw.multi_output_fusion
        moved = 0
        for v in op.operands:
            owner = v.owner
            inner = self.clusters.get(owner) if isinstance(owner, Operation) else None
            if inner is None or id(owner) in inner or not mine <= inner:
                if merge and inner is not None and _same_loop(owner, op):
                    continue  # one multi-output loop: the producer's value stays on chip
                if merge and op.primitive_name in ELEMENTWISE and v.type == op.results[0].type:
                    if id(v) in self.loop_reads:
                        continue  # sibling loops merged: the operand is read once
                    self.loop_reads.add(id(v))
                moved += ir.nbytes_of(v.type)
        if id(op) in mine:
            for r in op.results:
                if merge and r.uses and all(_same_loop(u.operation, op) for u in r.uses):
                    continue  # only read inside the merged loop: never written out
                moved += ir.nbytes_of(r.type)
        if moved >= c.bytes_accessed:
            return t
        return roofline_time(OpCost(c.flops, c.transcendentals, moved), self.hw, dtype)

    def _entry(self, op: ir.PrimOp) -> tuple[OpCost, float, str, bool]:
        name = op.primitive.data
        if name in _FOLDABLE and is_folded(op, self.folded):
            return _FREE
        key = (
            name,
            tuple([id(v.type) for v in op.operands]),
            tuple([id(v.type) for v in op.results]),
            op.params,
        )
        entry = self.times.get(key)
        return self._price(op, key) if entry is None else entry

    def _price(self, op: ir.PrimOp, key: tuple[Any, ...]) -> tuple[OpCost, float, str, bool]:
        c = _COSTS.get(key)
        if c is None:
            c = compute_cost(signature_of(op))
            if len(_COSTS) > _CACHE_LIMIT:
                clear_caches()
            for v in (*op.operands, *op.results):
                _TYPES[id(v.type)] = v.type
            _COSTS[key] = c
        types = op.operand_types or op.result_types
        dtype = ir.dtype_of(types[0]) if types else "float32"
        heavy = key[0] in HEAVY
        entry = (c, roofline_time(c, self.hw, dtype, heavy=heavy), dtype, heavy)
        self.times[key] = entry
        return entry

    # -- communication ---------------------------------------------------------------------

    def _collective(self, op: ir.CollectiveOp) -> None:
        in_t, out_t = op.input.type, op.result.type
        axes = op.axis_names
        key = (type(op), id(in_t), id(out_t), axes)
        c = self.comms.get(key)
        if c is None:
            c = self._price_collective(op, axes)
            _TYPES[id(in_t)] = in_t
            _TYPES[id(out_t)] = out_t
            self.comms[key] = c
        m = self.mult
        self.records.append((op, m, c, c.time_s))
        self.comm_s += c.time_s * m
        self.comm_bytes += c.bytes_sent * m
        self.flops += c.flops * m
        start = self._start(op)
        if self.comm_free > start:
            start = self.comm_free
        self.comm_free = start + c.time_s
        # consumers may start on the first chunks (collective matmul): Hardware.collective_overlap
        self._finish(op, self.comm_free - self.hw.collective_overlap * c.time_s)

    def _price_collective(self, op: ir.CollectiveOp, axes: tuple[str, ...]) -> CommCost:
        in_t, out_t = op.input.type, op.result.type
        try:
            group: tuple[AxisLink, ...] = tuple(self.topology[a] for a in axes)
        except SimulatorError:
            raise SimulatorError(
                f"{op.name} communicates over mesh axes {axes}, but the topology only "
                f"describes {[a.axis for a in self.topology.axes]}"
            ) from None
        in_shape, out_shape = ir.shape_of(in_t), ir.shape_of(out_t)
        itemsize = ir.ITEMSIZE[ir.dtype_of(in_t)]
        n_in = int(np.prod(in_shape, dtype=np.int64))
        n_out = int(np.prod(out_shape, dtype=np.int64))
        sig = CollectiveSig(KIND_OF[type(op)], n_in * itemsize, n_out * itemsize, n_out, group)
        result: CommCost = COSTS[type(op)](sig)
        return result

    # -- regions ---------------------------------------------------------------------------

    def _child(self, mult: float) -> Walker:
        return Walker(self.hw, self.topology, mult)

    def merge(self, child: Walker) -> None:
        """Add a child's totals and records to this walker's.

        Args:
          child: a walker over a region body, its counts already multiplied by trip counts.
        """
        self.records.extend(child.records)
        self.flops += child.flops
        self.transcendentals += child.transcendentals
        self.bytes_accessed += child.bytes_accessed
        self.compute_s += child.compute_s
        self.comm_s += child.comm_s
        self.comm_bytes += child.comm_bytes
        for d, f in child.heavy_flops.items():
            self.heavy_flops[d] = self.heavy_flops.get(d, 0.0) + f

    def _occupy(self, op: Operation, seconds: float) -> None:
        start = max(self._start(op), self.compute_free, self.comm_free)
        self.compute_free = self.comm_free = start + seconds
        self._finish(op, start + seconds)

    def _region(self, op: Operation, blocks: list[Block], trips: int) -> None:
        span = 0.0
        for block in blocks:
            child = self._child(self.mult * trips).walk(block)
            self.merge(child)
            span += _iteration_time(child, trips) * trips
        self._occupy(op, span)

    def _cond(self, op: ir.CondOp) -> None:
        best: Walker | None = None
        for region in op.regions:
            child = self._child(self.mult).walk(region.block)
            if best is None or child.compute_s + child.comm_s > best.compute_s + best.comm_s:
                best = child
        if best is not None:
            self.merge(best)
            self._occupy(op, best.makespan)
        else:
            self._finish(op, self._start(op))


def _same_loop(a: Operation | Block, b: Operation) -> bool:
    """Whether two ops are elementwise over the same shape, so that an accelerator compiler's
    multi-output fusion runs them as one loop (`Hardware.multi_output_fusion`)."""
    if not (isinstance(a, ir.PrimOp) and isinstance(b, ir.PrimOp)):
        return False
    if a.primitive_name not in ELEMENTWISE or b.primitive_name not in ELEMENTWISE:
        return False
    return bool(a.results and b.results) and a.results[0].type == b.results[0].type


def _iteration_time(child: Walker, trips: int) -> float:
    """One iteration of a loop body in the overlapped schedule.

    A body run once costs its makespan. A scan of several iterations is software-pipelined
    (XLA's latency-hiding scheduler and collective pipeliner): a collective whose result only
    leaves the body (a layer's gradient reduction) runs during the next iteration's compute,
    so an iteration costs the longer of its compute stream (with the waits for the
    collectives it consumes) and its total communication, never more than its makespan.
    """
    if trips <= 1 or child.mult <= 0:
        return child.makespan
    comm = child.comm_s / child.mult
    return min(child.makespan, max(child.compute_free, comm))


def op_flops(op: Operation) -> float:
    """FLOPs of one run of one op, outside a walk (uses the same cost cache).

    Args:
      op: a `partir.prim` op or an spmd collective; anything else counts 0.
    """
    if isinstance(op, ir.PrimOp):
        name = op.primitive.data
        if name in _FOLDABLE and is_folded(op):
            return 0.0
        key = (name, tuple([id(v.type) for v in op.operands]),
               tuple([id(v.type) for v in op.results]), op.params)  # fmt: skip
        c = _COSTS.get(key)
        if c is None:
            c = compute_cost(signature_of(op))
        return c.flops
    if isinstance(op, ir.AllReduceOp):
        return float(np.prod(ir.shape_of(op.result.type), dtype=np.int64))
    return 0.0
