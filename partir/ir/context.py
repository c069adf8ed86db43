"""An xDSL context with every dialect partir programs use."""

from __future__ import annotations

from xdsl.context import Context
from xdsl.dialects.builtin import Builtin, ModuleOp
from xdsl.dialects.func import Func
from xdsl.dialects.shard import Shard
from xdsl.parser import Parser

from partir.ir.ops import Partir
from partir.ir.spmd import Spmd


def make_context() -> Context:
    """A fresh context with builtin, func, partir and spmd loaded (and xDSL's shard
    dialect, whose reduction-kind attribute the spmd collectives carry)."""
    ctx = Context()
    for dialect in (Builtin, Func, Shard, Partir, Spmd):
        ctx.load_dialect(dialect)
    return ctx


def parse_module(text: str) -> ModuleOp:
    """Parse MLIR text of a partir program into a module (verifies it)."""
    module = Parser(make_context(), text).parse_module()
    module.verify()
    return module
