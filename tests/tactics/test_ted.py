"""Tensor-expert-data parallelism (TED) on the zoo's top-2 MoE transformer: EP across the
data axis, Megatron MP inside each expert, BP on top; and duplicate token dropping."""

import functools

import jax
import numpy as np
import pytest

import partir
from partir.passes.lower_to_spmd import lower_to_spmd
from partir.passes.optimize_collectives import drop_duplicate_tokens, optimize_collectives
from partir.plan.collectives import collective_table
from partir.tactics.presets import BP, EP
from partir.testing import models

MESH = {"batch": 4, "model": 2}
EXPERTS = ("params/**/experts/w_in", "params/**/experts/w_out")
# each expert's MLP split on its hidden dim f: w_in [E, d, f] column-, w_out [E, f, d]
# row-parallel, with the optimizer state the same way
INSIDE = {"params/**/experts/w_in": 2, "params/**/experts/w_out": 1}
INSIDE_STATE = {
    f"opt_state/*/{m}/{sel[len('params/') :]}": d for m in ("mu", "nu") for sel, d in INSIDE.items()
}


def schedule():
    return [
        *BP(),
        *EP(axis="batch", experts=EXPERTS),
        partir.ManualPartition({**INSIDE, **INSIDE_STATE}, axis="model"),
    ]


@functools.cache
def model_and_reference():
    m = models.moe_top2()
    return m, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


def assert_equal(out, ref):
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


def planned(mode):
    m, _ = model_and_reference()
    step = partir.partition(schedule(), mesh=MESH, mode=mode)(m.fn)
    return step, step.plan(*m.args)


def all_to_alls(plan):
    return [c for c in plan.collectives() if c.kind == "all_to_all"]


def without_dropping(plan):
    """The plan's collectives as lowered and optimized without duplicate token dropping."""
    low = lower_to_spmd(plan.propagator, plan.lowered.in_layouts, plan.lowered.out_layouts)
    optimize_collectives(low.module)
    return low.module, collective_table(low.module)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_ted_step_equals_unpartitioned(mode):
    m, ref = model_and_reference()
    step, plan = planned(mode)
    assert_equal(step(*m.args), ref)
    if mode == "spmd":
        # the tokens move between expert groups on the data axis; the experts' weights
        # never do
        a2a = all_to_alls(plan)
        assert a2a and all(c.axes == ("batch",) for c in a2a)
        assert not [
            c for c in plan.collectives() if c.kind == "all_gather" and "experts" in c.reason
        ]


def test_duplicate_token_dropping_divides_all_to_all_bytes_by_tp_degree():
    m, ref = model_and_reference()
    step, plan = planned("spmd")
    before = all_to_alls(plan)
    gathers_before = [c for c in plan.collectives() if c.kind == "all_gather"]
    low = plan.lowered
    rewritten = drop_duplicate_tokens(low.module, low.in_layouts)
    after = all_to_alls(plan)
    tp = MESH["model"]
    # the forward dispatch and combine of both layers, and the backward all-to-alls of
    # values replicated across the model axis, carry duplicates; the backward ones of
    # values split on f or pending a sum over the model axis differ per rank and stay
    assert rewritten >= 2 * models.MoETop2Config().layers
    assert len(after) == len(before)
    (size,) = {c.bytes for c in before}  # one token slab [E, B, C, d] per device
    assert sorted(c.bytes for c in after) == sorted(
        [size // tp] * rewritten + [size] * (len(before) - rewritten)
    )
    gathers = [c for c in plan.collectives() if c.kind == "all_gather"]
    model_gathers = [c for c in gathers if c.axes == ("model",)]
    assert len(gathers) == len(gathers_before) + rewritten
    assert (
        len(model_gathers) == len([c for c in gathers_before if c.axes == ("model",)]) + rewritten
    )
    # optimize_collectives does the same when given the input layouts
    module, _ = without_dropping(plan)
    optimize_collectives(module, plan.lowered.in_layouts)
    again = [c.bytes for c in collective_table(module) if c.kind == "all_to_all"]
    assert sorted(again) == sorted(c.bytes for c in after)
    # the rewritten program runs (plan.jitted is built from plan.lowered) and is exact
    assert_equal(step(*m.args), ref)
    check = plan.check_compiled()
    assert check.all_planned_found and not check.extra, str(check)


def test_no_dropping_where_tokens_differ_across_the_other_axis():
    # BP over both axes: the tokens differ on every device, nothing is duplicated
    m, _ = model_and_reference()
    sched = [*BP(axis="model"), *BP(axis="batch"), *EP(axis="batch", experts=EXPERTS)]
    plan = partir.partition(sched, mesh=MESH, mode="spmd")(m.fn).plan(*m.args)
    before = sum(c.bytes for c in all_to_alls(plan))
    assert before > 0
    assert drop_duplicate_tokens(plan.lowered.module, plan.lowered.in_layouts) == 0
    assert sum(c.bytes for c in all_to_alls(plan)) == before
