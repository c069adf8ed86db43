"""Where an op's operands arrive tiled on another factor than its plan: which to follow.

Propagation gives every op one factor per mesh axis, from its planned results, so at a
conflict lowering follows the earlier tactic and reshards the other operands. Sometimes the
other operand's factor is the better one to run the op on: expert parallelism after batch
parallelism on the same axis (GShard, Lepikhin et al. 2020) plans the expert einsum tiled
along the batch (BP came first) while its weights arrive tiled along the experts. Following
the plan all-gathers every expert's weights; following the weights moves the tokens with
one all-to-all each way, which is the dispatch the strategy is known for.

An alternative is taken only when it replicates nothing: every operand it reshards is only
re-tiled (all_to_all or a local slice, never an all_gather or all_reduce), and its operands
send strictly fewer bytes than under the planned sharding. Its results keep the operands'
tiling, and the ops after them follow it while that is cheaper than re-tiling (an
elementwise op between the two expert einsums does not bounce the tokens back and forth);
the first op whose plan wins (the combine einsum) re-tiles them back, with the second
all-to-all. Because nothing is replicated, memory never grows, and Megatron's gathers
(sequence parallelism) and ZeRO's (parameters) stay as planned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from xdsl.ir import Attribute, SSAValue

from partir import ir
from partir.rules import FactorKind, OpRule

Layout = ir.Sharding
FactorAxes = dict[str, list[str]]


def resharding_bytes(
    value_type: Attribute, sizes: Mapping[str, int], actual: Layout, target: Layout
) -> tuple[float, bool]:
    """(bytes one device sends to turn `actual` into `target`, whether anything is replicated).

    Mirrors `reshard`: all_reduce of extra partial axes (2(n-1)/n of the local buffer),
    all_gather of axes a dimension loses ((n-1) local buffers), and an axis that moves to
    another dimension as one all_to_all ((n-1)/n of the local buffer). Slices are free.
    """
    shape = ir.shape_of(value_type)
    local = float(ir.ITEMSIZE[ir.dtype_of(value_type)] * math.prod(shape))
    for axes in actual.dims:
        for a in axes:
            local /= sizes[a]
    sent, replicates = 0.0, False
    extra = [a for a in actual.partial if a not in target.partial]
    if extra:
        n = math.prod(sizes[a] for a in extra)
        sent += 2 * local * (n - 1) / n
        replicates = True
    kept_anywhere = {a for axes in target.dims for a in axes}
    for have, want in zip(actual.dims, target.dims, strict=True):
        k = 0
        while k < min(len(have), len(want)) and have[k] == want[k]:
            k += 1
        for a in have[k:]:
            n = sizes[a]
            if a in kept_anywhere:
                sent += local * (n - 1) / n
            else:
                sent += local * (n - 1)
                local *= n
                replicates = True
    return sent, replicates


def alternatives(
    rule: OpRule,
    actual: Sequence[Layout],
    factor_axes: FactorAxes,
    factor_at: Callable[[OpRule, tuple[str, ...], int, int], str | None],
    sizes: Mapping[str, int],
) -> Iterator[FactorAxes]:
    """Op shardings that move one axis to the pass-through factor an operand tiles it on."""
    owner = {a: f for f, axes in factor_axes.items() for a in axes}
    result_factors = {f for r in rule.results for fs in r for f in fs}
    seen: set[tuple[str, str]] = set()
    for tdims, layout in zip(rule.operands, actual, strict=True):
        for factors, axes in zip(tdims, layout.dims, strict=True):
            before = 1
            for a in axes:
                f = factor_at(rule, tuple(factors), before, sizes[a])
                before *= sizes[a]
                if f is None:
                    break
                current = owner.get(a)
                if current == f or (a, f) in seen:
                    continue
                if current is None and len(rule.operands) != 1:
                    # a one-operand op the plan replicates (a transpose of a split weight)
                    # may keep its operand's tiling; elsewhere an axis the plan leaves
                    # unused stays so (optimize-collectives reuses gathers across such ops)
                    continue
                if rule.kind(f) is not FactorKind.PASS or f not in result_factors:
                    continue
                seen.add((a, f))
                alt = {g: [x for x in xs if x != a] for g, xs in factor_axes.items()}
                alt.setdefault(f, []).append(a)
                yield {g: xs for g, xs in alt.items() if xs}


def follow_operands(
    rule: OpRule,
    args: Sequence[SSAValue],
    actual: Sequence[Layout],
    factor_axes: FactorAxes,
    carried: set[str],
    lowering: Any,
) -> FactorAxes:
    """`factor_axes`, or a cheaper alternative that replicates nothing (module docstring).

    Args:
      rule: the op's factor rule.
      args: the op's operands (for their types).
      actual: the layout each operand arrives in.
      factor_axes: the op's planned sharding: factor -> mesh axes.
      carried: partial axes the op carries through (a linear op).
      lowering: the lowering in progress (its sizes, `tensor_layout`, `_valid`, engine).
    """
    low = lowering
    sizes = low.sizes

    def cost(fa: FactorAxes) -> tuple[float, bool]:
        total, replicates = 0.0, False
        for i, v in enumerate(args):
            keep = tuple(a for a in actual[i].partial if a in carried)
            target = ir.Sharding(low.tensor_layout(rule.operands[i], fa), keep)
            sent, rep = resharding_bytes(v.type, sizes, actual[i], target)
            total += sent
            replicates |= rep
        return total, replicates

    best = factor_axes
    best_cost, _ = cost(factor_axes)
    if best_cost == 0:
        return factor_axes
    for alt in alternatives(rule, actual, factor_axes, low.prop._factor_at, sizes):
        alt = low._valid(rule, alt)
        c, replicates = cost(alt)
        if not replicates and c < best_cost * (1 - 1e-9):
            best, best_cost = alt, c
    return best
