"""The user-facing API: `partir.partition` and the partitioned function it returns."""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from jax.sharding import AbstractMesh, AxisType, Mesh

import partir.rules  # noqa: F401  (registers every sharding rule)
from partir import ir
from partir.api.call import ArgSpec, is_concrete
from partir.api.multihost import check_agreement
from partir.api.plan import Plan, _leaf_signature
from partir.errors import MeshError, PartIRError, ScheduleError, TacticError
from partir.frontend import constraints as user_constraints
from partir.passes.propagate import Propagator
from partir.plan.conflict_kind import raise_on_clash
from partir.plan.logical import input_logical_axes
from partir.plan.program import trace_cached
from partir.simulator import PROFILES, get_hardware, profile_for_device_kind
from partir.tactics import TACTIC_TYPES, AutomaticPartition, TacticContext
from partir.utils.gc import gc_paused

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
    """The mesh to partition on: its own axes when they are all `AxisType.Auto` or all
    `AxisType.Explicit` (`jax.make_mesh`'s default), else the same mesh with Auto axes.

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
        check_mesh_form(mesh)
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
        # a plan on an abstract mesh is read, not run: Auto axes, as before Explicit meshes
        # (tests/api/test_abstract_mesh.py pins it)
        if any(t != AxisType.Auto for t in mesh.axis_types):
            mesh = AbstractMesh(
                mesh.axis_sizes, mesh.axis_names, axis_types=(AxisType.Auto,) * len(mesh.axis_names)
            )
        return mesh
    if not isinstance(mesh, Mesh):
        raise MeshError(f"expected a jax.sharding.Mesh, got {type(mesh).__name__}")
    names = list(mesh.axis_names)
    _check_axis_names(names)
    if not _keeps_axis_types(mesh):
        mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * len(names))
    return mesh


def _keeps_axis_types(mesh: Mesh | AbstractMesh) -> bool:
    """Whether partir plans on `mesh`'s own axis types: all Auto (XLA's propagation fills in
    what the plan leaves open) or all Explicit (layouts in the types, `jax.make_mesh`'s
    default). A mix, or Manual axes, is made all Auto."""
    types = set(mesh.axis_types)
    return types <= {AxisType.Auto} or types == {AxisType.Explicit}


MSG_MESH_SHAPE = (
    "partir.partition(mesh={mesh!r}): a mesh needs axis names, and {what}. Name each axis "
    "with its size: mesh={example}, or pass mesh=jax.make_mesh({shape}, {names})."
)


def check_mesh_form(mesh: Any) -> None:
    """Reject a mesh written as bare sizes (``mesh=(4, 2)``) or a string, saying how to
    write it; a mapping or a sequence of (name, size) pairs passes."""
    if isinstance(mesh, Mapping) or mesh is None or isinstance(mesh, Mesh | AbstractMesh):
        return
    if isinstance(mesh, str) or not isinstance(mesh, Sequence):
        raise MeshError(
            f"partir.partition(mesh={mesh!r}): expected a jax.sharding.Mesh, a mapping of "
            "axis name to size ({'batch': 4, 'model': 2}), a sequence of (name, size) "
            f"pairs, or None; got {type(mesh).__name__}."
        )
    if all(isinstance(x, int) and not isinstance(x, bool) for x in mesh):
        shape = tuple(mesh)
        default = ("batch", "model", "seq", "expert")
        names = tuple(default[i] if i < len(default) else f"axis{i}" for i in range(len(shape)))
        raise MeshError(
            MSG_MESH_SHAPE.format(
                mesh=mesh,
                what=f"{shape} gives only sizes",
                example=dict(zip(names, shape, strict=True)),
                shape=shape,
                names=names,
            )
        )
    for i, entry in enumerate(mesh):
        if not (isinstance(entry, Sequence) and not isinstance(entry, str) and len(entry) == 2):
            raise MeshError(
                f"partir.partition(mesh={mesh!r}): entry {i} is {entry!r}; each entry of a "
                "sequence mesh must be a (name, size) pair, e.g. [('batch', 4), ('model', 2)]."
            )


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
        hardware: Any = None,
        arg_spec: ArgSpec | None = None,
        strict: bool = False,
    ):
        self.fn = fn
        self.strict = strict
        """Raise `ShardingConflictError` on a clash between tactics (`partition`)."""
        self.schedule = schedule
        self._mesh = mesh
        self.mode = mode
        self.hardware = hardware
        """The simulator profile automatic tactics judge candidates on (None: the profile of
        the mesh's devices, `judge_hardware`)."""
        self.arg_spec = arg_spec or ArgSpec()
        """Static and donated arguments, with `jax.jit`'s meaning."""
        self._plans: dict[Any, Plan] = {}
        # A given mesh resolves to the same Mesh every time: resolve it once, not per call.
        # None means "the mesh of jax.set_mesh", which can change between calls.
        self._resolved: Mesh | AbstractMesh | None = None
        functools.update_wrapper(self, fn)

    @property
    def _name(self) -> str:
        return getattr(self.fn, "__name__", "function")

    def _current_mesh(self) -> Mesh | AbstractMesh:
        if self._mesh is None:
            return resolve_mesh(None)
        if self._resolved is None:
            self._resolved = resolve_mesh(self._mesh)
        return self._resolved

    def plan(self, *args: Any, **kwargs: Any) -> Plan:
        """Plan the partitioning for these inputs; runs nothing.

        Args:
          *args, **kwargs: the function's arguments: arrays, `jax.ShapeDtypeStruct`s or
            tracers (only shapes and dtypes are read), and the static arguments' values.

        Returns:
          The `Plan`, cached per input signature, static values and mesh.
        """
        dyn_args, dyn_kwargs, static_key = self.arg_spec.split(self._name, args, kwargs)
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        return self._plan_for(dyn_args, dyn_kwargs, static_key, leaves, tree)

    def _plan_for(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        static_key: tuple[Any, ...],
        leaves: list[Any],
        tree: Any,
    ) -> Plan:
        signature = (tree, tuple(_leaf_signature(x) for x in leaves))
        mesh = self._current_mesh()
        key = (signature, static_key, mesh)
        plan = self._plans.get(key)
        if plan is None:
            with gc_paused():
                plan = self._make_plan(args, kwargs, static_key, leaves, signature, mesh)
            if self.strict:
                raise_on_clash(plan)
            # every process of a multi-process mesh must run this same plan
            check_agreement(plan)
            self._plans[key] = plan
        return plan

    def _make_plan(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        static_key: tuple[Any, ...],
        leaves: list[Any],
        signature: Any,
        mesh: Mesh | AbstractMesh,
    ) -> Plan:
        # Under jax.jit / jax.grad / lax.scan the leaves are tracers of the enclosing
        # transform; planning reads only shapes and dtypes, so trace on those.
        args, kwargs = jax.tree_util.tree_map(_abstract_if_traced, (args, kwargs))
        bound = self.arg_spec.bind(self.fn, static_key)
        program = trace_cached(self.fn, (signature, static_key), bound, *args, **kwargs)
        mesh_attr = ir.MeshAttr(tuple((str(n), int(s)) for n, s in mesh.shape.items()))
        propagator = Propagator(program.module, mesh_attr)
        user_constraints.apply(propagator)  # the user's own constraints: seeds before the schedule
        non_array = {i: type(x).__name__ for i, x in enumerate(leaves) if not hasattr(x, "shape")}
        outputs = list(program.function.body.block.last_op.operands)  # type: ignore[union-attr]
        ctx = TacticContext(
            propagator, program.input_paths, list(program.function.args), non_array, program.name,
            program.output_paths, outputs, judge_hardware(self.hardware, mesh, self.schedule),
        )  # fmt: skip
        if any(getattr(t, "reads_metadata", False) for t in self.schedule):
            # a LogicalPartition with no names given reads them from the arguments' own
            # metadata (Flax NNX `sharding`, Linen `LogicallyPartitioned`)
            ctx.logical_axes = input_logical_axes(_arguments_by_name(bound, args, kwargs))
        records = [tactic.apply(ctx, i) for i, tactic in enumerate(self.schedule)]
        donated = self.arg_spec.donated_leaves(args, kwargs)
        return Plan(
            program, mesh, self.schedule, propagator, records, self.mode, signature,
            self.arg_spec, static_key, donated,
        )  # fmt: skip

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Plan (once per input signature and static values), compile (once per plan) and
        run. Inside `jax.jit`, `jax.grad` or `lax.scan` it applies the plan to the traced
        values: the emitted program is itself a `jax.jit` function, which those transforms
        trace through."""
        dyn_args, dyn_kwargs, static_key = self.arg_spec.split(self._name, args, kwargs)
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        plan = self._plan_for(dyn_args, dyn_kwargs, static_key, leaves, tree)
        return plan.run_leaves(leaves)

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The `jax.stages.Lowered` of the partitioned function for these inputs."""
        return self.plan(*args, **kwargs).lower(*args, **kwargs)


def judge_hardware(hardware: Any, mesh: Mesh | AbstractMesh, schedule: Sequence[Any]) -> Any:
    """The profile automatic tactics judge on: `hardware` if given, else the profile of the
    mesh's devices (``device_kind``: a TPU v5p mesh is judged on ``tpu-v5p``, a CPU mesh
    on ``cpu``).

    Raises:
      TacticError: an automatic tactic with no profile of its own would have to judge on a
        mesh with no devices (an `AbstractMesh`) or of a kind partir has no profile for.
    """
    if hardware is not None:
        return hardware
    if isinstance(mesh, Mesh):
        kind = str(mesh.devices.flat[0].device_kind)
        name = profile_for_device_kind(kind)
        if name is not None:
            return name
        what = f"its devices are {kind!r}, which partir has no profile for"
    else:
        what = f"the mesh {dict(mesh.shape)} is abstract: it has no devices to read"
    judged = [t for t in schedule if isinstance(t, AutomaticPartition) and t.hardware is None]
    if not judged:
        return "cpu"  # nothing judges candidates: the profile is never read
    raise TacticError(
        f"{judged[0]!r} needs a hardware profile to judge its candidates on, and {what}. "
        f"Pass partir.partition(..., hardware=NAME) or AutomaticPartition(..., "
        f"hardware=NAME) with one of: {', '.join([*PROFILES, 'cpu'])}."
    )


def _arguments_by_name(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Argument name -> value, named as input paths name them (``args/<i>`` past the
    signature's positional parameters)."""
    try:
        names = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        names = []
    out = {names[i] if i < len(names) else f"args/{i}": a for i, a in enumerate(args)}
    out.update(kwargs)
    return out


def _abstract_if_traced(x: Any) -> Any:
    if isinstance(x, jax.Array) and not is_concrete(x):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=jax.typeof(x).weak_type)
    return x


def partition(
    schedule: Any,
    *,
    mesh: Any = None,
    mode: str = "annotate",
    hardware: Any = None,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Sequence[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Sequence[str] | None = None,
    strict: bool = False,
) -> Callable[[Callable[..., Any]], Partitioned]:
    """Partition a JAX function with a schedule of tactics.

    Args:
      schedule: tactics applied in order, each deciding shardings on one mesh axis;
        earlier tactics win, disagreements become `plan.conflicts`.
      mesh: a `jax.sharding.Mesh`, a mapping of axis name to size, or None to use the
        mesh set by `jax.set_mesh`. A mesh of Explicit axes (plain `jax.make_mesh`) stays
        Explicit: annotate mode emits code its sharding-in-types checks, and outputs are
        typed with the planned layouts; Auto axes stay Auto; a mix is made Auto.
      mode: ``"annotate"``: `jax.jit` with the plan's shardings; on Auto axes a
        `with_sharding_constraint` on every value the plan decided (XLA's partitioner
        inserts the collectives), on Explicit axes each op bound with its planned layout,
        pending sums as ``unreduced`` axes and `reshard` where the plan has a collective.
        ``"spmd"``: a `jax.shard_map` program running the device-local IR op by op, with
        exactly the planned collectives (`plan.collectives()`).
      hardware: the simulator profile (a name such as ``"tpu-v5p"`` or ``"h100"``, or a
        `partir.simulator.Hardware`) that `AutomaticPartition` tactics judge candidates
        on when they do not name their own. None: the profile of the mesh's devices
        (``cpu`` on a CPU mesh); an `AbstractMesh` has none, so an automatic tactic on one
        needs a profile named here or on the tactic.
      static_argnums, static_argnames: arguments (by position or name) that are Python
        values, not arrays, as in `jax.jit`: they are not traced, must be hashable, and
        each distinct value gets its own plan and compilation.
      donate_argnums, donate_argnames: arguments whose buffers the program may reuse for
        its outputs, as in `jax.jit` (a donated array is deleted by the call). A training
        step donating params and optimizer state holds one copy of them, not two.
      strict: raise `partir.errors.ShardingConflictError` when planning meets a *clash*
        (two tactics, or a tactic and a pin, asking for different layouts of one value;
        `partir.plan.conflict_kind`) instead of recording it in `plan.conflicts`. Expected
        resharding (ZeRO's parameter gathers) is never an error.

    Returns:
      A decorator; the decorated function is called like a `jax.jit` function and has
      `.plan(*args)` to inspect the partitioning without running it.
    """
    tactics = _check_schedule(schedule)
    if mode not in MODES:
        raise PartIRError(f"partir.partition(mode={mode!r}): available modes are {MODES}.")
    if hardware is not None:
        get_hardware(hardware)  # an unknown profile fails here, not at the first plan
    check_mesh_form(mesh)  # and a mesh written as bare sizes here, not at the first call

    def decorate(fn: Callable[..., Any]) -> Partitioned:
        spec = ArgSpec.build(fn, static_argnums, static_argnames, donate_argnums, donate_argnames)
        return Partitioned(fn, tactics, mesh, mode, hardware, spec, strict)

    return decorate
