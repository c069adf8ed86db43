"""`LogicalPartition`: shardings from logical axis names and MaxText-style rules.

Libraries name the dims of their parameters with *logical* axes (Flax NNX
``nnx.Param(..., sharding=("embed", "mlp"))``, Linen ``nn.with_logical_partitioning``,
MaxText's ``logical_axis_rules``); a rule table maps each logical name to mesh axes::

    rules = {"batch": "batch", "heads": "model", "mlp": "model", "embed": None}
    schedule = [*BP(), LogicalPartition(rules, axis="model", logical=partir.logical_axes(params))]

The tactic shards, on its one mesh `axis`, every dim whose logical name the rules map to
that axis, then propagates like `ManualPartition`. The names come as plain ``{path: names}``
(`partir.logical_axes` reads them from Flax metadata; for Equinox, Haiku or plain pytrees
write a mapping from path pattern to names yourself), so this module needs neither jax nor
flax.

Resolution follows MaxText (``flax.linen.partitioning.logical_to_mesh_axes``): a rule's
value is a mesh axis, None (replicated), or a sequence of mesh axes tried in order; rules
may also be given as MaxText's list of ``(name, axis)`` pairs, repeated names adding
fallbacks. Walking a leaf's dims in order, each dim takes the first of its axes that no
earlier dim of the same leaf took.

Nothing is silently ignored: a rule whose logical name no leaf uses, and a logical name no
rule mentions, are reported (a `UserWarning` and the tactic's `TacticRecord.notes`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from partir.errors import SelectorError, TacticError, UnknownAxisError
from partir.tactics.manual import ManualPartition, TacticContext, TacticRecord, no_match_message
from partir.tactics.selectors import select

LogicalNames = tuple[str | None, ...]
Rules = Mapping[str, Any] | Sequence[tuple[str, Any]]

OPTIMIZER_STATE: tuple[str, ...] = ("opt_state/*/mu", "opt_state/*/nu")
"""Where optax's AdamW moments live for a step ``(params, opt_state, ...)``."""


def normalize_rules(rules: Rules) -> dict[str, tuple[str, ...]]:
    """Logical name -> mesh axes to try in order (empty: replicated), from a mapping or
    from MaxText's ``[(name, axis), ...]`` pairs. Raises `TacticError` on anything else."""
    pairs = rules.items() if isinstance(rules, Mapping) else rules
    out: dict[str, tuple[str, ...]] = {}
    try:
        items = list(pairs)
    except TypeError:
        raise TacticError(
            f"LogicalPartition(rules={rules!r}): expected a mapping logical name -> mesh axis "
            "(or None, or a tuple of axes), or MaxText's list of (name, axis) pairs."
        ) from None
    for item in items:
        if not (isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[0], str)):
            raise TacticError(
                f"LogicalPartition(rules=...): {item!r} is not a (logical name, mesh axis) pair."
            )
        name, target = item
        if target is None:
            axes: tuple[str, ...] = ()
        elif isinstance(target, str):
            axes = (target,)
        elif isinstance(target, tuple | list) and all(isinstance(a, str) for a in target):
            axes = tuple(target)
        else:
            raise TacticError(
                f"LogicalPartition(rules=...): logical name {name!r} maps to {target!r}; "
                "expected a mesh axis name, None or a tuple of axis names."
            )
        out[name] = out.get(name, ()) + tuple(a for a in axes if a not in out.get(name, ()))
    return out


def mesh_axes(names: LogicalNames, rules: Mapping[str, tuple[str, ...]]) -> list[str | None]:
    """One mesh axis (or None) per dim: each dim takes the first of its rule's axes that no
    earlier dim of the same leaf took (MaxText's resolution)."""
    used: set[str] = set()
    out: list[str | None] = []
    for name in names:
        pick = next((a for a in rules.get(name, ()) if a not in used), None) if name else None
        if pick is not None:
            used.add(pick)
        out.append(pick)
    return out


def _check_names(where: str, mapping: Any) -> dict[str, LogicalNames]:
    if not isinstance(mapping, Mapping):
        raise TacticError(
            f"LogicalPartition({where}={mapping!r}): expected a mapping path -> logical names "
            "(one str or None per dim), e.g. partir.logical_axes(params)."
        )
    out: dict[str, LogicalNames] = {}
    for path, names in mapping.items():
        if isinstance(names, str):
            names = (names,)
        if not isinstance(path, str) or not (
            isinstance(names, tuple | list) and all(n is None or isinstance(n, str) for n in names)
        ):
            raise TacticError(
                f"LogicalPartition({where}=...): {path!r} -> {names!r}; expected a path (str) "
                "mapped to a tuple of logical names (str or None), one per dim."
            )
        out[path] = tuple(names)
    return out


class LogicalPartition(ManualPartition):
    """Shard, on `axis`, every dim whose logical name `rules` maps to `axis`; then propagate.

    Args:
      rules: logical name -> mesh axis, None (replicated) or a tuple of axes tried in
        order; or MaxText's ``[(name, axis), ...]``. Only the entries that reach `axis`
        decide anything here; the others are checked and reported if unused.
      axis: the mesh axis this tactic decides.
      logical: path (relative to `params_root`, as `partir.logical_axes` returns it) or
        path pattern (``**/attn/query/w``) -> logical names, one per dim. Where patterns
        overlap, the later one decides a leaf (``{"*mha": ..., "*mha/b": ...}``). None: the names
        the caller read from the parameters' metadata into the tactic context
        (`TacticContext.logical_axes`: absolute paths of every argument, the optimizer
        state carrying its own copy of the metadata); pass ``partir.logical_axes(params)``
        otherwise.
      data: absolute selector (``batch/tokens``) -> logical names, for inputs that are not
        parameters (the optimizer state does not follow them).
      params_root: the argument holding the parameters.
      with_optimizer_state: also shard each parameter's optimizer state the same way
        (under each root of `optimizer_state`, the parameter's path repeated below it).
      optimizer_state: the optimizer-state roots (default optax AdamW's
        ``opt_state/*/mu`` and ``opt_state/*/nu``).

    Example:
      >>> rules = {"heads": "model", "mlp": "model", "embed": None, "kv": None}
      >>> LogicalPartition(rules, axis="model", logical={"**/up/kernel": ("embed", "mlp")})
    """

    rules: dict[str, tuple[str, ...]]
    logical: dict[str, LogicalNames] | None
    data: dict[str, LogicalNames]
    params_root: str
    with_optimizer_state: bool
    optimizer_state: tuple[str, ...]

    def __init__(
        self,
        rules: Rules,
        axis: str,
        logical: Mapping[str, LogicalNames] | None = None,
        *,
        data: Mapping[str, LogicalNames] | None = None,
        params_root: str = "params",
        with_optimizer_state: bool = True,
        optimizer_state: Sequence[str] = OPTIMIZER_STATE,
    ) -> None:
        if not isinstance(axis, str):
            raise TacticError(
                f"LogicalPartition(axis={axis!r}): the axis must be a mesh axis name."
            )
        if isinstance(optimizer_state, str):
            optimizer_state = (optimizer_state,)
        set_ = object.__setattr__  # a frozen dataclass: fields are set once, here
        set_(self, "rules", normalize_rules(rules))
        set_(self, "axis", axis)
        set_(self, "logical", None if logical is None else _check_names("logical", logical))
        set_(self, "data", _check_names("data", data or {}))
        set_(self, "params_root", params_root.strip("/"))
        set_(self, "with_optimizer_state", bool(with_optimizer_state))
        set_(self, "optimizer_state", tuple(optimizer_state))
        chosen = self._selectors(self.logical) if self.logical is not None else {}
        set_(self, "inputs", {k: d for k, d in chosen.items() if d is not None})

    def __repr__(self) -> str:
        rules = {k: (v[0] if len(v) == 1 else (v or None)) for k, v in self.rules.items()}
        n = "from metadata" if self.logical is None else f"{len(self.logical)} logical paths"
        return f"LogicalPartition({rules!r}, axis={self.axis!r}, {n})"

    def _selectors(
        self, logical: Mapping[str, LogicalNames], absolute: bool = False
    ) -> dict[str, int | None]:
        """Selector -> dim on `axis` (None where the names do not reach `axis`), in the
        order given: where patterns overlap, the later one decides the leaf."""
        out: dict[str, int | None] = {}
        roots = [self.params_root]
        if absolute:
            roots = [""]
        elif self.with_optimizer_state:
            roots += [s.strip("/") for s in self.optimizer_state]
        for key, names in logical.items():
            dims = [d for d, a in enumerate(mesh_axes(names, self.rules)) if a == self.axis]
            for root in roots:
                out["/".join(p for p in (root, key.strip("/")) if p)] = dims[0] if dims else None
        for selector, names in self.data.items():
            dims = [d for d, a in enumerate(mesh_axes(names, self.rules)) if a == self.axis]
            out[selector] = dims[0] if dims else None
        return out

    @property
    def reads_metadata(self) -> bool:
        """Whether the tactic reads its logical names from the arguments' own metadata
        (no `logical` given): the API then fills `TacticContext.logical_axes`."""
        return self.logical is None

    def apply(self, ctx: TacticContext, index: int) -> TacticRecord:
        """Resolve the logical names to dims on `axis`, seed them and propagate; report
        unused rules and unknown names."""
        prop = ctx.propagator
        if self.axis not in prop.sizes:
            raise UnknownAxisError(
                f"{self!r} refers to mesh axis {self.axis!r}, but the mesh has axes "
                f"{tuple(prop.sizes)}. Use one of those names or add {self.axis!r} to the mesh."
            )
        logical = self.logical
        if logical is None:
            logical = dict(ctx.logical_axes)
            if not logical:
                raise TacticError(
                    f"{self!r}: the arguments carry no logical axis names (Flax NNX "
                    "`sharding=` metadata or Linen `LogicallyPartitioned` boxes). Pass "
                    "logical= a mapping path pattern -> names, e.g. "
                    "{'**/up/kernel': ('embed', 'mlp')}, or partir.logical_axes(params)."
                )
        # names from the context are absolute paths of every argument (the optimizer state
        # carries its parameters' metadata itself), so no root is prepended
        entries = self._selectors(logical, absolute=self.logical is None)
        per_leaf: dict[int, tuple[int | None, str]] = {}
        for selector, dim in entries.items():
            hits = select(selector, ctx.paths)
            if not hits:
                raise SelectorError(self._no_match(selector, ctx.paths))
            for i in hits:
                per_leaf[i] = (dim, selector)  # a later, overlapping pattern wins
        size = prop.sizes[self.axis]
        chosen = {
            i: (self._check_dim(ctx, i, selector, dim, size), selector)
            for i, (dim, selector) in sorted(per_leaf.items())
            if dim is not None
        }
        record = self._seed(ctx, index, chosen)
        record.notes.extend(self._report(logical))
        for note in record.notes:
            warnings.warn(note, stacklevel=4)
        return record

    def _no_match(self, selector: str, paths: list[str]) -> str:
        text = no_match_message(self, selector, paths)
        root = self.params_root + "/"
        if selector.startswith(root) or not self.with_optimizer_state:
            return text + (
                f" Logical paths are relative to params_root={self.params_root!r}; pass "
                "params_root= if the parameters are another argument."
            )
        return text + (
            " It is the optimizer state that follows a parameter: pass optimizer_state= "
            "(the roots repeating the parameters' paths) or with_optimizer_state=False."
        )

    def _report(self, logical: Mapping[str, LogicalNames]) -> list[str]:
        """Notes on rules no leaf uses and logical names no rule mentions."""
        used = {n for names in (*logical.values(), *self.data.values()) for n in names if n}
        notes = []
        unused = [r for r in self.rules if r not in used]
        if unused:
            notes.append(
                f"{self!r}: rules for {', '.join(map(repr, unused))} match no logical name of "
                f"any parameter; the parameters' logical names are "
                f"{', '.join(map(repr, sorted(used))) or '(none)'}."
            )
        unknown = sorted(used - set(self.rules))
        if unknown:
            notes.append(
                f"{self!r}: logical names {', '.join(map(repr, unknown))} have no rule, so "
                "those dims stay as propagation decides; add them to the rules (None for "
                "replicated) to say so."
            )
        return notes


__all__ = ["LogicalPartition", "mesh_axes", "normalize_rules"]
