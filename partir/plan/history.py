"""`plan.history`: what each tactic of a schedule did, and what it cost.

The schedule is replayed on a fresh `Propagator` over the plan's own traced program, one
tactic at a time. After each prefix ``schedule[:k]`` the propagation state is lowered to
the device-local program (lowering only reads the state) and simulated; comparing prefix
``k`` with prefix ``k + 1`` gives tactic ``k``'s collectives added, removed and resized,
and its change in simulated step time and peak memory. Prefix 0 is the unpartitioned
program (everything replicated); the last prefix is the plan itself (`plan.lowered`).

Hardware: `plan.history` simulates on the hardware (and options) of the plan's last
`plan.simulate(...)` call, or on ``"cpu"`` before any; `plan.history_for("tpu-v5p")`
names it explicitly. Lowered prefixes are computed once per plan and shared by every
hardware; simulations are cached per hardware.
"""

from __future__ import annotations

import collections
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from xdsl.ir import SSAValue

from partir import ir
from partir.frontend import constraints as user_constraints
from partir.passes.lower_to_spmd import lower_to_spmd
from partir.passes.optimize_collectives import optimize_collectives
from partir.passes.propagate import Propagator
from partir.plan.collectives import Collective, CollectiveTable, collective_table
from partir.simulator import Report, simulate
from partir.simulator.display import fmt_bytes, fmt_time
from partir.tactics import TacticContext
from partir.utils.gc import gc_paused
from partir.utils.html import render_html

if TYPE_CHECKING:
    from partir.api.plan import ConflictReport, Plan

DEFAULT_HARDWARE = "cpu"
"""What `plan.history` simulates on before the plan was ever simulated."""


@dataclass(frozen=True)
class Resized:
    """A collective at the same place doing the same thing, on a different buffer size."""

    before: Collective
    after: Collective


@dataclass(frozen=True)
class TacticStep:
    """What one tactic of the schedule did.

    Attributes:
      index: the tactic's position in the schedule.
      tactic: the tactic itself.
      axis: the mesh axis it decided.
      seeded: (path, dim) per input or output the tactic named; dim None for a pin.
      reached: input and output paths that gained the axis through propagation (not seeded).
      values_decided: IR values (inputs, outputs and intermediates, region bodies included)
        that gained the axis or were pinned on it while the tactic applied.
      added: collectives of prefix ``index + 1`` with no counterpart in prefix ``index``.
      removed: collectives of prefix ``index`` with no counterpart in prefix ``index + 1``.
      resized: collectives at the same source line, for the same operand, of the same kind
        and axes, whose per-device buffer changed size.
      conflicts: the conflicts recorded while it applied; each has a `kind`: a
        ``"clash"`` with another tactic, or ``"expected"`` resharding of its own choice.
      collectives: every collective of the program with the tactic (prefix ``index + 1``).
      before, after: the simulated reports of the program without and with the tactic.
      notes: what the tactic chose not to do and why (ZeRO's skipped leaves and their
        bytes, logical rules nothing used).
    """

    index: int
    tactic: Any
    axis: str
    seeded: tuple[tuple[str, int | None], ...]
    reached: tuple[str, ...]
    values_decided: int
    added: tuple[Collective, ...]
    removed: tuple[Collective, ...]
    resized: tuple[Resized, ...]
    conflicts: tuple[ConflictReport, ...]
    collectives: CollectiveTable = field(repr=False)
    before: Report = field(repr=False)
    after: Report = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def step_time_change_s(self) -> float:
        """Simulated step time (no overlap) with the tactic minus without it."""
        return self.after.step_time_s - self.before.step_time_s

    @property
    def peak_memory_change_bytes(self) -> int:
        """Simulated peak memory with the tactic minus without it."""
        return self.after.peak_memory_bytes - self.before.peak_memory_bytes

    @property
    def label(self) -> str:
        """A short name for the tactic: its repr, or its type and axis when that is long."""
        return tactic_label(self.tactic)


class History(Sequence[TacticStep]):
    """Per tactic of a plan's schedule, a `TacticStep`; prints as a compact table.

    Attributes:
      hardware: the profile name the prefixes were simulated on.
      start: the simulated report of the unpartitioned program (no tactic applied).
      steps: one `TacticStep` per tactic, in schedule order.
    """

    def __init__(self, hardware: str, start: Report, steps: list[TacticStep], mesh: dict[str, int]):
        self.hardware = hardware
        self.start = start
        self.steps = steps
        self.mesh = mesh

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: Any) -> Any:
        return self.steps[i]

    def __iter__(self) -> Iterator[TacticStep]:
        return iter(self.steps)

    def rows(self) -> list[dict[str, str]]:
        """One dict of display strings per tactic (the table's cells), plus a start row."""
        out = [
            {
                "#": "",
                "tactic": "(unpartitioned)",
                "axis": "",
                "seeded": "",
                "values": "",
                "collectives": "",
                "conflicts": "",
                "step time": _fmt_time(self.start.step_time_s),
                "peak memory": _fmt_bytes(self.start.peak_memory_bytes),
            }
        ]
        for s in self.steps:
            out.append(
                {
                    "#": str(s.index),
                    "tactic": s.label,
                    "axis": s.axis,
                    "seeded": str(len(s.seeded)),
                    "values": str(s.values_decided),
                    "collectives": collective_delta_text(s),
                    "conflicts": conflict_cell(s.conflicts),
                    "step time": f"{_fmt_time(s.after.step_time_s)} "
                    f"({_signed(s.step_time_change_s, _fmt_time)})",
                    "peak memory": f"{_fmt_bytes(s.after.peak_memory_bytes)} "
                    f"({_signed(s.peak_memory_change_bytes, _fmt_bytes)})",
                }
            )
        return out

    def _repr_html_(self) -> str:
        """Notebook display: the table, each tactic's collective changes under its row."""
        return render_html(self)

    def __str__(self) -> str:
        rows = self.rows()
        keys = list(rows[0])
        widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in keys}
        mesh = ", ".join(f"{a}={n}" for a, n in self.mesh.items())
        lines = [f"history on mesh {mesh}, simulated on {self.hardware} (step time: no overlap)"]
        lines.append("  ".join(k.ljust(widths[k]) for k in keys).rstrip())
        lines += ["  ".join(r[k].ljust(widths[k]) for k in keys).rstrip() for r in rows]
        for s in self.steps:
            detail = collective_details(s) + [f"note: {n}" for n in s.notes]
            if detail:
                lines.append(f"#{s.index} {s.label}:")
                lines += [f"  {d}" for d in detail]
        return "\n".join(lines)


def conflict_cell(conflicts: Sequence[ConflictReport]) -> str:
    """``"2 clashes, 3 expected"``: a tactic's conflicts by kind, in a table cell."""
    clashes = sum(c.kind == "clash" for c in conflicts)
    parts = []
    if clashes:
        parts.append(f"{clashes} clash{'es' if clashes != 1 else ''}")
    if len(conflicts) - clashes:
        parts.append(f"{len(conflicts) - clashes} expected")
    return ", ".join(parts) or "0"


def tactic_label(tactic: Any, width: int = 48) -> str:
    """The tactic's repr, or ``Type(axis=..., N selectors)`` when the repr is longer than `width`."""
    text = repr(tactic)
    if len(text) <= width:
        return text
    inputs = getattr(tactic, "inputs", None)
    count = (
        f", {len(inputs)} selector{'s' if len(inputs) != 1 else ''}" if inputs is not None else ""
    )
    return f"{type(tactic).__name__}(axis={getattr(tactic, 'axis', '?')!r}{count})"


def _group(collectives: Sequence[Collective]) -> dict[tuple[str, tuple[str, ...]], list[int]]:
    """(kind, axes) -> [count, bytes] over communicating collectives, in first-seen order."""
    out: dict[tuple[str, tuple[str, ...]], list[int]] = {}
    for c in collectives:
        if c.communicates:
            g = out.setdefault((c.kind, c.axes), [0, 0])
            g[0] += 1
            g[1] += c.bytes
    return out


def collective_delta_text(step: TacticStep) -> str:
    """``+8 all_reduce(model) -1 all_reduce(batch) ~29``: the tactic's collective changes."""
    parts = [f"+{n} {k}({','.join(a)})" for (k, a), (n, _) in _group(step.added).items()]
    parts += [f"-{n} {k}({','.join(a)})" for (k, a), (n, _) in _group(step.removed).items()]
    resized = sum(1 for r in step.resized if r.after.communicates)
    if resized:
        parts.append(f"~{resized} resized")
    return " ".join(parts) or "none"


def collective_details(step: TacticStep) -> list[str]:
    """One line per (change, kind, axes): count, per-device bytes each, source lines."""
    lines = []
    for sign, group in (("added", step.added), ("removed", step.removed)):
        by: dict[tuple[str, tuple[str, ...], int], list[Collective]] = collections.defaultdict(list)
        for c in group:
            if c.communicates:
                by[(c.kind, c.axes, c.bytes)].append(c)
        for (kind, axes, nbytes), cs in by.items():
            sources = sorted({c.source for c in cs})
            more = f" (+{len(sources) - 2} more)" if len(sources) > 2 else ""
            lines.append(
                f"{sign} {len(cs)} x {kind} over {','.join(axes)} of {nbytes:,} B "
                f"({_shape_text(cs[0])}) at {'; '.join(sources[:2])}{more}"
            )
    resized = [r for r in step.resized if r.after.communicates]
    if resized:
        before = sum(r.before.bytes for r in resized)
        after = sum(r.after.bytes for r in resized)
        lines.append(f"resized {len(resized)} collectives: {before:,} B -> {after:,} B in all")
    return lines


def _shape_text(c: Collective) -> str:
    return f"{ir.dtypes.short_name(c.dtype)}{list(c.shape)}"


def diff_collectives(
    before: Sequence[Collective], after: Sequence[Collective]
) -> tuple[tuple[Collective, ...], tuple[Collective, ...], tuple[Resized, ...]]:
    """(added, removed, resized) between two programs' collective tables.

    Collectives are matched by (kind, axes, source line, what they convert) as multisets;
    a matched pair with a different buffer size is *resized*, one with the same is unchanged.
    """

    def key(c: Collective) -> tuple[Any, ...]:
        return (c.kind, c.axes, c.source, c.reason)

    def full(c: Collective) -> tuple[Any, ...]:
        return (*key(c), c.shape, c.bytes)

    # exact matches first (same place, same buffer); the rest pair up closest first
    before_n = collections.Counter(full(c) for c in before)
    after_n = collections.Counter(full(c) for c in after)
    same = {k: min(n, after_n[k]) for k, n in before_n.items() if after_n[k]}
    skip_before, skip_after = dict(same), dict(same)
    pool: dict[tuple[Any, ...], list[Collective]] = collections.defaultdict(list)
    for c in before:
        if skip_before.get(full(c)):
            skip_before[full(c)] -= 1
        else:
            pool[key(c)].append(c)
    after_left = []
    for c in after:
        if skip_after.get(full(c)):
            skip_after[full(c)] -= 1
        else:
            after_left.append(c)
    news: dict[tuple[Any, ...], list[Collective]] = collections.defaultdict(list)
    for c in after_left:
        news[key(c)].append(c)
    paired: set[int] = set()
    resized: list[Resized] = []
    removed: list[Collective] = []
    for k, olds in pool.items():
        pairs = _pair_up(olds, news.get(k, []))
        for i, j in sorted(pairs, key=lambda p: p[1]):
            resized.append(Resized(olds[i], news[k][j]))
            paired.add(id(news[k][j]))
        matched_old = {i for i, _ in pairs}
        removed += [o for i, o in enumerate(olds) if i not in matched_old]
    added = [c for c in after_left if id(c) not in paired]
    return tuple(added), tuple(removed), tuple(resized)


def _distance(before: Collective, after: Collective) -> tuple[float, ...]:
    """How unlikely `after` is `before` re-tiled by a tactic: same rank with every dim
    dividing (or divided by) the other's is likeliest, then fewest dims changed, then the
    smallest size ratio."""
    if len(before.shape) != len(after.shape):
        return (2.0, 0.0, 0.0)
    pairs = list(zip(before.shape, after.shape, strict=True))
    if not all(a and b and (a % b == 0 or b % a == 0) for a, b in pairs):
        return (1.0, 0.0, 0.0)
    ratio = max(before.bytes, after.bytes) / max(1, min(before.bytes, after.bytes))
    return (0.0, float(sum(a != b for a, b in pairs)), ratio)


def _pair_up(olds: list[Collective], news: list[Collective]) -> list[tuple[int, int]]:
    """(old index, new index) pairs, closest first (greedy over all pairs)."""
    ranked = sorted((_distance(o, n), i, j) for i, o in enumerate(olds) for j, n in enumerate(news))
    used_old: set[int] = set()
    used_new: set[int] = set()
    out = []
    for _, i, j in ranked:
        if i not in used_old and j not in used_new:
            used_old.add(i)
            used_new.add(j)
            out.append((i, j))
    return out


@dataclass
class _Prefix:
    """The propagation result of one schedule prefix, lowered."""

    module: Any
    table: CollectiveTable
    decided: set[tuple[int, str]]
    """(id(value), axis) pairs decided so far, for counting what a tactic added."""
    paths_on: dict[str, set[str]]
    """Input/output path -> the axes it uses (tiled or partial)."""


@dataclass
class _Cache:
    prefixes: list[_Prefix] | None = None
    reports: dict[Any, list[Report]] = field(default_factory=dict)
    last_hardware: tuple[Any, dict[str, Any]] = (DEFAULT_HARDWARE, {})


_CACHES: weakref.WeakKeyDictionary[Any, _Cache] = weakref.WeakKeyDictionary()


def _cache(plan: Plan) -> _Cache:
    c = _CACHES.get(plan)
    if c is None:
        c = _CACHES[plan] = _Cache()
    return c


def remember_hardware(plan: Plan, hardware: Any, options: dict[str, Any]) -> None:
    """Record what `plan.simulate` was last called with (what `plan.history` uses)."""
    _cache(plan).last_hardware = (hardware, dict(options))


def _lower(prop: Propagator, inputs: list[Any], outputs: list[Any]) -> Any:
    ins = [ir.Sharding(prop.sharding(v).dims) for v in inputs]
    outs = [ir.Sharding(prop.sharding(v).dims) for v in outputs]
    lowered = lower_to_spmd(prop, ins, outs)
    optimize_collectives(lowered.module)
    return lowered.module


def _snapshot(prop: Propagator, module: Any, mesh: Any, paths: dict[Any, str]) -> _Prefix:
    decided = {(id(v), a) for (v, a) in prop.origin}
    paths_on = {
        p: prop.axes_of(v) | {a for (w, a) in prop.pinned if w is v} for v, p in paths.items()
    }
    return _Prefix(module, collective_table(module, mesh), decided, paths_on)


def _prefixes(plan: Plan) -> list[_Prefix]:
    """Lower every prefix of the schedule once (prefix 0: nothing applied)."""
    cache = _cache(plan)
    if cache.prefixes is not None:
        return cache.prefixes
    program = plan.program
    mesh_attr = ir.MeshAttr(tuple((str(n), int(s)) for n, s in plan.mesh.shape.items()))
    inputs: list[SSAValue] = list(program.function.args)
    outputs = list(program.function.body.block.last_op.operands)  # type: ignore[union-attr]
    paths = dict(zip(inputs, program.input_paths, strict=True))
    for v, p in zip(outputs, program.output_paths, strict=True):
        paths.setdefault(v, p)
    with gc_paused():
        prop = Propagator(program.module, mesh_attr)
        user_constraints.apply(prop, warn=False)  # as the plan did, before any tactic
        ctx = TacticContext(
            propagator=prop,
            input_paths=program.input_paths,
            inputs=inputs,
            function=program.name,
            output_paths=program.output_paths,
            outputs=outputs,
        )
        out = [_snapshot(prop, _lower(prop, inputs, outputs), plan.mesh, paths)]
        last = len(plan.schedule) - 1
        for i, tactic in enumerate(plan.schedule):
            # an automatic tactic's record holds what its search found: apply that rather
            # than search again (same decisions, none of the search's time)
            found = getattr(plan.records[i], "found", None)
            for t in found if found is not None else (tactic,):
                t.apply(ctx, i)
            # the whole schedule is the plan itself: reuse its (cached) lowering
            module = plan.lowered.module if i == last else _lower(prop, inputs, outputs)
            out.append(_snapshot(prop, module, plan.mesh, paths))
    cache.prefixes = out
    return out


def _hardware_key(hardware: Any, options: dict[str, Any]) -> Any:
    name = (
        hardware
        if isinstance(hardware, str)
        else f"{getattr(hardware, 'name', '?')}@{id(hardware)}"
    )
    return (name, tuple(sorted((k, repr(v)) for k, v in options.items())))


def history(plan: Plan, hardware: Any = None, **options: Any) -> History:
    """The per-tactic history of `plan`, simulated on `hardware`.

    Args:
      plan: a `partir.Plan`.
      hardware: a profile name or `partir.simulator.Hardware`; None for the hardware of
        the plan's last `simulate` call (``"cpu"`` if it was never simulated).
      **options: simulator options (``topology``, ``donate``); with ``hardware=None``, the
        last `simulate` call's options are used.
    """
    cache = _cache(plan)
    if hardware is None:
        hardware, options = cache.last_hardware
    prefixes = _prefixes(plan)
    key = _hardware_key(hardware, options)
    reports = cache.reports.get(key)
    if reports is None:
        reports = cache.reports[key] = [simulate(p.module, hardware, **options) for p in prefixes]
    by_tactic: dict[int, list[ConflictReport]] = collections.defaultdict(list)
    for c in plan.conflicts:
        # a conflict belongs to the latest tactic among those that caused it
        by_tactic[max(c.tactic_indices, default=-1)].append(c)
    steps = []
    for i, tactic in enumerate(plan.schedule):
        before, after = prefixes[i], prefixes[i + 1]
        axis = str(getattr(tactic, "axis", None) or ",".join(getattr(tactic, "axes", ())))
        record = plan.records[i] if i < len(plan.records) else None
        seeded = tuple(record.seeded) if record is not None else ()
        named = {p for p, _ in seeded}
        reached = tuple(
            p for p, axes in after.paths_on.items() if p not in named and axes - before.paths_on[p]
        )
        added, removed, resized = diff_collectives(before.table, after.table)
        steps.append(
            TacticStep(
                i, tactic, axis, seeded, reached, len(after.decided - before.decided),
                added, removed, resized, tuple(by_tactic.get(i, ())), after.table, reports[i],
                reports[i + 1], tuple(getattr(record, "notes", ())),
            )
        )  # fmt: skip
    name = reports[0].hardware.name
    return History(name, reports[0], steps, {str(a): int(n) for a, n in plan.mesh.shape.items()})


def _fmt_time(s: float) -> str:
    return fmt_time(abs(s))


def _fmt_bytes(b: float) -> str:
    return fmt_bytes(abs(b))


def _signed(x: float, fmt: Any) -> str:
    return ("-" if x < 0 else "+") + fmt(x)
