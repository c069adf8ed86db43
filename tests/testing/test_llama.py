"""The Llama-style zoo model: partitioned steps equal the unpartitioned one; full size traces
from shapes alone."""

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import partir
from partir.testing import models


def mesh_2x4():
    return jax.make_mesh((2, 4), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


@pytest.fixture(scope="module")
def small():
    m = models.llama()
    return m, jax.tree.map(np.asarray, m.fn(*m.args))


@pytest.mark.parametrize("name", ["BP+MP", "BP+MP+Z3"])
def test_partitioned_step_equals_unpartitioned(small, name):
    m, ref = small
    step = partir.partition(models.llama_schedule(name), mesh=mesh_2x4(), mode="spmd")(m.fn)
    out = step(*m.args)
    assert jax.tree.structure(out) == jax.tree.structure(ref)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
    plan = step.plan(*m.args)
    q = plan.in_shardings[0]["blocks"]["attn"]["q"]
    assert q.spec[2] == "model"  # Megatron: q is column-parallel on the model axis
    assert any(c.axes == ("model",) for c in plan.collectives())


def test_loss_is_finite_and_gqa_shapes():
    m = models.llama(kv_heads=1, heads=4)
    params = m.args[0]
    dh = m.config.head_dim
    assert params["blocks"]["attn"]["k"].shape == (m.config.layers, m.config.d_model, dh)
    _, _, loss = jax.jit(m.fn)(*m.args)
    # a fresh model predicts about uniformly: the loss is near log(vocab)
    assert abs(float(loss) - np.log(m.config.vocab)) < 0.5


def test_full_size_traces_from_shapes():
    # Llama 3 70B's shapes (Dubey et al. 2024, Table 3); the scanned layers keep this cheap
    m = models.llama(abstract=True, layers=80, d_model=8192, heads=64, kv_heads=8,
                     d_ff=28672, seq=8192, batch=64, vocab=128256, dtype="bfloat16",
                     remat=True)  # fmt: skip
    n = sum(x.size for x in jax.tree.leaves(m.args[0]))
    assert 69e9 < n < 72e9
    step = partir.partition(models.llama_schedule("BP+MP+Z3"),
                            mesh={"batch": 32, "model": 8}, mode="spmd")  # fmt: skip
    report = step(m.fn).plan(*m.args).simulate("h100", donate=True)
    per_token = models.llama_flops_per_token(m.config, causal=False)
    tokens = 64 * 8192 / 256
    # executed flops include the recomputed forward: between 1x and 4/3 x the model flops
    assert per_token * tokens < report.executed_flops < 1.4 * per_token * tokens


def test_bad_config_names_the_field():
    with pytest.raises(ValueError, match="kv_heads=3"):
        models.llama(kv_heads=3)
