"""`check_compiled` says when XLA's log could not be read: one of JAX's compilation caches had
the program, so XLA did not compile it and logged nothing."""

import jax.numpy as jnp

import partir


def test_a_cached_compile_is_reported_not_read(mesh):
    def step(x):
        return jnp.tanh(x @ x.T).sum()

    x = jnp.ones((8, 8))
    fn = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh)(step)
    plan = fn.plan(x)
    first = plan.check_compiled()
    again = plan.check_compiled()  # the same program: JAX's in-memory cache has it
    assert again.from_cache and again.to_dict()["from_cache"]
    assert "remat warnings not read" in str(again)
    # the comparison itself is the same as the first check's
    assert (again.matched, again.missing, again.extra) == (
        first.matched,
        first.missing,
        first.extra,
    )
