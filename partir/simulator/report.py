"""`Report`: what the simulator predicts for one device-local program on one profile."""

from __future__ import annotations

import collections
import functools
from dataclasses import dataclass, field
from typing import Any

from xdsl.ir import Block, Operation

from partir import ir
from partir.ir.locations import location_of
from partir.simulator.collectives import KIND_OF, CommCost
from partir.simulator.costs import OpCost
from partir.simulator.display import fmt_bytes, fmt_mfu, fmt_time, report_html
from partir.simulator.fusion import xla_flops
from partir.simulator.hardware import Hardware
from partir.simulator.memory import MemoryProfile
from partir.simulator.program import op_flops
from partir.simulator.topology import Topology
from partir.utils.gc import gc_paused


@dataclass(frozen=True)
class OpRow:
    """One compute op (or, in `Report.top_ops`, all ops of one primitive at one source line).

    Attributes:
      primitive: the JAX primitive name.
      location: the user's source line (``file:line (function)``) or ``unknown``.
      count: how many times it runs per step (a scan body's ops run `length` times).
      flops, transcendentals, bytes_accessed: totals over `count` runs, per device.
      time_s: roofline seconds over `count` runs.
    """

    primitive: str
    location: str
    count: float
    flops: float
    transcendentals: float
    bytes_accessed: float
    time_s: float


@dataclass(frozen=True)
class CollectiveRow:
    """One collective of the program.

    Attributes:
      kind: ``all_gather``, ``all_reduce``, ``reduce_scatter``, ``all_to_all``,
        ``collective_permute`` or ``all_slice``.
      axes: the mesh axes of its group.
      links: the interconnect of each axis, e.g. ``"batch:ici"``.
      dtype: the element dtype name.
      local_shape: the per-device result shape.
      buffer_bytes: the per-device result buffer (what `plan.collectives()` reports).
      volume_bytes: V, the array's size over the group.
      bytes_sent: bytes each device sends, over `count` runs.
      count: runs per step.
      time_s: seconds over `count` runs.
      location: the user's source line.
      flops: reduction flops over `count` runs, as XLA counts them (all_reduce: 1 per element).
    """

    kind: str
    axes: tuple[str, ...]
    links: str
    dtype: str
    local_shape: tuple[int, ...]
    buffer_bytes: int
    volume_bytes: float
    bytes_sent: float
    count: float
    time_s: float
    location: str
    flops: float = 0.0


@dataclass(frozen=True)
class Report:
    """Predicted per-device step time, FLOPs, communication and memory of one program.

    Attributes:
      hardware: the profile simulated.
      topology: how each mesh axis maps to the interconnect.
      step_time_s: no overlap: all compute plus all communication (plus `launch_time_s`).
      step_time_overlap_s: full overlap of communication with compute that does not need it
        (two in-order streams; see `partir.simulator.program`).
      compute_time_s: the sum of every op's roofline time.
      communication_time_s: the sum of every collective's time.
      launch_time_s: starting the program: the profile's launch overhead and per-buffer
        overhead for each argument and result (0 except on the calibrated CPU profile).
      executed_flops: floating-point operations one device executes per step: every op of
        the program once, loop bodies times their trip count (a scan's length; a while loop,
        whose trip count is unknown, once), a cond's costliest branch; counted per op the way
        XLA's ``HloCostAnalysis`` counts (transcendentals apart, an FMA 2, all_reduce 1 per
        element). `mfu` and `mfu_overlap` use it. `flops` is what XLA reports.
      transcendentals: transcendental evaluations per device (executed, like
        `executed_flops`).
      bytes_accessed: memory traffic per device (no fusion).
      communication_bytes: bytes each device sends per step.
      peak_memory_bytes: peak live buffers on one device.
      memory: the liveness result (`MemoryProfile`): what is live at the peak.
      flops: (a property, computed on first access) FLOPs per device as XLA's
        ``compiled.cost_analysis()["flops"]`` reports them: loop bodies once, elementwise
        work that fusion recomputes counted per fusion. Compare this one with XLA.
      peak_flops_per_s: the peak `mfu` is measured against (the dtype doing most matmul flops).
      mfu: ``executed_flops / (step_time_s * peak_flops_per_s)``.
      mfu_overlap: the same with `step_time_overlap_s`.
    """

    hardware: Hardware
    topology: Topology
    step_time_s: float
    step_time_overlap_s: float
    compute_time_s: float
    communication_time_s: float
    launch_time_s: float
    executed_flops: float
    transcendentals: float
    bytes_accessed: float
    communication_bytes: float
    peak_memory_bytes: int
    memory: MemoryProfile
    peak_flops_per_s: float
    mfu: float
    mfu_overlap: float
    records: tuple[tuple[Operation, float, OpCost | CommCost, float], ...] = field(
        repr=False, compare=False
    )
    """``(op, count, cost, seconds per run)`` per op, in program order (for the tables)."""
    block: Block | None = field(default=None, repr=False, compare=False)
    """The simulated function body (for `flops`)."""

    @functools.cached_property
    def flops(self) -> float:
        """FLOPs per device as XLA's ``compiled.cost_analysis()["flops"]`` reports them.

        Unlike `executed_flops`: a loop body counts once (XLA's cost analysis does not know
        trip counts), and an elementwise producer that XLA's loop fusion recomputes in
        several consumer fusions counts once per fusion (see `partir.simulator.fusion`).
        Within 5% of the compiled program's count for every zoo model and schedule on the
        8-device CPU mesh (tests/simulator). Computed on first access.
        """
        if self.block is None:
            return self.executed_flops
        per_run = {op: c.flops for op, _, c, _ in self.records}

        def flops_of(op: Operation) -> float:
            f = per_run.get(op)
            return op_flops(op) if f is None else f

        with gc_paused():
            return xla_flops(self.block, flops_of)

    @functools.cached_property
    def bandwidth_time_s(self) -> float:
        """The part of `communication_time_s` that is moving bytes: each collective's bytes
        sent over the slowest link of its axes at that link's achieved large-message
        bandwidth (`Link.bandwidth_bytes_per_s` x `Link.efficiency`). The rest,
        `latency_time_s`, is start-up and per-step latency."""
        total = 0.0
        for op, count, c, _ in self.records:
            if not isinstance(c, CommCost) or not c.bytes_sent:
                continue
            assert isinstance(op, ir.CollectiveOp)
            rates = [
                self.topology[a].link.bandwidth_bytes_per_s * self.topology[a].link.efficiency
                for a in op.axis_names
            ]
            if rates and min(rates) > 0:
                total += c.bytes_sent * count / min(rates)
        return min(total, self.communication_time_s)

    @property
    def latency_time_s(self) -> float:
        """`communication_time_s` less `bandwidth_time_s`: what the collectives cost beyond
        their bytes (NCCL's base latency, ring steps, torus hops)."""
        return self.communication_time_s - self.bandwidth_time_s

    @property
    def bound(self) -> str:
        """What limits the step (no overlap), by this rule:

        - ``"latency-bound"``: communication takes at least as long as compute, and more
          than half of it is latency (`latency_time_s`): the collectives are too small
          for their bytes to matter, so their count, not their size, sets the time;
        - ``"communication-bound"``: communication takes at least as long as compute,
          mostly moving bytes;
        - ``"compute-bound"``: compute takes longer than communication.
        """
        if self.communication_time_s < self.compute_time_s or self.communication_time_s == 0:
            return "compute-bound"
        if self.latency_time_s > 0.5 * self.communication_time_s:
            return "latency-bound"
        return "communication-bound"

    def bound_text(self) -> str:
        """`bound` with the shares it rests on, for a headline."""
        step = self.step_time_s or 1.0
        comm = self.communication_time_s
        text = f"{self.bound}: communication {comm / step:.0%} of the step"
        if comm:
            text += f", {self.latency_time_s / comm:.0%} of it latency"
        if self.bound == "latency-bound":
            text += (
                " (the collectives' count sets the time, not their bytes: fewer, larger "
                "collectives or more work per device amortise it)"
            )
        return text

    def flops_note(self) -> str:
        """Why the two flop counts differ, when they do by more than 1% (else "")."""
        a, b = self.flops, self.executed_flops
        if max(a, b) == 0 or abs(a - b) <= 0.01 * max(a, b):
            return ""
        if a < b:
            why = "XLA's cost analysis counts a loop body once, not once per trip"
        else:
            why = (
                "XLA's cost analysis counts an elementwise op once per fusion that "
                "recomputes it, executed counts it once"
            )
        return f"they differ: {why}; MFU uses executed flops"

    @property
    def fits(self) -> bool:
        """Whether the peak fits in the device's memory."""
        return self.peak_memory_bytes <= self.hardware.memory_bytes

    @functools.cached_property
    def ops(self) -> tuple[OpRow, ...]:
        """Every compute op, in program order (region bodies inline)."""
        rows = []
        with gc_paused():
            for op, count, c, t in self.records:
                if isinstance(c, OpCost):
                    name = getattr(op, "primitive_name", op.name)
                    rows.append(
                        OpRow(name, location_of(op), count, c.flops * count,
                              c.transcendentals * count, c.bytes_accessed * count, t * count)
                    )  # fmt: skip
        return tuple(rows)

    @functools.cached_property
    def collectives(self) -> tuple[CollectiveRow, ...]:
        """Every collective, in program order."""
        rows = []
        for op, count, c, t in self.records:
            if not isinstance(c, CommCost):
                continue
            assert isinstance(op, ir.CollectiveOp)
            out_t = op.result.type
            shape = ir.shape_of(out_t)
            dtype = ir.dtype_of(out_t)
            n = 1
            for s in shape:
                n *= s
            links = ",".join(f"{a}:{self.topology[a].link.kind}" for a in op.axis_names)
            rows.append(
                CollectiveRow(KIND_OF[type(op)], op.axis_names, links, dtype, shape,
                              n * ir.ITEMSIZE[dtype], c.volume_bytes, c.bytes_sent * count,
                              count, t * count, location_of(op), c.flops * count)
            )  # fmt: skip
        return tuple(rows)

    def top_ops(self, n: int = 10) -> list[OpRow]:
        """The `n` most expensive (primitive, source line) groups of compute ops by time."""
        groups: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0] * 5)
        for r in self.ops:
            g = groups[(r.primitive, r.location)]
            g[0] += r.count
            g[1] += r.flops
            g[2] += r.transcendentals
            g[3] += r.bytes_accessed
            g[4] += r.time_s
        rows = [OpRow(p, loc, *vals) for (p, loc), vals in groups.items()]
        rows.sort(key=lambda r: -r.time_s)
        return rows[:n]

    def collective_summary(self) -> dict[tuple[str, tuple[str, ...]], dict[str, float]]:
        """(kind, axes) -> {"count", "bytes_sent", "time_s"} over communicating collectives."""
        out: dict[tuple[str, tuple[str, ...]], dict[str, float]] = {}
        for c in self.collectives:
            if c.kind == "all_slice":
                continue
            s = out.setdefault((c.kind, c.axes), {"count": 0.0, "bytes_sent": 0.0, "time_s": 0.0})
            s["count"] += c.count
            s["bytes_sent"] += c.bytes_sent
            s["time_s"] += c.time_s
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary: the scalar results, memory breakdown and both tables."""
        return {
            "hardware": self.hardware.name,
            "topology": str(self.topology),
            "step_time_s": self.step_time_s,
            "step_time_overlap_s": self.step_time_overlap_s,
            "compute_time_s": self.compute_time_s,
            "communication_time_s": self.communication_time_s,
            "launch_time_s": self.launch_time_s,
            "flops": self.flops,
            "executed_flops": self.executed_flops,
            "transcendentals": self.transcendentals,
            "bytes_accessed": self.bytes_accessed,
            "communication_bytes": self.communication_bytes,
            "peak_memory_bytes": self.peak_memory_bytes,
            "memory_bytes": self.hardware.memory_bytes,
            "fits": self.fits,
            "peak_flops_per_s": self.peak_flops_per_s,
            "mfu": self.mfu,
            "mfu_overlap": self.mfu_overlap,
            "bandwidth_time_s": self.bandwidth_time_s,
            "latency_time_s": self.latency_time_s,
            "bound": self.bound,
            "memory": {
                "peak_location": self.memory.peak_location,
                "argument_bytes": self.memory.argument_bytes,
                "output_bytes": self.memory.output_bytes,
                "by_category": dict(self.memory.by_category),
                "live_at_peak": [vars(v) for v in self.memory.live_at_peak],
                "donated": self.memory.donated,
            },
            "top_ops": [vars(r) for r in self.top_ops(20)],
            "collectives": [
                {**vars(c), "axes": list(c.axes), "local_shape": list(c.local_shape)}
                for c in self.collectives
            ],
        }

    def __str__(self) -> str:
        hw = self.hardware
        mem = self.memory
        fits = "fits" if self.fits else "DOES NOT FIT"
        cats = ", ".join(f"{k} {fmt_bytes(v)}" for k, v in mem.by_category.items())
        lines = [
            f"simulated on {hw.name}; mesh {str(self.topology) or '(one device)'}",
            *([f"  (a fitted profile: {hw.provenance})"] if hw.provenance else []),
            f"step time      {fmt_time(self.step_time_s)} (no overlap), "
            f"{fmt_time(self.step_time_overlap_s)} (full overlap)",
            f"  compute      {fmt_time(self.compute_time_s)}; communication "
            f"{fmt_time(self.communication_time_s)} ({fmt_bytes(self.communication_bytes)} "
            "sent per device)"
            + (f"; launch {fmt_time(self.launch_time_s)}" if self.launch_time_s else ""),
            f"  bound        {self.bound_text()}",
            f"flops/device   {self.flops:.4g} as XLA counts them, {self.executed_flops:.4g} "
            f"executed (+{self.transcendentals:.3g} transcendentals)",
            *([f"  ({self.flops_note()})"] if self.flops_note() else []),
            f"MFU            {fmt_mfu(self.mfu)} ({fmt_mfu(self.mfu_overlap)} with overlap)"
            + (f"; {self.bound}" if self.bound == "latency-bound" else ""),
            f"peak memory    {fmt_bytes(self.peak_memory_bytes)} of "
            f"{fmt_bytes(hw.memory_bytes)} ({fits}) at {mem.peak_location}",
            f"  live then    {cats}",
            "top compute ops by time:",
        ]
        for r in self.top_ops(8):
            lines.append(
                f"  {fmt_time(r.time_s):>11}  {r.primitive:<22} x{r.count:<6g} "
                f"{r.flops:10.3g} flops  {r.location}"
            )
        summary = self.collective_summary()
        if summary:
            lines.append("collectives:")
            for (kind, axes), s in sorted(summary.items(), key=lambda kv: -kv[1]["time_s"]):
                lines.append(
                    f"  {fmt_time(s['time_s']):>11}  {kind:<18} {','.join(axes):<14} "
                    f"x{s['count']:<5g} {fmt_bytes(s['bytes_sent'])} sent"
                )
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """Notebook display: the tables, the time breakdown and the memory timeline."""
        return report_html(self)

    def plot(self, top: int = 12) -> Any:
        """A matplotlib figure of two panels: where the step's time goes, and memory over time.

        Left, time per primitive and per collective kind and axes (no overlap). Right, the
        memory timeline (`MemoryProfile.timeline`): bytes in use while each op runs, as the
        arguments, the result buffers and the temp heap on top, with the peak marked and the
        device's capacity drawn when the peak comes near it. Built on
        `matplotlib.figure.Figure` (no pyplot state, any backend); a notebook shows it.

        Args:
          top: how many primitives and collectives to show (the rest are summed as ``other``).
        """
        from matplotlib.figure import Figure

        by_kind: dict[str, float] = collections.defaultdict(float)
        for r in self.ops:
            by_kind[r.primitive] += r.time_s
        for c in self.collectives:
            if c.time_s:
                by_kind[f"{c.kind} ({','.join(c.axes)})"] += c.time_s
        items = sorted(by_kind.items(), key=lambda kv: -kv[1])
        shown = items[:top] + ([("other", sum(v for _, v in items[top:]))] if items[top:] else [])
        scale, unit = _time_unit(max((v for _, v in shown), default=0.0))
        fig = Figure(figsize=(13, 4.5))
        ax_t, ax_m = fig.subplots(1, 2, gridspec_kw={"width_ratios": (1, 1.3)})
        labels = [k for k, _ in shown][::-1]
        ax_t.barh(labels, [v / scale for _, v in shown][::-1], color="#4c72b0")
        ax_t.set_xlabel(f"{unit} per step (no overlap)")
        ax_t.set_title(
            f"{self.hardware.name}: {fmt_time(self.step_time_s)} per step "
            f"({fmt_time(self.step_time_overlap_s)} with overlap)",
            fontsize=10,
        )
        mem = self.memory
        timeline = list(mem.timeline) or [self.peak_memory_bytes]
        b_scale, b_unit = _byte_unit(max(timeline))
        xs = range(len(timeline))
        args = mem.by_category.get("arguments", 0) / b_scale
        outs = mem.by_category.get("outputs", 0) / b_scale
        ax_m.fill_between(xs, 0, args, color="#8da0cb", label="arguments", step="post")
        ax_m.fill_between(xs, args, args + outs, color="#a6d854", label="result buffers",
                          step="post")  # fmt: skip
        ax_m.fill_between(xs, args + outs, [v / b_scale for v in timeline], color="#fc8d62",
                          label="temporaries and activations", step="post")  # fmt: skip
        peak_at = max(xs, key=timeline.__getitem__)
        ax_m.plot([peak_at], [timeline[peak_at] / b_scale], "kv")
        if self.peak_memory_bytes > 0.5 * self.hardware.memory_bytes:
            ax_m.axhline(self.hardware.memory_bytes / b_scale, color="red", linestyle="--",
                         label="device memory")  # fmt: skip
        ax_m.set_xlabel("op (program order)")
        ax_m.set_ylabel(f"{b_unit} in use")
        ax_m.set_title(
            f"peak {fmt_bytes(self.peak_memory_bytes)} of {fmt_bytes(self.hardware.memory_bytes)}"
            f" at {mem.peak_location}"[:90],
            fontsize=10,
        )
        ax_m.legend(loc="upper left", fontsize=8)
        fig.tight_layout()
        return fig


def _time_unit(seconds: float) -> tuple[float, str]:
    if seconds >= 1:
        return 1.0, "s"
    if seconds >= 1e-3:
        return 1e-3, "ms"
    return 1e-6, "us"


def _byte_unit(num_bytes: float) -> tuple[float, str]:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if num_bytes >= size:
            return float(size), unit
    return 1.0, "B"
