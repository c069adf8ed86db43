"""HTML for notebooks: a `Plan`'s input shardings as device grids, its history and collectives.

A sharding grid is drawn from the plan alone, before anything runs (what
`jax.debug.visualize_array_sharding` shows for an array that exists): one cell per tile,
labelled with the devices that hold it and coloured by that set of devices, so tiles held
by the same devices share a colour across every grid of one display. Pure HTML and CSS.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from partir import ir
from partir.plan.collectives import CollectiveTable
from partir.plan.history import History, collective_details, tactic_label
from partir.simulator.display import STYLE, Raw, esc, fmt_bytes, fmt_time, table
from partir.utils.html import html_view

if TYPE_CHECKING:
    from partir.api.plan import Plan

PALETTE = (
    "#8dd3c7", "#ffffb3", "#bebada", "#fb8072", "#80b1d3", "#fdb462", "#b3de69", "#fccde5",
    "#d9d9d9", "#bc80bd", "#ccebc5", "#ffed6f", "#a6cee3", "#b2df8a", "#fb9a99", "#fdbf6f",
    "#cab2d6", "#e5d8bd", "#c7eae5", "#f4cae4",
)  # fmt: skip
"""Tile colours (ColorBrewer Set3 and Paired, light): one per set of devices."""

MAX_GROUPS = 24
"""Sharding grids drawn before the rest are folded into a list."""


class Colours:
    """Colour per device set, in order of first appearance (shared by the grids of one view)."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, ...], str] = {}

    def __call__(self, devices: tuple[int, ...]) -> str:
        if devices not in self.seen:
            self.seen[devices] = PALETTE[len(self.seen) % len(PALETTE)]
        return self.seen[devices]


def device_ids(mesh: Any) -> np.ndarray:
    """Device ids laid out on the mesh: a real mesh's devices, or row-major positions for an
    `AbstractMesh` (planned from shapes, no devices)."""
    shape = tuple(int(s) for s in mesh.shape.values())
    try:
        devices = mesh.devices
    except (AttributeError, ValueError):  # an AbstractMesh raises ValueError
        devices = None
    if isinstance(devices, np.ndarray) and devices.shape == shape:
        return np.vectorize(lambda d: int(d.id), otypes=[int])(devices)
    return np.arange(math.prod(shape)).reshape(shape)


def tiles(
    dims: Sequence[Sequence[str]], mesh_axes: Sequence[str], ids: np.ndarray
) -> dict[tuple[int, ...], tuple[int, ...]]:
    """Tile index (one per tensor dim, major-to-minor axes in mixed radix) -> device ids
    holding that tile, for a value sharded `dims` (per dim, its mesh axes)."""
    sizes = dict(zip(mesh_axes, ids.shape, strict=True))
    out: dict[tuple[int, ...], list[int]] = {}
    for coord in itertools.product(*(range(n) for n in ids.shape)):
        at = dict(zip(mesh_axes, coord, strict=True))
        index = []
        for axes in dims:
            i = 0
            for a in axes:
                i = i * sizes[a] + at[a]
            index.append(i)
        out.setdefault(tuple(index), []).append(int(ids[coord]))
    return {k: tuple(sorted(v)) for k, v in out.items()}


def _device_text(devices: tuple[int, ...]) -> str:
    """``0-3`` for a run, ``0,2,4`` otherwise."""
    if len(devices) > 2 and devices == tuple(range(devices[0], devices[-1] + 1)):
        return f"{devices[0]}-{devices[-1]}"
    return ",".join(map(str, devices))


def sharding_grid(
    shape: Sequence[int],
    dims: Sequence[Sequence[str]],
    mesh_axes: Sequence[str],
    ids: np.ndarray,
    colours: Colours,
) -> str:
    """A CSS grid of the tiles of one value: rows along its first sharded dim, columns along
    the others (a value sharded on one minor dim only is drawn as one row)."""
    held = tiles(dims, mesh_axes, ids)
    sharded = [d for d, axes in enumerate(dims) if axes]
    counts = {d: max(k[d] for k in held) + 1 for d in sharded}
    if not sharded:
        row_dims: list[int] = []
        col_dims: list[int] = []
    elif len(sharded) == 1:
        last = len(shape) - 1
        row_dims, col_dims = ([], sharded) if sharded[0] == last else (sharded, [])
    else:
        row_dims, col_dims = sharded[:1], sharded[1:]
    n_rows = math.prod(counts[d] for d in row_dims)
    n_cols = math.prod(counts[d] for d in col_dims)
    width = max(34, min(70, 280 // max(n_cols, 1)))
    height = max(20, min(40, 200 // max(n_rows, 1)))
    cells = []
    for r, c in itertools.product(range(n_rows), range(n_cols)):
        index = [0] * len(shape)
        for d, i in zip(row_dims, _unravel(r, [counts[d] for d in row_dims]), strict=True):
            index[d] = i
        for d, i in zip(col_dims, _unravel(c, [counts[d] for d in col_dims]), strict=True):
            index[d] = i
        devices = held[tuple(index)]
        slices = ", ".join(
            f"{i * (s // counts[d])}:{(i + 1) * (s // counts[d])}" if d in counts else ":"
            for d, (i, s) in enumerate(zip(index, shape, strict=True))
        )
        cells.append(
            f'<div title="devices {esc(_device_text(devices))} hold [{esc(slices)}]" '
            f'style="background:{colours(devices)};border:1px solid #fff;display:flex;'
            "align-items:center;justify-content:center;font-size:11px;overflow:hidden;"
            f'white-space:nowrap">{esc(_device_text(devices))}</div>'
        )
    return (
        f'<div class="partir-grid" style="display:grid;grid-template-columns:repeat({n_cols},'
        f'{width}px);grid-auto-rows:{height}px;border:1px solid #999;width:max-content">'
        + "".join(cells)
        + "</div>"
    )


def _unravel(i: int, sizes: Sequence[int]) -> list[int]:
    out = []
    for n in reversed(sizes):
        out.append(i % n)
        i //= n
    return out[::-1]


def _spec_text(dims: Sequence[Sequence[str]]) -> str:
    parts = []
    for axes in dims:
        if not axes:
            parts.append("None")
        elif len(axes) == 1:
            parts.append(repr(axes[0]))
        else:
            parts.append("(" + ", ".join(map(repr, axes)) + ")")
    while parts and parts[-1] == "None":
        parts.pop()
    return f"P({', '.join(parts)})"


def input_grids_html(plan: Plan, colours: Colours | None = None) -> str:
    """Every input's sharding as a device grid; inputs of one shape and sharding share one."""
    colours = colours or Colours()
    mesh_axes = [str(a) for a in plan.mesh.shape]
    ids = device_ids(plan.mesh)
    groups: dict[tuple[Any, ...], list[str]] = {}
    for value, path in zip(plan.program.function.args, plan.program.input_paths, strict=True):
        shape = tuple(ir.shape_of(value.type))
        dtype = ir.dtypes.short_name(ir.dtype_of(value.type))
        dims = tuple(tuple(d) for d in plan.sharding_of(value).dims)
        groups.setdefault((shape, dtype, dims), []).append(path)
    cards = []
    for (shape, dtype, dims), paths in list(groups.items())[:MAX_GROUPS]:
        more = f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        cards.append(
            '<div style="margin:0 14px 12px 0">'
            f'<div title="{esc(chr(10).join(paths))}"><code>{esc(paths[0])}</code>'
            f'<span class="muted">{esc(more)}</span></div>'
            f'<div class="muted">{esc(dtype)}{esc(list(shape))} &nbsp; {esc(_spec_text(dims))}</div>'
            + sharding_grid(shape, dims, mesh_axes, ids, colours)
            + "</div>"
        )
    rest = list(groups.values())[MAX_GROUPS:]
    folded = ""
    if rest:
        names = ", ".join(p[0] for p in rest)
        folded = f'<div class="muted">{len(rest)} more shardings not drawn: {esc(names)}</div>'
    return (
        '<div style="display:flex;flex-wrap:wrap;align-items:flex-start">'
        + "".join(cards)
        + "</div>"
        + folded
    )


def history_html(history: History) -> str:
    """The per-tactic history as a table, with each tactic's collective changes under it."""
    rows = history.rows()
    keys = list(rows[0])
    body: list[Any] = []
    for i, r in enumerate(rows):
        body.append([r[k] for k in keys])
        if i == 0:
            continue
        detail = collective_details(history[i - 1])
        conflicts = history[i - 1].conflicts
        for kind in ("clash", "expected"):
            same = [c for c in conflicts if c.kind == kind]
            if same:
                what = "clashes" if kind == "clash" else "expected reshardings"
                detail.append(f"{len(same)} {what}, first: {str(same[0]).splitlines()[0]}")
        if detail:
            lines = "<br>".join(esc(d) for d in detail)
            body.append(Raw(f'<span class="muted">{lines}</span>'))
    out = table(keys, body, numeric=(3, 4, 6, 7, 8))
    mesh = " × ".join(f"{a}={n}" for a, n in history.mesh.items())
    return (
        f"<h3>History on mesh {esc(mesh)}, simulated on {esc(history.hardware)}</h3>"
        '<div class="muted">what each tactic added; step time without overlap, change from '
        "the program before the tactic in brackets</div>" + out
    )


@html_view(CollectiveTable)
def collectives_html(collectives: CollectiveTable, limit: int = 200) -> str:
    """A collective table: totals per (kind, axes), then every collective (folded)."""
    summary = sorted(collectives.summary().items(), key=lambda kv: -kv[1]["bytes"])
    rows = [
        (kind, ",".join(axes), s["count"], fmt_bytes(s["bytes"]))
        for (kind, axes), s in summary
        if kind != "all_slice"
    ]
    total = sum(c.bytes for c in collectives if c.communicates)
    n = sum(c.communicates for c in collectives)
    full = [
        (c.kind, ",".join(c.axes), f"{ir.dtypes.short_name(c.dtype)}{list(c.shape)}",
         f"{c.bytes:,}", c.source, c.reason)
        for c in list(collectives)[:limit]
    ]  # fmt: skip
    cut = f" (first {limit})" if len(collectives) > limit else ""
    return (
        STYLE
        + '<div class="partir-box partir-collectives">'
        + f"<h3>{n} communicating collectives, {esc(fmt_bytes(total))} per device</h3>"
        + table(("kind", "axes", "count", "buffers per device"), rows, numeric=(2, 3))
        + f"<details><summary>every collective{esc(cut)}</summary>"
        + table(("kind", "axes", "local result", "bytes", "source", "for"), full, numeric=(3,))
        + "</details></div>"
    )


def conflicts_html(plan: Plan, limit: int = 20) -> str:
    """The plan's conflicts, clashes and expected reshardings apart, each folded."""
    clashes = [c for c in plan.conflicts if c.kind == "clash"]
    expected = [c for c in plan.conflicts if c.kind != "clash"]
    head = (
        f"<h3>Conflicts: {len(clashes)} clash{'es' if len(clashes) != 1 else ''}, "
        f"{len(expected)} expected resharding{'s' if len(expected) != 1 else ''} "
        f"({len(plan.conflicts)} conflicts in plan.conflicts)</h3>"
    )
    parts = [head]
    for items, what, note in (
        (
            clashes,
            "clashes",
            "tactics (or a tactic and a pin) ask for different layouts of one value",
        ),
        (expected, "expected reshardings", "a tactic's own choice needs communication here"),
    ):
        if items:
            body = "".join(f"<pre>{esc(c)}</pre>" for c in items[:limit])
            cut = f", first {limit}" if len(items) > limit else ""
            parts.append(
                f"<details><summary>{len(items)} {what}{esc(cut)}: {esc(note)}</summary>"
                f"{body}</details>"
            )
    return "".join(parts)


def plan_html(plan: Plan) -> str:
    """A plan as HTML: mesh and schedule, input sharding grids, history, collectives."""
    mesh = " × ".join(f"{a}={n}" for a, n in plan.mesh.shape.items())
    tactics = "".join(
        f'<li><code title="{esc(repr(t))}">{esc(tactic_label(t, 100))}</code></li>'
        for t in plan.schedule
    )
    parts = [
        STYLE,
        '<div class="partir-box partir-plan">',
        f"<h3>Plan for <code>{esc(plan.program.name)}</code> on mesh {esc(mesh)} "
        f"({math.prod(plan.mesh.shape.values())} devices, mode {esc(plan.mode)})</h3>",
        f"<ol start=0>{tactics}</ol>" if tactics else "<p>empty schedule: replicated</p>",
        "<h3>Input shardings</h3>",
        '<div class="muted">one cell per tile, labelled with the devices holding it; a colour '
        "is a set of devices</div>",
        input_grids_html(plan),
    ]
    if plan.schedule:
        parts.append(history_html(plan.history))
    table_ = plan.collectives()
    total = sum(c.bytes for c in table_ if c.communicates)
    summary = sorted(table_.summary().items(), key=lambda kv: -kv[1]["bytes"])
    rows = [
        (kind, ",".join(axes), s["count"], fmt_bytes(s["bytes"]))
        for (kind, axes), s in summary
        if kind != "all_slice"
    ]
    parts.append(f"<h3>Collectives: {esc(fmt_bytes(total))} of buffers per device</h3>")
    parts.append(table(("kind", "axes", "count", "buffers per device"), rows, numeric=(2, 3)))
    if plan.conflicts:
        parts.append(conflicts_html(plan))
    report = plan.history.steps[-1].after if plan.schedule else None
    if report is not None:
        parts.append(
            f'<div class="muted">simulated step time on {esc(report.hardware.name)}: '
            f"{esc(fmt_time(report.step_time_s))}, peak memory "
            f"{esc(fmt_bytes(report.peak_memory_bytes))}; display "
            "<code>plan.simulate(hw)</code> for the plots</div>"
        )
    parts.append("</div>")
    return "".join(parts)


@html_view(History)
def history_box_html(history: History) -> str:
    """A `History`'s notebook display: the table, each tactic's collective changes under
    its row."""
    return f'{STYLE}<div class="partir-box">{history_html(history)}</div>'
