"""Shape-valued primitive parameters rewritten for the device-local program: a reshape's
``new_sizes``, a broadcast's ``shape``, a slice's limits, ... must name local shapes once
an op runs on tiles."""

from __future__ import annotations

from typing import Any

from partir import ir


def localize_params(
    op: ir.PrimOp, operand_shapes: list[tuple[int, ...]], result_shapes: list[tuple[int, ...]]
) -> tuple[tuple[str, Any], ...]:
    """`op`'s parameters with every shape-valued one rewritten to the local shapes."""
    name = op.primitive_name
    params = dict(op.params.items())
    if name in ("broadcast_in_dim", "iota"):
        params["shape"] = result_shapes[0]
    elif name == "reshape":
        params["new_sizes"] = result_shapes[0]
    elif name in ("dynamic_slice", "gather"):
        global_operand = ir.shape_of(op.operand_types[0])
        params["slice_sizes"] = tuple(
            local if size == full else size
            for size, full, local in zip(
                params["slice_sizes"], global_operand, operand_shapes[0], strict=True
            )
        )
    elif name == "slice":
        global_operand = ir.shape_of(op.operand_types[0])
        params["limit_indices"] = tuple(
            local if limit == full else limit
            for limit, full, local in zip(
                params["limit_indices"], global_operand, operand_shapes[0], strict=True
            )
        )
    return tuple(params.items())
