"""Pipeline (inter-layer) parallelism in the simulator: one step of a pipelined schedule.

A pipeline over ``P`` stages runs ``M`` microbatches; each stage holds ``layers / P``
contiguous layers (``repeats = v`` chunks of ``layers / (P·v)`` for the circular and
interleaved schedules, chunk ``c`` of stage ``p`` being virtual stage ``c·P + p``). The step
is simulated op by op: every (microbatch, virtual stage) has a forward and a backward op,
each device runs its ops in its schedule's fixed order, and an op starts once its device is
free and its input has arrived (the previous virtual stage's output plus one point-to-point
transfer on the stage axis's link). The bubble is what falls out, not a formula, so the
published ones are a check (tests/simulator/test_pipeline_sim.py):

- ``gpipe`` (GPipe, arXiv 1811.06965; GSPMD's SPMD pipeline, arXiv 2105.04663 §3.3): all
  forwards, then all backwards (a flush). Bubble ``(P-1)/(M+P-1)``; every stage stashes all
  ``M`` microbatches' activations.
- ``circular`` (GSPMD's circular schedule, MaxText's ``num_pipeline_repeats``): ``v``
  chunks per stage, forwards then backwards. Bubble ``(P-1)/(v·M+P-1)``.
- ``1f1b`` (PipeDream-Flush, Narayanan et al., arXiv 2104.04473 §2.2.1): ``P-p-1`` warm-up
  forwards, then one forward one backward. Same bubble as GPipe; stage ``p`` holds at most
  ``P-p`` microbatches in flight.
- ``interleaved-1f1b`` (arXiv 2104.04473 §2.2.2): 1F1B over ``v`` chunks; bubble
  ``(P-1)/(v·M+P-1)``, ``v`` times the point-to-point traffic.

``gpipe`` and ``circular`` are what ``PipelinePartition`` emits; ``1f1b`` and
``interleaved-1f1b`` are what-if schedules, marked ``simulated_only`` in the report.

The per-layer inputs are a `StageCosts`: explicit numbers, so this module depends on no
emission; `stage_costs_from_runs` derives them from simulated reports of the same program
with 1 and 2 layers at 1 and 2 microbatches.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace

from partir.simulator.collectives import collective_time
from partir.simulator.hardware import SimulatorError
from partir.simulator.topology import AxisLink

SCHEDULES = ("gpipe", "circular", "1f1b", "interleaved-1f1b")
EMITTED = frozenset({"gpipe", "circular"})


@dataclass(frozen=True)
class StageCosts:
    """Per-device costs of one layer and of the rest of a step, the pipeline's inputs.

    Attributes:
      layer_microbatch_s: seconds of one layer's forward and backward (recomputation
        included) on one microbatch.
      layer_step_s: seconds per layer paid once a step, whatever ``M`` (optimizer update,
        the gradient reduction over data axes).
      other_microbatch_s: seconds of the non-layer part (embedding, head, loss) on one
        microbatch; it runs on the last stage.
      other_step_s: seconds of the non-layer part once a step.
      layer_static_bytes: one layer's weights, gradients and optimizer state on a device.
      layer_activation_bytes: bytes one layer keeps per in-flight microbatch.
      other_static_bytes: the non-layer parameters' bytes (on the last stage).
      other_activation_bytes: the non-layer activation bytes per in-flight microbatch.
      boundary_bytes: bytes one device sends to the next stage per microbatch (the layer
        output), and receives back as its gradient.
      forward_fraction: the share of `layer_microbatch_s` that is the forward (1/3 without
        recomputation, 1/4 with it).
    """

    layer_microbatch_s: float
    layer_step_s: float = 0.0
    other_microbatch_s: float = 0.0
    other_step_s: float = 0.0
    layer_static_bytes: float = 0.0
    layer_activation_bytes: float = 0.0
    other_static_bytes: float = 0.0
    other_activation_bytes: float = 0.0
    boundary_bytes: float = 0.0
    forward_fraction: float = 1 / 3


@dataclass(frozen=True)
class PipelineReport:
    """One simulated pipelined step.

    Attributes:
      schedule: one of `SCHEDULES`.
      stages: P. microbatches: M. repeats: v (chunks per stage).
      simulated_only: True for a schedule `PipelinePartition` does not emit.
      step_time_s: the step: the pipelined part plus the once-a-step work.
      pipeline_time_s: the pipelined part (first forward to last backward).
      bubble_fraction: the share of `pipeline_time_s` a stage is idle, mean over stages.
      closed_form_bubble: ``(P-1)/(v·M+P-1)``, the published formula, for comparison.
      p2p_time_s: seconds of one point-to-point transfer of `StageCosts.boundary_bytes`.
      p2p_bytes_per_step: bytes one device sends on the stage axis in a step.
      in_flight: the most microbatch-chunks whose activations a stage holds, per stage.
      static_bytes: weights, gradients and optimizer state per stage.
      activation_bytes: peak stashed activations per stage.
      peak_memory_bytes: max over stages of static plus activation bytes.
    """

    schedule: str
    stages: int
    microbatches: int
    repeats: int
    simulated_only: bool
    step_time_s: float
    pipeline_time_s: float
    bubble_fraction: float
    closed_form_bubble: float
    p2p_time_s: float
    p2p_bytes_per_step: float
    in_flight: tuple[int, ...]
    static_bytes: tuple[float, ...]
    activation_bytes: tuple[float, ...]
    peak_memory_bytes: float

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        label = " (simulated only)" if self.simulated_only else ""
        return (
            f"pipeline {self.schedule}{label}: P={self.stages} M={self.microbatches} "
            f"v={self.repeats}: step {self.step_time_s * 1e3:.2f} ms, bubble "
            f"{self.bubble_fraction:.1%} (closed form {self.closed_form_bubble:.1%}), p2p "
            f"{self.p2p_time_s * 1e6:.1f} us/transfer, peak {self.peak_memory_bytes / 2**30:.2f} GiB"
        )


def _forward_order(stages: int, chunks: int, microbatches: int) -> list[tuple[int, int]]:
    """(microbatch, chunk) forwards of one device, Megatron's order: groups of P
    microbatches through chunk 0, then chunk 1, ..."""
    out = []
    for first in range(0, microbatches, stages):
        group = range(first, min(first + stages, microbatches))
        out += [(m, c) for c in range(chunks) for m in group]
    return out


def _device_orders(schedule: str, stages: int, chunks: int, microbatches: int) -> list[list]:
    """Each device's ops in order: ``("F" | "B", microbatch, chunk)``."""
    orders = []
    fwd = _forward_order(stages, chunks, microbatches)
    bwd = [(m, chunks - 1 - c) for m, c in fwd]
    for p in range(stages):
        fs = [("F", m, c) for m, c in fwd]
        bs = [("B", m, c) for m, c in bwd]
        if schedule in ("gpipe", "circular"):
            orders.append(fs + bs)
            continue
        warm = (stages - p - 1) * 2 + (chunks - 1) * stages if chunks > 1 else stages - p - 1
        warm = min(warm, len(fs))
        seq = fs[:warm]
        for i in range(len(fs) - warm):
            seq += [fs[warm + i], bs[i]]
        orders.append(seq + bs[len(fs) - warm :])
    return orders


def _check(layers: int, stages: int, microbatches: int, schedule: str, repeats: int) -> None:
    if schedule not in SCHEDULES:
        raise SimulatorError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if stages < 1 or microbatches < 1 or repeats < 1:
        raise SimulatorError(
            f"stages, microbatches and repeats must be >= 1, got {stages}, {microbatches}, "
            f"{repeats}"
        )
    if schedule in ("gpipe", "1f1b") and repeats != 1:
        raise SimulatorError(f"schedule {schedule!r} has one chunk per stage: pass repeats=1")
    if layers % (stages * repeats):
        raise SimulatorError(
            f"layers={layers} do not split into stages={stages} x repeats={repeats} equal "
            f"chunks; pick stages*repeats dividing {layers}"
        )
    if schedule == "interleaved-1f1b" and microbatches % stages:
        raise SimulatorError(
            f"interleaved-1f1b needs microbatches ({microbatches}) a multiple of stages "
            f"({stages}), as Megatron-LM does"
        )


def _run(orders: list[list], durations: dict, stages: int, chunks: int, p2p: float) -> tuple:
    """Executes the per-device orders; returns (makespan, busy per device, in-flight max)."""
    last = stages * chunks - 1
    done: dict[tuple, float] = {}
    free = [0.0] * stages
    pos = [0] * stages
    live = [0] * stages
    peak = [0] * stages
    busy = [0.0] * stages
    remaining = sum(len(o) for o in orders)
    while remaining:
        progressed = False
        for p in range(stages):
            while pos[p] < len(orders[p]):
                kind, m, c = orders[p][pos[p]]
                v = c * stages + p
                if kind == "F":
                    dep, hop = (("F", m, v - 1), p2p) if v > 0 else (None, 0.0)
                else:
                    dep, hop = (("F", m, v), 0.0) if v == last else (("B", m, v + 1), p2p)
                if dep is not None and dep not in done:
                    break
                start = max(free[p], done[dep] + hop if dep is not None else 0.0)
                took = durations[kind, v == last]
                done[kind, m, v] = free[p] = start + took
                busy[p] += took
                live[p] += 1 if kind == "F" else -1
                peak[p] = max(peak[p], live[p])
                pos[p] += 1
                remaining -= 1
                progressed = True
        if not progressed:
            raise SimulatorError("pipeline schedule deadlocked (a bug in the schedule order)")
    return max(free), busy, peak


def simulate_pipeline(
    costs: StageCosts,
    *,
    layers: int,
    stages: int,
    microbatches: int,
    schedule: str = "gpipe",
    repeats: int = 1,
    stage_link: AxisLink | None = None,
) -> PipelineReport:
    """Simulates one pipelined training step (see the module doc).

    Args:
      costs: the per-layer and non-layer costs on one device (`StageCosts`).
      layers: the number of (identical) layers pipelined.
      stages: P, the size of the stage axis.
      microbatches: M, microbatches per step.
      schedule: one of `SCHEDULES`.
      repeats: v, chunks per stage (``circular`` and ``interleaved-1f1b``; else 1).
      stage_link: the stage axis's `AxisLink` (from `Topology`); None: transfers are free.
    """
    _check(layers, stages, microbatches, schedule, repeats)
    chunk_layers = layers // (stages * repeats)
    chunk = chunk_layers * costs.layer_microbatch_s
    f = costs.forward_fraction
    other = costs.other_microbatch_s
    durations = {
        ("F", False): chunk * f,
        ("B", False): chunk * (1 - f),
        ("F", True): chunk * f + other * f,
        ("B", True): chunk * (1 - f) + other * (1 - f),
    }
    p2p = 0.0
    if stage_link is not None and stages > 1 and costs.boundary_bytes > 0:
        p2p = collective_time("collective_permute", costs.boundary_bytes, [stage_link])
    orders = _device_orders(schedule, stages, repeats, microbatches)
    makespan, busy, in_flight = _run(orders, durations, stages, repeats, p2p)
    bubble = sum(1 - b / makespan for b in busy) / stages if makespan > 0 else 0.0
    static = [(layers // stages) * costs.layer_static_bytes for _ in range(stages)]
    static[-1] += costs.other_static_bytes
    act = [n * chunk_layers * costs.layer_activation_bytes for n in in_flight]
    act[-1] += costs.other_activation_bytes * max(1, in_flight[-1] // repeats)
    once = (layers // stages) * costs.layer_step_s + costs.other_step_s
    hops = 2 * (stages * repeats - 1) * microbatches / stages if stages > 1 else 0
    return PipelineReport(
        schedule=schedule,
        stages=stages,
        microbatches=microbatches,
        repeats=repeats,
        simulated_only=schedule not in EMITTED,
        step_time_s=makespan + once,
        pipeline_time_s=makespan,
        bubble_fraction=bubble,
        closed_form_bubble=(stages - 1) / (repeats * microbatches + stages - 1),
        p2p_time_s=p2p,
        p2p_bytes_per_step=hops * costs.boundary_bytes,
        in_flight=tuple(in_flight),
        static_bytes=tuple(static),
        activation_bytes=tuple(act),
        peak_memory_bytes=max(s + a for s, a in zip(static, act, strict=True)),
    )


def stage_costs_from_runs(
    runs: Mapping[tuple[int, int], tuple[float, float]],
    *,
    boundary_bytes: float,
    forward_fraction: float = 1 / 3,
) -> StageCosts:
    """`StageCosts` from four simulated steps of the same program, unpipelined.

    Fits ``T(L, b) = L·(α·b + β) + (γ·b + δ)`` (and the same for peak memory) to the runs
    with L = 1, 2 layers and b = 1, 2 microbatches' worth of batch: ``α``, ``γ`` are the
    per-microbatch costs, ``β``, ``δ`` the once-a-step ones (clamped at 0: larger batches run
    at higher efficiency, which the linear fit would read as a negative fixed cost).

    Args:
      runs: ``(layers, microbatches) -> (step seconds, peak bytes)`` for the keys
        (1, 1), (2, 1), (1, 2), (2, 2).
      boundary_bytes: `StageCosts.boundary_bytes`.
      forward_fraction: `StageCosts.forward_fraction`.
    """
    need = {(1, 1), (2, 1), (1, 2), (2, 2)}
    if not need <= set(runs):
        raise SimulatorError(f"runs must have the keys {sorted(need)}, got {sorted(runs)}")

    def fit(i: int) -> tuple[float, float, float, float]:
        t = {k: v[i] for k, v in runs.items()}
        layer1, layer2 = t[2, 1] - t[1, 1], t[2, 2] - t[1, 2]
        fixed = max(0.0, 2 * layer1 - layer2)
        rest1, rest2 = t[1, 1] - layer1, t[1, 2] - layer2
        rest_fixed = max(0.0, 2 * rest1 - rest2)
        return max(0.0, layer1 - fixed), fixed, max(0.0, rest1 - rest_fixed), rest_fixed

    a, b, g, d = fit(0)
    ma, mb, mg, md = fit(1)
    if not all(math.isfinite(x) for x in (a, b, g, d, ma, mb, mg, md)):
        raise SimulatorError("runs hold non-finite times or memory")
    return StageCosts(
        layer_microbatch_s=a,
        layer_step_s=b,
        other_microbatch_s=g,
        other_step_s=d,
        layer_static_bytes=mb,
        layer_activation_bytes=ma,
        other_static_bytes=md,
        other_activation_bytes=mg,
        boundary_bytes=boundary_bytes,
        forward_fraction=forward_fraction,
    )


def stage_costs_from_parts(
    compute: Mapping[tuple[int, int], tuple[float, float]],
    communication: Mapping[tuple[int, int], float],
    *,
    boundary_bytes: float,
    forward_fraction: float = 1 / 3,
    collective_overlap: float = 0.0,
) -> StageCosts:
    """`StageCosts` from the compute and the communication of four unpipelined steps, fitted
    apart (`stage_costs_from_runs` on each).

    An overlapped step time is not additive in layers, so it cannot be fitted as one. Per
    microbatch, compute and communication add: the tensor-parallel collectives sit between
    a layer's matmuls, on the critical path (Narayanan et al., arXiv 2104.04473 §3.3). Once
    a step (the data-parallel gradient reduction after the pipeline flush), a
    ``collective_overlap`` share of the communication hides behind the last backward passes
    (Megatron-Core's ``--overlap-grad-reduce``).

    Args:
      compute: ``(layers, microbatches) -> (compute seconds, peak bytes)`` for the keys of
        `stage_costs_from_runs`.
      communication: the same keys -> communication seconds.
      boundary_bytes: `StageCosts.boundary_bytes`.
      forward_fraction: `StageCosts.forward_fraction`.
      collective_overlap: the share of the once-a-step communication hidden, in [0, 1].
    """
    if not 0.0 <= collective_overlap <= 1.0:
        raise SimulatorError(f"collective_overlap must be in [0, 1], got {collective_overlap}")
    if set(compute) != set(communication):
        raise SimulatorError(
            f"compute and communication need the same keys, got {sorted(compute)} and "
            f"{sorted(communication)}"
        )
    comp = stage_costs_from_runs(
        compute, boundary_bytes=boundary_bytes, forward_fraction=forward_fraction
    )
    comm = stage_costs_from_runs(
        {k: (t, compute[k][1]) for k, t in communication.items()},
        boundary_bytes=boundary_bytes,
        forward_fraction=forward_fraction,
    )
    hidden = 1.0 - collective_overlap
    return replace(
        comp,
        layer_microbatch_s=comp.layer_microbatch_s + comm.layer_microbatch_s,
        other_microbatch_s=comp.other_microbatch_s + comm.other_microbatch_s,
        layer_step_s=comp.layer_step_s + hidden * comm.layer_step_s,
        other_step_s=comp.other_step_s + hidden * comm.other_step_s,
    )
