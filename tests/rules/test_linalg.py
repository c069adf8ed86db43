"""Batched matrix factorisations and solves: batch dims (and a solve's independent
right-hand sides) split with no communication; the matrix dims are gathered."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import partir


def _inputs():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(8, 8, 8)).astype(np.float32)
    spd = m @ m.transpose(0, 2, 1) + 8 * np.eye(8, dtype=np.float32)
    rhs = rng.normal(size=(8, 8, 8)).astype(np.float32)
    return {"a": jnp.asarray(spd), "b": jnp.asarray(rhs)}


def _solve(x):
    lower = jnp.linalg.cholesky(x["a"])
    return jax.lax.linalg.triangular_solve(lower, x["b"], left_side=True, lower=True)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize(
    ("inputs", "communicates"),
    [
        ({"x": 0}, False),  # the batch of matrices
        ({"x/b": 2}, False),  # the right-hand sides: each column is solved on its own
        ({"x/a": 1}, True),  # a matrix row: the factorisation needs all of it
    ],
)
def test_batched_cholesky_solve(mode, inputs, communicates):
    x = _inputs()
    step = partir.partition([partir.ManualPartition(inputs, axis="d")], mesh={"d": 8}, mode=mode)
    partitioned = step(_solve)
    np.testing.assert_allclose(partitioned(x), jax.jit(_solve)(x), rtol=1e-5, atol=1e-5)
    table = partitioned.plan(x).collectives()
    assert any(c.communicates for c in table) == communicates, str(table)
