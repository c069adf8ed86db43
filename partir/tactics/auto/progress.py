"""A one-line progress display on stderr for long searches."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from partir.simulator.display import fmt_bytes, fmt_time


class Progress:
    """Rewrites one stderr line: evaluations, the best objective so far, the ILP bound.

    Args:
      label: what is searching (``AutomaticPartition(model)``).
      objective: ``"time"`` or ``"memory"`` (how numbers print).
      stream: where to write; default stderr.
      enabled: force on or off; default on only for a terminal, and off when the
        ``CI`` environment variable is set or ``PARTIR_PROGRESS=0``.
    """

    def __init__(
        self,
        label: str,
        objective: str,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ):
        self.label = label
        self.objective = objective
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            setting = os.environ.get("PARTIR_PROGRESS")
            isatty = getattr(self.stream, "isatty", lambda: False)()
            enabled = setting == "1" or (isatty and not os.environ.get("CI") and setting != "0")
        self.enabled = enabled
        self.lines = 0
        self._width = 0

    def text(self, evaluations: int, limit: int | None, best: float, bound: float | None) -> str:
        """The line shown for this state (deterministic: no clock in it)."""
        fmt = fmt_bytes if self.objective == "memory" else fmt_time
        total = f"/{limit}" if limit is not None else ""
        line = f"{self.label}: {evaluations}{total} candidates, best {fmt(best)}"
        if bound is not None:
            line += f", ILP bound {fmt(bound)}"
        return line

    def update(self, evaluations: int, limit: int | None, best: float, bound: float | None) -> None:
        """Show the current state (no-op when disabled)."""
        if not self.enabled:
            return
        line = self.text(evaluations, limit, best, bound)
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)
        self.lines += 1

    def close(self) -> None:
        """End the line."""
        if self.enabled and self.lines:
            self.stream.write("\n")
            self.stream.flush()
