"""`partir-lower-to-spmd`: the pass form of lowering, for `partir opt` and `xdsl-opt`.

Reads the same seeds as `partir-propagate` (the module's ``partir.mesh``, each entry
argument's ``partir.sharding``, each op's ``partir.shardings``: what `plan.ir()` writes),
propagates them, and replaces the module with its device-local program: local shapes and
explicit `spmd` collectives. Chain ``partir-optimize-collectives`` after it to fuse them.
Inputs arrive, and outputs leave, in their propagated tilings (pending sums reduced).
"""

from __future__ import annotations

from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects import builtin, func
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr
from xdsl.passes import ModulePass

from partir import ir
from partir.passes.lower_to_spmd import lower_to_spmd
from partir.passes.propagate_pass import propagate_ir


@dataclass(frozen=True)
class LowerToSpmdPass(ModulePass):
    """Propagate the shardings written in the IR, then lower to the device-local program.

    Options:
      axes: the order in which the mesh axes propagate (as for ``partir-propagate``).
    """

    name = "partir-lower-to-spmd"

    axes: tuple[str, ...] = ()

    def apply(self, ctx: Context, op: builtin.ModuleOp) -> None:
        """Replace `op`'s body with the lowered program."""
        prop = propagate_ir(op, self.axes, self.name)
        fn = prop.entry()
        outputs = list(fn.body.block.last_op.operands)  # type: ignore[union-attr]
        lowered = lower_to_spmd(
            prop,
            [ir.Sharding(prop.sharding(a).dims) for a in fn.args],
            [ir.Sharding(prop.sharding(v).dims) for v in outputs],
        )
        local_fn = lowered.module.body.block.first_op
        assert isinstance(local_fn, func.FuncOp)
        # the reader's names and each argument's tiling, on the local arguments
        for arg, local in zip(fn.args, local_fn.args, strict=True):
            local.name_hint = arg.name_hint
        local_fn.arg_attrs = ArrayAttr(
            [
                DictionaryAttr({"partir.sharding": ir.ShardingAttr(lay)})
                for lay in lowered.in_layouts
            ]
        )
        for old in list(op.body.block.ops):
            old.detach()
            old.erase(safe_erase=False)
        for new in list(lowered.module.body.block.ops):
            new.detach()
            op.body.block.add_op(new)
