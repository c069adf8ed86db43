"""The PRNG key element type: `tensor<4x!partir.key<fry>>` is a JAX ``key<fry>[4]`` array.

A key array is a JAX array of an *extended* dtype: to the user it has the key array's
shape (``key<fry>[4]`` has shape ``(4,)``), and each element is one key whose data is
``uint32[2]`` for the threefry2x32 implementation (the impl *tag* ``fry``). partir keeps
that view: a key-typed value is a tensor of `KeyType` elements whose shape is the key
array's shape, so sharding rules and `PartitionSpec`s speak of the same dimensions the
user does. The key data appears only where the program converts (`random_unwrap`,
`random_wrap`); see ``docs/ir.md``.
"""

from __future__ import annotations

from collections.abc import Sequence

from xdsl.dialects.builtin import StringAttr
from xdsl.ir import Attribute, ParametrizedAttribute, TypeAttribute
from xdsl.irdl import irdl_attr_definition
from xdsl.parser import AttrParser
from xdsl.printer import Printer


@irdl_attr_definition
class KeyType(ParametrizedAttribute, TypeAttribute):
    """A PRNG key of one implementation, named by its tag: `!partir.key<fry>`."""

    name = "partir.key"

    tag: StringAttr
    """The implementation's tag as JAX prints it (``fry`` for threefry2x32)."""

    def __init__(self, tag: str | StringAttr) -> None:
        super().__init__(StringAttr(tag) if isinstance(tag, str) else tag)

    @classmethod
    def parse_parameters(cls, parser: AttrParser) -> Sequence[Attribute]:
        """Parse ``<tag>``."""
        parser.parse_punctuation("<")
        tag = parser.parse_identifier()
        parser.parse_punctuation(">")
        return (StringAttr(tag),)

    def print_parameters(self, printer: Printer) -> None:
        """Print ``<tag>``."""
        printer.print_string(f"<{self.tag.data}>")
