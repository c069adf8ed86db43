"""partir's exceptions. Every message names the user's own things and says how to fix it."""

from __future__ import annotations


class PartIRError(Exception):
    """Base of every error partir raises about the user's program, mesh or schedule."""


class MeshError(PartIRError, ValueError):
    """The mesh is missing, or its axis names or sizes cannot work."""


class TacticError(PartIRError, ValueError):
    """A tactic names an input, axis or dimension that does not fit the program."""


class ShardingConflictError(PartIRError):
    """Tactics disagree and strict mode asked for an error instead of a recorded conflict."""


class UnsupportedPrimitiveError(PartIRError, NotImplementedError):
    """A primitive cannot be represented or executed (strict mode, or no fallback exists)."""


class ProgramError(PartIRError, ValueError):
    """A traced or parsed program was called with inputs that do not match it."""


class UnknownAxisError(MeshError, TacticError):
    """A tactic names a mesh axis the mesh does not have."""


class SelectorError(TacticError):
    """A selector matches no input, or matches something that cannot be sharded."""


class DimensionError(TacticError):
    """A dimension is out of range, or not divisible by the mesh axis size."""


class DuplicateShardingError(TacticError):
    """One tactic asks for two different shardings of one value on its axis."""


class ScheduleError(TacticError, TypeError):
    """A schedule entry is not a tactic."""


class InputMismatchError(ProgramError):
    """A partitioned function was called with inputs unlike the ones it was planned for."""


class UnsupportedDtypeError(PartIRError, ValueError):
    """A value's dtype (a PRNG key, say) has no partir element type."""


class SimulatorError(PartIRError, ValueError):
    """A hardware profile, topology or program the simulator cannot work with."""


class AbstractInputError(ProgramError):
    """A partitioned function was called to run with shapes only (`jax.ShapeDtypeStruct`)."""


class PlanMismatchError(PartIRError):
    """Processes of one multi-process mesh made different plans (`plan.fingerprint()` differs)."""


class LocalShapeError(ProgramError):
    """`plan.shard_batch` got process-local data whose shape does not fit the plan."""


class ShardMapError(UnsupportedPrimitiveError):
    """A `jax.shard_map` region inside the partitioned function cannot run in spmd mode."""
