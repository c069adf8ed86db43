"""The sharding rule of ``name``, the primitive `jax.ad_checkpoint.checkpoint_name` emits.

``checkpoint_name(x, "attn_out")`` returns `x` unchanged; the name only tells remat
policies (and MaxText's) which values to save. So it is an identity: each dim of the
result is the same factor as that dim of the operand. Without a rule it would be a barrier,
and every named activation would be gathered and re-split ("for operand 0 of name").
Selecting a named value (``"name:attn_out"``) is `partir.tactics.manual`'s business.
"""

from __future__ import annotations

from partir import ir
from partir.rules.core import OpRule, RuleBuilder, register_rule, shapes


@register_rule("name")
def name_rule(op: ir.PrimOp) -> OpRule:
    """Identity: each operand dim is a pass-through factor shared with the same result dim."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    for d, size in enumerate(operand_shapes[0]):
        b.factor(size, operands=[(0, d)], results=[(0, d)])
    return b.build()
