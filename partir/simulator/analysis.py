"""What the simulator's analyses share: the list of their caches, and dead-code removal as
XLA does it (a leaf module, so the walk, fusion and memory analyses import it, not each
other)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from xdsl.ir import Operation

MEMOS: list[dict[Any, Any]] = []
"""Other modules' caches that `clear_caches` empties too (the memory analysis registers one)."""


def dead_ops(ops: Sequence[Operation]) -> set[Operation]:
    """The ops of one block whose results nothing uses, transitively (XLA removes them).

    Args:
      ops: the ops of one block, in order.
    """
    dead: set[Operation] = set()
    work = []
    for op in ops:
        results = op.results
        if results and all(r.first_use is None for r in results):
            work.append(op)
    while work:
        op = work.pop()
        if op in dead:
            continue
        dead.add(op)
        for v in op.operands:
            owner = v.owner
            if isinstance(owner, Operation) and owner not in dead and owner.results:
                if all(u.operation in dead for r in owner.results for u in r.uses):
                    work.append(owner)
    return dead
