"""The search: a deterministic beam search over complete candidates, scored for real.

Every candidate it looks at is scored by `Evaluator` (propagation, lowering, collective
optimization and the simulator), so it sees what the ILP's pairwise model cannot: overlap,
fused collectives, conflicts that only arise when three groups meet. A move toggles one
group (adding a group drops the groups it excludes). Each round expands every candidate of
the beam, visiting groups in an order fixed by `seed`, and keeps the `width` best; it
stops when a round finds nothing better or the budget is spent.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from partir.tactics.auto.evaluate import Evaluator


@dataclass
class Budget:
    """How much a search may spend: evaluations and/or wall seconds (None: no limit).

    Only the evaluation limit keeps the result deterministic; a seconds limit that binds
    makes it depend on the machine's speed.
    """

    evaluations: int | None = None
    seconds: float | None = None
    started: float = 0.0

    def spent(self, evaluator: Evaluator) -> bool:
        """Whether the budget is used up."""
        if self.evaluations is not None and evaluator.evaluations >= self.evaluations:
            return True
        return self.seconds is not None and time.perf_counter() - self.started >= self.seconds


def neighbours(
    evaluator: Evaluator, candidate: frozenset[int], order: Sequence[int]
) -> list[frozenset[int]]:
    """The candidates one move away: each group toggled (adding drops what it excludes)."""
    space = evaluator.space
    out = []
    for g in order:
        if g in candidate:
            out.append(candidate - {g})
        else:
            kept = frozenset(h for h in candidate if space.compatible([g], h))
            out.append(kept | {g})
    return out


def beam_search(
    evaluator: Evaluator,
    starts: Sequence[frozenset[int]],
    budget: Budget,
    *,
    width: int = 2,
    seed: int = 0,
    on_step: Callable[[], None] = lambda: None,
    skip: Callable[[frozenset[int]], bool] | None = None,
    rank: Callable[[frozenset[int]], float] | None = None,
) -> None:
    """Improve on `starts` by beam search; every score lands in `evaluator.cache`.

    Args:
      evaluator: scores candidates (and keeps them).
      starts: the first beam.
      budget: when to stop.
      width: candidates kept per round.
      seed: fixes the order groups are tried in.
      on_step: called after each evaluation (progress display).
      skip: candidates not worth simulating (known to be worse, say); never called on a
        start.
      rank: a predicted score: neighbours predicted best are simulated first (the
        `seed` order breaks ties), which matters when the budget runs out.
    """
    objective = evaluator.objective
    order = list(range(len(evaluator.space.groups)))
    random.Random(seed).shuffle(order)

    def key(c: frozenset[int]) -> tuple[object, ...]:
        return (evaluator.evaluate(c).key(objective), len(c), sorted(c))

    beam: list[frozenset[int]] = []
    for c in starts:
        if c not in beam and not budget.spent(evaluator):
            evaluator.evaluate(c)
            on_step()
            beam.append(c)
    beam = sorted(beam, key=key)[:width]
    while beam and not budget.spent(evaluator):
        pool = list(beam)
        for c in beam:
            near = neighbours(evaluator, c, order)
            if rank is not None:
                near = sorted(near, key=rank)  # stable: ties keep the seed's order
            for n in near:
                if n in pool:
                    continue
                if n not in evaluator.cache:
                    if skip is not None and skip(n):
                        continue
                    if budget.spent(evaluator):
                        break
                    evaluator.evaluate(n)
                    on_step()
                pool.append(n)
        new = sorted(pool, key=key)[:width]
        if set(new) == set(beam):
            break  # a fixed point: every neighbour of the beam is worse
        beam = new


def combining_descent(
    evaluator: Evaluator,
    start: frozenset[int],
    budget: Budget,
    *,
    seed: int = 0,
    on_step: Callable[[], None] = lambda: None,
    skip: Callable[[frozenset[int]], bool] | None = None,
    rank: Callable[[frozenset[int]], float] | None = None,
) -> None:
    """Local search that takes several improving moves at once.

    Each round scores every move from the incumbent (toggling one group), then also the
    candidate made of all the improving moves that fit together (best first): the
    moves' effects are taken as independent, as the ILP takes the groups', and the
    simulator checks the combination. The best candidate scored becomes the incumbent;
    the search stops when a round improves nothing or the budget is spent.

    Args:
      evaluator: scores candidates (and keeps them).
      start: the first incumbent.
      budget: when to stop.
      seed: fixes the order moves are tried in (ties of `rank`).
      on_step: called after each evaluation.
      skip: candidates not worth simulating.
      rank: a predicted score, best simulated first.
    """
    objective = evaluator.objective
    space = evaluator.space
    order = list(range(len(space.groups)))
    random.Random(seed).shuffle(order)

    def key(c: frozenset[int]) -> tuple[object, ...]:
        return (evaluator.evaluate(c).key(objective), len(c), sorted(c))

    current = start
    evaluator.evaluate(current)
    while not budget.spent(evaluator):
        moves = neighbours(evaluator, current, order)
        if rank is not None:
            moves = sorted(moves, key=rank)
        # removals first: a model of independent groups over-selects, so where it was
        # wrong dropping a group is the likeliest gain
        moves = [n for n in moves if n < current] + [n for n in moves if not n < current]
        better = []
        for n in moves:
            if n not in evaluator.cache:
                if (skip is not None and skip(n)) or budget.spent(evaluator):
                    continue
                evaluator.evaluate(n)
                on_step()
            if key(n) < key(current):
                better.append(n)
        if not better:
            return
        better.sort(key=key)
        combined = set(better[0])
        for n in better[1:]:  # each move: what it adds and what it drops
            added, dropped = n - current, current - n
            if all(space.compatible(combined - dropped, g) for g in added):
                combined = (combined - dropped) | added
        jump = frozenset(combined)
        if jump not in evaluator.cache and not budget.spent(evaluator):
            evaluator.evaluate(jump)
            on_step()
        candidates = [better[0]] + ([jump] if jump in evaluator.cache else [])
        current = min(candidates, key=key)
