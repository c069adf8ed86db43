"""Randomness inside a partitioned step: PRNG keys as inputs, split and folded in the step,
draws of every kind, and a GPT step with dropout, each equal to `jax.jit` of the
unpartitioned function in both emission modes (see docs/ir.md, "PRNG keys")."""

from __future__ import annotations

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, PartitionSpec

import partir
from partir import ir
from partir.backend import jax_compat
from partir.frontend import random as keys
from partir.rules import get_rule
from partir.simulator import costs
from partir.testing import models, schedules

MODES = ("annotate", "spmd")


@functools.cache
def _mesh() -> jax.sharding.Mesh:
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


def _is_key(x: jax.Array) -> bool:
    return bool(jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key))


def _assert_same(got: object, want: object, *, exact: bool = True) -> None:
    """Same pytree, same leaves; key leaves stay keys and hold the same data."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert _is_key(g) == _is_key(w), (g.dtype, w.dtype)
        if _is_key(w):
            g, w = jax.random.key_data(g), jax.random.key_data(w)
        if exact:
            np.testing.assert_array_equal(np.asarray(g), np.asarray(w))
        else:
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-5)


def _communicating(plan: partir.Plan) -> list:
    return [c for c in plan.collectives() if c.communicates]


# ------------------------------------------------------------------ keys split and folded


def _draws(key, row_keys, x):
    """Keys split and folded in the step; bernoulli, normal, categorical, uniform; a scan
    over per-step keys that returns keys."""
    k1, k2 = jax.random.split(key)
    k3 = jax.random.fold_in(k1, 3)
    mask = jax.random.bernoulli(k3, 0.9, x.shape)
    noise = jax.random.normal(k2, x.shape)
    classes = jax.random.categorical(k2, x)
    per_row = jax.vmap(lambda k: jax.random.uniform(k, (x.shape[1],)))(row_keys)

    def body(carry, k):
        return carry + jax.random.normal(k, x.shape[1:]), jax.random.fold_in(k, 1)

    total, folded = jax.lax.scan(body, jnp.zeros(x.shape[1:]), jax.random.split(k3, 4))
    row_folded = jax.vmap(lambda k: jax.random.fold_in(k, 7))(row_keys)
    return mask * x + noise, classes, k3, per_row * x, total, folded, row_folded


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("key_kind", ["typed", "raw"])
def test_keys_split_and_folded_in_the_step_draw_what_jit_draws(mode, key_kind):
    key = jax.random.key(1) if key_kind == "typed" else jax.random.PRNGKey(1)
    row_keys = jax.random.split(jax.random.key(5), 8)  # a key array sharded on batch
    x = jnp.arange(64.0).reshape(8, 8) / 10
    schedule = [
        partir.ManualPartition({"x": 0, "row_keys": 0}, axis="batch"),
        partir.ManualPartition({"x": 1}, axis="model"),
    ]
    step = partir.partition(schedule, mesh=_mesh(), mode=mode)(_draws)
    plan = step.plan(key, row_keys, x)
    assert plan.in_shardings[1].spec == PartitionSpec("batch")
    got = step(key, row_keys, x)
    _assert_same(got, jax.jit(_draws)(key, row_keys, x))
    # the draws are sharded like their consumers, not replicated; a key array output too
    assert got[0].sharding.spec == PartitionSpec("batch", "model")
    assert _is_key(got[-1]) and got[-1].sharding.spec == PartitionSpec("batch")
    # only categorical's argmax over the model-sharded class dim communicates
    assert [(c.kind, c.axes) for c in _communicating(plan)] == [("all_gather", ("model",))]


def _masked(key, x):
    mask = jax.random.bernoulli(key, 0.3, x.shape)
    return jnp.where(mask, x, 0.0), mask


@pytest.mark.parametrize("mode", MODES)
def test_mask_sharded_on_batch_is_unpartitioned_mask_and_generated_locally(mode):
    key, x = jax.random.key(7), jnp.ones((8, 16, 4))
    schedule = [partir.ManualPartition({"x": 0}, axis="batch")]
    step = partir.partition(schedule, mesh=_mesh(), mode=mode)(_masked)
    plan = step.plan(key, x)
    out, mask = step(key, x)
    _assert_same((out, mask), jax.jit(_masked)(key, x))
    assert mask.sharding.spec == PartitionSpec("batch")
    assert 0.1 < float(np.mean(np.asarray(mask))) < 0.5  # a real draw, not a constant
    # bits generated locally: no communication, and the only slices are of 1-D counters
    # (an all_slice of the mask itself would mean every device drew the whole mask)
    assert _communicating(plan) == []
    assert all(len(c.shape) == 1 for c in plan.collectives()), plan.collectives()


def test_threefry_partitionable_is_on_and_off_still_draws_what_jit_draws():
    # partir relies on jax_threefry_partitionable for *locality* only: JAX's default is on,
    # and either way the expansion is JAX's own implementation, so the numbers match
    assert jax_compat.threefry_partitionable() is True
    key, x = jax.random.key(7), jnp.ones((8, 16, 4))
    schedule = [partir.ManualPartition({"x": 0}, axis="batch")]
    with jax.threefry_partitionable(False):
        for mode in MODES:
            step = partir.partition(schedule, mesh=_mesh(), mode=mode)(_masked)
            _assert_same(step(key, x), jax.jit(_masked)(key, x))
        off = jax.jit(_masked)(key, x)[1]
    on = jax.jit(_masked)(key, x)[1]
    assert not np.array_equal(np.asarray(on), np.asarray(off))  # the flag changes the draw


@pytest.mark.parametrize("shape", [(8,), (3, 5), (2, 1, 7), (4, 8, 16)])
def test_counters_equal_iota_2x32_shape(shape):
    iota_2x32_shape = jax_compat.random_primitives()[2]
    want = jax.jit(lambda: iota_2x32_shape.bind(shape=shape))()
    counters = keys.counters_jaxpr(shape)
    got = jax.jit(lambda: jax.core.eval_jaxpr(counters.jaxpr, counters.consts))()
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(g), np.asarray(w))


# ------------------------------------------------------------------ GPT with dropout


@functools.cache
def _dropout_reference(model: str):
    m = models.get(model, dropout=0.1)
    return m, jax.jit(m.fn)(*m.args)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("model", ["gpt", "gpt_scan"])
def test_gpt_dropout_step_under_bp_mp_z3_equals_unpartitioned(model, mode):
    m, want = _dropout_reference(model)
    assert len(m.args) == 4 and _is_key(m.args[3])
    step = partir.partition(schedules.schedule(model, "BP+MP+Z3"), mesh=_mesh(), mode=mode)(m.fn)
    got = step(*m.args)
    _assert_same(got, want, exact=False)
    # dropout is really on: the loss differs from the same model's without it
    no_dropout = models.get(model)
    loss0 = jax.jit(no_dropout.fn)(*no_dropout.args)[2]
    assert abs(float(want[2]) - float(loss0)) > 1e-4
    # the key input stays a replicated key array
    assert step.plan(*m.args).in_shardings[3].spec == PartitionSpec()


@pytest.mark.parametrize("model", ["gpt", "gpt_scan"])
def test_gpt_dropout_adds_no_communication(model):
    # every mask is drawn where it is used (sharded on batch and heads): dropout adds only
    # local slices of 1-D counters to the collectives of the plain BP+MP+Z3 step
    def collectives(dropout: float) -> tuple[collections.Counter, list]:
        m = models.get(model, abstract=True, dropout=dropout)
        schedule = schedules.schedule(model, "BP+MP+Z3")
        plan = partir.partition(schedule, mesh=_mesh(), mode="spmd")(m.fn).plan(*m.args)
        table = plan.collectives()
        moving = collections.Counter((c.kind, c.axes, c.shape) for c in table if c.communicates)
        return moving, [c for c in table if not c.communicates]

    (plain, plain_slices), (dropped, slices) = collectives(0.0), collectives(0.1)
    assert dropped == plain and sum(plain.values()) > 0
    assert plain_slices == [] and slices and all(len(c.shape) == 1 for c in slices)


def test_gpt_dropout_zero_is_the_plain_model():
    plain, zero = models.get("gpt", abstract=True), models.get("gpt", abstract=True, dropout=0.0)
    assert len(zero.args) == 3
    assert (
        partir.trace(plain.fn, *plain.args).primitive_counts()
        == partir.trace(zero.fn, *zero.args).primitive_counts()
    )
    with pytest.raises(ValueError, match=r"dropout=1.5 must be in \[0, 1\)"):
        models.get("gpt", dropout=1.5)


# ------------------------------------------------------------------ IR, rules, costs


def test_key_types_print_and_parse_back():
    program = partir.trace(
        _draws, jax.random.key(1), jax.random.split(jax.random.key(5), 8), jnp.ones((8, 8))
    )
    text = str(program)
    assert "tensor<8x!partir.key<fry>>" in text
    assert "random_wrap" in text and "[impl=PRNGImpl.threefry2x32]" in text
    assert "random_bits" not in text and "random_split" not in text  # expanded
    parsed = partir.parse(text)
    assert str(parsed) == text
    arg_types = [a.type for a in parsed.function.args]
    assert ir.dtype_of(arg_types[0]) == "key<fry>" and ir.shape_of(arg_types[1]) == (8,)


def test_closed_over_key_is_a_constant_wrapped_again():
    key = jax.random.key(3)

    def f(x):
        return x + jax.random.normal(key, x.shape)

    program = partir.trace(f, jnp.ones(4))
    _assert_same(program.to_jax()(jnp.ones(4)), jax.jit(f)(jnp.ones(4)))


@pytest.mark.parametrize(
    ("primitive", "operands", "results", "params", "rule"),
    [
        ("random_unwrap", [((4, 3), "key<fry>")], [((4, 3, 2), "uint32")], {},
         "ij->ijk {i=4, j=3, k=2} replicate={k}"),
        ("random_wrap", [((4, 2), "uint32")], [((4,), "key<fry>")], {},
         "ij->i {i=4, j=2} replicate={j}"),
        ("threefry2x32", [((), "uint32")] * 2 + [((8, 4), "uint32")] * 2,
         [((8, 4), "uint32")] * 2, {}, "_,_,ij,ij->ij,ij {i=8, j=4}"),
        ("stack", [((8,), "uint32")] * 2, [((8, 2), "uint32")], {"axis": 1},
         "i,i->ij {i=8, j=2} replicate={j}"),
        ("unstack", [((2, 8), "uint32")], [((8,), "uint32")] * 2, {"axis": 0},
         "ij->j,j {i=2, j=8} replicate={i}"),
        ("bitcast_convert_type", [((8, 4), "uint32")], [((8, 4), "float32")], {},
         "ij->ij {i=8, j=4}"),
    ],
)  # fmt: skip
def test_key_rules(primitive, operands, results, params, rule):
    from xdsl.utils.test_value import create_ssa_value

    args = [create_ssa_value(ir.tensor_type(s, d)) for s, d in operands]
    op = ir.PrimOp(
        primitive, args, [ir.tensor_type(s, d) for s, d in results], tuple(params.items())
    )
    assert str(get_rule(op)) == rule


def test_threefry2x32_has_a_cost():
    sig = costs.Signature.of("threefry2x32", [((), "uint32")] * 2 + [((8, 4), "uint32")] * 2,
                             [((8, 4), "uint32")] * 2)  # fmt: skip
    assert costs.compute_cost(sig).flops == costs.THREEFRY_OPS_PER_ELEMENT * 32
    assert "threefry2x32" not in costs.UNKNOWN_PRIMITIVES


# ------------------------------------------------------------------ bad input


def test_non_threefry_key_input_is_named_by_its_path():
    key = jax.random.key(0, impl="rbg")
    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=_mesh())(_masked)
    with pytest.raises(
        partir.errors.UnsupportedDtypeError, match=r"input 'key'.*'rbg'.*threefry2x32"
    ):
        step.plan(key, jnp.ones((8, 4)))


def test_non_threefry_key_made_in_the_step_names_its_line():
    def f(x):
        return x + jax.random.normal(jax.random.key(0, impl="rbg"), x.shape)

    with pytest.raises(
        partir.errors.UnsupportedDtypeError, match=r"'rbg'.*made by random_seed at .*test_random.py"
    ):
        partir.trace(f, jnp.ones(4))
