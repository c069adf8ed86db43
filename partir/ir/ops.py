"""The `partir` dialect: the global (unpartitioned) view of a JAX program.

One generic op per primitive application (`partir.prim`), exact constants
(`partir.constant`), and region ops for the primitives that carry sub-programs
(`partir.scan`, `partir.while`, `partir.cond`, `partir.remat`) terminated by `partir.yield`.
Every op keeps the user's source line as its xDSL location.

    %3 = partir.prim dot_general(%1, %2) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32] : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32> loc("mlp"("model.py":12:8))
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Sequence
from typing import Any, ClassVar

from xdsl.dialects.builtin import StringAttr, TensorType, UnknownLoc
from xdsl.ir import Attribute, Block, Data, Dialect, Operation, Region, SSAValue
from xdsl.irdl import (
    IRDLOperation,
    irdl_attr_definition,
    irdl_op_definition,
    prop_def,
    result_def,
    traits_def,
    var_operand_def,
    var_region_def,
    var_result_def,
)
from xdsl.parser import AttrParser, Parser
from xdsl.printer import Printer
from xdsl.traits import IsTerminator
from xdsl.utils.exceptions import VerifyException

from partir.ir.attrs import MeshAttr, ShardingAttr
from partir.ir.constants import constant_bytes, format_constant
from partir.ir.dtypes import dtype_of, shape_of
from partir.ir.params import ParamsAttr, format_params, parse_params
from partir.ir.types import KeyType
from partir.ir.verify import verify_value_shardings

COMPACT: contextvars.ContextVar[bool] = contextvars.ContextVar("partir_compact", default=False)
"""While True, ops print `[...]` in place of their parameters (readable, not parseable)."""


# ---------------------------------------------------------------------------------------
# Shared printing and parsing
# ---------------------------------------------------------------------------------------


@functools.cache
def _primitive_attr(name: str) -> StringAttr:
    return StringAttr(name)


def _as_params(params: ParamsAttr | tuple[tuple[str, Any], ...]) -> ParamsAttr:
    return params if isinstance(params, ParamsAttr) else ParamsAttr(params)


def _print_params(printer: Printer, params: ParamsAttr) -> None:
    if params.data:
        printer.print_string(" [...]" if COMPACT.get() else f" [{format_params(params.data)}]")


def _parse_params(parser: Parser) -> ParamsAttr:
    if parser.parse_optional_punctuation("[") is None:
        return ParamsAttr(())
    return ParamsAttr(parse_params(parser, "]"))


def _print_tail(printer: Printer, op: IRDLOperation, reserved: Sequence[str] = ()) -> None:
    """Print ` {attrs} : (in) -> out loc(...)`, the common end of every partir op."""
    attrs = {k: v for k, v in op.attributes.items() if k not in reserved}
    if attrs:
        printer.print_string(" ")
        printer.print_attr_dict(attrs)
    printer.print_string(" : ")
    printer.print_function_type(op.operand_types, op.result_types)
    _print_location(printer, op)


def _print_location(printer: Printer, op: IRDLOperation) -> None:
    if not isinstance(op.location, UnknownLoc):
        printer.print_string(" ")
        printer.print_attribute(op.location)


def _parse_tail(
    parser: Parser, unresolved: Sequence[Any], pos: int
) -> tuple[Sequence[SSAValue], list[Attribute], dict[str, Attribute]]:
    attrs = parser.parse_optional_attr_dict()
    parser.parse_punctuation(":")
    ftype = parser.parse_function_type()
    operands = parser.resolve_operands(unresolved, ftype.inputs.data, pos)  # type: ignore[arg-type]
    return operands, list(ftype.outputs.data), attrs


def _parse_operands(parser: Parser) -> tuple[list[Any], int]:
    pos = parser.pos
    operands = parser.parse_comma_separated_list(
        Parser.Delimiter.PAREN, parser.parse_unresolved_operand
    )
    return operands, pos


# ---------------------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------------------


@irdl_op_definition
class PrimOp(IRDLOperation):
    """One application of a JAX primitive, generic over primitives.

    The primitive's name and parameters are properties; rules, passes and the backend
    dispatch on the name. A primitive partir has never heard of still round-trips.
    """

    name = "partir.prim"
    args = var_operand_def(TensorType)
    outs = var_result_def(TensorType)
    primitive = prop_def(StringAttr)
    params = prop_def(ParamsAttr)

    def __init__(
        self,
        primitive: str,
        args: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        params: ParamsAttr | tuple[tuple[str, Any], ...] = (),
        location: Attribute | None = None,
    ):
        # Operation.__init__ directly: IRDL's generic argument handling costs more than
        # the rest of tracing, and one variadic operand/result group needs none of it.
        Operation.__init__(
            self,
            operands=args,
            result_types=result_types,
            properties={"primitive": _primitive_attr(primitive), "params": _as_params(params)},
            location=location,  # type: ignore[arg-type]
        )

    @property
    def primitive_name(self) -> str:
        """The JAX primitive's name, e.g. ``"dot_general"``."""
        return self.primitive.data

    def print(self, printer: Printer) -> None:
        printer.print_string(" ")
        printer.print_identifier_or_string_literal(self.primitive.data)
        printer.print_string("(")
        printer.print_list(self.args, printer.print_operand)
        printer.print_string(")")
        _print_params(printer, self.params)
        _print_tail(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> PrimOp:
        primitive = parser.parse_identifier_or_str_literal()
        unresolved, pos = _parse_operands(parser)
        params = _parse_params(parser)
        operands, results, attrs = _parse_tail(parser, unresolved, pos)
        op = cls(primitive, operands, results, params)
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        verify_value_shardings(self)


@irdl_attr_definition
class ConstantValueAttr(Data[bytes]):
    """The raw little-endian bytes of a constant tensor (generic form: hex)."""

    name = "partir.bytes"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> bytes:
        parser.parse_punctuation("<")
        text = parser.parse_str_literal()
        parser.parse_punctuation(">")
        return bytes.fromhex(text[2:])

    def print_parameter(self, printer: Printer) -> None:
        printer.print_string(f'<"0x{self.data.hex().upper()}">')


def _parse_element_text(parser: Parser) -> str:
    sign = "-" if parser.parse_optional_characters("-") is not None else ""
    if (number := parser.parse_optional_number()) is not None:
        return sign + repr(number)
    word = parser.parse_identifier()
    if word not in ("inf", "nan", "true", "false"):
        parser.raise_error(f"expected a constant element, got {word!r}")
    return sign + word


@irdl_op_definition
class ConstantOp(IRDLOperation):
    """A constant tensor (a literal or a closed-over array), stored bit-exactly."""

    name = "partir.constant"
    value = prop_def(ConstantValueAttr)
    result = result_def(TensorType)

    def __init__(self, raw: bytes, result_type: TensorType, location: Attribute | None = None):
        super().__init__(result_types=[result_type], properties={"value": ConstantValueAttr(raw)})
        if location is not None:
            self.location = location  # type: ignore[assignment]

    @property
    def dtype(self) -> str:
        """The constant's dtype name."""
        return dtype_of(self.result.type)

    @property
    def shape(self) -> tuple[int, ...]:
        """The constant's shape."""
        return shape_of(self.result.type)

    def print(self, printer: Printer) -> None:
        numel = 1
        for s in self.shape:
            numel *= s
        printer.print_string(" " + format_constant(self.value.data, self.dtype, numel))
        if self.attributes:
            printer.print_string(" ")
            printer.print_attr_dict(self.attributes)
        printer.print_string(" : ")
        printer.print_attribute(self.result.type)
        _print_location(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> ConstantOp:
        splat = parser.parse_optional_keyword("splat") is not None
        values: list[str] | str
        if (hex_text := parser.parse_optional_str_literal()) is not None:
            values = hex_text
        elif parser.parse_optional_punctuation("[") is not None:
            values = []
            while parser.parse_optional_punctuation("]") is None:
                values.append(_parse_element_text(parser))
                parser.parse_optional_punctuation(",")
        else:
            values = [_parse_element_text(parser)]
        attrs = parser.parse_optional_attr_dict()
        parser.parse_punctuation(":")
        result_type = parser.parse_type()
        if not isinstance(result_type, TensorType):
            parser.raise_error(f"'partir.constant' expects a tensor type, got: {result_type}")
        numel = 1
        for s in result_type.get_shape():
            numel *= s
        raw = constant_bytes(values, dtype_of(result_type), numel, splat)
        op = cls(raw, result_type)
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        from partir.ir.dtypes import ITEMSIZE

        numel = 1
        for s in self.shape:
            numel *= s
        expected = numel * ITEMSIZE[self.dtype]
        if len(self.value.data) != expected:
            raise VerifyException(
                f"'partir.constant' op holds {len(self.value.data)} bytes for a "
                f"{self.result.type} value, expected: {expected}"
            )
        verify_value_shardings(self)


@irdl_op_definition
class YieldOp(IRDLOperation):
    """Terminator of a region op's block: the values the region produces."""

    name = "partir.yield"
    values = var_operand_def(TensorType)
    traits = traits_def(IsTerminator())

    def __init__(self, values: Sequence[SSAValue]):
        super().__init__(operands=[values])

    def print(self, printer: Printer) -> None:
        if self.values:
            printer.print_string(" ")
            printer.print_list(self.values, printer.print_operand)
            printer.print_string(" : ")
            printer.print_list(self.values, lambda v: printer.print_attribute(v.type))

    @classmethod
    def parse(cls, parser: Parser) -> YieldOp:
        pos = parser.pos
        unresolved = parser.parse_optional_undelimited_comma_separated_list(
            parser.parse_optional_unresolved_operand, parser.parse_unresolved_operand
        )
        if not unresolved:
            return cls([])
        parser.parse_punctuation(":")
        types = parser.parse_comma_separated_list(Parser.Delimiter.NONE, parser.parse_type)
        return cls(parser.resolve_operands(unresolved, types, pos))


class RegionPrimOp(IRDLOperation):
    """Base of the ops that keep a JAX primitive's sub-programs as regions.

    Printed as ``partir.scan(%a, %b) [params] ({...}, {...}) : (T, T) -> (T, T)``. The
    block arguments and yields of each region follow the primitive's calling convention
    (documented on each subclass).
    """

    PRIMITIVE: ClassVar[str]
    REGIONS: ClassVar[int | None]
    """How many regions the op has (None: one or more, as `cond`'s branches)."""

    args = var_operand_def(TensorType)
    outs = var_result_def(TensorType)
    params = prop_def(ParamsAttr)
    bodies = var_region_def()

    def __init__(
        self,
        args: Sequence[SSAValue],
        result_types: Sequence[Attribute],
        regions: Sequence[Region],
        params: ParamsAttr | tuple[tuple[str, Any], ...] = (),
        location: Attribute | None = None,
    ):
        super().__init__(
            operands=[args],
            result_types=[result_types],
            regions=[list(regions)],
            properties={"params": _as_params(params)},
        )
        if location is not None:
            self.location = location  # type: ignore[assignment]

    @property
    def primitive_name(self) -> str:
        """The JAX primitive this op stands for."""
        return self.PRIMITIVE

    def print(self, printer: Printer) -> None:
        printer.print_string("(")
        printer.print_list(self.args, printer.print_operand)
        printer.print_string(")")
        _print_params(printer, self.params)
        printer.print_string(" (")
        printer.print_list(self.bodies, printer.print_region)
        printer.print_string(")")
        _print_tail(printer, self)

    @classmethod
    def parse(cls, parser: Parser) -> RegionPrimOp:
        unresolved, pos = _parse_operands(parser)
        params = _parse_params(parser)
        regions = parser.parse_comma_separated_list(Parser.Delimiter.PAREN, parser.parse_region)
        operands, results, attrs = _parse_tail(parser, unresolved, pos)
        op = cls(operands, results, regions, params)
        op.attributes.update(attrs)
        return op

    def verify_(self) -> None:
        if self.REGIONS is not None and len(self.bodies) != self.REGIONS:
            raise VerifyException(
                f"'{self.name}' op expects {self.REGIONS} regions, got: {len(self.bodies)}"
            )
        for region in self.bodies:
            block = region.block
            if not isinstance(block.last_op, YieldOp):
                raise VerifyException(f"'{self.name}' op region must end in partir.yield")
        verify_value_shardings(self)


@irdl_op_definition
class ScanOp(RegionPrimOp):
    """`jax.lax.scan`. Operands: consts, carry, xs. Block args: consts, carry, one x slice.
    Yields: new carry, one y slice. Results: final carry, ys stacked along dim 0."""

    name = "partir.scan"
    PRIMITIVE: ClassVar[str] = "scan"
    REGIONS: ClassVar[int | None] = 1


@irdl_op_definition
class WhileOp(RegionPrimOp):
    """`jax.lax.while_loop`. Operands: cond consts, body consts, carry. Region 0 (cond):
    cond consts + carry -> bool scalar. Region 1 (body): body consts + carry -> carry."""

    name = "partir.while"
    PRIMITIVE: ClassVar[str] = "while"
    REGIONS: ClassVar[int | None] = 2


@irdl_op_definition
class CondOp(RegionPrimOp):
    """`jax.lax.switch`/`cond`. Operand 0 is the int32 branch index; the rest are passed
    to the chosen branch region, which yields the results."""

    name = "partir.cond"
    PRIMITIVE: ClassVar[str] = "cond"
    REGIONS: ClassVar[int | None] = None


@irdl_op_definition
class RematOp(RegionPrimOp):
    """`jax.checkpoint` (`remat2`): the region is recomputed rather than stored for AD."""

    name = "partir.remat"
    PRIMITIVE: ClassVar[str] = "remat2"
    REGIONS: ClassVar[int | None] = 1


REGION_OPS: dict[str, type[RegionPrimOp]] = {
    cls.PRIMITIVE: cls for cls in (ScanOp, WhileOp, CondOp, RematOp)
}
"""Primitive name -> the region op that represents it."""


def module_mesh(op: IRDLOperation) -> MeshAttr:
    """The `partir.mesh` attribute of the module enclosing `op`."""
    parent = op.parent_op()
    while parent is not None:
        mesh = parent.attributes.get("partir.mesh")
        if isinstance(mesh, MeshAttr):
            return mesh
        parent = parent.parent_op()
    raise VerifyException(f"'{op.name}' op needs an enclosing module with a partir.mesh attribute")


def entry_block(region: Region) -> Block:
    """The single block of a region."""
    return region.block


Partir = Dialect(
    "partir",
    [PrimOp, ConstantOp, YieldOp, ScanOp, WhileOp, CondOp, RematOp],
    [ParamsAttr, ConstantValueAttr, MeshAttr, ShardingAttr, KeyType],
)
"""The global-view dialect."""
