"""`PipelinePartition`: inter-layer (pipeline) parallelism over one mesh axis.

A program whose layers are a `jax.lax.scan` over stacked parameters (leading dim L, the
layer dim) is split into contiguous groups of L / (P * R) layers, one group per stage of
the P devices of the stage axis (R > 1: circular, stage s holding chunks s, s + P, ...),
and the batch into M microbatches (docs/pipeline.md).

Status: the tactic validates its arguments against the program and records a
`PipelineSpec` (``plan.pipeline``) that the simulator and the search read. It does not yet
rewrite the scan into a pipelined loop: the layer weights stay replicated on the stage
axis, so the plan computes the unpartitioned function and says so in its record's notes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from xdsl.ir import SSAValue

from partir import ir
from partir.errors import DimensionError, SelectorError, TacticError, UnknownAxisError
from partir.tactics.manual import TacticContext, TacticRecord, no_match_message
from partir.tactics.selectors import select

SCHEDULES = ("gpipe", "circular")
"""The schedules `PipelinePartition` accepts."""

NOT_EMITTED = (
    "PipelinePartition: the pipelined loop is not emitted yet; the layer weights stay "
    "replicated on {axis!r} and each stage runs every layer (the plan's pipeline spec is "
    "what the simulator and search read)."
)


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
        self._check_microbatches(ctx, chosen)
        spec = PipelineSpec(
            self.axis, stages, self.microbatches, self.schedule, self.repeats, n_layers
        )
        note = NOT_EMITTED.format(axis=self.axis)
        # Never silent: the program still runs every layer on every stage.
        warnings.warn(note, stacklevel=4)
        return PipelineRecord(index, self, [], [], notes=[note], spec=spec)

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

    def _check_microbatches(self, ctx: TacticContext, chosen: list[int]) -> None:
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
