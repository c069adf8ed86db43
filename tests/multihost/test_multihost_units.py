"""`plan.fingerprint`, `plan.shard_batch` and the cross-host topology, on one process."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, AxisType

import partir
from partir.api import multihost as _multihost
from partir.errors import InputMismatchError, LocalShapeError
from partir.simulator import SimulatorError, Topology, get_hardware
from partir.tactics import ManualPartition


def step(params, batch):
    return jnp.tanh(batch["x"] @ params["w"]).sum() + params["b"].sum()


ARGS = (
    {"w": jnp.ones((8, 4)), "b": jnp.zeros((4,))},
    {"x": jnp.arange(64.0).reshape(8, 8)},
)
MESH = {"batch": 4, "model": 2}


def plan_of(schedule, mesh=MESH, mode="annotate"):
    return partir.partition(schedule, mesh=mesh, mode=mode)(step).plan(*ARGS)


BP = [ManualPartition({"batch": 0}, axis="batch")]
MP = [ManualPartition({"params/w": 1}, axis="model")]


def test_fingerprint_stable_and_distinguishing():
    a = plan_of(BP).fingerprint()
    assert a == plan_of(BP).fingerprint()  # a fresh trace and plan: the same digest
    assert len(a) == 64 and int(a, 16) >= 0
    others = {
        plan_of(MP).fingerprint(),
        plan_of(BP, mode="spmd").fingerprint(),
        plan_of(BP, mesh={"batch": 2, "model": 4}).fingerprint(),
        plan_of(BP + MP).fingerprint(),
    }
    assert a not in others and len(others) == 4


def test_fingerprint_ignores_source_locations():
    plan = plan_of(BP)
    text = _multihost.components(plan)["IR with shardings"]
    assert "loc(" in plan.ir() and "loc(" not in text
    assert "partir.sharding" in text


def test_fingerprint_of_abstract_plan():
    abstract = AbstractMesh((8, 4), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    a = plan_of(BP, mesh=abstract)
    assert a.fingerprint() == plan_of(BP, mesh=abstract).fingerprint()
    assert _multihost.cross_host_axes(a.mesh) is None


def test_shard_batch_single_process_is_place():
    plan = plan_of(BP)
    params, batch = plan.shard_batch(*ARGS)
    assert batch["x"].sharding == plan.in_shardings[1]["x"]
    np.testing.assert_array_equal(batch["x"], ARGS[1]["x"])
    assert float(plan(params, batch)) == pytest.approx(float(step(*ARGS)))
    host = jax.tree_util.tree_map(np.asarray, ARGS)
    _, again = plan.shard_batch(*host)  # host (numpy) data as well
    assert again["x"].sharding == plan.in_shardings[1]["x"]


def test_shard_batch_wrong_local_shape():
    plan = plan_of(BP)
    with pytest.raises(LocalShapeError) as e:
        plan.shard_batch(ARGS[0], {"x": np.zeros((3, 8), np.float32)})
    msg = str(e.value)
    assert "batch/x has local shape [3, 8] on process 0 of 1" in msg
    assert "global shape is [8, 8]" in msg and "must hold [8, 8]" in msg
    with pytest.raises(LocalShapeError, match="params/w has local shape"):
        plan.shard_batch({"w": np.zeros((8,)), "b": ARGS[0]["b"]}, ARGS[1])  # rank differs


def test_shard_batch_wrong_structure():
    plan = plan_of(BP)
    with pytest.raises(InputMismatchError, match="planned for arguments of structure"):
        plan.shard_batch(ARGS[0], {"y": ARGS[1]["x"]})


def test_local_part_of_one_process_is_everything():
    plan = plan_of(BP)
    assert _multihost.local_part(plan.in_shardings[1]["x"], (8, 8)) == [(0, 8), (0, 8)]


def test_check_agreement_is_a_noop_on_one_process():
    plan = plan_of(BP)
    assert not _multihost.spans_processes(plan.mesh)
    _multihost.check_agreement(plan)  # no collective, no error


def test_topology_devices_per_host_what_if():
    h100 = get_hardware("h100")
    topo = Topology.default(h100, {"data": 2, "model": 4}, devices_per_host=4)
    assert [(a.link.kind, a.crosses_hosts) for a in topo.axes] == [
        ("infiniband", True),
        ("nvlink", False),
    ]
    assert str(topo) == "data=2: infiniband cross-host, model=4: nvlink"
    one_node = Topology.default(h100, {"data": 2, "model": 4})  # 8 GPUs per node
    assert [a.crosses_hosts for a in one_node.axes] == [False, False]
    cpu = Topology.default(get_hardware("cpu"), {"data": 2, "model": 4}, devices_per_host=4)
    assert str(cpu) == "data=2: ethernet cross-host, model=4: loopback"
    tpu = Topology.default(get_hardware("tpu-v5p"), {"data": 2, "model": 4}, devices_per_host=4)
    assert [(a.link.kind, a.crosses_hosts) for a in tpu.axes] == [("ici", True), ("ici", False)]


def test_topology_named_cross_host_axes():
    cpu = get_hardware("cpu")
    topo = Topology.default(cpu, {"batch": 4, "model": 2}, cross_host_axes=["model"])
    assert str(topo) == "batch=4: loopback, model=2: ethernet cross-host"
    with pytest.raises(SimulatorError, match=r"cross_host_axes names \['seq'\]"):
        Topology.default(cpu, {"batch": 4}, cross_host_axes=["seq"])
    with pytest.raises(SimulatorError, match="devices_per_host must be at least 1, got: 0"):
        Topology.default(cpu, {"batch": 4}, devices_per_host=0)


def test_simulate_cross_host_axis_is_slower():
    plan = plan_of(BP)
    here = plan.simulate("cpu")
    hosts = plan.simulate("cpu", devices_per_host=2)  # batch=4 now spans 2 hosts
    assert str(hosts.topology) == "batch=4: ethernet cross-host, model=2: loopback"
    assert hosts.communication_time_s > here.communication_time_s > 0
    assert plan.simulate("cpu", devices_per_host=8).communication_time_s == pytest.approx(
        here.communication_time_s
    )
