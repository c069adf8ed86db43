"""`partir-propagate`: propagate the shardings written in an IR file to every value.

The pass form of what a schedule does, for `partir opt` and `xdsl-opt`: the seeds are the
shardings already in the IR, and each mesh axis is one step of the schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, StringAttr
from xdsl.ir import SSAValue
from xdsl.passes import ModulePass
from xdsl.utils.exceptions import PassFailedException

from partir import ir
from partir.passes.propagate import Propagator

CONFLICTS_ATTR = "partir.conflicts"
"""Module attribute listing the conflicts propagation recorded (absent when none)."""


def _seeds(module: builtin.ModuleOp) -> list[tuple[SSAValue, ir.Sharding, str]]:
    """(value, sharding, where) per entry argument with `partir.sharding` and per op result
    with `partir.shardings`, in program order."""
    out: list[tuple[SSAValue, ir.Sharding, str]] = []
    fn = next((op for op in module.ops if isinstance(op, func.FuncOp)), None)
    if fn is None:
        raise PassFailedException("partir-propagate: the module has no func.func to propagate in")
    if fn.arg_attrs is not None:
        for i, (arg, attrs) in enumerate(zip(fn.args, fn.arg_attrs.data, strict=True)):
            s = attrs.data.get("partir.sharding") if isinstance(attrs, DictionaryAttr) else None
            if isinstance(s, ir.ShardingAttr):
                out.append((arg, s.data, f"argument {i} of @{fn.sym_name.data}"))
    for op in fn.walk():
        attr = op.attributes.get("partir.shardings")
        if not isinstance(attr, ArrayAttr):
            continue
        for k, (r, s) in enumerate(zip(op.results, attr.data, strict=False)):
            if isinstance(s, ir.ShardingAttr):
                out.append((r, s.data, f"result {k} of {getattr(op, 'primitive_name', op.name)}"))
    return out


def _check_seed(
    value: SSAValue, sharding: ir.Sharding, where: str, mesh: ir.MeshAttr, order: tuple[str, ...]
) -> None:
    shape = ir.shape_of(value.type)
    if len(sharding.dims) != len(shape):
        raise PassFailedException(
            f"partir-propagate: {where} has rank {len(shape)} but its sharding names "
            f"{len(sharding.dims)} dims"
        )
    for d, axes in enumerate(sharding.dims):
        for a in axes:
            if a not in mesh.sizes:
                raise PassFailedException(
                    f"partir-propagate: {where} uses mesh axis {a!r}, but the mesh has axes "
                    f"{mesh.axis_names}"
                )
        if axes and shape[d] % mesh.size_of(axes):
            raise PassFailedException(
                f"partir-propagate: {where} splits dim {d} of size {shape[d]} over axes "
                f"{list(axes)} of {mesh.size_of(axes)} devices, which does not divide it"
            )
        ranks = [order.index(a) for a in axes]
        if ranks != sorted(ranks):
            raise PassFailedException(
                f"partir-propagate: {where} tiles dim {d} over {list(axes)} (major to minor), "
                f"but the axes propagate in the order {list(order)}; an axis added later is "
                "minor. Pass axes=" + ",".join(axes) + " (or reorder the sharding)"
            )


@dataclass(frozen=True)
class PropagatePass(ModulePass):
    """Propagate the shardings in the IR to every value, one mesh axis at a time.

    The mesh is the module's ``partir.mesh`` attribute. The seeds are each entry argument's
    ``partir.sharding`` and each op's ``partir.shardings`` (what `plan.ir()` writes), so
    a planned program's text propagates back to the same shardings. Only tiled dims seed;
    partial axes are derived again. Each axis is one step, as a tactic of a schedule:
    earlier axes win, and where propagation meets two claims it records a conflict,
    listed in the module's ``partir.conflicts`` attribute. The result has every decided
    value's sharding written back (``partir.sharding(s)``, ``partir.regionN_args``).

    Options:
      axes: the order in which the mesh axes propagate (``axes=batch,model``); default
        the mesh's order. Every axis tiling one dim must come in that dim's
        major-to-minor order.
    """

    name = "partir-propagate"

    axes: tuple[str, ...] = ()

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        """Seed, propagate every axis in order, write the shardings back."""
        prop = propagate_ir(op, self.axes, self.name)
        prop.write_to_ir()
        if prop.conflicts:
            op.attributes[CONFLICTS_ATTR] = ArrayAttr(
                [StringAttr(f"axis {c.axis!r} at {c.location}: " + "; ".join(w for _, w, _ in c.claims))
                 for c in prop.conflicts]
            )  # fmt: skip
        else:
            op.attributes.pop(CONFLICTS_ATTR, None)


def propagate_ir(
    op: builtin.ModuleOp, axes: tuple[str, ...] = (), pass_name: str = "partir-propagate"
) -> Propagator:
    """Propagate the shardings written in `op` (see `PropagatePass`); returns the state.

    Args:
      op: a module with a ``partir.mesh`` attribute and sharding attributes as seeds.
      axes: the order in which the mesh axes propagate; default the mesh's order.
      pass_name: the pass to name in error messages.
    """
    mesh = op.attributes.get("partir.mesh")
    if not isinstance(mesh, ir.MeshAttr):
        raise PassFailedException(
            f"{pass_name} needs the mesh as a module attribute: builtin.module "
            'attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} { ... }'
        )
    order = tuple(axes) or mesh.axis_names
    unknown = [a for a in order if a not in mesh.sizes]
    if unknown or len(set(order)) != len(order):
        raise PassFailedException(
            f"{pass_name}: axes={','.join(order)} must name each axis of the mesh "
            f"{mesh.axis_names} at most once"
        )
    seeds = _seeds(op)
    for value, sharding, where in seeds:
        _check_seed(value, sharding, where, mesh, order)
    missing = {a for _, s, _ in seeds for d in s.dims for a in d} - set(order)
    if missing:
        raise PassFailedException(
            f"{pass_name}: the IR uses axes {sorted(missing)} that axes="
            f"{','.join(order)} leaves out"
        )
    prop = Propagator(op, mesh)
    for step, axis in enumerate(order):
        seeded = []
        for value, sharding, _ in seeds:
            for d, tiled in enumerate(sharding.dims):
                if axis in tiled and prop.seed(value, d, axis, step):
                    seeded.append(value)
        prop.propagate(axis, step, seeded)
    return prop
