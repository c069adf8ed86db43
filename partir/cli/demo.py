"""`partir demo`: the GPT training step traced, planned under BP+MP+Z3, simulated, run, checked.

Steps (each prints a progress line with its time, then what it found):

1. trace the zoo's GPT step into partir IR: an excerpt, the op count, the text round trip,
   and the IR run back through JAX against the original function;
2. plan BP+MP+Z3 on a (4, 2) mesh of emulated CPU devices (`mode="spmd"`, so what runs is
   exactly what is planned and simulated) and print the per-tactic history;
3. the planned collectives and conflicts, and one parameter's provenance;
4. the simulated step time and memory on each hardware profile;
5. run the partitioned step and compare it with the unpartitioned one;
6. compile it and compare XLA's collectives with the plan's (`plan.check_compiled()`);

and a one-screen summary. The exit status is 0 only if every check passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from partir.plan.conflict_kind import counts as conflict_counts
from partir.plan.history import tactic_label

DEFAULT_HARDWARE = ("tpu-v5p", "h100")
"""The profiles `partir demo` simulates on."""

RTOL, ATOL = 1e-5, 1e-6
"""The partitioned step must match the unpartitioned one to these tolerances."""


@dataclass
class Progress:
    """Numbered progress lines with the time each step took (flushed, so they show at once)."""

    total: int
    out: Callable[[str], None] = print
    step: int = 0
    started: float = field(default_factory=time.perf_counter)
    _t: float = 0.0

    def begin(self, what: str) -> None:
        self.step += 1
        self._t = time.perf_counter()
        self.out(f"\n[{self.step}/{self.total}] {what} ...")

    def done(self, note: str = "") -> float:
        took = time.perf_counter() - self._t
        self.out(f"      done in {took:.1f} s{'; ' + note if note else ''}")
        return took


def _indent(text: str, pad: str = "  ") -> str:
    return "\n".join(pad + line for line in text.splitlines())


def _max_error(ours: Any, ref: Any) -> float:
    """The worst |a - b| / (atol + rtol |b|) over every output leaf (<= 1 passes)."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(ref), strict=True):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        worst = max(worst, float(np.max(np.abs(a - b) / (ATOL + RTOL * np.abs(b)), initial=0.0)))
    return worst


def _trace_step(model: Any, excerpt: int, out: Callable[[str], None]) -> tuple[bool, int]:
    import partir

    program = partir.trace(model.fn, *model.args)
    lines = program.to_text(compact=True).splitlines()
    first = next(i for i, ln in enumerate(lines) if "dot_general" in ln)
    out(f"  IR excerpt ({len(lines)} lines; parameters elided, `str(program)` has them):")
    out(_indent("\n".join(lines[first : first + excerpt]), "    "))
    counts = program.primitive_counts()
    top = ", ".join(f"{n} {k}" for k, n in counts.most_common(8))
    out(f"  {sum(counts.values())} ops: {top}, ...")
    round_trip = str(partir.parse(str(program))) == str(program)
    err = _max_error(program.to_jax()(*model.args), jax.jit(model.fn)(*model.args))
    out(
        f"  text round trip: {'identical' if round_trip else 'DIFFERENT'}; IR run back "
        f"through JAX vs the function: worst error {err:.2f} of the tolerance"
    )
    return round_trip and err <= 1.0, sum(counts.values())


def run_demo(
    layers: int = 2,
    excerpt: int = 12,
    hardware: Sequence[str] = DEFAULT_HARDWARE,
    out: Callable[[str], None] = print,
) -> int:
    """Run the demo; returns the exit status (0: every check passed).

    Args:
      layers: transformer layers of the zoo GPT.
      excerpt: IR lines to show.
      hardware: simulator profiles to predict the step on (the first is the history's).
      out: where lines go (`print` by default).
    """
    from jax.sharding import AxisType

    import partir
    from partir.tactics import presets
    from partir.testing import models

    progress = Progress(total=6, out=out)
    model = models.get("gpt", layers=layers)
    cfg = model.config
    n_params = sum(x.size for x in jax.tree.leaves(model.args[0]))
    out(
        f"partir demo: GPT training step, {cfg.layers} layers, d_model {cfg.d_model}, "
        f"{cfg.heads} heads, seq {cfg.seq}, batch {cfg.batch}, vocab {cfg.vocab} "
        f"({n_params:,} parameters, {cfg.dtype}), AdamW, on {len(jax.devices())} emulated "
        "CPU devices"
    )

    progress.begin("tracing the training step into partir IR")
    traced_ok, n_ops = _trace_step(model, excerpt, out)
    progress.done()

    progress.begin("planning BP + MP + Z3 on mesh (batch=4, model=2)")
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    schedule = [*presets.BP(), *presets.MP(), *presets.Z3()]
    step = partir.partition(schedule, mesh=mesh, mode="spmd")(model.fn)
    start = time.perf_counter()
    plan = step.plan(*model.args)
    planned_s = time.perf_counter() - start
    reports = {hw: plan.simulate(hw) for hw in reversed(hardware)}  # the first is the last
    history = plan.history
    progress.done(f"planned in {planned_s:.2f} s, history replayed and simulated after")
    for i, (name, tactic) in enumerate(zip(("BP()", "MP()", "Z3()"), schedule, strict=True)):
        out(f"  #{i} {name:<5} = {tactic_label(tactic, 80)}")
    out("")
    out(_indent(str(history)))

    progress.begin("reading the plan: collectives, conflicts, provenance")
    collectives = plan.collectives()
    summary = collectives.summary()
    for (kind, axes), s in sorted(summary.items()):
        if kind != "all_slice":
            out(
                f"  {s['count']:>4} x {kind:<15} over {','.join(axes):<6} {s['bytes']:>9,} B per device"
            )
    megatron = [c for c in collectives if c.kind == "all_reduce" and c.axes == ("model",)]
    out(f"  e.g. the Megatron all-reduces ({len(megatron)} = 4 per layer):")
    for c in megatron[:4]:
        out(f"    {c.kind} over model, {c.bytes:,} B, at {c.source}")
    grads = [c for c in collectives if c.serves]
    out(f"  {len(grads)} gradient reductions, each named by the parameter it serves, e.g.:")
    for c in grads[:3]:
        out(f"    {c.kind} over {','.join(c.axes)}, {c.bytes:,} B: {c.serves}, at {c.source}")
    clashes = [c for c in plan.conflicts if c.kind == "clash"]
    expected = [c for c in plan.conflicts if c.kind != "clash"]
    out(
        f"  {conflict_counts([c.kind for c in plan.conflicts])}: the expected ones are "
        "ZeRO-3's parameter gathers (Z3 stores each parameter split on 'batch', where BP "
        "splits the activations); the first:"
    )
    if expected:
        out(_indent(_short(str(expected[0]), schedule), "    "))
    for clash in clashes[:3]:
        out(_indent(_short(str(clash), schedule), "    "))
    out(_indent(_short(plan.explain("params/blocks/0/mlp/w_out"), schedule)))
    progress.done()

    progress.begin(f"simulating one step on {', '.join(hardware)}")
    out(f"  {'profile':<10} {'step time (no overlap / overlap)':<34} {'MFU':>9} "
        f"{'communication':>14} {'peak memory':>12}")  # fmt: skip
    for hw in hardware:
        r = reports[hw]
        out(
            f"  {hw:<10} {_fmt_time(r.step_time_s) + ' / ' + _fmt_time(r.step_time_overlap_s):<34} "
            f"{_fmt_mfu(r.mfu):>9} {_fmt_time(r.communication_time_s):>14} "
            f"{_fmt_bytes(r.peak_memory_bytes):>12}"
        )
    for hw in hardware:
        out(f"  {hw}: {reports[hw].bound_text()}")
    first = reports[hardware[0]]
    out(f"  most expensive on {hardware[0]}: " + "; ".join(
        f"{c[0]} {c[1]} {_fmt_time(c[2]['time_s'])}"
        for c in sorted(((k, ",".join(a), s) for (k, a), s in first.collective_summary().items()),
                        key=lambda c: -c[2]["time_s"])[:3]
    ))  # fmt: skip
    progress.done()

    progress.begin("running the partitioned step on 8 devices and the unpartitioned one")
    ours = step(*model.args)
    ref = jax.jit(model.fn)(*model.args)
    worst = _max_error(ours, ref)
    same = worst <= 1.0
    loss = float(ref[2])
    progress.done()
    out(
        f"  partitioned {'equals' if same else 'DIFFERS FROM'} unpartitioned: worst error "
        f"{worst:.2f} of the tolerance (rtol {RTOL:g}, atol {ATOL:g}); loss {loss:.6f}"
    )

    progress.begin("compiling with XLA and comparing its collectives with the plan's")
    check = plan.check_compiled()
    progress.done()
    out(_indent(str(check)))

    total = time.perf_counter() - progress.started
    ok = traced_ok and same and check.agrees and not clashes
    bar = "=" * 78
    comm = sum(v["count"] for (k, _), v in summary.items() if k != "all_slice")
    lines = [
        bar,
        f"SUMMARY  GPT step ({cfg.layers} layers, {n_params:,} params, {n_ops} ops) on mesh "
        f"batch=4 x model=2",
        f"  trace        IR round trip and run-back: {'ok' if traced_ok else 'FAILED'}",
        f"  schedule     BP + MP + Z3, planned in {planned_s:.1f} s; {comm} collectives, "
        f"{conflict_counts([c.kind for c in plan.conflicts])}",
    ]
    for t in history:
        lines.append(
            f"    #{t.index} {t.label[:44]:<44} {_delta_time(t.step_time_change_s):>12} "
            f"{_delta_bytes(t.peak_memory_change_bytes):>12}  (on {history.hardware})"
        )
    for hw in hardware:
        r = reports[hw]
        lines.append(
            f"  {hw:<12} step {_fmt_time(r.step_time_s)} ({r.bound}), MFU {_fmt_mfu(r.mfu)}, "
            "peak memory "
            f"{_fmt_bytes(r.peak_memory_bytes)} ({'fits' if r.fits else 'does NOT fit'})"
        )
    lines += [
        f"  numerics     partitioned vs unpartitioned step: "
        f"{'equal' if same else 'DIFFERENT'} (worst {worst:.2f} of tolerance)",
        f"  XLA          {check.verdict()}",
        f"  {'OK' if ok else 'FAILED'}: demo finished in {total:.0f} s",
        bar,
    ]
    out("\n" + "\n".join(lines))
    return 0 if ok else 1


def _short(text: str, schedule: Sequence[Any]) -> str:
    """`text` with each tactic's (long) repr replaced by its short label."""
    for tactic in schedule:
        text = text.replace(repr(tactic), tactic_label(tactic))
    return text


def _fmt_time(s: float) -> str:
    from partir.simulator.display import fmt_time

    return fmt_time(s)


def _fmt_mfu(mfu: float) -> str:
    from partir.simulator.display import fmt_mfu

    return fmt_mfu(mfu)


def _fmt_bytes(b: float) -> str:
    from partir.simulator.display import fmt_bytes

    return fmt_bytes(b)


def _delta_time(s: float) -> str:
    return ("+" if s >= 0 else "-") + _fmt_time(abs(s))


def _delta_bytes(b: float) -> str:
    return ("+" if b >= 0 else "-") + _fmt_bytes(abs(b))
