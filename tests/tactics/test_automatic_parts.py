"""The parts of `AutomaticPartition`: the propagation snapshot, the decision space, the ILP,
the selectors of the tactics it prints, the search's determinism, progress, and errors."""

import functools
import io

import numpy as np
import pytest

import partir
from partir import ir
from partir.errors import SimulatorError, TacticError, UnknownAxisError
from partir.passes.propagate import Propagator
from partir.simulator import get_hardware
from partir.tactics import REPLICATED, ManualPartition, TacticContext, select
from partir.tactics.auto import (
    Evaluator,
    Progress,
    build_space,
    compact_selectors,
    dimension_classes,
    fit,
    solve,
    zero_entries,
)
from partir.testing import models, schedules

MESH = ir.MeshAttr((("batch", 4), ("model", 2)))


@functools.cache
def traced(name: str, **config):
    m = models.get(name, abstract=True, **config)
    return m, partir.trace(m.fn, *m.args)


def context(name: str, prefix=("BP",), **config) -> TacticContext:
    _, program = traced(name, **config)
    prop = Propagator(program.module, MESH)
    outs = list(program.function.body.block.last_op.operands)
    ctx = TacticContext(
        prop, program.input_paths, list(program.function.args), {}, program.name,
        program.output_paths, outs,
    )  # fmt: skip
    for i, t in enumerate(prefix):
        schedules.tactic(name, t).apply(ctx, i)
    return ctx


# -- Propagator.copy ----------------------------------------------------------------------


def test_propagator_copy_is_a_snapshot():
    ctx = context("gpt")
    prop = ctx.propagator
    before = {v: prop.sharding(v) for v in ctx.values}
    conflicts = len(prop.conflicts)
    snap = prop.copy()
    assert {v: snap.sharding(v) for v in ctx.values} == before
    # change the copy: the original does not move
    q = ctx.inputs[ctx.input_paths.index("params/blocks/0/attn/q")]
    assert snap.seed(q, 1, "model", 5)
    snap.propagate("model", 5, [q])
    snap.pin(ctx.inputs[0], "model", 5)
    assert snap.sharding(q) != before[q]
    assert {v: prop.sharding(v) for v in ctx.values} == before
    assert len(prop.conflicts) == conflicts
    assert not any(a == "model" for _, a in prop.pinned)
    # and the copy propagates exactly as the original would have
    ManualPartition({"params/blocks/0/attn/q": 1}, axis="model").apply(ctx, 5)
    assert {v: prop.sharding(v) for v in ctx.values} == {
        v: snap.sharding(v) for v in ctx.values
    } | {ctx.inputs[0]: prop.sharding(ctx.inputs[0])}


# -- the decision space -----------------------------------------------------------------------


def _space(name, axes=("model",), **config):
    ctx = context(name, **config)
    return ctx, build_space(ctx, axes, dimension_classes(ctx))


def test_unrolled_layers_collapse_to_the_decisions_of_one_layer():
    _, two = _space("gpt", layers=2)
    _, four = _space("gpt", layers=4)
    assert len(two.groups) == len(four.groups)
    assert four.classes > two.classes


def test_megatron_is_two_groups_and_state_follows_its_parameter():
    ctx, space = _space("gpt", layers=2)
    seeds = [{ctx.input_paths[i]: d for i, d in g.seeds} for g in space.groups]
    attn = next(s for s in seeds if s.get("params/blocks/0/attn/q") == 1)
    mlp = next(s for s in seeds if s.get("params/blocks/0/mlp/w_in") == 1)
    for layer in (0, 1):
        for name, dim in (("q", 1), ("k", 1), ("v", 1), ("o", 0)):
            for root in ("params", "opt_state/0/mu", "opt_state/0/nu"):
                assert attn[f"{root}/blocks/{layer}/attn/{name}"] == dim
        assert mlp[f"params/blocks/{layer}/mlp/w_out"] == 0
        assert mlp[f"opt_state/0/nu/blocks/{layer}/mlp/b_in"] == 0
    # the d_model class holds q's dim 0: it excludes the head-sharded group
    q = ctx.input_paths.index("params/blocks/0/attn/q")
    d_model = next(g for g in space.groups if (q, 0) in g.seeds)
    heads = next(g for g in space.groups if (q, 1) in g.seeds)
    assert (min(d_model.index, heads.index), max(d_model.index, heads.index)) in space.exclusive


def test_earlier_decisions_are_left_alone():
    ctx = context("gpt", prefix=("BP", "MP"))
    space = build_space(ctx, ("model", "batch"), dimension_classes(ctx))
    decided = {i for i, v in enumerate(ctx.inputs) if "model" in ctx.propagator.axes_of(v)}
    for g in space.groups:
        if g.axis == "model":
            assert not decided & g.leaves
        for i, d in g.seeds:
            assert not ctx.propagator.sharding(ctx.inputs[i]).dims[d]
    # tokens dim 0 already holds `batch`: no group seeds it on any axis
    tokens = ctx.input_paths.index("batch/tokens")
    assert all((tokens, 0) not in g.seeds for g in space.groups)


def test_a_data_parallel_axis_offers_zero_groups():
    ctx = context("gpt")  # after BP: gradients are pending sums over `batch`
    space = build_space(ctx, ("batch", "model"), dimension_classes(ctx))
    fills = {g.fill: g for g in space.groups if g.fill}
    assert set(fills) == {"zero2", "zero3"} and {g.axis for g in fills.values()} == {"batch"}
    assert (fills["zero3"].index, fills["zero2"].index) in space.exclusive or (
        fills["zero2"].index, fills["zero3"].index) in space.exclusive  # fmt: skip
    prop = ctx.propagator
    zero3 = dict(zero_entries(ctx, prop, "batch", "zero3"))
    zero2 = dict(zero_entries(ctx, prop, "batch", "zero2"))
    q = ctx.paths.index("params/blocks/0/attn/q")
    mu_q = ctx.paths.index("opt_state/0/mu/blocks/0/attn/q")
    out_q = ctx.paths.index("out/0/blocks/0/attn/q")
    assert zero3[q] == zero3[mu_q] == 0 and out_q not in zero3
    assert zero2[q] is None and zero2[out_q] is None and zero2[mu_q] == 0
    # every parameter is covered, each with its state on the same dim
    params = [i for i, p in enumerate(ctx.input_paths) if p.startswith("params/")]
    assert all(i in zero3 for i in params)
    # no ZeRO group where nothing makes gradients pending on the axis
    fresh = build_space(ctx, ("model",), dimension_classes(ctx))
    assert not any(g.fill for g in fresh.groups)


def test_every_candidate_leaf_dim_divides_by_the_axis():
    ctx, space = _space("unet")
    for g in space.groups:
        for i, d in g.seeds:
            assert ir.shape_of(ctx.inputs[i].type)[d] % space.sizes[g.axis] == 0


# -- the ILP ------------------------------------------------------------------------------


def test_ilp_picks_the_best_compatible_set_not_the_best_single():
    # group 1 is best alone but excludes the others; 0 + 2 + 3 compound to better
    base = (10.0, 100.0)
    singles = {0: (6.0, 80.0), 1: (5.0, 60.0), 2: (8.0, 90.0), 3: (9.0, 95.0)}
    model = fit(4, base, singles, {})
    res = solve(model, [(0, 1), (1, 2), (1, 3)])
    assert res.status == "optimal"
    assert res.chosen == frozenset({0, 2, 3})
    assert res.objective == pytest.approx(10.0 * 0.6 * 0.8 * 0.9)
    assert res.predicted_memory_bytes == pytest.approx(100.0 - 20 - 10 - 5)
    # the model is exact where it was measured
    for g, (t, mem) in singles.items():
        assert model.predict(frozenset({g})) == pytest.approx((t, mem))


def test_ilp_respects_the_memory_limit_and_pair_terms():
    base = (10.0, 100.0)
    singles = {0: (6.0, 80.0), 1: (5.0, 60.0), 2: (8.0, 90.0)}
    pairs = {(0, 2): (7.0, 70.0)}  # 0 and 2 together are worse than the model thought
    model = fit(3, base, singles, pairs)
    assert model.predict(frozenset({0, 2})) == pytest.approx((7.0, 70.0))
    assert model.predict(frozenset({1})) == pytest.approx((5.0, 60.0))
    res = solve(model, [(0, 1)])
    assert res.chosen == frozenset({1, 2})
    tight = solve(model, [(0, 1)], memory_limit=55.0)
    assert tight.predicted_memory_bytes <= 55.0
    assert tight.chosen == frozenset({1, 2})
    impossible = solve(model, [(0, 1)], memory_limit=10.0)
    assert impossible.status == "infeasible" and not impossible.chosen
    by_memory = solve(model, [(0, 1)], objective="memory")
    assert by_memory.chosen == frozenset({1, 2})
    assert by_memory.objective == pytest.approx(50.0)


# -- the tactics printed --------------------------------------------------------------------


def test_compact_selectors_select_exactly_the_same_leaves():
    paths = [
        "params/blocks/0/w", "params/blocks/1/w", "params/blocks/2/w", "params/blocks/0/b",
        "opt_state/0/mu/blocks/0/w", "opt_state/0/mu/blocks/1/w", "opt_state/0/nu/blocks/0/w",
        "opt_state/0/nu/blocks/1/w", "out/0/blocks/0/w",
    ]  # fmt: skip
    exact = {
        "params/blocks/0/w": 1, "params/blocks/1/w": 1, "opt_state/0/mu/blocks/0/w": 1,
        "opt_state/0/mu/blocks/1/w": 1, "opt_state/0/nu/blocks/0/w": 1,
        "opt_state/0/nu/blocks/1/w": 1, "out/0/blocks/0/w": REPLICATED,
    }  # fmt: skip
    out = compact_selectors(exact, paths)
    assert len(out) < len(exact)
    chosen = {}
    for selector, dim in out.items():
        for i in select(selector, paths):
            assert chosen.setdefault(paths[i], dim) == dim
    assert chosen == exact  # params/blocks/2/w (not chosen) is not selected


# -- determinism, methods, progress -----------------------------------------------------------


def _auto_plan(tactic, name="gpt", mesh=(("batch", 4), ("model", 2))):
    m, _ = traced(name)
    step = partir.partition(
        [schedules.tactic(name, "BP"), tactic], mesh=dict(mesh), hardware="h100"
    )
    return step(m.fn).plan(*m.args)


@pytest.mark.parametrize("method", ["ilp", "search", "auto"])
def test_each_method_is_deterministic_and_never_worse_than_the_prefix(method):
    a = _auto_plan(partir.AutomaticPartition(["model"], method=method, seed=3))
    b = _auto_plan(partir.AutomaticPartition(["model"], method=method, seed=3))
    assert list(a.tactics_found) == list(b.tactics_found)
    report = a.records[1].report
    assert report.method == method
    assert report.step_time_s <= report.prefix_step_time_s
    assert (report.ilp_bound is None) == (method == "search")


def test_an_evaluation_budget_caps_the_simulations():
    plan = _auto_plan(partir.AutomaticPartition(["model"], budget={"evaluations": 3}))
    assert plan.records[1].report.evaluations <= 3


def test_progress_line_is_written_only_when_enabled():
    stream = io.StringIO()
    p = Progress("AutomaticPartition(model)", "time", stream=stream, enabled=True)
    p.update(3, 10, 0.0012, 0.001)
    p.close()
    assert (
        "AutomaticPartition(model): 3/10 candidates, best 1.200 ms, ILP bound 1.000 ms"
        in stream.getvalue()
    )
    quiet = io.StringIO()
    q = Progress("x", "time", stream=quiet)  # a StringIO is not a terminal
    q.update(1, None, 1.0, None)
    q.close()
    assert quiet.getvalue() == ""


def test_evaluator_scores_are_cached_and_best_is_the_minimum():
    ctx = context("mlp")
    space = build_space(ctx, ("model",), dimension_classes(ctx))
    ev = Evaluator(ctx, space, 1, get_hardware("h100"), float("inf"), "time")
    scores = [ev.evaluate(frozenset({g})) for g in range(len(space.groups))]
    n = ev.evaluations
    ev.evaluate(frozenset({0}))
    assert ev.evaluations == n
    assert ev.best()[1].step_time_s == min(s.step_time_s for s in scores)
    assert np.isfinite([s.step_time_s for s in scores]).all()


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"axes": []}, {"axes": ["model", "model"]}, {"axes": "model", "objective": "speed"},
        {"axes": "model", "method": "mcts"}, {"axes": "model", "memory_limit": -1},
        {"axes": "model", "budget": 0}, {"axes": "model", "budget": {"minutes": 1}},
        {"axes": "model", "seed": 1.5},
    ],
)  # fmt: skip
def test_bad_arguments_are_tactic_errors(kwargs):
    with pytest.raises(TacticError):
        partir.AutomaticPartition(**kwargs)


def test_unknown_axis_and_unknown_hardware_are_named():
    with pytest.raises(UnknownAxisError, match="'modle'"):
        _auto_plan(partir.AutomaticPartition(["modle"]))
    with pytest.raises(SimulatorError):
        partir.partition([partir.AutomaticPartition("model")], hardware="h1000")


def test_repr_shows_what_differs_from_the_defaults():
    t = partir.AutomaticPartition("model", memory_limit=2**30, seed=2)
    assert repr(t) == "AutomaticPartition(['model'], memory_limit=1073741824, seed=2)"
    assert t.axes == ("model",)


def test_the_judge_is_partition_hardware_unless_the_tactic_names_one():
    m, _ = traced("mlp")
    mesh = {"batch": 4, "model": 2}
    for tactic, partition_hw, judge in (
        (partir.AutomaticPartition("model"), "h100", "h100"),
        (partir.AutomaticPartition("model", hardware="tpu-v5p"), "h100", "tpu-v5p"),
        (partir.AutomaticPartition("model"), "cpu", "cpu"),
    ):
        step = partir.partition(
            [schedules.tactic("mlp", "BP"), tactic], mesh=mesh, hardware=partition_hw
        )
        report = step(m.fn).plan(*m.args).records[1].report
        assert report.hardware == judge
        assert report.memory_limit_bytes == get_hardware(judge).memory_bytes
