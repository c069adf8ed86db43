"""`ManualPartition`: shard selected inputs on one mesh axis, then propagate."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xdsl.ir import SSAValue

from partir import ir
from partir.errors import (
    DimensionError,
    DuplicateShardingError,
    SelectorError,
    TacticError,
    UnknownAxisError,
)
from partir.ir.paths import root_of
from partir.passes.propagate import Conflict, Propagator
from partir.tactics.selectors import select, selector_hints


class _Replicated:
    """Marker: keep the selected inputs replicated on the tactic's axis."""

    _instance: _Replicated | None = None

    def __new__(cls) -> _Replicated:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "partir.REPLICATED"


REPLICATED = _Replicated()
"""Use as a dimension in `ManualPartition` to pin an input replicated on the axis."""


@dataclass
class TacticContext:
    """What a tactic applies to: the program's inputs and the propagation engine."""

    propagator: Propagator
    input_paths: list[str]
    """Every input leaf's `/`-joined path, in argument order."""
    inputs: list[SSAValue]
    """The entry function's arguments, one per input leaf."""
    non_array_inputs: dict[int, str] = field(default_factory=dict)
    """Input leaves that were Python scalars (index -> type name); they cannot be sharded."""
    function: str = "fn"
    """The user's function name, for messages."""
    output_paths: list[str] = field(default_factory=list)
    """Every output leaf's path (``out/0/blocks/0/attn/q``); selectors may name them too."""
    outputs: list[SSAValue] = field(default_factory=list)
    """The values the entry function returns, one per output leaf."""
    hardware: Any = "cpu"
    """The simulator profile (name or `partir.simulator.Hardware`) automatic tactics judge
    candidates on, unless they name their own (`partir.partition(hardware=...)`)."""

    logical_axes: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    """Input path (``params/blocks/0/up/kernel``, absolute) -> logical axis names, read from
    the arguments' metadata (`partir.plan.logical.input_logical_axes`); what
    ``LogicalPartition(logical=None)`` uses. Empty when the caller read none."""
    named: list[tuple[str, SSAValue]] = field(default_factory=list)
    """Intermediate values selected by ``name:`` selectors so far (label, value); leaf index
    ``len(paths) + k`` of a tactic's choice is ``named[k]``."""

    def select_named(self, name: str) -> list[int]:
        """Indices (past `paths`) of every value `checkpoint_name` named `name`, forward and
        backward, nested regions included; registered in `named` on first use."""
        found = named_values(self.propagator.module, name)
        out = []
        base = len(self.paths)
        for k, value in enumerate(found):
            label = f"{NAME_PREFIX}{name}" + (f"#{k}" if len(found) > 1 else "")
            for j, (_, known) in enumerate(self.named):
                if known is value:
                    out.append(base + j)
                    break
            else:
                self.named.append((label, value))
                out.append(base + len(self.named) - 1)
        return out

    def label(self, i: int) -> str:
        """The path (or ``name:`` label) of leaf index `i`."""
        n = len(self.paths)
        return self.paths[i] if i < n else self.named[i - n][0]

    def value(self, i: int) -> SSAValue:
        """The value of leaf index `i` (an input, an output or a named value)."""
        n = len(self.paths)
        return self.values[i] if i < n else self.named[i - n][1]

    @property
    def paths(self) -> list[str]:
        """Input paths, then output paths: what a selector is matched against."""
        return self.input_paths + self.output_paths

    @property
    def values(self) -> list[SSAValue]:
        """The values of `paths`, in the same order."""
        return self.inputs + self.outputs


NAME_PREFIX = "name:"
"""Selectors starting with this name a value by its `jax.ad_checkpoint.checkpoint_name`."""


def named_values(module: Any, name: str) -> list[SSAValue]:
    """Results of every ``name`` op (`checkpoint_name`) called `name`, in program order."""
    out: list[SSAValue] = []
    for op in module.walk():
        if isinstance(op, ir.PrimOp) and op.primitive_name == "name":
            if op.params.find("name") == name:
                out.append(op.results[0])
    return out


def value_names(module: Any) -> list[str]:
    """Every `checkpoint_name` name in the program, sorted (for hints)."""
    names = {
        str(op.params.find("name"))
        for op in module.walk()
        if isinstance(op, ir.PrimOp) and op.primitive_name == "name"
    }
    return sorted(names)


@dataclass
class TacticRecord:
    """What one tactic did."""

    index: int
    """Position of the tactic in the schedule."""
    tactic: Any
    seeded: list[tuple[str, int | None]]
    """(input path, dimension or None for replicated) per input the tactic seeded."""
    conflicts: list[Conflict]
    """Conflicts recorded while this tactic applied."""
    skipped: list[tuple[str, int]] = field(default_factory=list)
    """(path, bytes) of each leaf the tactic chose to leave alone (a ZeRO preset's leaves
    with no dim divisible by the axis); empty for a tactic that seeds all it selects."""
    notes: list[str] = field(default_factory=list)
    """What the tactic wants the user to know (unused logical rules, skipped leaves)."""


def _shape_text(value: SSAValue) -> str:
    shape = ir.shape_of(value.type)
    return f"{ir.dtypes.short_name(ir.dtype_of(value.type))}[{','.join(map(str, shape))}]"


@dataclass(frozen=True)
class ManualPartition:
    """Shard the selected inputs along a dimension on one mesh axis, then propagate.

    Args:
      inputs: selector -> dimension. A selector is a `/`-joined pytree path starting
        with the argument name (``"params/blocks/0/attn/q"``), with ``*`` for one level
        and ``**`` for any number; one that names an inner node selects every leaf under
        it. Outputs are named ``out/...`` (``out/0/blocks/0/attn/q``) and may be selected
        too. The dimension may be negative; `partir.REPLICATED` pins the values
        replicated on the axis instead.
      axis: the mesh axis this tactic decides.

    Examples:
      >>> ManualPartition({"batch": 0}, axis="batch")   # data parallelism
      >>> ManualPartition({"params/**/w_in": 1, "params/**/w_out": 0}, axis="model")
    """

    inputs: Mapping[str, int | _Replicated]
    axis: str

    def __post_init__(self) -> None:
        if not isinstance(self.axis, str):
            raise TacticError(
                f"ManualPartition(axis={self.axis!r}): the axis must be a mesh axis name (a str)."
            )
        if not isinstance(self.inputs, Mapping):
            raise TacticError(
                f"ManualPartition(axis={self.axis!r}) expects `inputs` to map selectors to dimensions, "
                f"got {type(self.inputs).__name__}: {self.inputs!r}. Write {{'params/w': 0}}."
            )
        for selector, dim in self.inputs.items():
            if not isinstance(selector, str):
                raise TacticError(
                    f"ManualPartition(axis={self.axis!r}): selector {selector!r} must be a str path."
                )
            if dim is not REPLICATED and (not isinstance(dim, int) or isinstance(dim, bool)):
                raise TacticError(
                    f"ManualPartition(axis={self.axis!r}): selector {selector!r} maps to {dim!r}; "
                    "expected a dimension (int) or partir.REPLICATED."
                )

    def __repr__(self) -> str:
        items = ", ".join(f"{k!r}: {v!r}" for k, v in self.inputs.items())
        return f"ManualPartition({{{items}}}, axis={self.axis!r})"

    def apply(self, ctx: TacticContext, index: int) -> TacticRecord:
        """Seed the selected inputs, then propagate on the axis to a fixed point."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add {self.axis!r} to the mesh."
            )
        return self._seed(ctx, index, self.choose(ctx, self.inputs))

    def choose(
        self, ctx: TacticContext, inputs: Mapping[str, int | _Replicated]
    ) -> dict[int, tuple[int | None, str]]:
        """Resolve selectors to leaves, checking each dim: what `apply` seeds.

        Subclasses (`partir.tactics.preset_tactics`, `partir.tactics.sequence`) call it to
        pick their leaves the way `ManualPartition` does, and may override it to say more
        in their errors.

        Args:
          ctx: the program being partitioned (its input paths and named values).
          inputs: selector (input path pattern or ``name:<checkpoint_name>``) -> dim, or
            `REPLICATED` to pin.

        Returns:
          Leaf index -> (dim, or None for replicated, the selector that chose it).

        Raises:
          SelectorError: a selector matches nothing. DimensionError: a dim is out of range
          or not divisible by the axis. DuplicateShardingError: two selectors disagree.
        """
        prop = ctx.propagator
        size = prop.sizes[self.axis]
        chosen: dict[int, tuple[int | None, str]] = {}
        for selector, dim in inputs.items():
            if selector.startswith(NAME_PREFIX):
                hits = ctx.select_named(selector[len(NAME_PREFIX) :])
                if not hits:
                    raise SelectorError(_no_name_message(self, selector, ctx))
            else:
                hits = select(selector, ctx.paths)
            if not hits:
                raise SelectorError(no_match_message(self, selector, ctx.paths))
            for i in hits:
                chosen_dim = (
                    None
                    if isinstance(dim, _Replicated)
                    else self._check_dim(ctx, i, selector, dim, size)
                )
                if i in chosen and chosen[i][0] != chosen_dim:
                    raise DuplicateShardingError(
                        f"{self!r} shards {ctx.label(i)} twice on axis {self.axis!r}: selector "
                        f"{chosen[i][1]!r} asks for {_dim_text(chosen[i][0])} and {selector!r} for "
                        f"{_dim_text(chosen_dim)}. A value is tiled at most once per axis: make the "
                        "selectors disjoint."
                    )
                chosen[i] = (chosen_dim, selector)
        return chosen

    def _seed(
        self, ctx: TacticContext, index: int, chosen: Mapping[int, tuple[int | None, str]]
    ) -> TacticRecord:
        """Seed (or pin) the chosen leaves, propagate on the axis, and record it."""
        prop = ctx.propagator
        before = len(prop.conflicts)
        seeds = []
        for i, (tile_dim, _) in sorted(chosen.items()):
            value = ctx.value(i)
            if tile_dim is None:
                prop.pin(value, self.axis, index)
            elif prop.seed(value, tile_dim, self.axis, index):
                seeds.append(value)
        prop.propagate(self.axis, index, seeds)
        return TacticRecord(
            index, self, [(ctx.label(i), d) for i, (d, _) in sorted(chosen.items())],
            prop.conflicts[before:],
        )  # fmt: skip

    def _check_dim(self, ctx: TacticContext, i: int, selector: str, dim: int, size: int) -> int:
        value = ctx.value(i)
        path = ctx.label(i)
        if i in ctx.non_array_inputs:
            raise SelectorError(
                f"{self!r} selects {path} through {selector!r}, but that input is a Python "
                f"{ctx.non_array_inputs[i]}, not an array; it cannot be sharded. Pass it as a "
                "jax array, or narrow the selector."
            )
        shape = ir.shape_of(value.type)
        rank = len(shape)
        if rank == 0:
            raise DimensionError(
                f"{self!r} cannot shard {path} ({_shape_text(value)}) on dim {dim}: it is a "
                f"scalar, with no dimension to split. Narrow the selector {selector!r} so it "
                "leaves scalars out, or pin it with partir.REPLICATED."
            )
        if not -rank <= dim < rank:
            raise DimensionError(
                f"{self!r} cannot shard {path} ({_shape_text(value)}) on dim {dim}: it has rank "
                f"{rank}, so dims run from {-rank} to {rank - 1}. Pick a dim in that range"
                " or narrow the selector."
            )
        dim %= rank
        if self.axis in ctx.propagator.axes_of(value):
            return dim  # a no-op, or a conflict the seed records: not a shape error
        already = ir.Sharding(tuple(tuple(d) for d in ctx.propagator.dims.get(value, [[]] * rank)))
        tiled = ctx.propagator._product(already.dims[dim]) * size
        if shape[dim] % tiled:
            raise DimensionError(
                f"{self!r} cannot shard {path} ({_shape_text(value)}) on dim {dim}: {shape[dim]} is "
                f"not divisible by mesh axis {self.axis!r} of size {size}"
                + (f" (times {tiled // size} from axes it already has)" if tiled != size else "")
                + ". Pick another dim, or pad the input. partir never replicates silently."
            )
        return dim


def _no_name_message(tactic: Any, selector: str, ctx: TacticContext) -> str:
    names = value_names(ctx.propagator.module)
    want = selector[len(NAME_PREFIX) :]
    if not names:
        return (
            f"{tactic!r}: selector {selector!r} names a value by checkpoint_name, but "
            f"{ctx.function} names none: wrap the value in "
            f"jax.ad_checkpoint.checkpoint_name(x, {want!r})."
        )
    from partir.tactics.selectors import closest

    near = closest(want, names)
    return (
        f"{tactic!r}: no value is named {want!r} by checkpoint_name in {ctx.function}. The "
        f"names used are {', '.join(map(repr, names))}; did you mean "
        f"{' or '.join(repr(NAME_PREFIX + n) for n in near)}?"
    )


def _dim_text(dim: int | None) -> str:
    return "replicated" if dim is None else f"dim {dim}"


def no_match_message(tactic: Any, selector: str, paths: Sequence[str]) -> str:
    """The `SelectorError` text for `selector` matching none of `paths` (what the function's
    arguments are, the closest paths, a `.` written for `/`)."""
    roots = sorted({root_of(p) for p in paths} - {"out"})  # outputs are not arguments
    head = root_of(selector)
    near = [p for p in paths if root_of(p) == head][:5]
    hint = (
        f" Inputs under {head!r} include: {', '.join(near)}."
        if near
        else f" The function's arguments are {', '.join(roots)}; a selector starts with one of them."
    )
    extra = selector_hints(selector, list(paths))
    return (
        f"{tactic!r}: selector {selector!r} matches no input or output.{hint}"
        + (f" {extra}" if extra else "")
        + " A selector that matches nothing is an error, not a no-op."
    )
