"""`partir.plan.program.trace_cached`: a function is traced once per input signature, however
many schedules and meshes plan it, and each plan gets its own IR."""

import jax
import jax.numpy as jnp
import numpy as np

import partir
from partir.plan.program import trace_cached


def counted():
    calls = []

    def step(w, x):
        calls.append(x.shape)  # runs once per trace
        return jnp.tanh(x @ w).sum()

    return step, calls


def test_plans_on_several_meshes_and_schedules_share_one_trace():
    step, calls = counted()
    w, x = np.ones((16, 8), np.float32), np.ones((32, 16), np.float32)
    plans = [
        partir.partition([partir.ManualPartition({"x": 0}, axis="a")], mesh={"a": n})(step).plan(
            w, x
        )
        for n in (2, 4, 8)
    ]
    plans.append(
        partir.partition([partir.ManualPartition({"w": 1}, axis="a")], mesh={"a": 2})(step).plan(
            w, x
        )
    )
    assert calls == [(32, 16)]
    # each plan has its own IR: the shardings one schedule decided are not in another's
    modules = {id(p.program.module) for p in plans}
    assert len(modules) == len(plans)
    assert plans[0].in_shardings[1].spec == jax.sharding.PartitionSpec("a")
    assert plans[3].in_shardings[1].spec == jax.sharding.PartitionSpec()
    # a new signature is a new trace
    partir.partition([], mesh={"a": 2})(step).plan(w, x[:16])
    assert calls == [(32, 16), (16, 16)]


def test_another_trace_context_is_another_trace():
    step, calls = counted()
    w, x = np.ones((16, 8), np.float32), np.ones((32, 16), np.float32)
    trace_cached(step, "key", step, w, x)
    trace_cached(step, "key", step, w, x)
    assert len(calls) == 1
    with jax.numpy_dtype_promotion("strict"):  # part of JAX's trace context
        trace_cached(step, "key", step, w, x)
    assert len(calls) == 2


def test_copies_are_independent():
    step, _ = counted()
    w, x = np.ones((16, 8), np.float32), np.ones((32, 16), np.float32)
    a = trace_cached(step, "k", step, w, x)
    b = trace_cached(step, "k", step, w, x)
    assert a.module is not b.module and str(a) == str(b)
    a.function.attributes["partir.test"] = a.function.args[0].type
    assert "partir.test" not in b.function.attributes
