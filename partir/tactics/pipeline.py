"""`PipelinePartition`: inter-layer (pipeline) parallelism over one mesh axis.

A program whose layers are a `jax.lax.scan` over stacked parameters (leading dim L, the
layer dim) is split into contiguous groups of L / (P * R) layers, one group per stage of
the P devices of the stage axis (R > 1: circular, stage s holding chunks s, s + P, ...),
and the batch into M microbatches (docs/pipeline.md).

The tactic validates its arguments against the program, records a `PipelineSpec` that
the simulator and the search read, seeds every stacked operand and result of the layer
scans on dim 0 over the stage axis (each stage keeps its layers' weights, residuals and
gradients), and marks each such scan for the backend (`partir/backend/pipeline.py`): the
scan op gets a ``partir.pipeline`` attribute classifying its block arguments and yields
(batch dim, invariant, accumulated) and each body op a ``partir.mb`` attribute naming its
results' batch dims, found by propagating the batch on a throw-away virtual mesh axis.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import SSAValue

from partir import ir
from partir.errors import DimensionError, SelectorError, TacticError, UnknownAxisError
from partir.ir.attrs import ACCUMULATED, INVARIANT, MB_ATTR, PIPELINE_ATTR
from partir.ir.locations import location_of
from partir.passes.propagate import Propagator
from partir.tactics.manual import TacticContext, TacticRecord, no_match_message
from partir.tactics.selectors import select

SCHEDULES = ("gpipe", "circular")
"""The schedules `PipelinePartition` accepts."""

_VIRTUAL = "__microbatch__"  # the throw-away axis the batch is propagated on


@dataclass(frozen=True)
class PipelineSpec:
    """The pipeline a plan runs (``plan.pipeline``).

    Attributes:
      axis: the stage mesh axis.
      stages: P, the size of `axis`.
      microbatches: M, the number of microbatches the batch is split into.
      schedule: ``"gpipe"`` or ``"circular"``.
      repeats: R, the number of layer chunks per stage (1 for GPipe).
      layers: L, the number of layers (the stacked parameters' leading dim).
    """

    axis: str
    stages: int
    microbatches: int
    schedule: str
    repeats: int
    layers: int

    @property
    def layers_per_stage(self) -> int:
        """L / P: the layers each stage holds (in R chunks of L / (P * R))."""
        return self.layers // self.stages

    @property
    def bubble(self) -> float:
        """GPipe's idle fraction (P - 1) / (R * M + P - 1); R = 1 gives (P-1)/(M+P-1)."""
        p, m, r = self.stages, self.microbatches, self.repeats
        return (p - 1) / (r * m + p - 1)


@dataclass
class PipelineRecord(TacticRecord):
    """What `PipelinePartition` did: a `TacticRecord` carrying its `PipelineSpec`."""

    spec: PipelineSpec | None = None


def pipeline_spec(records: Sequence[Any]) -> PipelineSpec | None:
    """The `PipelineSpec` of the schedule's `PipelinePartition`, or None without one.

    Args:
      records: a plan's per-tactic records (``plan.records``).
    """
    for record in records:
        if isinstance(record, PipelineRecord):
            return record.spec
    return None


@dataclass(frozen=True)
class PipelinePartition:
    """Run the program's scanned layers as a pipeline over the stages of mesh axis `axis`.

    Args:
      axis: the stage mesh axis; its size P is the number of stages.
      layers: selector of the stacked layer parameters (leading dim L), e.g.
        ``"params/blocks/**"``; the scans that consume them are the pipelined layers.
      microbatches: M; the batch dim of the scan's carries must divide by it.
      schedule: ``"gpipe"`` (one contiguous group of L/P layers per stage) or
        ``"circular"`` (stage s holds chunks s, s+P, ...; microbatches go round R times).
      repeats: R, the chunks per stage under ``"circular"``; L must divide by P * R.
    """

    axis: str
    layers: str
    microbatches: int
    schedule: Literal["gpipe", "circular"] = "gpipe"
    repeats: int = 1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise TacticError(f"{self!r}: schedule={self.schedule!r}; use one of {SCHEDULES}.")
        for name in ("microbatches", "repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise TacticError(f"{self!r}: {name}={value!r}; it must be an int >= 1.")
        if self.schedule == "gpipe" and self.repeats != 1:
            raise TacticError(
                f"{self!r}: repeats={self.repeats} needs schedule='circular'; GPipe runs "
                "each stage's layers once per microbatch."
            )

    def apply(self, ctx: TacticContext, index: int) -> PipelineRecord:
        """Check the layers, stages and microbatches against the program and record the
        pipeline's `PipelineSpec`."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add it to the mesh."
            )
        chosen = [i for i in select(self.layers, ctx.paths) if i < len(ctx.input_paths)]
        if not chosen:
            raise SelectorError(no_match_message(self, self.layers, ctx.input_paths))
        n_layers = self._layer_count(ctx, chosen)
        stages = prop.sizes[self.axis]
        if n_layers % (stages * self.repeats):
            raise DimensionError(
                f"{self!r}: the stacked layers {ctx.label(chosen[0])!r} have L={n_layers} "
                f"layers, which does not divide into {stages} stages (axis {self.axis!r}) "
                f"x {self.repeats} repeats. Choose a stage axis size and repeats whose "
                f"product divides {n_layers}."
            )
        scans = self._check_microbatches(ctx, chosen)
        if self.schedule == "circular" and self.microbatches < stages:
            raise TacticError(
                f"{self!r}: the circular schedule needs microbatches >= stages ({stages} on "
                f"{self.axis!r}): a microbatch re-enters stage 0 only after every stage "
                "has started one. Raise microbatches or use schedule='gpipe'."
            )
        spec = PipelineSpec(
            self.axis, stages, self.microbatches, self.schedule, self.repeats, n_layers
        )
        classes = _classify(prop, scans, self.microbatches, self)
        before = len(prop.conflicts)
        seeds = []
        for scan in scans:
            scan.attributes[PIPELINE_ATTR] = StringAttr(
                json.dumps({**spec.__dict__, **classes[id(scan)]})
            )
            nc, nk = scan.params["num_consts"], scan.params["num_carry"]
            stacked = [*list(scan.args)[nc + nk :], *list(scan.outs)[nk:]]
            for value in stacked:
                if ir.shape_of(value.type)[:1] == (n_layers,) and prop.seed(
                    value, 0, self.axis, index
                ):
                    seeds.append(value)
        prop.propagate(self.axis, index, seeds)
        chosen_dims: list[tuple[str, int | None]] = [(ctx.label(i), 0) for i in chosen]
        note = (
            f"{len(scans)} scan(s) pipelined over {self.axis!r}: {spec.layers_per_stage} "
            f"layers per stage, {self.microbatches} microbatches, {self.schedule}"
        )
        return PipelineRecord(
            index, self, chosen_dims, prop.conflicts[before:], notes=[note], spec=spec
        )

    def _layer_count(self, ctx: TacticContext, chosen: list[int]) -> int:
        """L, the leading dim every selected leaf shares."""
        counts: dict[int, str] = {}
        for i in chosen:
            shape = ir.shape_of(ctx.value(i).type)
            if not shape:
                raise DimensionError(
                    f"{self!r}: {ctx.label(i)!r} is a scalar; `layers` must select stacked "
                    "layer parameters whose leading dim is the layer dim (a lax.scan's xs)."
                )
            counts.setdefault(shape[0], ctx.label(i))
        if len(counts) > 1:
            text = ", ".join(f"{p!r} has {n}" for n, p in counts.items())
            raise DimensionError(
                f"{self!r}: the selected leaves disagree on the layer count ({text}); "
                "narrow `layers` to the stacked layer parameters."
            )
        return next(iter(counts))

    def _check_microbatches(self, ctx: TacticContext, chosen: list[int]) -> list[ir.ScanOp]:
        """Each scan consuming the layers must carry a batch dim 0 divisible by M."""
        scans = _consuming_scans([ctx.value(i) for i in chosen])
        if not scans:
            raise TacticError(
                f"{self!r}: no lax.scan consumes {ctx.label(chosen[0])!r}; pipelining needs "
                "the layers run by a scan over the stacked parameters (unrolled layers are "
                "not supported, docs/pipeline.md)."
            )
        for scan in scans:
            nc, nk = scan.params["num_consts"], scan.params["num_carry"]
            for carry in list(scan.args)[nc : nc + nk]:
                shape = ir.shape_of(carry.type)
                if shape and shape[0] % self.microbatches:
                    raise DimensionError(
                        f"{self!r}: the layers' scan carries {list(shape)} whose batch dim "
                        f"0 ({shape[0]}) does not divide into {self.microbatches} "
                        f"microbatches. Choose microbatches dividing {shape[0]}."
                    )
        return scans


def _consuming_scans(values: list[SSAValue]) -> list[ir.ScanOp]:
    """The scans that take any of `values` as an xs operand, in no particular order."""
    out: dict[int, ir.ScanOp] = {}
    for value in values:
        for use in value.uses:
            op = use.operation
            if isinstance(op, ir.ScanOp):
                nc, nk = op.params["num_consts"], op.params["num_carry"]
                if use.index >= nc + nk:
                    out[id(op)] = op
    return list(out.values())


def _classify(
    prop: Propagator, scans: list[ir.ScanOp], microbatches: int, tactic: PipelinePartition
) -> dict[int, dict[str, list[int]]]:
    """Per scan: the batch dim of each block argument and yield (or INVARIANT/ACCUMULATED),
    and on each body op its results' batch dims (the ``partir.mb`` attribute).

    Splitting the batch into microbatches is data parallelism over a virtual axis of size
    M: the carries' dim 0 is seeded on it in a throw-away `Propagator` and what propagation
    decides is the classification (tiled: the batch dim; partial: a per-microbatch sum to
    accumulate; neither: the same for every microbatch)."""
    virtual = Propagator(prop.module, ir.MeshAttr(((_VIRTUAL, microbatches),)))
    seeds = []
    for scan in scans:
        nc, nk = scan.params["num_consts"], scan.params["num_carry"]
        for carry in list(scan.args)[nc : nc + nk]:
            if virtual.seed(carry, 0, _VIRTUAL, 0):
                seeds.append(carry)
    virtual.propagate(_VIRTUAL, 0, seeds)

    def cls(value: SSAValue) -> int:
        dim = virtual.dim_of(value, _VIRTUAL)
        if dim is not None:
            return dim
        return ACCUMULATED if _VIRTUAL in virtual.partial.get(value, ()) else INVARIANT

    out: dict[int, dict[str, list[int]]] = {}
    for scan in scans:
        where = location_of(scan)
        body = scan.bodies[0].block
        nc, nk = scan.params["num_consts"], scan.params["num_carry"]
        args = [cls(a) for a in body.args]
        yields = [cls(v) for v in body.last_op.operands]  # type: ignore[union-attr]
        for k in range(nk):
            if args[nc + k] < 0 or yields[k] != args[nc + k]:
                raise TacticError(
                    f"{tactic!r}: carry {k} of the layers' scan at {where} does not carry "
                    "the batch through every layer (it is the same for every microbatch or "
                    "a sum over them), which the pipelined loop cannot split. Pipeline a "
                    "scan whose carries are activations (docs/pipeline.md)."
                )
        if ACCUMULATED in args:
            raise TacticError(
                f"{tactic!r}: an operand of the layers' scan at {where} is a pending sum "
                "over the batch; the pipelined loop cannot split it into microbatches."
            )
        for op in body.ops:
            if isinstance(op, ir.RegionPrimOp):
                raise TacticError(
                    f"{tactic!r}: the layers' scan at {where} has a nested {op.name} in its "
                    "body (a remat or loop); the pipelined loop runs flat layer bodies only "
                    "(docs/pipeline.md). Remove jax.checkpoint around the block."
                )
            if isinstance(op, ir.PrimOp | ir.ConstantOp):
                op.attributes[MB_ATTR] = StringAttr(
                    json.dumps([max(cls(r), -1) for r in op.results])
                )
        if any(c.op is not None and c.op.parent_op() is scan for c in virtual.conflicts):
            raise TacticError(
                f"{tactic!r}: the layers' scan at {where} mixes examples of the batch "
                "(its body reduces over the batch dim), so it cannot run per microbatch."
            )
        out[id(scan)] = {"args": args, "yields": yields}
    return out
