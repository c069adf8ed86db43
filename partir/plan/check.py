"""`plan.check_compiled()`: the collectives XLA compiled, compared with the ones the plan planned.

`check_compiled(plan)` compiles what calling the plan runs (`plan.lower().compile()`), reads the
collectives of the compiled, per-device HLO (`partir.backend.hlo.collectives_on_mesh`) and
matches them with the plan's communicating collectives (`plan.collectives()`, `all_slice`
left out: it is a local slice).

The unit of comparison is a *buffer*: one array result of a collective. XLA combines several
all-reduces (and sometimes all-gathers) into one tuple-shaped instruction, so a planned
collective is matched with one buffer of some compiled instruction, never with a whole
instruction, and buffer sizes are matched as multisets within each ``(kind, axes)``. The one
exception is all-to-all: XLA:CPU emits one all-to-all as an instruction with ``n`` buffers, one
chunk per peer, so a planned all-to-all is matched with a whole compiled all-to-all instruction
of the same total bytes.

How a planned collective was matched (`Match.how`):

- ``"exact"``: a compiled buffer of the same kind, axes and bytes (possibly one buffer of a
  combined, tuple-shaped instruction: `Match.combined`).
- ``"all_to_all_buffers"``: an all-to-all instruction over the same axes whose ``n`` buffers add
  up to the planned bytes (XLA:CPU's representation of one all-to-all).
- ``"reduce_scatter_as_all_reduce"``: a planned reduce-scatter of ``b`` bytes per device over
  axes of ``n`` devices, done by XLA as an all-reduce of ``n·b`` bytes over the same axes
  followed by a local dynamic-slice (what jit's partitioner does on CPU in annotate mode).
  Same result, ``n`` times the bytes on the wire; the slice itself is not checked.
- ``"all_reduce_per_axis"``: a planned all-reduce over several mesh axes, done by XLA as one
  all-reduce per axis of the same bytes.

The first two are the planned collective itself (`FOUND_FORMS`); the last two are XLA's known
equivalent rewrites (`EQUIVALENCES`): they are reported as such, not as mismatches, but they do
not count as *found*. Planned collectives with no match are `missing`; compiled buffers no
planned collective accounts for are `extra`.

In ``mode="spmd"`` the program is partir's own shard_map program, so every planned collective
should be found (XLA may still merge or drop some: see the `missing` hints). In
``mode="annotate"`` XLA's partitioner chooses the collectives and the check reports where it
departed from the plan.
"""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from partir import ir
from partir.backend.annotate import SCOPE_PREFIX, op_numbers
from partir.backend.hlo import CompiledCollective, collectives_on_mesh
from partir.backend.jax_compat import compile_by_xla
from partir.plan.check_records import (
    EQUIVALENCES as EQUIVALENCES,
)
from partir.plan.check_records import (
    FOUND_FORMS as FOUND_FORMS,
)
from partir.plan.check_records import (
    REMAT_MARKER,
    Axes,
    Buffer,
    Key,
    Match,
    Missing,
    Origin,
    Remat,
    Row,
    _axes_text,
    _hlo_dtype,
    _planned_text,
    buffers_of,
    hlo_frames,
    hlo_metadata,
)


@dataclass
class CompiledCheck:
    """The plan's collectives against the compiled program's.

    Attributes:
        mode: the plan's emission mode (``spmd`` or ``annotate``).
        mesh: mesh axis name -> size.
        planned: the plan's communicating collectives, in program order.
        compiled: the compiled collective instructions, in HLO text order (collectives in loop
            bodies are listed once, as `plan.collectives()` lists them).
        matched: planned collectives and the compiled buffers that carry them out.
        missing: planned collectives not in the compiled HLO, with a hint.
        extra: compiled buffers no planned collective accounts for.
        rows: totals per ``(kind, axes)``, planned kinds first.
        origins: compiled collective instruction name -> the plan's op, value and source
            line it was made for (`Origin`); empty when the HLO text was not read.
        remats: XLA's "involuntary full rematerialization" warnings while compiling, each
            with the value and line it hit (empty when the compilation was not watched).
        from_cache: one of JAX's compilation caches (in memory, or on disk) supplied the
            program, so XLA did not compile it and logged nothing: `remats` was not read.
    """

    mode: str
    mesh: dict[str, int]
    planned: list[Any]
    compiled: list[CompiledCollective]
    matched: list[Match]
    missing: list[Missing]
    extra: list[Buffer]
    rows: list[Row]
    origins: dict[str, Origin] = field(default_factory=dict)
    remats: list[Remat] = field(default_factory=list)
    from_cache: bool = False

    def origin(self, buffer: Buffer) -> Origin | None:
        """The plan's op a compiled buffer was made for, or None."""
        return self.origins.get(buffer.instruction)

    def compiled_at(self, source: str) -> list[CompiledCollective]:
        """The compiled collectives made for plan ops at the user's line `source`."""
        return [
            c
            for c in self.compiled
            if c.name in self.origins and self.origins[c.name].source == source
        ]

    @property
    def all_planned_found(self) -> bool:
        """Every planned communicating collective is in the compiled HLO with the same kind,
        axes and per-buffer bytes (combined into tuple-shaped ops or not)."""
        return not self.missing and all(m.found for m in self.matched)

    @property
    def all_planned_accounted(self) -> bool:
        """Every planned collective is found, or done by one of XLA's `EQUIVALENCES`."""
        return not self.missing

    @property
    def agrees(self) -> bool:
        """All planned collectives found and nothing extra: the plan is what runs."""
        return self.all_planned_found and not self.extra

    @property
    def equivalences(self) -> dict[str, int]:
        """How many planned collectives XLA carried out another way, per `EQUIVALENCES` key."""
        return dict(collections.Counter(m.how for m in self.matched if not m.found))

    def row(self, kind: str, axes: Sequence[str] | None) -> Row | None:
        """The row of ``(kind, axes)``, or None."""
        key = (kind, None if axes is None else tuple(axes))
        return next((r for r in self.rows if (r.kind, r.axes) == key), None)

    def verdict(self) -> str:
        """One line: whether the compiled program does what the plan says."""
        if self.agrees:
            return "compiled collectives match the plan"
        parts = []
        if self.all_planned_found:
            parts.append("every planned collective found")
        elif self.all_planned_accounted:
            eq = ", ".join(f"{n} {how}" for how, n in sorted(self.equivalences.items()))
            parts.append(f"every planned collective found or done equivalently ({eq})")
        else:
            parts.append(f"{len(self.missing)} planned collectives missing")
        if self.extra:
            parts.append(f"{len(self.extra)} extra compiled buffers")
        if self.remats:
            parts.append(f"{len(self.remats)} involuntary full rematerializations")
        return "; ".join(parts)

    def __str__(self) -> str:
        header = (
            "kind",
            "axes",
            "planned",
            "planned bytes",
            "compiled",
            "compiled bytes",
            "status",
        )
        lines = [header]
        for r in self.rows:
            compiled = f"{r.compiled_count}" + (
                f" in {r.compiled_ops} ops" if r.compiled_ops != r.compiled_count else ""
            )
            lines.append(
                (
                    r.kind,
                    _axes_text(r.axes),
                    str(r.planned_count),
                    f"{r.planned_bytes:,}",
                    compiled,
                    f"{r.compiled_bytes:,}",
                    r.status,
                )
            )
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
        right = {2, 3, 4, 5}
        out = [
            f"check_compiled ({self.mode} mode, mesh {self.mesh}): {self.verdict()}",
            *(
                "  ".join(
                    (v.rjust(w) if i in right else v.ljust(w))
                    for i, (v, w) in enumerate(zip(line, widths, strict=True))
                ).rstrip()
                for line in lines
            ),
        ]
        notes = sorted({m.how for m in self.matched} - {"exact"})
        for how in notes:
            out.append(f"  {how}: {FOUND_FORMS.get(how) or EQUIVALENCES[how]}")
        if any(m.combined for m in self.matched):
            out.append(
                "  (XLA combined some collectives into tuple-shaped ops: counts are buffers)"
            )
        if self.missing:
            out.append("missing (planned, not compiled):")
            for m in self.missing:
                p = m.planned
                out.append(
                    f"  {p.kind} over {_axes_text(p.axes)} {_planned_text(p)} ({p.bytes:,} B) "
                    f"for {p.reason or p.source}: {m.hint}"
                )
                out.append(f"    compiled at {p.source}: {self._compiled_at_text(p.source)}")
        if self.extra:
            out.append("extra (compiled, not planned):")
            for b in self.extra:
                where = self.origin(b)
                out.append(
                    f"  {b.kind} over {_axes_text(b.axes)} {b.dtype}{list(b.shape)} "
                    f"({b.bytes:,} B, buffer {b.index + 1}/{b.buffers} of "
                    + (f"{where})" if where is not None else f"%{b.instruction})")
                )
        if self.remats:
            out.append("involuntary full rematerializations (XLA's warnings):")
            out += [f"  {r}" for r in self.remats]
        if self.from_cache:
            out.append(
                "XLA's remat warnings not read: XLA did not compile the program for this "
                "check (this process ran it already, or the on-disk jax_compilation_cache_dir "
                "had it); call check_compiled() first in a fresh process to see them"
            )
        return "\n".join(out)

    def _compiled_at_text(self, source: str) -> str:
        there = self.compiled_at(source)
        if not there:
            return "no collective"
        return ", ".join(f"%{c.name} ({c.kind} over {_axes_text(c.axes)})" for c in there)

    def to_dict(self, details: bool = True) -> dict[str, Any]:
        """JSON-ready summary: verdict flags, `rows`, `missing`, `extra`, and (with `details`)
        every match."""
        out: dict[str, Any] = {
            "mode": self.mode,
            "mesh": dict(self.mesh),
            "all_planned_found": self.all_planned_found,
            "all_planned_accounted": self.all_planned_accounted,
            "agrees": self.agrees,
            "verdict": self.verdict(),
            "equivalences": self.equivalences,
            "rows": [r.to_dict() for r in self.rows],
            "missing": [
                {
                    **m.to_dict(),
                    "compiled_at_source": [c.name for c in self.compiled_at(m.planned.source)],
                }
                for m in self.missing
            ],
            "extra": [
                {
                    "kind": kind,
                    "axes": None if axes is None else list(axes),
                    "type": text,
                    "bytes": nbytes,
                    "count": len(named),
                    "at": [str(o) if o else f"%{b.instruction}" for b, o in named],
                }
                for (kind, axes, text, nbytes), named in self._named_extra().items()
            ],
            "remats": [r.to_dict() for r in self.remats],
            "from_cache": self.from_cache,
        }
        if details:
            out["matched"] = [m.to_dict() for m in self.matched]
        return out

    def _named_extra(self) -> dict[tuple[str, Axes, str, int], list[tuple[Buffer, Origin | None]]]:
        groups: dict[tuple[str, Axes, str, int], list[tuple[Buffer, Origin | None]]] = {}
        for b in self.extra:
            key = (b.kind, b.axes, f"{b.dtype}{list(b.shape)}", b.bytes)
            groups.setdefault(key, []).append((b, self.origin(b)))
        return groups


def compare(
    planned: Iterable[Any],
    compiled: Iterable[CompiledCollective],
    mesh_shape: dict[str, int],
    mode: str = "spmd",
) -> CompiledCheck:
    """Match planned collectives with compiled ones (no compilation: the pure part of the check).

    Args:
        planned: `partir.plan.collectives.Collective` records (anything with ``kind``, ``axes``,
            ``dtype``, ``shape``, ``bytes``, ``source``, ``reason``); ``all_slice`` ones are
            ignored.
        compiled: `CompiledCollective` records with `axes` filled (`collectives_on_mesh`).
        mesh_shape: mesh axis name -> size (for the reduce-scatter equivalence).
        mode: recorded in the result.

    Exact matches are made first, over all planned collectives; the equivalences then only use
    compiled buffers left over.
    """
    planned = [p for p in planned if p.kind != "all_slice"]
    compiled = list(compiled)
    buffers = buffers_of(c for c in compiled if c.kind != "all_to_all")
    # all-to-all is matched per instruction: its buffers are one collective's chunks
    a2a = [c for c in compiled if c.kind == "all_to_all"]
    a2a_buffers = {c.name: [b for b in buffers_of([c])] for c in a2a}

    pool: dict[tuple[str, Axes, int], list[Buffer]] = collections.defaultdict(list)
    for b in buffers:
        pool[(b.kind, b.axes, b.bytes)].append(b)

    def take(kind: str, axes: Axes, nbytes: int, prefer: tuple[str, tuple[int, ...]] | None):
        candidates = pool.get((kind, axes, nbytes))
        if not candidates:
            return None
        at = 0
        if prefer is not None:
            at = next((i for i, b in enumerate(candidates) if (b.dtype, b.shape) == prefer), 0)
        return candidates.pop(at)

    matches: dict[int, Match] = {}
    # 1. the planned collective itself
    for i, p in enumerate(planned):
        if p.kind == "all_to_all":
            c = next((c for c in a2a if c.axes == tuple(p.axes) and c.bytes == p.bytes), None)
            if c is not None:
                a2a.remove(c)
                bufs = tuple(a2a_buffers[c.name])
                matches[i] = Match(p, bufs, "exact" if len(bufs) == 1 else "all_to_all_buffers")
            continue
        b = take(p.kind, tuple(p.axes), p.bytes, (_hlo_dtype(p.dtype), tuple(p.shape)))
        if b is not None:
            matches[i] = Match(p, (b,), "exact")
    # 2. XLA's known equivalent rewrites, from what is left
    for i, p in enumerate(planned):
        if i in matches:
            continue
        axes = tuple(p.axes)
        if p.kind == "reduce_scatter":
            n = math.prod(mesh_shape[a] for a in axes)
            b = take("all_reduce", axes, p.bytes * n, None)
            if b is not None:
                matches[i] = Match(p, (b,), "reduce_scatter_as_all_reduce")
        elif p.kind == "all_reduce" and len(axes) > 1:
            if all(pool.get(("all_reduce", (a,), p.bytes)) for a in axes):
                bufs = tuple(take("all_reduce", (a,), p.bytes, None) for a in axes)
                matches[i] = Match(p, bufs, "all_reduce_per_axis")  # type: ignore[arg-type]

    extra = [b for bs in pool.values() for b in bs] + [b for c in a2a for b in a2a_buffers[c.name]]
    order = {(b.instruction, b.index): k for k, b in enumerate(buffers_of(compiled))}
    extra.sort(key=lambda b: order[(b.instruction, b.index)])
    missing = [
        Missing(p, _hint(p, planned, matches, extra, mesh_shape))
        for i, p in enumerate(planned)
        if i not in matches
    ]
    matched = [matches[i] for i in sorted(matches)]
    rows = _rows(planned, compiled, matched, missing, extra)
    return CompiledCheck(mode, dict(mesh_shape), planned, compiled, matched, missing, extra, rows)


def _hint(
    p: Any,
    planned: list[Any],
    matches: dict[int, Match],
    extra: list[Buffer],
    mesh_shape: dict[str, int],
) -> str:
    axes = tuple(p.axes)
    twins = [
        m
        for m in matches.values()
        if m.found
        and (m.planned.kind, tuple(m.planned.axes), m.planned.bytes) == (p.kind, axes, p.bytes)
    ]
    if twins:
        planned_n = sum(
            1 for q in planned if (q.kind, tuple(q.axes), q.bytes) == (p.kind, axes, p.bytes)
        )
        return (
            f"XLA emitted {len(twins)} {p.kind} buffer(s) of {p.bytes:,} B over "
            f"{_axes_text(axes)} where the plan has {planned_n}: identical collectives merged "
            "by XLA's CSE (operands equal after simplification), or the rest done another way "
            "(see extra)"
        )
    same = [b for b in extra if b.kind == p.kind and b.axes == axes]
    if same:
        sizes = ", ".join(f"{b.dtype}{list(b.shape)}" for b in same[:6])
        more = f" and {len(same) - 6} more" if len(same) > 6 else ""
        return f"XLA has unplanned {p.kind} over {_axes_text(axes)} of other sizes: {sizes}{more}"
    if p.kind == "reduce_scatter":
        n = math.prod(mesh_shape[a] for a in axes)
        return (
            f"no reduce-scatter, and no leftover all-reduce of {n} x {p.bytes:,} B over "
            f"{_axes_text(axes)}"
        )
    return f"no {p.kind} over {_axes_text(axes)} of that size in the compiled HLO"


def _rows(
    planned: list[Any],
    compiled: list[CompiledCollective],
    matched: list[Match],
    missing: list[Missing],
    extra: list[Buffer],
) -> list[Row]:
    rows: dict[Key, Row] = {}

    def row(kind: str, axes: Axes) -> Row:
        key = (kind, axes)
        if key not in rows:
            rows[key] = Row(kind, axes)
        return rows[key]

    for p in planned:
        r = row(p.kind, tuple(p.axes))
        r.planned_count += 1
        r.planned_bytes += p.bytes
    for c in compiled:
        r = row(c.kind, c.axes)
        r.compiled_count += len(c.shapes)
        r.compiled_ops += 1
        r.compiled_bytes += c.bytes
    for m in matched:
        r = row(m.planned.kind, tuple(m.planned.axes))
        if m.found:
            r.found += 1
        else:
            r.equivalent[m.how] = r.equivalent.get(m.how, 0) + 1
            for b in m.compiled:
                row(b.kind, b.axes).standing_in += 1
    for gone in missing:
        row(gone.planned.kind, tuple(gone.planned.axes)).missing += 1
    for b in extra:
        row(b.kind, b.axes).extra += 1
    planned_keys = {(p.kind, tuple(p.axes)) for p in planned}
    return sorted(
        rows.values(),
        key=lambda r: ((r.kind, r.axes) not in planned_keys, r.kind, _axes_text(r.axes)),
    )


@contextlib.contextmanager
def _watched_stderr() -> Iterator[list[str]]:
    """Collect what is written to file descriptor 2 (XLA's C++ log) inside the block, and
    write it on to the real stderr afterwards, so the user still sees it."""
    got: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield got
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace")
            got.append(text)
            if text:
                sys.stderr.write(text)


def compile_watched(plan: Any) -> tuple[Any, str | None]:
    """``plan.lower().compile()`` and what XLA logged meanwhile (its remat warnings); None
    for the log when one of JAX's compilation caches had the program and XLA did not run."""
    with _watched_stderr() as log:
        compiled, compiled_now = compile_by_xla(plan.lower())
    return compiled, "".join(log) if compiled_now else None


_OUTSIDE = ("/jax/", "/jaxlib/", "/partir/backend/", "/partir/api/", "/partir/plan/")


def _plan_ops(plan: Any) -> dict[int, Any]:
    program = getattr(plan, "program", None)
    if program is None:
        return {}
    return {k: op for op, k in op_numbers(program.module).items()}


def _origin(
    plan: Any,
    name: str,
    op_name: str,
    frame: int | None,
    ops: dict[int, Any],
    frames: dict[int, list[tuple[str, int, str]]],
) -> Origin:
    tags = re.findall(rf"{SCOPE_PREFIX}(\d+)", op_name)
    op = ops.get(int(tags[-1])) if tags else None
    if op is not None:
        kind = getattr(op, "primitive_name", op.name)
        made = f" {op.results[0].type}" if op.results else ""
        return Origin(name, op_name, ir.location_of(op), f"{kind}{made}")
    leaf = re.fullmatch(r"leaves\[(\d+)\]", op_name)
    paths = list(getattr(getattr(plan, "program", None), "input_paths", []) or [])
    if leaf is not None and int(leaf.group(1)) < len(paths):
        # XLA names a collective on an argument of the emitted function by that argument:
        # a parameter gathered where its consumers are, not at any one op
        return Origin(name, op_name, "the function's inputs", f"input {paths[int(leaf[1])]}")
    for file, line, function in frames.get(frame, []) if frame is not None else []:
        if not any(part in file for part in _OUTSIDE):
            return Origin(name, op_name, f"{file}:{line} ({function})", "")
    return Origin(name, op_name, "unknown", "")


def name_compiled(
    plan: Any, text: str, compiled: Iterable[CompiledCollective]
) -> dict[str, Origin]:
    """Compiled collective instruction name -> the plan's op it was made for (`Origin`)."""
    meta = hlo_metadata(text)
    frames = hlo_frames(text)
    ops = _plan_ops(plan)
    out = {}
    for c in compiled:
        op_name, frame = meta.get(c.name, ("", None))
        out[c.name] = _origin(plan, c.name, op_name, frame, ops, frames)
    return out


def remats_in(plan: Any, log: str, text: str = "") -> list[Remat]:
    """XLA's "involuntary full rematerialization" warnings in a compile `log`, each named
    with the plan's op (value and source line) of the instruction it hit."""
    frames = hlo_frames(text) if text else {}
    ops = _plan_ops(plan)
    out = []
    for line in log.splitlines():
        if REMAT_MARKER not in line:
            continue
        meta = re.search(r"op_name=\"([^\"]*)\"", line)
        instr = re.search(r"%([\w.\-]+)\s*=", line)
        frame = re.search(r"stack_frame_id=(\d+)", line)
        origin = None
        if meta or instr:
            origin = _origin(
                plan,
                instr.group(1) if instr else "?",
                meta.group(1) if meta else "",
                int(frame.group(1)) if frame else None,
                ops,
                frames,
            )
        out.append(Remat(line.strip()[:400], origin))
    return out


def check_compiled(plan: Any, compiled: Any = None, log: str | None = None) -> CompiledCheck:
    """Compile what calling `plan` runs and compare XLA's collectives with the plan's.

    Args:
        plan: a `partir.Plan` (anything with ``mesh``, ``mode``, ``lower()`` and
            ``collectives()``).
        compiled: the already compiled program (``plan.lower().compile()``) or its HLO text, to
            skip compiling again; default: compile it here, watching XLA's log.
        log: what XLA logged while compiling `compiled` (`compile_watched`), read for its
            "involuntary full rematerialization" warnings.

    Returns:
        A `CompiledCheck`; ``print`` it for the table, ``to_dict()`` for JSON. Each missing
        and extra collective is named with its HLO instruction and the plan's op (value and
        source line) it was made for, and each remat warning with the value it hit.
    """
    from_cache = False
    if compiled is None:
        compiled, log = compile_watched(plan)
        from_cache = log is None
    text = compiled if isinstance(compiled, str) else compiled.as_text()
    mesh = plan.mesh
    found = collectives_on_mesh(text, mesh)
    shape = dict(zip(mesh.axis_names, np.asarray(mesh.devices).shape, strict=True))
    check = compare(plan.collectives(), found, shape, getattr(plan, "mode", "?"))
    check.origins = name_compiled(plan, text, found)
    check.remats = remats_in(plan, log or "", text)
    check.from_cache = from_cache
    return check
