"""Pending sums and the ops they may (not) flow through, end to end on 8 CPU devices.

Each case is a program where a wrong rule about partial values gives wrong numbers, not
only a different plan: a nonzero operand lacking an op's reduce factor (it would be summed
once per device), and a partial divisor (the sum of quotients is not the quotient of the
sum). Both modes are compared with `jax.jit` of the unpartitioned function, and the plan
must reduce the partial value before the op."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import pytest

import partir
from partir.testing import assert_tree_close

MODES = ("annotate", "spmd")
MP = partir.ManualPartition


_close = functools.partial(assert_tree_close, rtol=2e-5, atol=2e-5)


def _data(seed, *shapes):
    keys = jax.random.split(jax.random.key(seed), len(shapes))
    return [jax.random.normal(k, s) for k, s in zip(keys, shapes, strict=True)]


@pytest.mark.parametrize("mode", MODES)
def test_scatter_add_into_a_nonzero_base_sums_the_base_once(mesh, mode):
    """The updates are split along the scattered (reduce) dim; the base has no such dim, so
    each device adding its share to the whole base would count the base 4 times."""
    base, updates = _data(0, (6, 3), (16, 3))
    indices = (jnp.arange(16) * 5 % 6)[:, None]

    def fn(base, indices, updates):
        return jax.lax.scatter_add(
            base,
            indices,
            updates,
            jax.lax.ScatterDimensionNumbers(
                update_window_dims=(1,), inserted_window_dims=(0,),
                scatter_dims_to_operand_dims=(0,),
            ),
        )  # fmt: skip

    schedule = [MP({"indices": 0, "updates": 0}, axis="batch")]
    part = partir.partition(schedule, mesh=mesh, mode=mode)(fn)
    _close(part(base, indices, updates), jax.jit(fn)(base, indices, updates))


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_divisor_is_reduced_before_the_division(mesh, mode):
    """``c / (a @ b)`` with the contraction split: ``a @ b`` is a pending sum, and
    division is linear in its numerator only."""
    a, b, c = _data(1, (8, 16), (16, 4), (8, 4))
    a = a + 3.0  # keep the divisor away from zero
    b = jnp.abs(b) + 1.0

    def fn(a, b, c):
        return c / (a @ b)

    schedule = [MP({"a": 1, "b": 0}, axis="model")]
    part = partir.partition(schedule, mesh=mesh, mode=mode)(fn)
    _close(part(a, b, c), jax.jit(fn)(a, b, c))
    if mode == "spmd":
        # exactly one reduction, of the matmul's pending sum, before the division
        reduced = [c.kind for c in part.plan(a, b, c).collectives() if c.communicates]
        assert reduced == ["all_reduce"]


@pytest.mark.parametrize("mode", MODES)
def test_a_partial_numerator_flows_through_division(mesh, mode):
    """The converse: ``(a @ b) / c`` keeps the pending sum through the division (it is
    linear in its numerator), and the value is still right."""
    a, b, c = _data(2, (8, 16), (16, 4), (8, 4))
    c = jnp.abs(c) + 1.0

    def fn(a, b, c):
        return jnp.sum((a @ b) / c, axis=0)

    schedule = [MP({"a": 1, "b": 0}, axis="model")]
    part = partir.partition(schedule, mesh=mesh, mode=mode)(fn)
    _close(part(a, b, c), jax.jit(fn)(a, b, c))


@pytest.mark.parametrize("mode", MODES)
def test_a_pending_max_does_not_flow_through_a_linear_op(mesh, mode):
    """A max over a split dim is pending as a max; negation and addition are linear for a
    pending sum only (``-max(a, b)`` is not ``max(-a, -b)``), so the max is taken first."""
    (x,) = _data(3, (8, 16))

    def fn(x):
        return -jnp.max(x, axis=1) + jnp.max(x * 2.0, axis=1)

    schedule = [MP({"x": 1}, axis="model")]
    part = partir.partition(schedule, mesh=mesh, mode=mode)(fn)
    _close(part(x), jax.jit(fn)(x))
