"""The tactic classes behind the presets (`partir.tactics.presets`).

`PresetPartition` is the `ManualPartition` that `BP`, `MP`, `SP`, `EMB` and `EP` return: its
`SelectorError` names the preset argument a selector came from, and after `MP` it warns
when the dims look transposed (a library whose weights are ``[out, in]``).
`ZeroPartition` is what `Z2` and `Z3` return: each leaf's dim is chosen from its shape at
apply time, and leaves with no divisible dim are skipped and reported.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from partir import ir
from partir.errors import DimensionError, SelectorError, TacticError, UnknownAxisError
from partir.tactics.manual import (
    REPLICATED,
    ManualPartition,
    TacticContext,
    TacticRecord,
    _Replicated,
    no_match_message,
)
from partir.tactics.selectors import select


@dataclass(frozen=True, repr=False)
class PresetPartition(ManualPartition):
    """A `ManualPartition` built by a preset: a selector that matches nothing raises a
    `SelectorError` naming the preset argument it came from and how to pass another.

    Attributes:
      preset: the preset's name (``"MP"``).
      origins: selector -> the preset argument it came from (``"column"``).
    """

    preset: str = field(default="", compare=False)
    origins: Mapping[str, str] = field(default_factory=dict, compare=False)
    defaults: frozenset[str] = field(default=frozenset(), compare=False)
    """The preset's arguments left at their default (the zoo's naming)."""

    def choose(
        self, ctx: TacticContext, inputs: Mapping[str, int | _Replicated]
    ) -> dict[int, tuple[int | None, str]]:
        for selector in inputs:
            if not select(selector, ctx.paths):
                arg = self.origins.get(selector, "inputs")
                raise SelectorError(
                    no_match_message(self, selector, ctx.paths)
                    + f" {self.preset}(): {selector!r} comes from its `{arg}=` argument"
                    + (
                        " (the default, which fits the zoo's naming)"
                        if arg in self.defaults
                        else ""
                    )
                    + f"; pass {self.preset}({arg}=...) with your model's paths"
                    + _ARG_HINTS.get((self.preset, arg), "")
                    + "."
                )
        return super().choose(ctx, inputs)

    def _seed(
        self, ctx: TacticContext, index: int, chosen: Mapping[int, tuple[int | None, str]]
    ) -> TacticRecord:
        record = super()._seed(ctx, index, chosen)
        if self.preset == "MP":
            note = _layout_trap(self, ctx, chosen, record)
            if note:
                record.notes.append(note)
                warnings.warn(note, stacklevel=5)
        return record


_PASS_THROUGH = ("convert_element_type", "copy", "name", "reduce_precision")
"""Ops a weight may pass through, unchanged in layout, on its way to its matmul."""


def _matmul_uses(value: object, dim: int, depth: int = 4) -> list[tuple[object, bool]]:
    """(dot_general, whether it contracts `dim`) for each matmul `value` feeds, directly or
    through layout-preserving ops and transposes."""
    out: list[tuple[object, bool]] = []
    for use in getattr(value, "uses", ()):
        op = use.operation
        if not isinstance(op, ir.PrimOp):
            continue
        name = op.primitive_name
        if name == "dot_general":
            (lhs_c, rhs_c), _ = op.params["dimension_numbers"]
            out.append((op, dim in (lhs_c if use.index == 0 else rhs_c)))
        elif name == "transpose" and depth:
            perm = tuple(op.params["permutation"])
            out += _matmul_uses(op.results[0], perm.index(dim), depth - 1)
        elif name in _PASS_THROUGH and depth:
            out += _matmul_uses(op.results[0], dim, depth - 1)
    return out


def _contracted(value: object, dim: int, order: Mapping[Any, int]) -> bool | None:
    """Whether the first matmul (in program order: the forward one) `value` feeds contracts
    its `dim`; None if it feeds none."""
    uses = _matmul_uses(value, dim)
    if not uses:
        return None
    return min(uses, key=lambda u: order.get(u[0], 1 << 60))[1]


def _layer_count(paths: Sequence[str]) -> int:
    """How many layers the seeded paths span (distinct list indices), at least 1."""
    from partir.ir.paths import split_path

    indices = {c for p in paths for c in split_path(p) if c.isdigit()}
    return max(len(indices), 1)


def _layout_trap(
    tactic: PresetPartition,
    ctx: TacticContext,
    chosen: Mapping[int, tuple[int | None, str]],
    record: TacticRecord,
) -> str:
    """A warning when MP's dims look transposed: every column-parallel weight split on the
    dim its matmul contracts (or every row-parallel one on a dim it does not), or
    conflicts in every layer. Empty when the layout looks right."""
    wrong = checked = 0
    order = {op: k for k, op in enumerate(ctx.propagator.module.walk())}
    for i, (dim, selector) in chosen.items():
        arg = tactic.origins.get(selector)
        if dim is None or arg not in ("column", "row"):
            continue
        contracted = _contracted(ctx.value(i), dim, order)
        if contracted is None:
            continue
        checked += 1
        wrong += contracted if arg == "column" else not contracted
    layers = _layer_count([ctx.label(i) for i in chosen])
    transposed = checked > 0 and wrong == checked
    conflicted = len(record.conflicts) >= layers > 1
    if not (transposed or conflicted):
        return ""
    why = (
        f"all {checked} column/row weights it split are split on the wrong side of their "
        "matmul (a column weight on its contracted dim, or a row weight on a free one)"
        if transposed
        else f"it met {len(record.conflicts)} conflicts over {layers} layers"
    )
    return (
        f"{tactic.preset}(axis={tactic.axis!r}): the dims look transposed: {why}. Check the layout of the library's "
        "weights: Equinox `Linear.weight` is [out, in] (column={...: 0}, row={...: 1}), "
        "Flax NNX attention kernels are [d, heads, head_dim] (heads on dim 1) and its output "
        "kernel [heads, head_dim, d] (dim 0); or use partir.LogicalPartition with the "
        "model's logical axis names."
    )


_STATE_HINT = (
    " (the roots under which the optimizer state repeats the parameters' paths), or "
    "with_optimizer_state=False for a function without one"
)

_ARG_HINTS: dict[tuple[str, str], str] = {
    ("BP", "inputs"): (
        ", e.g. BP(inputs={'x': 0, 'y': 0}) for a step(params, opt_state, x, y); the default "
        "{'batch': 0} needs the data argument to be called `batch`"
    ),
    ("MP", "column"): (
        " (weights split on their output dim), or use partir.LogicalPartition with the "
        "model's logical axis names; with_optimizer_state=False if there is no optimizer state"
    ),
    ("MP", "row"): " (weights split on their input dim)",
    ("MP", "column_bias"): " (biases of column-parallel layers), or column_bias=() for none",
    ("SP", "inputs"): " (selector -> sequence dim of the data)",
    ("EP", "experts"): " (the stacked expert weights)",
    ("EMB", "table"): " (the embedding table)",
    ("MP", "optimizer_state"): _STATE_HINT,
    ("EP", "optimizer_state"): _STATE_HINT,
    ("EMB", "optimizer_state"): _STATE_HINT,
}


def _check_selectors(preset: str, arg: str, value: object) -> None:
    """Raise a `TacticError` naming `arg` unless it is selectors or selector -> dim."""
    if isinstance(value, str):
        return
    if isinstance(value, Mapping):
        keys = list(value)
    elif isinstance(value, Sequence):
        keys = list(value)
    else:
        raise TacticError(
            f"{preset}({arg}={value!r}): expected a selector (str), a sequence of selectors or "
            "a mapping selector -> dim."
        )
    bad = [k for k in keys if not isinstance(k, str)]
    if bad:
        raise TacticError(
            f"{preset}({arg}=...): {bad[0]!r} is not a selector; selectors are `/`-joined "
            "paths such as 'params/**/attn/q'."
        )


def _preset(
    preset: str,
    inputs: Mapping[str, int | _Replicated],
    axis: str,
    origins: Mapping[str, str],
    defaults: set[str],
) -> PresetPartition:
    return PresetPartition(dict(inputs), axis, preset, dict(origins), frozenset(defaults))


_AUTO = "auto"
"""A ZeRO leaf's dim chosen at apply time: its largest dim divisible by the axis."""


def _nbytes(value: object) -> int:
    shape = ir.shape_of(value.type)  # type: ignore[attr-defined]
    n = 1
    for d in shape:
        n *= d
    try:
        import numpy as np

        return n * np.dtype(ir.dtype_of(value.type)).itemsize  # type: ignore[attr-defined]
    except TypeError:
        return n * 4  # a dtype numpy does not name (a PRNG key): counted as 4 bytes


def _join(root: str, sub: str) -> str:
    return "/".join(p.strip("/") for p in (root, sub) if p.strip("/"))


@dataclass(frozen=True, repr=False)
class ZeroPartition(ManualPartition):
    """The tactic `Z2` and `Z3` return: shard every leaf under `roots` on `axis`.

    Each leaf goes on `dim` when that dim divides by the axis (times the axes already on
    it), else on its largest dim that does; `dims` (sub-path under each root -> dim, or
    None to leave the leaves alone, or `partir.REPLICATED`) overrides that per sub-tree,
    later entries winning. A leaf with no divisible dim is skipped and reported
    (`TacticRecord.skipped`, ``plan.summary()``); with `strict` one of at least
    `min_bytes` raises `DimensionError` instead. `inputs` holds the selectors pinned
    replicated (Z2's parameters).
    """

    preset: str = "Z3"
    roots: tuple[str, ...] = ()
    dim: int | None = None
    dims: tuple[tuple[str, int | _Replicated | None], ...] = ()
    strict: bool = False
    min_bytes: int = 0

    default_roots: tuple[str, ...] = field(default=(), compare=False)
    """The preset's default roots and pins, left out of the repr when unchanged."""
    default_pins: tuple[str, ...] = field(default=(), compare=False)

    def __repr__(self) -> str:
        # as the preset call that built it, arguments at their default left out
        parts = [] if self.axis == "batch" else [f"axis={self.axis!r}"]
        if self.dim is not None:
            parts.append(f"dim={self.dim}")
        if self.dims:
            parts.append("dims={" + ", ".join(f"{k!r}: {v!r}" for k, v in self.dims) + "}")
        if self.roots != self.default_roots:
            parts.append("roots=" + repr(list(self.roots)))
        if tuple(self.inputs) != self.default_pins:
            parts.append("replicated=" + repr(list(self.inputs)))
        if self.strict:
            parts.append(f"strict=True, min_bytes={self.min_bytes}")
        return f"{self.preset}({', '.join(parts)})"

    def apply(self, ctx: TacticContext, index: int) -> TacticRecord:
        """Choose each leaf's dim from its shape, seed, propagate; record what was skipped."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add it to the mesh."
            )
        chosen, skipped = self._choose_leaves(ctx, self._wanted(ctx))
        record = self._seed(ctx, index, chosen)
        record.skipped = skipped
        if skipped:
            total = sum(b for _, b in skipped)
            names = ", ".join(p for p, _ in skipped[:4]) + (", ..." if len(skipped) > 4 else "")
            record.notes.append(
                f"{self.preset} skipped {len(skipped)} leaves ({total:,} B) with no dim divisible "
                f"by axis {self.axis!r} of size {prop.sizes[self.axis]}, left as propagation "
                f"decides: {names}"
            )
        return record

    def _wanted(self, ctx: TacticContext) -> dict[int, tuple[int | _Replicated | str | None, str]]:
        """Leaf index -> (what the preset asks for it, the selector asking): the roots' leaves
        (a dim, or "choose one"), then `dims` overrides, then the pins; later entries win."""
        plan: dict[int, tuple[int | _Replicated | str | None, str]] = {}
        for root in self.roots:
            hits = select(root, ctx.paths)
            if not hits:
                raise SelectorError(
                    no_match_message(self, root, ctx.paths)
                    + f" {self.preset}(): {root!r} is a root of its parameters or optimizer "
                    f"state; pass {self.preset}(params=..., optimizer_state=...) with your "
                    "step's argument names, or optimizer_state=() for none."
                )
            for i in hits:
                plan[i] = (_AUTO if self.dim is None else self.dim, root)
        for sub, d in self.dims:
            selectors = [_join(root, sub) for root in self.roots]
            hits = [i for sel in selectors for i in select(sel, ctx.paths)]
            if not hits:
                raise SelectorError(
                    no_match_message(self, selectors[0], ctx.paths)
                    + f" {self.preset}(dims={{{sub!r}: ...}}) names a sub-path under "
                    f"each of {list(self.roots)}; it matches no leaf under any of them."
                )
            for i in hits:
                plan[i] = (d, _join(root_of_hit(self.roots, ctx.paths[i]), sub))
        for sel in self.inputs:
            hits = select(sel, ctx.paths)
            if not hits:
                raise SelectorError(
                    no_match_message(self, sel, ctx.paths)
                    + f" It comes from {self.preset}(replicated=...); pass () for none."
                )
            for i in hits:
                plan[i] = (REPLICATED, sel)
        return plan

    def _choose_leaves(
        self, ctx: TacticContext, plan: dict[int, tuple[int | _Replicated | str | None, str]]
    ) -> tuple[dict[int, tuple[int | None, str]], list[tuple[str, int]]]:
        """(leaf -> (dim or None for a pin, selector), skipped (path, bytes)): a dim picked
        from each leaf's shape where the preset chooses, the user's own dims checked."""
        explicit: dict[str, int | _Replicated] = {}
        chosen: dict[int, tuple[int | None, str]] = {}
        skipped: list[tuple[str, int]] = []
        for i, (want, sel) in sorted(plan.items()):
            if want is None:
                continue
            if isinstance(want, _Replicated):
                chosen[i] = (None, sel)
            elif want == _AUTO or (self.dim is not None and want == self.dim and sel in self.roots):
                picked = self._pick(ctx, i, None if want == _AUTO else int(want))
                if picked is None:
                    self._skip(ctx, i, skipped)
                elif picked >= 0:
                    chosen[i] = (picked, sel)
            else:
                explicit[ctx.paths[i]] = int(want)
        # explicitly named dims are checked as ManualPartition checks them (an error if
        # they do not divide): the user asked for that dim
        for i, pair in self.choose(ctx, explicit).items():
            chosen[i] = pair
        return chosen, skipped

    def _pick(self, ctx: TacticContext, i: int, preferred: int | None) -> int | None:
        """The dim to shard leaf `i` on; None if none divides; -1 if already on the axis."""
        if i in ctx.non_array_inputs:
            return None
        value = ctx.values[i]
        prop = ctx.propagator
        if self.axis in prop.axes_of(value):
            return -1  # already sharded on the axis (e.g. by an earlier tactic): nothing to do
        shape = ir.shape_of(value.type)
        have = prop.dims.get(value, [[]] * len(shape))
        size = prop.sizes[self.axis]
        fits = [d for d in range(len(shape)) if shape[d] % (prop._product(have[d]) * size) == 0]
        if preferred is not None and preferred % max(len(shape), 1) in fits:
            return preferred % len(shape)
        if not fits:
            return None
        return max(fits, key=lambda d: (shape[d], -d))

    def _skip(self, ctx: TacticContext, i: int, skipped: list[tuple[str, int]]) -> None:
        path = ctx.paths[i]
        nbytes = 0 if i in ctx.non_array_inputs else _nbytes(ctx.values[i])
        if self.strict and nbytes >= self.min_bytes:
            shape = ir.shape_of(ctx.values[i].type) if i not in ctx.non_array_inputs else ()
            raise DimensionError(
                f"{self!r} cannot shard {path} (shape {list(shape)}, {nbytes:,} B): no dim is "
                f"divisible by mesh axis {self.axis!r} of size {ctx.propagator.sizes[self.axis]}"
                f". Pass strict=False to skip such leaves (they are reported), raise "
                f"min_bytes, or leave it out with dims={{<sub-path>: None}}."
            )
        skipped.append((path, nbytes))


def root_of_hit(roots: Sequence[str], path: str) -> str:
    """The first of `roots` that selects `path` (for naming the selector that chose it)."""
    return next((r for r in roots if select(r, [path])), roots[0] if roots else "")


__all__ = ["PresetPartition", "ZeroPartition"]
