"""`partir.compare`: several schedules (on several meshes and hardware) side by side.

Each (schedule, mesh) is planned once with `partir.partition` and simulated once per
hardware profile with `plan.simulate`, exactly as separate calls would; the rows carry
the numbers a person compares schedules by: step time (no overlap and overlapped),
communication time and bytes, collectives per step, peak memory and whether it fits,
MFU, and the plan's clashes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from partir.api.partition import partition
from partir.errors import TacticError
from partir.plan.conflict_kind import CLASH
from partir.plan.history import tactic_label
from partir.simulator import Report
from partir.simulator.display import STYLE, fmt_bytes, fmt_mfu, fmt_time, table


@dataclass(frozen=True)
class Row:
    """One schedule on one mesh, simulated on one hardware profile."""

    schedule: str
    """The schedule's name (its key in `schedules`, or its tactics' short labels)."""
    mesh: str
    """``batch=4 x model=2``."""
    hardware: str
    """The profile's name."""
    step_time_s: float
    """Simulated step time, no overlap (`Report.step_time_s`)."""
    step_time_overlap_s: float
    """Simulated step time, communication overlapped where it can be."""
    communication_time_s: float
    communication_bytes: float
    """Bytes each device sends per step."""
    collectives: float
    """Communicating collectives run per step (a loop body's count times its trips)."""
    collectives_by_kind: dict[str, float]
    """Per kind (``all_gather``...), runs per step."""
    peak_memory_bytes: int
    fits: bool
    mfu: float
    clashes: int
    """Clashes between the schedule's tactics (`plan.conflicts` of kind "clash")."""
    report: Report = field(repr=False, compare=False)
    plan: Any = field(repr=False, compare=False)


class Comparison(list[Row]):
    """The rows of `partir.compare`, printing as a table; `plot()` draws them."""

    def columns(self) -> list[dict[str, str]]:
        """The table's cells per row, as display strings."""
        out = []
        for r in self:
            kinds = ", ".join(
                f"{n:g} {k}"
                for k, n in sorted(r.collectives_by_kind.items(), key=lambda kv: -kv[1])
            )
            out.append(
                {
                    "schedule": r.schedule,
                    "mesh": r.mesh,
                    "hardware": r.hardware,
                    "step": fmt_time(r.step_time_s),
                    "overlapped": fmt_time(r.step_time_overlap_s),
                    "comm time": fmt_time(r.communication_time_s),
                    "comm sent": fmt_bytes(r.communication_bytes),
                    "collectives": f"{r.collectives:g} ({kinds})" if kinds else "0",
                    "peak memory": fmt_bytes(r.peak_memory_bytes) + ("" if r.fits else " (NO fit)"),
                    "MFU": fmt_mfu(r.mfu),
                    "clashes": str(r.clashes),
                }
            )
        return out

    def __str__(self) -> str:
        cells = self.columns()
        if not cells:
            return "(no rows)"
        keys = list(cells[0])
        widths = {k: max(len(k), *(len(c[k]) for c in cells)) for k in keys}
        lines = ["  ".join(k.ljust(widths[k]) for k in keys).rstrip()]
        lines += ["  ".join(c[k].ljust(widths[k]) for k in keys).rstrip() for c in cells]
        lines.append("step: simulated step time, no overlap; overlapped: communication hidden "
                     "behind independent compute; comm sent: bytes each device sends per step")  # fmt: skip
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = self.columns()
        if not cells:
            return "<p>(no rows)</p>"
        keys = list(cells[0])
        body = [[c[k] for k in keys] for c in cells]
        return (
            f'{STYLE}<div class="partir-box">{table(keys, body, numeric=(3, 4, 5, 6, 8, 9))}</div>'
        )

    def plot(self) -> Any:
        """A matplotlib figure: step time (no overlap, overlapped), peak memory and bytes
        sent per row, one bar group per row (no pyplot state; a notebook shows it)."""
        from matplotlib.figure import Figure

        labels = [
            " | ".join(x for x in (r.schedule, r.mesh if _varies(self, "mesh") else "",
                                   r.hardware if _varies(self, "hardware") else "") if x)
            for r in self
        ]  # fmt: skip
        fig = Figure(figsize=(11, 1.2 + 0.45 * len(self)), layout="constrained")
        ax_t, ax_m, ax_c = fig.subplots(1, 3, sharey=True)
        y = list(range(len(self)))
        ax_t.barh(
            [v + 0.2 for v in y], [r.step_time_s * 1e3 for r in self], 0.4, label="no overlap"
        )
        ax_t.barh([v - 0.2 for v in y], [r.step_time_overlap_s * 1e3 for r in self], 0.4,
                  label="overlapped")  # fmt: skip
        ax_t.set_xlabel("step time (ms)")
        ax_t.legend(loc="lower right", fontsize="small")
        colours = ["tab:blue" if r.fits else "tab:red" for r in self]
        ax_m.barh(y, [r.peak_memory_bytes / 2**30 for r in self], color=colours)
        ax_m.set_xlabel("peak memory per device (GiB; red: does not fit)")
        ax_c.barh(y, [r.communication_bytes / 2**20 for r in self], color="tab:gray")
        ax_c.set_xlabel("bytes sent per device per step (MiB)")
        ax_t.set_yticks(y, labels)
        ax_t.invert_yaxis()
        return fig


def _varies(rows: Sequence[Row], attr: str) -> bool:
    return len({getattr(r, attr) for r in rows}) > 1


def _mesh_text(mesh: Any) -> str:
    shape = mesh.items() if isinstance(mesh, Mapping) else getattr(mesh, "shape", {}).items()
    return " x ".join(f"{a}={n}" for a, n in shape)


def _named(schedules: Any) -> list[tuple[str, Sequence[Any]]]:
    if isinstance(schedules, Mapping):
        return [(str(k), v) for k, v in schedules.items()]
    if not isinstance(schedules, Sequence) or isinstance(schedules, str):
        raise TacticError(
            f"partir.compare expects schedules as a mapping name -> schedule or a list of "
            f"schedules, got {type(schedules).__name__}."
        )
    out = []
    for s in schedules:
        tactics = list(s) if isinstance(s, Sequence) else [s]
        out.append((" + ".join(tactic_label(t, 32) for t in tactics) or "(empty)", s))
    return out


def compare(
    schedules: Mapping[str, Any] | Sequence[Any],
    fn: Callable[..., Any],
    *args: Any,
    mesh: Any = None,
    hardware: str | Sequence[Any] = ("tpu-v5p", "h100"),
    mode: str = "spmd",
    simulate: Mapping[str, Any] | None = None,
    plot: bool = False,
    **kwargs: Any,
) -> Comparison:
    """Plan `fn` under each schedule and simulate each plan on each hardware profile.

    Args:
      schedules: a mapping name -> schedule (``{"BP": BP(), "BP+MP": [*BP(), *MP()]}``)
        or a list of schedules (named by their tactics).
      fn: the function to partition.
      *args, **kwargs: its arguments: arrays or `jax.ShapeDtypeStruct`s (nothing runs).
      mesh: as for `partir.partition`; or a list of meshes to compare on each.
      hardware: a profile name or `partir.simulator.Hardware`, or a list of them.
      mode: the `partir.partition` mode (``"spmd"``: what is simulated is what runs).
      simulate: options for every `plan.simulate` call (``{"donate": True}``).
      plot: also draw the figure (`Comparison.plot`) and attach it as ``.figure``.

    Returns:
      A `Comparison`: one `Row` per (mesh, hardware, schedule), in that nesting order;
      ``print`` it for the table. Each row's numbers are those of
      ``partir.partition(schedule, mesh=mesh, mode=mode)(fn).plan(*args).simulate(hw)``.
    """
    named = _named(schedules)
    meshes = list(mesh) if isinstance(mesh, list) else [mesh]
    profiles = (
        [hardware]
        if isinstance(hardware, str) or not isinstance(hardware, Sequence)
        else list(hardware)
    )
    options = dict(simulate or {})
    rows = Comparison()
    for m in meshes:
        plans = [
            (name, partition(s, mesh=m, mode=mode)(fn).plan(*args, **kwargs)) for name, s in named
        ]
        for hw in profiles:
            for name, plan in plans:
                report = plan.simulate(hw, **options)
                by_kind: dict[str, float] = {}
                for (kind, _), s in report.collective_summary().items():
                    by_kind[kind] = by_kind.get(kind, 0.0) + s["count"]
                rows.append(
                    Row(
                        name, _mesh_text(plan.mesh), report.hardware.name, report.step_time_s,
                        report.step_time_overlap_s, report.communication_time_s,
                        report.communication_bytes, math.fsum(by_kind.values()), by_kind,
                        report.peak_memory_bytes, report.fits, report.mfu,
                        sum(c.kind == CLASH for c in plan.conflicts), report, plan,
                    )
                )  # fmt: skip
    if plot:
        rows.figure = rows.plot()  # type: ignore[attr-defined]
    return rows
