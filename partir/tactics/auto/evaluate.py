"""Scoring a candidate with the real machinery: propagate, lower, optimize, simulate.

A candidate is a set of chosen groups. Its score comes from a copy of the propagation state
earlier tactics left (`Propagator.copy`): the candidate's `ManualPartition` is applied to
the copy exactly as a user's would be, then the program is lowered to the device-local
program (`lower_to_spmd` + `optimize_collectives`, as `Plan.lowered` does) and simulated
on the judge's hardware profile. Scores are cached per candidate.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from partir import ir
from partir.ir.paths import split_path
from partir.passes.lower_to_spmd import lower_to_spmd
from partir.passes.optimize_collectives import optimize_collectives
from partir.passes.propagate import Propagator
from partir.simulator import Hardware, simulate
from partir.tactics.auto.classes import op_rules
from partir.tactics.auto.space import Space, zero_entries
from partir.tactics.manual import REPLICATED, ManualPartition, TacticContext, _Replicated
from partir.tactics.selectors import select
from partir.tactics.sequence import (
    GRAD_SUFFIX,
    DSPPartition,
    dsp_switches,
    named_ops,
    switch_values,
)
from partir.utils.gc import gc_paused

Entries = list[tuple[int, int | None]]
"""(index into `TacticContext.values`, dim or None for a pin), sorted by index."""
Applied = list[tuple[str, Entries, dict[str, int]]]
"""Per tactic of a candidate, its axis, entries and stages (name -> dim, in program order;
empty unless stage groups were chosen: then the tactic is a `DSPPartition`)."""

_NUMBER = re.compile(r"(?<=/)\d+(?=/|$)")


@dataclass(frozen=True)
class Score:
    """What the simulator predicts for one candidate.

    Attributes:
      step_time_s: per-device step time, no overlap (the objective ``"time"``).
      step_time_overlap_s: with communication fully overlapped.
      peak_memory_bytes: per-device peak (the objective ``"memory"``).
      fits: whether the peak is within the memory limit.
    """

    step_time_s: float
    step_time_overlap_s: float
    peak_memory_bytes: float
    fits: bool

    def key(self, objective: str) -> tuple[float, ...]:
        """Sort key, best first: a candidate over the memory limit loses to any that fits."""
        if objective == "memory":
            return (self.peak_memory_bytes, self.step_time_s)
        if self.fits:
            return (0.0, self.step_time_s, self.peak_memory_bytes)
        return (1.0, self.peak_memory_bytes, self.step_time_s)

    def value(self, objective: str) -> float:
        """The objective's number: seconds for ``"time"``, bytes for ``"memory"``."""
        return self.peak_memory_bytes if objective == "memory" else self.step_time_s


class Evaluator:
    """Scores candidates of one axis against the state earlier tactics left.

    Args:
      ctx: the tactic context; its propagator is copied, never changed.
      space: the decision space of the axis.
      index: the schedule position the seeds are attributed to.
      hardware: the judge's profile.
      memory_limit: bytes a candidate's peak may reach.
      objective: ``"time"`` or ``"memory"``.
    """

    def __init__(
        self,
        ctx: TacticContext,
        space: Space,
        index: int,
        hardware: Hardware,
        memory_limit: float,
        objective: str,
    ):
        self.ctx = ctx
        self.space = space
        self.index = index
        self.hardware = hardware
        self.memory_limit = memory_limit
        self.objective = objective
        self.cache: dict[frozenset[int], Score] = {}
        self.steps: dict[frozenset[int], tuple[tuple[int, ...], ...]] = {}
        """Per candidate, how its groups were applied: one tuple of groups per tactic."""
        self.concrete: dict[frozenset[int], Applied] = {}
        """Per candidate, per tactic: its axis and what it decided (value index, dim or
        None for a pin)."""
        self.order: list[int] | None = None
        """Groups best alone first; once set, candidates of groups that meet in an op are
        also tried applied one group at a time in this order."""
        self.evaluations = 0
        self.seconds = 0.0
        self.rules = op_rules(ctx)
        names = {n for g in space.groups for n, _ in g.stages}
        self.stage_order = list(
            dict.fromkeys(str(op.params.find("name")) for op in named_ops(ctx.propagator.module, names))
        ) if names else []  # fmt: skip
        """Names of the stage groups, in program order."""

    def entries(self, groups: Iterable[int]) -> list[tuple[int, int | None]]:
        """(index into `TacticContext.values`, dim, or None for a pin), sorted by index:
        what the groups (all on one axis) decide, in the order `ManualPartition` applies
        them."""
        out: dict[int, int | None] = {}
        for g in sorted(groups):
            out.update(self.space.groups[g].seeds)
        for g in sorted(groups):
            for j in self.space.groups[g].pins:
                out[j] = None
        return sorted(out.items())

    def stages(self, groups: Iterable[int]) -> dict[str, int]:
        """name -> dim of the stage groups among `groups`, in program order (the order
        `dsp_switches` reads the previous stage from)."""
        chosen = dict(st for i in groups for st in self.space.groups[i].stages)
        return {n: chosen[n] for n in self.stage_order if n in chosen}

    def tactics(self, candidate: frozenset[int], *, compact: bool = True) -> list[ManualPartition]:
        """The `ManualPartition` tactics a candidate stands for, in order (scoring it
        first if it was not); a tactic with stage groups is a `DSPPartition`.

        Args:
          candidate: the chosen groups.
          compact: write repeated leaves as one selector with ``*`` for the layer index
            (checked to select exactly the same leaves); else one exact path per leaf.
        """
        if candidate not in self.concrete:
            self.evaluate(candidate)
        out: list[ManualPartition] = []
        paths = self.ctx.paths
        for axis, entries, stages in self.concrete[candidate]:
            if not entries and not stages:
                continue
            exact: dict[str, int | _Replicated] = {
                paths[j]: REPLICATED if d is None else d for j, d in entries
            }
            inputs = compact_selectors(exact, paths) if compact and exact else exact
            if stages:  # class groups pin nothing: the inputs are all dims
                out.append(DSPPartition(inputs, axis, stages))
            else:
                out.append(ManualPartition(inputs, axis=axis))
        return out

    def _modes(self, candidate: frozenset[int]) -> list[tuple[tuple[int, ...], ...]]:
        """The ways to apply a candidate: axis by axis, each axis's class groups together
        (its ZeRO group after them); and, where groups meet in some op, one group at a
        time, best alone first (ZeRO groups last)."""
        space = self.space
        groups = sorted(candidate)
        together: list[tuple[int, ...]] = []
        for axis in space.axes:
            on_axis = [g for g in groups if space.groups[g].axis == axis]
            classes = tuple(g for g in on_axis if not space.groups[g].fill)
            together += [classes] if classes else []
            together += [(g,) for g in on_axis if space.groups[g].fill]
        if len(groups) < 2 or self.order is None:
            return [tuple(together)]
        if not any(
            (g, h) in space.interacting for k, g in enumerate(groups) for h in groups[k + 1 :]
        ):
            return [tuple(together)]  # groups that never meet propagate the same either way
        # Together, the groups' propagations race and meet midway; one at a time, the
        # group best alone claims the program first (data parallelism before ZeRO).
        order = [g for g in self.order if g in candidate and not space.groups[g].fill]
        order += [g for g in groups if space.groups[g].fill]
        return [tuple(together), tuple((g,) for g in order)]

    def evaluate(self, candidate: frozenset[int]) -> Score:
        """The candidate's score (cached): the better of applying its groups together and,
        where they meet in some op, one at a time."""
        hit = self.cache.get(candidate)
        if hit is not None:
            return hit
        best: tuple[Score, tuple[tuple[int, ...], ...], Applied] | None = None
        for steps in self._modes(candidate):
            score, applied = self._score(steps)
            if best is None or score.key(self.objective) < best[0].key(self.objective):
                best = (score, steps, applied)
        assert best is not None
        self.cache[candidate], self.steps[candidate], self.concrete[candidate] = best
        return best[0]

    def _score(self, steps: tuple[tuple[int, ...], ...]) -> tuple[Score, Applied]:
        start = time.perf_counter()
        with gc_paused():
            prop = self.ctx.propagator.copy()
            applied = [self._seed(prop, step) for step in steps]
            ins = [ir.Sharding(prop.sharding(v).dims) for v in self.ctx.inputs]
            outs = [ir.Sharding(prop.sharding(v).dims) for v in self.ctx.outputs]
            lowered = lower_to_spmd(prop, ins, outs, self.rules)
            optimize_collectives(lowered.module)
            report = simulate(lowered.module, self.hardware)
        peak = float(report.peak_memory_bytes)
        self.evaluations += 1
        self.seconds += time.perf_counter() - start
        score = Score(
            report.step_time_s, report.step_time_overlap_s, peak, peak <= self.memory_limit
        )
        return score, applied

    def _seed(self, prop: Propagator, step: tuple[int, ...]) -> tuple[str, Entries, dict[str, int]]:
        """What `ManualPartition.apply` does with the step's exact paths (same order: by
        index), without matching selectors against every path; returns what it decided."""
        group = self.space.groups[step[0]]
        axis, seeds = group.axis, []
        stages = {} if group.fill else self.stages(step)
        if group.fill:
            entries = zero_entries(self.ctx, prop, axis, group.fill)
        else:
            entries = self.entries(step)
        for j, d in entries:
            value = self.ctx.values[j]
            if d is None:
                prop.pin(value, axis, self.index)
            elif prop.seed(value, d, axis, self.index):
                seeds.append(value)
        if stages:  # as DSPPartition.apply: after the inputs, both sides of each name op
            switches = dsp_switches(stages)
            ops = named_ops(prop.module, set(stages) | {n + GRAD_SUFFIX for n in stages})
            for value, d, _ in switch_values(ops, switches):
                if prop.seed(value, d, axis, self.index):
                    seeds.append(value)
        if seeds:
            prop.propagate(axis, self.index, seeds)
        return axis, entries, stages

    def best(self) -> tuple[frozenset[int], Score]:
        """The best candidate evaluated so far (ties: fewer groups, then lower indices)."""
        return min(
            self.cache.items(),
            key=lambda kv: (kv[1].key(self.objective), len(kv[0]), sorted(kv[0])),
        )


Dim = int | _Replicated


def compact_selectors(exact: Mapping[str, Dim], paths: list[str]) -> dict[str, Dim]:
    """Selectors, fewer than `exact`'s paths, that select exactly the same leaves with the
    same dims among `paths` (layer indices become ``*``, then sibling names that differ
    in one component, such as ``mu`` and ``nu``, merge into ``*``)."""
    want: dict[int, Dim] = {}
    index = {p: i for i, p in enumerate(paths)}
    for p, d in exact.items():
        want[index[p]] = d

    def exactly(selector: str, dim: Dim) -> bool:
        hits = select(selector, paths)
        return bool(hits) and all(want.get(i) == dim for i in hits)

    # step 1: layer indices -> *
    out: dict[str, Dim] = {}
    covered: set[str] = set()
    for p, d in exact.items():
        if p in covered:
            continue
        pattern = _NUMBER.sub("*", p)
        if pattern != p and exactly(pattern, d):
            out[pattern] = d
            covered.update(paths[i] for i in select(pattern, paths))
        else:
            out[p] = d
            covered.add(p)
    # step 2: merge selectors that differ in one component
    changed = True
    while changed:
        changed = False
        keys = list(out)
        for a_i, a in enumerate(keys):
            pa = split_path(a)
            for b in keys[a_i + 1 :]:
                pb = split_path(b)
                if out[a] != out[b] or len(pa) != len(pb):
                    continue
                diff = [k for k in range(len(pa)) if pa[k] != pb[k]]
                if len(diff) != 1 or diff[0] == 0:
                    continue
                merged = "/".join("*" if k == diff[0] else pa[k] for k in range(len(pa)))
                if exactly(merged, out[a]):
                    d = out.pop(a)
                    out.pop(b)
                    out[merged] = d
                    changed = True
                    break
            if changed:
                break
    return dict(sorted(out.items(), key=lambda kv: _first_index(kv[0], paths)))


def _first_index(selector: str, paths: list[str]) -> int:
    hits = select(selector, paths)
    return hits[0] if hits else len(paths)
