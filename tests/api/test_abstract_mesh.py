"""Plans on meshes larger than this machine: planned from shapes, simulated, never run."""

import jax
import pytest
from jax.sharding import AbstractMesh, AxisType

import partir
from partir.errors import MeshError
from partir.testing import models, schedules

CONFIG = {
    "layers": 2,
    "d_model": 256,
    "heads": 8,
    "d_ff": 1024,
    "vocab": 512,
    "batch": 64,
    "seq": 64,
}


def plan_on(mesh, model=None):
    model = model or models.get("gpt", abstract=True, **CONFIG)
    step = partir.partition(schedules.schedule("gpt", "BP+MP+Z3"), mesh=mesh, mode="spmd")
    return step(model.fn).plan(*model.args), model


@pytest.mark.parametrize("batch_axis", [16, 64])
def test_a_mapping_larger_than_the_machine_plans_on_an_abstract_mesh(batch_axis):
    plan, _ = plan_on({"batch": batch_axis, "model": 4})
    assert plan.is_abstract and isinstance(plan.mesh, AbstractMesh)
    assert plan.mesh.size == batch_axis * 4 > len(jax.devices())
    # local shapes are the global ones divided by the mesh: the tokens' batch dim
    tokens = plan.in_shardings[2]["tokens"]
    assert tokens.spec[0] == "batch"
    assert tokens.shard_shape((64, 64)) == (64 // batch_axis, 64)
    # Megatron's all_reduces over `model` are of the per-device activation size
    reduces = [c for c in plan.collectives() if c.kind == "all_reduce" and c.axes == ("model",)]
    b, s, h = CONFIG["batch"] // batch_axis, CONFIG["seq"], CONFIG["d_model"]
    assert reduces and {c.bytes for c in reduces} >= {b * s * h * 4}
    report = plan.simulate("tpu-v5p")
    assert report.step_time_s > 0 and report.peak_memory_bytes > 0


def test_more_data_parallel_devices_mean_less_memory_per_device():
    small, _ = plan_on({"batch": 16, "model": 4})
    large, _ = plan_on({"batch": 64, "model": 4})
    assert large.simulate("h100").peak_memory_bytes < small.simulate("h100").peak_memory_bytes


def test_an_abstract_mesh_object_is_accepted_and_made_auto():
    mesh = AbstractMesh((32, 2), ("batch", "model"), axis_types=(AxisType.Explicit,) * 2)
    plan, _ = plan_on(mesh)
    assert plan.mesh.axis_types == (AxisType.Auto,) * 2


def test_running_an_abstract_plan_says_why_not():
    plan, model = plan_on({"batch": 16, "model": 4})
    with pytest.raises(MeshError, match=r"abstract mesh \{'batch': 16, 'model': 4\} \(64 devices"):
        plan(*model.args)
    with pytest.raises(MeshError, match=r"check_compiled\(\) needs devices"):
        plan.check_compiled()


def test_a_mesh_axis_of_size_zero_is_refused():
    with pytest.raises(MeshError, match=r"mesh axis 'model' has size 0"):
        plan_on({"batch": 16, "model": 0})
