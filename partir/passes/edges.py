"""How the propagation engine sees ops: edges, each a rule over a list of values (what it
decides is in `partir.passes.state`).

A primitive op is one edge, its factor rule over its operands and results. A region op
(scan, while, cond, remat) is several identity edges, each tying together the values
that must share one layout: an operand, the block argument it becomes, the value the body
yields for it and the op's result (a scan's stacked operands and results skip their
leading iteration dimension).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from xdsl.ir import Operation, SSAValue

from partir import ir
from partir.ir.locations import location_of as location_of
from partir.rules import FactorKind, OpRule, RuleBuilder


class Linear(enum.Enum):
    """How a primitive is linear in its operands: which may carry a partial sum through."""

    ALL = "all"
    """Every operand must be partial (x + c is not a sum of shard + c)."""
    ONE = "one"
    """Exactly one operand may be (a product)."""
    FIRST = "first"
    """Only operand 0 may be (the others are indices or divisors)."""


# The table is written with the modes' values, so a one-line edit (or a mutant) changes one
# primitive; a misspelt mode fails at import.
_LINEAR: dict[str, str] = {
    "add": "all", "add_any": "all", "sub": "all", "concatenate": "all",
    "neg": "all", "reshape": "all", "transpose": "all", "broadcast_in_dim": "all",
    "squeeze": "all", "reduce_sum": "all", "copy": "all", "slice": "all",
    "rev": "all", "cumsum": "all", "reduce_window_sum": "all", "stop_gradient": "all",
    "sharding_constraint": "all",
    "dot_general": "one", "mul": "one", "conv_general_dilated": "one",
    "div": "first", "dynamic_slice": "first", "gather": "first",
}  # fmt: skip
LINEAR: dict[str, Linear] = {name: Linear(mode) for name, mode in _LINEAR.items()}
"""Primitives linear in their operands (a partial sum passes through unchanged), and how."""


@dataclass
class Edge:
    """One rule application: a rule over an ordered list of values."""

    op: Operation
    rule: OpRule
    values: list[SSAValue]
    num_operands: int
    linear: Linear | None = None


def identity_rule(
    shapes: Sequence[Sequence[int]], offsets: Sequence[int], stacked: Sequence[bool]
) -> OpRule:
    """Tensors that are the same value (after dropping a leading stacked dim where marked)."""
    core = [tuple(s)[o:] for s, o in zip(shapes, offsets, strict=True)]
    b = RuleBuilder(shapes, [])
    rank = len(core[0])
    for d in range(rank):
        b.factor(core[0][d], operands=[(i, d + offsets[i]) for i in range(len(shapes))])
    for i, s in enumerate(shapes):
        if stacked[i]:
            b.factor(s[0], operands=[(i, 0)], kind=FactorKind.REPLICATE)
    return b.build()


def region_groups(op: ir.RegionPrimOp) -> Iterator[tuple[list[SSAValue], list[int]]]:
    """Groups of values that must share one sharding, with the leading dims to skip."""
    args, outs = list(op.args), list(op.outs)
    blocks = [r.block for r in op.bodies]
    yields = [list(b.last_op.operands) for b in blocks]  # type: ignore[union-attr]
    if isinstance(op, ir.ScanOp):
        p = op.params
        nc, nk = p["num_consts"], p["num_carry"]
        bargs = list(blocks[0].args)
        for i in range(nc):
            yield [args[i], bargs[i]], [0, 0]
        for i in range(nk):
            yield [args[nc + i], bargs[nc + i], yields[0][i], outs[i]], [0, 0, 0, 0]
        for i, x in enumerate(args[nc + nk :]):
            yield [x, bargs[nc + nk + i]], [1, 0]
        for i, y in enumerate(yields[0][nk:]):
            yield [y, outs[nk + i]], [0, 1]
    elif isinstance(op, ir.WhileOp):
        p = op.params
        cn, bn = p["cond_nconsts"], p["body_nconsts"]
        cargs, bargs = list(blocks[0].args), list(blocks[1].args)
        for i in range(cn):
            yield [args[i], cargs[i]], [0, 0]
        for i in range(bn):
            yield [args[cn + i], bargs[i]], [0, 0]
        for i, carry in enumerate(args[cn + bn :]):
            yield [carry, cargs[cn + i], bargs[bn + i], yields[1][i], outs[i]], [0] * 5
    elif isinstance(op, ir.CondOp):
        for i, x in enumerate(args[1:]):
            yield [x, *(b.args[i] for b in blocks)], [0] * (1 + len(blocks))
        for i, out in enumerate(outs):
            yield [*(y[i] for y in yields), out], [0] * (1 + len(blocks))
    else:  # remat
        for i, x in enumerate(args):
            yield [x, blocks[0].args[i]], [0, 0]
        for i, out in enumerate(outs):
            yield [yields[0][i], out], [0, 0]


def is_zero(value: SSAValue) -> bool:
    """Whether a value is a broadcast of constant zero (safe to use whole in a reduction)."""
    owner = value.owner
    while isinstance(owner, ir.PrimOp) and owner.primitive_name in (
        "broadcast_in_dim",
        "convert_element_type",
    ):
        owner = owner.args[0].owner
    if isinstance(owner, ir.ConstantOp):
        return not any(owner.value.data)
    return False
