"""Dynamic Sequence Parallelism (`DSP`) for transformers that attend over several dims.

A video or spatial-temporal transformer holds activations ``[batch, time, space, d]`` and
alternates attention over ``space`` (per frame) with attention over ``time`` (per spatial
position). DSP (Zhao et al. 2024, "DSP: Dynamic Sequence Parallelism for
Multi-Dimensional Transformers", arXiv 2403.10266) shards, for each stage, a sequence dim
the stage does *not* attend over, so the stage runs with no communication at all, and
switches dims with one all-to-all where the attended dim changes. Megatron-style sequence
parallelism instead gathers the sequence before every attention and reduce-scatters after;
Ulysses re-tiles q, k, v and the output around every attention.

**Mechanism: named values.** The stages are told apart by the values entering each
attention, named in the model with `jax.ad_checkpoint.checkpoint_name` (the zoo's
``video_dit`` names them ``"spatial_in"`` and ``"temporal_in"``). `DSP` seeds each named
value on its stage's dim *and the value the name op reads on the previous stage's dim*,
so the two layouts meet exactly at the name op, where lowering re-tiles with an
all-to-all (but see the known gap in `DSP`). `checkpoint_name` leaves nothing in the
backward pass, so the zoo model also names each cotangent ``<name>_grad``
(`partir.testing.models.named`); DSP seeds those twins the other way round. A model that
names only the forward values still partitions exactly, with its backward switches
wherever propagation puts them. Seeding only the named result would let the new layout flow backward through
the identity ``name`` op into the previous stage, and the layouts would meet at whichever
op propagation reached last (q, k, v of every attention: Ulysses' pattern, not DSP's).
Recognising attention from its factors was the alternative; names are explicit, survive
`jax.lax.scan` and remat, and say in the model which dim each stage may shard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from xdsl.ir import SSAValue

from partir import ir
from partir.errors import SelectorError, TacticError, UnknownAxisError
from partir.tactics.manual import ManualPartition, TacticContext, TacticRecord

GRAD_SUFFIX = "_grad"
"""The name of a stage's cotangent: ``<stage>_grad`` (`partir.testing.models.named`)."""

NAME_PREFIX = "name:"
"""How `ManualPartition` selectors name a `checkpoint_name`'d value."""

DSP_DIMS: Mapping[str, int] = {"spatial_in": 1, "temporal_in": 2}
"""The zoo ``video_dit``'s stages: shard time (dim 1) for the spatial attention, space
(dim 2) for the temporal one."""

DSP_INPUTS: Mapping[str, int] = {"batch/x": 2}
"""The zoo ``video_dit``'s input, ``[B, T, S, d]``, sharded on space: the last stage's
layout, which the first stage's switch reads (the targets are left to propagation, which
gives them the last stage's layout too)."""


def _named_ops(module: object, names: set[str]) -> list[ir.PrimOp]:
    """Every ``name`` op whose name is in `names`, in program order (regions included)."""
    out = []
    for op in module.walk():  # type: ignore[attr-defined]
        if isinstance(op, ir.PrimOp) and op.primitive_name == "name":
            if str(op.params.find("name")) in names:
                out.append(op)
    return out


@dataclass(frozen=True, repr=False)
class DSPPartition(ManualPartition):
    """The tactic `DSP` returns: each stage's named values and their operands seeded.

    Attributes:
      dims: name -> the dim its stage is sharded on.
      inputs: the data's selectors -> dim (the first stage's layout), as `ManualPartition`.
    """

    dims: Mapping[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"DSP(axis={self.axis!r}, dims={dict(self.dims)!r}, inputs={dict(self.inputs)!r})"

    def apply(self, ctx: TacticContext, index: int) -> TacticRecord:
        """Seed the data, each named value on its stage's dim and each name op's operand
        on the previous stage's dim, then propagate on the axis."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add it to the mesh."
            )
        names = set(self.dims) | {n + GRAD_SUFFIX for n in self.dims}
        ops = _named_ops(prop.module, names)
        missing = sorted(set(self.dims) - {str(op.params.find("name")) for op in ops})
        if missing:
            raise SelectorError(
                f"{self!r}: no value is named {missing[0]!r} in the program. DSP selects each "
                "stage by the value entering its attention, named with "
                "jax.ad_checkpoint.checkpoint_name(x, name); name them in the model or pass "
                "DSP(dims={name: dim}) with the names it uses."
            )
        chosen = self.choose(ctx, self.inputs)
        before = len(prop.conflicts)
        seeds: list[SSAValue] = []
        seeded: list[tuple[str, int | None]] = []
        for i, (dim, _) in sorted(chosen.items()):
            assert dim is not None  # DSP pins nothing
            if prop.seed(ctx.value(i), dim, self.axis, index):
                seeds.append(ctx.value(i))
            seeded.append((ctx.label(i), dim))
        for value, dim, label in self._stage_values(ops):
            self._check_divisible(value, dim, label, prop.sizes[self.axis])
            if prop.seed(value, dim, self.axis, index):
                seeds.append(value)
            seeded.append((label, dim))
        prop.propagate(self.axis, index, seeds)
        return TacticRecord(index, self, seeded, prop.conflicts[before:])

    def _stage_values(self, ops: list[ir.PrimOp]) -> list[tuple[SSAValue, int, str]]:
        """(value, dim, label) to seed. A forward name op (stage X) reads the previous
        stage's layout and returns X's; its backward twin ``X_grad`` reads X's layout and
        returns the previous stage's. The stages follow the order of `dims`, cyclically:
        the first stage of a block follows the last of the block before, and the data
        enters in the last stage's layout (so a `lax.scan` over blocks sees one layout)."""
        stages = list(self.dims)
        prev = {s: stages[(i - 1) % len(stages)] for i, s in enumerate(stages)}
        out: list[tuple[SSAValue, int, str]] = []
        for op in ops:
            name = str(op.params.find("name"))
            label = f"{NAME_PREFIX}{name}"
            if name in self.dims:
                out.append((op.results[0], self.dims[name], label))
                out.append((op.operands[0], self.dims[prev[name]], f"{label} (operand)"))
            else:
                stage = name[: -len(GRAD_SUFFIX)]
                out.append((op.operands[0], self.dims[stage], f"{label} (operand)"))
                out.append((op.results[0], self.dims[prev[stage]], label))
        return out

    def _check_divisible(self, value: SSAValue, dim: int, label: str, size: int) -> None:
        shape = ir.shape_of(value.type)
        if not -len(shape) <= dim < len(shape) or shape[dim % len(shape)] % size:
            raise TacticError(
                f"{self!r} cannot shard {label} (shape {list(shape)}) on dim {dim} over axis "
                f"{self.axis!r} of size {size}: the dim is out of range or not divisible. Pick "
                "another dim in DSP(dims=...), or a sequence length divisible by the axis."
            )


def DSP(
    axis: str = "seq",
    dims: Mapping[str, int] | None = None,
    inputs: Mapping[str, int] | None = None,
) -> list[ManualPartition]:
    """Dynamic Sequence Parallelism (Zhao et al. 2024, arXiv 2403.10266).

    Each stage of a multi-dimensional transformer is sharded on a sequence dim it does not
    attend over; where the attended dim changes, one all-to-all switches the layout. On the
    zoo's ``video_dit`` the plan switches twice per block forward (space -> time before
    each spatial attention, time -> space before each temporal one; the data arrives in
    the last stage's layout) and twice backward, at the ``<name>_grad`` twins the model
    names its cotangents with (`partir.testing.models.named`), with no all-gather of
    activations; ``video_dit_scan`` the same, once in the scanned body. Composes with
    `BP` and `MP` on other axes: ``[*BP(), *MP(), *DSP()]``.

    Known gap: spmd lowering (`partir.passes.resolve`) may follow the operand's layout
    through the identity ``name`` op, which moves the switch onto q, k, v of the next
    attention (more all-to-alls, still correct); the plan's conflicts are where DSP puts
    them.

    Args:
      axis: the mesh axis the sequence dims are split on.
      dims: ``checkpoint_name`` name of the value entering each stage -> the dim that stage
        is sharded on. Default `DSP_DIMS` (``{"spatial_in": 1, "temporal_in": 2}``).
      inputs: selectors of the data -> dim (the layout before the first stage). Default
        `DSP_INPUTS` (``{"batch/x": 1}``); the targets take the last stage's layout.

    Returns:
      ``[DSPPartition(...)]``.
    """
    chosen_dims = dict(DSP_DIMS if dims is None else dims)
    chosen_inputs = dict(DSP_INPUTS if inputs is None else inputs)
    for arg, mapping in (("dims", chosen_dims), ("inputs", chosen_inputs)):
        for key, dim in mapping.items():
            if not isinstance(key, str) or not isinstance(dim, int) or isinstance(dim, bool):
                raise TacticError(
                    f"DSP({arg}=...): {key!r} -> {dim!r}; expected a name (str) mapped to a "
                    "dim (int), e.g. DSP(dims={'spatial_in': 1, 'temporal_in': 2})."
                )
    if not chosen_dims:
        raise TacticError("DSP(dims={}): name at least one stage (checkpoint_name -> dim).")
    return [DSPPartition(chosen_inputs, axis, chosen_dims)]


__all__ = ["DSP", "DSP_DIMS", "DSP_INPUTS", "DSPPartition"]
