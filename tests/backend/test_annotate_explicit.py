"""Annotate mode on a mesh of Explicit axes: the layout rules `emit_explicit` relies on
(pending sums as ``unreduced`` axes, reduce-scatters, dot_general shard by shard), checked
without compiling, and the compiled program of a small step against its plan."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import partir
from partir import ir
from partir.backend.annotate import (
    _local_dot_spec,
    _scatter_dim,
    explicit_spec,
    is_explicit,
)

U = frozenset


def test_explicit_spec_states_pending_sums_as_unreduced():
    s = ir.Sharding((("batch",), ()), partial=("model",))
    assert explicit_spec(s) == P("batch", unreduced={"model"})
    assert explicit_spec(s, unreduced=False) == P("batch")
    # a pending max has no unreduced spelling: left to a reduction where it is made
    assert explicit_spec(ir.Sharding(((),), ("model",), "max")) == P()


def test_is_explicit_only_for_all_explicit_axes():
    assert is_explicit(jax.make_mesh((4, 2), ("a", "b")))
    auto = (jax.sharding.AxisType.Auto,) * 2
    assert not is_explicit(jax.make_mesh((4, 2), ("a", "b"), axis_types=auto))


@pytest.mark.parametrize(
    ("have", "toward", "expected"),
    [
        (P(None, None, unreduced={"b"}), P("b", None), (0, ("b",))),
        (P("a", None, unreduced={"b"}), P(("a", "b"), None), (0, ("a", "b")[1:])),
        (P(None, None, unreduced={"b"}), P(None, "b"), (1, ("b",))),
        # the tiled axes come before what tiles the dimension now: not a scatter of it
        (P("a", None, unreduced={"b"}), P(("b", "a"), None), None),
        # another dimension changes too, or the result is still pending, or other axes
        (P(None, None, unreduced={"b"}), P("b", "a"), None),
        (P(None, None, unreduced={"a", "b"}), P("b", None, unreduced={"a"}), None),
        (P(None, None, unreduced={"b"}), P("a", None), None),
    ],
)
def test_scatter_dim(have, toward, expected):
    assert _scatter_dim(have, toward, 2) == expected


DOT = {"dimension_numbers": (((1,), (0,)), ((), ()))}


@pytest.mark.parametrize(
    ("lhs", "rhs", "expected"),
    [
        # a pending lhs times a replicated rhs: the product is pending on the same axes
        (P(None, None, unreduced={"m"}), P(None, None), P(None, None, unreduced={"m"})),
        # contracting dims tiled alike: the local products are a pending sum
        (P("b", "m"), P("m", None), P("b", None, unreduced={"m"})),
        (P(None, "m", unreduced={"b"}), P("m", None), P(None, None, unreduced={"b", "m"})),
        # contracting dims tiled differently: a local product would be wrong
        (P(None, "m"), P(None, None), None),
        # both pending (a product of sums is no sum of products), or a pending axis that
        # also tiles the other operand
        (P(None, None, unreduced={"m"}), P(None, None, unreduced={"m"}), None),
        (P(None, None, unreduced={"m"}), P(None, "m"), None),
    ],
)
def test_local_dot_spec(lhs, rhs, expected):
    got = _local_dot_spec(DOT, [lhs, rhs], [2, 2])
    if expected is None:
        assert got is None
    else:
        assert got is not None
        assert tuple(got.partitions) + (None,) * (2 - len(got.partitions)) == tuple(
            expected.partitions
        ) + (None,) * (2 - len(expected.partitions))
        assert U(got.unreduced) == U(expected.unreduced)


def _grad_step(params, x):
    def loss(p):
        return jnp.sum(jnp.tanh(x @ p["w_in"]) @ p["w_out"])

    g = jax.grad(loss)(params)
    return jax.tree.map(lambda w, d: w - 0.1 * d, params, g)


@pytest.fixture(scope="module")
def zero_plan():
    """Batch parallel with ZeRO-sharded weights (their gradients reduce-scattered) and
    Megatron's MLP, on a mesh of Explicit axes."""
    mesh = jax.make_mesh((4, 2), ("batch", "model"))
    schedule = [
        partir.ManualPartition({"x": 0, "params/w_in": 0, "params/w_out": 1}, axis="batch"),
        partir.ManualPartition({"params/w_in": 1, "params/w_out": 0}, axis="model"),
    ]
    k1, k2, k3 = jax.random.split(jax.random.key(2), 3)
    params = {
        "w_in": jax.random.normal(k1, (16, 32)) / 4,
        "w_out": jax.random.normal(k2, (32, 8)) / 4,
    }
    x = jax.random.normal(k3, (8, 16))
    step = partir.partition(schedule, mesh=mesh)(_grad_step)
    return step, step.plan(params, x), (params, x)


def test_explicit_plan_compiles_to_its_collectives(zero_plan):
    _, plan, _ = zero_plan
    check = plan.check_compiled()
    kinds = {m.planned.kind for m in check.matched}
    assert "reduce_scatter" in kinds, str(check)  # a reduce-scatter, not all-reduce + slice
    assert check.agrees, str(check)


def test_explicit_plan_equals_unpartitioned(zero_plan):
    step, _, (params, x) = zero_plan
    out = step(params, x)
    ref = _grad_step(params, x)
    for a, b in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_pending_sums_are_unreduced_in_the_lowered_program(zero_plan):
    _, plan, _ = zero_plan
    assert "unreduced" in plan.lower().as_text()
