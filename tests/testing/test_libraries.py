"""Models written with Flax (NNX and Linen), Equinox and Haiku install beside partir and
partition: a data-parallel training step of each equals its `jax.jit`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partir

BATCH, D_IN, D_HIDDEN = 16, 12, 24


def _batch() -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(BATCH, D_IN)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(BATCH, 1)), jnp.float32)
    return x, y


def _step_of(apply: Callable[[Any, jax.Array], jax.Array]) -> Callable[..., Any]:
    """An AdamW training step on a mean-squared error, for a pure `apply(params, x)`."""
    opt = optax.adamw(1e-2)

    def step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(lambda p: jnp.mean((apply(p, x) - y) ** 2))(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step, opt


def _nnx() -> tuple[Any, Callable]:
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.hidden = nnx.Linear(D_IN, D_HIDDEN, rngs=rngs)
            self.norm = nnx.RMSNorm(D_HIDDEN, rngs=rngs)
            self.out = nnx.Linear(D_HIDDEN, 1, rngs=rngs)

        def __call__(self, x):
            return self.out(nnx.gelu(self.norm(self.hidden(x))))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)), nnx.Param)

    def apply(p, x):
        return nnx.merge(graphdef, p)(x)

    return params, apply


def _linen() -> tuple[Any, Callable]:
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.LayerNorm()(nn.relu(nn.Dense(D_HIDDEN)(x)))
            return nn.Dense(1)(x)

    model = MLP()
    params = model.init(jax.random.key(0), jnp.zeros((1, D_IN)))
    return params, model.apply


def _equinox() -> tuple[Any, Callable]:
    import equinox as eqx

    model = eqx.nn.MLP(D_IN, 1, D_HIDDEN, depth=2, key=jax.random.key(0))
    params, static = eqx.partition(model, eqx.is_array)

    def apply(p, x):
        return jax.vmap(eqx.combine(p, static))(x)

    return params, apply


def _haiku() -> tuple[Any, Callable]:
    import haiku as hk

    model = hk.without_apply_rng(hk.transform(lambda x: hk.nets.MLP([D_HIDDEN, D_HIDDEN, 1])(x)))
    params = model.init(jax.random.key(0), jnp.zeros((1, D_IN)))
    return params, model.apply


@pytest.mark.parametrize("library", [_nnx, _linen, _equinox, _haiku], ids=lambda f: f.__name__[1:])
@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_library_model_data_parallel_step_equals_jit(library, mode: str) -> None:
    params, apply = library()
    step, opt = _step_of(apply)
    opt_state = opt.init(params)
    x, y = _batch()
    schedule = [partir.ManualPartition({"x": 0, "y": 0}, axis="batch")]
    partitioned = partir.partition(schedule, mesh={"batch": 8}, mode=mode)(step)

    plan = partitioned.plan(params, opt_state, x, y)
    assert all(p.startswith(("params/", "opt_state/", "x", "y")) for p in plan.program.input_paths)
    # the gradients of every parameter leaf are reduced over the batch axis, nothing else moves
    kinds = {c.kind for c in plan.collectives()}
    assert kinds <= {"all_reduce"} and kinds, kinds

    got = partitioned(params, opt_state, x, y)
    want = jax.jit(step)(params, opt_state, x, y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("library", [_nnx, _linen, _equinox, _haiku], ids=lambda f: f.__name__[1:])
def test_library_model_zero3_skips_what_does_not_divide(library) -> None:
    """`Z3()` with no arguments on each library's own naming: every leaf with a dim divisible
    by 8 is sharded, the output layer's bias of 1 (and its moments) is skipped and
    reported, and the step is exact."""
    from partir.tactics.presets import BP, Z3

    params, apply = library()
    step, opt = _step_of(apply)
    opt_state = opt.init(params)
    x, y = _batch()
    schedule = [*BP(inputs={"x": 0, "y": 0}), *Z3()]
    partitioned = partir.partition(schedule, mesh={"batch": 8}, mode="spmd")(step)
    plan = partitioned.plan(params, opt_state, x, y)
    shapes = dict(
        zip(plan.program.input_paths, (np.shape(v) for v in jax.tree.leaves((params, opt_state, x, y))), strict=True)
    )  # fmt: skip
    zero_leaves = [p for p in shapes if p.startswith("params/") or "/mu/" in p or "/nu/" in p]
    want = sorted(p for p in zero_leaves if not any(d % 8 == 0 for d in shapes[p]))
    assert want and all(np.prod(shapes[p]) == 1 for p in want)  # the bias of 1 and its moments
    assert sorted(p for p, _ in plan.records[1].skipped) == want
    assert all(b == 4 for _, b in plan.records[1].skipped)
    got = partitioned(params, opt_state, x, y)
    expected = jax.jit(step)(params, opt_state, x, y)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-4, atol=1e-5)
