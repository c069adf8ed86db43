"""Wrong results and crashes the oracle found that are not partir's rewrites, as the shrunk
examples. Two are XLA's, kept as strict xfails so that a fixed XLA turns each into a failure
to remove (the oracle falls back to op-by-op evaluation when `jax.jit` disagrees with partir); the spmd-mode region cases were partir's (regions whose branches or carries differ in
manual-axis variance) and are plain tests now."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import partir


@pytest.mark.xfail(
    strict=True,
    reason="XLA's CPU SPMD partitioner (jax 0.12) miscompiles a self-contraction of transposed "
    "dims sharded on two axes; partir's annotate mode only passes the shardings to XLA",
)
def test_xla_self_contraction_of_transposed_sharded_dims():
    mesh = jax.make_mesh((2, 2), ("a", "b"), axis_types=(AxisType.Auto,) * 2)

    def f(x):
        return lax.dot_general(x, x, (((0, 1, 2), (2, 1, 0)), ((), ())))

    x = np.random.default_rng(0).uniform(-1, 1, (4, 8, 4)).astype(np.float32)
    got = jax.jit(f, in_shardings=NamedSharding(mesh, P("a", "b", None)))(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(f(x)), rtol=1e-5)


@pytest.mark.xfail(
    strict=True,
    raises=AssertionError,
    reason="XLA's CPU compiler (jax 0.12) updates x in place for a dynamic_update_slice and "
    "computes the update from the already-updated buffer, when x is also read afterwards",
)
def test_xla_dynamic_update_slice_reading_its_own_operand():
    def f(x):
        update = jnp.tanh(x * x)[0:2]
        y = lax.dynamic_update_slice(x, update, (1,))
        return x.at[jnp.arange(4)].add(y)

    x = jnp.array([0.1, -0.5, 0.7, 0.9], jnp.float32)
    with jax.disable_jit():
        want = np.asarray(f(x))  # op by op: [0.2, -0.49, 0.9449, 1.8]
    np.testing.assert_allclose(np.asarray(jax.jit(f)(x)), want, rtol=1e-5)


def test_spmd_cond_with_an_invariant_branch():
    mesh = jax.make_mesh((2,), ("a",), axis_types=(AxisType.Auto,))

    def mean_back(x):
        m = lax.reduce_sum(x, (0,)) * (1 / x.shape[0])
        return lax.broadcast_in_dim(m, x.shape, (1,))

    def f(inputs):
        x = inputs["x"]
        return lax.cond(x.sum() > 0, mean_back, lax.sin, x)

    x = {"x": np.random.default_rng(0).uniform(-1, 1, (4, 6)).astype(np.float32)}
    schedule = [partir.ManualPartition({"inputs/x": 0}, axis="a")]
    got = partir.partition(schedule, mesh=mesh, mode="spmd")(f)(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(f)(x)), rtol=1e-5)


def test_spmd_scan_with_a_broadcast_initial_carry():
    mesh = jax.make_mesh((2,), ("a",), axis_types=(AxisType.Auto,))

    def f(inputs):
        xs, s = inputs["xs"], inputs["s"]
        c0 = lax.broadcast_in_dim(s, xs.shape[1:], ())

        def body(c, x):
            c = (c + x) * 0.5
            return c, c * x

        c, ys = lax.scan(body, c0, xs)
        return ys * 0.5 + c * 0.5

    rng = np.random.default_rng(0)
    x = {"xs": rng.uniform(-1, 1, (4, 4, 4)).astype(np.float32), "s": np.float32(0.3)}
    schedule = [partir.ManualPartition({"inputs/xs": 1}, axis="a")]
    got = partir.partition(schedule, mesh=mesh, mode="spmd")(f)(x)
    np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(f)(x)), rtol=1e-5)
