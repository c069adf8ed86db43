"""`jax.checkpoint` keeps its meaning: the emitted program has exactly the optimization
barriers of the original, so XLA cannot undo the rematerialisation."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import partir
from partir.testing import models, schedules

_BARRIER = re.compile(r"\boptimization_barrier\b|\bopt-barrier\b")


def barriers(lowered: jax.stages.Lowered) -> int:
    """Optimization barriers in a lowered program's StableHLO text."""
    return len(_BARRIER.findall(lowered.as_text()))


@pytest.mark.parametrize("model", ["gpt", "gpt_scan"])
@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_checkpointed_zoo_blocks_keep_their_barriers(model: str, mode: str) -> None:
    m = models.get(model, remat=True)
    want = barriers(jax.jit(m.fn).lower(*m.args))
    assert want >= 1  # the model really is checkpointed
    tactics = schedules.schedule(model, "BP+MP+Z3")
    step = partir.partition(tactics, mesh={"batch": 4, "model": 2}, mode=mode)(m.fn)
    assert barriers(step.lower(*m.args)) == want
    assert barriers(jax.jit(partir.trace(m.fn, *m.args).to_jax()).lower(*m.args)) == want


def test_spmd_collectives_of_the_recomputed_forward_are_what_xla_compiles() -> None:
    m = models.get("gpt", remat=True)
    tactics = schedules.schedule("gpt", "BP+MP+Z3")
    plan = partir.partition(tactics, mesh={"batch": 4, "model": 2}, mode="spmd")(m.fn).plan(*m.args)
    check = plan.check_compiled()
    assert check.agrees, str(check)


def test_nnx_remat_model_keeps_its_barriers() -> None:
    nnx = pytest.importorskip("flax.nnx")

    class Block(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.up = nnx.Linear(16, 32, rngs=rngs)
            self.down = nnx.Linear(32, 16, rngs=rngs)

        def __call__(self, x):
            return x + self.down(nnx.gelu(self.up(x)))

    class Model(nnx.Module):
        def __init__(self, rngs: nnx.Rngs):
            self.blocks = nnx.List([Block(rngs), Block(rngs)])

        def __call__(self, x):
            for block in self.blocks:
                x = nnx.remat(lambda b, y: b(y))(block, x)
            return x

    graphdef, params = nnx.split(Model(nnx.Rngs(0)), nnx.Param)
    opt = optax.adamw(1e-3)

    def step(params, opt_state, x):
        def loss(p):
            return jnp.mean(nnx.merge(graphdef, p)(x) ** 2)

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)
    args = (params, opt.init(params), x)
    want = barriers(jax.jit(step).lower(*args))
    assert want >= 2
    for mode in ("annotate", "spmd"):
        part = partir.partition(
            [partir.ManualPartition({"x": 0}, axis="batch")], mesh={"batch": 8}, mode=mode
        )(step)
        assert barriers(part.lower(*args)) == want, mode
        got, expected = part(*args), jax.jit(step)(*args)
        for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=1e-5, atol=1e-6)
