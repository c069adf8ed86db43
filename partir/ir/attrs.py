"""Mesh and sharding attributes.

`#partir.mesh<["batch"=4, "model"=2]>` names the device mesh axes, major to minor.

`#partir.sharding<[{"batch"}, {}, {"model", "x"}], partial=sum{"y"}>` gives, per tensor
dimension, the ordered mesh axes it is split over (major to minor), plus the axes over
which the value is a pending reduction (a partial sum, max or min). Meaning, as in
PartIR:Core: dimension d on axis a is the concatenation along d of |a| local tiles; a
partial axis means the value is the reduction of |a| local summands. An axis appears at
most once in one sharding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from xdsl.ir import Data
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer
from xdsl.utils.exceptions import VerifyException

REDUCTIONS = ("sum", "max", "min")
"""Reduction kinds a partial value or an all_reduce may carry."""


def _quote(name: str) -> str:
    return '"' + name + '"'


def _parse_axis_set(parser: AttrParser) -> tuple[str, ...]:
    parser.parse_punctuation("{")
    names: list[str] = []
    while parser.parse_optional_punctuation("}") is None:
        names.append(parser.parse_str_literal())
        if parser.parse_optional_punctuation(",") is None:
            parser.parse_punctuation("}")
            break
    return tuple(names)


@irdl_attr_definition
class MeshAttr(Data[tuple[tuple[str, int], ...]]):
    """A logical device mesh: named axes with sizes, major to minor."""

    name = "partir.mesh"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> tuple[tuple[str, int], ...]:
        parser.parse_punctuation("<")
        parser.parse_punctuation("[")
        axes: list[tuple[str, int]] = []
        while parser.parse_optional_punctuation("]") is None:
            axis = parser.parse_str_literal()
            parser.parse_punctuation("=")
            axes.append((axis, parser.parse_integer(allow_negative=False)))
            if parser.parse_optional_punctuation(",") is None:
                parser.parse_punctuation("]")
                break
        parser.parse_punctuation(">")
        return tuple(axes)

    def print_parameter(self, printer: Printer) -> None:
        inner = ", ".join(f"{_quote(a)}={n}" for a, n in self.data)
        printer.print_string(f"<[{inner}]>")

    def verify(self) -> None:
        seen: set[str] = set()
        for axis, size in self.data:
            if axis in seen:
                raise VerifyException(f"mesh axis names must be unique, got: {axis!r} twice")
            if size < 1:
                raise VerifyException(f"mesh axis size must be at least 1, got: {axis!r}={size}")
            seen.add(axis)

    @property
    def axis_names(self) -> tuple[str, ...]:
        """The axis names, major to minor."""
        return tuple(a for a, _ in self.data)

    @property
    def sizes(self) -> dict[str, int]:
        """Axis name -> number of devices along it."""
        return dict(self.data)

    @property
    def num_devices(self) -> int:
        """Total number of devices in the mesh."""
        n = 1
        for _, size in self.data:
            n *= size
        return n

    def size_of(self, axes: Sequence[str]) -> int:
        """The number of devices in the group spanned by `axes`."""
        sizes = self.sizes
        n = 1
        for a in axes:
            if a not in sizes:
                raise VerifyException(f"unknown mesh axis {a!r}; the mesh has {self.axis_names}")
            n *= sizes[a]
        return n


@dataclass(frozen=True)
class Sharding:
    """How one value is laid out on the mesh (the data of a `ShardingAttr`)."""

    dims: tuple[tuple[str, ...], ...]
    """Per tensor dimension, the mesh axes it is split over, major to minor."""
    partial: tuple[str, ...] = ()
    """Axes over which the value is a pending reduction."""
    reduction: str = "sum"
    """The pending reduction's kind (meaningful only when `partial` is non-empty)."""

    @staticmethod
    def replicated(rank: int) -> Sharding:
        """The sharding of a value held whole on every device."""
        return Sharding(((),) * rank)

    @property
    def axes(self) -> tuple[str, ...]:
        """Every axis the sharding uses, tiled and partial."""
        return tuple(a for d in self.dims for a in d) + self.partial

    def local_shape(self, shape: Sequence[int], mesh: MeshAttr) -> tuple[int, ...]:
        """The per-device shape of a global `shape` under this sharding on `mesh`."""
        return tuple(s // mesh.size_of(d) for s, d in zip(shape, self.dims, strict=True))


@irdl_attr_definition
class ShardingAttr(Data[Sharding]):
    """The sharding of one value: per-dimension mesh axes plus pending-reduction axes."""

    name = "partir.sharding"

    @classmethod
    def parse_parameter(cls, parser: AttrParser) -> Sharding:
        parser.parse_punctuation("<")
        parser.parse_punctuation("[")
        dims: list[tuple[str, ...]] = []
        while parser.parse_optional_punctuation("]") is None:
            dims.append(_parse_axis_set(parser))
            if parser.parse_optional_punctuation(",") is None:
                parser.parse_punctuation("]")
                break
        partial: tuple[str, ...] = ()
        reduction = "sum"
        if parser.parse_optional_punctuation(",") is not None:
            parser.parse_keyword("partial")
            parser.parse_punctuation("=")
            reduction = parser.parse_identifier()
            partial = _parse_axis_set(parser)
        parser.parse_punctuation(">")
        return Sharding(tuple(dims), partial, reduction)

    def print_parameter(self, printer: Printer) -> None:
        dims = ", ".join("{" + ", ".join(map(_quote, d)) + "}" for d in self.data.dims)
        text = f"<[{dims}]"
        if self.data.partial:
            text += (
                f", partial={self.data.reduction}{{{', '.join(map(_quote, self.data.partial))}}}"
            )
        printer.print_string(text + ">")

    def verify(self) -> None:
        axes = self.data.axes
        for axis in axes:
            if axes.count(axis) > 1:
                raise VerifyException(f"mesh axis {axis!r} appears more than once in {self}")
        if self.data.reduction not in REDUCTIONS:
            raise VerifyException(
                f"partial reduction must be one of {REDUCTIONS}, got: {self.data.reduction!r}"
            )

    def verify_for(self, shape: Sequence[int], mesh: MeshAttr) -> None:
        """Check the sharding fits a value of `shape` on `mesh`: rank, axes, divisibility."""
        if len(self.data.dims) != len(shape):
            raise VerifyException(
                f"sharding {self} has {len(self.data.dims)} dims for a rank-{len(shape)} value"
            )
        for axis in self.data.axes:
            mesh.size_of((axis,))
        for d, (size, axes) in enumerate(zip(shape, self.data.dims, strict=True)):
            n = mesh.size_of(axes)
            if size % n:
                raise VerifyException(
                    f"dim {d} of size {size} is not divisible by {n} (axes {axes}) in {self}"
                )


# PipelinePartition (partir/tactics/pipeline.py) marks layer scans with these; the backend
# (partir/backend/pipeline.py) reads them.
PIPELINE_ATTR = "partir.pipeline"
"""Scan-op attribute (JSON) the backend runs as a pipelined loop (`backend/pipeline.py`)."""
MB_ATTR = "partir.mb"
"""Body-op attribute (JSON list): per result, its batch dim, or -1 (no batch dim)."""
INVARIANT, ACCUMULATED = -1, -2
"""Classes of a pipelined scan's block argument or yield that have no batch dim: the same
for every microbatch, or a per-layer sum over the microbatches (a weight gradient)."""
