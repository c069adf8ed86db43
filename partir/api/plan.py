"""`Plan`: the result of applying a schedule to a traced program."""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, overload

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding
from xdsl.ir import BlockArgument, OpResult, SSAValue

from partir import ir
from partir.api import multihost as _multihost
from partir.api.call import ArgSpec, place_leaf
from partir.api.pipeline_report import pipelined_report
from partir.backend.annotate import emit_annotated, named_sharding
from partir.backend.spmd import emit_spmd
from partir.display.notebook import plan_html
from partir.display.terminal import Text, describe_text, ir_text, sharding_grid_text, summary_text
from partir.errors import InputMismatchError, MeshError, SelectorError
from partir.frontend import constraints as user_constraints
from partir.passes.lower_to_spmd import Lowered, lower_to_spmd
from partir.passes.optimize_collectives import optimize_collectives
from partir.passes.propagate import Conflict, Propagator, location_of
from partir.plan.check import CompiledCheck, check_compiled
from partir.plan.collectives import CollectiveTable, collective_table
from partir.plan.conflict_kind import conflict_kind
from partir.plan.history import History, history, remember_hardware
from partir.plan.program import Program
from partir.simulator import Report, simulate
from partir.tactics import FoundSchedule, TacticRecord, found_schedule, select
from partir.utils.gc import gc_paused


def describe_value(plan_paths: dict[SSAValue, str], value: SSAValue) -> str:
    """A person's name for a value: its pytree path, or the op that makes it."""
    if value in plan_paths:
        return plan_paths[value]
    if isinstance(value, OpResult):
        op = value.op
        name = getattr(op, "primitive_name", op.name)
        suffix = f"#{value.index}" if len(op.results) > 1 else ""
        return f"{name}{suffix} at {location_of(op)}"
    if isinstance(value, BlockArgument):
        return f"region argument {value.index} of {value.block.parent_op().name}"  # type: ignore[union-attr]
    return "value"


@dataclass
class ConflictReport:
    """A `Conflict` in the user's terms: which tactics disagreed, where, about what."""

    conflict: Conflict
    tactics: tuple[Any, ...]
    """The tactics involved, in schedule order."""
    claims: list[str]
    """One line per competing claim."""
    kind: str = "clash"
    """``"clash"`` or ``"expected"`` resharding: the rule is in `partir.plan.conflict_kind`."""

    @property
    def axis(self) -> str:
        """The contested mesh axis."""
        return self.conflict.axis

    @property
    def location(self) -> str:
        """The user's source line."""
        return self.conflict.location

    @property
    def tactic_indices(self) -> tuple[int, ...]:
        """Schedule positions of the tactics involved."""
        return self.conflict.tactics

    def __str__(self) -> str:
        op = self.conflict.op
        where = (
            f"{getattr(op, 'primitive_name', op.name)} at {self.location}"
            if op is not None
            else f"an input, first used at {self.location}"
        )
        title = "clash" if self.kind == "clash" else "expected resharding"
        lines = [f"{title} on axis {self.axis!r} at {where}:", *(f"  - {c}" for c in self.claims)]
        lines.append(
            "  nothing propagates through it on this axis; communication resolves it "
            "(the collectives of plan.collectives() in spmd mode, XLA's partitioner in "
            "annotate mode)"
        )
        if self.kind == "clash":
            lines.append("  a clash: partir.partition(..., strict=True) raises on it")
        return "\n".join(lines)


class Plan:
    """A program partitioned by a schedule: shardings, conflicts, provenance, and the
    jitted function that runs it on the mesh."""

    def __init__(
        self,
        program: Program,
        mesh: Mesh | AbstractMesh,
        schedule: Sequence[Any],
        propagator: Propagator,
        records: list[TacticRecord],
        mode: str,
        input_signature: tuple[Any, ...],
        arg_spec: ArgSpec | None = None,
        static_key: tuple[Any, ...] = (),
        donated: tuple[int, ...] = (),
    ):
        self.program = program
        self.mesh = mesh
        self.schedule = tuple(schedule)
        self.propagator = propagator
        self.records = records
        self.mode = mode
        self.input_signature = input_signature
        """(treedef, per-leaf (shape, dtype)) of the traced arguments (static ones removed)."""
        self.arg_spec = arg_spec or ArgSpec()
        """The static and donated arguments of `partir.partition`."""
        self.static_key = static_key
        """The static argument values this plan was made for."""
        self.donated = donated
        """Flat input leaf indices whose buffers the program may reuse (donation)."""
        fn = program.function
        self._inputs = list(fn.args)
        self._outputs = list(fn.body.block.last_op.operands)  # type: ignore[union-attr]
        self._paths: dict[SSAValue, str] = dict(zip(self._inputs, program.input_paths, strict=True))
        for v, p in zip(self._outputs, program.output_paths, strict=True):
            self._paths.setdefault(v, p)

    # -- shardings ---------------------------------------------------------------------

    @overload
    def sharding_of(self, value: str) -> NamedSharding: ...
    @overload
    def sharding_of(self, value: SSAValue) -> ir.Sharding: ...
    def sharding_of(self, value: str | SSAValue) -> NamedSharding | ir.Sharding:
        """The planned sharding of an input or output leaf, or of an IR value.

        Args:
          value: a leaf's path (``"params/blocks/0/mlp/w_in"``, ``"out/2"``): gives the
            `NamedSharding` it is placed with, as in `in_shardings`/`out_shardings`; or an
            IR value of `program`: gives its `partir.ir.Sharding` (partial axes included).

        Raises:
          SelectorError: no input or output has the path; the message lists near ones.
        """
        if not isinstance(value, str):
            return self.propagator.sharding(value)
        paths = self.program.input_paths + self.program.output_paths
        flat = self._flat_in + self._flat_out
        for path, sharding in zip(paths, flat, strict=True):
            if path == value:
                return sharding
        near = difflib.get_close_matches(value, paths, n=5, cutoff=0.5) or paths[:5]
        raise SelectorError(
            f"plan.sharding_of({value!r}): no input or output leaf has that path. "
            f"Near paths: {', '.join(near)}. Inputs start with the argument names "
            f"({', '.join(sorted({p.split('/')[0] for p in self.program.input_paths}))}), "
            "outputs with 'out'; plan.program.input_paths lists them all."
        )

    @functools.cached_property
    def _flat_in(self) -> list[NamedSharding]:
        return [named_sharding(self.mesh, self._decided(v)) for v in self._inputs]

    @functools.cached_property
    def _flat_out(self) -> list[NamedSharding]:
        return [named_sharding(self.mesh, self._decided(v)) for v in self._outputs]

    def _decided(self, value: SSAValue) -> ir.Sharding | None:
        return self.propagator.sharding(value) if self.propagator.is_decided(value) else None

    @property
    def in_shardings(self) -> tuple[Any, ...]:
        """Per positional argument, a pytree of `NamedSharding` (as `jax.jit`'s in_shardings)."""
        return jax.tree_util.tree_unflatten(self.program.in_tree, self._flat_in)[0]

    @property
    def kwarg_shardings(self) -> dict[str, Any]:
        """Per keyword argument, a pytree of `NamedSharding`."""
        return jax.tree_util.tree_unflatten(self.program.in_tree, self._flat_in)[1]

    @property
    def out_shardings(self) -> Any:
        """Pytree of `NamedSharding` matching the function's outputs."""
        return jax.tree_util.tree_unflatten(self.program.out_tree, self._flat_out)

    # -- diagnostics ---------------------------------------------------------------------

    @functools.cached_property
    def conflicts(self) -> list[ConflictReport]:
        """Where tactics disagreed: op, axis, the competing shardings, tactics, source
        line, and the `kind`: a ``"clash"`` or ``"expected"`` resharding."""
        reports = []
        for c in self.propagator.conflicts:
            claims = [
                f"{describe_value(self._paths, v)}: {what}, from {self._tactic_name(t)}"
                for v, what, t in c.claims
            ]
            tactics = tuple(self.schedule[t] for t in c.tactics if 0 <= t < len(self.schedule))
            kind = conflict_kind(self.propagator, c, len(self.schedule))
            reports.append(ConflictReport(c, tactics, claims, kind))
        return reports

    def _tactic_name(self, index: int) -> str:
        if not 0 <= index < len(self.schedule):
            return user_constraints.tactic_name(self.program.module, index) or "propagation"
        return f"tactic #{index} {self.schedule[index]!r}"

    def explain(self, selector_or_path: str) -> str:
        """Which tactic decided each axis of the named inputs/outputs, through which ops.

        Args:
          selector_or_path: an input selector (``params/blocks/0/mlp/w_in``), an output
            path (``out/0/blocks/0/mlp/w_in``), or ``name:<name>`` for every value named
            ``<name>`` by `jax.ad_checkpoint.checkpoint_name`.
        """
        if selector_or_path.startswith("name:"):  # a value named by checkpoint_name
            from partir.tactics.manual import named_values, value_names

            name = selector_or_path[len("name:") :]
            found = named_values(self.propagator.module, name)
            if not found:
                raise SelectorError(
                    f"plan.explain({selector_or_path!r}): no value is named {name!r} by "
                    f"checkpoint_name; the names used are {value_names(self.propagator.module)}."
                )
            return "\n".join(
                self._explain_value(f"{selector_or_path}" + (f"#{k}" if len(found) > 1 else ""), v)
                for k, v in enumerate(found)
            )
        paths = self.program.input_paths + self.program.output_paths
        values = self._inputs + self._outputs
        hits = select(selector_or_path, paths)
        if not hits:
            raise SelectorError(
                f"plan.explain({selector_or_path!r}): no input or output has that path. "
                f"Inputs start with {sorted({p.split('/')[0] for p in self.program.input_paths})}, outputs with 'out'."
            )
        return "\n".join(self._explain_value(paths[i], values[i]) for i in hits)

    def _explain_value(self, path: str, value: SSAValue) -> str:
        sharding = self.sharding_of(value)
        shape = ir.shape_of(value.type)
        lines = [
            f"{path}: {ir.dtypes.short_name(ir.dtype_of(value.type))}{list(shape)} sharded {named_sharding(self.mesh, sharding).spec}"
            + (f", partial over {sharding.partial}" if sharding.partial else "")
        ]
        axes = [a for d in sharding.dims for a in d] + list(sharding.partial)
        pinned = sorted(a for (v, a) in self.propagator.pinned if v is value)  # pins are few
        if not axes and not pinned:
            lines.append("  no tactic decided it: replicated")
        for axis in axes:
            origin = self.propagator.origin.get((value, axis))
            chain = self.propagator.chain(value, axis)
            tactic = self._tactic_name(origin.tactic) if origin else "unknown"
            dim = self.propagator.dim_of(value, axis)
            what = f"dim {dim}" if dim is not None else "partial (pending sum)"
            if len(chain) <= 1:
                lines.append(f"  axis {axis!r} on {what}: seeded by {tactic}")
                continue
            seed = chain[0][1]
            lines.append(
                f"  axis {axis!r} on {what}: decided by {tactic}, propagated from {describe_value(self._paths, seed)} through:"
            )
            for op, v in chain[1:]:
                name = getattr(op, "primitive_name", op.name if op else "?")
                target = self._paths.get(v) or _type_text(v)
                lines.append(f"    {name:<20} {location_of(op):<44} -> {target}")
        for axis in pinned:
            origin = self.propagator.origin.get((value, axis))
            lines.append(
                f"  axis {axis!r}: pinned replicated by {self._tactic_name(origin.tactic if origin else -1)}"
            )
        return "\n".join(lines)

    # -- text ----------------------------------------------------------------------------

    def __repr__(self) -> str:
        # one terminal line: what was planned, and counts already known (repr never lowers)
        mesh = ", ".join(f"{k}={v}" for k, v in self.mesh.shape.items())
        parts = [
            f"{self.program.name}",
            f"mesh {mesh}",
            f"mode={self.mode}",
            f"{len(self.schedule)} tactic{'s' if len(self.schedule) != 1 else ''}",
            f"{len(self.program.input_paths)} inputs",
            f"{len(self.conflicts)} conflicts"
            f" ({sum(c.kind == 'clash' for c in self.conflicts)} clashes)",
        ]
        if "lowered" in self.__dict__:
            parts.append(f"{len(self.collectives())} collectives")
        return f"<partir.Plan {'; '.join(parts)}>"

    def __str__(self) -> str:
        """The plan in a screen (`describe`): the schedule, per argument its shardings
        grouped by pattern, the collectives per kind. `ir()` is the full IR."""
        return describe_text(self)

    def ir(self) -> str:
        """The program's IR with every decided sharding written in, under a comment with
        the mesh and schedule: what `partir opt -p partir-propagate` reads back."""
        return ir_text(self)

    def fingerprint(self) -> str:
        """A stable hash (sha256 hex) of what the plan runs: the IR with its shardings
        (source locations left out), the input and output shardings, the mesh axes and
        device ids, the mode, the schedule's repr, the tactics `AutomaticPartition`
        found, and in spmd mode the device-local program.

        Equal on every process of a `jax.distributed` job that made the same plan, and
        across interpreters whatever their hash seed; partitioning compares it across
        processes by itself when the mesh spans several (docs/multihost.md).
        """
        return _multihost.fingerprint(self)

    @property
    def tactics_found(self) -> FoundSchedule:
        """The schedule with each `AutomaticPartition` replaced by the `ManualPartition`
        tactics it found: partitioning with it instead gives this same plan. ``print`` it
        for code to paste."""
        return found_schedule(self.schedule, self.records)

    def summary(self) -> Text:
        """Per tactic its seeds and conflicts; per argument its shardings, layers grouped."""
        return Text(summary_text(self))

    def show_sharding(self, path: str) -> Text:
        """One input's or output's tiles as a text grid: element ranges and devices."""
        return Text(sharding_grid_text(self, path))

    def describe(self, full: bool = False) -> Text:
        """The plan in a screen: `summary` and the collectives per kind (`str(plan)`); with
        `full`, the IR with every sharding (`plan.ir()`)."""
        return Text(describe_text(self, full))

    # -- execution -----------------------------------------------------------------------

    @functools.cached_property
    def lowered(self) -> Lowered:
        """The device-local program: local shapes and explicit `spmd` collectives."""
        ins = [ir.Sharding(self.propagator.sharding(v).dims) for v in self._inputs]
        outs = [ir.Sharding(self.propagator.sharding(v).dims) for v in self._outputs]
        with gc_paused():
            lowered = lower_to_spmd(self.propagator, ins, outs)
            optimize_collectives(lowered.module)
        return lowered

    def collectives(self) -> CollectiveTable:
        """Every collective of the device-local program: kind, axes, bytes, source line."""
        return collective_table(
            self.lowered.module, self.mesh, (self.program.input_paths, self.program.output_paths)
        )

    def simulate(self, hardware: Any = "cpu", **options: Any) -> Report:
        """Predict per-device step time and memory of the planned program on `hardware`
        (with a `PipelinePartition`, of the pipelined step: `partir.api.pipeline_report`).

        Args:
          hardware: a profile name (``"tpu-v5p"``, ``"h100"``, ``"cpu"``, ...) or a
            `partir.simulator.Hardware`.
          **options: passed to `partir.simulator.simulate` (``topology``, ``donate``);
            ``devices_per_host=n`` puts the innermost axes that fit in n devices on one
            host and the others across hosts (a what-if). On a mesh spanning
            `jax.distributed` processes, the axes that cross processes are on the
            cross-host link by default.
        """
        remember_hardware(self, hardware, options)
        report = simulate(
            self.lowered.module, hardware, **_multihost.simulate_options(self, hardware, options)
        )
        return pipelined_report(self, report)

    @property
    def history(self) -> History:
        """Per tactic: what it sharded, the collectives it added or removed, its conflicts,
        and its simulated change in step time and peak memory (`partir.plan.history.History`).

        Simulated on the hardware of the last `simulate` call (``"cpu"`` before any);
        `history_for` names another. Computed once per plan and hardware.
        """
        return history(self)

    def history_for(self, hardware: Any, **options: Any) -> History:
        """`history`, simulated on `hardware` (a profile name or `Hardware`) with `options`."""
        return history(self, hardware, **options)

    def _repr_html_(self) -> str:
        return plan_html(self)

    def check_compiled(self) -> CompiledCheck:
        """Compile what calling the plan runs and compare XLA's collectives with the plan's.

        Returns a `partir.plan.check.CompiledCheck`: per (kind, axes), planned vs compiled
        counts and bytes, and what matched, what XLA added and what is missing.
        """
        self._require_devices("check_compiled()")
        return check_compiled(self)

    @property
    def is_abstract(self) -> bool:
        """Whether the plan is on an `AbstractMesh` (planned from shapes, not runnable here)."""
        return isinstance(self.mesh, AbstractMesh)

    def _require_devices(self, what: str) -> None:
        if self.is_abstract:
            raise MeshError(
                f"{what} needs devices, but this plan is on the abstract mesh "
                f"{dict(self.mesh.shape)} ({self.mesh.size} devices; this machine has "
                f"{len(jax.devices())}). Inspect it (print, collectives(), simulate(), explain) "
                "or plan again on a mesh of real devices to run it."
            )

    @functools.cached_property
    def jitted(self) -> Any:
        """The jitted function on flat input leaves, with the plan's shardings."""
        self._require_devices("running the plan")
        mesh = self.mesh
        assert isinstance(mesh, Mesh)
        if self.mode == "spmd":
            low = self.lowered
            return emit_spmd(low.module, mesh, low.in_layouts, low.out_layouts, self.donated)
        decided = {}
        for value in self.propagator.dims.keys() | self.propagator.partial.keys():
            decided[value] = self.propagator.sharding(value)
        for value, _ in self.propagator.pinned:
            decided.setdefault(value, self.propagator.sharding(value))
        needs = self.propagator.operand_requirements()
        return emit_annotated(
            self.program.module, mesh, decided, self._flat_in, self._flat_out, needs, self.donated
        )

    def _flatten_checked(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        args, kwargs, static_key = self.arg_spec.split(self.program.name, args, kwargs)
        if static_key != self.static_key:
            raise InputMismatchError(
                f"the partitioned {self.program.name} was planned for the static arguments "
                f"{_static_text(self.static_key)} but called with {_static_text(static_key)}. "
                "Call the decorated function instead: it plans once per static value."
            )
        leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
        signature = (tree, tuple(_leaf_signature(x) for x in leaves))
        if signature != self.input_signature:
            raise InputMismatchError(_mismatch_message(self, signature))
        return leaves

    def _placed(self, leaves: list[Any]) -> list[Any]:
        what = f"the partitioned {self.program.name}"
        return [
            place_leaf(x, s, path, what)
            for x, s, path in zip(leaves, self._flat_in, self.program.input_paths, strict=True)
        ]

    def run_leaves(self, leaves: list[Any]) -> Any:
        """Run on flat input leaves already checked against `input_signature`; returns
        the output pytree. Host data and arrays laid out otherwise are moved to
        `in_shardings` first; tracers (the call is inside `jax.jit`, `jax.grad`,
        `lax.scan`) go straight to the jitted program, whose shardings constrain them."""
        self._require_devices("running the plan")
        outs = self.jitted(*self._placed(leaves))
        return jax.tree_util.tree_unflatten(self.program.out_tree, outs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the partitioned function (inputs must match the planned shapes and static
        values). Works on arrays and on tracers, so a plan composes with `jax.jit`,
        `jax.grad` and `lax.scan` as a jitted function does."""
        self._require_devices("running the plan")
        return self.run_leaves(self._flatten_checked(args, kwargs))

    def place(self, *args: Any, **kwargs: Any) -> Any:
        """The arguments, each array leaf `device_put` on the sharding the plan wants.

        Use it before a training loop: host (numpy) or single-device data is laid out
        once, and the first step neither copies nor compiles for other input layouts.
        Static arguments and Python scalars come back unchanged.

        Args:
          *args, **kwargs: the arguments as the partitioned function takes them.

        Returns:
          The positional arguments as a tuple (one pytree per argument), or
          ``(args, kwargs)`` when keyword arguments were given.
        """
        self._require_devices("plan.place()")
        leaves = self._placed(self._flatten_checked(args, kwargs))
        placed_args, placed_kwargs = jax.tree_util.tree_unflatten(self.program.in_tree, leaves)
        out_args = iter(placed_args)
        full_args = tuple(
            a if i in self.arg_spec.static_argnums else next(out_args) for i, a in enumerate(args)
        )
        if not kwargs:
            return full_args
        full_kwargs = {k: placed_kwargs.get(k, v) for k, v in kwargs.items()}
        return full_args, full_kwargs

    def shard_batch(self, *args: Any, **kwargs: Any) -> Any:
        """The global input arrays, built from this process's local data.

        In a `jax.distributed` job each process loads only its part of the batch. Pass
        the arguments as the partitioned function takes them, each array leaf being
        either this process's part of the planned global value (the rows its devices
        hold under `in_shardings`: half the batch on each of 2 processes under batch
        parallelism) or the whole global value, the same on every process (parameters
        initialised from one seed). On one process this is `place`.

        Args:
          *args, **kwargs: the arguments with process-local array leaves.

        Returns:
          As `place`: the positional arguments as a tuple of global `jax.Array` pytrees,
          or ``(args, kwargs)`` when keyword arguments were given.

        Raises:
          LocalShapeError: a leaf fits neither its local part nor the global shape; the
            message names its path, both shapes and the process count.
        """
        self._require_devices("plan.shard_batch()")
        dyn_args, dyn_kwargs, _ = self.arg_spec.split(self.program.name, args, kwargs)
        leaves, tree = jax.tree_util.tree_flatten((dyn_args, dyn_kwargs))
        if tree != self.input_signature[0]:
            raise InputMismatchError(_mismatch_message(self, (tree, ())))
        global_args, global_kwargs = jax.tree_util.tree_unflatten(
            tree, _multihost.shard_batch(self, leaves)
        )
        it = iter(global_args)
        static = self.arg_spec.static_argnums
        full_args = tuple(a if i in static else next(it) for i, a in enumerate(args))
        full_kwargs = {k: global_kwargs.get(k, v) for k, v in kwargs.items()}
        return self.place(*full_args, **full_kwargs)  # checks the shapes; moves nothing

    def lower(self, *args: Any, **kwargs: Any) -> jax.stages.Lowered:
        """The `jax.stages.Lowered` of what calling the plan runs (planned inputs by default)."""
        if not args and not kwargs:
            leaves: list[Any] = [
                jax.ShapeDtypeStruct(s, d, sharding=sh)
                for (s, d), sh in zip(self.input_signature[1], self._flat_in, strict=True)
            ]
        else:
            leaves = self._flatten_checked(args, kwargs)
        with gc_paused():
            return self.jitted.lower(*leaves)


def _type_text(value: SSAValue) -> str:
    return f"{ir.dtypes.short_name(ir.dtype_of(value.type))}{list(ir.shape_of(value.type))}"


def _leaf_signature(x: Any) -> tuple[tuple[int, ...], Any]:
    dtype = getattr(x, "dtype", None)
    if isinstance(dtype, np.dtype):  # the per-call fast path: arrays, tracers, numpy data
        return tuple(x.shape), dtype
    shape = tuple(getattr(x, "shape", ()))
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = jax.numpy.asarray(x).dtype
    if jax.dtypes.issubdtype(dtype, jax.dtypes.extended):  # a PRNG key has no numpy dtype
        return shape, dtype
    return shape, jax.numpy.dtype(dtype)


def _mismatch_message(plan: Plan, signature: tuple[Any, Any]) -> str:
    tree, leaves = signature
    if tree != plan.input_signature[0]:
        return (
            f"the partitioned {plan.program.name} was planned for arguments of structure "
            f"{plan.input_signature[0]} but called with {tree}. Call it with the planned structure, "
            "or make a new plan."
        )
    lines = [f"the partitioned {plan.program.name} was planned for other input shapes:"]
    for path, got, want in zip(
        plan.program.input_paths, leaves, plan.input_signature[1], strict=True
    ):
        if got != want:
            lines.append(f"  - {path}: planned {_sig_text(want)}, called with {_sig_text(got)}")
    lines.append(
        "Call it with the planned shapes, or plan again for the new ones (calling the "
        "decorated function does that)."
    )
    return "\n".join(lines)


def _static_text(key: tuple[Any, ...]) -> str:
    if not key:
        return "(none)"
    return ", ".join(
        f"{'argument ' + str(where) if kind == 'arg' else where}={value!r}"
        for kind, where, value in key
    )


def _sig_text(sig: tuple[tuple[int, ...], Any]) -> str:
    shape, dtype = sig
    return f"{dtype}{list(shape)}"
