"""Deciding the axes: measure, solve the ILP, refine by search, report.

Every method first scores the empty candidate and each group alone.
``method="ilp"``: fit the model (`ilp.fit`), solve it, score its optimum. Where the real
score disagrees with the model, one group changes what the others do: for each of the
`ANCHORS` groups best alone, measure it paired with each group it meets in an op, solve
the ILP of the groups added to it, and score that optimum too.
``method="search"``: beam search (width 2) from the empty candidate.
``method="auto"``: the ILP, then `combining_descent` from the best candidate so far, from
each ILP optimum and from the best group alone, each with a share of the budget.

The answer is the best candidate scored. The empty candidate is always scored, so the
tactic never predicts a slower step (or, over the memory limit, a bigger peak) than what
earlier tactics left.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

from partir.simulator import Hardware
from partir.simulator.display import fmt_bytes, fmt_time
from partir.tactics.auto.evaluate import Evaluator
from partir.tactics.auto.ilp import IlpResult, Model, fit, solve
from partir.tactics.auto.progress import Progress
from partir.tactics.auto.search import Budget, beam_search, combining_descent
from partir.tactics.auto.space import Space
from partir.tactics.manual import ManualPartition, TacticContext

ANCHORS = 2
"""Groups (best alone first) the ILP is solved again given, when its first optimum
disagrees with the simulator."""
MODEL_TOLERANCE = 0.01
"""Relative disagreement between model and simulator above which anchors are measured."""


def default_evaluations(groups: int) -> int:
    """The default evaluation budget for an axis with `groups` groups."""
    return 8 + 8 * groups


@dataclass
class SearchReport:
    """What an automatic tactic decided, and what it cost to decide.

    Attributes:
      axes: the mesh axes decided.
      method, objective, hardware: as the tactic was given (hardware: the profile name).
      memory_limit_bytes: the limit candidates had to fit in.
      classes: dimension classes with an open member, over the axes.
      groups: decisions after repeated layers collapsed.
      chosen: labels of the groups chosen.
      tactics: the `ManualPartition` tactics it applied, in order (none: it left the axis
        as it was).
      step_time_s, step_time_overlap_s, peak_memory_bytes, fits: the chosen candidate's
        simulated numbers.
      prefix_step_time_s, prefix_peak_memory_bytes: the same with nothing chosen (what
        earlier tactics alone give).
      ilp_bound: the ILP optimum (seconds, or bytes for ``objective="memory"``); None if
        the ILP did not run or failed.
      ilp_status: HiGHS's verdict.
      gap: ``(found - bound) / found``; 0 means the pairwise model certifies the choice
        optimal (negative: the model over-estimated).
      evaluations: candidates simulated.
      search_time_s: wall time of the whole decision.
      ilp_time_s: of which solving ILPs.
    """

    axes: tuple[str, ...]
    method: str
    objective: str
    hardware: str
    memory_limit_bytes: float
    classes: int
    groups: int
    chosen: list[str]
    tactics: list[ManualPartition]
    step_time_s: float
    step_time_overlap_s: float
    peak_memory_bytes: float
    fits: bool
    prefix_step_time_s: float
    prefix_peak_memory_bytes: float
    ilp_bound: float | None
    ilp_status: str | None
    gap: float | None
    evaluations: int
    search_time_s: float
    ilp_time_s: float = 0.0

    def __str__(self) -> str:
        fmt = fmt_bytes if self.objective == "memory" else fmt_time
        lines = [
            f"axes {', '.join(map(repr, self.axes))}: {self.groups} groups "
            f"({self.classes} classes), "
            f"{self.evaluations} candidates simulated on {self.hardware} in "
            f"{self.search_time_s:.2f} s ({self.method})",
            f"  chosen: {', '.join(self.chosen) if self.chosen else 'nothing (the prefix is best)'}",
            f"  step time {fmt_time(self.step_time_s)} (prefix alone "
            f"{fmt_time(self.prefix_step_time_s)}), peak {fmt_bytes(self.peak_memory_bytes)}"
            f" of {fmt_bytes(self.memory_limit_bytes)}"
            + ("" if self.fits else " (over the limit)"),
        ]
        if self.ilp_bound is not None and self.gap is not None:
            lines.append(
                f"  ILP bound {fmt(self.ilp_bound)} ({self.ilp_status}), gap {100 * self.gap + 0.0:.2f}%"
            )
        return "\n".join(lines)


def _pairs(chosen: frozenset[int]) -> list[tuple[int, int]]:
    ordered = sorted(chosen)
    return [(g, h) for k, g in enumerate(ordered) for h in ordered[k + 1 :]]


def _solve(
    model: Model, space: Space, objective: str, memory_limit: float, allowed: list[int]
) -> IlpResult:
    ilp = solve(
        model, sorted(space.exclusive), objective=objective, memory_limit=memory_limit,
        allowed=allowed,
    )  # fmt: skip
    if ilp.status == "infeasible" and objective == "time":
        # nothing fits under the model: aim for the smallest footprint instead (its
        # optimum is in bytes, so it bounds nothing about time)
        fallback = solve(model, sorted(space.exclusive), objective="memory", allowed=allowed)
        return dataclasses.replace(
            fallback, objective=float("nan"), status="infeasible under the memory limit"
        )
    return ilp


def _anchored(
    ev: Evaluator,
    space: Space,
    model: Model,
    pairs: dict[tuple[int, int], tuple[float, float]],
    anchor: int,
    memory_limit: float,
    budget: Budget,
    show: Callable[[], None],
) -> tuple[float, frozenset[int] | None]:
    """Measure `anchor` with each group it meets, solve the ILP of the groups added to it
    (the anchor's pairs as their singles; a group it never meets adds what it adds
    alone), and score the optimum. Returns the seconds spent solving, and the optimum."""
    objective = ev.objective
    base = ev.cache[frozenset({anchor})]
    given: dict[int, tuple[float, float]] = {}
    for g in ev.order or ():
        if g == anchor or not space.compatible([anchor], g):
            continue
        pair = (min(anchor, g), max(anchor, g))
        if pair in space.interacting:
            if budget.spent(ev):
                continue
            s = ev.evaluate(frozenset(pair))
            pairs[pair] = (s.step_time_s, s.peak_memory_bytes)
            show()
            given[g] = pairs[pair]
        elif g in model.time:  # independent of the anchor: it adds what it adds alone
            alone = model.predict(frozenset({anchor, g}))
            given[g] = alone
    t0 = time.perf_counter()
    cond = fit(len(space.groups), (base.step_time_s, base.peak_memory_bytes), given, {})
    # pairs measured before (with other anchors) keep their interaction given this one
    known = fit(model.groups, (model.base_time, model.base_memory), _singles(ev, model), pairs)
    for pair, v in known.pair_time.items():
        if anchor not in pair and all(g in given for g in pair):
            cond.pair_time[pair] = v
            cond.pair_memory[pair] = known.pair_memory[pair]
    res = _solve(cond, space, objective, memory_limit, sorted(given))
    spent = time.perf_counter() - t0
    if not res.chosen or budget.spent(ev):
        return spent, None
    ev.evaluate(res.chosen | {anchor})
    show()
    return spent, res.chosen | {anchor}


def _singles(ev: Evaluator, model: Model) -> dict[int, tuple[float, float]]:
    out = {}
    for g in model.time:
        s = ev.cache[frozenset({g})]
        out[g] = (s.step_time_s, s.peak_memory_bytes)
    return out


def _predicted(model: Model, objective: str) -> Callable[[frozenset[int]], float]:
    """The model's value of a candidate (to try the most promising neighbours first)."""
    k = 0 if objective == "time" else 1
    return lambda c: model.predict(c)[k]


def _known_worse(
    ev: Evaluator, space: Space, model: Model, pairs: dict[tuple[int, int], tuple[float, float]]
) -> Callable[[frozenset[int]], bool]:
    """Candidates the model prices exactly (every group measured alone, every pair of them
    that meets in an op measured) and slower than the best that fits: not worth a
    simulation when the objective is time."""

    def skip(candidate: frozenset[int]) -> bool:
        if ev.objective != "time" or any(g not in model.time for g in candidate):
            return False
        if any(p in space.interacting and p not in pairs for p in _pairs(candidate)):
            return False
        best = ev.best()[1]
        return best.fits and model.predict(candidate)[0] > best.step_time_s

    return skip


@dataclass
class _Search:
    """One axis's search: the evaluator and what the phases learn and hand on."""

    ev: Evaluator
    space: Space
    objective: str
    memory_limit: float
    budget: Budget
    seed: int
    progress: Progress
    model: Model | None = None
    """The fitted ILP model (once the singles are measured and the ILP runs)."""
    ilp: IlpResult | None = None
    ilp_time: float = 0.0
    pairs: dict[tuple[int, int], tuple[float, float]] = dataclasses.field(default_factory=dict)
    optima: list[frozenset[int]] = dataclasses.field(default_factory=list)
    """Every ILP optimum scored, the anchored ones included."""

    def show(self) -> None:
        if self.ev.cache:
            best = self.ev.best()[1].value(self.objective)
            self.progress.update(
                self.ev.evaluations,
                self.budget.evaluations,
                best,
                self.ilp.objective if self.ilp else None,
            )

    def singles(self) -> dict[int, tuple[float, float]]:
        """Score each group alone (every method's first round, the ILP's coefficients, and
        the order groups are applied in); returns group -> (time, memory)."""
        found: dict[int, tuple[float, float]] = {}
        ev = self.ev
        for g in range(len(self.space.groups)):
            if self.budget.spent(ev):
                break
            s = ev.evaluate(frozenset({g}))
            found[g] = (s.step_time_s, s.peak_memory_bytes)
            self.show()
        ev.order = sorted(found, key=lambda g: (ev.cache[frozenset({g})].key(self.objective), g))
        return found

    def run_ilp(self, base: tuple[float, float], singles: dict[int, tuple[float, float]]) -> None:
        """Fit and solve the ILP, score its optimum, and where the model missed solve it
        again given each of the best groups alone."""
        ev = self.ev
        self.model = fit(len(self.space.groups), base, singles, {})
        t0 = time.perf_counter()
        self.ilp = _solve(
            self.model, self.space, self.objective, self.memory_limit, sorted(singles)
        )
        self.ilp_time += time.perf_counter() - t0
        if not self.ilp.chosen or self.budget.spent(ev):
            return
        real = ev.evaluate(self.ilp.chosen)
        self.optima.append(self.ilp.chosen)
        self.show()
        ilp = self.ilp
        predicted = ilp.predicted_time_s if self.objective == "time" else ilp.predicted_memory_bytes
        close = abs(real.value(self.objective) - predicted) <= MODEL_TOLERANCE * abs(predicted)
        if close and (real.fits or self.objective == "memory"):
            return
        # The model missed: one group changes what the others do (data parallelism
        # shrinks every other saving). Condition on the groups best alone: measure each
        # with every group it meets, solve again given it.
        for anchor in (ev.order or [])[:ANCHORS]:
            if self.budget.spent(ev):
                break
            t_ilp, found = _anchored(
                ev, self.space, self.model, self.pairs, anchor, self.memory_limit, self.budget,
                self.show,
            )  # fmt: skip
            self.ilp_time += t_ilp
            self.optima += [found] if found is not None else []

    def run_descent(self) -> None:
        """`combining_descent` from the best so far, each ILP optimum and the best group
        alone, each with an equal share of what is left of the budget: a model of
        independent groups can steer away from the best when one group (data parallelism)
        changes all the others; a descent from each start corrects it."""
        ev = self.ev
        skip = rank = None
        if self.model is not None:
            skip = _known_worse(ev, self.space, self.model, self.pairs)
            rank = _predicted(self.model, self.objective)
        firsts = list(
            dict.fromkeys(
                [ev.best()[0], *self.optima, *[frozenset({g}) for g in (ev.order or [])[:1]]]
            )
        )
        for k, first in enumerate(firsts):
            share = Budget(seconds=self.budget.seconds, started=self.budget.started)
            if self.budget.evaluations is not None:
                left = self.budget.evaluations - ev.evaluations
                share.evaluations = ev.evaluations + max(1, left // (len(firsts) - k))
            combining_descent(
                ev, first, share, seed=self.seed, on_step=self.show, skip=skip, rank=rank
            )

    def run_beam(self) -> None:
        """Beam search (width 2) from the empty candidate."""
        beam_search(self.ev, [frozenset()], self.budget, width=2, seed=self.seed, on_step=self.show)

    def bound(self) -> float | None:
        """The ILP's proven bound on the objective, where it solved to optimality."""
        ilp = self.ilp
        if ilp is None or ilp.chosen is None or ilp.status != "optimal":
            return None
        return None if ilp.objective != ilp.objective else ilp.objective  # nan: it failed


METHODS: dict[str, tuple[str, ...]] = {
    "ilp": ("ilp",),
    "search": ("beam",),
    "auto": ("ilp", "descent"),
}
"""Search method -> its phases after the singles, in order (see the module docstring)."""


def decide(
    ctx: TacticContext,
    space: Space,
    index: int,
    hardware: Hardware,
    memory_limit: float,
    *,
    objective: str,
    method: str,
    budget: Budget,
    seed: int,
    progress: Progress,
) -> tuple[Evaluator, frozenset[int], SearchReport]:
    """Decide the axis of `space`; returns the evaluator (its cache holds every score),
    the chosen groups and the report (whose `tactics` are what to apply)."""
    start = time.perf_counter()
    budget.started = start
    ev = Evaluator(ctx, space, index, hardware, memory_limit, objective)
    if budget.evaluations is None and budget.seconds is None:
        budget.evaluations = default_evaluations(len(space.groups))
    search = _Search(ev, space, objective, memory_limit, budget, seed, progress)
    base = ev.evaluate(frozenset())
    search.show()
    singles = search.singles()
    for phase in METHODS[method]:
        if phase == "ilp" and singles:
            search.run_ilp((base.step_time_s, base.peak_memory_bytes), singles)
        elif phase == "descent" and not budget.spent(ev):
            search.run_descent()
        elif phase == "beam" and not budget.spent(ev):
            search.run_beam()
    chosen, score = ev.best()
    progress.close()
    bound = search.bound()
    value = score.value(objective)
    gap = (value - bound) / value if bound is not None and value > 0 else None
    report = SearchReport(
        axes=space.axes,
        method=method,
        objective=objective,
        hardware=hardware.name,
        memory_limit_bytes=memory_limit,
        classes=space.classes,
        groups=len(space.groups),
        chosen=[space.groups[g].label for g in sorted(chosen)],
        tactics=ev.tactics(chosen),
        step_time_s=score.step_time_s,
        step_time_overlap_s=score.step_time_overlap_s,
        peak_memory_bytes=score.peak_memory_bytes,
        fits=score.fits,
        prefix_step_time_s=base.step_time_s,
        prefix_peak_memory_bytes=base.peak_memory_bytes,
        ilp_bound=bound,
        ilp_status=search.ilp.status if search.ilp is not None else None,
        gap=gap,
        evaluations=ev.evaluations,
        search_time_s=time.perf_counter() - start,
        ilp_time_s=search.ilp_time,
    )
    return ev, chosen, report
