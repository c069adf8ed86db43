"""Plain-text views of a plan for a terminal: `plan.summary()`, `plan.show_sharding(path)`
and `plan.describe()`.

The notebook views (`partir.display.notebook`) draw the same things in HTML; these fit in a
terminal and in a log. `summary` groups leaves that differ only in a list index
(``params/blocks/*/attn/q`` once for every layer, when every layer has the same
sharding); `show_sharding` draws one value's tiles as a grid with the element ranges
and devices of each tile, as `jax.debug.visualize_array_sharding` does for an array
that exists; `describe` is the IR with its shardings, primitive parameters elided
unless ``full=True``.
"""

from __future__ import annotations

import collections
import math
import re
from typing import TYPE_CHECKING, Any

from partir import ir
from partir.display.notebook import _device_text, device_ids, tiles
from partir.plan.conflict_kind import counts as conflict_counts
from partir.plan.history import tactic_label

if TYPE_CHECKING:
    from partir.api.plan import Plan


class Text(str):
    """A string that shows as itself at the prompt (no quotes, real line breaks)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return str(self)


def spec_text(spec: Any) -> str:
    """``P(None, 'model')``, ``P(('batch', 'model'))``, ``P()``: a PartitionSpec, short."""
    parts = []
    for entry in spec:
        if entry is None:
            parts.append("None")
        elif isinstance(entry, tuple):
            parts.append("(" + ", ".join(repr(a) for a in entry) + ")")
        else:
            parts.append(repr(entry))
    while parts and parts[-1] == "None":
        parts.pop()  # P(None, 'model', None) is P(None, 'model')
    return f"P({', '.join(parts)})"


_INDEX = re.compile(r"^\d+$")


def _pattern(path: str) -> tuple[str, tuple[str, ...]]:
    """``("blocks/*/attn/q", ("0",))``: the path with list indices as ``*``, and them."""
    parts = path.split("/")
    indices = tuple(p for p in parts if _INDEX.match(p))
    return "/".join("*" if _INDEX.match(p) else p for p in parts), indices


def _type_text(shape: tuple[int, ...], dtype: Any) -> str:
    return f"{ir.dtypes.short_name(dtype)}[{','.join(map(str, shape))}]"


def _argument(path: str) -> str:
    parts = path.split("/")
    # outputs are named out/<position>/...: group them per position, as arguments
    return "/".join(parts[:2]) if parts[0] == "out" and len(parts) > 1 else parts[0]


def sharding_rows(plan: Plan) -> dict[str, list[tuple[str, str, str, int]]]:
    """Per argument (``params``, ``batch``, ``out/0``...): rows (pattern, type, spec,
    leaves), leaves differing only in list indices grouped into one row when they share
    type and sharding. A pattern with several rows names the indices of each."""
    paths = plan.program.input_paths + plan.program.output_paths
    values = plan._inputs + plan._outputs
    groups: dict[str, dict[tuple[str, str, str], list[tuple[str, ...]]]] = collections.defaultdict(
        dict
    )
    for path, value in zip(paths, values, strict=True):
        arg = _argument(path)
        rest = path[len(arg) + 1 :]
        pattern, indices = _pattern(rest) if rest else ("(the value)", ())
        kind = _type_text(ir.shape_of(value.type), ir.dtype_of(value.type))
        spec = spec_text(plan.sharding_of(path).spec)
        groups[arg].setdefault((pattern, kind, spec), []).append(indices)
    out: dict[str, list[tuple[str, str, str, int]]] = {}
    for arg, by_key in groups.items():
        per_pattern = collections.Counter(p for p, _, _ in by_key)
        rows = []
        for (pattern, kind, spec), members in by_key.items():
            shown = pattern
            if per_pattern[pattern] > 1:
                shown = _with_indices(pattern, members)
            rows.append((shown, kind, spec, len(members)))
        out[arg] = rows
    return out


def _with_indices(pattern: str, members: list[tuple[str, ...]]) -> str:
    """``blocks/{0,2}/attn/q``: each ``*`` replaced by the indices this row covers."""
    parts = pattern.split("/")
    stars = [i for i, p in enumerate(parts) if p == "*"]
    for k, i in enumerate(stars):
        seen = sorted({m[k] for m in members if k < len(m)}, key=int)
        parts[i] = seen[0] if len(seen) == 1 else "{" + ",".join(seen) + "}"
    return "/".join(parts)


def summary_text(plan: Plan) -> str:
    """`plan.summary()`: the schedule with what each tactic did, then per argument its
    sharding table, grouped by pattern."""
    mesh = ", ".join(f"{a}={n}" for a, n in plan.mesh.shape.items())
    kinds = [c.kind for c in plan.conflicts]
    lines = [
        f"{plan.program.name} on mesh {mesh} (mode {plan.mode}): "
        f"{len(plan.schedule)} tactics; {conflict_counts(kinds)}"
    ]
    for rec in plan.records:
        clashes = sum(c.kind == "clash" for c in plan.conflicts if rec.index in c.tactic_indices)
        lines.append(
            f"#{rec.index} {tactic_label(rec.tactic, 70)}: seeded {len(rec.seeded)} inputs, "
            f"{len(rec.conflicts)} conflicts" + (f" ({clashes} clashes)" if clashes else "")
        )
        # what the tactic chose not to do (ZeRO's skipped leaves, unused logical rules)
        lines.extend(f"    note: {note}" for note in getattr(rec, "notes", ()))
    tables = sharding_rows(plan)
    for arg, rows in tables.items():
        leaves = sum(n for *_, n in rows)
        lines.append("")
        # an output laid out as an input (the new parameters, the new optimizer state)
        same = next((a for a, r in tables.items() if a != arg and r == rows), None)
        if arg.startswith("out") and same is not None and not same.startswith("out"):
            lines.append(f"{arg} ({leaves} lea{'ves' if leaves != 1 else 'f'}): as {same}")
            continue
        lines.append(f"{arg} ({leaves} lea{'ves' if leaves != 1 else 'f'}):")
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        w2 = max(len(r[2]) for r in rows)
        for pattern, kind, spec, n in rows:
            count = f"x{n}" if n > 1 else ""
            lines.append(f"  {pattern:<{w0}}  {kind:<{w1}}  {spec:<{w2}}  {count}".rstrip())
    return "\n".join(lines)


def sharding_grid_text(plan: Plan, path: str, max_cells: int = 64) -> str:
    """One value's tiles as a text grid: rows along its first sharded dim, columns
    along the others, each cell with its element ranges and the devices holding it."""
    sharding = plan.sharding_of(path)  # raises SelectorError, listing near paths
    value = dict(
        zip(plan.program.input_paths + plan.program.output_paths,
            plan._inputs + plan._outputs, strict=True)
    )[path]  # fmt: skip
    shape = ir.shape_of(value.type)
    mesh_axes = [str(a) for a in plan.mesh.axis_names]
    dims: list[tuple[str, ...]] = []
    for d in range(len(shape)):
        entry = sharding.spec[d] if d < len(sharding.spec) else None
        dims.append(() if entry is None else (entry,) if isinstance(entry, str) else tuple(entry))
    ids = device_ids(plan.mesh)
    held = tiles(dims, mesh_axes, ids)
    head = f"{path}: {_type_text(shape, ir.dtype_of(value.type))} {spec_text(sharding.spec)}"
    mesh = " x ".join(f"{a}={n}" for a, n in plan.mesh.shape.items())
    head += f" on mesh {mesh}"
    sharded = [d for d, axes in enumerate(dims) if axes]
    counts = {d: math.prod(plan.mesh.shape[a] for a in dims[d]) for d in sharded}
    if not sharded:
        return f"{head}\nreplicated: every device ({_device_text(tuple(sorted(ids.flat)))}) holds it whole"
    row_dims, col_dims = sharded[:1], sharded[1:]
    if sharded == [len(shape) - 1] and len(shape) > 1 and counts[sharded[0]] <= 8:
        row_dims, col_dims = [], sharded  # split along its minor dim: one row, as drawn
    n_rows = math.prod(counts[d] for d in row_dims)
    n_cols = math.prod(counts[d] for d in col_dims)
    if n_rows * n_cols > max_cells:
        return f"{head}\n{n_rows * n_cols} tiles: too many to draw (max_cells={max_cells})"

    def cell(r: int, c: int) -> list[str]:
        index = [0] * len(shape)
        if row_dims:
            index[row_dims[0]] = r
        rest = c
        for d in reversed(col_dims):
            index[d], rest = rest % counts[d], rest // counts[d]
        ranges = []
        for d in range(len(shape)):
            if d in counts:
                step = shape[d] // counts[d]
                ranges.append(f"{index[d] * step}:{(index[d] + 1) * step}")
            else:
                ranges.append(":")
        devices = held[tuple(index[d] if d in counts else 0 for d in range(len(shape)))]
        return [f"[{', '.join(ranges)}]", f"dev {_device_text(devices)}"]

    grid = [[cell(r, c) for c in range(n_cols)] for r in range(n_rows)]
    width = max(len(line) for row in grid for lines in row for line in lines)
    rule = "+" + "+".join("-" * (width + 2) for _ in range(n_cols)) + "+"
    out = [head, rule]
    for row in grid:
        for k in range(2):
            out.append("|" + "|".join(f" {lines[k]:^{width}} " for lines in row) + "|")
        out.append(rule)
    axes_note = ", ".join(
        f"dim {d} split {counts[d]} ways over {'x'.join(dims[d])}" for d in sharded
    )
    out.append(f"{axes_note}; each cell: the tile's element ranges, the devices holding it")
    return "\n".join(out)


def ir_text(plan: Plan) -> str:
    """The IR with every decided sharding written in (what `partir-propagate` reads), under
    a comment line with the mesh and schedule: ``plan.ir()``."""
    plan.propagator.write_to_ir()
    header = f"// mesh {dict(plan.mesh.shape)}; schedule: " + "; ".join(
        repr(t) for t in plan.schedule
    )
    return header + "\n" + str(plan.program)


def describe_text(plan: Plan, full: bool = False) -> str:
    """The plan as text. Compact (the default): `summary_text` (leaves differing only in
    list indices grouped, so a model's parameters take a line per kind of layer, not
    per layer), then the collectives per kind and axes. `full`: `str(plan)`, the IR with
    every sharding, a line per op (`ir_text`)."""
    if full:
        return ir_text(plan)
    lines = [summary_text(plan), ""]
    table = plan.collectives()
    moving = [c for c in table if c.communicates]
    lines.append(
        f"collectives: {len(moving)} communicating, "
        f"{sum(c.bytes for c in moving):,} bytes of buffers per device"
    )
    for (kind, axes), s in sorted(table.summary().items(), key=lambda kv: -kv[1]["bytes"]):
        if kind != "all_slice":
            lines.append(
                f"  {s['count']:>4} x {kind:<18} over {','.join(axes):<12} {s['bytes']:>12,} B"
            )
    n_ops = len(plan.program.to_text(compact=True).splitlines())
    lines.append(
        f"(plan.ir(): the IR with every sharding, {n_ops} lines; "
        "plan.collectives(): each collective with its source line)"
    )
    return "\n".join(lines)
