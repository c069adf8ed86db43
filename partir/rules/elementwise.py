"""Sharding rules of elementwise primitives: one pass-through factor per dimension."""

from __future__ import annotations

from partir import ir
from partir.rules.core import OpRule, RuleBuilder, register_rule, shapes

ELEMENTWISE: tuple[str, ...] = (
    "abs", "acos", "acosh", "add", "add_any", "and", "asin", "asinh", "atan", "atan2",
    "atanh", "bessel_i0e", "bessel_i1e", "cbrt", "ceil", "clamp", "clz", "complex", "conj",
    "convert_element_type", "copy", "cos", "cosh", "digamma", "div", "eq", "erf", "erf_inv",
    "erfc", "exp", "exp2", "expm1", "floor", "ge", "gt", "igamma", "igamma_grad_a", "igammac",
    "imag", "integer_pow", "is_finite", "le", "lgamma", "log", "log1p", "log2", "logistic",
    "lt", "max", "min", "mul", "ne", "neg", "nextafter", "not", "one_minus_square", "or",
    "polygamma", "polynomial",
    "population_count", "pow", "real", "reduce_precision", "regularized_incomplete_beta",
    "rem", "round", "rsqrt", "select_n", "shift_left",
    "shift_right_arithmetic", "shift_right_logical", "sign", "sin", "sinh", "sqrt", "square",
    "stop_gradient", "sub", "tan", "tanh", "xor", "zeta",
)  # fmt: skip
"""Primitives whose results are a function of the operands' elements at the same index."""

PAIRWISE: tuple[str, ...] = ("device_put", "optimization_barrier")
"""Primitives whose result i is operand i, unchanged."""


@register_rule(*ELEMENTWISE)
def elementwise_rule(op: ir.PrimOp) -> OpRule:
    """Each result dimension is one pass-through factor, shared by every operand dimension of
    the same size (a rank-0 operand or a size-1 operand dimension broadcasts: no factor)."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    out = result_shapes[0]
    for d, size in enumerate(out):
        operands = [
            (i, d) for i, s in enumerate(operand_shapes) if len(s) == len(out) and s[d] == size
        ]
        results = [(j, d) for j in range(len(result_shapes))]
        b.factor(size, operands=operands, results=results)
    return b.build()


@register_rule(*PAIRWISE)
def pairwise_identity_rule(op: ir.PrimOp) -> OpRule:
    """Each dimension of operand i is a pass-through factor shared with the same dimension of
    result i, and with nothing else."""
    operand_shapes, result_shapes = shapes(op)
    b = RuleBuilder(operand_shapes, result_shapes)
    for i, shape in enumerate(operand_shapes):
        for d, size in enumerate(shape):
            b.factor(size, operands=[(i, d)], results=[(i, d)])
    return b.build()
