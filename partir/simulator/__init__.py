"""The analytical simulator: per-device step time, FLOPs, communication and peak memory of a
device-local (spmd) program on a hardware profile.

    from partir.simulator import simulate
    report = simulate(plan.lowered.module, "tpu-v5p")
    print(report)                    # step time range, MFU, memory, top ops, collectives

No JAX here: the simulator reads the xDSL program only (see README.md for the model).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp

from partir import ir
from partir.simulator.collectives import (
    CollectiveSig as CollectiveSig,
)
from partir.simulator.collectives import (
    CommCost as CommCost,
)
from partir.simulator.collectives import (
    alpha_beta_time as alpha_beta_time,
)
from partir.simulator.collectives import (
    bytes_sent as bytes_sent,
)
from partir.simulator.collectives import (
    collective_time as collective_time,
)
from partir.simulator.collectives import (
    torus_time as torus_time,
)
from partir.simulator.costs import COSTS as COSTS
from partir.simulator.costs import OpCost as OpCost
from partir.simulator.costs import Signature as Signature
from partir.simulator.costs import compute_cost as compute_cost
from partir.simulator.costs import cost as cost
from partir.simulator.costs import roofline_time as roofline_time
from partir.simulator.hardware import Hardware as Hardware
from partir.simulator.hardware import Link as Link
from partir.simulator.hardware import SimulatorError as SimulatorError
from partir.simulator.hardware import cpu_profile_path as cpu_profile_path
from partir.simulator.hardware import save_cpu_profile as save_cpu_profile
from partir.simulator.memory import MemoryProfile as MemoryProfile
from partir.simulator.memory import liveness as liveness
from partir.simulator.profiles import PROFILES as PROFILES
from partir.simulator.profiles import get_hardware as get_hardware
from partir.simulator.profiles import profile_for_device_kind as profile_for_device_kind
from partir.simulator.program import Walker, clear_caches, dead_ops
from partir.simulator.report import CollectiveRow as CollectiveRow
from partir.simulator.report import OpRow as OpRow
from partir.simulator.report import Report as Report
from partir.simulator.topology import AxisLink as AxisLink
from partir.simulator.topology import Topology as Topology
from partir.simulator.topology import resolve_topology
from partir.utils.gc import gc_paused

__all__ = [
    "COSTS", "PROFILES", "AxisLink", "CollectiveRow", "CollectiveSig", "CommCost", "Hardware",
    "Link", "MemoryProfile", "OpCost", "OpRow", "Report", "Signature", "SimulatorError",
    "Topology", "alpha_beta_time", "bytes_sent", "clear_caches", "collective_time",
    "compute_cost", "cost", "cpu_profile_path", "get_hardware", "liveness", "roofline_time",
    "save_cpu_profile", "simulate", "torus_time",
]  # fmt: skip


def _module_of(program: Any) -> ModuleOp:
    if isinstance(program, ModuleOp):
        return program
    for attr in ("lowered", "module"):  # a Plan's device-local program before any .module
        inner = getattr(program, attr, None)
        if inner is not None:
            return _module_of(inner)
    raise SimulatorError(
        f"simulate() expects the device-local ModuleOp (plan.lowered.module), got {type(program)}"
    )


def _entry(module: ModuleOp) -> func.FuncOp:
    for op in module.body.block.ops:
        if isinstance(op, func.FuncOp):
            return op
    raise SimulatorError("the module has no func.func to simulate")


def simulate(
    spmd_module: Any,
    hardware: str | Hardware = "cpu",
    *,
    topology: Topology | Mapping[str, str | AxisLink] | None = None,
    donate: bool = False,
) -> Report:
    """Predict one step of a device-local program on one hardware profile.

    Args:
      spmd_module: the device-local program: ``plan.lowered.module`` (a ModuleOp whose
        ``partir.mesh`` attribute names the mesh), or an object with a ``lowered`` or
        ``module`` attribute leading to one (a ``Plan``, its ``Lowered``, a traced
        ``Program``). A module with no mesh is one device.
      hardware: a profile name (``"tpu-v5p"``, ``"h100"``, ``"cpu"``, ...) or a `Hardware`.
      topology: how mesh axes map to links: None for `Topology.default`, a `Topology`, or
        a mapping axis -> link kind (``"ici"``, ``"dcn"``, ``"nvlink"``, ``"infiniband"``,
        ``"loopback"``) or `AxisLink`.
      donate: treat the arguments as donated (freed after their last use) for peak memory.

    Returns a `Report`.
    """
    module = _module_of(spmd_module)
    hw = get_hardware(hardware)
    mesh = module.attributes.get("partir.mesh")
    axes = tuple(mesh.data) if isinstance(mesh, ir.MeshAttr) else ()
    topo = resolve_topology(hw, axes, topology)
    block = _entry(module).body.block
    with gc_paused():
        ops = list(block.ops)
        dead = dead_ops(ops)
        walker = Walker(hw, topo).walk(block, ops, dead)
        memory = liveness(block, donate=donate, ops=ops, dead=dead)
    launch = 0.0
    if hw.launch_overhead_s or hw.buffer_overhead_s:
        buffers = len(block.args) + (len(ops[-1].operands) if ops else 0)
        launch = hw.launch_overhead_s + hw.buffer_overhead_s * buffers
    step = walker.compute_s + walker.comm_s + launch
    overlap = walker.makespan + launch
    dtype = max(walker.heavy_flops, key=walker.heavy_flops.__getitem__, default="bfloat16")
    peak = hw.peak_flops_per_s(dtype)
    return Report(
        hardware=hw,
        topology=topo,
        step_time_s=step,
        step_time_overlap_s=overlap,
        compute_time_s=walker.compute_s,
        communication_time_s=walker.comm_s,
        launch_time_s=launch,
        executed_flops=walker.flops,
        transcendentals=walker.transcendentals,
        bytes_accessed=walker.bytes_accessed,
        communication_bytes=walker.comm_bytes,
        peak_memory_bytes=memory.peak_bytes,
        memory=memory,
        peak_flops_per_s=peak,
        mfu=walker.flops / (step * peak) if step > 0 else 0.0,
        mfu_overlap=walker.flops / (overlap * peak) if overlap > 0 else 0.0,
        records=tuple(walker.records),
        block=block,
    )
