"""Factor sharding rules: the data structure, its notation, and the registry.

A rule describes one op instance with *factors*, Shardy-style: each dimension of each
operand and result is a product of named factors (major to minor). Sharding a factor on a
mesh axis tiles every tensor dimension that contains it. Factor kinds:

- pass-through: tile operands and results together;
- reduce: tile the operands; the results become partial (a pending sum/max/min);
- replicate: never sharded (a sorted, sliced, or windowed dimension).

Notation (also the golden-test text): ``bik,bkj->bij {b=2, i=8, j=16, k=32} reduce={k}``.
A dimension of several factors is parenthesised, ``(ij)``; a dimension of no factor
(size 1) is ``1``; a rank-0 tensor is ``_`` (``_,ij->ij``); a side with no tensors is
empty (``->ij`` for iota). Factors are named i..z then a..h, then the same in capitals.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from partir import ir


class FactorKind(StrEnum):
    """How a factor may be sharded."""

    PASS = "pass"
    REDUCE = "reduce"
    REPLICATE = "replicate"


Dims = tuple[tuple[str, ...], ...]
"""Per dimension of one tensor, the factors composing it, major to minor."""


@dataclass(frozen=True)
class OpRule:
    """Factor description of one op instance."""

    operands: tuple[Dims, ...]
    """Per operand, per dimension, its factors (major to minor); () for a size-1 dim."""
    results: tuple[Dims, ...]
    """Per result, per dimension, its factors."""
    sizes: tuple[tuple[str, int], ...]
    """Every factor and its size, in order of first appearance."""
    reduce: frozenset[str] = frozenset()
    """Reduction factors: sharding one makes the results partial."""
    replicate: frozenset[str] = frozenset()
    """Factors that must stay unsharded."""
    reduction: str = "sum"
    """The kind of pending reduction a reduce factor leaves on the results."""
    _size: dict[str, int] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        self._size.update(self.sizes)

    def size(self, factor: str) -> int:
        """The size of `factor`."""
        return self._size[factor]

    def kind(self, factor: str) -> FactorKind:
        """How `factor` may be sharded."""
        if factor in self.reduce:
            return FactorKind.REDUCE
        if factor in self.replicate:
            return FactorKind.REPLICATE
        return FactorKind.PASS

    @property
    def factors(self) -> tuple[str, ...]:
        """Every factor name, in order of first appearance."""
        return tuple(f for f, _ in self.sizes)

    @property
    def tensors(self) -> tuple[Dims, ...]:
        """Operands then results."""
        return self.operands + self.results

    def check_shapes(
        self, operand_shapes: Sequence[Sequence[int]], result_shapes: Sequence[Sequence[int]]
    ) -> None:
        """Raise ValueError unless each dimension's factors multiply to its size."""
        for what, dims_list, shapes in (
            ("operand", self.operands, operand_shapes),
            ("result", self.results, result_shapes),
        ):
            if len(dims_list) != len(shapes):
                raise ValueError(f"rule {self} has {len(dims_list)} {what}s, op has {len(shapes)}")
            for i, (dims, shape) in enumerate(zip(dims_list, shapes, strict=True)):
                if len(dims) != len(shape):
                    raise ValueError(
                        f"rule {self}: {what} {i} has rank {len(shape)}, rule gives {len(dims)} dims"
                    )
                for d, (factors, size) in enumerate(zip(dims, shape, strict=True)):
                    product = 1
                    for f in factors:
                        product *= self.size(f)
                    if product != size:
                        raise ValueError(
                            f"rule {self}: {what} {i} dim {d} has size {size}, factors give {product}"
                        )

    def __str__(self) -> str:
        def dim(factors: tuple[str, ...]) -> str:
            if not factors:
                return "1"
            return factors[0] if len(factors) == 1 else "(" + "".join(factors) + ")"

        def side(tensors: tuple[Dims, ...]) -> str:
            return ",".join("".join(dim(d) for d in t) or "_" for t in tensors)

        text = f"{side(self.operands)}->{side(self.results)} {{{', '.join(f'{f}={n}' for f, n in self.sizes)}}}"
        if self.reduce:
            text += f" reduce={{{','.join(sorted(self.reduce))}}}"
            if self.reduction != "sum":
                text += f":{self.reduction}"
        if self.replicate:
            text += f" replicate={{{','.join(sorted(self.replicate))}}}"
        return text

    @staticmethod
    def parse(text: str) -> OpRule:
        """Parse the notation :meth:`__str__` prints (factor names are single letters)."""
        m = re.fullmatch(
            r"(.*)->(\S*) \{(.*?)\}(?: reduce=\{([a-zA-Z,]*)\}(?::(\w+))?)?(?: replicate=\{([a-zA-Z,]*)\})?",
            text.strip(),
        )
        if not m:
            raise ValueError(f"not a rule: {text!r}")
        lhs, rhs, sizes, reduce, reduction, replicate = m.groups()

        def tensor(spec: str) -> Dims:
            return tuple(
                () if tok == "1" else tuple(tok.strip("()"))
                for tok in re.findall(r"\([a-zA-Z]+\)|[a-zA-Z]|1", spec)
            )

        def side(spec: str) -> tuple[Dims, ...]:
            return tuple(tensor(t) for t in spec.split(",")) if spec else ()

        pairs = tuple(
            (k.strip(), int(v)) for k, v in (p.split("=") for p in sizes.split(",") if p.strip())
        )
        return OpRule(
            side(lhs), side(rhs), pairs,
            frozenset(filter(None, (reduce or "").split(","))), frozenset(filter(None, (replicate or "").split(","))),
            reduction or "sum",
        )  # fmt: skip


_FACTOR_NAMES = "ijklmnopqrstuvwxyzabcdefgh" + "IJKLMNOPQRSTUVWXYZABCDEFGH"


class RuleBuilder:
    """Builds an `OpRule` for an op of known operand and result shapes, one factor at a time."""

    def __init__(
        self, operand_shapes: Sequence[Sequence[int]], result_shapes: Sequence[Sequence[int]]
    ):
        self.operand_shapes = [tuple(s) for s in operand_shapes]
        self.result_shapes = [tuple(s) for s in result_shapes]
        self._operands: list[list[list[str]]] = [[[] for _ in s] for s in self.operand_shapes]
        self._results: list[list[list[str]]] = [[[] for _ in s] for s in self.result_shapes]
        self._sizes: list[tuple[str, int]] = []
        self._reduce: set[str] = set()
        self._replicate: set[str] = set()
        self.reduction = "sum"

    def _new_name(self) -> str:
        n = len(self._sizes)
        if n >= len(_FACTOR_NAMES):
            raise ValueError(f"a rule supports at most {len(_FACTOR_NAMES)} factors")
        return _FACTOR_NAMES[n]

    def factor(
        self,
        size: int,
        operands: Iterable[tuple[int, int]] = (),
        results: Iterable[tuple[int, int]] = (),
        kind: FactorKind = FactorKind.PASS,
    ) -> str:
        """Add a factor of `size` to the given ``(tensor index, dim)`` operand and result dims.

        Factors are appended to a dimension's list, so add a compound dimension's factors
        major first. A size-1 factor is not recorded (a size-1 dimension has no factor)
        and its name is "".
        """
        if size == 1:
            return ""
        name = self._new_name()
        self._sizes.append((name, size))
        for t, d in operands:
            self._operands[t][d].append(name)
        for t, d in results:
            self._results[t][d].append(name)
        if kind is FactorKind.REDUCE:
            self._reduce.add(name)
        elif kind is FactorKind.REPLICATE:
            self._replicate.add(name)
        return name

    def build(self) -> OpRule:
        """The rule; checks each dimension's factors multiply to its size."""
        rule = OpRule(
            tuple(tuple(tuple(d) for d in t) for t in self._operands),
            tuple(tuple(tuple(d) for d in t) for t in self._results),
            tuple(self._sizes),
            frozenset(self._reduce),
            frozenset(self._replicate),
            self.reduction,
        )
        rule.check_shapes(self.operand_shapes, self.result_shapes)
        return rule


RuleFn = Callable[[ir.PrimOp], OpRule]
"""A rule function: a pure function of an op's operand/result types and parameters."""

RULES: dict[str, RuleFn] = {}
"""Primitive name -> its rule function."""

NO_RULE_PRIMITIVES: frozenset[str] = frozenset({
    "pure_callback", "io_callback", "rng_bit_generator", "rng_uniform", "random_bits",
    "random_seed", "random_fold_in", "random_split",
})  # fmt: skip
"""Primitives deliberately without a rule: a barrier, silently (their operands are used replicated)."""

_warned: set[str] = set()


def register_rule(*primitives: str) -> Callable[[RuleFn], RuleFn]:
    """Register the decorated function as the sharding rule of each named primitive."""

    def wrap(fn: RuleFn) -> RuleFn:
        for name in primitives:
            if (other := RULES.get(name)) is not None:
                raise ValueError(
                    f"primitive {name!r} already has sharding rule {other.__qualname__}; "
                    f"cannot also register {fn.__qualname__}"
                )
            RULES[name] = fn
        return fn

    return wrap


def shapes(op: ir.PrimOp) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]]]:
    """The operand and result shapes of an op."""
    return [ir.shape_of(t) for t in op.operand_types], [ir.shape_of(t) for t in op.result_types]


def get_rule(op: ir.PrimOp) -> OpRule | None:
    """The rule of `op`, or None for a barrier (warned once per unknown primitive)."""
    name = op.primitive_name
    fn = RULES.get(name)
    if fn is None:
        if name not in NO_RULE_PRIMITIVES and name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"primitive {name!r} has no sharding rule; treating it as a propagation barrier "
                "(operands replicated). Add a rule in partir/rules/.",
                stacklevel=2,
            )
        return None
    try:
        return fn(op)
    except ValueError as e:
        if name not in _warned:
            _warned.add(name)
            warnings.warn(
                f"cannot build the sharding rule of {name!r} ({e}); treating it as a barrier",
                stacklevel=2,
            )
        return None
