"""DSP (Dynamic Sequence Parallelism) on the zoo's multi-dimensional transformer."""

import functools

import jax
import numpy as np
import pytest

import partir
from partir.errors import SelectorError, TacticError
from partir.tactics.presets import BP, MP
from partir.tactics.sequence import DSP
from partir.testing import models

LAYERS = 2
SCHEDULES = {
    "BP+DSP": (lambda stacked: [*BP(), *DSP()], {"batch": 2, "seq": 4}),
    "BP+MP+DSP": (
        lambda stacked: [*BP(), *MP(stacked=stacked), *DSP()],
        {"batch": 2, "model": 2, "seq": 2},
    ),
}
MODELS = ("video_dit", "video_dit_scan")
# switches per block body in the plan: 2 forward (space -> time before the spatial
# attention, time -> space before the temporal one) and their 2 transposes backward;
# the unrolled model has LAYERS bodies, the scanned one a single body
SWITCHES = {"video_dit": 4 * LAYERS, "video_dit_scan": 4}


@functools.cache
def model_and_reference(model: str = "video_dit"):
    m = getattr(models, model)(layers=LAYERS)
    return m, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


@functools.cache
def plan_of(name: str, mode: str, model: str = "video_dit"):
    m, _ = model_and_reference(model)
    schedule, mesh = SCHEDULES[name]
    step = partir.partition(schedule(model.endswith("_scan")), mesh=mesh, mode=mode)(m.fn)
    return step, step.plan(*m.args)


def seq_rows(plan):
    return [c for c in plan.collectives() if c.communicates and "seq" in c.axes]


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("model", MODELS)
def test_dsp_step_equals_unpartitioned(model, name, mode):
    m, ref = model_and_reference(model)
    step, _ = plan_of(name, mode, model)
    out = step(*m.args)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("model", MODELS)
def test_dsp_layouts_meet_only_at_the_stage_switches(model, name):
    # The plan: each stage on its own dim, the layouts meeting exactly at the name ops.
    _, plan = plan_of(name, "annotate", model)
    seq = [c for c in plan.conflicts if c.axis == "seq"]
    assert len(seq) == SWITCHES[model], "\n".join(map(str, seq))
    for c in seq:
        assert "at name at" in str(c).splitlines()[0], str(c)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_dsp_spmd_is_one_all_to_all_per_switch(name):
    _, plan = plan_of(name, "spmd")
    rows = seq_rows(plan)
    a2a = [r for r in rows if r.kind == "all_to_all"]
    # 2 per block forward and their transposes backward
    assert len(a2a) == SWITCHES["video_dit"], str(plan.collectives())
    assert all("of name at" in r.reason for r in a2a)
    assert not [r for r in rows if r.kind == "all_gather"]


def test_dsp_names_a_missing_stage():
    m, _ = model_and_reference()
    step = partir.partition(DSP(dims={"spatial_in": 1, "cross_in": 2}), mesh={"seq": 4})(m.fn)
    with pytest.raises(SelectorError, match="cross_in"):
        step.plan(*m.args)


def test_dsp_rejects_bad_dims():
    with pytest.raises(TacticError, match="dims"):
        DSP(dims={"spatial_in": "time"})  # type: ignore[dict-item]
    with pytest.raises(TacticError, match="at least one"):
        DSP(dims={})
