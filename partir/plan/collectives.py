"""`plan.collectives()`: every collective of the device-local program, in the user's terms."""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.ir import BlockArgument, Operation, OpResult, SSAValue

from partir import ir
from partir.backend import pipeline
from partir.ir.locations import library_location_of, location_of
from partir.utils.html import render_html

KINDS = {
    "spmd.all_gather": "all_gather",
    "spmd.all_slice": "all_slice",
    "spmd.all_reduce": "all_reduce",
    "spmd.reduce_scatter": "reduce_scatter",
    "spmd.all_to_all": "all_to_all",
    "spmd.collective_permute": "collective_permute",
}


@dataclass(frozen=True)
class Collective:
    """One collective of the device-local program."""

    kind: str
    """``all_gather``, ``all_reduce``, ``reduce_scatter``, ``all_to_all``, ``collective_permute``
    or ``all_slice`` (a local slice: no communication)."""
    axes: tuple[str, ...]
    """The mesh axes whose devices form each group."""
    dtype: str
    shape: tuple[int, ...]
    """The per-device result shape."""
    bytes: int
    """The per-device result buffer, as XLA's HLO counts it."""
    source: str
    """The user's source line of the op that needed it."""
    reason: str
    """What it converts: which operand of which op, or which output."""
    serves: str = ""
    """For a reduction of a gradient, ``"grad of <parameter path>"`` (`gradient_of`)."""
    via: str | None = None
    """The library code the user's line called that made the op, a secondary note
    (``optax/tree_utils/_tree_math.py:398 (tree_add)``); None for the user's own code."""

    @property
    def communicates(self) -> bool:
        """Whether it moves data between devices (all_slice does not)."""
        return self.kind != "all_slice"


class CollectiveTable(list[Collective]):
    """A list of `Collective` records that prints as a table."""

    def summary(self) -> dict[tuple[str, tuple[str, ...]], dict[str, int]]:
        """(kind, axes) -> {"count", "bytes"}."""
        out: dict[tuple[str, tuple[str, ...]], dict[str, int]] = collections.defaultdict(
            lambda: {"count": 0, "bytes": 0}
        )
        for c in self:
            out[(c.kind, c.axes)]["count"] += 1
            out[(c.kind, c.axes)]["bytes"] += c.bytes
        return dict(out)

    def _repr_html_(self) -> str:
        """Notebook display: totals per (kind, axes), then every collective (folded)."""
        return render_html(self)

    def __str__(self) -> str:
        rows = [("kind", "axes", "local result", "bytes", "source", "for")]
        for c in self:
            shape = f"{ir.dtypes.short_name(c.dtype)}{list(c.shape)}"
            why = f"{c.serves}: {c.reason}" if c.serves else c.reason
            why += f" (in {c.via})" if c.via else ""
            rows.append((c.kind, ",".join(c.axes), shape, f"{c.bytes:,}", c.source, why))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
            for r in rows
        ]
        total = sum(c.bytes for c in self if c.communicates)
        lines.append(
            f"{sum(c.communicates for c in self)} communicating collectives, {total:,} bytes per device"
        )
        return "\n".join(lines)


def collective_table(
    module: ModuleOp,
    mesh: Any = None,
    paths: tuple[Sequence[str], Sequence[str]] | None = None,
) -> CollectiveTable:
    """The collectives of a device-local module, in program order.

    Args:
      module: the device-local (`spmd`) module.
      mesh: the mesh (unused by the table itself; kept for callers).
      paths: (input paths, output paths) of the entry function: with them, each
        reduction of a gradient names the parameter it serves (`gradient_of`).
    """
    table = CollectiveTable()
    params = _Gradients(module, *paths) if paths is not None else None
    for op in module.walk():
        kind = KINDS.get(op.name)
        if isinstance(op, ir.PrimOp) and op.primitive_name == "shard_map":
            table += _region_collectives(op)
        if pipeline.is_pipelined(op):  # PipelinePartition's loop (#16, backend/pipeline.py)
            loop = pipeline.loop_collectives(op)  # type: ignore[arg-type]
            table += [Collective(*c[:5], location_of(op), c[5]) for c in loop]
        if kind is None:
            continue
        assert isinstance(op, ir.CollectiveOp)
        shape = pipeline.microbatch_shape(op) or ir.shape_of(op.result.type)  # #16
        dtype = ir.dtype_of(op.result.type)
        n = 1
        for s in shape:
            n *= s
        why = op.attributes.get("partir.why")
        table.append(
            Collective(
                kind,
                op.axis_names,
                dtype,
                shape,
                n * ir.ITEMSIZE[dtype],
                location_of(op),
                why.data if isinstance(why, StringAttr) else "",
                params.serves(op) if params is not None and kind in REDUCING else "",
                library_location_of(op),
            )
        )
    return table


def _region_collectives(op: ir.PrimOp) -> list[Collective]:
    """The collectives the user's own `jax.shard_map` region runs (recorded at tracing:
    the region's body is JAX's, not partir's)."""
    region = location_of(op)
    return [
        Collective(
            kind,
            tuple(axes),
            dtype,
            tuple(shape),
            math.prod(shape) * ir.ITEMSIZE[dtype],
            source,
            f"the user's jax.shard_map at {region}",
            via=library_location_of(op),
        )
        for kind, axes, dtype, shape, source in op.params.find("collectives", ())
    ]


REDUCING = frozenset({"all_reduce", "reduce_scatter"})
"""The collectives that sum partial values: the ones a gradient's reduction is."""

_FOLLOW_LIMIT = 64
"""Ops the forward walk of `gradient_of` visits at most per collective (an update is a
few dozen elementwise ops; a walk that goes further has left the optimizer)."""


def _walk(todo: list[SSAValue]) -> Iterator[SSAValue]:
    """Each value of `todo` once, at most `_FOLLOW_LIMIT` of them; the caller appends the
    values to visit next to `todo` as it goes (the walks below)."""
    seen: set[int] = set()
    while todo and len(seen) < _FOLLOW_LIMIT:
        v = todo.pop()
        if id(v) not in seen:
            seen.add(id(v))
            yield v


class _Gradients:
    """`gradient_of` for every collective of one module, sharing the walks."""

    def __init__(self, module: ModuleOp, inputs: Sequence[str], outputs: Sequence[str]):
        fn = next((op for op in module.ops if isinstance(op, func.FuncOp)), None)
        self.ok = False
        if fn is None:
            return
        ret = fn.body.block.last_op
        if not isinstance(ret, func.ReturnOp):
            return
        if len(fn.args) != len(inputs) or len(ret.operands) != len(outputs):
            return
        self.ok = True
        self.block = fn.body.block
        self.ret = ret
        self.inputs = list(inputs)
        self.arg_index = {a: i for i, a in enumerate(fn.args)}
        self._previous: dict[int, set[int]] = {}

    def serves(self, op: Operation) -> str:
        """``"grad of <path>"`` when `op` reduces a parameter's gradient, else ``""``."""
        if not self.ok:
            return ""
        param = gradient_of(self, op.results[0])
        return f"grad of {self.inputs[param]}" if param is not None else ""

    def previous_values(self, out: int) -> set[int]:
        """Entry arguments that reach output `out` through size-preserving ops."""
        if out not in self._previous:
            found: set[int] = set()
            todo = [self.ret.operands[out]]
            for v in _walk(todo):
                if isinstance(v, BlockArgument) and v in self.arg_index:
                    found.add(self.arg_index[v])
                elif isinstance(v, OpResult) and v.op.name in KINDS:
                    # a gather or slice of the previous value is it; a reduction is
                    # the gradient's side, not a previous value
                    if KINDS[v.op.name] not in REDUCING:
                        todo += list(v.op.operands)
                elif isinstance(v, OpResult) and not isinstance(v.op, ir.RegionPrimOp):
                    todo += [x for x in v.op.operands if _same_size(x, v)]
            self._previous[out] = found
        return self._previous[out]

    def used_beyond_update(self, arg: int) -> bool:
        """Whether entry argument `arg` reaches, through size-preserving ops and
        collectives, one that changes its size (a matmul, a broadcast) or a loop: a
        parameter does; optimizer state, only ever updated elementwise, does not.
        (ZeRO-3's gather of a parameter reaches its matmuls; ZeRO-2's gather of an update
        reaches only the new parameter.)"""
        todo: list[SSAValue] = [self.block.args[arg]]
        for v in _walk(todo):
            for use in v.uses:
                user = use.operation
                if isinstance(user, ir.RegionPrimOp):
                    return True
                if user.name in KINDS and KINDS[user.name] not in REDUCING:
                    todo += list(user.results)  # ZeRO-2's gather of the update: the same value
                    continue
                if any(not _same_size(r, v) for r in user.results):
                    return True
                todo += list(user.results)
        return False


def gradient_of(grads: _Gradients, value: SSAValue) -> int | None:
    """The input index of the parameter whose gradient `value` is, or None.

    The rule: follow `value` forward through ops that keep its size (the elementwise
    arithmetic of an optimizer update: scaling, moments, the update itself, at most
    `_FOLLOW_LIMIT` ops), through collectives (the same value laid out otherwise) and out
    of loop bodies (a yield to the loop's result), to the function's outputs it reaches. Each such output has
    *previous values*: the inputs that reach it the same way (a parameter for the new
    parameter, a moment for the new moment). The parameter is the previous value that is
    also used otherwise, by an op that changes its size (the model's matmuls,
    broadcasts, ZeRO's gathers); optimizer state is only ever updated elementwise. The
    walk stops at size changes, so a global-norm clip (a reduction to a scalar) does not
    tie every gradient to every parameter. Exactly one candidate names the collective;
    none or several leave it unnamed.
    """
    outputs = {u.index for u in _reached_returns(grads, value)}
    candidates = set()
    for out in outputs:
        candidates |= {a for a in grads.previous_values(out) if grads.used_beyond_update(a)}
    return candidates.pop() if len(candidates) == 1 else None


def _reached_returns(grads: _Gradients, value: SSAValue) -> list[Any]:
    uses = []
    todo = [value]
    for v in _walk(todo):
        for use in v.uses:
            user = use.operation
            if user is grads.ret:
                uses.append(use)
            elif isinstance(user, ir.YieldOp):
                # leaving a loop or region body: on with the region op's matching result
                parent = user.parent_op()
                if isinstance(parent, ir.RegionPrimOp) and len(parent.results) == len(
                    user.operands
                ):
                    todo.append(parent.results[use.index])
            elif user.name in KINDS:
                todo += list(user.results)  # the same value, laid out otherwise
            elif not isinstance(user, ir.RegionPrimOp):
                todo += [r for r in user.results if _same_size(r, v)]
    return uses


def _same_size(a: SSAValue, b: SSAValue) -> bool:
    """Whether the op making (or using) `a` from `b` keeps `b`'s elements: the same shape,
    or the same element count through a layout op (a reshape, or a sum over size-1 dims:
    how a bias gradient leaves a layer norm). An op such as a scatter-add with a result
    of equal size by chance is not one."""
    shape_a, shape_b = ir.shape_of(a.type), ir.shape_of(b.type)
    if shape_a == shape_b:
        return True
    if math.prod(shape_a) != math.prod(shape_b):
        return False
    # the op between them: the one making `a` from `b`, or making `b` from `a`
    ops = [x.op for x, y in ((a, b), (b, a)) if isinstance(x, OpResult) and y in x.op.operands]
    return any(getattr(op, "primitive_name", None) in _LAYOUT for op in ops)


_LAYOUT = frozenset(
    {"reshape", "squeeze", "expand_dims", "transpose", "reduce_sum", "broadcast_in_dim", "copy"}
)
"""Ops that keep a value's elements when its size does not change."""
