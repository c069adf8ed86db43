"""The sharding rules of the user's own sharding code: `with_sharding_constraint` and
`reshard` in the traced function (one ``sharding_constraint`` op each) and `jax.shard_map`
regions (one ``shard_map`` op); see `partir.frontend.constraints`.

The op is an identity: its result is its operand, element for element, so every
dimension is one pass-through factor shared by the two. The layout the user asked for is
not a property of the rule but a seed the API applies before the schedule runs; with an
identity rule that seed reaches the operand too, so the value is laid out once, not
constrained to the user's layout and then re-laid out by the plan.
"""

from __future__ import annotations

from partir import ir
from partir.rules.core import FactorKind, OpRule, RuleBuilder, register_rule, shapes


@register_rule("sharding_constraint")
def user_constraint_rule(op: ir.PrimOp) -> OpRule:
    """Dimension d of the operand and dimension d of the result: one pass-through factor."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    for d, size in enumerate(result_shapes[0]):
        b.factor(size, operands=[(0, d)], results=[(0, d)])
    return b.build()


@register_rule("shard_map")
def shard_map_rule(op: ir.PrimOp) -> OpRule:
    """A `jax.shard_map` region: its body sees per-device blocks, so no dimension of an
    operand is tied to one of a result. Each operand dimension is its own replicated
    factor (the op takes its operands whole and cuts the blocks its ``in_specs`` name
    itself); each result dimension is its own pass-through factor, so a result is made
    directly in the layout the plan gives it (its ``out_specs``, which seed it)."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    for i, shape in enumerate(operand_shapes):
        for d, size in enumerate(shape):
            b.factor(size, operands=[(i, d)], kind=FactorKind.REPLICATE)
    for j, shape in enumerate(result_shapes):
        for d, size in enumerate(shape):
            b.factor(size, results=[(j, d)])
    return b.build()
