"""The pipeline search's layer costs from partir's own plans and simulations.

`partir.tactics.auto.pipeline_search` chooses (TP, PP, DP, microbatch, schedule, v) from a
`StageCosts` per layout; this module makes those costs the way
`partir.simulator.pipeline.stage_costs_from_runs` is meant to be fed. For a layout
``(t, P, d, b)`` it plans the program at 1 and 2 layers with 1 and 2 microbatches' worth of
batch per data-parallel replica (``d·b`` and ``2·d·b`` sequences) under the caller's schedule
(BP + MP, say) on an abstract mesh ``{"batch": d, "model": t}``, simulates each on the
hardware with the ``batch`` and ``model`` links the whole ``(stage P, batch d, model t)``
mesh would give them (`Topology.default`: on a GPU cluster, tensor parallelism inside a
node on NVLink, the other axes across nodes), and fits compute and communication apart
(`stage_costs_from_parts`, the profile's `collective_overlap` hiding the once-a-step
gradient reduction). The stage axis's link comes from the same topology.

Plans depend on ``(t, d, layers, batch)`` only and are cached across hardware (pass one
``plan_cache`` to several tables); simulations are cached per program and topology.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from partir.api.partition import partition
from partir.simulator import get_hardware
from partir.simulator.hardware import Hardware
from partir.simulator.pipeline import StageCosts, stage_costs_from_parts
from partir.simulator.topology import AxisLink, Topology
from partir.tactics.auto.pipeline_search import (
    Layout,
    PipelineSearchResult,
    PipelineSpace,
    search_pipeline,
)
from partir.tactics.auto.progress import Progress

ModelFn = Callable[[int, int], tuple[Callable, Sequence[Any]]]
"""``(layers, batch) -> (step function, example args)`` (ShapeDtypeStructs are enough)."""

ScheduleFn = Callable[[int], list]
"""``tensor degree -> schedule`` on the mesh axes ``batch`` and ``model``."""


class SimulatedStageCosts:
    """``layout -> (StageCosts, stage link)`` from plans and simulations (module doc).

    Args:
      model: `ModelFn`, the program at a given depth and global batch.
      schedule: `ScheduleFn`, the intra-layer tactics at a tensor degree.
      hardware: a profile name or `Hardware`.
      boundary_bytes: ``layout -> bytes`` one stage sends the next per microbatch.
      forward_fraction: `StageCosts.forward_fraction` (1/4 with recomputation).
      devices_per_host: for the topology (default: the profile's).
      progress: a `Progress` line (default: stderr, terminals only).
      plan_cache: a dict shared with other tables (plans do not depend on the hardware).

    Attributes:
      plans: programs planned so far. simulations: programs simulated so far.
      seconds: time spent planning and simulating.
    """

    def __init__(
        self,
        model: ModelFn,
        schedule: ScheduleFn,
        hardware: str | Hardware,
        *,
        boundary_bytes: Callable[[Layout], float],
        forward_fraction: float = 1 / 3,
        devices_per_host: int | None = None,
        progress: Progress | None = None,
        plan_cache: dict | None = None,
    ):
        self.model = model
        self.schedule = schedule
        self.hardware = get_hardware(hardware)
        self.boundary_bytes = boundary_bytes
        self.forward_fraction = forward_fraction
        self.devices_per_host = devices_per_host
        self.progress = progress or Progress(f"layer costs on {self.hardware.name}", "time")
        # plans do not depend on the hardware: share one cache between tables
        self._plans: dict = plan_cache if plan_cache is not None else {}
        self._table: dict[Layout, tuple[StageCosts, AxisLink | None]] = {}
        self._models: dict[tuple[int, int], tuple[Callable, Sequence[Any]]] = {}
        # layouts with microbatch b and 2b share the program at 2b sequences per replica
        self._reports: dict = {}
        self.plans = 0
        self.simulations = 0
        self.seconds = 0.0

    def topology(self, layout: Layout) -> Topology:
        """The whole mesh's topology: ``(stage P, batch d, model t)``."""
        axes = [("stage", layout.stages), ("batch", layout.data), ("model", layout.tensor)]
        return Topology.default(self.hardware, axes, devices_per_host=self.devices_per_host)

    def _plan(self, tensor: int, data: int, layers: int, batch: int) -> Any:
        key = (tensor, data, layers, batch)
        if key not in self._plans:
            # one function per program, so meshes of one (layers, batch) share its trace
            if (layers, batch) not in self._models:
                self._models[layers, batch] = self.model(layers, batch)
            fn, args = self._models[layers, batch]
            step = partition(
                self.schedule(tensor), mesh={"batch": data, "model": tensor}, mode="spmd"
            )
            self._plans[key] = step(fn).plan(*args)
            self.plans += 1
        return self._plans[key]

    def __call__(self, layout: Layout) -> tuple[StageCosts, AxisLink | None]:
        """The layout's `StageCosts` and stage link (cached)."""
        if layout in self._table:
            return self._table[layout]
        start = time.perf_counter()
        topo = self.topology(layout)
        inner = Topology((topo["batch"], topo["model"]))
        compute, communication = {}, {}
        for layers in (1, 2):
            for k in (1, 2):
                batch = layout.data * layout.microbatch * k
                key = (layout.tensor, layout.data, layers, batch, inner)
                if key not in self._reports:
                    plan = self._plan(layout.tensor, layout.data, layers, batch)
                    self._reports[key] = plan.simulate(self.hardware, donate=True, topology=inner)
                    self.simulations += 1
                report = self._reports[key]
                compute[layers, k] = (report.compute_time_s, float(report.peak_memory_bytes))
                communication[layers, k] = report.communication_time_s
        costs = stage_costs_from_parts(
            compute,
            communication,
            boundary_bytes=self.boundary_bytes(layout),
            forward_fraction=self.forward_fraction,
            collective_overlap=self.hardware.collective_overlap,
        )
        link = topo["stage"] if layout.stages > 1 else None
        self._table[layout] = (costs, link)
        self.seconds += time.perf_counter() - start
        if self.progress.enabled:  # Progress's line speaks of candidates: write our own
            self.progress.stream.write(
                f"\r{self.progress.label}: {len(self._table)} layouts, {self.plans} plans, "
                f"{self.simulations} simulations"
            )
            self.progress.stream.flush()
            self.progress.lines += 1
        return self._table[layout]


def search(
    space: PipelineSpace,
    costs: SimulatedStageCosts,
    memory_limit: float | None = None,
    *,
    keep: int = 10,
) -> PipelineSearchResult:
    """`search_pipeline` over `space` on `costs` (its hardware's memory by default).

    The costs of every layout are made first (plans and simulations; their time is
    `costs.seconds`), then the search runs on them (`PipelineSearchResult.search_s`).
    """
    for layout in space.layouts():
        costs(layout)
    costs.progress.close()
    limit = float(memory_limit if memory_limit is not None else costs.hardware.memory_bytes)
    return search_pipeline(space, costs, limit, keep=keep)
