"""Test helpers shipped with partir: hypothesis strategies, a small model zoo, and the
comparison a partitioned step must pass against its unpartitioned self."""

from typing import Any

import jax
import numpy as np


def assert_tree_close(got: Any, want: Any, *, rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """Assert two pytrees have one structure and leaves equal within tolerance.

    Args:
      got: the partitioned function's result (arrays on any devices).
      want: the reference result, e.g. of ``jax.jit`` of the unpartitioned function.
      rtol, atol: `numpy.testing.assert_allclose`'s relative and absolute tolerances.
    """
    got_tree, want_tree = jax.tree.structure(got), jax.tree.structure(want)
    assert str(got_tree) == str(want_tree), f"result trees differ: {got_tree} vs {want_tree}"
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=rtol, atol=atol)
