"""Sharding rule of `fft`: the transformed dimensions are whole, the batch dimensions pass."""

from __future__ import annotations

from partir import ir
from partir.rules.core import FactorKind, OpRule, RuleBuilder, register_rule, shapes


@register_rule("fft")
def fft_rule(op: ir.PrimOp) -> OpRule:
    """The last ``len(fft_lengths)`` dimensions are transformed: every output element
    depends on the whole of them, so each gets replicate factors (one for the operand and
    one for the result, since `rfft`/`irfft` change the last size). The leading dimensions
    are independent transforms and pass through."""
    (x,), (out,) = shapes(op)
    transformed = len(op.params["fft_lengths"])
    batch = len(x) - transformed
    b = RuleBuilder([x], [out])
    for d in range(len(x)):
        if d < batch:
            b.factor(x[d], operands=[(0, d)], results=[(0, d)])
        else:
            b.factor(x[d], operands=[(0, d)], kind=FactorKind.REPLICATE)
            b.factor(out[d], results=[(0, d)], kind=FactorKind.REPLICATE)
    return b.build()
