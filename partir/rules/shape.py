"""Sharding rules of shape and data-movement primitives (broadcast, reshape, slices, stack,
...)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from partir import ir
from partir.rules.core import FactorKind, OpRule, RuleBuilder, register_rule, shapes

REPLICATE = FactorKind.REPLICATE


def _replicate_all(b: RuleBuilder) -> None:
    """Give every dimension of every tensor its own replicate factor."""
    for i, shape in enumerate(b.operand_shapes):
        for d, size in enumerate(shape):
            b.factor(size, operands=[(i, d)], kind=REPLICATE)
    for j, shape in enumerate(b.result_shapes):
        for d, size in enumerate(shape):
            b.factor(size, results=[(j, d)], kind=REPLICATE)


def _reshape_factors(b: RuleBuilder, src: Sequence[int], dst: Sequence[int]) -> None:
    """Decompose operand 0 (`src`) and result 0 (`dst`) into common factors, major first.

    Walking both shapes from the major end (size-1 dimensions skipped), the gcd of what is
    left of the current operand and result dimensions is a factor of both. Where the two
    are coprime the layouts disagree until the next dimension boundary they share; each
    dimension part in between becomes a replicate factor of its own.
    """
    a = [(d, n) for d, n in enumerate(src) if n != 1]
    c = [(d, n) for d, n in enumerate(dst) if n != 1]
    i = j = 0
    rest_a = a[0][1] if a else 1
    rest_c = c[0][1] if c else 1
    while i < len(a) and j < len(c):
        g = math.gcd(rest_a, rest_c)
        if g > 1:
            b.factor(g, operands=[(0, a[i][0])], results=[(0, c[j][0])])
            rest_a //= g
            rest_c //= g
        else:
            parts_a, parts_c = [(a[i][0], rest_a)], [(c[j][0], rest_c)]
            prod_a, prod_c = rest_a, rest_c
            while prod_a != prod_c:
                if prod_a < prod_c:
                    i += 1
                    prod_a *= a[i][1]
                    parts_a.append(a[i])
                else:
                    j += 1
                    prod_c *= c[j][1]
                    parts_c.append(c[j])
            for d, n in parts_a:
                b.factor(n, operands=[(0, d)], kind=REPLICATE)
            for d, n in parts_c:
                b.factor(n, results=[(0, d)], kind=REPLICATE)
            rest_a = rest_c = 1
        if rest_a == 1:
            i += 1
            rest_a = a[i][1] if i < len(a) else 1
        if rest_c == 1:
            j += 1
            rest_c = c[j][1] if j < len(c) else 1


@register_rule("broadcast_in_dim")
def broadcast_in_dim_rule(op: ir.PrimOp) -> OpRule:
    """Operand dimension d passes through to result dimension `broadcast_dimensions[d]`; a
    size-1 operand dimension expanded to size n and every new result dimension get a
    result-only pass-through factor."""
    operand_shapes, (out,) = shapes(op)
    x = operand_shapes[0]
    source = {r: d for d, r in enumerate(op.params["broadcast_dimensions"])}
    b = RuleBuilder(operand_shapes, [out])
    for r, size in enumerate(out):
        d = source.get(r)
        operands = [(0, d)] if d is not None and x[d] == size else []
        b.factor(size, operands=operands, results=[(0, r)])
    return b.build()


@register_rule("concatenate")
def concatenate_rule(op: ir.PrimOp) -> OpRule:
    """The concatenated `dimension` is replicated, one factor per tensor; every other
    dimension passes through, shared by all operands and the result."""
    operand_shapes, (out,) = shapes(op)
    axis = op.params["dimension"]
    b = RuleBuilder(operand_shapes, [out])
    operands = range(len(operand_shapes))
    for d, size in enumerate(out):
        if d == axis:
            for i in operands:
                b.factor(operand_shapes[i][d], operands=[(i, d)], kind=REPLICATE)
            b.factor(size, results=[(0, d)], kind=REPLICATE)
        else:
            b.factor(size, operands=[(i, d) for i in operands], results=[(0, d)])
    return b.build()


@register_rule("dynamic_slice")
def dynamic_slice_rule(op: ir.PrimOp) -> OpRule:
    """A dimension sliced whole (slice size = operand size, so its start clamps to 0) passes
    through; any other is replicated, one factor for the operand and one for the result (the
    rank-0 start indices have no factor)."""
    operand_shapes, (out,) = shapes(op)
    x = operand_shapes[0]
    b = RuleBuilder(operand_shapes, [out])
    for d, size in enumerate(x):
        if out[d] == size:
            b.factor(size, operands=[(0, d)], results=[(0, d)])
        else:
            b.factor(size, operands=[(0, d)], kind=REPLICATE)
            b.factor(out[d], results=[(0, d)], kind=REPLICATE)
    return b.build()


@register_rule("dynamic_update_slice")
def dynamic_update_slice_rule(op: ir.PrimOp) -> OpRule:
    """A dimension the update covers whole passes through, shared by operand, update and
    result; any other is replicated, one factor shared by operand and result and one for the
    update (the rank-0 start indices have no factor)."""
    operand_shapes, (out,) = shapes(op)
    x, update = operand_shapes[0], operand_shapes[1]
    b = RuleBuilder(operand_shapes, [out])
    for d, size in enumerate(x):
        if update[d] == size:
            b.factor(size, operands=[(0, d), (1, d)], results=[(0, d)])
        else:
            b.factor(size, operands=[(0, d)], results=[(0, d)], kind=REPLICATE)
            b.factor(update[d], operands=[(1, d)], kind=REPLICATE)
    return b.build()


@register_rule("iota")
def iota_rule(op: ir.PrimOp) -> OpRule:
    """The counting `dimension` is replicated; every other result dimension is a result-only
    pass-through factor (the values do not depend on it)."""
    operand_shapes, (out,) = shapes(op)
    axis = op.params["dimension"]
    b = RuleBuilder(operand_shapes, [out])
    for d, size in enumerate(out):
        b.factor(size, results=[(0, d)], kind=REPLICATE if d == axis else FactorKind.PASS)
    return b.build()


@register_rule("pad")
def pad_rule(op: ir.PrimOp) -> OpRule:
    """An unpadded dimension (``(lo, hi, interior) == (0, 0, 0)``) passes through; a padded
    one is replicated, one factor for the operand and one for the result (the rank-0 padding
    value has no factor)."""
    operand_shapes, (out,) = shapes(op)
    x = operand_shapes[0]
    b = RuleBuilder(operand_shapes, [out])
    for d, config in enumerate(op.params["padding_config"]):
        if tuple(config) == (0, 0, 0):
            b.factor(x[d], operands=[(0, d)], results=[(0, d)])
        else:
            b.factor(x[d], operands=[(0, d)], kind=REPLICATE)
            b.factor(out[d], results=[(0, d)], kind=REPLICATE)
    return b.build()


@register_rule("reshape")
def reshape_rule(op: ir.PrimOp) -> OpRule:
    """Operand and result dimensions are decomposed into common factors (gcd, major first) that
    pass through splits and merges; the parts where the layouts disagree are replicated."""
    (x,), (out,) = shapes(op)
    b = RuleBuilder([x], [out])
    dimensions = op.params.find("dimensions")
    if 0 in x or 0 in out or (dimensions is not None and tuple(dimensions) != tuple(range(len(x)))):
        _replicate_all(b)
    else:
        _reshape_factors(b, x, out)
    return b.build()


@register_rule("rev")
def rev_rule(op: ir.PrimOp) -> OpRule:
    """Reversed `dimensions` are replicated (one factor shared by operand and result); the
    others pass through."""
    (x,), (out,) = shapes(op)
    reversed_dims = op.params["dimensions"]
    b = RuleBuilder([x], [out])
    for d, size in enumerate(x):
        kind = REPLICATE if d in reversed_dims else FactorKind.PASS
        b.factor(size, operands=[(0, d)], results=[(0, d)], kind=kind)
    return b.build()


@register_rule("slice")
def slice_rule(op: ir.PrimOp) -> OpRule:
    """An untouched dimension (start 0, limit = size, stride 1) passes through; any other is
    replicated, one factor for the operand and one for the result."""
    (x,), (out,) = shapes(op)
    starts, limits = op.params["start_indices"], op.params["limit_indices"]
    strides = op.params.find("strides") or (1,) * len(x)
    b = RuleBuilder([x], [out])
    for d, size in enumerate(x):
        if starts[d] == 0 and limits[d] == size and strides[d] == 1:
            b.factor(size, operands=[(0, d)], results=[(0, d)])
        else:
            b.factor(size, operands=[(0, d)], kind=REPLICATE)
            b.factor(out[d], results=[(0, d)], kind=REPLICATE)
    return b.build()


@register_rule("split")
def split_rule(op: ir.PrimOp) -> OpRule:
    """The split `axis` is replicated, one factor per tensor; every other dimension passes
    through, shared by the operand and all results."""
    (x,), result_shapes = shapes(op)
    axis = op.params["axis"]
    b = RuleBuilder([x], result_shapes)
    results = range(len(result_shapes))
    for d, size in enumerate(x):
        if d == axis:
            b.factor(size, operands=[(0, d)], kind=REPLICATE)
            for j in results:
                b.factor(result_shapes[j][d], results=[(j, d)], kind=REPLICATE)
        else:
            b.factor(size, operands=[(0, d)], results=[(j, d) for j in results])
    return b.build()


@register_rule("squeeze")
def squeeze_rule(op: ir.PrimOp) -> OpRule:
    """Each kept operand dimension passes through to the next result dimension; the removed
    size-1 `dimensions` have no factor."""
    (x,), (out,) = shapes(op)
    removed = {d % len(x) for d in op.params["dimensions"]}
    b = RuleBuilder([x], [out])
    kept = [d for d in range(len(x)) if d not in removed]
    for r, d in enumerate(kept):
        b.factor(x[d], operands=[(0, d)], results=[(0, r)])
    return b.build()


@register_rule("transpose")
def transpose_rule(op: ir.PrimOp) -> OpRule:
    """Operand dimension ``permutation[r]`` passes through to result dimension r."""
    (x,), (out,) = shapes(op)
    permutation = tuple(op.params["permutation"])
    b = RuleBuilder([x], [out])
    for d, size in enumerate(x):
        b.factor(size, operands=[(0, d)], results=[(0, permutation.index(d))])
    return b.build()


@register_rule("stack")
def stack_rule(op: ir.PrimOp) -> OpRule:
    """Each operand dim passes through to its result dim, shared by every operand; the new
    `axis` of the result is a result-only replicated factor. (`random_split` stacks the two
    words of each new key.)"""
    operand_shapes, (out,) = shapes(op)
    axis = op.params["axis"] % len(out)
    b = RuleBuilder(operand_shapes, [out])
    operands = range(len(operand_shapes))
    for r, size in enumerate(out):
        if r == axis:
            b.factor(size, results=[(0, r)], kind=FactorKind.REPLICATE)
        else:
            d = r if r < axis else r - 1
            b.factor(size, operands=[(i, d) for i in operands], results=[(0, r)])
    return b.build()


@register_rule("unstack")
def unstack_rule(op: ir.PrimOp) -> OpRule:
    """The unstacked `axis` is an operand-only replicated factor; every other operand dim
    passes through to its dim of every result. (`k1, k2 = jax.random.split(key)`.)"""
    (x,), result_shapes = shapes(op)
    axis = op.params["axis"] % len(x)
    b = RuleBuilder([x], result_shapes)
    results = range(len(result_shapes))
    for d, size in enumerate(x):
        if d == axis:
            b.factor(size, operands=[(0, d)], kind=FactorKind.REPLICATE)
        else:
            r = d if d < axis else d - 1
            b.factor(size, operands=[(0, d)], results=[(j, r) for j in results])
    return b.build()
