"""Which conflicts are clashes between tactics, and which are expected resharding.

The propagation engine records a `Conflict` wherever it cannot carry an axis: an op
whose operands and results claim different factors on it, an input seeded twice, a
pinned value reached. Some of these are the point of a tactic. ZeRO-3 stores every
parameter sharded on the data axis, which batch parallelism already uses for the
activations, so each use of a parameter needs it gathered: a conflict at every matmul,
resolved by the all-gathers ZeRO is made of. Others are mistakes: two tactics (or a
tactic and a pin) want one value laid out two ways.

The rule (`conflict_kind`): a conflict is a **clash** when a layout that a tactic (or a
user constraint) *asked for* explicitly is contradicted by another:

- it is at an input (no op): one input was seeded or pinned by two tactics on one axis;
- a claimed value is pinned replicated on the axis by one tactic and another tactic's
  propagation reached it with a tiling;
- a claim comes from no tactic of the schedule (a user constraint, or an origin the
  engine could not name): no tactic chose it, so nothing says the resharding is meant.

Every other conflict is **expected** resharding: each side's layout is a consequence
(by propagation) of some tactic's choice, they meet at an op that cannot follow both,
the earlier tactic's decision is the op's sharding, and lowering moves the other
operand: ZeRO-3's parameter all-gathers after batch parallelism, sequence parallelism's
all-gather into a column-parallel matmul, expert parallelism's all-to-all on the data
axis. Conflicts among one tactic's own claims (ZeRO-2's replicated parameters meeting
its sharded optimizer state) are expected too: the tactic chose both sides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from partir.errors import ShardingConflictError
from partir.passes.propagate import Conflict, Propagator
from partir.plan.history import tactic_label

if TYPE_CHECKING:
    from partir.api.plan import Plan

Kind = Literal["clash", "expected"]

CLASH: Kind = "clash"
EXPECTED: Kind = "expected"


def conflict_kind(propagator: Propagator, conflict: Conflict, n_tactics: int) -> Kind:
    """`"clash"` or `"expected"` for one conflict, by the rule of this module's docstring.

    Args:
      propagator: the engine that recorded the conflict (its origins and pins).
      conflict: the conflict.
      n_tactics: the schedule's length: claims from other indices are no tactic's.
    """
    if conflict.op is None:
        return CLASH
    tactics = {t for _, _, t in conflict.claims}
    if any(not 0 <= t < n_tactics for t in tactics):
        return CLASH
    if len(tactics) == 1:
        return EXPECTED
    axis = conflict.axis
    if any((v, axis) in propagator.pinned for v, _, _ in conflict.claims):
        return CLASH
    return EXPECTED


def counts(kinds: list[str]) -> str:
    """``"0 clashes, 47 expected reshardings"``: the conflicts of a plan, by kind."""
    clashes = sum(k == CLASH for k in kinds)
    expected = len(kinds) - clashes
    return (
        f"{clashes} clash{'es' if clashes != 1 else ''}, "
        f"{expected} expected resharding{'s' if expected != 1 else ''}"
    )


def raise_on_clash(plan: Plan) -> None:
    """`partir.partition(..., strict=True)`: raise `ShardingConflictError` on the plan's
    first clash, naming the tactics, the values they claim and the source line.

    Expected resharding passes: it is what the tactics asked for.
    """
    clashes = [c for c in plan.conflicts if c.kind == CLASH]
    if not clashes:
        return
    first = clashes[0]
    conflict = first.conflict
    names = []
    for t in conflict.tactics:
        if 0 <= t < len(plan.schedule):
            names.append(f"#{t} {tactic_label(plan.schedule[t], 60)}")
        else:
            names.append("a constraint outside the schedule")
    what = (
        f"at {getattr(conflict.op, 'primitive_name', conflict.op.name)}"
        if conflict.op is not None
        else "on an input"
    )
    claims = "; ".join(_short_claim(c, plan) for c in first.claims)
    more = f" ({len(clashes) - 1} more in plan.conflicts)" if len(clashes) > 1 else ""
    raise ShardingConflictError(
        f"partir.partition(strict=True): tactics {' and '.join(names)} clash on mesh axis "
        f"{conflict.axis!r} {what}, {conflict.location}: {claims}{more}. Make the tactics agree "
        "(shard that value one way on the axis, or drop the pin), or partition without "
        "strict=True to let communication resolve it."
    )


def _short_claim(claim: str, plan: Plan) -> str:
    for i, tactic in enumerate(plan.schedule):
        claim = claim.replace(f"tactic #{i} {tactic!r}", f"tactic #{i}")
    return claim
