"""The pipelined step of a plan with a `PipelinePartition` (what ``plan.simulate`` reports).

The device-local program of such a plan runs each marked layer scan as a plain scan: every
device would run all L layers on its whole batch shard, with no point-to-point sends. The
backend runs it instead as a pipelined loop (`partir.backend.pipeline`), so this module
turns the ordinary simulation of the device-local program into a `StageCosts` and hands
it to `partir.simulator.pipeline.simulate_pipeline`:

- a layer's per-microbatch time is the simulated time of the marked scans' bodies (the
  forward scan and its transposed scan, collectives inside them included) over L layers
  and M microbatches: time scales linearly with the microbatch (a roofline at microbatch
  shapes would be slower for small ones; stated, not modelled);
- the forward share is the forward scan's part of that time;
- everything outside the marked scans runs once a step on every stage, as emitted (the
  embedding, head, loss and optimizer are not pipelined), plus the loop's once-a-step
  collectives on the stage axis (`partir.backend.pipeline.loop_collectives`: the last
  stage's carries to every stage, the circular schedule's all-to-alls);
- the point-to-point message is one microbatch of the scan's carries, on the stage axis's
  link of the report's topology;
- per stage: the stage-sharded arguments (its layers' weights and optimizer state) and the
  transposed scan's per-layer gradients are its static bytes; the other arguments sit on
  every stage; the forward scan's stacked residuals over L/P layers and M microbatches
  give one layer's activation bytes per in-flight microbatch.

No overlap is modelled beyond the schedule's: `PipelinedReport.step_time_overlap_s` equals
`step_time_s`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from xdsl.ir import Operation

from partir import ir
from partir.backend import pipeline as backend_pipeline
from partir.backend.evaluate import module_function
from partir.simulator import Report
from partir.simulator.collectives import collective_time
from partir.simulator.costs import OpCost
from partir.simulator.display import fmt_bytes, fmt_time
from partir.simulator.pipeline import PipelineReport, StageCosts, simulate_pipeline
from partir.tactics.pipeline import PipelineSpec, pipeline_spec

WHAT_IF = ("1f1b", "interleaved-1f1b")
"""Schedules simulated next to the emitted one, labelled simulated-only."""


@dataclass(frozen=True)
class PipelinedReport(Report):
    """A `Report` of the pipelined step: the scalar fields are the pipeline's, per device.

    `step_time_s` is `pipeline`'s step; `compute_time_s`, `communication_time_s` and
    `executed_flops` are one stage's (its L/P layers plus the unpipelined rest, the
    point-to-point sends included); `peak_memory_bytes` is the pipeline's peak stage.
    `memory`, `records` and the op tables are the device-local program's (`unpipelined`).

    Attributes:
      pipeline: the emitted schedule's `PipelineReport` (per-stage memory, bubble, p2p).
      what_if: the same step under `WHAT_IF` schedules (``simulated_only``), by name.
      stage_costs: the `StageCosts` the pipeline was simulated from.
      unpipelined: the device-local program's own `Report` (no loop, no sends).
    """

    pipeline: PipelineReport | None = None
    what_if: dict[str, PipelineReport] = field(default_factory=dict)
    stage_costs: StageCosts | None = None
    unpipelined: Report | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """`Report.to_dict` plus the pipeline, its what-ifs and its stage costs."""
        out = super().to_dict()
        out["pipeline"] = self.pipeline.to_dict() if self.pipeline else None
        out["what_if"] = {k: v.to_dict() for k, v in self.what_if.items()}
        out["stage_costs"] = dataclasses.asdict(self.stage_costs) if self.stage_costs else None
        return out

    def __str__(self) -> str:
        pipe = self.pipeline
        assert pipe is not None
        lines = [str(pipe), "  per stage:"]
        for s, (st, act, n) in enumerate(
            zip(pipe.static_bytes, pipe.activation_bytes, pipe.in_flight, strict=True)
        ):
            lines.append(
                f"    stage {s}: weights/grads/optimizer {fmt_bytes(st)}, activations "
                f"{fmt_bytes(act)} ({n} microbatch-chunks in flight)"
            )
        lines.append(
            f"  p2p on the stage axis: {fmt_bytes(pipe.p2p_bytes_per_step)} sent per step, "
            f"{fmt_time(pipe.p2p_time_s)} per transfer"
        )
        for r in self.what_if.values():
            lines.append(f"  what-if {r}")
        assert self.unpipelined is not None
        lines += ["device-local program without the loop (the tables below):", ""]
        return "\n".join(lines) + str(self.unpipelined)


def _scan_parts(report: Report, scans: list[ir.ScanOp]) -> dict[int, list[float]]:
    """Per marked scan: [compute s, communication s, flops] of its body over a step."""
    out = {id(s): [0.0, 0.0, 0.0] for s in scans}
    for op, count, cost, seconds in report.records:
        parent: Operation | None = op.parent_op()
        while parent is not None and id(parent) not in out:
            parent = parent.parent_op()
        if parent is None:
            continue
        part = out[id(parent)]
        part[0 if isinstance(cost, OpCost) else 1] += seconds * count
        part[2] += cost.flops * count
    return out


def _once_collectives_s(scans: list[ir.ScanOp], link: Any) -> float:
    """Seconds of the loop's once-a-step collectives on the stage axis."""
    seconds = 0.0
    for scan in scans:
        for kind, _, _, _, nbytes, _ in backend_pipeline.loop_collectives(scan):
            if kind != "collective_permute":
                volume = nbytes * (link.size if kind == "all_to_all" else 1)
                seconds += collective_time(kind, volume, [link])
    return seconds


def _marked_scans(plan: Any) -> list[ir.ScanOp]:
    return [op for op in plan.lowered.module.walk() if backend_pipeline.is_pipelined(op)]


def stage_costs_of(
    plan: Any, report: Report, spec: PipelineSpec, scans: list[ir.ScanOp], parts: dict
) -> tuple[StageCosts, float]:
    """The `StageCosts` of a pipelined plan from its device-local `report` (module doc), and
    the bytes of the arguments not on the stage axis (on every stage). `scans` are its
    marked layer scans, `parts` their `_scan_parts`."""
    fwd = [s for s in scans if not s.params["reverse"]]
    bwd = [s for s in scans if s.params["reverse"]]
    t_f = sum(parts[id(s)][0] + parts[id(s)][1] for s in fwd)
    t_b = sum(parts[id(s)][0] + parts[id(s)][1] for s in bwd)
    per_layer_mb = (t_f + t_b) / (spec.layers * spec.microbatches)
    link = report.topology[spec.axis]
    once_s = _once_collectives_s(scans, link)
    boundary = 0.0
    for s in fwd or bwd:
        boundary += sum(
            c[4] for c in backend_pipeline.loop_collectives(s) if c[0] == "collective_permute"
        )
    args = [ir.nbytes_of(a.type) for a in module_function(plan.lowered.module).args]
    layouts = plan.lowered.in_layouts
    staged = sum(
        b for b, lay in zip(args, layouts, strict=True) if any(spec.axis in d for d in lay.dims)
    )
    grads = residuals = 0.0
    for s in scans:
        meta = backend_pipeline.spec_of(s)
        nk = s.params["num_carry"]
        for cls, out in zip(meta["yields"][nk:], list(s.outs)[nk:], strict=True):
            if cls == backend_pipeline.ACCUMULATED:
                grads += ir.nbytes_of(out.type)
            elif cls >= 0 and not s.params["reverse"]:
                residuals += ir.nbytes_of(out.type)
    per_stage_layers = spec.layers_per_stage
    return StageCosts(
        layer_microbatch_s=per_layer_mb,
        other_step_s=max(0.0, report.step_time_s - t_f - t_b) + once_s,
        layer_static_bytes=(staged + grads) / per_stage_layers,
        layer_activation_bytes=residuals / (per_stage_layers * spec.microbatches),
        boundary_bytes=boundary,
        forward_fraction=t_f / (t_f + t_b) if t_f + t_b > 0 else 1 / 3,
    ), float(sum(args) - staged)


def pipelined_report(plan: Any, report: Report) -> Report:
    """The `PipelinedReport` of `plan` from `report`, the simulation of its device-local
    program; `report` itself when the plan has no `PipelinePartition`."""
    spec = pipeline_spec(plan.records)
    if spec is None:
        return report
    scans = _marked_scans(plan)
    parts = _scan_parts(report, scans)
    costs, other_bytes = stage_costs_of(plan, report, spec, scans, parts)
    link = report.topology[spec.axis]
    kwargs = {"layers": spec.layers, "stages": spec.stages, "microbatches": spec.microbatches}
    pipe = _on_every_stage(
        simulate_pipeline(
            costs, schedule=spec.schedule, repeats=spec.repeats, stage_link=link, **kwargs
        ),
        other_bytes,
    )
    what_if = {}
    for schedule in WHAT_IF:
        repeats = 1 if schedule == "1f1b" else max(spec.repeats, 2)
        if spec.layers % (spec.stages * repeats) or (
            schedule == "interleaved-1f1b" and spec.microbatches % spec.stages
        ):
            continue  # the schedule does not fit these layers and microbatches
        r = simulate_pipeline(costs, schedule=schedule, repeats=repeats, stage_link=link, **kwargs)
        what_if[schedule] = _on_every_stage(r, other_bytes)
    comp = sum(p[0] for p in parts.values())
    comm = sum(p[1] for p in parts.values())
    flops = sum(p[2] for p in parts.values())
    p2p_s = pipe.p2p_time_s * 2 * (spec.stages * spec.repeats - 1) * spec.microbatches
    compute = report.compute_time_s - comp + comp / spec.stages
    communication = report.communication_time_s - comm + comm / spec.stages + p2p_s / spec.stages
    executed = report.executed_flops - flops + flops / spec.stages
    step = pipe.step_time_s
    peak = report.peak_flops_per_s
    mfu = executed / (step * peak) if step > 0 and peak > 0 else 0.0
    return PipelinedReport(
        **{f.name: getattr(report, f.name) for f in dataclasses.fields(Report)}
        | {
            "step_time_s": step,
            "step_time_overlap_s": step,
            "compute_time_s": compute,
            "communication_time_s": communication,
            "executed_flops": executed,
            "communication_bytes": report.communication_bytes + pipe.p2p_bytes_per_step,
            "peak_memory_bytes": int(pipe.peak_memory_bytes),
            "mfu": mfu,
            "mfu_overlap": mfu,
        },
        pipeline=pipe,
        what_if=what_if,
        stage_costs=costs,
        unpipelined=report,
    )


def _on_every_stage(report: PipelineReport, other_bytes: float) -> PipelineReport:
    """The unpipelined arguments (non-layer parameters, the batch) sit on every stage."""
    static = tuple(s + other_bytes for s in report.static_bytes)
    peak = max(s + a for s, a in zip(static, report.activation_bytes, strict=True))
    return dataclasses.replace(report, static_bytes=static, peak_memory_bytes=peak)
