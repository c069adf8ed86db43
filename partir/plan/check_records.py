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


# ---------------------------------------------------------------------------------------
# Naming: which op of the plan a compiled instruction was made for
# ---------------------------------------------------------------------------------------

REMAT_MARKER = "Involuntary full rematerialization"
"""The text XLA's SPMD partitioner logs when it can reach a layout only by replicating the
whole tensor and slicing it again (``[SPMD] Involuntary full rematerialization. The compiler
cannot go from sharding ...``)."""


@dataclass(frozen=True)
class Origin:
    """Where a compiled instruction comes from, in the plan's terms.

    Attributes:
        hlo_op: the HLO instruction's name (``all-reduce.3``).
        op_name: its ``op_name`` metadata (``jit(run)/partir_op57/dot_general``).
        source: the user's source line of the plan's op it was made for (annotate mode names
            each op with `partir.backend.annotate.SCOPE_PREFIX`), else the innermost frame
            of the HLO's own stack trace outside JAX and partir, else ``unknown``.
        value: the plan's value that op makes (``dot_general f32[8,16,32]``), or ``""`` when
            the instruction names no op of the plan.
    """

    hlo_op: str
    op_name: str
    source: str
    value: str

    def __str__(self) -> str:
        what = f" for {self.value}" if self.value else ""
        return f"%{self.hlo_op}{what} at {self.source}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "hlo_op": self.hlo_op,
            "op_name": self.op_name,
            "source": self.source,
            "value": self.value,
        }


@dataclass(frozen=True)
class Remat:
    """One "involuntary full rematerialization" XLA logged while compiling.

    Attributes:
        message: XLA's log line (shortened to its first 400 characters).
        origin: the instruction it hit, named as `Origin`, or None when the line names none.
    """

    message: str
    origin: Origin | None

    def __str__(self) -> str:
        where = str(self.origin) if self.origin is not None else "an unnamed instruction"
        return f"involuntary full rematerialization of {where}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return {
            "message": self.message,
            "origin": None if self.origin is None else self.origin.to_dict(),
        }


_INSTRUCTION = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=.*?metadata=\{op_name=\"([^\"]*)\"([^}]*)\}", re.M
)
_FRAME_ID = re.compile(r"stack_frame_id=(\d+)")


def hlo_metadata(text: str) -> dict[str, tuple[str, int | None]]:
    """HLO instruction name -> (its ``op_name``, its ``stack_frame_id`` or None)."""
    out: dict[str, tuple[str, int | None]] = {}
    for m in _INSTRUCTION.finditer(text):
        frame = _FRAME_ID.search(m.group(3))
        out[m.group(1)] = (m.group(2), int(frame.group(1)) if frame else None)
    return out


def _section(text: str, name: str) -> dict[int, str]:
    """The ``<id> <body>`` lines of a stack-trace table at the top of compiled HLO text."""
    out: dict[int, str] = {}
    start = re.search(rf"^{name}\n", text, re.M)
    if start is None:
        return out
    for line in text[start.end() :].splitlines():
        m = re.match(r"(\d+) (.*)", line)
        if m is None:
            break
        out[int(m.group(1))] = m.group(2)
    return out


def hlo_frames(text: str) -> dict[int, list[tuple[str, int, str]]]:
    """Stack frame id -> its (file, line, function) frames, innermost first, from the
    ``FileNames`` / ``FunctionNames`` / ``FileLocations`` / ``StackFrames`` tables."""
    files = {k: v.strip('"') for k, v in _section(text, "FileNames").items()}
    functions = {k: v.strip('"') for k, v in _section(text, "FunctionNames").items()}
    locations = {}
    for k, v in _section(text, "FileLocations").items():
        f = re.search(r"file_name_id=(\d+) function_name_id=(\d+) line=(\d+)", v)
        if f:
            locations[k] = (files.get(int(f[1]), "?"), int(f[3]), functions.get(int(f[2]), "?"))
    frames = {}
    for k, v in _section(text, "StackFrames").items():
        f = re.search(r"file_location_id=(\d+) parent_frame_id=(\d+)", v)
        if f:
            frames[k] = (int(f[1]), int(f[2]))
    out: dict[int, list[tuple[str, int, str]]] = {}
    for k in frames:
        chain, seen, at = [], set(), k
        while at in frames and at not in seen:
            seen.add(at)
            loc, parent = frames[at]
            if loc in locations:
                chain.append(locations[loc])
            at = parent
        out[k] = chain
    return out
