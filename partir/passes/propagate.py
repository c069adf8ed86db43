"""Sharding propagation: per mesh axis, over factors, to a fixed point.

The engine keeps, for every value, its sharding (per dimension an ordered list of mesh
axes, plus pending-reduction axes) and, per (value, axis), where that decision came from.
A tactic seeds shardings on one axis and calls `Propagator.propagate(axis)`:

- each op is seen through its factor rule (`partir.rules`); region ops (scan, while,
  cond, remat) through identity edges that tie operands, block arguments, yields and
  results together, so a loop carry keeps one sharding;
- when exactly one factor of an op is claimed on the axis by some operand or result,
  the axis is copied to every other tensor of the op that has that factor (forward and
  backward); a reduce factor makes the results partial;
- partial (pending-sum) values flow through ops that are linear in them, so three
  partial gradients added together are reduced once;
- two factors of one op claimed on one axis is a `Conflict`: nothing propagates through
  that op on that axis, and lowering resolves it with communication.

A decision, once made, is never changed: earlier tactics win. Each op's edges are
visited only when one of its values gains the axis, so a propagation is linear in the
program size.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp
from xdsl.dialects.shard import ReductionKind
from xdsl.ir import Attribute, BlockArgument, Operation, OpResult, Region, SSAValue

from partir import ir
from partir.passes.edges import (
    LINEAR,
    Edge,
    Linear,
    identity_rule,
    is_zero,
    location_of,
    region_groups,
)
from partir.passes.state import Claim, Conflict, Misaligned, Origin, ShardingState
from partir.rules import FactorKind, OpRule, get_rule


class Propagator:
    """Sharding state of one program and the propagation engine over it."""

    def __init__(self, module: ModuleOp, mesh: ir.MeshAttr):
        self.module = module
        self.mesh = mesh
        self.sizes = mesh.sizes
        self.state = ShardingState()
        """What propagation decided so far (`copy` snapshots it)."""
        self._edges: dict[SSAValue, list[Edge]] = collections.defaultdict(list)
        self._build_edges()

    # The state's fields, read (and, by the engine, changed in place) through the
    # propagator, as tactics, the search and plans have always read them.

    @property
    def dims(self) -> dict[SSAValue, list[list[str]]]:
        """value -> per dimension, the mesh axes tiling it (major to minor)."""
        return self.state.dims

    @property
    def partial(self) -> dict[SSAValue, list[str]]:
        """value -> the axes it is a pending reduction over."""
        return self.state.partial

    @property
    def reduction(self) -> dict[SSAValue, ReductionKind]:
        """value -> the kind of its pending reduction (absent: sum)."""
        return self.state.reduction

    @property
    def pinned(self) -> set[tuple[SSAValue, str]]:
        """(value, axis) kept replicated."""
        return self.state.pinned

    @property
    def origin(self) -> dict[tuple[SSAValue, str], Origin]:
        """(value, axis) -> why the value holds the axis."""
        return self.state.origin

    @property
    def conflicts(self) -> list[Conflict]:
        """Every conflict recorded, in order."""
        return self.state.conflicts

    @property
    def barriers(self) -> collections.Counter[str]:
        """Primitives without a rule, by how many ops of them propagation cannot cross."""
        return self.state.barriers

    @property
    def visits(self) -> int:
        """Edge visits so far: propagation work, linear in the program size."""
        return self.state.visits

    # -- structure -------------------------------------------------------------------

    def _add_edge(self, edge: Edge) -> None:
        for v in edge.values:
            if not self._edges[v] or self._edges[v][-1] is not edge:
                self._edges[v].append(edge)

    def _build_edges(self) -> None:
        for op in self.module.walk():
            if isinstance(op, ir.PrimOp):
                if op.primitive_name == "shard_map":
                    # the user's per-device region ties no operand dim to a result dim:
                    # nothing flows through it; its specs seed both sides (the API does)
                    continue
                rule = get_rule(op)
                if rule is None:
                    self.barriers[op.primitive_name] += 1
                    continue
                values = [*op.args, *op.outs]
                self._add_edge(Edge(op, rule, values, len(op.args), LINEAR.get(op.primitive_name)))
            elif isinstance(op, ir.RegionPrimOp):
                for values, offsets in region_groups(op):
                    shapes = [ir.shape_of(v.type) for v in values]
                    stacked = [o == 1 for o in offsets]
                    rule = identity_rule(shapes, offsets, stacked)
                    self._add_edge(Edge(op, rule, list(values), len(values)))

    def copy(self) -> Propagator:
        """A snapshot of the sharding state that can be changed without touching this one.

        The program, the mesh and the edges are shared (propagation never changes them);
        the shardings, pins, origins and conflicts are copied. Searches use it to try a
        tactic on the state earlier tactics left, then throw the copy away.
        """
        new = Propagator.__new__(Propagator)
        new.module, new.mesh, new.sizes = self.module, self.mesh, self.sizes
        new.state = self.state.copy()
        new._edges = self._edges
        return new

    def entry(self) -> func.FuncOp:
        """The program's entry function."""
        return next(op for op in self.module.ops if isinstance(op, func.FuncOp))

    # -- queries ---------------------------------------------------------------------

    def sharding(self, value: SSAValue) -> ir.Sharding:
        """The current sharding of `value`."""
        rank = len(ir.shape_of(value.type))
        dims = self.dims.get(value)
        partial = tuple(self.partial.get(value, ()))
        return ir.Sharding(
            tuple(tuple(d) for d in dims) if dims else ((),) * rank,
            partial,
            self.reduction.get(value, ReductionKind.SUM),
        )

    def axes_of(self, value: SSAValue) -> set[str]:
        """Every axis the value uses, tiled or partial."""
        out = set(self.partial.get(value, ()))
        for d in self.dims.get(value, ()):
            out.update(d)
        return out

    def dim_of(self, value: SSAValue, axis: str) -> int | None:
        """The dimension `axis` tiles in `value`, or None."""
        for d, axes in enumerate(self.dims.get(value, ())):
            if axis in axes:
                return d
        return None

    def is_decided(self, value: SSAValue) -> bool:
        """Whether any tactic decided something about `value` (an axis or a pin)."""
        return value in self.dims or value in self.partial or value in self.state.pinned_values

    # -- mutation ---------------------------------------------------------------------

    def _set_dim(self, value: SSAValue, dim: int, axis: str, origin: Origin) -> None:
        dims = self.dims.get(value)
        if dims is None:
            dims = self.dims[value] = [[] for _ in ir.shape_of(value.type)]
        dims[dim].append(axis)
        self.origin[(value, axis)] = origin

    def _set_partial(
        self, value: SSAValue, axis: str, reduction: ReductionKind, origin: Origin
    ) -> None:
        self.partial.setdefault(value, []).append(axis)
        self.reduction[value] = reduction
        self.origin[(value, axis)] = origin

    def pin(self, value: SSAValue, axis: str, tactic: int) -> bool:
        """Keep `value` replicated on `axis`: propagation will never shard it there.

        Returns False (and records a conflict) if it already uses the axis."""
        if axis in self.axes_of(value):
            other = self.origin.get((value, axis), Origin(tactic)).tactic
            dim = self.dim_of(value, axis)
            held = "partial" if dim is None else f"tiled along dim {dim}"
            self._record(
                axis,
                None,
                [(value, held, other), (value, "replicated", tactic)],
                location_of(_first_user(value)),
            )
            return False
        self.pinned.add((value, axis))
        self.state.pinned_values.add(value)
        self.origin.setdefault((value, axis), Origin(tactic))
        return True

    def seed(self, value: SSAValue, dim: int, axis: str, tactic: int) -> bool:
        """Tile `value` along `dim` on `axis`; returns False (and records a conflict) if it
        already uses `axis` differently, was pinned, or cannot be tiled that way."""
        current = self.dim_of(value, axis)
        if current == dim:
            return True
        reason = None
        if current is not None:
            reason = f"tiled along dim {current}"
        elif axis in self.partial.get(value, ()):
            reason = "partial"
        elif (value, axis) in self.pinned:
            reason = "replicated"
        if reason is not None:
            other = self.origin.get((value, axis), Origin(tactic)).tactic
            self._record(
                axis,
                None,
                [(value, reason, other), (value, f"tiled along dim {dim}", tactic)],
                location_of(_first_user(value)),
            )
            return False
        self._set_dim(value, dim, axis, Origin(tactic))
        return True

    def _record(
        self,
        axis: str,
        op: Operation | None,
        claims: list[tuple[SSAValue, str, int]],
        location: str,
    ) -> None:
        key = (id(op) if op is not None else id(claims[0][0]), axis)
        if key in self.state.conflict_keys:
            return
        self.state.conflict_keys.add(key)
        tactics = tuple(sorted({t for _, _, t in claims}))
        self.conflicts.append(Conflict(axis, op, tuple(claims), tactics, location))

    # -- propagation -----------------------------------------------------------------

    def propagate(self, axis: str, tactic: int, seeds: Iterable[SSAValue]) -> None:
        """Propagate `axis` from `seeds` (and everything they reach) to a fixed point."""
        queue: collections.deque[Edge] = collections.deque()
        queued: set[int] = set()

        def enqueue(value: SSAValue) -> None:
            for edge in self._edges.get(value, ()):
                if id(edge) not in queued:
                    queued.add(id(edge))
                    queue.append(edge)

        for v in seeds:
            enqueue(v)
        while queue:
            edge = queue.popleft()
            queued.discard(id(edge))
            self.state.visits += 1
            for changed in self._visit(edge, axis, tactic):
                enqueue(changed)

    def _factor_at(
        self, rule: OpRule, factors: tuple[str, ...], before: int, size: int
    ) -> str | None:
        """The factor an axis of `size` lands in when `before` devices already tile the dim."""
        cum = 1
        for f in factors:
            fsize = rule.size(f)
            if before % cum == 0 and (cum * fsize) % (before * size) == 0 and before < cum * fsize:
                return f
            cum *= fsize
        return None

    def _product(self, axes: Iterable[str]) -> int:
        n = 1
        for a in axes:
            n *= self.sizes[a]
        return n

    def _tensor_dims(self, edge: Edge, i: int) -> tuple[tuple[str, ...], ...]:
        rule = edge.rule
        return rule.operands[i] if i < len(rule.operands) else rule.results[i - len(rule.operands)]

    def _visit(self, edge: Edge, axis: str, tactic: int) -> list[SSAValue]:
        claims, partial_idx = self._claims(edge, axis)
        if len(claims) > 1:
            self._conflict(edge, axis, claims)
            return []
        if not claims:
            return self._flow_partial(edge, axis, tactic, partial_idx)
        ((factor, holders),) = claims.items()
        if isinstance(factor, Misaligned) or edge.rule.kind(factor) is FactorKind.REPLICATE:
            return []
        return self._carry(edge, axis, tactic, factor, edge.values[holders[0]])

    def _claims(self, edge: Edge, axis: str) -> tuple[dict[Claim, list[int]], list[int]]:
        """The factors the edge's values claim on `axis` (claim -> value indices; an
        axis that fits no factor of its dim claims `Misaligned`), and the indices of the
        values that are pending sums over it."""
        claims: dict[Claim, list[int]] = {}
        partial_idx: list[int] = []
        for i, v in enumerate(edge.values):
            dims = self.dims.get(v)
            if dims is not None:
                for d, axes in enumerate(dims):
                    if axis in axes:
                        tdims = self._tensor_dims(edge, i)
                        before = self._product(axes[: axes.index(axis)])
                        f = self._factor_at(edge.rule, tdims[d], before, self.sizes[axis])
                        claims.setdefault(f if f is not None else Misaligned(i), []).append(i)
                        break
            if axis in self.partial.get(v, ()):
                partial_idx.append(i)
        return claims, partial_idx

    def _carry(
        self, edge: Edge, axis: str, tactic: int, factor: str, source: SSAValue
    ) -> list[SSAValue]:
        """Give `axis` to every value of the edge that has `factor` (pending sums to the
        results a reduce factor leaves out); returns the values changed."""
        rule = edge.rule
        src_origin = self.origin.get((source, axis))
        origin = Origin(tactic if src_origin is None else src_origin.tactic, edge.op, source)
        changed: list[SSAValue] = []
        reduce = rule.kind(factor) is FactorKind.REDUCE
        for i, v in enumerate(edge.values):
            tdims = self._tensor_dims(edge, i)
            dim = next((d for d, fs in enumerate(tdims) if factor in fs), None)
            if dim is None:
                if reduce and i >= edge.num_operands and self._can_hold(v, axis):
                    if all(self._safe_whole(edge, j, axis) for j in range(edge.num_operands)):
                        self._set_partial(
                            v,
                            axis,
                            ReductionKind(rule.reduction),
                            Origin(origin.tactic, edge.op, source, True),
                        )
                        changed.append(v)
                continue
            if self.dim_of(v, axis) is not None:
                continue
            if (v, axis) in self.pinned:
                pin = self.origin.get((v, axis), Origin(-1)).tactic
                self._record(
                    axis,
                    edge.op,
                    [(v, "replicated", pin), (source, f"factor {factor}", origin.tactic)],
                    location_of(edge.op),
                )
                continue
            if not self._can_hold(v, axis):
                continue
            axes = self.dims.get(v, [[]] * len(tdims))[dim]
            if self._factor_at(rule, tdims[dim], self._product(axes), self.sizes[axis]) != factor:
                continue
            self._set_dim(v, dim, axis, origin)
            changed.append(v)
        return changed

    def _can_hold(self, value: SSAValue, axis: str) -> bool:
        return axis not in self.axes_of(value) and (value, axis) not in self.pinned

    def _safe_whole(self, edge: Edge, j: int, axis: str) -> bool:
        """An operand lacking the reduce factor is summed |axis| times unless it is zero."""
        tdims = edge.rule.operands[j]
        reduce = edge.rule.reduce
        if any(f in reduce for fs in tdims for f in fs):
            return True
        v = edge.values[j]
        if (
            edge.op is not None
            and isinstance(edge.op, ir.PrimOp)
            and edge.op.primitive_name
            in ("dot_general", "reduce_sum", "reduce_max", "reduce_min", "conv_general_dilated")
        ):
            return True  # every operand of these has the reduce factor or is an init value
        return is_zero(v)

    def _flow_partial(
        self, edge: Edge, axis: str, tactic: int, partial_idx: list[int]
    ) -> list[SSAValue]:
        if (
            not partial_idx
            or edge.linear is None
            or any(i >= edge.num_operands for i in partial_idx)
        ):
            return []
        operands = edge.values[: edge.num_operands]
        kinds = {self.reduction.get(operands[i], ReductionKind.SUM) for i in partial_idx}
        if kinds != {ReductionKind.SUM}:
            return []
        # A partial sum with several consumers is reduced once, where it is made: carried
        # into each consumer it would be reduced once per path instead.
        if any(_use_count(operands[i]) != 1 for i in partial_idx):
            return []
        mode = edge.linear
        # x + c is not a sum of (shard + c): every operand of an "all" op must be partial
        if mode is Linear.ALL and set(partial_idx) != set(range(len(operands))):
            return []
        if mode is Linear.ONE and len(partial_idx) != 1:
            return []
        if mode is Linear.FIRST and partial_idx != [0]:
            return []
        source = operands[partial_idx[0]]
        src_origin = self.origin.get((source, axis))
        origin = Origin(tactic if src_origin is None else src_origin.tactic, edge.op, source, True)
        changed = []
        for v in edge.values[edge.num_operands :]:
            if self._can_hold(v, axis):
                self._set_partial(v, axis, ReductionKind.SUM, origin)
                changed.append(v)
        return changed

    def _conflict(self, edge: Edge, axis: str, claims: dict[Claim, list[int]]) -> None:
        out = []
        for factor, holders in claims.items():
            for i in holders:
                v = edge.values[i]
                d = self.dim_of(v, axis)
                what = (
                    f"dim {d} (misaligned)"
                    if isinstance(factor, Misaligned)
                    else f"factor {factor} (dim {d})"
                )
                out.append((v, what, self.origin.get((v, axis), Origin(-1)).tactic))
        self._record(axis, edge.op, out, location_of(edge.op))

    # -- requirements ------------------------------------------------------------------

    def operand_requirements(self) -> dict[tuple[Operation, int], ir.Sharding]:
        """Operands whose sharding tiles a dimension their op must see whole.

        Maps (op, operand index) to the sharding the op needs instead: the same axes, less
        those on dimensions holding a replicate factor (a sliced, padded, sorted or
        windowed dimension) and those on a dimension whose axes do not align with its
        factors. Emission makes these explicit, as lowering does with an all_gather.
        """
        out: dict[tuple[Operation, int], ir.Sharding] = {}
        seen: set[int] = set()
        for edges in self._edges.values():
            for edge in edges:
                if id(edge) in seen or not isinstance(edge.op, ir.PrimOp):
                    continue
                seen.add(id(edge))
                for i in range(edge.num_operands):
                    need = self._requirement(edge, i)
                    if need is not None:
                        out[(edge.op, i)] = need
        return out

    def _requirement(self, edge: Edge, i: int) -> ir.Sharding | None:
        value = edge.values[i]
        dims = self.dims.get(value)
        if not dims:
            return None
        tdims = edge.rule.operands[i]
        new = [list(d) for d in dims]
        changed = False
        for d, axes in enumerate(dims):
            if not axes:
                continue
            ok, before = True, 1
            for axis in axes:
                f = self._factor_at(edge.rule, tdims[d], before, self.sizes[axis])
                if f is None or edge.rule.kind(f) is FactorKind.REPLICATE:
                    ok = False
                    break
                before *= self.sizes[axis]
            if not ok:
                new[d] = []
                changed = True
        if not changed:
            return None
        return ir.Sharding(
            tuple(tuple(d) for d in new),
            tuple(self.partial.get(value, ())),
            self.reduction.get(value, ReductionKind.SUM),
        )

    # -- reading back ----------------------------------------------------------------

    def chain(self, value: SSAValue, axis: str) -> list[tuple[Operation | None, SSAValue]]:
        """The ops `axis` travelled through to reach `value`, from its seed to it."""
        steps: list[tuple[Operation | None, SSAValue]] = []
        seen: set[int] = set()
        v: SSAValue | None = value
        while v is not None and id(v) not in seen:
            seen.add(id(v))
            origin = self.origin.get((v, axis))
            if origin is None:
                break
            steps.append((origin.op, v))
            v = origin.source
        steps.reverse()
        return steps

    def write_to_ir(self) -> None:
        """Record every decided sharding as IR attributes (`partir.sharding(s)`), and the mesh."""
        self.module.attributes["partir.mesh"] = self.mesh
        fn = self.entry()
        arg_attrs = (
            list(fn.arg_attrs.data)
            if fn.arg_attrs is not None
            else [DictionaryAttr({})] * len(fn.args)
        )
        for i, arg in enumerate(fn.args):
            entries = dict(arg_attrs[i].data)
            if arg in self.dims or arg in self.partial:
                entries["partir.sharding"] = ir.ShardingAttr(self.sharding(arg))
            else:
                entries.pop("partir.sharding", None)
            arg_attrs[i] = DictionaryAttr(entries)
        fn.arg_attrs = ArrayAttr(arg_attrs)
        for op in self.module.walk():
            if isinstance(op, func.FuncOp | func.ReturnOp | ir.YieldOp | ModuleOp):
                continue
            if any(r in self.dims or r in self.partial for r in op.results):
                op.attributes["partir.shardings"] = ArrayAttr(
                    [ir.ShardingAttr(self.sharding(r)) for r in op.results]
                )
            else:
                op.attributes.pop("partir.shardings", None)
            for region in op.regions:
                self._write_block_args(region)
        ir.verify_if_enabled(self.module, "partir-propagate")

    def _write_block_args(self, region: Region) -> None:
        block = region.block
        attrs: list[Attribute] = [ir.ShardingAttr(self.sharding(a)) for a in block.args]
        parent = region.parent_op()
        if parent is not None and any(a in self.dims or a in self.partial for a in block.args):
            parent.attributes[f"partir.region{_region_index(region)}_args"] = ArrayAttr(attrs)


def _region_index(region: Region) -> int:
    parent = region.parent_op()
    assert parent is not None
    return list(parent.regions).index(region)


def _use_count(value: SSAValue) -> int:
    return sum(1 for _ in value.uses)


def _first_user(value: SSAValue) -> Operation | None:
    for use in value.uses:
        return use.operation
    if isinstance(value, OpResult):
        return value.op
    if isinstance(value, BlockArgument):
        return None
    return None
