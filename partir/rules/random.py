"""Sharding rules of the PRNG key primitives the IR keeps (see partir/frontend/random.py).

The frontend replaces `random_bits`, `random_split`, `random_fold_in` and `random_seed` by
the computation JAX's lowering runs for them: `threefry2x32` on counters built from iotas,
between a `random_unwrap` (key array -> its ``uint32`` data) and a `random_wrap` (data ->
key array). So a key array and the bits drawn from it propagate through ordinary rules,
and only these three primitives need one here. Also here, because random draws are what
make it: `bitcast_convert_type` (a uniform draw turns bits into floats). `stack` and
`unstack` (splitting keys) are in `shape.py`.
"""

from __future__ import annotations

from partir import ir
from partir.rules.core import FactorKind, OpRule, RuleBuilder, register_rule, shapes
from partir.rules.elementwise import elementwise_rule


def _key_cast(op: ir.PrimOp, key_side: str) -> OpRule:
    """Key dims shared by the key array and its data; the trailing data dims replicated."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    keys = result_shapes[0] if key_side == "result" else operand_shapes[0]
    data = operand_shapes[0] if key_side == "result" else result_shapes[0]
    for d, size in enumerate(keys):
        b.factor(size, operands=[(0, d)], results=[(0, d)])
    for d in range(len(keys), len(data)):
        where = [(0, d)]
        if key_side == "result":
            b.factor(data[d], operands=where, kind=FactorKind.REPLICATE)
        else:
            b.factor(data[d], results=where, kind=FactorKind.REPLICATE)
    return b.build()


@register_rule("bitcast_convert_type")
def bitcast_convert_type_rule(op: ir.PrimOp) -> OpRule:
    """Each shared dim passes through (a bitcast of equal widths is elementwise); the extra
    trailing dim a width change adds to the result (or takes from the operand) is
    replicated. Uniform draws bitcast their random bits to floats."""
    (x,), (out,) = shapes(op)
    b = RuleBuilder([x], [out])
    for d in range(min(len(x), len(out))):
        b.factor(x[d], operands=[(0, d)], results=[(0, d)])
    if len(out) > len(x):
        b.factor(out[-1], results=[(0, len(x))], kind=FactorKind.REPLICATE)
    elif len(x) > len(out):
        b.factor(x[-1], operands=[(0, len(out))], kind=FactorKind.REPLICATE)
    return b.build()


@register_rule("random_unwrap")
def random_unwrap_rule(op: ir.PrimOp) -> OpRule:
    """Each key dim passes through to the same dim of the data; the trailing dim holding one
    key's words (2 for threefry2x32) is a result-only replicated factor."""
    return _key_cast(op, "operand")


@register_rule("random_wrap")
def random_wrap_rule(op: ir.PrimOp) -> OpRule:
    """Each leading dim of the data passes through to the same dim of the key array; the
    trailing dim holding one key's words is an operand-only replicated factor."""
    return _key_cast(op, "result")


@register_rule("threefry2x32")
def threefry2x32_rule(op: ir.PrimOp) -> OpRule:
    """Elementwise with broadcasting (the hash of each (key, counter) pair is independent of
    the others): each result dim is one pass factor shared by the operand dims of its size,
    and by both results."""
    return elementwise_rule(op)
