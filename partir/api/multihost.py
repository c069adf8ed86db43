"""Multi-controller JAX (`jax.distributed`): one plan on every process, and process-local data.

In multi-controller mode every process traces the same function and must reach the same
plan; `fingerprint` hashes what decides the program (IR with shardings, mesh, schedule,
the tactics automatic search found, the device-local program in spmd mode), and
`check_agreement` compares it across processes when a plan's mesh spans several.
`shard_batch` builds global arrays from each process's local data, and
`cross_host_axes` says which mesh axes leave a process (for the simulator's topology).
See docs/multihost.md.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding

from partir.errors import LocalShapeError, PlanMismatchError

if TYPE_CHECKING:
    from partir.api.plan import Plan

FINGERPRINT_VERSION = "partir-plan-v1"
"""Bumped when what `fingerprint` hashes changes."""

CHECK_ENV = "PARTIR_CHECK_PLAN_AGREEMENT"
"""Set to ``0`` to skip the cross-process check (it costs one small all-gather per plan)."""

_LOC = re.compile(r" loc\(.*\)$", re.MULTILINE)

MSG_MISMATCH = (
    "partir.partition({name}): the {count} processes made different plans for one "
    "multi-process mesh, so they would run different programs and hang or compute wrong "
    "results.\n{rows}\nWhat differs: {parts}. Usual causes: a different schedule, mesh, "
    "input shapes or partir/JAX version on some process; an AutomaticPartition budget in "
    "seconds (use budget={{'evaluations': n}}, which is the default, so every process "
    "stops at the same candidate); or a mesh built from a local device list (use "
    "jax.make_mesh over jax.devices()). Compare plan.fingerprint() and plan.ir() per process "
    "to find it."
)

MSG_LOCAL_SHAPE = (
    "plan.shard_batch: {path} has local shape {local} on process {process} of {count}, but "
    "the plan's global shape is {global_} with sharding {spec}, so this process must hold "
    "{expected} (its part: {part}) or the whole {global_} (the same on every process). "
    "Give each process its part of dim {dim}, or plan for the global shape (a global batch "
    "of process_count() x the local one)."
)


def components(plan: Plan) -> dict[str, str]:
    """The texts `fingerprint` hashes, by name, so a mismatch can say what differs.

    Source locations are left out of the IR text (install paths may differ between
    hosts, and they change nothing that runs); mesh axes and the global device ids are in.
    """
    mesh = plan.mesh
    mesh_text = repr(tuple((str(n), int(s)) for n, s in mesh.shape.items()))
    if isinstance(mesh, Mesh):
        mesh_text += " devices " + repr(mesh.device_ids.tolist())
    ir_text = _LOC.sub("", plan.ir())
    shardings = "\n".join(
        f"{path}: {s.spec}"
        for path, s in zip(
            plan.program.input_paths + plan.program.output_paths,
            plan._flat_in + plan._flat_out,
            strict=True,
        )
    )
    out = {
        "mesh": mesh_text,
        "schedule": repr(plan.schedule),
        "tactics found": repr(list(plan.tactics_found)),
        "mode": plan.mode,
        "IR with shardings": ir_text,
        "input and output shardings": shardings,
    }
    if plan.mode == "spmd":
        out["device-local program"] = _LOC.sub("", str(plan.lowered.module))
    return out


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def fingerprint(plan: Plan) -> str:
    """A sha256 hex digest of everything that decides what the plan runs; equal plans
    (on any process, under any hash seed) give equal digests."""
    h = hashlib.sha256(FINGERPRINT_VERSION.encode())
    for name, text in components(plan).items():
        h.update(name.encode() + b"\0" + _digest(text))
    return h.hexdigest()


def spans_processes(mesh: Mesh | AbstractMesh) -> bool:
    """Whether `mesh` has devices of more than one process (a multi-controller mesh)."""
    if not isinstance(mesh, Mesh) or jax.process_count() == 1:
        return False
    return len({d.process_index for d in mesh.devices.flat}) > 1


def check_agreement(plan: Plan) -> None:
    """Raise `PlanMismatchError` unless every process made this same plan.

    A no-op unless the plan's mesh spans processes (and ``PARTIR_CHECK_PLAN_AGREEMENT``
    is not ``0``). Every process must call it, as every process plans: it all-gathers
    each process's component digests (a few hundred bytes).
    """
    if not spans_processes(plan.mesh) or os.environ.get(CHECK_ENV) == "0":
        return
    from jax.experimental import multihost_utils

    parts = components(plan)
    mine = np.frombuffer(b"".join(_digest(t) for t in parts.values()), dtype=np.uint8)
    gathered = _gather_outside_traces(lambda: multihost_utils.process_allgather(mine))
    gathered = gathered.reshape(jax.process_count(), len(parts), 32)
    if (gathered == gathered[0]).all():
        return
    names = list(parts)
    differ = [names[k] for k in range(len(names)) if not (gathered[:, k] == gathered[0, k]).all()]
    rows = "\n".join(
        f"  - process {p}: {hashlib.sha256(gathered[p].tobytes()).hexdigest()[:16]}"
        + (" (this one)" if p == jax.process_index() else "")
        for p in range(gathered.shape[0])
    )
    raise PlanMismatchError(
        MSG_MISMATCH.format(
            name=plan.program.name, count=gathered.shape[0], rows=rows, parts=", ".join(differ)
        )
    )


def _gather_outside_traces(gather: Callable[[], Any]) -> np.ndarray:
    """`gather()` run on a fresh thread and waited for. Planning may run while an
    enclosing `jax.jit` traces (a partitioned function called inside one), where JAX
    refuses the gather's own jit and mesh; JAX's trace state is per thread, so a new
    thread runs it eagerly."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = np.asarray(gather())
        except BaseException as e:  # re-raised on the planning thread
            result["error"] = e

    thread = threading.Thread(target=run, name="partir-plan-agreement")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def local_part(sharding: NamedSharding, shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per dimension, the (start, stop) range of the global array this process holds
    under `sharding`: the union of its devices' shards (contiguous for the meshes
    `jax.make_mesh` builds)."""
    ranges: list[tuple[int, int]] = [(n, 0) for n in shape]
    for index in sharding.addressable_devices_indices_map(shape).values():
        for d, sl in enumerate(index or ()):
            start, stop, _ = sl.indices(shape[d])
            lo, hi = ranges[d]
            ranges[d] = (min(lo, start), max(hi, stop))
    return [(lo, hi) if hi > lo else (0, n) for (lo, hi), n in zip(ranges, shape, strict=True)]


def _check_local(
    path: str, local: tuple[int, ...], shape: tuple[int, ...], sharding: NamedSharding
) -> None:
    part = local_part(sharding, shape)
    expected = tuple(hi - lo for lo, hi in part)
    bad = [
        d
        for d, n in enumerate(local)
        if len(local) == len(shape) and n not in (shape[d], expected[d])
    ]
    if len(local) == len(shape) and not bad:
        return
    raise LocalShapeError(
        MSG_LOCAL_SHAPE.format(
            path=path,
            local=list(local),
            process=jax.process_index(),
            count=jax.process_count(),
            global_=list(shape),
            spec=sharding.spec,
            expected=list(expected),
            part=", ".join(f"{lo}:{hi}" for lo, hi in part),
            dim=bad[0] if bad else 0,
        )
    )


def shard_batch(plan: Plan, leaves: list[Any]) -> list[Any]:
    """Global arrays, one per flat input leaf, from this process's local data.

    Each leaf is either this process's part of the global input (its shape is what
    `local_part` gives under the planned sharding; a batch split over processes) or the
    whole value (the global shape: parameters every process initialised alike). Every
    dimension must be one or the other; JAX's `make_array_from_process_local_data` does
    the placing.
    """
    out = []
    for x, sharding, path, (shape, dtype) in zip(
        leaves,
        plan._flat_in,
        plan.program.input_paths,
        plan.input_signature[1],
        strict=True,
    ):
        if isinstance(x, jax.Array) and x.shape == shape and x.sharding == sharding:
            out.append(x)  # already global and placed
            continue
        data = np.asarray(x, dtype=dtype) if not isinstance(x, jax.Array) else x
        _check_local(path, tuple(data.shape), tuple(shape), sharding)
        out.append(jax.make_array_from_process_local_data(sharding, data, tuple(shape)))
    return out


def cross_host_axes(mesh: Mesh | AbstractMesh) -> frozenset[str] | None:
    """The mesh axes along which devices belong to different processes, or None for a
    mesh of one process (or an abstract one)."""
    if not spans_processes(mesh):
        return None
    assert isinstance(mesh, Mesh)
    owner = np.vectorize(lambda d: d.process_index)(mesh.devices)
    crossing = set()
    for k, name in enumerate(mesh.axis_names):
        if (np.diff(owner, axis=k) != 0).any():
            crossing.add(str(name))
    return frozenset(crossing)


def simulate_options(plan: Plan, hardware: Any, options: dict[str, Any]) -> dict[str, Any]:
    """`plan.simulate`'s options with the topology of hosts filled in: from
    ``devices_per_host`` (a what-if: the innermost axes that fit in one host stay on it),
    or from the processes a real multi-process mesh spans. A given ``topology`` wins."""
    from partir.simulator import Topology, get_hardware

    options = dict(options)
    per_host = options.pop("devices_per_host", None)
    if "topology" in options:
        return options
    crossing = cross_host_axes(plan.mesh)
    if per_host is None and crossing is None:
        return options
    axes = tuple((str(n), int(s)) for n, s in plan.mesh.shape.items())
    options["topology"] = Topology.default(
        get_hardware(hardware), axes, devices_per_host=per_host, cross_host_axes=crossing
    )
    return options
