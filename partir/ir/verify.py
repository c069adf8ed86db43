"""Checks that the sharding attributes written on a module fit the values they describe.

A `partir.sharding` on an entry argument, a `partir.shardings` array on an op and a
`partir.regionN_args` array on a region op each name, per value, the mesh axes of every
dim. They are only meaningful on the enclosing module's `partir.mesh`, so each is checked
against it: one sharding per value, the value's rank, axes the mesh has, and dims that
divide by their axes. Ops call `verify_value_shardings` from their `verify_`; the entry
arguments belong to `func.func`, which is xDSL's, so `verify_module` checks them after
`module.verify()`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from xdsl.dialects import func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp, StringAttr, TensorType
from xdsl.ir import Attribute, Operation, SSAValue
from xdsl.utils.exceptions import VerifyException

from partir.ir.attrs import MeshAttr, ShardingAttr

VERIFY_ENV = "PARTIR_VERIFY_IR"
"""Set to ``1`` to verify every module after each pass (the test suite does)."""


def enclosing_mesh(op: Operation) -> MeshAttr | None:
    """The `partir.mesh` of the nearest enclosing op that has one (the module), if any."""
    parent: Operation | None = op
    while parent is not None:
        mesh = parent.attributes.get("partir.mesh")
        if isinstance(mesh, MeshAttr):
            return mesh
        parent = parent.parent_op()
    return None


def _describe(value: SSAValue, what: str) -> str:
    name = f"%{value.name_hint}" if value.name_hint else what
    return name if name == what else f"{name} ({what})"


def check_sharding(
    attr: Attribute, value: SSAValue, mesh: MeshAttr | None, what: str, local: bool = False
) -> None:
    """Raise `VerifyException` unless `attr` is a sharding that fits `value` on `mesh`.

    Args:
      attr: the attribute found where a sharding belongs.
      value: the value it describes (its type gives the shape).
      mesh: the module's mesh; without one only the rank is checked.
      what: how to name the value in the message, e.g. ``"result 0 of dot_general"``.
      local: `value`'s type is a per-device shape (a lowered module's argument), so its
        dims are not checked for divisibility.
    """
    who = _describe(value, what)
    if not isinstance(attr, ShardingAttr):
        raise VerifyException(f"{who}: expected a #partir.sharding, got: {attr}")
    if not isinstance(value.type, TensorType):
        return
    shape = tuple(value.type.get_shape())
    dims = attr.data.dims
    if len(dims) != len(shape):
        raise VerifyException(
            f"{who}: sharding {attr} has {len(dims)} dims for a value of shape {list(shape)}"
        )
    if mesh is None:
        return
    sizes = mesh.sizes
    for axis in attr.data.axes:
        if axis not in sizes:
            raise VerifyException(
                f"{who}: sharding {attr} names mesh axis {axis!r}, which the module's mesh "
                f"{list(mesh.axis_names)} does not have"
            )
    if local:
        return
    for d, (size, axes) in enumerate(zip(shape, dims, strict=True)):
        n = mesh.size_of(axes)
        if size % n:
            raise VerifyException(
                f"{who}: dim {d} of size {size} is not divisible by {n} (mesh axes "
                f"{', '.join(axes)}) in sharding {attr}"
            )


def _check_array(
    op: Operation, key: str, values: Sequence[SSAValue], what: str, mesh: MeshAttr | None
) -> None:
    attr = op.attributes.get(key)
    if attr is None:
        return
    if not isinstance(attr, ArrayAttr) or len(attr.data) != len(values):
        count = len(attr.data) if isinstance(attr, ArrayAttr) else "no array"
        raise VerifyException(
            f"'{op.name}' op: {key} must hold one sharding per value ({len(values)}), got: {count}"
        )
    for i, (sharding, value) in enumerate(zip(attr.data, values, strict=True)):
        check_sharding(sharding, value, mesh, f"{what} {i} of {_op_label(op)}")


def _op_label(op: Operation) -> str:
    primitive = getattr(op, "primitive_name", None)
    return f"{op.name} {primitive}" if isinstance(primitive, str) else op.name


def verify_value_shardings(op: Operation) -> None:
    """Check `op`'s `partir.shardings` (results) and `partir.regionN_args` (block args)."""
    has_results = "partir.shardings" in op.attributes
    has_regions = any(k.startswith("partir.region") for k in op.attributes)
    if not (has_results or has_regions):
        return
    mesh = enclosing_mesh(op)
    _check_array(op, "partir.shardings", list(op.results), "result", mesh)
    for r, region in enumerate(op.regions):
        _check_array(op, f"partir.region{r}_args", list(region.block.args), "block arg", mesh)


def verify_module(module: ModuleOp, local: bool = False) -> None:
    """`module.verify()`, then the entry functions' argument shardings.

    Args:
      module: the module to check.
      local: it is device-local (lowered): its arguments have per-device shapes, and their
        `partir.sharding` says how the global value they are part of is laid out.
    """
    module.verify()
    mesh = enclosing_mesh(module)
    for op in module.ops:
        if not isinstance(op, func.FuncOp) or op.arg_attrs is None:
            continue
        for i, (attrs, arg) in enumerate(zip(op.arg_attrs.data, op.args, strict=False)):
            if isinstance(attrs, DictionaryAttr) and "partir.sharding" in attrs.data:
                path = attrs.data.get("partir.path")
                what = f"argument {i}"
                if isinstance(path, StringAttr):
                    what += f" ({path.data})"
                check_sharding(attrs.data["partir.sharding"], arg, mesh, what, local)


def verify_if_enabled(module: ModuleOp, after: str, local: bool = False) -> None:
    """Verify `module` when `PARTIR_VERIFY_IR` is set, naming the pass that just ran
    (`local` as in `verify_module`)."""
    if os.environ.get(VERIFY_ENV, "") not in ("", "0"):
        try:
            verify_module(module, local)
        except VerifyException as e:
            raise VerifyException(f"after {after}: {e}") from e
