"""Dimension classes: the (value, dim) pairs propagation ties together.

Two tensor dimensions whose major factor is the same factor of one op's rule (a matmul's
contracting dim in both operands, an elementwise op's dims, a loop carry's dims) are in
one class, transitively: a union-find over every edge of the propagation engine (the op
rules and the region identity edges). Seeding any member of a class on an axis carries the
axis to the others unless a conflict stops it. An optimizer-state leaf
(``opt_state/*/mu/X``, the presets' `OPTIMIZER_STATE` layout) is joined to its parameter
(``params/X``) dim by dim, as the presets shard state with its parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from xdsl.ir import Operation, SSAValue

from partir import ir
from partir.passes.edges import Edge
from partir.rules import FactorKind, OpRule
from partir.tactics.manual import TacticContext
from partir.tactics.presets import OPTIMIZER_STATE
from partir.tactics.selectors import compile_selector

Key = tuple[SSAValue, int]
"""A tensor dimension: (value, dim)."""


class UnionFind:
    """Disjoint sets of tensor dimensions."""

    def __init__(self) -> None:
        self.parent: dict[Key, Key] = {}

    def find(self, x: Key) -> Key:
        """The representative of `x`'s class."""
        parent = self.parent
        root = x
        while root in parent:
            root = parent[root]
        while x in parent and parent[x] != root:  # path compression
            parent[x], x = root, parent[x]
        return root

    def union(self, a: Key, b: Key) -> None:
        """Put `a` and `b` in one class."""
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def edges(ctx: TacticContext) -> Iterator[Edge]:
    """Every edge of the propagation engine, once each."""
    seen: set[int] = set()
    # the engine's own edges: exactly the rules propagation uses
    for bucket in ctx.propagator._edges.values():
        for edge in bucket:
            if id(edge) not in seen:
                seen.add(id(edge))
                yield edge


def dimension_classes(ctx: TacticContext) -> UnionFind:
    """The classes of the program's tensor dimensions (see the module docstring)."""
    uf = UnionFind()
    for edge in edges(ctx):
        rule = edge.rule
        first: dict[str, Key] = {}
        for v, tdims in zip(edge.values, rule.tensors, strict=True):
            for d, factors in enumerate(tdims):
                if not factors or rule.kind(factors[0]) is FactorKind.REPLICATE:
                    continue
                f = factors[0]
                if f in first:
                    uf.union(first[f], (v, d))
                else:
                    first[f] = (v, d)
    by_path = dict(zip(ctx.input_paths, ctx.inputs, strict=True))
    for path, value in zip(ctx.input_paths, ctx.inputs, strict=True):
        target = param_path(path)
        param = by_path.get(target) if target != path else None
        if param is None or ir.shape_of(param.type) != ir.shape_of(value.type):
            continue
        for d in range(len(ir.shape_of(value.type))):
            uf.union((value, d), (param, d))
    return uf


def op_rules(ctx: TacticContext) -> dict[Operation, OpRule]:
    """Each primitive op's sharding rule, as the propagation engine built it (so that
    lowering the program once per candidate does not rebuild them)."""
    return {e.op: e.rule for e in edges(ctx) if isinstance(e.op, ir.PrimOp)}


_STATE_ROOTS = [compile_selector(s) for s in OPTIMIZER_STATE]


def param_path(path: str) -> str:
    """The parameter an optimizer-state leaf belongs to (``opt_state/0/mu/X`` ->
    ``params/X``), or the path itself."""
    for rx in _STATE_ROOTS:
        m = rx.match(path + "/")
        if m:
            return "params/" + path[m.end() :]
    return path


_NUMBER = re.compile(r"(?<=/)\d+(?=/|$)")


def pattern(path: str) -> str:
    """`path` with every numeric component (a layer index) replaced by ``*``."""
    return _NUMBER.sub("*", path)


def numbers(path: str) -> tuple[str, ...]:
    """The numeric components of `path`."""
    return tuple(_NUMBER.findall(path))
