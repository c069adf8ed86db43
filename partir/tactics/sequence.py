"""Dynamic Sequence Parallelism (`DSP`) for transformers that attend over several dims.

A video or spatial-temporal transformer holds activations ``[batch, time, space, d]`` and
alternates attention over ``space`` (per frame) with attention over ``time`` (per spatial
position). DSP (Zhao et al. 2024, "DSP: Dynamic Sequence Parallelism for
Multi-Dimensional Transformers", arXiv 2403.10266) shards, for each stage, a sequence dim
the stage does *not* attend over, so the stage runs with no communication at all, and
switches dims with one all-to-all where the attended dim changes. Megatron-style sequence
parallelism instead gathers the sequence before every attention and reduce-scatters after;
Ulysses (`Ulysses`; Jacobs et al. 2023, "DeepSpeed Ulysses", arXiv 2309.14509) re-tiles
q, k, v to heads and the output back around every attention.

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
`jax.lax.scan` and remat, and say in the model which dim each stage may shard. Both
tactics are `SwitchPartition`s: a mapping name -> (dim of the named value, dim its name
op reads), seeded on both sides of each name op; `AutomaticPartition`'s stage groups
(`partir.tactics.auto.space`) apply the same seeds.
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


def named_ops(module: object, names: set[str] | None) -> list[ir.PrimOp]:
    """Every ``name`` op whose name is in `names` (None: every one), in program order
    (regions included)."""
    out = []
    for op in module.walk():  # type: ignore[attr-defined]
        if isinstance(op, ir.PrimOp) and op.primitive_name == "name":
            if names is None or str(op.params.find("name")) in names:
                out.append(op)
    return out


Switches = Mapping[str, tuple[int, int]]
"""name -> (dim of the named value, dim of the value the name op reads): where a layout
changes. The ``<name>_grad`` twin is laid out the other way round (it reads the first dim
and returns the second)."""


def switch_values(ops: list[ir.PrimOp], switches: Switches) -> list[tuple[SSAValue, int, str]]:
    """(value, dim, label) to seed for `switches` at the ``name`` ops `ops`: a forward op
    named X returns X's layout ``switches[X][0]`` and reads ``switches[X][1]``; its
    backward twin ``X_grad`` reads the first and returns the second."""
    out: list[tuple[SSAValue, int, str]] = []
    for op in ops:
        name = str(op.params.find("name"))
        label = f"{NAME_PREFIX}{name}"
        if name in switches:
            inside, outside = switches[name]
            out.append((op.results[0], inside, label))
            out.append((op.operands[0], outside, f"{label} (operand)"))
        else:
            inside, outside = switches[name[: -len(GRAD_SUFFIX)]]
            out.append((op.operands[0], inside, f"{label} (operand)"))
            out.append((op.results[0], outside, label))
    return out


def dsp_switches(dims: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """DSP's switches: each stage's named value on its dim, read on the previous stage's.
    The stages follow the order of `dims`, cyclically: the first stage of a block follows
    the last of the block before, and the data enters in the last stage's layout (so a
    `lax.scan` over blocks sees one layout)."""
    stages = list(dims)
    return {s: (dims[s], dims[stages[(i - 1) % len(stages)]]) for i, s in enumerate(stages)}


@dataclass(frozen=True, repr=False)
class SwitchPartition(ManualPartition):
    """Seed the data and each named value (and the value its name op reads) on the axis.

    The base of `DSPPartition` and `UlyssesPartition`: a subclass says where the layouts
    change (`switches`); both sides of each switching ``name`` op are seeded, so the two
    layouts meet exactly there, and one all-to-all re-tiles.

    Attributes:
      inputs: the data's selectors -> dim, as `ManualPartition`.
    """

    def switches(self) -> dict[str, tuple[int, int]]:
        """name -> (dim of the named value, dim its name op reads); see `Switches`."""
        raise NotImplementedError

    def apply(self, ctx: TacticContext, index: int) -> TacticRecord:
        """Seed the data and both sides of every switching name op, then propagate."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add it to the mesh."
            )
        switches = self.switches()
        names = set(switches) | {n + GRAD_SUFFIX for n in switches}
        ops = named_ops(prop.module, names)
        found = {str(op.params.find("name")) for op in ops}
        missing = [n for n in switches if n not in found]
        if missing:
            raise SelectorError(self._missing_message(missing[0]))
        chosen = self.choose(ctx, self.inputs)
        before = len(prop.conflicts)
        seeds: list[SSAValue] = []
        seeded: list[tuple[str, int | None]] = []
        for i, (dim, _) in sorted(chosen.items()):
            assert dim is not None  # a switch tactic pins nothing
            if prop.seed(ctx.value(i), dim, self.axis, index):
                seeds.append(ctx.value(i))
            seeded.append((ctx.label(i), dim))
        for value, dim, label in switch_values(ops, switches):
            self._check_divisible(value, dim, label, prop.sizes[self.axis])
            if prop.seed(value, dim, self.axis, index):
                seeds.append(value)
            seeded.append((label, dim))
        prop.propagate(self.axis, index, seeds)
        return TacticRecord(index, self, seeded, prop.conflicts[before:])

    def _missing_message(self, name: str) -> str:
        return (
            f"{self!r}: no value is named {name!r} in the program; name it in the model "
            "with jax.ad_checkpoint.checkpoint_name(x, name)."
        )

    def _check_divisible(self, value: SSAValue, dim: int, label: str, size: int) -> None:
        shape = ir.shape_of(value.type)
        if not -len(shape) <= dim < len(shape) or shape[dim % len(shape)] % size:
            raise TacticError(
                f"{self!r} cannot shard {label} (shape {list(shape)}) on dim {dim} over axis "
                f"{self.axis!r} of size {size}: the dim is out of range or not divisible. "
                f"{self._dim_hint()}"
            )

    def _dim_hint(self) -> str:
        return "Pick another dim, or a size divisible by the axis."


@dataclass(frozen=True, repr=False)
class DSPPartition(SwitchPartition):
    """The tactic `DSP` returns: each stage's named values and their operands seeded.

    Attributes:
      dims: name -> the dim its stage is sharded on.
      inputs: the data's selectors -> dim (the last stage's layout, which the first stage
        reads), as `ManualPartition`.
    """

    dims: Mapping[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"DSP(axis={self.axis!r}, dims={dict(self.dims)!r}, inputs={dict(self.inputs)!r})"

    def switches(self) -> dict[str, tuple[int, int]]:
        """Each stage on its dim, read on the previous stage's (`dsp_switches`)."""
        return dsp_switches(self.dims)

    def _missing_message(self, name: str) -> str:
        return (
            f"{self!r}: no value is named {name!r} in the program. DSP selects each "
            "stage by the value entering its attention, named with "
            "jax.ad_checkpoint.checkpoint_name(x, name); name them in the model or pass "
            "DSP(dims={name: dim}) with the names it uses."
        )

    def _dim_hint(self) -> str:
        return "Pick another dim in DSP(dims=...), or a sequence length divisible by the axis."


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

    spmd lowering lays out every ``name`` op as planned
    (`partir.passes.lower_to_spmd.PLANNED_PLACE`), so each switch is one all-to-all at its
    name, not three on the next attention's q, k, v.

    Args:
      axis: the mesh axis the sequence dims are split on.
      dims: ``checkpoint_name`` name of the value entering each stage -> the dim that stage
        is sharded on. Default `DSP_DIMS` (``{"spatial_in": 1, "temporal_in": 2}``).
      inputs: selectors of the data -> dim (the layout before the first stage). Default
        `DSP_INPUTS` (``{"batch/x": 2}``, space); the targets take the last stage's layout.

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


ULYSSES_STAGES: tuple[str, ...] = ("spatial", "temporal")
"""The zoo ``video_dit``'s attentions: each names its q, k, v and output ``<stage>_q``,
``<stage>_k``, ``<stage>_v`` and ``<stage>_out``, ``[B, T, S, H, d / H]``."""

ULYSSES_PARTS: tuple[str, ...] = ("q", "k", "v")
"""The per-head values entering an attention, re-tiled to heads."""


@dataclass(frozen=True, repr=False)
class UlyssesPartition(SwitchPartition):
    """The tactic `Ulysses` returns: q, k, v re-tiled to heads, the output back.

    Attributes:
      dim: the sequence dim the activations are sharded on outside attention (of the
        per-head values ``[B, T, S, H, d / H]`` and of the data alike).
      heads_dim: the heads dim of the per-head values, sharded inside attention.
      stages: the attentions, by the prefix of their names (``<stage>_q`` ...).
      inputs: the data's selectors -> dim, as `ManualPartition`.
    """

    dim: int = 1
    heads_dim: int = 3
    stages: tuple[str, ...] = ULYSSES_STAGES

    def __repr__(self) -> str:
        return (
            f"Ulysses(axis={self.axis!r}, dim={self.dim}, heads_dim={self.heads_dim}, "
            f"stages={self.stages!r}, inputs={dict(self.inputs)!r})"
        )

    def switches(self) -> dict[str, tuple[int, int]]:
        """q, k, v on heads, read on the sequence dim; the output the other way round."""
        out = {f"{s}_{p}": (self.heads_dim, self.dim) for s in self.stages for p in ULYSSES_PARTS}
        out.update({f"{s}_out": (self.dim, self.heads_dim) for s in self.stages})
        return out

    def _missing_message(self, name: str) -> str:
        return (
            f"{self!r}: no value is named {name!r} in the program. Ulysses re-tiles each "
            "attention's q, k, v and output, named <stage>_q, <stage>_k, <stage>_v and "
            "<stage>_out in their per-head layout with jax.ad_checkpoint.checkpoint_name; "
            "name them in the model, or pass Ulysses(stages=...) with the prefixes it uses."
        )

    def _dim_hint(self) -> str:
        return (
            "Ulysses needs the heads (heads_dim) and the sequence dim (dim) divisible by the "
            "axis: pick another axis size or Ulysses(dim=...)."
        )


def Ulysses(
    axis: str = "seq",
    dim: int = 1,
    *,
    heads_dim: int = 3,
    stages: tuple[str, ...] | list[str] = ULYSSES_STAGES,
    inputs: Mapping[str, int] | None = None,
) -> list[ManualPartition]:
    """DeepSpeed-Ulysses sequence parallelism (Jacobs et al. 2023, arXiv 2309.14509).

    The activations are sharded on a sequence dim outside attention; around every
    attention an all-to-all re-tiles q, k and v so that the heads are sharded instead
    (each device attends over the whole sequence for its heads), and another re-tiles the
    output back. On the zoo's ``video_dit`` that is 4 all-to-alls per attention forward
    (2 attentions per block) and their 4 transposes backward, at the ``<stage>_q``,
    ``<stage>_k``, ``<stage>_v``, ``<stage>_out`` names and their ``_grad`` twins, with no
    all-gather of activations; compare `DSP`, which switches twice per block. Composes
    with `BP` and `MP` on other axes.

    Args:
      axis: the mesh axis the sequence and, inside attention, the heads are split on.
      dim: the sequence dim sharded outside attention, of the per-head values
        ``[B, T, S, H, d / H]`` and of the data (default 1, time: the major dim of the
        flattened video sequence ``T x S``).
      heads_dim: the heads dim of the per-head values (default 3).
      stages: name prefixes of the attentions (default `ULYSSES_STAGES`).
      inputs: selectors of the data -> dim; default ``{"batch/x": dim}``.

    Returns:
      ``[UlyssesPartition(...)]``.
    """
    chosen_inputs = dict({"batch/x": dim} if inputs is None else inputs)
    for name, value in (("dim", dim), ("heads_dim", heads_dim)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TacticError(f"Ulysses({name}={value!r}): expected a dim (int), e.g. {name}=1.")
    if dim == heads_dim:
        raise TacticError(
            f"Ulysses(dim={dim}, heads_dim={heads_dim}): the sequence dim and the heads dim "
            "must differ (the all-to-all moves the axis from one to the other)."
        )
    stage_list = (stages,) if isinstance(stages, str) else tuple(stages)
    if not stage_list or not all(isinstance(s, str) for s in stage_list):
        raise TacticError(
            f"Ulysses(stages={stages!r}): give the attentions' name prefixes, e.g. "
            "stages=('spatial', 'temporal')."
        )
    for key, d in chosen_inputs.items():
        if not isinstance(key, str) or not isinstance(d, int) or isinstance(d, bool):
            raise TacticError(
                f"Ulysses(inputs=...): {key!r} -> {d!r}; expected a selector (str) mapped to "
                "a dim (int), e.g. Ulysses(inputs={'batch/x': 1})."
            )
    return [UlyssesPartition(chosen_inputs, axis, dim, heads_dim, stage_list)]


__all__ = [
    "DSP",
    "DSP_DIMS",
    "DSP_INPUTS",
    "ULYSSES_STAGES",
    "DSPPartition",
    "SwitchPartition",
    "Ulysses",
    "UlyssesPartition",
    "dsp_switches",
    "named_ops",
    "switch_values",
]
