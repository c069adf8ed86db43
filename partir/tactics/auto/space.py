"""The decision space of an automatic tactic: groups of seeds, each on one mesh axis.

Per axis, the open input dimensions (the leaf not yet decided on the axis, the dim not yet
tiled, its size divisible by the axis) are split by dimension class (`classes`): a class's
open members are seeded together or not at all, since seeding one carries the axis to the
others anyway. Classes that repeat (unrolled layers: the same paths up to the layer index,
the same dims and shapes) collapse into one *group*, so a 32-layer model has the decision
space of a one-layer one; a `scan`'s stacked parameters are one leaf already.

Where data parallelism is possible on the axis (gradients already pending sums over it,
or a group of data alone to choose), two ZeRO groups join: ZeRO-3 seeds every parameter
(`roles`: the argument an optax-style state mirrors, whatever its name; else ``params/...``)
still open when it applies, with its optimizer state, on its first open
dim; ZeRO-2 seeds the state alone and pins the parameters (and the step's outputs of the
same path) replicated, as the `Z2` preset does. They apply after the other groups of
their axis and take what those left.

Where the program names intermediate values (`jax.ad_checkpoint.checkpoint_name`, the
``name:`` selectors), *stage* groups join (`_stage_groups`). The stages are the names whose
values have the shape of a data input (the stream between stages, such as a video
transformer's ``[B, T, S, d]`` residual entering each attention). A stage group lays out
one stage on one of its open dims, or two stages consecutive in program order on two
different dims: a *dimension switch*, which pays only as a whole (either half alone
shards everything on one dim), so it is one decision. The stage groups chosen on an axis
are applied as `partir.tactics.sequence.DSPPartition` is, in program order: each named
value on its dim, read on the previous stage's, so the layouts meet at the name op and
one all-to-all switches the dim (Dynamic Sequence Parallelism, arXiv 2403.10266). Values
of other shapes (q, k, v inside a stage) are left to propagation from the stream, which
keeps the family small: ``k * m + k * m * (m - 1)`` groups for ``k`` stages of ``m`` open
dims (``m * (m - 1)`` switches for ``k = 2``).

A group is chosen or not. Groups of one axis that share a leaf exclude each other, as do
groups of two axes that would tile one dim beyond its size, and stage groups that share a
name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from xdsl.ir import SSAValue

from partir import ir
from partir.passes.propagate import Propagator
from partir.tactics.auto.classes import UnionFind, edges, numbers, param_path, pattern
from partir.tactics.manual import NAME_PREFIX, TacticContext
from partir.tactics.sequence import GRAD_SUFFIX, named_ops


@dataclass
class Group:
    """One decision: the seeds (and pins) that go together on one axis.

    Attributes:
      index: position in `Space.groups`.
      axis: the mesh axis.
      seeds: (input leaf index, dim) pairs seeded when the group is chosen, sorted.
      label: a short human name (the first member's path pattern, dim and a count).
      param_bytes: bytes of the leaves seeded.
      repeats: how many classes (layers) the group stands for.
      leaves: the input leaves the group seeds or pins.
      pins: values (indices into `TacticContext.values`: inputs, then outputs) pinned
        replicated when the group is chosen.
      fill: ``"zero3"`` or ``"zero2"`` for a ZeRO group, whose seeds are whatever is
        still open when it applies (`zero_entries`); None for a class group.
      stages: ``((name, dim), ...)`` for a stage group: the values `checkpoint_name`
        named ``name`` on ``dim`` (their name ops' operands on the previous chosen stage's
        dim, `partir.tactics.sequence.dsp_switches`); empty otherwise.
    """

    index: int
    axis: str
    seeds: tuple[tuple[int, int], ...]
    label: str
    param_bytes: int
    repeats: int = 1
    leaves: frozenset[int] = field(default_factory=frozenset)
    pins: tuple[int, ...] = ()
    fill: str | None = None
    stages: tuple[tuple[str, int], ...] = ()


@dataclass
class Space:
    """The groups of every axis, and which pairs exclude or may affect each other."""

    axes: tuple[str, ...]
    sizes: dict[str, int]
    groups: list[Group]
    exclusive: set[tuple[int, int]]
    """Pairs ``(g, h)``, ``g < h``, that cannot both be chosen."""
    classes: int
    """Classes with an open member, over all axes, before repeats collapsed."""
    interacting: set[tuple[int, int]] = field(default_factory=set)
    """Pairs ``(g, h)``, ``g < h``, whose classes meet in some op: the only pairs whose
    effects may not compound independently."""

    def compatible(self, chosen: Iterable[int], g: int) -> bool:
        """Whether group `g` can join `chosen`."""
        return all((min(g, h), max(g, h)) not in self.exclusive for h in chosen if h != g)


def _open_dims(ctx: TacticContext, axis: str, size: int, i: int) -> list[int]:
    """The dims of input leaf `i` an automatic tactic may seed on `axis`."""
    if i in ctx.non_array_inputs:
        return []
    prop = ctx.propagator
    value = ctx.inputs[i]
    if axis in prop.axes_of(value) or (value, axis) in prop.pinned:
        return []  # an earlier tactic decided this leaf on the axis: never undone
    shape = ir.shape_of(value.type)
    dims = prop.dims.get(value)
    return [
        d
        for d, n in enumerate(shape)
        if n % size == 0 and n >= size and not (dims and dims[d])  # a tiled dim stays
    ]


def _signature(ctx: TacticContext, members: list[tuple[int, int]]) -> tuple[object, ...] | None:
    """What a class looks like with its layer index erased; None if it is not per-layer."""
    seen: set[tuple[str, ...]] = set()
    items = []
    for i, d in members:
        path = ctx.input_paths[i]
        own = numbers(param_path(path))
        if own:
            seen.add(own)
        items.append((pattern(path), d, ir.shape_of(ctx.inputs[i].type)))
    if len(seen) != 1:
        return None  # no layer index, or members of several layers: not a repeat
    return tuple(sorted(items))


def _axis_groups(
    ctx: TacticContext, uf: UnionFind, axis: str, start: int
) -> tuple[list[Group], int]:
    size = ctx.propagator.sizes[axis]
    by_class: dict[tuple[SSAValue, int], dict[int, int]] = {}
    if size > 1:
        for i in range(len(ctx.inputs)):
            for d in _open_dims(ctx, axis, size, i):
                # one leaf on two dims of a class: keep the major one
                by_class.setdefault(uf.find((ctx.inputs[i], d)), {}).setdefault(i, d)
    merged: dict[object, list[tuple[tuple[int, int], ...]]] = {}
    for members in sorted(tuple(sorted(m.items())) for m in by_class.values()):
        sig = _signature(ctx, list(members))
        merged.setdefault(sig if sig is not None else ("class", members[0]), []).append(members)
    groups: list[Group] = []
    for parts in merged.values():
        seeds = tuple(sorted(s for part in parts for s in part))
        if len({i for i, _ in seeds}) != len(seeds):  # "repeats" that overlap: keep apart
            for part in parts:
                groups.append(_group(ctx, start + len(groups), axis, part, 1))
        else:
            groups.append(_group(ctx, start + len(groups), axis, seeds, len(parts)))
    # ZeRO pays where gradients are pending sums over the axis: already (data
    # parallelism decided earlier), or once a group of data alone is chosen with it
    pending = any(axis in axes for axes in ctx.propagator.partial.values())
    r = roles(ctx)
    data = any(all(r.is_data(i) for i, _ in g.seeds) for g in groups)
    if (pending or data) and r.params:
        for kind, what in (("zero3", "parameters and state"), ("zero2", "state")):
            groups.append(
                Group(start + len(groups), axis, (), f"{axis}: ZeRO ({kind}: open {what})",
                      0, 1, frozenset(), (), kind)
            )  # fmt: skip
    return groups, len(by_class)


@dataclass(frozen=True)
class Roles:
    """Which input leaves are parameters and which optimizer state mirrors which parameter.

    Found from the structure, whatever the names: an optax state's ``mu``/``nu`` subtrees
    repeat the whole parameter tree (same sub-paths, same shapes), so an argument whose
    whole tree some subtree of another argument mirrors holds the parameters. Without such a
    mirror the zoo's naming (``params/...``, `classes.param_path`) decides.
    """

    params: frozenset[int]
    """Input leaf indices of parameters."""
    state_of: dict[int, int]
    """Optimizer-state leaf index -> the parameter leaf index it mirrors."""
    roots: dict[int, int]
    """Parameter leaf index -> number of leading path components naming its root (1 for
    ``params/...``), to find the step's output of the same sub-path."""

    def is_data(self, i: int) -> bool:
        """Neither a parameter nor optimizer state."""
        return i not in self.params and i not in self.state_of


def roles(ctx: TacticContext) -> Roles:
    """The parameters and their optimizer state among `ctx`'s inputs (see `Roles`)."""
    from partir.ir.paths import split_path

    paths = ctx.input_paths
    shapes = [ir.shape_of(v.type) for v in ctx.inputs]
    parts = [split_path(p) for p in paths]
    # every proper subtree: prefix (components) -> {sub-path: leaf index}
    subtrees: dict[tuple[str, ...], dict[tuple[str, ...], int]] = {}
    for i, comps in enumerate(parts):
        for k in range(1, len(comps)):
            subtrees.setdefault(tuple(comps[:k]), {})[tuple(comps[k:])] = i
    by_keys: dict[frozenset[tuple[str, ...]], list[tuple[str, ...]]] = {}
    for prefix, leaves in subtrees.items():
        by_keys.setdefault(frozenset(leaves), []).append(prefix)
    params: set[int] = set()
    state_of: dict[int, int] = {}
    root_len: dict[int, int] = {}
    for prefix, leaves in subtrees.items():
        if len(prefix) != 1:
            continue  # a parameter tree is a whole argument
        for other in by_keys.get(frozenset(leaves), ()):
            if other[0] == prefix[0]:
                continue  # a mirror lives in another argument (the optimizer state)
            mirror = subtrees[other]
            if any(shapes[mirror[sub]] != shapes[leaf] for sub, leaf in leaves.items()):
                continue
            for sub, leaf in leaves.items():
                params.add(leaf)
                root_len[leaf] = 1
                state_of[mirror[sub]] = leaf
    if not params:  # no mirror: the zoo's naming
        index = {p: i for i, p in enumerate(paths)}
        for i, path in enumerate(paths):
            if path.startswith("params/"):
                params.add(i)
                root_len[i] = 1
            elif (owner := param_path(path)) != path and owner in index:
                if shapes[index[owner]] == shapes[i]:
                    state_of[i] = index[owner]
        state_of = {j: i for j, i in state_of.items() if i in params}
    return Roles(frozenset(params), state_of, root_len)


def stream_names(ctx: TacticContext) -> dict[str, tuple[int, ...]]:
    """Forward ``checkpoint_name`` names whose values all have the shape of a data input
    (`Roles.is_data`), in program order: name -> that shape. A ``<name>_grad`` whose
    ``<name>`` is a name too is its cotangent's twin, not a stage of its own."""
    r = roles(ctx)
    data_shapes = {
        ir.shape_of(v.type)
        for i, v in enumerate(ctx.inputs)
        if r.is_data(i) and i not in ctx.non_array_inputs
    }
    found: dict[str, set[tuple[int, ...]]] = {}
    for op in named_ops(ctx.propagator.module, None):
        found.setdefault(str(op.params.find("name")), set()).add(ir.shape_of(op.results[0].type))
    out = {}
    for name, shapes in found.items():
        is_twin = name.endswith(GRAD_SUFFIX) and name[: -len(GRAD_SUFFIX)] in found
        if not is_twin and len(shapes) == 1 and (shape := next(iter(shapes))) in data_shapes:
            out[name] = shape
    return out


def _stage_groups(ctx: TacticContext, axis: str, start: int) -> list[Group]:
    """The stage family on `axis` (see the module docstring): per stage (`stream_names`),
    one group per dim open on `axis` in all its values (and its twins'); per two stages
    consecutive in program order (cyclically: the last switches back to the first), one
    group per two different open dims."""
    prop = ctx.propagator
    size = prop.sizes[axis]
    if size < 2:
        return []
    open_dims: dict[str, list[int]] = {}
    for name, shape in stream_names(ctx).items():
        values = [
            v
            for op in named_ops(prop.module, {name, name + GRAD_SUFFIX})
            for v in (op.results[0], op.operands[0])
        ]
        open_dims[name] = [
            d
            for d, n in enumerate(shape)
            if n % size == 0
            and n >= size
            # decided by an earlier tactic, or tiled on d already
            and not any(
                axis in prop.axes_of(v) or (v, axis) in prop.pinned or _tiled(prop, v, d)
                for v in values
            )
        ]
    choices: list[tuple[tuple[str, int], ...]] = [
        ((name, d),) for name, dims in open_dims.items() for d in dims
    ]
    names = [n for n, dims in open_dims.items() if dims]
    pairs = list(zip(names, names[1:] + names[:1], strict=True)) if len(names) > 2 else []
    pairs += [(names[0], names[1])] if len(names) == 2 else []
    for a, b in pairs:
        choices += [((a, da), (b, db)) for da in open_dims[a] for db in open_dims[b] if da != db]
    groups: list[Group] = []
    for stages in choices:
        label = f"{axis}: " + " -> ".join(f"{NAME_PREFIX}{n}:{d}" for n, d in stages)
        groups.append(Group(start + len(groups), axis, (), label, 0, stages=stages))
    return groups


def _tiled(prop: Propagator, value: SSAValue, d: int) -> bool:
    dims = prop.dims.get(value)
    return bool(dims and dims[d])


def build_space(ctx: TacticContext, axes: Sequence[str], uf: UnionFind) -> Space:
    """The groups an automatic tactic decides on `axes`, given what earlier tactics did.

    Args:
      ctx: the tactic context (its propagator holds the state earlier tactics left).
      axes: the mesh axes to decide.
      uf: the dimension classes (`classes.dimension_classes`).
    """
    sizes = {a: ctx.propagator.sizes[a] for a in axes}
    groups: list[Group] = []
    count = 0
    for axis in axes:
        more, n = _axis_groups(ctx, uf, axis, len(groups))
        groups += more
        count += n
        groups += _stage_groups(ctx, axis, len(groups))
    exclusive: set[tuple[int, int]] = set()
    for g in groups:
        for h in groups[g.index + 1 :]:
            if g.axis == h.axis:
                one_name = {n for n, _ in g.stages} & {n for n, _ in h.stages}
                if g.leaves & h.leaves or (g.fill and h.fill) or one_name:
                    exclusive.add((g.index, h.index))
            elif _overfull(ctx, g, h, sizes):
                exclusive.add((g.index, h.index))
    interacting = _meeting(ctx, uf, groups)
    for z in groups:
        # a ZeRO group takes what the others leave, and a stage group lays out the stream
        # every other group's values flow through: each meets all the others
        if z.fill or z.stages:
            interacting |= {
                (min(z.index, g.index), max(z.index, g.index))
                for g in groups
                if g is not z and (z.fill or g.axis == z.axis)
            }
    interacting -= exclusive
    return Space(tuple(axes), sizes, groups, exclusive, count, interacting)


def _overfull(ctx: TacticContext, g: Group, h: Group, sizes: dict[str, int]) -> bool:
    """Whether groups of two axes would tile one dim of a leaf beyond what its size divides
    (a leaf seeded on one axis and pinned on the other is fine: pins are per axis)."""
    theirs = dict(h.seeds)
    for i, d in g.seeds:
        if theirs.get(i) == d:
            n = ir.shape_of(ctx.inputs[i].type)[d]
            if n % (sizes[g.axis] * sizes[h.axis]):
                return True
    return False


def _meeting(ctx: TacticContext, uf: UnionFind, groups: list[Group]) -> set[tuple[int, int]]:
    """Pairs of groups whose classes both have a dim in some op (or are one class)."""
    of_root: dict[tuple[SSAValue, int], set[int]] = {}
    for g in groups:
        for i, d in g.seeds:
            of_root.setdefault(uf.find((ctx.inputs[i], d)), set()).add(g.index)
    pairs: set[tuple[int, int]] = set()
    for edge in edges(ctx):
        present: set[int] = set()
        for v, tdims in zip(edge.values, edge.rule.tensors, strict=True):
            for d in range(len(tdims)):
                present |= of_root.get(uf.find((v, d)), set())
        if len(present) > 1:
            ordered = sorted(present)
            pairs.update((a, b) for k, a in enumerate(ordered) for b in ordered[k + 1 :])
    return pairs


def zero_entries(
    ctx: TacticContext, prop: Propagator, axis: str, kind: str
) -> list[tuple[int, int | None]]:
    """What a ZeRO group decides once the groups before it applied: every parameter
    (`roles`: ``params/...``, or whatever argument the optimizer state mirrors) still open on `axis` on its first open dim that divides, with its
    optimizer state on the same dim (``"zero3"``); or the state alone, the parameter and
    the step's outputs of the same path (``out/<k>/...``) pinned replicated (``"zero2"``).

    Returns (index into `TacticContext.values`, dim or None for a pin), sorted.
    """
    size = prop.sizes[axis]
    paths = ctx.input_paths
    r = roles(ctx)
    state_of: dict[str, list[int]] = {}
    for j, i in r.state_of.items():
        state_of.setdefault(paths[i], []).append(j)
    n = len(ctx.inputs)
    outputs: dict[str, list[int]] = {}
    for k, path in enumerate(ctx.output_paths):
        parts = path.split("/", 2)
        if len(parts) == 3:
            outputs.setdefault(parts[2], []).append(n + k)
    out: dict[int, int | None] = {}
    for i, path in enumerate(paths):
        if i not in r.params or i in ctx.non_array_inputs:
            continue
        value = ctx.inputs[i]
        if axis in prop.axes_of(value) or (value, axis) in prop.pinned:
            continue
        shape = ir.shape_of(value.type)
        dims = prop.dims.get(value)
        open_dims = [d for d, s in enumerate(shape) if s % size == 0 and s >= size
                     and not (dims and dims[d])]  # fmt: skip
        if not open_dims:
            continue
        d = open_dims[0]
        state = [j for j in state_of.get(path, ())
                 if ir.shape_of(ctx.inputs[j].type) == shape and _is_open(prop, ctx.inputs[j], axis, d)]  # fmt: skip
        if kind == "zero3":
            out[i] = d
        else:
            if not state:
                continue
            out[i] = None
            rest = path.split("/", r.roots.get(i, 1))[-1]
            for j in outputs.get(rest, ()):
                if ir.shape_of(ctx.values[j].type) == shape and axis not in prop.axes_of(
                    ctx.values[j]
                ):
                    out[j] = None
        for j in state:
            out[j] = d
    return sorted(out.items())


def _is_open(prop: Propagator, value: SSAValue, axis: str, d: int) -> bool:
    dims = prop.dims.get(value)
    return (
        axis not in prop.axes_of(value)
        and (value, axis) not in prop.pinned
        and not (dims and dims[d])
    )


def _group(
    ctx: TacticContext, index: int, axis: str, seeds: tuple[tuple[int, int], ...], repeats: int
) -> Group:
    i, d = seeds[0]
    label = f"{axis}: {pattern(ctx.input_paths[i])}:{d}"
    if len(seeds) > 1:
        label += f" (+{len(seeds) - 1})"
    nbytes = 0
    for j, _ in seeds:
        t = ctx.inputs[j].type
        nbytes += ir.nbytes_of(t)
    return Group(index, axis, seeds, label, nbytes, repeats, frozenset(j for j, _ in seeds))
