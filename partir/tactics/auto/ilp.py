"""The exact solver: an integer linear program over the groups' binary choices.

The simulator's step time and peak memory of a candidate (a set of chosen groups) are
modelled with one term per chosen group and one per chosen pair of groups whose
interaction was measured. Time is modelled in log space (sharding divides time, so
speed-ups compound: data parallelism halving the step halves what tensor parallelism can
then save), memory linearly (sharded bytes add up)::

    log T(x) = log T0 + sum_g a_g x_g + sum_(g,h) b_gh y_gh      y_gh = x_g AND x_h
        M(x) =     M0 + sum_g m_g x_g + sum_(g,h) n_gh y_gh

with every coefficient read off real simulations (`T0`: nothing chosen; ``a_g``: group
`g` alone against `T0`; ``b_gh``: the pair against both singles), so the model is exact
on every candidate it was measured on. The product is linearised the standard way
(``y <= x_g``, ``y <= x_h``, ``y >= x_g + x_h - 1``), groups that seed one leaf on two
dims exclude each other (``x_g + x_h <= 1``), and the memory limit is the constraint
``M(x) <= limit``. HiGHS (through `scipy.optimize.milp`) solves it to optimality. Its
optimum is the bound the report states the gap against: a lower bound on the simulated
time of every candidate the model prices exactly (all pairs of its groups that meet in
an op measured, no effect of three groups that pairs miss); elsewhere an estimate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp


@dataclass(frozen=True)
class IlpResult:
    """What the ILP chose and what it predicts.

    Attributes:
      chosen: the groups the optimum selects (empty when the ILP failed).
      objective: the model's value of the optimum (seconds or bytes): the bound.
      predicted_time_s: the model's step time of `chosen`.
      predicted_memory_bytes: the model's peak memory of `chosen`.
      status: ``"optimal"``, ``"infeasible"`` (the memory limit cannot be met under the
        model) or HiGHS's message.
      variables: binary variables (groups) and linearised pair terms.
    """

    chosen: frozenset[int]
    objective: float
    predicted_time_s: float
    predicted_memory_bytes: float
    status: str
    variables: int


@dataclass
class Model:
    """The pairwise model: base values and measured coefficients."""

    groups: int
    base_time: float
    base_memory: float
    time: dict[int, float]
    """Per group with a measurement: its marginal log step time."""
    memory: dict[int, float]
    """Per group with a measurement: its marginal peak memory (bytes)."""
    pair_time: dict[tuple[int, int], float]
    pair_memory: dict[tuple[int, int], float]

    def log_time(self, chosen: frozenset[int]) -> float:
        """The model's log step time of `chosen`."""
        t = math.log(self.base_time) + sum(self.time.get(g, 0.0) for g in chosen)
        for (g, h), v in self.pair_time.items():
            if g in chosen and h in chosen:
                t += v
        return t

    def predict(self, chosen: frozenset[int]) -> tuple[float, float]:
        """(time, memory) the model gives `chosen`."""
        m = self.base_memory + sum(self.memory.get(g, 0.0) for g in chosen)
        for (g, h), v in self.pair_memory.items():
            if g in chosen and h in chosen:
                m += v
        return math.exp(self.log_time(chosen)), m


def fit(
    groups: int,
    base: tuple[float, float],
    singles: Mapping[int, tuple[float, float]],
    pairs: Mapping[tuple[int, int], tuple[float, float]],
) -> Model:
    """The model from measured (time, memory) of the base, single groups and pairs."""
    t0, m0 = base
    log = _log
    time = {g: log(t) - log(t0) for g, (t, _) in singles.items()}
    memory = {g: m - m0 for g, (_, m) in singles.items()}
    pair_time, pair_memory = {}, {}
    for (g, h), (t, m) in pairs.items():
        if g in singles and h in singles:
            pair_time[(g, h)] = log(t) - log(singles[g][0]) - log(singles[h][0]) + log(t0)
            pair_memory[(g, h)] = m - singles[g][1] - singles[h][1] + m0
    return Model(groups, max(t0, _TINY), m0, time, memory, pair_time, pair_memory)


_TINY = 1e-30


def _log(t: float) -> float:
    return math.log(max(t, _TINY))


def solve(
    model: Model,
    exclusive: Sequence[tuple[int, int]],
    *,
    objective: str = "time",
    memory_limit: float | None = None,
    allowed: Sequence[int] | None = None,
) -> IlpResult:
    """Solve the ILP: minimise the model's time (or memory) under the memory limit.

    Args:
      model: the fitted coefficients.
      exclusive: pairs of groups that cannot both be chosen.
      objective: ``"time"`` or ``"memory"``.
      memory_limit: bytes; None for no limit.
      allowed: the groups that may be chosen (those with a measurement); default all.
    """
    n = model.groups
    pairs = sorted(model.pair_time)
    nv = n + len(pairs)
    allowed_set = set(range(n) if allowed is None else allowed)
    t_coef = np.zeros(nv)
    m_coef = np.zeros(nv)
    for g in range(n):
        t_coef[g] = model.time.get(g, 0.0)
        m_coef[g] = model.memory.get(g, 0.0)
    for k, p in enumerate(pairs):
        t_coef[n + k] = model.pair_time[p]
        m_coef[n + k] = model.pair_memory.get(p, 0.0)
    rows: list[np.ndarray] = []
    lo: list[float] = []
    hi: list[float] = []

    def row(entries: Mapping[int, float], lb: float, ub: float) -> None:
        r = np.zeros(nv)
        for j, v in entries.items():
            r[j] += v
        rows.append(r)
        lo.append(lb)
        hi.append(ub)

    for g, h in exclusive:
        row({g: 1.0, h: 1.0}, -np.inf, 1.0)
    for k, (g, h) in enumerate(pairs):
        y = n + k
        row({y: 1.0, g: -1.0}, -np.inf, 0.0)
        row({y: 1.0, h: -1.0}, -np.inf, 0.0)
        row({y: 1.0, g: -1.0, h: -1.0}, -1.0, np.inf)
    if memory_limit is not None and objective == "time":
        row(dict(enumerate(m_coef)), -np.inf, memory_limit - model.base_memory)
    upper = np.ones(nv)
    for g in range(n):
        if g not in allowed_set:
            upper[g] = 0.0
    integrality = np.concatenate([np.ones(n), np.zeros(len(pairs))])
    c = t_coef if objective == "time" else m_coef + 1e-12 * t_coef  # ties: faster
    constraints = [LinearConstraint(np.array(rows), lo, hi)] if rows else []
    res = milp(c, constraints=constraints, integrality=integrality, bounds=Bounds(0, upper))
    if res.x is None:
        status = "infeasible" if res.status == 2 else str(res.message)
        return IlpResult(frozenset(), float("nan"), float("nan"), float("nan"), status, nv)
    chosen = frozenset(g for g in range(n) if res.x[g] > 0.5)
    t, m = model.predict(chosen)
    value = t if objective == "time" else m
    return IlpResult(chosen, value, t, m, "optimal" if res.status == 0 else str(res.message), nv)
