"""A JAX-free helper every layer may use: pausing the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for a block of allocation-heavy work.

    Building IR, planning, lowering and simulating allocate or traverse many small acyclic
    objects; the cyclic collector's repeated passes over them made that work superlinear in
    the program size."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
