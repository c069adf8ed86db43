"""The `spmd` dialect: the device-local view's explicit collectives.

In a device-local program every value has its per-device (local) shape and the
ordinary `partir.prim` ops run on those shapes. Communication is explicit:

    spmd.all_gather %x dim 0 axes ["batch"]           tile -> whole along dim 0
    spmd.all_slice %x dim 0 axes ["batch"]            whole -> local tile (no communication)
    spmd.all_reduce %x kind sum axes ["model"]        partial -> whole
    spmd.reduce_scatter %x dim 0 kind sum axes ["batch"]
    spmd.all_to_all %x src 0 dst 1 axes ["model"]     tiled on src -> tiled on dst
    spmd.collective_permute %x pairs [[0, 1], [1, 0]] axes ["x"]

Verifiers check the local shapes against the axis sizes of the enclosing module's
`partir.mesh`. The algebra the optimizer relies on: all_slice . all_gather = id,
all_slice . all_reduce = reduce_scatter, all_slice(e) . all_gather(d) = all_to_all(d -> e).
It is written here as the ops' canonicalization patterns (`FuseSliceOfCollective`,
`SplitReduce`), so `partir opt -p canonicalize` applies it, and `partir-optimize-collectives`
applies it with the rewrites that need the sharding rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import ArrayAttr, IntAttr, StringAttr, TensorType
from xdsl.dialects.shard import ReductionKind, ReductionKindAttr
from xdsl.ir import Attribute, Dialect, Operation, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_op_definition,
    operand_def,
    opt_prop_def,
    prop_def,
    result_def,
    traits_def,
)
from xdsl.parser import Parser
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern
from xdsl.printer import Printer
from xdsl.rewriter import InsertPoint
from xdsl.traits import HasCanonicalizationPatternsTrait, Pure
from xdsl.utils.exceptions import VerifyException

from partir.ir.attrs import REDUCTIONS
from partir.ir.dtypes import shape_of
from partir.ir.ops import PrimOp, _print_location, module_mesh


class CollectiveOp(IRDLOperation):
    """Base of the spmd collectives: one operand, one result, a group of mesh axes."""

    FIELDS: ClassVar[tuple[str, ...]] = ()
    """The keyword fields printed between the operand and the type, in order."""

    input = operand_def(TensorType)
    result = result_def(TensorType)
    axes = prop_def(ArrayAttr[StringAttr])
    traits = traits_def(Pure())

    def __init__(
        self,
        input: SSAValue,
        result_type: Attribute,
        axes: Sequence[str],
        **fields: Any,
    ):
        props: dict[str, Attribute] = {"axes": ArrayAttr([StringAttr(a) for a in axes])}
        for key, value in fields.items():
            if key == "kind":
                props[key] = ReductionKindAttr(ReductionKind(str(value)))
            elif key == "pairs":
                props[key] = ArrayAttr(
                    [ArrayAttr([IntAttr(int(a)), IntAttr(int(b))]) for a, b in value]
                )
            else:
                props[key] = IntAttr(int(value))
        super().__init__(operands=[input], result_types=[result_type], properties=props)

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The mesh axes whose devices form each communication group."""
        return tuple(a.data for a in self.axes)

    def _int(self, key: str) -> int:
        attr = self.properties[key]
        assert isinstance(attr, IntAttr)
        return attr.data

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_operand(self.input)
        for key in self.FIELDS:
            attr = self.properties[key]
            if isinstance(attr, IntAttr):
                printer.print_string(f" {key} {attr.data}")
            elif isinstance(attr, ReductionKindAttr):
                printer.print_string(f" {key} {attr.data.value}")
            else:
                assert isinstance(attr, ArrayAttr)
                pairs = ", ".join(f"[{p.data[0].data}, {p.data[1].data}]" for p in attr.data)  # type: ignore[attr-defined]
                printer.print_string(f" {key} [{pairs}]")
        printer.print_string(" axes [" + ", ".join(f'"{a}"' for a in self.axis_names) + "]")
        printer.print_string(" : ")
        printer.print_attribute(self.input.type)
        printer.print_string(" -> ")
        printer.print_attribute(self.result.type)
        _print_location(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> CollectiveOp:
        pos = parser.pos
        operand = parser.parse_unresolved_operand()
        fields: dict[str, object] = {}
        for key in cls.FIELDS:
            parser.parse_keyword(key)
            if key == "kind":
                # any reduction kind xDSL's shard dialect names parses; the verifier
                # then says which of them partir supports
                kind_pos = parser.pos
                kind = parser.parse_identifier()
                if kind not in set(ReductionKind):
                    parser.raise_error(
                        f"'{cls.name}' op kind must be one of {REDUCTIONS}, got: {kind}",
                        kind_pos,
                        parser.pos,
                    )
                fields[key] = kind
            elif key == "pairs":
                fields[key] = parser.parse_comma_separated_list(
                    Parser.Delimiter.SQUARE,
                    lambda: tuple(
                        parser.parse_comma_separated_list(
                            Parser.Delimiter.SQUARE, parser.parse_integer
                        )
                    ),
                )
            else:
                fields[key] = parser.parse_integer()
        parser.parse_keyword("axes")
        axes = parser.parse_comma_separated_list(Parser.Delimiter.SQUARE, parser.parse_str_literal)
        parser.parse_punctuation(":")
        in_type = parser.parse_type()
        parser.parse_punctuation("->")
        out_type = parser.parse_type()
        (value,) = parser.resolve_operands([operand], [in_type], pos)
        return cls(value, out_type, axes, **fields)  # type: ignore[arg-type]

    def _group_size(self) -> int:
        if not self.axis_names:
            raise VerifyException(f"'{self.name}' op expects at least one mesh axis")
        if len(set(self.axis_names)) != len(self.axis_names):
            raise VerifyException(f"'{self.name}' op repeats a mesh axis, got: {self.axis_names}")
        return module_mesh(self).size_of(self.axis_names)

    def _expect(self, expected: Sequence[int]) -> None:
        in_t, out_t = self.input.type, self.result.type
        assert isinstance(in_t, TensorType) and isinstance(out_t, TensorType)
        if in_t.element_type != out_t.element_type:
            raise VerifyException(f"'{self.name}' op changes the element type: {in_t} -> {out_t}")
        if tuple(expected) != shape_of(out_t):
            raise VerifyException(
                f"'{self.name}' op result shape {shape_of(out_t)} does not match the operand "
                f"{shape_of(in_t)} over axes {self.axis_names}, expected: {tuple(expected)}"
            )

    def _dim(self, key: str) -> int:
        d = self._int(key)
        rank = len(shape_of(self.input.type))
        if not 0 <= d < rank:
            raise VerifyException(
                f"'{self.name}' op {key} {d} out of range for rank-{rank} operand"
            )
        return d


def _scaled(shape: Sequence[int], dim: int, factor: float) -> list[int]:
    out = list(shape)
    out[dim] = int(out[dim] * factor)
    return out


class _SliceCanonicalization(HasCanonicalizationPatternsTrait):
    @classmethod
    def get_canonicalization_patterns(cls) -> tuple[RewritePattern, ...]:
        return (FuseSliceOfCollective(),)


class _ReduceCanonicalization(HasCanonicalizationPatternsTrait):
    @classmethod
    def get_canonicalization_patterns(cls) -> tuple[RewritePattern, ...]:
        return (SplitReduce(),)


@irdl_op_definition
class AllGatherOp(CollectiveOp):
    """Concatenate the local tiles of the group along `dim` (result is `n` times larger)."""

    name = "spmd.all_gather"
    FIELDS: ClassVar[tuple[str, ...]] = ("dim",)
    dim = prop_def(IntAttr)

    def verify_(self) -> None:
        n = self._group_size()
        self._expect(_scaled(shape_of(self.input.type), self._dim("dim"), n))


@irdl_op_definition
class AllSliceOp(CollectiveOp):
    """Keep this device's tile along `dim`: a local dynamic slice, no communication."""

    name = "spmd.all_slice"
    FIELDS: ClassVar[tuple[str, ...]] = ("dim",)
    dim = prop_def(IntAttr)
    traits = traits_def(Pure(), _SliceCanonicalization())

    def verify_(self) -> None:
        n = self._group_size()
        d = self._dim("dim")
        size = shape_of(self.input.type)[d]
        if size % n:
            raise VerifyException(
                f"'{self.name}' op dim {d} of size {size} is not divisible by {n}"
            )
        self._expect(_scaled(shape_of(self.input.type), d, 1 / n))


@irdl_op_definition
class AllReduceOp(CollectiveOp):
    """Reduce (sum, max or min) the group's values; every device gets the result."""

    name = "spmd.all_reduce"
    FIELDS: ClassVar[tuple[str, ...]] = ("kind",)
    kind = prop_def(ReductionKindAttr)
    traits = traits_def(Pure(), _ReduceCanonicalization())

    def verify_(self) -> None:
        self._group_size()
        if self.kind.data not in REDUCTIONS:
            raise VerifyException(
                f"'{self.name}' op kind must be one of {REDUCTIONS}, got: {self.kind.data}"
            )
        self._expect(shape_of(self.input.type))


@irdl_op_definition
class ReduceScatterOp(CollectiveOp):
    """Reduce the group's values and keep this device's tile along `dim`."""

    name = "spmd.reduce_scatter"
    FIELDS: ClassVar[tuple[str, ...]] = ("dim", "kind")
    dim = prop_def(IntAttr)
    kind = prop_def(ReductionKindAttr)

    def verify_(self) -> None:
        n = self._group_size()
        d = self._dim("dim")
        size = shape_of(self.input.type)[d]
        if size % n:
            raise VerifyException(
                f"'{self.name}' op dim {d} of size {size} is not divisible by {n}"
            )
        if self.kind.data not in REDUCTIONS:
            raise VerifyException(
                f"'{self.name}' op kind must be one of {REDUCTIONS}, got: {self.kind.data}"
            )
        self._expect(_scaled(shape_of(self.input.type), d, 1 / n))


@irdl_op_definition
class AllToAllOp(CollectiveOp):
    """Re-tile: gather along `src` and keep this device's tile along `dst`."""

    name = "spmd.all_to_all"
    FIELDS: ClassVar[tuple[str, ...]] = ("src", "dst")
    src = prop_def(IntAttr)
    dst = prop_def(IntAttr)

    def verify_(self) -> None:
        n = self._group_size()
        src, dst = self._dim("src"), self._dim("dst")
        if src == dst:
            raise VerifyException(f"'{self.name}' op src and dst must differ, got: {src}")
        size = shape_of(self.input.type)[dst]
        if size % n:
            raise VerifyException(
                f"'{self.name}' op dst dim {dst} of size {size} is not divisible by {n}"
            )
        self._expect(_scaled(_scaled(shape_of(self.input.type), src, n), dst, 1 / n))


@irdl_op_definition
class CollectivePermuteOp(CollectiveOp):
    """Send this device's value to another device of the group, per (source, target) pair."""

    name = "spmd.collective_permute"
    FIELDS: ClassVar[tuple[str, ...]] = ("pairs",)
    pairs = opt_prop_def(ArrayAttr)

    def verify_(self) -> None:
        n = self._group_size()
        self._expect(shape_of(self.input.type))
        seen_src: set[int] = set()
        seen_dst: set[int] = set()
        for pair in self.pairs.data if self.pairs else ():
            a, b = (p.data for p in pair.data)  # type: ignore[attr-defined]
            if not (0 <= a < n and 0 <= b < n):
                raise VerifyException(f"'{self.name}' op pair ({a}, {b}) outside a group of {n}")
            if a in seen_src or b in seen_dst:
                raise VerifyException(
                    f"'{self.name}' op pairs repeat a source or target, got: ({a}, {b})"
                )
            seen_src.add(a)
            seen_dst.add(b)


COLLECTIVES: tuple[type[CollectiveOp], ...] = (
    AllGatherOp, AllSliceOp, AllReduceOp, ReduceScatterOp, AllToAllOp, CollectivePermuteOp,
)  # fmt: skip

Spmd = Dialect("spmd", list(COLLECTIVES), [])
"""The device-local dialect's collectives."""

# ---------------------------------------------------------------------------------------
# Canonicalization: the algebra of the collectives, as rewrite patterns (`partir opt -p
# canonicalize` applies them; so does `partir-optimize-collectives`, with more)
# ---------------------------------------------------------------------------------------


def single_use(op: Operation) -> bool:
    """Whether `op`'s one result has exactly one use (a rewrite may then remove it)."""
    return sum(1 for _ in op.results[0].uses) == 1


def _fuse(rw: PatternRewriter, op: AllSliceOp, producer: Operation, new: Operation | None) -> bool:
    """Replace the pair `producer` -> `op` by `new` (None: by `producer`'s input)."""
    if new is None:
        rw.replace_all_uses_with(op.result, producer.operands[0])
    else:
        copy_why(op, new)
        rw.insert(new, InsertPoint.before(op))
        rw.replace_all_uses_with(op.result, new.results[0])
    rw.erase(op)
    rw.erase(producer)
    return True


def _rewrite_slice(op: AllSliceOp, rw: PatternRewriter) -> bool:
    producer = op.input.owner
    axes = op.axis_names
    d = op.dim.data
    if (
        isinstance(producer, AllReduceOp)
        and single_use(producer)
        and set(axes) <= set(producer.axis_names)
        and producer.kind.data == "sum"
    ):
        value = producer.input
        rest = [a for a in producer.axis_names if a not in axes]
        if rest:
            # the axes not sliced are still all-reduced, before the scatter
            inner = AllReduceOp(value, value.type, rest, kind="sum")
            copy_why(producer, inner)
            rw.insert(inner, InsertPoint.before(producer))
            value = inner.result
        return _fuse(
            rw,
            op,
            producer,
            ReduceScatterOp(value, op.result.type, list(axes), dim=d, kind="sum"),
        )
    if isinstance(producer, AllGatherOp) and single_use(producer) and producer.axis_names == axes:
        if producer.dim.data == d:
            return _fuse(rw, op, producer, None)
        src = producer.dim.data
        return _fuse(
            rw,
            op,
            producer,
            AllToAllOp(producer.input, op.result.type, list(axes), src=src, dst=d),
        )
    return False


def _split_reduce(op: AllReduceOp, rw: PatternRewriter) -> bool:
    """all_reduce whose users are all_slices on one dim and reduce_sums over that dim."""
    if op.kind.data != "sum":
        return False
    users = [use.operation for use in op.result.uses]
    slices = [u for u in users if isinstance(u, AllSliceOp)]
    sums = [u for u in users if isinstance(u, PrimOp) and u.primitive_name == "reduce_sum"]
    if not slices or not sums or len(slices) + len(sums) != len(users):
        return False
    dims = {s.dim.data for s in slices}
    if len(dims) != 1 or any(s.axis_names != op.axis_names for s in slices):
        return False
    (d,) = dims
    if any(d not in tuple(s.params["axes"]) for s in sums):
        return False
    scatter = ReduceScatterOp(
        op.input, slices[0].result.type, list(op.axis_names), dim=d, kind="sum"
    )
    copy_why(slices[0], scatter)
    rw.insert(scatter, InsertPoint.before(op))
    for s in slices:
        rw.replace_all_uses_with(s.result, scatter.result)
        rw.erase(s)
    for old in sums:
        local = PrimOp(
            "reduce_sum", [scatter.result], list(old.result_types), old.params, old.location
        )
        reduced = AllReduceOp(local.outs[0], old.result_types[0], list(op.axis_names), kind="sum")
        copy_why(op, reduced)
        reduced.location = old.location
        rw.insert(local, InsertPoint.before(old))
        rw.insert(reduced, InsertPoint.before(old))
        rw.replace_all_uses_with(old.results[0], reduced.result)
        rw.erase(old)
    rw.erase(op)
    return True


def copy_why(src: Operation, dst: Operation) -> None:
    """Give `dst` the source location and ``partir.why`` (what it converts) of `src`."""
    why = src.attributes.get("partir.why")
    if isinstance(why, StringAttr):
        dst.attributes["partir.why"] = why
    dst.location = src.location


class FuseSliceOfCollective(RewritePattern):
    """all_slice of an all_reduce -> reduce_scatter; of an all_gather on its dim -> the
    gather's input; on another dim -> all_to_all."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AllSliceOp, rewriter: PatternRewriter) -> None:
        _rewrite_slice(op, rewriter)


class SplitReduce(RewritePattern):
    """An all_reduce feeding only slices on one dim and reduce_sums over it ->
    reduce_scatter, with the sums reduced after."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: AllReduceOp, rewriter: PatternRewriter) -> None:
        _split_reduce(op, rewriter)
