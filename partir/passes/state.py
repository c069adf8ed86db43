"""What the propagation engine decides: `ShardingState`, one dataclass that copies itself
field by field, with the records it keeps (`Origin`, `Conflict`) and the `Misaligned` claim.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xdsl.dialects.shard import ReductionKind
from xdsl.ir import Operation, SSAValue


@dataclass(frozen=True)
class Origin:
    """Why a value holds an axis: the tactic that decided it, and through which op."""

    tactic: int
    """Index of the tactic in the schedule."""
    op: Operation | None = None
    """The op propagation went through; None for a seed."""
    source: SSAValue | None = None
    """The value the axis came from, across `op`; None for a seed."""
    partial: bool = False
    """The value became partial on the axis (a reduce factor or a linear op)."""


@dataclass(frozen=True)
class Conflict:
    """Tactics disagree about one op (or one input) on one mesh axis."""

    axis: str
    """The contested mesh axis."""
    op: Operation | None
    """The op where propagation stopped (None when an input was seeded twice)."""
    claims: tuple[tuple[SSAValue, str, int], ...]
    """The competing claims: (value, what it asks for, tactic index)."""
    tactics: tuple[int, ...]
    """The tactics behind the claims, in schedule order."""
    location: str
    """The user's source line of the op."""


@dataclass(frozen=True)
class Misaligned:
    """The claim of a value whose axis fits no factor of its dim (a typed sentinel: it
    never equals a factor name, and it names the value that made it)."""

    index: int
    """The value's index in its edge."""


Claim = str | Misaligned
"""What a value claims on an axis in one op: a factor name, or `Misaligned`."""

_COPY = "copy"
"""Metadata key of a `ShardingState` field: the function that copies its value."""


def _copied(copy: Callable[[Any], Any]) -> dict[str, Callable[[Any], Any]]:
    return {_COPY: copy}


def _copy_nested(d: dict[Any, list[list[str]]]) -> dict[Any, list[list[str]]]:
    return {k: [list(axes) for axes in dims] for k, dims in d.items()}


def _copy_lists(d: dict[Any, list[str]]) -> dict[Any, list[str]]:
    return {k: list(v) for k, v in d.items()}


def _same(x: Any) -> Any:
    return x


@dataclass
class ShardingState:
    """Everything propagation changes, and nothing it does not (the program, the mesh
    and the edges stay with the `Propagator`).

    Every field names how to copy its value (`copy`), so a snapshot shares no mutable
    container with its original: a field without a copier fails at import.
    """

    dims: dict[SSAValue, list[list[str]]] = field(
        default_factory=dict, metadata=_copied(_copy_nested)
    )
    """value -> per dimension, the mesh axes tiling it (major to minor)."""
    partial: dict[SSAValue, list[str]] = field(default_factory=dict, metadata=_copied(_copy_lists))
    """value -> the axes it is a pending reduction over."""
    reduction: dict[SSAValue, ReductionKind] = field(default_factory=dict, metadata=_copied(dict))
    """value -> the kind of its pending reduction (absent: sum)."""
    pinned: set[tuple[SSAValue, str]] = field(default_factory=set, metadata=_copied(set))
    """(value, axis) kept replicated."""
    pinned_values: set[SSAValue] = field(default_factory=set, metadata=_copied(set))
    """The values with at least one pin."""
    origin: dict[tuple[SSAValue, str], Origin] = field(default_factory=dict, metadata=_copied(dict))
    """(value, axis) -> why the value holds the axis (`Origin` is frozen: entries are shared)."""
    conflicts: list[Conflict] = field(default_factory=list, metadata=_copied(list))
    """Every conflict recorded, in order (`Conflict` is frozen)."""
    conflict_keys: set[tuple[int, str]] = field(default_factory=set, metadata=_copied(set))
    """(op or value id, axis) of each conflict, so each is recorded once."""
    barriers: collections.Counter[str] = field(
        default_factory=collections.Counter, metadata=_copied(collections.Counter)
    )
    """Primitives without a rule, by how many ops of them propagation cannot cross."""
    visits: int = field(default=0, metadata=_copied(_same))
    """Edge visits so far: propagation work, linear in the program size."""

    def copy(self) -> ShardingState:
        """A deep-enough copy: new containers, shared immutable entries."""
        return ShardingState(
            **{f.name: f.metadata[_COPY](getattr(self, f.name)) for f in dataclasses.fields(self)}
        )


def _check_copiers(cls: type) -> None:
    missing = [f.name for f in dataclasses.fields(cls) if _COPY not in f.metadata]
    if missing:
        raise TypeError(
            f"{cls.__name__} fields {missing} name no copier: give them metadata=_copied(...)"
        )


_check_copiers(ShardingState)
