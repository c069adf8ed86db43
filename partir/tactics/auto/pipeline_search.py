"""Pipeline search: the (TP, PP, DP, microbatch, schedule, v) layout of a stack of layers.

Given a device count, the number of (identical) layers, the global batch and a memory limit,
the search picks a tensor-parallel degree ``t``, pipeline stages ``P``, the data-parallel rest
``d = devices / (t·P)``, a microbatch size ``b`` (sequences per microbatch on one data-parallel
replica, so ``M = batch / (d·b)`` microbatches), a schedule of
`partir.simulator.pipeline.SCHEDULES` and its virtual stages per device ``v``, minimising the
simulated step time with the simulated peak memory per device within the limit.

The space (`PipelineSpace`) is every such tuple with ``t`` in the given tensor degrees, ``P``
dividing both the layers and ``devices / t``, ``d`` dividing the batch, ``b`` in the given
microbatch sizes dividing ``batch / d``, and ``v`` dividing ``layers / P`` (``v = 1`` for
``gpipe`` and ``1f1b``, ``v >= 2`` for ``circular`` and ``interleaved-1f1b``, which also need
``M >= P`` and ``M % P == 0`` respectively, as `PipelinePartition` and Megatron-LM do). One
stage (``P = 1``) is gradient accumulation: ``gpipe`` only.

Each candidate is scored by `simulate_pipeline` on the `StageCosts` of its layout
``(t, P, d, b)``, which the caller supplies (``costs``: fitted to real partir simulations of
the same program at that layout, `partir.api.pipeline_search`; hand-made in the tests) with
the stage axis's link. The search enumerates the whole space, but skips a candidate without
simulating it when it cannot win: its static bytes alone exceed the limit (activations only
add), or its lower bound on the step (one device's busy time, ``M·(L/P·α + γ)`` plus the
once-a-step work; a pipelined step is never shorter) is no better than the best found so far.
Both skips are exact, so the result is the optimum of the space: the gap bound is 0.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from partir.errors import TacticError
from partir.simulator.pipeline import SCHEDULES, PipelineReport, StageCosts, simulate_pipeline
from partir.simulator.topology import AxisLink
from partir.tactics.auto.progress import Progress

CHUNKED = frozenset({"circular", "interleaved-1f1b"})
"""Schedules with ``v >= 2`` chunks per device; the others have one."""


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, n + 1) if n % k == 0]


@dataclass(frozen=True, order=True)
class Layout:
    """How the devices are split: what the layer costs depend on.

    Attributes:
      tensor: t, the tensor-parallel degree.
      stages: P, pipeline stages.
      data: d, data-parallel replicas (``devices / (t·P)``).
      microbatch: b, sequences per microbatch on one data-parallel replica.
    """

    tensor: int
    stages: int
    data: int
    microbatch: int


@dataclass(frozen=True, order=True)
class PipelineCandidate:
    """One point of the space: a `Layout` plus the schedule.

    Attributes:
      layout: the device split and microbatch size.
      microbatches: M, microbatches per step (``batch / (d·b)``).
      schedule: one of `SCHEDULES`.
      repeats: v, chunks (virtual stages) per device.
    """

    layout: Layout
    microbatches: int
    schedule: str
    repeats: int

    def __str__(self) -> str:
        lay = self.layout
        return (
            f"TP {lay.tensor} x PP {lay.stages} x DP {lay.data}, microbatch {lay.microbatch} "
            f"(M={self.microbatches}), {self.schedule} v={self.repeats}"
        )

    def to_dict(self) -> dict:
        """The candidate as a flat JSON-ready dict."""
        return {
            **asdict(self.layout),
            "microbatches": self.microbatches,
            "schedule": self.schedule,
            "repeats": self.repeats,
        }


@dataclass(frozen=True)
class PipelineSpace:
    """The search space (module doc).

    Attributes:
      devices: devices in all.
      layers: L, identical layers to pipeline.
      batch: global batch (sequences per step).
      tensor_degrees: the tensor-parallel degrees allowed (a GPU's NVLink domain: 1-8).
      microbatch_sizes: the microbatch sizes allowed (sequences per replica).
      schedules: the schedules allowed (a subset of `SCHEDULES`).
      max_repeats: the largest v tried for the chunked schedules (None: every divisor of
        ``L / P``).
    """

    devices: int
    layers: int
    batch: int
    tensor_degrees: tuple[int, ...] = (1, 2, 4, 8)
    microbatch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    schedules: tuple[str, ...] = SCHEDULES
    max_repeats: int | None = None

    def __post_init__(self) -> None:
        for name in ("devices", "layers", "batch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TacticError(f"PipelineSpace({name}={value!r}): give a positive int.")
        bad = [s for s in self.schedules if s not in SCHEDULES]
        if bad or not self.schedules:
            raise TacticError(
                f"PipelineSpace(schedules={self.schedules!r}): use a non-empty subset of "
                f"{SCHEDULES}."
            )
        for name in ("tensor_degrees", "microbatch_sizes"):
            values = getattr(self, name)
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):  # fmt: skip
                raise TacticError(f"PipelineSpace({name}={values!r}): give positive ints.")

    def layouts(self) -> list[Layout]:
        """Every `Layout` of the space, in order."""
        out = []
        for t in sorted(set(self.tensor_degrees)):
            if self.devices % t:
                continue
            for p in _divisors(self.layers):
                if (self.devices // t) % p:
                    continue
                d = self.devices // (t * p)
                if self.batch % d:
                    continue
                for b in sorted(set(self.microbatch_sizes)):
                    if (self.batch // d) % b == 0:
                        out.append(Layout(t, p, d, b))
        return out

    def candidates(self, layout: Layout) -> Iterator[PipelineCandidate]:
        """The schedules and chunk counts allowed on one layout."""
        m = self.batch // (layout.data * layout.microbatch)
        p = layout.stages
        for schedule in self.schedules:
            if p == 1:
                if schedule == "gpipe":
                    yield PipelineCandidate(layout, m, schedule, 1)
                continue
            if schedule not in CHUNKED:
                yield PipelineCandidate(layout, m, schedule, 1)
                continue
            if (schedule == "circular" and m < p) or (schedule == "interleaved-1f1b" and m % p):
                continue
            for v in _divisors(self.layers // p):
                if v >= 2 and (self.max_repeats is None or v <= self.max_repeats):
                    yield PipelineCandidate(layout, m, schedule, v)

    def describe(self) -> str:
        """The space in one sentence (for reports)."""
        reps = "every divisor of L/P" if self.max_repeats is None else f"<= {self.max_repeats}"
        return (
            f"{self.devices} devices, L={self.layers}, batch {self.batch}: TP in "
            f"{list(self.tensor_degrees)}, PP dividing L and devices/TP, DP = the rest "
            f"(dividing the batch), microbatch in {list(self.microbatch_sizes)} (M = batch / "
            f"(DP x microbatch)), schedules {list(self.schedules)}, v {reps} for circular "
            f"(M >= P) and interleaved-1f1b (M % P == 0), v = 1 otherwise; PP = 1 is gpipe "
            f"(gradient accumulation)"
        )


CostFn = Callable[[Layout], tuple[StageCosts, AxisLink | None]]
"""``layout -> (StageCosts, the stage axis's link or None)``: what a candidate is simulated on."""


@dataclass(frozen=True)
class PipelineSearchResult:
    """What `search_pipeline` found.

    Attributes:
      best: the fastest candidate within the memory limit.
      report: its simulated step (`PipelineReport`).
      ranking: the fastest fitting candidates simulated, best first, with their reports.
      memory_limit: bytes per device.
      candidates: candidates in the space.
      layouts: layouts in the space (each needs its `StageCosts`).
      simulated: candidates simulated.
      over_memory: simulated candidates whose peak exceeded the limit.
      pruned_memory: candidates skipped because their static bytes exceed the limit.
      pruned_bound: candidates skipped because their lower bound could not beat the best.
      gap_bound: relative gap between `best` and the optimum of the space (0: exhaustive).
      space: `PipelineSpace.describe`.
      search_s: seconds of the search (the cost function's own time included).
    """

    best: PipelineCandidate
    report: PipelineReport
    ranking: tuple[tuple[PipelineCandidate, PipelineReport], ...]
    memory_limit: float
    candidates: int
    layouts: int
    simulated: int
    over_memory: int
    pruned_memory: int
    pruned_bound: int
    gap_bound: float = 0.0
    space: str = ""
    search_s: float = field(default=0.0, compare=False)

    def to_dict(self) -> dict:
        """The result as a JSON-ready dict (the ranking's candidates and step times)."""
        return {
            "best": self.best.to_dict(),
            "report": self.report.to_dict(),
            "ranking": [
                {
                    **c.to_dict(),
                    "step_time_s": r.step_time_s,
                    "peak_memory_bytes": r.peak_memory_bytes,
                }
                for c, r in self.ranking
            ],
            "memory_limit": self.memory_limit,
            "candidates": self.candidates,
            "layouts": self.layouts,
            "simulated": self.simulated,
            "over_memory": self.over_memory,
            "pruned_memory": self.pruned_memory,
            "pruned_bound": self.pruned_bound,
            "gap_bound": self.gap_bound,
            "space": self.space,
            "search_s": self.search_s,
        }


def simulate_candidate(
    candidate: PipelineCandidate, costs: StageCosts, link: AxisLink | None, layers: int
) -> PipelineReport:
    """One candidate's simulated step (`simulate_pipeline` on its layout's costs)."""
    return simulate_pipeline(
        costs,
        layers=layers,
        stages=candidate.layout.stages,
        microbatches=candidate.microbatches,
        schedule=candidate.schedule,
        repeats=candidate.repeats,
        stage_link=link,
    )


def static_bytes(candidate: PipelineCandidate, costs: StageCosts, layers: int) -> float:
    """The most static bytes (weights, gradients, optimizer state) on one stage: a lower
    bound of the simulated peak, whatever the schedule."""
    per_stage = layers // candidate.layout.stages * costs.layer_static_bytes
    return per_stage + costs.other_static_bytes


def lower_bound(candidate: PipelineCandidate, costs: StageCosts, layers: int) -> float:
    """A lower bound of the simulated step: the last stage's busy time (its layers and the
    non-layer part on every microbatch) plus the once-a-step work, with no bubble or wait."""
    per_stage = layers // candidate.layout.stages
    busy = candidate.microbatches * (
        per_stage * costs.layer_microbatch_s + costs.other_microbatch_s
    )
    return busy + per_stage * costs.layer_step_s + costs.other_step_s


def _layouts(space: PipelineSpace) -> list[Layout]:
    layouts = space.layouts()
    if not layouts:
        raise TacticError(
            f"No layout of {space.devices} devices fits L={space.layers}, batch {space.batch} "
            f"with TP in {list(space.tensor_degrees)} and microbatch in "
            f"{list(space.microbatch_sizes)}: allow a tensor degree dividing the devices and a "
            f"microbatch size dividing batch / DP."
        )
    return layouts


def _nothing_fits(space: PipelineSpace, limit: float, least: float, count: int) -> TacticError:
    # `least` is a lower bound where the candidate was skipped on its static bytes alone
    return TacticError(
        f"No pipeline layout fits memory_limit={limit / 2**30:.1f} GiB per device: the "
        f"smallest peak is at least {least / 2**30:.1f} GiB ({count} candidates over "
        f"{space.describe()}). Raise memory_limit, allow larger tensor degrees or more stages "
        f"(devices, layers), smaller microbatch sizes, or shard the optimizer state (ZeRO) in "
        f"the layer costs."
    )


def search_pipeline(
    space: PipelineSpace,
    costs: CostFn,
    memory_limit: float,
    *,
    keep: int = 10,
    progress: Progress | None = None,
) -> PipelineSearchResult:
    """The fastest candidate of `space` whose simulated peak fits `memory_limit` (module doc).

    Args:
      space: the `PipelineSpace`.
      costs: ``layout -> (StageCosts, stage link)``; called once per layout.
      memory_limit: bytes per device.
      keep: how many of the fastest fitting candidates `PipelineSearchResult.ranking` keeps.
      progress: a `Progress` line (default: one on stderr, terminals only).

    Raises:
      TacticError: no candidate fits the memory limit (the message names the smallest peak
        found and what to widen).
    """
    if not memory_limit > 0:
        raise TacticError(f"search_pipeline(memory_limit={memory_limit!r}): give bytes > 0.")
    keep = max(1, keep)
    start = time.perf_counter()
    layouts = _layouts(space)
    show = progress or Progress("pipeline search", "time")
    table = {lay: costs(lay) for lay in layouts}
    pool = [(c, lay) for lay in layouts for c in space.candidates(lay)]
    bounds = sorted(
        ((lower_bound(c, table[lay][0], space.layers), i) for i, (c, lay) in enumerate(pool)),
    )
    best: tuple[float, PipelineCandidate, PipelineReport] | None = None
    fitting: list[tuple[float, PipelineCandidate, PipelineReport]] = []
    simulated = over = pruned_memory = pruned_bound = 0
    least_peak = float("inf")
    for n, (bound, i) in enumerate(bounds):
        candidate, lay = pool[i]
        stage_costs, link = table[lay]
        floor = static_bytes(candidate, stage_costs, space.layers)
        if floor > memory_limit:
            pruned_memory += 1
            least_peak = min(least_peak, floor)
            continue
        if len(fitting) >= keep and bound >= fitting[keep - 1][0]:
            # sorted by bound: no later candidate can enter the kept ranking either
            pruned_bound += len(bounds) - n
            break
        report = simulate_candidate(candidate, stage_costs, link, space.layers)
        simulated += 1
        if report.peak_memory_bytes > memory_limit:
            over += 1
            least_peak = min(least_peak, report.peak_memory_bytes)
            continue
        bisect.insort(fitting, (report.step_time_s, candidate, report), key=lambda x: x[:2])
        best = fitting[0]
        if simulated % 16 == 0:
            show.update(simulated, len(pool), best[0], None)
    show.close()
    if best is None:
        raise _nothing_fits(space, memory_limit, least_peak, len(pool))
    return PipelineSearchResult(
        best=best[1],
        report=best[2],
        ranking=tuple((c, r) for _, c, r in fitting[:keep]),
        memory_limit=float(memory_limit),
        candidates=len(pool),
        layouts=len(layouts),
        simulated=simulated,
        over_memory=over,
        pruned_memory=pruned_memory,
        pruned_bound=pruned_bound,
        gap_bound=0.0,
        space=space.describe(),
        search_s=time.perf_counter() - start,
    )
