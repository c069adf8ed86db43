"""`partir-lower-to-spmd`: the global program plus its shardings -> a device-local program.

Every op gets an *op sharding*: per mesh axis, the factor of its rule the axis tiles (read
from the planned shardings of its results, or from an operand when a reduce factor makes
the results partial), or a pending sum the op carries through (a linear op). From it
follow the local layout each operand must have and the layout of each result. Where a
producer's actual layout differs from what a consumer needs, `reshard` inserts the
collectives that convert it, in this order:

  1. `all_reduce` the partial axes the consumer does not carry;
  2. `all_gather` the axes a dimension holds beyond its common prefix with the target;
  3. `all_slice` the axes the target adds (a local dynamic slice, no communication).

`partir-optimize-collectives` then fuses all_slice . all_reduce into reduce_scatter and
all_slice(e) . all_gather(d) into all_to_all. Ops run on local shapes: parameters that
spell shapes (broadcast `shape`, reshape `new_sizes`, ...) are rewritten to local sizes.
Each collective records the op and the user's source line it serves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr
from xdsl.ir import Attribute, Block, Operation, OpResult, Region, SSAValue

from partir import ir
from partir.passes.carry import carried_operands
from partir.passes.edges import region_groups
from partir.passes.localize import localize_params
from partir.passes.propagate import Propagator, location_of
from partir.passes.resolve import follow_operands
from partir.rules import FactorKind, OpRule, get_rule

Layout = ir.Sharding


@dataclass
class Lowered:
    """The device-local program and where each of its values came from."""

    module: ModuleOp
    """One `func.func` on local shapes, with `spmd` collectives; the module holds the mesh."""
    in_layouts: list[Layout]
    """The layout of every input leaf (what `shard_map` receives)."""
    out_layouts: list[Layout]
    """The layout of every output leaf (what `shard_map` returns)."""


def _product(sizes: dict[str, int], axes: Sequence[str]) -> int:
    n = 1
    for a in axes:
        n *= sizes[a]
    return n


def _local_type(value_type: Attribute, layout: Layout, sizes: dict[str, int]) -> Attribute:
    shape = ir.shape_of(value_type)
    local = tuple(s // _product(sizes, d) for s, d in zip(shape, layout.dims, strict=True))
    return ir.tensor_type(local, ir.dtype_of(value_type))


PLANNED_PLACE = frozenset({"name"})
"""Primitives that always run in their planned layout, never in an operand's: a value the
user named (`checkpoint_name`) is where a tactic switches layouts (DSP's all-to-all), so
the switch stays at the name rather than moving to the next op's operands."""


def _region_specs(
    op: ir.PrimOp, sizes: dict[str, int]
) -> tuple[list[tuple[tuple[str, ...], ...]], list[tuple[tuple[str, ...], ...]]] | None:
    """A `shard_map` op's (in_specs, out_specs) as per-dim axis tuples, when its mesh is
    the partitioning mesh, manual over every axis (the only region spmd mode can run)."""
    if op.primitive_name != "shard_map":
        return None
    params = op.params
    if dict(params.find("axes", ())) != sizes or set(params.find("manual", ())) != set(sizes):
        return None
    ins = [_spec_dims(s, v) for s, v in zip(params["in_specs"], op.args, strict=True)]
    outs = [_spec_dims(s, v) for s, v in zip(params["out_specs"], op.outs, strict=True)]
    return ins, outs


def _spec_dims(spec: Any, value: SSAValue) -> tuple[tuple[str, ...], ...]:
    # a PartitionSpec may leave out its trailing untiled dims
    dims = tuple(tuple(str(a) for a in axes) for axes in spec)
    return dims + ((),) * (len(ir.shape_of(value.type)) - len(dims))


def _strip_partial(layout: Layout) -> Layout:
    return ir.Sharding(layout.dims)


class _Lowering:
    def __init__(self, prop: Propagator, rules: Mapping[Operation, OpRule] | None = None):
        self.prop = prop
        self.sizes = prop.sizes
        self.rules = rules

    # -- layouts ---------------------------------------------------------------------------

    def _factor_axes(
        self, rule: OpRule, tensors: Sequence[Sequence[tuple[str, ...]]], layouts: Sequence[Layout]
    ) -> dict[str, list[str]]:
        """Axes per factor, read from tensors' layouts (earlier tensors win)."""
        out: dict[str, list[str]] = {}
        used: set[str] = set()
        for tdims, layout in zip(tensors, layouts, strict=True):
            for factors, axes in zip(tdims, layout.dims, strict=True):
                before = 1
                for axis in axes:
                    f = self.prop._factor_at(rule, tuple(factors), before, self.sizes[axis])
                    before *= self.sizes[axis]
                    if f is None or axis in used or rule.kind(f) is FactorKind.REPLICATE:
                        break
                    out.setdefault(f, []).append(axis)
                    used.add(axis)
        return out

    def op_sharding(
        self, op: ir.PrimOp, rule: OpRule, actual: Sequence[Layout]
    ) -> tuple[dict[str, list[str]], set[str]]:
        """(axes per factor, partial axes carried through a linear op) for one op."""
        planned = [self.prop.sharding(r) for r in op.outs]
        factor_axes = self._factor_axes(rule, rule.results, planned)
        used = {a for axes in factor_axes.values() for a in axes}
        carried: set[str] = set()
        for layout in planned:
            for axis in layout.partial:
                if axis in used or axis in carried:
                    continue
                # a reduce factor some operand tiles with this axis, or a linear op carrying it
                reduce = self._reduce_factor_for(rule, actual, axis)
                if reduce is not None:
                    factor_axes.setdefault(reduce, []).append(axis)
                    used.add(axis)
                elif any(axis in a.partial for a in actual):
                    carried.add(axis)
        return self._valid(rule, factor_axes), carried

    def _resharded(
        self,
        op: Operation,
        env: dict[SSAValue, tuple[SSAValue, Layout]],
        targets: Sequence[Layout],
        dst: Block,
        where: str,
    ) -> list[SSAValue]:
        """`op`'s operands in `dst`, each resharded from its layout in `env` to its target."""
        return [
            self.reshard(env[v][0], env[v][1], t, dst, f"operand {i} of {where}", op.location)
            for i, (v, t) in enumerate(zip(op.operands, targets, strict=True))
        ]

    def _reduce_factor_for(self, rule: OpRule, actual: Sequence[Layout], axis: str) -> str | None:
        for tdims, layout in zip(rule.operands, actual, strict=True):
            for factors, axes in zip(tdims, layout.dims, strict=True):
                if axis in axes:
                    before = _product(self.sizes, axes[: axes.index(axis)])
                    f = self.prop._factor_at(rule, tuple(factors), before, self.sizes[axis])
                    if f is not None and rule.kind(f) is FactorKind.REDUCE:
                        return f
        return None

    def _valid(self, rule: OpRule, factor_axes: dict[str, list[str]]) -> dict[str, list[str]]:
        """Drop axes on a minor factor of a dimension whose major factors are not fully tiled."""
        for tdims in rule.tensors:
            for factors in tdims:
                for j, f in enumerate(factors[1:], start=1):
                    if factor_axes.get(f) and any(
                        _product(self.sizes, factor_axes.get(g, [])) != rule.size(g)
                        for g in factors[:j]
                    ):
                        factor_axes.pop(f)
        return factor_axes

    def tensor_layout(
        self, tdims: Sequence[tuple[str, ...]], factor_axes: dict[str, list[str]]
    ) -> tuple[tuple[str, ...], ...]:
        return tuple(tuple(a for f in factors for a in factor_axes.get(f, ())) for factors in tdims)

    # -- resharding ------------------------------------------------------------------------

    def reshard(
        self,
        value: SSAValue,
        actual: Layout,
        target: Layout,
        block: Block,
        why: str,
        loc: Attribute | None = None,
    ) -> SSAValue:
        """Insert into `block` the collectives that turn `value` (laid out `actual`) into `target`."""
        if actual == target:
            return value
        extra_partial = [a for a in actual.partial if a not in target.partial]
        missing_partial = [a for a in target.partial if a not in actual.partial]
        if missing_partial:
            raise AssertionError(f"cannot make a value partial on {missing_partial} ({why})")
        dims = [list(d) for d in actual.dims]
        if extra_partial:
            value = self._emit(
                ir.AllReduceOp,
                value,
                value.type,
                extra_partial,
                block,
                why,
                loc,
                kind=actual.reduction,
            )
        for d, (have, want) in enumerate(zip(actual.dims, target.dims, strict=True)):
            k = 0
            while k < min(len(have), len(want)) and have[k] == want[k]:
                k += 1
            if k < len(have):
                gathered = list(have[k:])
                dims[d] = list(have[:k])
                new_type = _local_type_from(value.type, d, _product(self.sizes, gathered))
                value = self._emit(
                    ir.AllGatherOp, value, new_type, gathered, block, why, loc, dim=d
                )
        for d, want in enumerate(target.dims):
            extra = list(want[len(dims[d]) :])
            if extra:
                new_type = _local_type_from(value.type, d, 1 / _product(self.sizes, extra))
                value = self._emit(ir.AllSliceOp, value, new_type, extra, block, why, loc, dim=d)
                dims[d] = list(want)
        return value

    def _emit(
        self,
        cls: type,
        value: SSAValue,
        result_type: Attribute,
        axes: Sequence[str],
        block: Block,
        why: str,
        loc: Attribute | None,
        **fields: Any,
    ) -> SSAValue:
        op = cls(value, result_type, list(axes), **fields)
        op.attributes["partir.why"] = StringAttr(why)
        if loc is not None:
            op.location = loc  # type: ignore[assignment]
        block.add_op(op)
        return op.result

    # -- ops ---------------------------------------------------------------------------------

    def lower_block(
        self, src: Block, dst: Block, env: dict[SSAValue, tuple[SSAValue, Layout]]
    ) -> list[tuple[SSAValue, Layout]]:
        """Lower `src`'s ops into `dst`; returns the terminator's operands with their layouts."""
        for op in src.ops:
            if isinstance(op, func.ReturnOp | ir.YieldOp):
                return [env[v] for v in op.operands]
            if isinstance(op, ir.ConstantOp):
                new = ir.ConstantOp(op.value.data, op.result.type, op.location)  # type: ignore[arg-type]
                dst.add_op(new)
                env[op.result] = (new.result, ir.Sharding.replicated(len(op.shape)))
            elif isinstance(op, ir.PrimOp):
                self.lower_prim(op, dst, env)
            elif isinstance(op, ir.RegionPrimOp):
                self.lower_region_op(op, dst, env)
            else:
                raise NotImplementedError(f"cannot lower {op.name}")
        raise ValueError("block without terminator")

    def lower_prim(
        self, op: ir.PrimOp, dst: Block, env: dict[SSAValue, tuple[SSAValue, Layout]]
    ) -> None:
        if _is_noop(op):
            env[op.outs[0]] = env[op.args[0]]
            return
        where = f"{op.primitive_name} at {location_of(op)}"
        rule = self.rules.get(op) if self.rules is not None else None
        rule = rule if rule is not None else get_rule(op)
        actual = [env[v][1] for v in op.args]
        if rule is None:  # a barrier: run it whole on every device
            whole = [ir.Sharding.replicated(len(lay.dims)) for lay in actual]
            operands = self._resharded(op, env, whole, dst, f"{where} (no rule)")
            results = [ir.Sharding.replicated(len(ir.shape_of(r.type))) for r in op.outs]
        elif (specs := _region_specs(op, self.sizes)) is not None:
            # the user's jax.shard_map: its body works on the blocks its in_specs name and
            # makes the blocks its out_specs name, so those are the operand and result
            # layouts (resharding into them is planned communication; none if they agree)
            in_specs, out_specs = specs
            operands = self._resharded(op, env, [ir.Sharding(x) for x in in_specs], dst, where)
            results = [ir.Sharding(spec) for spec in out_specs]
        else:
            factor_axes, carried = self.op_sharding(op, rule, actual)
            if op.primitive_name not in PLANNED_PLACE:
                factor_axes = follow_operands(rule, op.args, actual, factor_axes, carried, self)
            reduce_axes = [
                a
                for f, axes in factor_axes.items()
                if rule.kind(f) is FactorKind.REDUCE
                for a in axes
            ]
            carriers = carried_operands(op, actual, carried, self.prop.origin)
            targets = [
                ir.Sharding(
                    self.tensor_layout(rule.operands[i], factor_axes),
                    tuple(a for a in have.partial if i in carriers.get(a, ())),
                    have.reduction,
                )
                for i, have in enumerate(actual)
            ]
            operands = self._resharded(op, env, targets, dst, where)
            partial = tuple(reduce_axes) + tuple(sorted(carried))
            kind = rule.reduction if reduce_axes else "sum"
            results = [
                ir.Sharding(self.tensor_layout(rule.results[j], factor_axes), partial, kind)
                for j in range(len(op.outs))
            ]
        result_types = [
            _local_type(r.type, lay, self.sizes) for r, lay in zip(op.outs, results, strict=True)
        ]
        operand_types = [v.type for v in operands]
        params = localize_params(
            op, [ir.shape_of(t) for t in operand_types], [ir.shape_of(t) for t in result_types]
        )
        new = ir.PrimOp(op.primitive_name, operands, result_types, params, op.location)
        new.attributes.update((k, a) for k, a in op.attributes.items() if k == "partir.mb")  # #16
        dst.add_op(new)
        for r, nr, lay in zip(op.outs, new.outs, results, strict=True):
            env[r] = (nr, lay)

    def lower_region_op(
        self, op: ir.RegionPrimOp, dst: Block, env: dict[SSAValue, tuple[SSAValue, Layout]]
    ) -> None:
        where = f"{op.primitive_name} at {location_of(op)}"
        layout = self._region_layouts(op, env)
        stage = _pipeline_axis(op, self.prop)  # PipelinePartition (#16): backend/pipeline.py
        if stage is not None:
            nc, nk = op.params["num_consts"], op.params["num_carry"]
            for v in [*list(op.args)[nc + nk :], *list(op.outs)[nk:]]:
                lay = layout[v]  # the stacked layer dim stays on the stage axis: no gather
                layout[v] = ir.Sharding(((stage,), *lay.dims[1:]), lay.partial, lay.reduction)
        operands = [
            self.reshard(
                env[v][0],
                env[v][1],
                layout.get(v, ir.Sharding.replicated(len(env[v][1].dims))),
                dst,
                f"operand {i} of {where}",
            )
            for i, v in enumerate(op.args)
        ]
        regions = [self._lower_region(op, r.block, layout, env) for r in op.bodies]
        result_layouts = [
            layout.get(r, ir.Sharding.replicated(len(ir.shape_of(r.type)))) for r in op.outs
        ]
        result_types = [
            _local_type(r.type, lay, self.sizes)
            for r, lay in zip(op.outs, result_layouts, strict=True)
        ]
        new = type(op)(operands, result_types, regions, op.params, op.location)
        if stage is not None:  # PipelinePartition (#16)
            new.attributes["partir.pipeline"] = op.attributes["partir.pipeline"]
        dst.add_op(new)
        for r, nr, lay in zip(op.outs, new.outs, result_layouts, strict=True):
            env[r] = (nr, lay)

    def _region_layouts(
        self, op: ir.RegionPrimOp, env: dict[SSAValue, tuple[SSAValue, Layout]]
    ) -> dict[SSAValue, Layout]:
        """One layout per group of values a region op ties together (operand, block
        argument, yielded value, result), with pending sums where they may stay pending."""
        layout: dict[SSAValue, Layout] = {}
        for values, offsets in region_groups(op):
            # the group's layout: the block argument's plan if any, else the first value's
            anchor = next(
                (
                    v
                    for v, o in zip(values, offsets, strict=True)
                    if o == 0 and not isinstance(v.owner, Operation)
                ),
                values[0],
            )
            base = _strip_partial(self.prop.sharding(anchor))
            base_offset = offsets[values.index(anchor)]
            core = base.dims[base_offset:]
            for v, o in zip(values, offsets, strict=True):
                layout[v] = ir.Sharding(((),) * o + core)
        if isinstance(op, ir.ScanOp):
            self._pending_scan_outputs(op, layout, env)
        elif isinstance(op, ir.RematOp):
            # a checkpointed call: its results may stay pending sums like any linear op's
            for y, out in zip(_terminator(op.bodies[0].block).operands, op.outs, strict=True):
                planned = self.prop.sharding(y)
                if planned.partial and isinstance(y, OpResult):
                    layout[y] = layout[out] = ir.Sharding(
                        layout[y].dims, planned.partial, planned.reduction
                    )
        return layout

    def _lower_region(
        self,
        op: ir.RegionPrimOp,
        src_block: Block,
        layout: dict[SSAValue, Layout],
        env: dict[SSAValue, tuple[SSAValue, Layout]],
    ) -> Region:
        """The device-local copy of one of `op`'s regions, its yields resharded to the
        layouts of the values they become."""
        arg_layouts = [
            layout.get(a, ir.Sharding.replicated(len(ir.shape_of(a.type)))) for a in src_block.args
        ]
        block = Block(
            arg_types=[
                _local_type(a.type, lay, self.sizes)
                for a, lay in zip(src_block.args, arg_layouts, strict=True)
            ]
        )
        inner = dict(env)
        for a, na, lay in zip(src_block.args, block.args, arg_layouts, strict=True):
            inner[a] = (na, lay)
        outs = self.lower_block(src_block, block, inner)
        yielded = [
            self.reshard(
                v,
                lay,
                layout.get(src, ir.Sharding.replicated(len(lay.dims))),
                block,
                f"result {k} of the {op.primitive_name} body at {location_of(op)}",
                op.location,
            )
            for k, ((v, lay), src) in enumerate(
                zip(outs, _terminator(src_block).operands, strict=True)
            )
        ]
        block.add_op(ir.YieldOp(yielded))
        return Region(block)

    def _pending_scan_outputs(
        self,
        op: ir.ScanOp,
        layout: dict[SSAValue, Layout],
        env: dict[SSAValue, tuple[SSAValue, Layout]],
    ) -> None:
        """Let a scan's stacked outputs (``ys``) that are pending sums leave the body as such.

        A per-iteration gradient is partial over the batch axis. Reducing it at the yield
        all-reduces every iteration; instead each iteration converts it straight to the
        layout its consumers after the scan need (a reduce-scatter when they want it
        tiled, as ZeRO does), and what remains partial is reduced once after the scan.
        """
        nk = op.params["num_carry"]
        body_yield = _terminator(op.bodies[0].block)
        for y, out in zip(body_yield.operands[nk:], op.outs[nk:], strict=True):
            planned = self.prop.sharding(y)
            if not planned.partial or not isinstance(y, OpResult):
                continue
            want = self._consumer_dims(out, env)
            if want is None or want[0]:
                want = ((), *layout[y].dims)
            tiled = {a for axes in want for a in axes}
            pending = tuple(a for a in planned.partial if a not in tiled)
            layout[y] = ir.Sharding(want[1:], pending, planned.reduction)
            layout[out] = ir.Sharding(want, pending, planned.reduction)

    def _consumer_dims(
        self, value: SSAValue, env: dict[SSAValue, tuple[SSAValue, Layout]]
    ) -> tuple[tuple[str, ...], ...] | None:
        """The tiling every consumer of `value` needs, or None if they differ or cannot say."""
        wants = set()
        for use in value.uses:
            user = use.operation
            rule = get_rule(user) if isinstance(user, ir.PrimOp) and not _is_noop(user) else None
            if rule is None:
                return None
            actual = [
                env[v][1] if v in env else self.prop.sharding(v)
                for v in user.args  # type: ignore[attr-defined]
            ]
            factor_axes, _ = self.op_sharding(user, rule, actual)  # type: ignore[arg-type]
            wants.add(self.tensor_layout(rule.operands[use.index], factor_axes))
        return wants.pop() if len(wants) == 1 else None


def _is_noop(op: ir.PrimOp) -> bool:
    """An op that returns its operand unchanged (a reverse of size-1 dims, say).

    XLA drops these; lowering them as the identity keeps one value where XLA sees one, so
    the collectives of both agree (two gathers of `w` and of `rev(w)` become one).
    """
    if len(op.args) != 1 or len(op.outs) != 1 or op.args[0].type != op.outs[0].type:
        return False
    name = op.primitive_name
    shape = ir.shape_of(op.args[0].type)
    if name == "rev":
        return all(shape[d] == 1 for d in op.params["dimensions"])
    if name == "transpose":
        return tuple(op.params["permutation"]) == tuple(range(len(shape)))
    return name in ("reshape", "copy", "squeeze", "broadcast_in_dim") or (
        name == "convert_element_type" and not op.params.find("weak_type", False)
    )


def _pipeline_axis(op: Operation, prop: Propagator) -> str | None:
    """The stage axis of a scan `PipelinePartition` marked and whose stacked operands this
    plan tiles on it (dim 0), else None (a plan of a schedule prefix without it, say)."""
    attr = op.attributes.get("partir.pipeline")
    if not isinstance(attr, StringAttr) or not isinstance(op, ir.ScanOp):
        return None
    axis = json.loads(attr.data)["axis"]
    xs = list(op.args)[op.params["num_consts"] + op.params["num_carry"] :]
    return axis if xs and all(prop.dim_of(x, axis) == 0 for x in xs) else None


def _terminator(block: Block) -> Operation:
    op = block.last_op
    assert op is not None, "region block without terminator"
    return op


def _local_type_from(value_type: Attribute, dim: int, factor: float) -> Attribute:
    shape = list(ir.shape_of(value_type))
    shape[dim] = round(shape[dim] * factor)
    return ir.tensor_type(tuple(shape), ir.dtype_of(value_type))


def _result_path(fn: func.FuncOp, k: int) -> str | None:
    """The `partir.path` of result `k` of `fn` (``out/2``), if it has one."""
    attrs = fn.res_attrs.data if fn.res_attrs is not None else ()
    if k < len(attrs):
        path = attrs[k].data.get("partir.path")
        if isinstance(path, StringAttr):
            return path.data
    return None


def lower_to_spmd(
    prop: Propagator,
    input_layouts: Sequence[Layout],
    output_layouts: Sequence[Layout],
    rules: Mapping[Operation, OpRule] | None = None,
) -> Lowered:
    """Lower the propagated program to a device-local one.

    Args:
      prop: the propagation state of the (global) program.
      input_layouts: the layout each input arrives in.
      output_layouts: the layout each output must leave in (no partial axes).
      rules: op -> its sharding rule, already built (a search lowering one program many
        times passes them once); ops missing from it get `get_rule`.
    """
    lowering = _Lowering(prop, rules)
    src_fn = prop.entry()
    src_block = src_fn.body.block
    sizes = prop.sizes
    block = Block(
        arg_types=[
            _local_type(a.type, lay, sizes)
            for a, lay in zip(src_block.args, input_layouts, strict=True)
        ]
    )
    env: dict[SSAValue, tuple[SSAValue, Layout]] = {
        a: (na, lay) for a, na, lay in zip(src_block.args, block.args, input_layouts, strict=True)
    }
    outs = lowering.lower_block(src_block, block, env)
    results = []
    sources = list(src_block.last_op.operands) if src_block.last_op else []
    for k, ((v, lay), want) in enumerate(zip(outs, output_layouts, strict=True)):
        # named by its path and blamed on the line that made it (a loss reduced over the
        # batch axis is "out/2" at the loss's line, not "output 2" at no line)
        producer = sources[k].owner if k < len(sources) else None
        loc = producer.location if isinstance(producer, Operation) else None
        why = _result_path(src_fn, k) or f"output {k}"
        results.append(lowering.reshard(v, lay, want, block, why, loc))
    block.add_op(func.ReturnOp(*results))
    fn = func.FuncOp(
        src_fn.sym_name.data,
        ([a.type for a in block.args], [v.type for v in results]),
        Region(block),
        arg_attrs=src_fn.arg_attrs or ArrayAttr([DictionaryAttr({}) for _ in block.args]),
        res_attrs=src_fn.res_attrs,
    )
    module = ModuleOp([fn])
    module.attributes["partir.mesh"] = prop.mesh
    ir.verify_if_enabled(module, "partir-lower-to-spmd", local=True)
    return Lowered(module, list(input_layouts), list(output_layouts))
