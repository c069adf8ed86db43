"""Complex values and FFTs: represented, printed and parsed exactly, and partitioned (an FFT
over an unsharded dimension stays local; over a sharded one its operand is gathered)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import partir
from partir import ir
from partir.simulator import simulate

X = jnp.asarray(np.random.default_rng(0).normal(size=(8, 16)), jnp.float32)


def _partition(fn, mode):
    tactic = partir.ManualPartition({"x": 0}, axis="batch")
    return partir.partition([tactic], mesh={"batch": 8}, mode=mode)(fn)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize(
    "fn",
    [
        lambda x: jnp.fft.rfft(x, axis=1),
        lambda x: jnp.fft.irfft(jnp.fft.rfft(x, axis=1) * 2.0, n=16, axis=1),
        lambda x: jnp.fft.fft(x.astype(jnp.complex64) * (1 + 2j), axis=1),
    ],
    ids=["rfft", "irfft", "fft-c64"],
)
def test_fft_over_an_unsharded_dim_stays_local(fn, mode):
    step = _partition(fn, mode)
    plan = step.plan(X)
    assert not list(plan.collectives())
    assert tuple(plan.out_shardings.spec)[:1] == ("batch",)
    np.testing.assert_allclose(
        np.asarray(step(X)), np.asarray(jax.jit(fn)(X)), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_fft_over_the_sharded_dim_is_gathered(mode):
    def fn(x):
        return jnp.abs(jnp.fft.rfft(x, axis=0)).sum(axis=0)

    step = _partition(fn, mode)
    collectives = list(step.plan(X).collectives())
    # the transformed dim must be whole: x (or its transpose) is gathered, nothing else moves
    assert [c.kind for c in collectives] == ["all_gather"]
    assert sorted(collectives[0].shape) == sorted(X.shape)
    np.testing.assert_allclose(np.asarray(step(X)), np.asarray(jax.jit(fn)(X)), rtol=1e-5)


def test_complex_constants_and_values_round_trip_exactly():
    c = np.asarray([1 + 2j, -0.0 - 1j, np.inf + 1j, 3.5e-8 + 0j], np.complex64)

    def fn(x):
        return jnp.fft.fft(x[:4, :4].astype(jnp.complex64) * c, axis=1)

    program = partir.trace(fn, X)
    text = str(program.module)
    assert "complex<f32>" in text
    reparsed = partir.parse(text)
    assert str(reparsed.module) == text
    np.testing.assert_array_equal(np.asarray(reparsed.to_jax()(X)[0]), np.asarray(jax.jit(fn)(X)))
    assert ir.ITEMSIZE["complex64"] == 8 and ir.ITEMSIZE["complex128"] == 16


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_complex128_under_x64(mode):
    with jax.enable_x64(True):
        x = jnp.asarray(np.random.default_rng(1).normal(size=(8, 16)), jnp.float64)

        def fn(x):
            return jnp.fft.ifft(x.astype(jnp.complex128) * (0.5 - 1j), axis=1)

        step = _partition(fn, mode)
        assert "complex<f64>" in str(partir.trace(fn, x).module)
        got = step(x)
        assert got.dtype == jnp.complex128
        np.testing.assert_allclose(np.asarray(got), np.asarray(jax.jit(fn)(x)), rtol=1e-12)


@pytest.mark.parametrize(
    ("fn", "shape"),
    [(lambda x: jnp.fft.rfft(x), (8, 64)), (lambda x: jnp.fft.irfft(x.astype(jnp.complex64)), (8, 33)),
     (lambda x: jnp.fft.fft2(x.astype(jnp.complex64)), (4, 8, 16))],
    ids=["rfft", "irfft", "fft2"],
)  # fmt: skip
def test_fft_flops_are_what_xla_counts(fn, shape):
    x = jnp.ones(shape, jnp.float32)
    compiled = jax.jit(fn).lower(x).compile()
    program = partir.trace(fn, x)
    flops = simulate(program.module, "cpu").flops
    assert flops == pytest.approx(compiled.cost_analysis()["flops"], rel=0.05)
