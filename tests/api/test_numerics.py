"""Every zoo model under every reference schedule and mesh equals the unpartitioned step."""

import functools

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import partir
from partir.testing import models, schedules

MESHES = {
    "8": ((8,), ("x",)),
    "2x4": ((2, 4), ("batch", "model")),
    "4x2": ((4, 2), ("batch", "model")),
}
CASES = [
    (model, name, mesh, mode)
    for model in sorted(models.MODELS)
    for name in schedules.SCHEDULES
    if schedules.applicable(model, name)
    for mesh in MESHES
    for mode in ("annotate", "spmd")
    # annotate mode hands the same constraints to XLA on both 2-axis meshes; spmd mode, whose
    # collectives partir lowers itself, runs on both
    if not (mode == "annotate" and mesh == "2x4")
]


@functools.cache
def reference(model: str):
    m = models.get(model)
    return m, jax.tree.map(np.asarray, m.fn(*m.args))


def make_mesh(key: str):
    shape, axes = MESHES[key]
    return jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(shape))


@pytest.mark.parametrize(("model", "name", "mesh", "mode"), CASES, ids=["-".join(c) for c in CASES])
def test_partitioned_step_equals_unpartitioned(model, name, mesh, mode):
    m, ref = reference(model)
    axes = MESHES[mesh][1]
    batch_axis, model_axis = (axes[0], axes[0]) if len(axes) == 1 else ("batch", "model")
    schedule = schedules.schedule(model, name, batch_axis=batch_axis, model_axis=model_axis)
    step = partir.partition(schedule, mesh=make_mesh(mesh), mode=mode)(m.fn)
    out = step(*m.args)
    assert jax.tree.structure(out) == jax.tree.structure(ref)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    # the schedule really sharded something: at least one input is not replicated
    plan = step.plan(*m.args)
    assert any(s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(plan.in_shardings))


@pytest.mark.parametrize("model", ["gpt", "gpt_scan"])
def test_rematerialised_zero3_step_equals_unpartitioned(model):
    # jax.checkpoint per block puts the gradients inside remat regions (in a scan body
    # for gpt_scan): they must leave those regions as pending sums and be reduced once
    m = models.get(model, remat=True)
    ref = jax.tree.map(np.asarray, m.fn(*m.args))
    schedule = schedules.schedule(model, "BP+MP+Z3")
    step = partir.partition(schedule, mesh=make_mesh("4x2"), mode="spmd")(m.fn)
    for got, want in zip(jax.tree.leaves(step(*m.args)), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    kinds = [(c.kind, c.axes) for c in step.plan(*m.args).collectives()]
    layers = m.config.layers
    # ZeRO-3: every gradient is reduce-scattered, no gradient is all-reduced on `batch`
    # (12 leaves per block, 4 outside: embed tokens/positions, final_ln scale/bias)
    assert kinds.count(("reduce_scatter", ("batch",))) >= 12 * (layers if model == "gpt" else 1)
    assert kinds.count(("all_reduce", ("batch",))) == 1  # the scalar loss
