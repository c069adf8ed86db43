"""Peak memory as XLA's buffer assignment counts it: hand-checked programs against
`compiled.memory_analysis()`, donation, layout copies, loops, what is live at the peak."""

import jax
import jax.numpy as jnp
import pytest

import partir
from partir.simulator import liveness, simulate
from partir.simulator.memory import value_bytes

X = jax.ShapeDtypeStruct((64, 128), jnp.float32)  # 32 KiB
W = jax.ShapeDtypeStruct((128, 128), jnp.float32)  # 64 KiB
W2 = jax.ShapeDtypeStruct((128, 32), jnp.float32)  # 16 KiB
KIB32 = 64 * 128 * 4


def body(module):
    return next(iter(module.body.block.ops)).body.block


def xla_bytes(fn, args, donate=()):
    """What the issue compares against: argument + output + temp - alias."""
    m = jax.jit(fn, donate_argnums=donate).lower(*args).compile().memory_analysis()
    return (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )


def chain(x):
    return ((x * 2.0) + 1.0).sum()


def matmuls(x, w, w2):
    return jnp.tanh(x @ w) @ w2


def residual(x, w):
    return (x + jnp.tanh(x @ w)) * 2.0 @ w


def test_fused_chain_is_arguments_plus_result():
    module = partir.trace(chain, X).module
    mem = liveness(body(module))
    # mul, add and the sum are one fusion: nothing but the argument and the scalar result
    assert mem.peak_bytes == KIB32 + 4 == xla_bytes(chain, (X,))
    assert (mem.argument_bytes, mem.output_bytes) == (KIB32, 4)
    assert mem.by_category == {"arguments": KIB32, "outputs": 4, "activations": 0,
                               "temporaries": 0}  # fmt: skip


def test_matmul_chain_by_hand():
    module = partir.trace(matmuls, X, W, W2).module
    mem = liveness(body(module))
    # arguments 32 + 64 + 16 KiB, the result 64x32 (8 KiB), and x @ w (32 KiB), which tanh
    # overwrites in place and the second dot reads: one temporary
    arguments = KIB32 + 2 * KIB32 + KIB32 // 2
    assert mem.peak_bytes == arguments + KIB32 // 4 + KIB32 == xla_bytes(matmuls, (X, W, W2))
    assert mem.by_category["temporaries"] + mem.by_category["activations"] == KIB32
    assert sum(mem.by_category.values()) == mem.peak_bytes
    assert mem.peak_location.startswith(("dot_general at", "tanh at"))
    assert mem.live_at_peak[0].bytes == 2 * KIB32 and mem.live_at_peak[0].description == "w"
    sizes = [v.bytes for v in mem.live_at_peak]
    assert sizes == sorted(sizes, reverse=True)


def test_residual_in_place_and_donation():
    module = partir.trace(residual, X, W).module
    mem = liveness(body(module))
    # x @ w, tanh, + x and * 2 share one buffer (each elementwise step overwrites the last)
    assert mem.peak_bytes == 3 * KIB32 + KIB32 + KIB32 == xla_bytes(residual, (X, W))
    # donated, the result (32 KiB) reuses x's buffer: XLA's alias
    donated = liveness(body(module), donate=True)
    assert donated.donated
    assert donated.peak_bytes == mem.peak_bytes - KIB32
    assert donated.peak_bytes == xla_bytes(residual, (X, W), donate=(0, 1))


def test_layout_copy_when_batch_dims_are_not_leading():
    a = jax.ShapeDtypeStruct((4, 16, 8), jnp.float32)  # 2 KiB: batch 4, 16 rows
    t = jax.ShapeDtypeStruct((16, 4, 8), jnp.float32)  # the same, batch second

    def leading(p, q):
        return jnp.einsum("bqd,bkd->bqk", p, q)

    def inner(p, q):
        return jnp.einsum("qbd,kbd->bqk", p, q)

    for fn, arg, copies in ((leading, a, 0), (inner, t, 2 * 2048)):
        mem = simulate(partir.trace(fn, arg, arg).module, "cpu").memory
        assert mem.by_category["temporaries"] == copies  # both operands copied batch-first
        assert mem.peak_bytes == 2 * 2048 + 4 * 16 * 16 * 4 + copies == xla_bytes(fn, (arg, arg))


def test_temporary_lives_in_a_result_buffer_written_later():
    def fn(x, w):
        return jnp.tanh(x @ w) @ w, x * 2.0  # x * 2 is written after tanh(x @ w) dies

    mem = simulate(partir.trace(fn, X, W).module, "cpu").memory
    assert mem.peak_bytes == 3 * KIB32 + 2 * KIB32
    assert mem.by_category["temporaries"] == mem.by_category["activations"] == 0


def test_dead_code_allocates_nothing():
    def fn(x):
        _ = jnp.exp(x) * 3.0  # dead: XLA removes it
        return x + 1.0

    report = simulate(partir.trace(fn, X).module, "cpu")
    assert report.peak_memory_bytes == 2 * KIB32 == xla_bytes(fn, (X,))
    assert report.transcendentals == 0
    assert all(r.primitive != "exp" for r in report.ops)


def test_scan_body_temporaries_count_while_the_loop_runs():
    ws = jax.ShapeDtypeStruct((4, 128, 128), jnp.float32)

    def fn(x, ws):
        def step(h, w):
            a = h @ w
            return a @ w + a, None  # a is a temporary of the body; a @ w + a the new carry

        return jax.lax.scan(step, x, ws)[0]

    mem = liveness(body(partir.trace(fn, X, ws).module))
    arguments = KIB32 + 4 * 128 * 128 * 4
    # the carry is written in place into the loop's result buffer; `a` is the body's heap
    assert mem.peak_bytes == arguments + KIB32 + KIB32
    assert mem.peak_location.startswith("scan at")
    assert mem.by_category["temporaries"] == KIB32


def test_timeline_peaks_at_the_peak():
    module = partir.trace(residual, X, W).module
    mem = liveness(body(module))
    assert len(mem.timeline) == len(mem.timeline_ops) == len(list(body(module).ops))
    assert max(mem.timeline) == mem.peak_bytes
    assert min(mem.timeline) >= mem.argument_bytes + mem.output_bytes > 0


@pytest.mark.parametrize("donate", [False, True])
def test_cached_result_is_identical(donate):
    block = body(partir.trace(matmuls, X, W, W2).module)
    first = liveness(block, donate=donate)
    assert liveness(block, donate=donate) is first
    assert liveness(block, donate=not donate).donated is not donate


def test_value_bytes_dtypes():
    module = partir.trace(lambda x: x.astype(jnp.bfloat16), X).module
    (arg,) = body(module).args
    assert value_bytes(arg) == KIB32
    (op,) = [o for o in body(module).ops if o.results]
    assert value_bytes(op.results[0]) == KIB32 // 2
