"""partir's IR passes, registered by name for `xdsl-opt -p <name>` and `partir opt`.

`PASSES` maps a pass name to a zero-argument getter of its `ModulePass` class, so that
importing the registry imports no pass module.
"""

from __future__ import annotations

from collections.abc import Callable

from xdsl.passes import ModulePass


def _populate_rules() -> type[ModulePass]:
    from partir.passes.populate_rules import PopulateRulesPass

    return PopulateRulesPass


def _optimize_collectives() -> type[ModulePass]:
    from partir.passes.optimize_collectives import OptimizeCollectivesPass

    return OptimizeCollectivesPass


def _lower_to_spmd() -> type[ModulePass]:
    from partir.passes.lower_pass import LowerToSpmdPass

    return LowerToSpmdPass


def _propagate() -> type[ModulePass]:
    from partir.passes.propagate_pass import PropagatePass

    return PropagatePass


PASSES: dict[str, Callable[[], type[ModulePass]]] = {
    "partir-lower-to-spmd": _lower_to_spmd,
    "partir-optimize-collectives": _optimize_collectives,
    "partir-populate-rules": _populate_rules,
    "partir-propagate": _propagate,
}
"""Pass name -> getter of the pass class."""
