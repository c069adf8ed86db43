"""Meshes of `AxisType.Explicit` axes, `jax.make_mesh`'s default: partir plans on them as
they are (no rewrite to Auto), emits code JAX's sharding-in-types accepts, and every zoo
model under BP+MP+Z3 in annotate mode equals the unpartitioned step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import partir
from partir.testing import models, schedules

# the smallest config of each zoo model that still has its structure (a layer loop, experts)
SMALL = {"gpt": {"layers": 1}, "gpt_scan": {"layers": 1}, "unet": {"levels": 1}}


@pytest.fixture(scope="module")
def mesh():
    """What plain `jax.make_mesh` makes in this JAX: Explicit axes."""
    return jax.make_mesh((4, 2), ("data", "model"))


def test_make_mesh_default_is_explicit(mesh):
    # the JAX fact the rest of this file relies on (jax >= 0.7: sharding in types)
    assert tuple(mesh.axis_types) == (AxisType.Explicit,) * 2


def _max_error(out, ref):
    errors = jax.tree.map(
        lambda a, b: (
            float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
            if np.size(a)
            else 0.0
        ),
        out,
        ref,
    )
    return max(jax.tree.leaves(errors))


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_zoo_bp_mp_z3_annotate_on_explicit_mesh_equals_unpartitioned(mesh, name):
    model = models.get(name, **SMALL.get(name, {}))
    schedule = schedules.schedule(name, "BP+MP+Z3", batch_axis="data")
    step = partir.partition(schedule, mesh=mesh)(model.fn)
    plan = step.plan(*model.args)
    assert plan.mesh is mesh  # planned on the user's mesh, not an Auto copy
    out = step(*model.args)
    ref = jax.jit(model.fn)(*model.args)
    assert jax.tree.structure(out) == jax.tree.structure(ref)
    assert _max_error(out, ref) < 1e-4
    leaf = jax.tree.leaves(out)[0]
    assert tuple(leaf.sharding.mesh.axis_types) == (AxisType.Explicit,) * 2
    # the outputs' types carry the planned layouts: they are what the plan said
    flat = jax.tree.leaves(out)
    for x, s in zip(flat, jax.tree.leaves(plan.out_shardings), strict=True):
        assert x.sharding.spec == s.spec


def _mlp(params, x):
    return jnp.sum(jnp.tanh(x @ params["w_in"]) @ params["w_out"])


MLP_SCHEDULE = [
    partir.ManualPartition({"x": 0}, axis="data"),
    partir.ManualPartition({"params/w_in": 1, "params/w_out": 0}, axis="model"),
]


def _mlp_args():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = {
        "w_in": jax.random.normal(k1, (16, 32)) / 4,
        "w_out": jax.random.normal(k2, (32, 8)) / 4,
    }
    return params, jax.random.normal(k3, (8, 16))


def test_set_mesh_context_keeps_explicit_axes(mesh):
    params, x = _mlp_args()
    step = partir.partition(MLP_SCHEDULE)(_mlp)  # no mesh: the one of jax.set_mesh
    with jax.set_mesh(mesh):
        plan = step.plan(params, x)
        out = step(params, x)
    assert tuple(plan.mesh.axis_types) == (AxisType.Explicit,) * 2
    np.testing.assert_allclose(out, _mlp(params, x), rtol=1e-5)


def test_explicit_inputs_already_laid_out_are_accepted(mesh):
    params, x = _mlp_args()
    step = partir.partition(MLP_SCHEDULE, mesh=mesh)(_mlp)
    # inputs placed by the user on the Explicit mesh, in another layout than planned
    x = jax.device_put(x, NamedSharding(mesh, P(None, "model")))
    np.testing.assert_allclose(step(params, x), _mlp(params, x), rtol=1e-5)


def test_auto_mesh_stays_auto():
    auto = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
    params, x = _mlp_args()
    step = partir.partition(MLP_SCHEDULE, mesh=auto)(_mlp)
    plan = step.plan(params, x)
    assert tuple(plan.mesh.axis_types) == (AxisType.Auto,) * 2
    np.testing.assert_allclose(step(params, x), _mlp(params, x), rtol=1e-5)


def test_mixed_axis_types_are_made_auto():
    mixed = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit, AxisType.Auto))
    params, x = _mlp_args()
    step = partir.partition(MLP_SCHEDULE, mesh=mixed)(_mlp)
    plan = step.plan(params, x)
    assert tuple(plan.mesh.axis_types) == (AxisType.Auto,) * 2
    np.testing.assert_allclose(step(params, x), _mlp(params, x), rtol=1e-5)


def test_spmd_mode_runs_on_explicit_mesh(mesh):
    params, x = _mlp_args()
    step = partir.partition(MLP_SCHEDULE, mesh=mesh, mode="spmd")(_mlp)
    np.testing.assert_allclose(step(params, x), _mlp(params, x), rtol=1e-5)
