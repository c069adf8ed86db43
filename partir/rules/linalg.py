"""Sharding rules of contractions (`dot_general`, `conv_general_dilated`) and of batched
matrix factorisations and solves (`cholesky`, `triangular_solve`)."""

from __future__ import annotations

from typing import Any

from partir import ir
from partir.rules.core import FactorKind, OpRule, RuleBuilder, register_rule, shapes


def _conv_specs(
    dimension_numbers: Any, rank: int
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(lhs_spec, rhs_spec, out_spec): batch/feature first, then the spatial dimensions."""
    if dimension_numbers is None:  # the default: NC..., OI..., NC...
        spec = tuple(range(rank))
        return spec, spec, spec
    return (
        tuple(dimension_numbers.lhs_spec),
        tuple(dimension_numbers.rhs_spec),
        tuple(dimension_numbers.out_spec),
    )


@register_rule("conv_general_dilated")
def conv_general_dilated_rule(op: ir.PrimOp) -> OpRule:
    """The lhs batch (unless batch-grouped) and the rhs output feature (unless grouped) pass
    through to the result, the input feature is a sum-reduce factor (replicated when grouped),
    and every spatial dimension of each tensor is a replicate factor of its own."""
    (lhs, rhs), (out,) = shapes(op)
    lhs_spec, rhs_spec, out_spec = _conv_specs(op.params["dimension_numbers"], len(lhs))
    feature_groups = op.params.find("feature_group_count", 1)
    batch_groups = op.params.find("batch_group_count", 1)
    ungrouped = feature_groups == 1 and batch_groups == 1
    pass_or_replicate = FactorKind.PASS if ungrouped else FactorKind.REPLICATE
    b = RuleBuilder([lhs, rhs], [out])
    if batch_groups == 1:
        b.factor(lhs[lhs_spec[0]], operands=[(0, lhs_spec[0])], results=[(0, out_spec[0])])
    else:
        b.factor(lhs[lhs_spec[0]], operands=[(0, lhs_spec[0])], kind=FactorKind.REPLICATE)
        b.factor(out[out_spec[0]], results=[(0, out_spec[0])], kind=FactorKind.REPLICATE)
    b.factor(
        rhs[rhs_spec[0]],
        operands=[(1, rhs_spec[0])],
        results=[(0, out_spec[1])],
        kind=pass_or_replicate,
    )
    if ungrouped:
        b.factor(
            lhs[lhs_spec[1]],
            operands=[(0, lhs_spec[1]), (1, rhs_spec[1])],
            kind=FactorKind.REDUCE,
        )
    else:
        b.factor(lhs[lhs_spec[1]], operands=[(0, lhs_spec[1])], kind=FactorKind.REPLICATE)
        b.factor(rhs[rhs_spec[1]], operands=[(1, rhs_spec[1])], kind=FactorKind.REPLICATE)
    for ld, rd, od in zip(lhs_spec[2:], rhs_spec[2:], out_spec[2:], strict=True):
        b.factor(lhs[ld], operands=[(0, ld)], kind=FactorKind.REPLICATE)
        b.factor(rhs[rd], operands=[(1, rd)], kind=FactorKind.REPLICATE)
        b.factor(out[od], results=[(0, od)], kind=FactorKind.REPLICATE)
    return b.build()


@register_rule("dot_general")
def dot_general_rule(op: ir.PrimOp) -> OpRule:
    """Batch dimensions and the free dimensions of each side pass through to the result (in
    the order batch, lhs free, rhs free); contracting dimensions are sum-reduce factors."""
    (lhs, rhs), (out,) = shapes(op)
    (lhs_c, rhs_c), (lhs_b, rhs_b) = op.params["dimension_numbers"]
    lhs_free = [d for d in range(len(lhs)) if d not in lhs_c and d not in lhs_b]
    rhs_free = [d for d in range(len(rhs)) if d not in rhs_c and d not in rhs_b]
    b = RuleBuilder([lhs, rhs], [out])
    r = 0
    for ld, rd in zip(lhs_b, rhs_b, strict=True):
        b.factor(lhs[ld], operands=[(0, ld), (1, rd)], results=[(0, r)])
        r += 1
    for ld in lhs_free:
        b.factor(lhs[ld], operands=[(0, ld)], results=[(0, r)])
        r += 1
    for rd in rhs_free:
        b.factor(rhs[rd], operands=[(1, rd)], results=[(0, r)])
        r += 1
    for ld, rd in zip(lhs_c, rhs_c, strict=True):
        b.factor(lhs[ld], operands=[(0, ld), (1, rd)], kind=FactorKind.REDUCE)
    return b.build()


@register_rule("cholesky")
def cholesky_rule(op: ir.PrimOp) -> OpRule:
    """Batch dims pass through; the two matrix dims are replicated (each factorisation
    needs its whole matrix)."""
    (a,), (out,) = shapes(op)
    b = RuleBuilder([a], [out])
    for d, size in enumerate(a):
        kind = FactorKind.REPLICATE if d >= len(a) - 2 else FactorKind.PASS
        b.factor(size, operands=[(0, d)], results=[(0, d)], kind=kind)
    return b.build()


@register_rule("triangular_solve")
def triangular_solve_rule(op: ir.PrimOp) -> OpRule:
    """`a [..., m, m]` against right-hand sides `b [..., m, n]` (`[..., n, m]` with
    ``left_side=False``): batch dims pass through `a`, `b` and the result, and so do the
    right-hand sides (`n`), which are solved independently; the solved dim `m` needs the
    whole triangle and is replicated."""
    (a, rhs), (out,) = shapes(op)
    b = RuleBuilder([a, rhs], [out])
    batch = len(a) - 2
    for d in range(batch):
        b.factor(a[d], operands=[(0, d), (1, d)], results=[(0, d)])
    b.factor(a[batch], operands=[(0, batch)], kind=FactorKind.REPLICATE)
    b.factor(a[batch + 1], operands=[(0, batch + 1)], kind=FactorKind.REPLICATE)
    left = bool(op.params.find("left_side", True))
    solved, free = (batch, batch + 1) if left else (batch + 1, batch)
    b.factor(rhs[solved], operands=[(1, solved)], results=[(0, solved)], kind=FactorKind.REPLICATE)
    b.factor(rhs[free], operands=[(1, free)], results=[(0, free)])
    return b.build()
