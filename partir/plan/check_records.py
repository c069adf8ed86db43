"""Records of `plan.check_compiled()`: compiled buffers, matches, misses and per-(kind, axes) rows."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from partir.backend.hlo import CompiledCollective

FOUND_FORMS = {
    "exact": "same kind, axes and bytes",
    "all_to_all_buffers": "one all-to-all instruction of n buffers, one chunk per peer (XLA:CPU)",
}
"""Match kinds that are the planned collective itself."""

EQUIVALENCES = {
    "reduce_scatter_as_all_reduce": (
        "reduce_scatter done as an all-reduce of the whole value plus a local dynamic-slice "
        "(n x the bytes)"
    ),
    "all_reduce_per_axis": "all-reduce over several axes done as one all-reduce per axis",
}
"""XLA's known rewrites of a planned collective into other collectives that compute the same."""

Axes = tuple[str, ...] | None
Key = tuple[str, Axes]


def _hlo_dtype(name: str) -> str:
    """HLO's spelling of a dtype name (``float32`` -> ``f32``, ``bool`` -> ``pred``)."""
    special = {"bool": "pred", "bfloat16": "bf16"}
    if name in special:
        return special[name]
    m = re.fullmatch(r"(float|int|uint|complex)(\d+)", name)
    if m is None:
        return name
    return {"float": "f", "int": "s", "uint": "u", "complex": "c"}[m.group(1)] + m.group(2)


def _axes_text(axes: Axes) -> str:
    return "?" if axes is None else (",".join(axes) or "-")


def _planned_text(p: Any) -> str:
    return f"{_hlo_dtype(p.dtype)}{list(p.shape)}"


@dataclass(frozen=True)
class Buffer:
    """One result buffer of a compiled collective instruction.

    Attributes:
        kind: the instruction's kind (``all_reduce``, ``all_gather``, ...; see `CompiledCollective`).
        axes: the mesh axes of its replica groups (or permute pairs); None when they are no set of
            whole mesh axes.
        dtype: HLO dtype (``f32``, ``bf16``, ``pred``, ...).
        shape: per-device shape of this buffer.
        bytes: per-device bytes of this buffer.
        instruction: the HLO instruction's name.
        index: position of the buffer among the instruction's results.
        buffers: how many buffers the instruction has (more than one: combined / tuple-shaped).
    """

    kind: str
    axes: Axes
    dtype: str
    shape: tuple[int, ...]
    bytes: int
    instruction: str
    index: int
    buffers: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "kind": self.kind,
            "axes": None if self.axes is None else list(self.axes),
            "type": f"{self.dtype}{list(self.shape)}",
            "bytes": self.bytes,
            "instruction": self.instruction,
            "buffer": f"{self.index + 1}/{self.buffers}",
        }


def buffers_of(compiled: Iterable[CompiledCollective]) -> list[Buffer]:
    """Every result buffer of `compiled`, in instruction order."""
    out = []
    for c in compiled:
        for i, (dtype, shape) in enumerate(c.shapes):
            n = math.prod(shape) * _itemsize(dtype)
            out.append(Buffer(c.kind, c.axes, dtype, shape, n, c.name, i, len(c.shapes)))
    return out


def _itemsize(hlo_dtype: str) -> int:
    if hlo_dtype == "pred":
        return 1
    digits = "".join(ch for ch in hlo_dtype if ch.isdigit())
    return max(1, math.ceil(int(digits) / 8)) if digits else 0


@dataclass(frozen=True)
class Match:
    """A planned collective and the compiled buffers that carry it out.

    Attributes:
        planned: the `partir.plan.collectives.Collective` record.
        compiled: the compiled buffers it was matched with (one, except for an all-to-all's
            buffers or an all-reduce split per axis).
        how: a key of `FOUND_FORMS` or `EQUIVALENCES`.
    """

    planned: Any
    compiled: tuple[Buffer, ...]
    how: str

    @property
    def found(self) -> bool:
        """Whether it is the planned collective itself (same kind, axes and bytes)."""
        return self.how in FOUND_FORMS

    @property
    def combined(self) -> bool:
        """Whether XLA combined it with others into one tuple-shaped instruction."""
        return self.how == "exact" and self.compiled[0].buffers > 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            **_planned_dict(self.planned),
            "how": self.how,
            "compiled": [b.to_dict() for b in self.compiled],
        }


@dataclass(frozen=True)
class Missing:
    """A planned communicating collective with nothing in the compiled HLO to account for it.

    Attributes:
        planned: the `partir.plan.collectives.Collective` record.
        hint: what the compiled HLO has instead, in words.
    """

    planned: Any
    hint: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {**_planned_dict(self.planned), "hint": self.hint}


def _planned_dict(p: Any) -> dict[str, Any]:
    return {
        "kind": p.kind,
        "axes": list(p.axes),
        "type": _planned_text(p),
        "bytes": p.bytes,
        "source": p.source,
        "reason": p.reason,
    }


@dataclass
class Row:
    """Totals for one ``(kind, axes)``.

    Attributes:
        kind, axes: the collective kind and mesh axes (axes None: groups that are not whole
            mesh axes).
        planned_count, planned_bytes: planned communicating collectives and their bytes.
        compiled_count, compiled_ops, compiled_bytes: compiled buffers, instructions, bytes.
        found: planned collectives found as themselves (`FOUND_FORMS`).
        equivalent: planned collectives XLA did another way, per `EQUIVALENCES` key.
        standing_in: compiled buffers here that carry out a planned collective of another row
            by an equivalence (e.g. the all-reduces standing for planned reduce-scatters).
        missing: planned collectives with no match.
        extra: compiled buffers nothing planned accounts for.
    """

    kind: str
    axes: Axes
    planned_count: int = 0
    planned_bytes: int = 0
    compiled_count: int = 0
    compiled_ops: int = 0
    compiled_bytes: int = 0
    found: int = 0
    equivalent: dict[str, int] = field(default_factory=dict)
    standing_in: int = 0
    missing: int = 0
    extra: int = 0

    @property
    def status(self) -> str:
        """``ok`` when every planned collective is found and nothing is extra, else a summary."""
        if (
            not self.equivalent
            and not self.missing
            and not self.extra
            and not self.standing_in
            and self.found == self.planned_count
        ):
            return "ok"
        parts = []
        if self.found:
            parts.append(f"{self.found} found")
        parts += [f"{n} {how}" for how, n in sorted(self.equivalent.items())]
        if self.standing_in:
            parts.append(f"{self.standing_in} stand in for planned others")
        if self.missing:
            parts.append(f"{self.missing} MISSING")
        if self.extra:
            parts.append(f"{self.extra} EXTRA")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields, with `status`."""
        return {
            "kind": self.kind,
            "axes": None if self.axes is None else list(self.axes),
            "planned": {"count": self.planned_count, "bytes": self.planned_bytes},
            "compiled": {
                "count": self.compiled_count,
                "ops": self.compiled_ops,
                "bytes": self.compiled_bytes,
            },
            "found": self.found,
            "equivalent": dict(self.equivalent),
            "standing_in": self.standing_in,
            "missing": self.missing,
            "extra": self.extra,
            "status": self.status,
        }
