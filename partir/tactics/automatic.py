"""`AutomaticPartition`: search for the shardings earlier tactics left open, with the
simulator as the judge, under a memory limit; the result is a list of `ManualPartition`.

The machinery lives in `partir.tactics.auto` (see its README): the decision space
(`space`), scoring with the real propagation, lowering and simulator (`evaluate`), the
ILP (`ilp`), the beam search (`search`) and how they combine per axis (`driver`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from partir.errors import TacticError, UnknownAxisError
from partir.simulator import Hardware, get_hardware
from partir.tactics.auto.classes import dimension_classes
from partir.tactics.auto.driver import SearchReport, decide
from partir.tactics.auto.progress import Progress
from partir.tactics.auto.search import Budget
from partir.tactics.auto.space import build_space
from partir.tactics.manual import ManualPartition, TacticContext, TacticRecord

OBJECTIVES = ("time", "memory")
"""What an automatic tactic may minimise."""
METHODS = ("auto", "ilp", "search")
"""How it may search."""


@dataclass
class AutomaticRecord(TacticRecord):
    """What an `AutomaticPartition` did: the tactics it found and one report per axis."""

    found: list[ManualPartition] = field(default_factory=list)
    """The `ManualPartition` tactics it applied, in order; using them instead of the
    automatic tactic gives the same plan."""
    report: SearchReport | None = None
    """The chosen candidate, its simulated time, the ILP bound and gap, the evaluations
    and the search time."""

    def __str__(self) -> str:
        return str(self.report)


class FoundSchedule(list[Any]):
    """A schedule of tactics that prints as code to paste: one tactic per line, a long
    `ManualPartition` one selector per line."""

    def __str__(self) -> str:
        if not self:
            return "[]"
        lines = ["["]
        for t in self:
            text = repr(t)
            if len(text) <= 84 or type(t) is not ManualPartition:
                lines.append(f"    {text},")
                continue
            lines += ["    ManualPartition(", "        {"]
            lines += [f"            {k!r}: {v!r}," for k, v in t.inputs.items()]
            lines += ["        },", f"        axis={t.axis!r},", "    ),"]
        return "\n".join([*lines, "]"])


@dataclass(frozen=True)
class AutomaticPartition:
    """Decide shardings on mesh axes by search, with the simulator as the judge.

    It decides, on its axes together, the input dimensions earlier tactics left open:
    it never undoes an earlier decision, and later tactics compose after it. Candidates
    are scored by the real propagation, lowering and simulator on `hardware`; the best
    one is applied as `ManualPartition` tactics, which `plan.tactics_found` gives back as
    code.

    Args:
      axes: the mesh axis, or axes, to decide (jointly; applied in this order).
      objective: ``"time"`` (simulated step time, no overlap; candidates over the memory
        limit lose to any that fits) or ``"memory"`` (simulated peak memory).
      memory_limit: bytes per device a candidate's simulated peak must stay within;
        default the hardware profile's memory.
      method: ``"ilp"`` (integer linear program over measured per-group costs),
        ``"search"`` (beam search over complete candidates) or ``"auto"`` (the ILP, then
        search from its answer).
      budget: None for the default (a number of simulated candidates that grows with
        the decision space; deterministic), seconds as a number, or a mapping
        with ``"evaluations"`` and/or ``"seconds"``. A seconds limit that binds makes
        the result depend on the machine's speed, so under `jax.distributed` processes
        may stop at different candidates (partitioning then raises
        `PlanMismatchError`): use evaluations there.
      seed: fixes the order the search tries groups in; the same seed gives the same
        result.
      hardware: the judge's profile name (``"tpu-v5p"``, ``"h100"``, ...) or a
        `partir.simulator.Hardware`; default the ``hardware=`` given to
        `partir.partition` (``"cpu"`` unless set).

    Examples:
      >>> AutomaticPartition(["model"])                          # after manual BP
      >>> AutomaticPartition("batch", memory_limit=16 * 2**30)   # ZeRO if it must
    """

    axes: tuple[str, ...] | str
    _: KW_ONLY
    objective: str = "time"
    memory_limit: float | None = None
    method: str = "auto"
    budget: float | Mapping[str, float] | None = None
    seed: int = 0
    hardware: str | Hardware | None = None

    def __post_init__(self) -> None:
        axes = (self.axes,) if isinstance(self.axes, str) else self.axes
        if not isinstance(axes, Sequence) or not axes or not all(isinstance(a, str) for a in axes):
            raise TacticError(
                f"AutomaticPartition(axes={self.axes!r}): give a mesh axis name or a list of "
                "them, e.g. AutomaticPartition(['model'])."
            )
        if len(set(axes)) != len(axes):
            raise TacticError(f"AutomaticPartition(axes={self.axes!r}) names an axis twice.")
        object.__setattr__(self, "axes", tuple(axes))
        if self.objective not in OBJECTIVES:
            raise TacticError(
                f"AutomaticPartition(objective={self.objective!r}): use one of {OBJECTIVES}."
            )
        if self.method not in METHODS:
            raise TacticError(f"AutomaticPartition(method={self.method!r}): use one of {METHODS}.")
        if self.memory_limit is not None and (
            isinstance(self.memory_limit, bool)
            or not isinstance(self.memory_limit, int | float)
            or not self.memory_limit > 0
        ):
            raise TacticError(
                f"AutomaticPartition(memory_limit={self.memory_limit!r}): give bytes per "
                "device (a positive number), or None for the hardware's memory."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TacticError(f"AutomaticPartition(seed={self.seed!r}): the seed is an int.")
        self._budget()  # validates
        if self.hardware is not None:
            get_hardware(self.hardware)  # an unknown profile fails here, naming the known ones

    def _budget(self) -> Budget:
        b = self.budget
        if b is None:
            return Budget()
        if isinstance(b, int | float) and not isinstance(b, bool):
            if not b > 0:
                raise TacticError(f"AutomaticPartition(budget={b!r}): seconds must be > 0.")
            return Budget(seconds=float(b))
        if isinstance(b, Mapping) and b and set(b) <= {"evaluations", "seconds"}:
            evals = b.get("evaluations")
            secs = b.get("seconds")
            if (evals is not None and (not isinstance(evals, int) or evals < 1)) or (
                secs is not None and not secs > 0
            ):
                raise TacticError(
                    f"AutomaticPartition(budget={b!r}): evaluations must be an int >= 1 and "
                    "seconds > 0."
                )
            return Budget(evaluations=evals, seconds=None if secs is None else float(secs))
        raise TacticError(
            f"AutomaticPartition(budget={b!r}): give seconds (a number), or a mapping "
            "{'evaluations': n, 'seconds': s}, or None for the default."
        )

    def __repr__(self) -> str:
        args = [repr(list(self.axes))]
        for name, default in (
            ("objective", "time"),
            ("memory_limit", None),
            ("method", "auto"),
            ("budget", None),
            ("seed", 0),
            ("hardware", None),
        ):
            value = getattr(self, name)
            if value != default:
                shown = value.name if isinstance(value, Hardware) else value
                args.append(f"{name}={shown!r}")
        return f"AutomaticPartition({', '.join(args)})"

    def apply(self, ctx: TacticContext, index: int) -> AutomaticRecord:
        """Decide the axes together, apply the `ManualPartition` tactics found, report.

        The search scores candidates on copies of the propagation state; the real state
        only ever sees the tactics found, applied as a user's would be.
        """
        prop = ctx.propagator
        for axis in self.axes:
            if axis not in prop.sizes:
                raise UnknownAxisError(
                    f"{self!r} refers to mesh axis {axis!r}, but the mesh has axes "
                    f"{tuple(prop.sizes)}. Use one of those names or add {axis!r} to the mesh."
                )
        hardware = get_hardware(self.hardware if self.hardware is not None else ctx.hardware)
        limit = float(self.memory_limit if self.memory_limit is not None else hardware.memory_bytes)
        space = build_space(ctx, self.axes, dimension_classes(ctx))
        label = f"AutomaticPartition({', '.join(self.axes)})"
        _, _, report = decide(
            ctx, space, index, hardware, limit,
            objective=self.objective, method=self.method, budget=self._budget(),
            seed=self.seed, progress=Progress(label, self.objective),
        )  # fmt: skip
        before = len(prop.conflicts)
        seeded: list[tuple[str, int | None]] = []
        for tactic in report.tactics:
            seeded += tactic.apply(ctx, index).seeded
        return AutomaticRecord(
            index, self, seeded, prop.conflicts[before:], found=list(report.tactics),
            report=report,
        )  # fmt: skip


def found_schedule(schedule: Sequence[Any], records: Sequence[TacticRecord]) -> FoundSchedule:
    """The schedule with every automatic tactic replaced by the tactics it found."""
    out = FoundSchedule()
    for tactic, record in zip(schedule, records, strict=True):
        if isinstance(record, AutomaticRecord):
            out.extend(record.found)
        else:
            out.append(tactic)
    return out


__all__ = ["AutomaticPartition", "AutomaticRecord", "FoundSchedule", "found_schedule"]
