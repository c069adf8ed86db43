"""`plan.collectives()`: every collective of the device-local program, in the user's terms."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

from xdsl.dialects.builtin import ModuleOp, StringAttr

from partir import ir
from partir.passes.propagate import location_of

KINDS = {
    "spmd.all_gather": "all_gather",
    "spmd.all_slice": "all_slice",
    "spmd.all_reduce": "all_reduce",
    "spmd.reduce_scatter": "reduce_scatter",
    "spmd.all_to_all": "all_to_all",
    "spmd.collective_permute": "collective_permute",
}


@dataclass(frozen=True)
class Collective:
    """One collective of the device-local program."""

    kind: str
    """``all_gather``, ``all_reduce``, ``reduce_scatter``, ``all_to_all``, ``collective_permute``
    or ``all_slice`` (a local slice: no communication)."""
    axes: tuple[str, ...]
    """The mesh axes whose devices form each group."""
    dtype: str
    shape: tuple[int, ...]
    """The per-device result shape."""
    bytes: int
    """The per-device result buffer, as XLA's HLO counts it."""
    source: str
    """The user's source line of the op that needed it."""
    reason: str
    """What it converts: which operand of which op, or which output."""

    @property
    def communicates(self) -> bool:
        """Whether it moves data between devices (all_slice does not)."""
        return self.kind != "all_slice"


class CollectiveTable(list[Collective]):
    """A list of `Collective` records that prints as a table."""

    def summary(self) -> dict[tuple[str, tuple[str, ...]], dict[str, int]]:
        """(kind, axes) -> {"count", "bytes"}."""
        out: dict[tuple[str, tuple[str, ...]], dict[str, int]] = collections.defaultdict(
            lambda: {"count": 0, "bytes": 0}
        )
        for c in self:
            out[(c.kind, c.axes)]["count"] += 1
            out[(c.kind, c.axes)]["bytes"] += c.bytes
        return dict(out)

    def _repr_html_(self) -> str:
        """Notebook display: totals per (kind, axes), then every collective (folded)."""
        # imported here: partir._display needs partir._history, which imports this module
        from partir._display import collectives_html

        return collectives_html(self)

    def __str__(self) -> str:
        rows = [("kind", "axes", "local result", "bytes", "source", "for")]
        for c in self:
            shape = f"{ir.dtypes.short_name(c.dtype)}{list(c.shape)}"
            rows.append((c.kind, ",".join(c.axes), shape, f"{c.bytes:,}", c.source, c.reason))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [
            "  ".join(v.ljust(w) for v, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
            for r in rows
        ]
        total = sum(c.bytes for c in self if c.communicates)
        lines.append(
            f"{sum(c.communicates for c in self)} communicating collectives, {total:,} bytes per device"
        )
        return "\n".join(lines)


def collective_table(module: ModuleOp, mesh: Any = None) -> CollectiveTable:
    """The collectives of a device-local module, in program order."""
    table = CollectiveTable()
    for op in module.walk():
        kind = KINDS.get(op.name)
        if kind is None:
            continue
        assert isinstance(op, ir.CollectiveOp)
        shape = ir.shape_of(op.result.type)
        dtype = ir.dtype_of(op.result.type)
        n = 1
        for s in shape:
            n *= s
        why = op.attributes.get("partir.why")
        table.append(
            Collective(
                kind,
                op.axis_names,
                dtype,
                shape,
                n * ir.ITEMSIZE[dtype],
                location_of(op),
                why.data if isinstance(why, StringAttr) else "",
            )
        )
    return table
