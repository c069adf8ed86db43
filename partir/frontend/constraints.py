"""The user's own sharding code as seeds of the plan.

A `jax.lax.with_sharding_constraint` or `jax.sharding.reshard` in the traced function
becomes one identity ``sharding_constraint`` op (`partir.frontend.jaxpr`) whose plain
parameters say what the user asked for: per dimension the mesh axes tiling it (``spec``)
and the mesh they belong to (``mesh``). Before the schedule runs, `apply` seeds each
constrained value with that layout on the partitioning mesh and propagates it, as XLA
propagates a constraint in plain `jax.jit`. A tactic that later disagrees meets a value
that is already decided: a recorded conflict whose claim names the user's source line,
never a second, silent re-layout.

What a constraint means, as in JAX: its sharding is complete. A dimension written
``None`` is replicated, and so is every axis of the user's mesh that the spec does not
name: those axes are pinned (kept replicated) on the constrained value. A dimension
written `PartitionSpec.UNCONSTRAINED` leaves the choice to the plan, so a spec with one
pins nothing. Axes of the partitioning mesh that the user's mesh does not have (after
mapping) are left to the schedule.

A `jax.shard_map` region (one ``shard_map`` op, its body kept whole) is seeded the same
way: its ``in_specs`` on its operands and its ``out_specs`` on its results, with the
region's manual axes a spec does not name pinned.

Axes are matched onto the partitioning mesh by name, else by size when exactly one
partitioning axis not already matched has that size; an axis with no match, or one
whose devices do not divide the dimension, is dropped with a warning naming the line.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import SSAValue

from partir import ir
from partir.ir.locations import location_of

FIRST_USER_TACTIC = -2
"""Origins of user constraints use tactic indices ``-2, -3, ...`` (constraint 0, 1, ...):
below every schedule position and below ``-1``, which means "no tactic"."""


def user_tactic(index: int) -> int:
    """The origin tactic index of user constraint `index` (program order)."""
    return FIRST_USER_TACTIC - index


def constraint_index(tactic: int) -> int | None:
    """The user constraint an origin tactic index stands for, or None for a schedule entry."""
    return FIRST_USER_TACTIC - tactic if tactic <= FIRST_USER_TACTIC else None


USER_OPS = frozenset({"sharding_constraint", "shard_map"})
"""The ops the frontend makes of the user's sharding code."""


def constraint_ops(module: ModuleOp) -> list[ir.PrimOp]:
    """The program's user constraints (region bodies included), in program order."""
    return [
        op for op in module.walk() if isinstance(op, ir.PrimOp) and op.primitive_name in USER_OPS
    ]


def describe(op: ir.PrimOp) -> str:
    """``user constraint at file:line (fn)`` (``user reshard at ...`` for a `reshard`,
    ``user shard_map at ...`` for a region)."""
    if op.primitive_name == "shard_map":
        return f"user shard_map at {location_of(op)}"
    kind = "reshard" if op.params.find("kind") == "reshard" else "constraint"
    return f"user {kind} at {location_of(op)}"


@dataclass(frozen=True)
class Target:
    """One value a user constraint lays out, on the partitioning mesh."""

    value: SSAValue
    dims: tuple[tuple[str, ...], ...]
    """Per dimension of the value, the partitioning-mesh axes tiling it."""
    pinned: tuple[str, ...]
    """Partitioning-mesh axes the value must stay replicated on."""


@dataclass(frozen=True)
class Seed:
    """One user constraint (or `shard_map` region), mapped onto the partitioning mesh."""

    op: ir.PrimOp
    targets: tuple[Target, ...]
    """The constrained value; a region's operands and results."""
    dropped: tuple[str, ...]
    """Why parts of the constraint could not be kept (one line each)."""


def map_axes(user_mesh: Sequence[tuple[str, int]], mesh: ir.MeshAttr) -> dict[str, str]:
    """User mesh axis -> partitioning mesh axis: by name, else by a unique size match."""
    sizes = mesh.sizes
    out = {name: name for name, _ in user_mesh if name in sizes}
    taken = set(out.values())
    for name, size in user_mesh:
        if name in out:
            continue
        free = [a for a, s in sizes.items() if s == size and a not in taken]
        if len(free) == 1:
            out[name] = free[0]
            taken.add(free[0])
    return out


def _target(
    value: SSAValue,
    spec: Sequence[tuple[str, ...] | None],
    user_mesh: Sequence[tuple[str, int]],
    pin_axes: Sequence[str],
    mesh: ir.MeshAttr,
    dropped: list[str],
) -> Target:
    """`value` laid out as `spec` says (user axes mapped onto `mesh`); the mapped axes of
    `pin_axes` it does not name are pinned, unless a dimension is left unconstrained."""
    shape = ir.shape_of(value.type)
    mapping = map_axes(user_mesh, mesh)
    dims: list[tuple[str, ...]] = []
    used: set[str] = set()
    for d in range(len(shape)):
        entry = spec[d] if d < len(spec) else ()
        kept: list[str] = []
        for axis in entry or ():
            target = mapping.get(axis)
            if target is None:
                dropped.append(
                    f"mesh axis {axis!r} of {dict(user_mesh)} matches no axis of the "
                    f"partitioning mesh {mesh.sizes} by name or by size"
                )
                continue
            if shape[d] % (mesh.size_of([*kept, target])) != 0:
                dropped.append(
                    f"dim {d} (size {shape[d]}) cannot be tiled on {[*kept, target]} "
                    f"({mesh.size_of([*kept, target])} devices)"
                )
                continue
            kept.append(target)
        used.update(kept)
        dims.append(tuple(kept))
    pinned: tuple[str, ...] = ()
    if all(entry is not None for entry in spec):
        # a complete sharding: the mapped axes it does not name are replicated
        pinned = tuple(
            t for t in dict.fromkeys(mapping[a] for a in pin_axes if a in mapping) if t not in used
        )
    return Target(value, tuple(dims), pinned)


def build_seed(op: ir.PrimOp, mesh: ir.MeshAttr) -> Seed:
    """What constraint or region `op` asks of its values on `mesh` (module docstring)."""
    params = op.params
    dropped: list[str] = []
    if op.primitive_name == "shard_map":
        axes = tuple(params["axes"])
        manual = tuple(params["manual"])
        targets = [
            _target(v, spec, axes, manual, mesh, dropped)
            for v, spec in zip(op.args, params["in_specs"], strict=True)
        ] + [
            _target(v, spec, axes, manual, mesh, dropped)
            for v, spec in zip(op.outs, params["out_specs"], strict=True)
        ]
        return Seed(op, tuple(targets), tuple(dict.fromkeys(dropped)))
    if params.find("sharding", "NamedSharding") != "NamedSharding":
        dropped.append(f"a {params['sharding']} names no mesh axes")
    user_mesh = tuple(params.find("mesh", ()))
    spec = tuple(params.find("spec", ()))
    target = _target(op.outs[0], spec, user_mesh, [a for a, _ in user_mesh], mesh, dropped)
    return Seed(op, (target,), tuple(dict.fromkeys(dropped)))


def apply(propagator: Any, *, warn: bool = True) -> list[Seed]:
    """Seed and propagate every user constraint of the propagator's program, in program
    order (an earlier constraint wins over a later one, and all of them over the
    schedule); returns what was seeded. Parts that cannot be kept warn when `warn`."""
    seeds = []
    for i, op in enumerate(constraint_ops(propagator.module)):
        seed = build_seed(op, propagator.mesh)
        if warn:
            for why in seed.dropped:
                warnings.warn(
                    f"{describe(op)}: {why}; that part of the constraint is dropped (the plan "
                    "decides it). Name the partitioning mesh's axes in the constraint to keep it.",
                    stacklevel=2,
                )
        tactic = user_tactic(i)
        for target in seed.targets:
            for d, axes in enumerate(target.dims):
                for axis in axes:
                    if propagator.seed(target.value, d, axis, tactic):
                        propagator.propagate(axis, tactic, [target.value])
            for axis in target.pinned:
                propagator.pin(target.value, axis, tactic)
        seeds.append(seed)
    return seeds


def tactic_name(module: ModuleOp, tactic: int) -> str | None:
    """``user constraint at file:line (fn)`` for a user constraint's origin index, else None."""
    index = constraint_index(tactic)
    if index is None:
        return None
    ops = constraint_ops(module)
    return describe(ops[index]) if index < len(ops) else None
