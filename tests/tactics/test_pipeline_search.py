"""The pipeline search (`partir.tactics.auto.pipeline_search`) on hand-made `StageCosts`:
it finds the brute-force optimum over `simulate_pipeline`, keeps within the memory limit,
and raises a `TacticError` naming the fix when nothing fits."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partir.errors import TacticError
from partir.simulator import get_hardware
from partir.simulator.pipeline import StageCosts, simulate_pipeline
from partir.simulator.topology import Topology
from partir.tactics.auto import Progress
from partir.tactics.auto.pipeline_search import (
    Layout,
    PipelineSpace,
    lower_bound,
    search_pipeline,
)

GiB = 2**30
H100 = get_hardware("h100")
SPACE = PipelineSpace(devices=16, layers=8, batch=32, tensor_degrees=(1, 2, 4),
                      microbatch_sizes=(1, 2, 4))  # fmt: skip
QUIET = Progress("test", "time", enabled=False)


def make_costs(flops: float, tp_comm: float, grad_bytes: float, weights: float, act: float):
    """A cost model with the right shape: compute splits over TP, TP adds per-microbatch
    communication, DP adds a once-a-step reduction, weights split over TP."""

    def costs(layout: Layout):
        t, d, b = layout.tensor, layout.data, layout.microbatch
        stage_costs = StageCosts(
            layer_microbatch_s=b * flops / t + (t > 1) * b * tp_comm * (t - 1) / t,
            layer_step_s=grad_bytes / t * 2 * (d - 1) / d / 50e9,
            other_microbatch_s=b * flops / (4 * t),
            other_step_s=1e-4,
            layer_static_bytes=weights / t,
            layer_activation_bytes=b * act / t,
            other_static_bytes=weights / (2 * t),
            other_activation_bytes=b * act / (2 * t),
            boundary_bytes=b * 2**20 / t,
            forward_fraction=0.25,
        )
        mesh = [("stage", layout.stages), ("batch", d), ("model", t)]
        topo = Topology.default(H100, mesh, devices_per_host=4)
        return stage_costs, (topo["stage"] if layout.stages > 1 else None)

    return costs


def brute_force(space: PipelineSpace, costs, limit: float):
    """Every candidate simulated; the fastest within the limit (ties: the smallest)."""
    best = None
    for layout in space.layouts():
        stage_costs, link = costs(layout)
        for c in space.candidates(layout):
            r = simulate_pipeline(stage_costs, layers=space.layers, stages=layout.stages,
                                  microbatches=c.microbatches, schedule=c.schedule,
                                  repeats=c.repeats, stage_link=link)  # fmt: skip
            if r.peak_memory_bytes <= limit and (best is None or (r.step_time_s, c) < best[:2]):
                best = (r.step_time_s, c, r)
    return best


def test_space_is_the_stated_divisor_space():
    layouts = SPACE.layouts()
    assert all(lay.tensor * lay.stages * lay.data == 16 for lay in layouts)
    assert {lay.stages for lay in layouts} == {1, 2, 4, 8}
    assert Layout(4, 4, 1, 4) in layouts and Layout(1, 1, 16, 4) not in layouts  # 32/16 = 2
    cands = [c for lay in layouts for c in SPACE.candidates(lay)]
    for c in cands:
        lay = c.layout
        assert c.microbatches * lay.data * lay.microbatch == 32
        assert SPACE.layers % (lay.stages * c.repeats) == 0
        if c.schedule == "interleaved-1f1b":
            assert c.repeats >= 2 and c.microbatches % lay.stages == 0
        if c.schedule == "circular":
            assert c.repeats >= 2 and c.microbatches >= lay.stages
        if lay.stages == 1:
            assert (c.schedule, c.repeats) == ("gpipe", 1)
    assert {c.schedule for c in cands} == {"gpipe", "circular", "1f1b", "interleaved-1f1b"}


@settings(max_examples=12, deadline=None)
@given(
    flops=st.floats(1e-3, 1e-1),
    tp_comm=st.floats(0.0, 5e-2),
    grad_bytes=st.floats(1e6, 1e10),
    weights=st.floats(0.5, 8.0),
    act=st.floats(0.01, 2.0),
    limit=st.floats(1.0, 16.0),
)
def test_search_finds_the_brute_force_optimum(flops, tp_comm, grad_bytes, weights, act, limit):
    costs = make_costs(flops, tp_comm, grad_bytes, weights * GiB, act * GiB)
    want = brute_force(SPACE, costs, limit * GiB)
    if want is None:
        with pytest.raises(TacticError):
            search_pipeline(SPACE, costs, limit * GiB, progress=QUIET)
        return
    got = search_pipeline(SPACE, costs, limit * GiB, keep=3, progress=QUIET)
    assert got.best == want[1]
    assert got.report.step_time_s == want[0]
    assert got.gap_bound == 0.0
    assert got.report.peak_memory_bytes <= limit * GiB
    times = [r.step_time_s for _, r in got.ranking]
    assert times == sorted(times) and times[0] == want[0]
    assert got.simulated + got.pruned_memory + got.pruned_bound <= got.candidates


def test_memory_limit_changes_the_answer_and_is_respected():
    costs = make_costs(1e-2, 2e-3, 1e9, 4 * GiB, 1 * GiB)
    loose = search_pipeline(SPACE, costs, 1e6 * GiB, progress=QUIET)
    peak = loose.report.peak_memory_bytes
    tight = search_pipeline(SPACE, costs, peak * 0.5, progress=QUIET)
    assert tight.report.peak_memory_bytes <= peak * 0.5
    assert tight.best != loose.best
    assert tight.report.step_time_s >= loose.report.step_time_s
    # every fitting candidate the search kept is under the limit
    assert all(r.peak_memory_bytes <= peak * 0.5 for _, r in tight.ranking)
    assert tight == search_pipeline(SPACE, costs, peak * 0.5, progress=QUIET)  # deterministic


def test_lower_bound_never_exceeds_the_simulated_step():
    costs = make_costs(1e-2, 2e-3, 1e9, 4 * GiB, 1 * GiB)
    for layout in SPACE.layouts():
        stage_costs, link = costs(layout)
        for c in SPACE.candidates(layout):
            r = simulate_pipeline(stage_costs, layers=8, stages=layout.stages,
                                  microbatches=c.microbatches, schedule=c.schedule,
                                  repeats=c.repeats, stage_link=link)  # fmt: skip
            assert lower_bound(c, stage_costs, 8) <= r.step_time_s * (1 + 1e-12)


def test_nothing_fits_names_the_fix():
    costs = make_costs(1e-2, 2e-3, 1e9, 64 * GiB, 1 * GiB)
    with pytest.raises(TacticError, match="Raise memory_limit") as err:
        search_pipeline(SPACE, costs, 1 * GiB, progress=QUIET)
    assert "smallest peak is at least" in str(err.value)


def test_bad_space_and_limit_raise():
    with pytest.raises(TacticError, match="schedules"):
        PipelineSpace(devices=8, layers=4, batch=8, schedules=("zero-bubble",))
    with pytest.raises(TacticError, match="devices"):
        PipelineSpace(devices=0, layers=4, batch=8)
    with pytest.raises(TacticError, match="tensor degree"):
        search_pipeline(PipelineSpace(devices=8, layers=4, batch=8, tensor_degrees=(3,)),
                        make_costs(1e-2, 0, 1e9, GiB, GiB), 1e12, progress=QUIET)  # fmt: skip
    with pytest.raises(TacticError, match="memory_limit"):
        search_pipeline(SPACE, make_costs(1e-2, 0, 1e9, GiB, GiB), 0, progress=QUIET)


def test_progress_line_when_enabled():
    stream = io.StringIO()
    show = Progress("pipeline search", "time", stream=stream, enabled=True)
    search_pipeline(SPACE, make_costs(1e-2, 2e-3, 1e9, GiB, GiB), 1e6 * GiB, keep=40,
                    progress=show)  # fmt: skip
    assert "pipeline search:" in stream.getvalue() and stream.getvalue().endswith("\n")


def test_simulated_costs_come_from_partir_plans():
    """The API driver fits a layout's costs to real plans of the zoo's scanned GPT step, and
    reuses programs: microbatch 2 needs only the 4-sequence programs beyond microbatch 1's."""
    from partir.api.pipeline_search import SimulatedStageCosts
    from partir.testing import models, schedules

    def model(layers, batch):
        m = models.get("gpt_scan", abstract=True, layers=layers, batch=batch)
        return m.fn, m.args

    def schedule(tensor):
        return [schedules.tactic("gpt_scan", "BP"), schedules.tactic("gpt_scan", "MP")]

    table = SimulatedStageCosts(model, schedule, "h100", boundary_bytes=lambda lay: 1e6,
                                progress=QUIET)  # fmt: skip
    costs, link = table(Layout(2, 2, 2, 1))
    assert (table.plans, table.simulations) == (4, 4)
    assert costs.layer_microbatch_s > 0 and costs.layer_static_bytes > 0
    assert link is not None and (link.axis, link.size) == ("stage", 2)
    assert table(Layout(2, 2, 2, 1)) == (costs, link) and table.simulations == 4
    wider, _ = table(Layout(2, 2, 2, 2))
    assert (table.plans, table.simulations) == (6, 6)
    assert wider.layer_microbatch_s > costs.layer_microbatch_s
    assert wider.layer_activation_bytes > costs.layer_activation_bytes
