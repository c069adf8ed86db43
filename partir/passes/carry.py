"""Which operands' pending sums a linear op carries into its results, in lowering.

Propagation marks an op's results partial on an axis when a pending sum flows through it
(`LINEAR` in `edges.py`). A product is linear in one operand only, and propagation can
reach it twice: the sum nearer the input turns pending and flows through first, and the
other operand, whose sum is made one op further away, turns pending afterwards. The sum
of local products is not the product of the sums, so lowering carries one pending sum (the
one propagation carried, else the first) and all-reduces the others before the op.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from xdsl.ir import SSAValue

from partir import ir
from partir.passes.edges import LINEAR, Linear
from partir.passes.state import Origin


def carried_operands(
    op: ir.PrimOp,
    actual: Sequence[ir.Sharding],
    carried: set[str],
    origin: Mapping[tuple[SSAValue, str], Origin],
) -> dict[str, tuple[int, ...]]:
    """Per axis in `carried` (pending sums `op`'s results carry), the operands that keep
    theirs; the others' are reduced first.

    Args:
      op: the op being lowered.
      actual: its operands' layouts as they arrive.
      carried: the axes on which a pending sum passes through it.
      origin: propagation's provenance, to prefer the operand it carried the sum from.
    """
    mode = LINEAR.get(op.primitive_name)
    out: dict[str, tuple[int, ...]] = {}
    for axis in carried:
        partial = [i for i, lay in enumerate(actual) if axis in lay.partial]
        if mode is Linear.FIRST:
            partial = [i for i in partial if i == 0]
        elif mode is Linear.ONE and len(partial) > 1:
            came = origin.get((op.outs[0], axis)) if op.outs else None
            source = [i for i in partial if came is not None and op.args[i] is came.source]
            partial = source[:1] or partial[:1]
        out[axis] = tuple(partial)
    return out
