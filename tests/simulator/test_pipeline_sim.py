"""The pipeline simulator (partir/simulator/pipeline.py): bubbles, memory, transfers."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from partir.errors import SimulatorError
from partir.simulator import get_hardware
from partir.simulator.pipeline import (
    StageCosts,
    simulate_pipeline,
    stage_costs_from_parts,
    stage_costs_from_runs,
)
from partir.simulator.topology import Topology

COMPUTE_BOUND = StageCosts(
    layer_microbatch_s=2e-3,
    layer_static_bytes=3e9,
    layer_activation_bytes=2e8,
    boundary_bytes=1e6,
)


@settings(max_examples=30, deadline=None)
@given(
    stages=st.sampled_from([2, 4, 8]),
    microbatches=st.integers(1, 48),
    schedule=st.sampled_from(["gpipe", "1f1b"]),
)
def test_bubble_is_the_gpipe_formula_on_a_compute_bound_config(stages, microbatches, schedule):
    # h100 over NVLink: a 1 MB transfer is ~1% of a 8 ms stage (compute-bound)
    hw = get_hardware("h100")
    link = Topology.default(hw, {"stage": stages, "model": 8}, devices_per_host=64)["stage"]
    r = simulate_pipeline(
        COMPUTE_BOUND,
        layers=16,
        stages=stages,
        microbatches=microbatches,
        schedule=schedule,
        stage_link=link,
    )
    expected = (stages - 1) / (microbatches + stages - 1)
    assert r.p2p_time_s > 0
    assert abs(r.bubble_fraction - expected) <= 0.02
    assert r.pipeline_time_s >= microbatches * 16 / stages * COMPUTE_BOUND.layer_microbatch_s


@settings(max_examples=20, deadline=None)
@given(
    stages=st.sampled_from([2, 4]),
    repeats=st.sampled_from([2, 3]),
    groups=st.integers(1, 6),
    schedule=st.sampled_from(["circular", "interleaved-1f1b"]),
)
def test_repeats_shrink_the_bubble_to_the_interleaved_formula(stages, repeats, groups, schedule):
    microbatches = groups * stages
    r = simulate_pipeline(
        COMPUTE_BOUND,
        layers=12 * stages,
        stages=stages,
        microbatches=microbatches,
        schedule=schedule,
        repeats=repeats,
    )
    flat = simulate_pipeline(
        COMPUTE_BOUND, layers=12 * stages, stages=stages, microbatches=microbatches
    )
    assert abs(r.bubble_fraction - (stages - 1) / (repeats * microbatches + stages - 1)) <= 0.02
    assert r.bubble_fraction < flat.bubble_fraction
    assert r.simulated_only == (schedule == "interleaved-1f1b")


@pytest.mark.parametrize("stages", [2, 4, 8])
def test_weight_memory_per_stage_falls_as_one_over_p(stages):
    base = simulate_pipeline(COMPUTE_BOUND, layers=32, stages=1, microbatches=8)
    r = simulate_pipeline(COMPUTE_BOUND, layers=32, stages=stages, microbatches=8)
    assert max(r.static_bytes) == pytest.approx(base.static_bytes[0] / stages, rel=0.01)


def test_gpipe_stashes_every_microbatch_and_1f1b_at_most_p():
    gpipe = simulate_pipeline(COMPUTE_BOUND, layers=8, stages=4, microbatches=16)
    one = simulate_pipeline(COMPUTE_BOUND, layers=8, stages=4, microbatches=16, schedule="1f1b")
    assert gpipe.in_flight == (16, 16, 16, 16)
    assert max(one.in_flight) <= 4
    assert one.peak_memory_bytes < gpipe.peak_memory_bytes
    assert gpipe.simulated_only is False and one.simulated_only is True


def test_slow_links_add_transfer_time_to_every_tick():
    hw = get_hardware("h100")
    mesh = {"stage": 4, "model": 8}
    fast = Topology.from_kinds(hw, mesh, {"stage": "nvlink"})["stage"]
    slow = Topology.from_kinds(hw, mesh, {"stage": "infiniband"})["stage"]
    big = StageCosts(layer_microbatch_s=1e-3, boundary_bytes=5e8)
    t_fast = simulate_pipeline(big, layers=8, stages=4, microbatches=8, stage_link=fast)
    t_slow = simulate_pipeline(big, layers=8, stages=4, microbatches=8, stage_link=slow)
    assert t_slow.p2p_time_s > t_fast.p2p_time_s > 0
    assert t_slow.step_time_s > t_fast.step_time_s
    assert t_slow.bubble_fraction > (4 - 1) / (8 + 4 - 1)


def test_stage_costs_fit_recovers_a_bilinear_model():
    alpha, beta, gamma, delta = 3.0, 0.5, 1.25, 0.75
    runs = {
        (n, b): (n * (alpha * b + beta) + gamma * b + delta, n * (10 + 2 * b) + 5 + b)
        for n in (1, 2)
        for b in (1, 2)
    }
    c = stage_costs_from_runs(runs, boundary_bytes=7.0)
    assert (c.layer_microbatch_s, c.layer_step_s) == pytest.approx((alpha, beta))
    assert (c.other_microbatch_s, c.other_step_s) == pytest.approx((gamma, delta))
    assert (c.layer_static_bytes, c.layer_activation_bytes) == pytest.approx((10, 2))


def _bilinear(a: float, b: float, g: float, d: float) -> dict[tuple[int, int], float]:
    return {(n, m): n * (a * m + b) + g * m + d for n in (1, 2) for m in (1, 2)}


@pytest.mark.parametrize("overlap", [0.0, 0.4, 1.0])
def test_parts_add_per_microbatch_and_hide_the_once_a_step_communication(overlap):
    compute = _bilinear(3.0, 0.5, 1.25, 0.75)
    comm = _bilinear(0.25, 2.0, 0.5, 4.0)
    memory = {k: (t, 100.0 * k[0] + 10.0 * k[1]) for k, t in compute.items()}
    c = stage_costs_from_parts(memory, comm, boundary_bytes=7.0, collective_overlap=overlap)
    assert c.layer_microbatch_s == pytest.approx(3.0 + 0.25)
    assert c.other_microbatch_s == pytest.approx(1.25 + 0.5)
    assert c.layer_step_s == pytest.approx(0.5 + (1 - overlap) * 2.0)
    assert c.other_step_s == pytest.approx(0.75 + (1 - overlap) * 4.0)
    assert (c.layer_static_bytes, c.boundary_bytes) == pytest.approx((100.0, 7.0))


def test_parts_fit_apart_is_not_the_fit_of_their_maximum():
    # an overlapped step (max of the two) is not bilinear: fitting it loses the layer cost
    compute = _bilinear(1.0, 0.0, 0.0, 0.0)
    comm = _bilinear(0.0, 0.0, 0.0, 10.0)
    together = stage_costs_from_runs(
        {k: (max(compute[k], comm[k]), 0.0) for k in compute}, boundary_bytes=0.0
    )
    apart = stage_costs_from_parts(
        {k: (t, 0.0) for k, t in compute.items()}, comm, boundary_bytes=0.0
    )
    assert together.layer_microbatch_s == pytest.approx(0.0)
    assert apart.layer_microbatch_s == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"collective_overlap": 1.5}, "collective_overlap must be in"),
        ({"communication": {(1, 1): 0.0}}, "same keys"),
    ],
)
def test_bad_parts_name_the_fix(kwargs, match):
    args = {
        "compute": {k: (t, 0.0) for k, t in _bilinear(1, 1, 1, 1).items()},
        "communication": _bilinear(1, 1, 1, 1),
        "boundary_bytes": 1.0,
        **kwargs,
    }
    with pytest.raises(SimulatorError, match=match):
        stage_costs_from_parts(**args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"layers": 10, "stages": 4}, "do not split"),
        ({"schedule": "zigzag"}, "schedule must be"),
        ({"schedule": "gpipe", "repeats": 2}, "one chunk per stage"),
        ({"schedule": "interleaved-1f1b", "repeats": 2, "microbatches": 6}, "multiple of"),
    ],
)
def test_bad_arguments_name_the_fix(kwargs, match):
    args = {"layers": 16, "stages": 4, "microbatches": 8, **kwargs}
    with pytest.raises(SimulatorError, match=match):
        simulate_pipeline(COMPUTE_BOUND, **args)
