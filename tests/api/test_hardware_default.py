"""Automatic tactics judge on the profile of the mesh's devices unless told otherwise; on
an abstract mesh, with nothing to read, they ask for one."""

import jax
import pytest

import partir
from partir.api.partition import judge_hardware
from partir.errors import TacticError
from partir.simulator import profile_for_device_kind
from partir.testing import models, schedules


@pytest.mark.parametrize(
    ("kind", "profile"),
    [
        ("TPU v4", "tpu-v4"),
        ("TPU v5 lite", "tpu-v5e"),
        ("TPU v5p", "tpu-v5p"),
        ("TPU v5", "tpu-v5p"),
        ("TPU v6 lite", "tpu-v6e"),
        ("NVIDIA A100-SXM4-80GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("NVIDIA H200", "h200"),
        ("cpu", "cpu"),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_device_kinds_map_to_profiles(kind, profile):
    assert profile_for_device_kind(kind) == profile


def _search_plan(mesh, **partition):
    m = models.get("mlp")
    schedule = [schedules.tactic("mlp", "BP"), partir.AutomaticPartition(["model"])]
    return partir.partition(schedule, mesh=mesh, **partition)(m.fn).plan(*m.args)


def test_cpu_mesh_judges_on_cpu():
    mesh = jax.make_mesh((4, 2), ("batch", "model"))
    assert judge_hardware(None, mesh, []) == "cpu"
    plan = _search_plan({"batch": 4, "model": 2})
    assert plan.records[1].report.hardware == "cpu"


def test_named_profile_wins_over_the_devices():
    plan = _search_plan({"batch": 4, "model": 2}, hardware="tpu-v5p")
    assert plan.records[1].report.hardware == "tpu-v5p"


def test_abstract_mesh_with_an_automatic_tactic_asks_for_a_profile():
    with pytest.raises(TacticError, match=r"AutomaticPartition.*hardware=.*tpu-v5p"):
        _search_plan(jax.sharding.AbstractMesh((4, 2), ("batch", "model")))
    # named on the partition, or on the tactic, it plans
    abstract = {"batch": 8, "model": 8}
    assert _search_plan(abstract, hardware="h100").records[1].report.hardware == "h100"
    m = models.get("mlp")
    own = [schedules.tactic("mlp", "BP"), partir.AutomaticPartition(["model"], hardware="a100")]
    plan = partir.partition(own, mesh=abstract)(m.fn).plan(*m.args)
    assert plan.records[1].report.hardware == "a100"


def test_abstract_mesh_without_a_search_needs_no_profile():
    m = models.get("mlp")
    plan = partir.partition([schedules.tactic("mlp", "BP")], mesh={"batch": 16, "model": 4})(m.fn)
    assert plan.plan(*m.args).conflicts == []
