"""The user-facing API: `partir.partition` and the partitioned function it returns."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh, AxisType, Mesh

import partir.rules  # noqa: F401  (registers every sharding rule)
from partir import ir
from partir._gc import gc_paused
from partir._plan import Plan, _leaf_signature
from partir._program import trace
from partir.errors import MeshError, PartIRError, ScheduleError
from partir.passes.propagate import Propagator
from partir.simulator import get_hardware
from partir.tactics import TACTIC_TYPES, TacticContext

MODES = ("annotate", "spmd")
"""Emission modes available now."""


def _check_schedule(schedule: Any) -> tuple[Any, ...]:
    if isinstance(schedule, TACTIC_TYPES):
        return (schedule,)
    if not isinstance(schedule, Sequence) or isinstance(schedule, str):
        raise ScheduleError(
            f"partir.partition expects a schedule: a list of tactics, got {type(schedule).__name__}. "
            "Write partir.partition([partir.ManualPartition({'x': 0}, axis='batch')])."
        )
    for i, tactic in enumerate(schedule):
        if not isinstance(tactic, TACTIC_TYPES):
            names = ", ".join(t.__name__ for t in TACTIC_TYPES)
            raise ScheduleError(
                f"partir.partition: schedule entry {i} is {type(tactic).__name__} {tactic!r}, not a "
                f"tactic. Each entry must be one of: {names}."
            )
    return tuple(schedule)


def resolve_mesh(mesh: Any) -> Mesh | AbstractMesh:
    """The mesh to partition on, with `AxisType.Auto` axes (so XLA's propagation applies).

    `mesh` may be a `jax.sharding.Mesh`, a `jax.sharding.AbstractMesh` (plan, explain and
    simulate without devices: what-if studies of meshes larger than this machine), a
    mapping or sequence of (axis name, size), or None to use the mesh set by
    `jax.set_mesh`. A mapping whose device count exceeds this machine's gives an
    `AbstractMesh`: the plan can be inspected and simulated but not run.
    """
    if mesh is None:
        current = jax.sharding.get_mesh()
        if current is None or not getattr(current, "axis_names", ()):
            raise MeshError(
                "partir.partition got no mesh and none is set. Pass mesh=jax.make_mesh((4, 2), "
                "('batch', 'model'), axis_types=(AxisType.Auto,) * 2), or call the function "
                "inside `with jax.set_mesh(mesh):`."
            )
        mesh = current
    if isinstance(mesh, Mapping | Sequence) and not isinstance(mesh, Mesh | AbstractMesh):
        items = list(mesh.items()) if isinstance(mesh, Mapping) else [tuple(x) for x in mesh]
        names = [str(n) for n, _ in items]
        _check_axis_names(names)
        sizes = [int(s) for _, s in items]
        for name, size in zip(names, sizes, strict=True):
            if size < 1:
                raise MeshError(f"mesh axis {name!r} has size {size}; sizes must be >= 1.")
        if math.prod(sizes) > len(jax.devices()):
            return AbstractMesh(
                tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names)
            )
        try:
            mesh = jax.make_mesh(
                tuple(sizes), tuple(names), axis_types=(AxisType.Auto,) * len(names)
            )
        except ValueError as e:
            raise MeshError(
                f"cannot build mesh {dict(items)} on {len(jax.devices())} devices: {e}"
            ) from None
    if isinstance(mesh, AbstractMesh):
        _check_axis_names(list(mesh.axis_names))
        if any(t != AxisType.Auto for t in mesh.axis_types):
            mesh = AbstractMesh(
                mesh.axis_sizes, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names)
            )
        return mesh
    if not isinstance(mesh, Mesh):
        raise MeshError(f"expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = list(mesh.axis_names)
    _check_axis_names(names)
    if any(t != AxisType.Auto for t in mesh.axis_types):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(names))
    return mesh


def _check_axis_names(names: list[Any]) -> None:
    for n in names:
        if names.count(n) > 1:
            raise MeshError(
                f"mesh axis name {n!r} is used twice in {tuple(names)}; each axis needs its own name."
            )


class Partitioned:
    """A function partitioned by a schedule. Call it like a `jax.jit` function (one plan
    and one compilation per input signature), or ask for its `plan` without running."""

    def __init__(
        self,
        fn: Callable[..., Any],
        schedule: tuple[Any, ...],
        mesh: Any,
        mode: str,
        hardware: Any = "cpu",
    ):
        self.fn = fn
        self.schedule = schedule
        self._mesh = mesh
        self.mode = mode
        self.hardware = hardware
        """The simulator profile automatic tactics judge candidates on."""
        self._plans: dict[Any, Plan] = {}
        functools.update_wrapper(self, fn)

    def plan(self, *args: Any, **kwargs: Any) -> Plan:
        """Plan the partitioning for these inputs (arrays or `jax.ShapeDtypeStruct`s); runs nothing."""
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        signature = (tree, tuple(_leaf_signature(x) for x in leaves))
        mesh = resolve_mesh(self._mesh)
        key = (signature, mesh)
        if key not in self._plans:
            with gc_paused():
                self._plans[key] = self._make_plan(args, kwargs, leaves, signature, mesh)
        return self._plans[key]

    def _make_plan(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        leaves: list[Any],
        signature: Any,
        mesh: Mesh | AbstractMesh,
    ) -> Plan:
        program = trace(self.fn, *args, **kwargs)
        mesh_attr = ir.MeshAttr(tuple((str(n), int(s)) for n, s in mesh.shape.items()))
        propagator = Propagator(program.module, mesh_attr)
        non_array = {i: type(x).__name__ for i, x in enumerate(leaves) if not hasattr(x, "shape")}
        outputs = list(program.function.body.block.last_op.operands)  # type: ignore[union-attr]
        ctx = TacticContext(
            propagator, program.input_paths, list(program.function.args), non_array, program.name,
            program.output_paths, outputs, self.hardware,
        )  # fmt: skip
        records = [tactic.apply(ctx, i) for i, tactic in enumerate(self.schedule)]
        return Plan(program, mesh, self.schedule, propagator, records, self.mode, signature)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.plan(*args, **kwargs)(*args, **kwargs)

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The `jax.stages.Lowered` of the partitioned function for these inputs."""
        return self.plan(*args, **kwargs).lower(*args, **kwargs)


def partition(
    schedule: Any, *, mesh: Any = None, mode: str = "annotate", hardware: Any = "cpu"
) -> Callable[[Callable[..., Any]], Partitioned]:
    """Partition a JAX function with a schedule of tactics.

    Args:
      schedule: tactics applied in order, each deciding shardings on one mesh axis;
        earlier tactics win, disagreements become `plan.conflicts`.
      mesh: a `jax.sharding.Mesh` (its axes are used as `AxisType.Auto`), a mapping of
        axis name to size, or None to use the mesh set by `jax.set_mesh`.
      mode: ``"annotate"``: `jax.jit` with shardings and a `with_sharding_constraint` on
        every value the plan decided; XLA's partitioner inserts the collectives.
        ``"spmd"``: a `jax.shard_map` program running the device-local IR op by op, with
        exactly the planned collectives (`plan.collectives()`).
      hardware: the simulator profile (a name such as ``"tpu-v5p"`` or ``"h100"``, or a
        `partir.simulator.Hardware`) that `AutomaticPartition` tactics judge candidates
        on when they do not name their own.

    Returns:
      A decorator; the decorated function is called like a `jax.jit` function and has
      `.plan(*args)` to inspect the partitioning without running it.
    """
    tactics = _check_schedule(schedule)
    if mode not in MODES:
        raise PartIRError(f"partir.partition(mode={mode!r}): available modes are {MODES}.")
    get_hardware(hardware)  # an unknown profile fails here, not at the first plan

    def decorate(fn: Callable[..., Any]) -> Partitioned:
        return Partitioned(fn, tactics, mesh, mode, hardware)

    return decorate
