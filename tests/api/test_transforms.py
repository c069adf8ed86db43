"""A `Partitioned` behaves like a `jax.jit` function that also plans: it composes with
`jax.jit`, `jax.grad`, `jax.value_and_grad` and `lax.scan`, compiles once per training
loop, donates and takes static arguments as `jax.jit` does, and runs host callbacks once
per call. Each result is compared with `jax.jit` of the unpartitioned function."""

from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import io_callback
from jax.sharding import NamedSharding, PartitionSpec

import partir
from partir.testing import assert_tree_close, models, schedules

MODES = ("annotate", "spmd")
MP = partir.ManualPartition


def loss(params, x):
    h = jnp.tanh(x @ params["w_in"])
    return jnp.mean((h @ params["w_out"]) ** 2)


# batch on x's rows, Megatron-style on the hidden dimension
SCHEDULE = [
    MP({"x": 0}, axis="batch"),
    MP({"params/w_in": 1, "params/w_out": 0}, axis="model"),
]


def _params(seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w_in": jax.random.normal(k1, (16, 32)) * 0.3,
        "w_out": jax.random.normal(k2, (32, 8)) * 0.3,
    }


X = jax.random.normal(jax.random.key(7), (8, 16))


def sgd_step(params, x):
    value, grads = jax.value_and_grad(loss)(params, x)
    return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), value


_close = functools.partial(assert_tree_close, rtol=2e-5, atol=2e-6)


class CompileCounter:
    """Counts XLA compilations (`jax.monitoring`'s backend-compile events) while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event: str, duration: float, **kwargs) -> None:
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        self.count, self.active = 0, True
        return self

    def __exit__(self, *exc):
        self.active = False


@pytest.fixture(scope="module")
def compiles():
    return CompileCounter()


# -- composition with transforms --------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_jit_of_partitioned_matches_jit(mesh, mode):
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(loss)
    params = _params()
    _close(jax.jit(part)(params, X), jax.jit(loss)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_grad_of_partitioned_loss_matches_jit(mesh, mode):
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(loss)
    params = _params()
    got = jax.grad(part)(params, X)
    _close(got, jax.jit(jax.grad(loss))(params, X))
    # under an enclosing jit too
    _close(jax.jit(jax.grad(part))(params, X), got)


@pytest.mark.parametrize("mode", MODES)
def test_value_and_grad_of_partitioned_loss_matches_jit(mesh, mode):
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(loss)
    params = _params()
    value, grads = jax.value_and_grad(part)(params, X)
    want_value, want_grads = jax.jit(jax.value_and_grad(loss))(params, X)
    _close(value, want_value)
    _close(grads, want_grads)


@pytest.mark.parametrize("mode", MODES)
def test_scan_over_a_partitioned_step_matches_jit(mesh, mode):
    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(sgd_step)

    def train(step_fn, params, xs):
        return jax.lax.scan(lambda p, x: step_fn(p, x), params, xs)

    xs = jax.random.normal(jax.random.key(3), (3, 8, 16))
    params = _params()
    got = jax.jit(functools.partial(train, step))(params, xs)
    want = jax.jit(functools.partial(train, sgd_step))(params, xs)
    _close(got, want)
    # the losses fall: the loop really trained, it did not return its input
    assert float(got[1][-1]) < float(got[1][0])


# -- one compilation per loop, donation, static arguments, placement ---------------------


@pytest.mark.parametrize("mode", MODES)
def test_training_loop_compiles_once(mesh, mode, compiles):
    model = models.get("mlp")
    step = partir.partition(schedules.schedule("mlp", "BP+MP"), mesh=mesh, mode=mode)(model.fn)
    params, opt_state, batch = step.plan(*model.args).place(*model.args)
    with compiles:
        for _ in range(3):
            params, opt_state, value = step(params, opt_state, batch)
    assert compiles.count == 1
    want = model.args
    for _ in range(3):
        want_params, want_opt, want_value = jax.jit(model.fn)(*want)
        want = (want_params, want_opt, want[2])
    _close((params, value), (want_params, want_value))


@pytest.mark.parametrize("mode", MODES)
def test_unplaced_inputs_then_own_outputs_compile_once(mesh, mode, compiles):
    # the first call gets uncommitted arrays (jnp default placement), later calls their
    # own committed outputs: one compilation of the step, not two
    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(sgd_step)
    params = _params()
    with compiles:
        params, _ = step(params, X)
        first = compiles.count
        for _ in range(2):
            params, _ = step(params, X)
    assert first >= 1
    assert compiles.count == first


@pytest.mark.parametrize("mode", MODES)
def test_donated_inputs_are_deleted(mesh, mode):
    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode, donate_argnums=0)(sgd_step)
    plan = step.plan(_params(), X)
    params, x = plan.place(_params(), X)
    new_params, value = step(params, x)
    assert all(p.is_deleted() for p in jax.tree.leaves(params))
    assert not x.is_deleted()
    _close((new_params, value), jax.jit(sgd_step)(_params(), X))


@pytest.mark.parametrize("mode", MODES)
def test_donate_argnames(mesh, mode):
    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode, donate_argnames="params")(sgd_step)
    params, x = step.plan(_params(), X).place(_params(), X)
    step(params, x)
    assert all(p.is_deleted() for p in jax.tree.leaves(params))
    assert step.plan(_params(), X).donated == (0, 1)


def scaled_loss(params, x, power):
    return jnp.sum(jnp.tanh(x @ params["w_in"]) ** power)


@pytest.mark.parametrize("mode", MODES)
def test_static_argnums(mesh, mode):
    part = partir.partition(SCHEDULE[:1], mesh=mesh, mode=mode, static_argnums=2)(scaled_loss)
    want = jax.jit(scaled_loss, static_argnums=2)
    params = _params()
    for power in (1, 2, 3):
        _close(part(params, X, power), want(params, X, power))
    assert len(part._plans) == 3
    part(params, X, 2)  # a static value seen before reuses its plan
    assert len(part._plans) == 3
    # the input paths keep the argument names; the static argument is not an input
    assert part.plan(params, X, 2).program.input_paths == ["params/w_in", "params/w_out", "x"]


@pytest.mark.parametrize("mode", MODES)
def test_static_argnames(mesh, mode):
    part = partir.partition(SCHEDULE[:1], mesh=mesh, mode=mode, static_argnames="power")(
        scaled_loss
    )
    params = _params()
    _close(
        part(params, X, power=3), jax.jit(scaled_loss, static_argnames="power")(params, X, power=3)
    )
    _close(part(params, X, 3), part(params, X, power=3))  # positional too, as jax.jit
    # inside an enclosing jit the static value stays a Python value
    _close(jax.jit(lambda p, x: part(p, x, power=2))(params, X), scaled_loss(params, X, 2))


def test_plan_place_puts_host_data_on_the_planned_shardings(mesh):
    part = partir.partition(SCHEDULE, mesh=mesh)(loss)
    host_params = jax.tree.map(np.asarray, _params())
    plan = part.plan(host_params, np.asarray(X))
    params, x = plan.place(host_params, np.asarray(X))
    assert x.sharding == NamedSharding(mesh, PartitionSpec("batch"))
    assert params["w_in"].sharding == plan.in_shardings[0]["w_in"]
    assert params["w_in"].sharding.spec == PartitionSpec(None, "model")
    np.testing.assert_array_equal(params["w_out"], host_params["w_out"])
    # already placed arrays come back as they are (no copy)
    again = plan.place(params, x)
    assert again[1] is x and again[0]["w_in"] is params["w_in"]


# -- host callbacks run once per call ----------------------------------------------------


def _with_callbacks(calls):
    def host_sum(y):
        calls.append(("io", np.asarray(y).shape))
        return np.asarray(y).sum(0).astype(np.float32)

    def f(x):
        y = jnp.tanh(x)
        jax.debug.callback(lambda v: calls.append(("debug", np.asarray(v).shape)), y)
        z = io_callback(host_sum, jax.ShapeDtypeStruct((16,), jnp.float32), y)
        return (y * 2).sum() + z.sum()

    return f


@pytest.mark.parametrize("mode", MODES)
def test_callbacks_run_once_per_call_with_whole_values(mesh, mode):
    calls: list = []
    f = _with_callbacks(calls)
    part = partir.partition([MP({"x": 0}, axis="batch")], mesh=mesh, mode=mode)(f)
    x = jax.random.normal(jax.random.key(1), (8, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # no sharding rule for debug_callback
        out = part(x)
    jax.effects_barrier()  # callbacks run asynchronously
    # each callback once, and it saw the global (8, 16) value, not a shard
    assert sorted(calls) == [("debug", (8, 16)), ("io", (8, 16))]
    calls.clear()
    want = jax.jit(f)(x)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    calls.clear()
    part(x)
    jax.effects_barrier()
    assert len(calls) == 2


@pytest.mark.parametrize("mode", MODES)
def test_callback_in_a_scan_runs_once_per_iteration(mesh, mode):
    calls: list = []

    def f(x):
        def body(c, row):
            jax.debug.callback(lambda v: calls.append(np.asarray(v).shape), c)
            return c + row.sum(), None

        return jax.lax.scan(body, jnp.zeros(()), x)[0]

    part = partir.partition([MP({"x": 1}, axis="batch")], mesh=mesh, mode=mode)(f)
    x = jnp.ones((3, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        np.testing.assert_allclose(part(x), 24.0)
    jax.effects_barrier()
    assert len(calls) == 3


def test_plan_called_directly_takes_the_static_arguments(mesh):
    from partir.errors import InputMismatchError

    part = partir.partition(SCHEDULE[:1], mesh=mesh, static_argnums=2)(scaled_loss)
    params = _params()
    plan = part.plan(params, X, 2)
    _close(plan(params, X, 2), scaled_loss(params, X, 2))
    with pytest.raises(
        InputMismatchError, match=r"static arguments argument 2=2 but called with argument 2=3"
    ):
        plan(params, X, 3)


def test_plan_place_with_keyword_arguments(mesh):
    part = partir.partition(SCHEDULE, mesh=mesh)(loss)
    params = _params()
    plan = part.plan(params, x=np.asarray(X))
    args, kwargs = plan.place(params, x=np.asarray(X))
    assert kwargs["x"].sharding.spec == PartitionSpec("batch")
    assert args[0]["w_in"].sharding == plan.in_shardings[0]["w_in"]
    _close(part(*args, **kwargs), jax.jit(loss)(params, X))
