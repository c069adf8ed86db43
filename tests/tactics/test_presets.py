"""The preset tactics (`partir.tactics.presets`): they build, plan on the zoo, compute the
unpartitioned step's values in both emission modes, accept other naming, and shard the
optimizer state with its parameter."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import partir
from partir.errors import SelectorError, TacticError
from partir.tactics.presets import BP, EMB, EP, MP, SP, Z2, Z3
from partir.testing import models, schedules

# gpt_scan's stacked layer dim (2) does not divide by 4: ZeRO splits its dim 1 instead
SCAN_ZERO = {"blocks": 1, "embed": 0, "final_ln": 0, "head": 0}


@functools.cache
def mesh():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


def plan_of(model: str, schedule, mode: str = "spmd", **config):
    m = models.get(model, abstract=True, **config)
    return partir.partition(schedule, mesh=mesh(), mode=mode)(m.fn).plan(*m.args)


# -- every preset builds and plans on the zoo models it fits ------------------------------

PLANS = {
    "gpt-BP": ("gpt", lambda: [*BP()]),
    "gpt-MP": ("gpt", lambda: [*MP()]),
    "gpt-BP+MP+SP": ("gpt", lambda: [*BP(), *MP(), *SP()]),
    "gpt-BP+MP+Z2": ("gpt", lambda: [*BP(), *MP(), *Z2()]),
    "gpt-BP+MP+Z3": ("gpt", lambda: [*BP(), *MP(), *Z3()]),
    "gpt-EMB": ("gpt", lambda: [*EMB()]),
    "gpt_scan-BP+MP+Z3": ("gpt_scan", lambda: [*BP(), *MP(stacked=True), *Z3(dims=SCAN_ZERO)]),
    "gpt_scan-MP+SP+EMB": ("gpt_scan", lambda: [*MP(stacked=True), *SP(), *EMB()]),
    "gpt_scan-Z2": ("gpt_scan", lambda: [*Z2(dims=SCAN_ZERO)]),
    "moe-BP+EP": ("moe", lambda: [*BP(), *EP()]),
    "moe-BP+EP(batch)": ("moe", lambda: [*BP(), *EP(axis="batch")]),
    "moe-MP(experts)": (
        "moe",
        lambda: [*MP(column=("params/experts/w_in",), row=("params/experts/w_out",), column_bias=(), layer_dim_offset=1)],
    ),
    "mlp-BP+Z3": ("mlp", lambda: [*BP(), *Z3()]),
    "unet-BP+Z2": ("unet", lambda: [*BP(), *Z2(dim=-1)]),
}  # fmt: skip


@pytest.mark.parametrize("case", PLANS)
def test_presets_plan_on_the_zoo(case):
    model, build = PLANS[case]
    schedule = build()
    assert all(isinstance(t, partir.ManualPartition) for t in schedule)
    plan = plan_of(model, schedule)
    assert any(s.spec != P() for s in jax.tree.leaves(plan.in_shardings))
    assert plan.collectives() is not None  # lowers


def test_presets_are_lists_of_manual_partitions():
    for preset in (BP, MP, SP, Z2, Z3, EMB, EP):
        tactics = preset()
        assert isinstance(tactics, list) and tactics
        assert all(isinstance(t, partir.ManualPartition) for t in tactics)
    assert BP()[0].axis == "batch" and Z2()[0].axis == "batch" and Z3()[0].axis == "batch"
    assert MP()[0].axis == "model" and SP()[0].axis == "model" and EMB()[0].axis == "model"
    assert EP()[0].axis == "model" and EP(axis="batch")[0].axis == "batch"


@pytest.mark.parametrize(
    ("model", "ours", "reference"),
    [
        # the zoo's hand-written ZeRO layouts put every leaf on dim 0; the presets' default
        # is each leaf's largest divisible dim, so ask for dim 0
        ("gpt", lambda: [*BP(), *MP(), *Z3(dim=0)], "BP+MP+Z3"),
        ("gpt", lambda: [*BP(), *MP(), *Z2(dim=0)], "BP+MP+Z2"),
        ("gpt", lambda: [*EMB()], "EMB"),
        ("gpt_scan", lambda: [*BP(), *MP(stacked=True)], "BP+MP"),
    ],
)
def test_presets_match_the_reference_schedules(model, ours, reference):
    """The defaults reproduce the zoo's hand-written layouts (`partir.testing.schedules`)."""
    got = plan_of(model, ours())
    want = plan_of(model, schedules.schedule(model, reference))
    assert got.in_shardings == want.in_shardings
    assert got.out_shardings == want.out_shardings


# -- numerics: partitioned == unpartitioned, both modes -------------------------------------

NUMERIC = {
    "gpt-BP+MP+SP": ("gpt", {"layers": 1}, lambda: [*BP(), *MP(), *SP()]),
    "gpt-BP+MP+EMB+Z3": ("gpt", {"layers": 1}, lambda: [*BP(), *MP(), *EMB(), *Z3()]),
    "mlp-BP+MP+Z2": (
        "mlp",
        {},
        lambda: [
            *BP(),
            *MP(
                column={"params/layers/0/w": 1, "params/layers/2/w": 1},
                row=("params/layers/1/w",),
                column_bias=("params/layers/0/b", "params/layers/2/b"),
            ),
            *Z2(),
        ],
    ),
    "moe-BP+EP": ("moe", {}, lambda: [*BP(), *EP()]),
    "moe-BP+EP(batch)": ("moe", {}, lambda: [*BP(), *EP(axis="batch")]),
    "gpt_scan-BP+MP+SP+Z3": (
        "gpt_scan",
        {},
        lambda: [*BP(), *MP(stacked=True), *SP(), *Z3(dims=SCAN_ZERO)],
    ),
}


@functools.cache
def reference(model: str, config: tuple):
    m = models.get(model, **dict(config))
    return m, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


def assert_same(out, ref):
    assert jax.tree.structure(out) == jax.tree.structure(ref)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize("case", NUMERIC)
def test_partitioned_step_equals_unpartitioned(case, mode):
    model, config, build = NUMERIC[case]
    m, ref = reference(model, tuple(sorted(config.items())))
    step = partir.partition(build(), mesh=mesh(), mode=mode)(m.fn)
    assert_same(step(*m.args), ref)


# -- optimizer state follows its parameter ------------------------------------------------


def test_optimizer_state_follows_its_parameter():
    plan = plan_of("gpt", [*MP(), *EMB()])
    params, opt_state, _ = plan.in_shardings
    adam = opt_state[0]
    for moment in (adam.mu, adam.nu):
        assert moment["blocks"][0]["attn"]["q"].spec == params["blocks"][0]["attn"]["q"].spec
        assert moment["blocks"][1]["mlp"]["w_out"].spec == P("model")
        assert moment["embed"]["tokens"].spec == P("model")
    assert params["blocks"][0]["attn"]["q"].spec == P(None, "model")

    tactic = MP()[0]
    assert tactic.inputs["opt_state/*/mu/**/attn/q"] == 1
    assert tactic.inputs["opt_state/*/nu/**/mlp/w_out"] == 0
    assert MP(stacked=True)[0].inputs["opt_state/*/nu/**/mlp/w_out"] == 1
    assert EP()[0].inputs["opt_state/*/mu/experts/w_in"] == 0
    assert EMB()[0].inputs["opt_state/*/nu/embed/tokens"] == 0


def test_with_optimizer_state_false_seeds_only_parameters():
    for tactic in (
        MP(with_optimizer_state=False)[0],
        EMB(with_optimizer_state=False)[0],
        EP(with_optimizer_state=False)[0],
    ):
        assert all(s.startswith("params/") for s in tactic.inputs)


def test_optimizer_state_needs_a_params_root():
    with pytest.raises(TacticError, match="params_root"):
        MP(column=("w/q",), row=(), column_bias=())


# -- keyword overrides on a custom function with other names ------------------------------


def custom_step(weights, state, data):
    """Momentum SGD on a tiny MoE-flavoured model with non-zoo names."""

    def loss(w):
        x = w["emb"][data["ids"]]  # [B, S, 16]
        x = x + jnp.tanh(x @ w["up"] + w["up_b"]) @ w["down"]
        e = jnp.einsum("bsd,edf->bsef", x, w["ex"]).sum(axis=2)
        return jnp.mean((e - data["y"]) ** 2)

    g = jax.grad(loss)(weights)
    m = jax.tree.map(lambda m, g: 0.9 * m + g, state["m"], g)
    new = jax.tree.map(lambda w, m: w - 0.01 * m - 0.001 * w, weights, m)
    return new, {"m": m}, loss(weights)


def custom_args():
    k = iter(jax.random.split(jax.random.key(1), 8))
    weights = {
        "emb": jax.random.normal(next(k), (32, 16)) * 0.1,
        "up": jax.random.normal(next(k), (16, 32)) * 0.1,
        "up_b": jnp.zeros((32,)),
        "down": jax.random.normal(next(k), (32, 16)) * 0.1,
        "ex": jax.random.normal(next(k), (4, 16, 8)) * 0.1,
    }
    state = {"m": jax.tree.map(lambda w: jnp.full_like(w, 0.01), weights)}
    data = {
        "ids": jax.random.randint(next(k), (8, 16), 0, 32),
        "y": jax.random.normal(next(k), (8, 16, 8)),
    }
    return weights, state, data


STATE = {"params_root": "weights", "optimizer_state": ("state/m",)}
CUSTOM = [
    *BP(inputs={"data": 0}),
    *MP(column=("weights/up",), row={"weights/down": 0}, column_bias=("weights/up_b",), **STATE),
    *SP(inputs={"data/ids": 1, "data/y": 1}),
]
CUSTOM_ZERO = [
    *BP(inputs={"data": 0}),
    *EP(axis="model", experts="weights/ex", **STATE),
    *EMB(axis="model", table="weights/emb", dim=0, with_optimizer_state=False),
    *Z3(params="weights", optimizer_state=("state/m",), dims={"up": 1, "down": 0, "ex": 1}),
]


def test_keyword_overrides_on_a_custom_function():
    args = custom_args()
    plan = partir.partition(CUSTOM, mesh=mesh(), mode="spmd")(custom_step).plan(*args)
    weights, state, data = plan.in_shardings
    assert weights["up"].spec == P(None, "model")
    assert weights["up_b"].spec == P("model")
    assert weights["down"].spec == P("model")
    assert state["m"]["up"].spec == P(None, "model")  # state follows, under other names
    assert state["m"]["down"].spec == P("model")
    assert data["ids"].spec == P("batch", "model")

    plan = partir.partition(CUSTOM_ZERO, mesh=mesh(), mode="spmd")(custom_step).plan(*args)
    weights, state, _ = plan.in_shardings
    assert weights["ex"].spec == P("model", "batch")
    assert state["m"]["ex"].spec == P("model", "batch")
    assert weights["up"].spec == P(None, "batch")
    # dims= overrides the default for the sub-paths it names; the rest (emb, already on
    # `model` by EMB) still get Z3's default: their largest divisible dim
    assert weights["emb"].spec[0] == ("model", "batch")

    z2 = [
        *BP(inputs={"data": 0}),
        *Z2(dims={"up": 1, "down": 0}, optimizer_state=("state/m",), replicated=("weights", "out/0")),
    ]  # fmt: skip
    plan = partir.partition(z2, mesh=mesh(), mode="spmd")(custom_step).plan(*args)
    weights, state, _ = plan.in_shardings
    assert state["m"]["up"].spec == P(None, "batch")
    assert all(s.spec == P() for s in jax.tree.leaves(weights))
    assert all(s.spec == P() for s in jax.tree.leaves(plan.out_shardings[0]))


@pytest.mark.parametrize("schedule", [CUSTOM, CUSTOM_ZERO], ids=["BP+MP+SP", "BP+EP+EMB+Z3"])
def test_custom_function_numerics(schedule):
    args = custom_args()
    want = jax.jit(custom_step)(*args)
    got = partir.partition(schedule, mesh=mesh(), mode="spmd")(custom_step)(*args)
    assert_same(got, jax.tree.map(np.asarray, want))


def test_zoo_defaults_name_the_zoo():
    """On a function with other names the defaults are an error, not a silent no-op."""
    args = custom_args()
    with pytest.raises(SelectorError):
        partir.partition(MP(), mesh=mesh())(custom_step).plan(*args)


# -- what EP gives on the MoE ---------------------------------------------------------------


def test_expert_parallel_collectives_on_moe():
    """EP on the data axis after BP is GShard's dispatch: one all-to-all of the tokens into
    the experts and one back, in the forward and again in the backward; the expert weights
    and their gradients never move.

    On the model axis the tokens are already on every device of it: the experts run
    locally and the combine is a pending sum, all-reduced; no all-to-all.
    """
    plan = plan_of("moe", [*BP(), *EP()])
    kinds = {c.kind for c in plan.collectives()}
    assert "all_to_all" not in kinds
    plan = plan_of("moe", [*BP(), *EP(axis="batch")])
    c = models.get("moe", abstract=True).config
    n = plan.mesh.shape["batch"]
    comm = [x for x in plan.collectives() if x.kind != "all_slice"]
    dispatch = [x for x in comm if x.kind == "all_to_all"]
    # the [E, B, C, d] token slab, per device: all experts' slots of B/n groups, or E/n
    # experts' slots of all groups (the same size)
    slab = c.experts * (c.batch // n) * c.capacity * c.d_model * 4
    assert len(dispatch) == 4
    assert {x.bytes for x in dispatch} == {slab} and {x.axes for x in dispatch} == {("batch",)}
    expert_bytes = c.experts * c.d_model * c.d_ff * 4
    assert not any(x.kind == "all_gather" for x in comm)
    assert all(x.bytes * n < expert_bytes for x in comm if x.kind != "all_to_all")


# -- other naming: dims= overrides, skipped leaves, the errors that name the argument --------


def zero_plan(*zero, with_bp=True):
    schedule = [*BP(inputs={"data": 0}), *zero] if with_bp else list(zero)
    return partir.partition(schedule, mesh=mesh(), mode="spmd")(custom_step).plan(*custom_args())


def test_zero_default_is_each_leafs_largest_divisible_dim():
    weights, state, _ = zero_plan(*Z3(params="weights", optimizer_state=("state/m",))).in_shardings
    # [32, 16] -> 0, [16, 32] -> 1, [4, 16, 8] -> 1, [32] -> 0
    assert weights["emb"].spec == P("batch")
    assert weights["up"].spec == P(None, "batch")
    assert weights["ex"].spec == P(None, "batch")
    assert weights["up_b"].spec == P("batch")
    assert state["m"]["up"].spec == P(None, "batch")
    # a preferred dim is used where it divides
    weights, _, _ = zero_plan(
        *Z3(dim=0, params="weights", optimizer_state=("state/m",))
    ).in_shardings
    assert weights["up"].spec == P("batch") and weights["ex"].spec == P("batch")


def test_zero_dims_override_the_default_per_sub_path_later_wins():
    kw = {"params": "weights", "optimizer_state": ("state/m",)}
    weights, state, _ = zero_plan(*Z3(dims={"up": 0, "up_b": None}, **kw)).in_shardings
    assert weights["up"].spec == P("batch")  # overridden
    assert state["m"]["up"].spec == P("batch")  # under every root
    assert weights["up_b"].spec == P()  # None: left alone, the rest still sharded
    assert weights["emb"].spec == P("batch") and weights["down"].spec == P("batch")
    # later entries win: the whole tree on dim 1 except `emb` back on dim 0
    weights, _, _ = zero_plan(*Z3(dims={"": -1, "emb": 0, "up_b": 0}, **kw)).in_shardings
    assert weights["emb"].spec == P("batch") and weights["down"].spec == P(None, "batch")
    assert weights["ex"].spec == P(None, None, "batch")
    # a pinned sub-tree is replicated, not a no-op for the others
    weights, _, _ = zero_plan(*Z3(dims={"up_b": partir.REPLICATED}, **kw)).in_shardings
    assert weights["up_b"].spec == P() and weights["up"].spec == P(None, "batch")


def test_zero_explicit_dims_that_do_not_divide_raise():
    with pytest.raises(partir.errors.DimensionError, match="rank 3"):
        zero_plan(*Z3(dims={"ex": 3}, params="weights", optimizer_state=("state/m",)))
    with pytest.raises(SelectorError, match="dims="):
        zero_plan(*Z3(dims={"nope": 0}, params="weights", optimizer_state=("state/m",)))
    with pytest.raises(SelectorError, match="optimizer_state="):
        zero_plan(*Z3(params="weights"))
    with pytest.raises(TacticError, match="dims="):
        Z3(dims=[("up", 0)])


def test_z2_skips_and_reports_leaves_with_no_divisible_dim():
    """On an 8-way axis the [4, 16, 8] experts split (16), a [4]-long leaf would not."""

    def tiny(weights, state, data):
        g = jax.grad(lambda w: jnp.mean((data @ w["w"] + w["b"]) ** 2))(weights)
        m = jax.tree.map(lambda m, g: 0.9 * m + g, state["m"], g)
        return jax.tree.map(lambda w, m: w - 0.01 * m, weights, m), {"m": m}

    weights = {"w": jnp.ones((16, 3)), "b": jnp.zeros((3,))}
    state = {"m": jax.tree.map(jnp.zeros_like, weights)}
    data = jnp.ones((8, 16))
    schedule = [*BP(inputs={"data": 0}), *Z2(optimizer_state=("state/m",), replicated=("weights",))]
    plan = partir.partition(schedule, mesh=mesh())(tiny).plan(weights, state, data)
    record = plan.records[1]
    assert record.skipped == [("state/m/b", 12)]
    assert any("state/m/b" in n and "12 B" in n for n in record.notes)
    assert plan.in_shardings[1]["m"]["w"].spec == P("batch")
    assert "skipped" not in repr(plan.records[0].notes)
    strict = [*BP(inputs={"data": 0}), *Z2(optimizer_state=("state/m",), replicated=("weights",), strict=True)]  # fmt: skip
    with pytest.raises(partir.errors.DimensionError, match="state/m/b"):
        partir.partition(strict, mesh=mesh())(tiny).plan(weights, state, data)


def test_bp_without_a_batch_argument_says_how_to_name_the_data():
    with pytest.raises(SelectorError, match=r"BP\(inputs=") as e:
        partir.partition(BP(), mesh=mesh())(custom_step).plan(*custom_args())
    assert "called `batch`" in str(e.value) and "default" in str(e.value)
    with pytest.raises(TacticError, match="mapping"):
        BP(inputs=("data",))


def test_mp_errors_name_the_argument_to_pass():
    with pytest.raises(SelectorError, match=r"`column=` argument \(the default") as e:
        partir.partition(MP(with_optimizer_state=False), mesh=mesh())(custom_step).plan(*custom_args())  # fmt: skip
    assert "LogicalPartition" in str(e.value)
    custom = MP(column=("weights/up",), row=("weights/dwn",), column_bias=(), **STATE)
    with pytest.raises(SelectorError, match=r"`row=` argument; pass MP\(row=") as e:
        partir.partition(custom, mesh=mesh())(custom_step).plan(*custom_args())
    assert "'weights/down'" in str(e.value)  # did you mean
    with pytest.raises(TacticError, match="column="):
        MP(column=3)
    with pytest.raises(TacticError, match="row="):
        MP(row=[1, 2])
    with pytest.raises(SelectorError, match=r"EP\(experts="):
        partir.partition(EP(with_optimizer_state=False), mesh=mesh())(custom_step).plan(*custom_args())  # fmt: skip
    with pytest.raises(SelectorError, match=r"SP\(inputs="):
        partir.partition(SP(), mesh=mesh())(custom_step).plan(*custom_args())
    with pytest.raises(SelectorError, match="with_optimizer_state=False"):
        MPs = MP(column=("weights/up",), row=(), column_bias=(), params_root="weights")
        partir.partition(MPs, mesh=mesh())(custom_step).plan(*custom_args())


@pytest.mark.parametrize(
    ("selector", "hint"),
    [
        ("weights.up", "write 'weights/up'"),
        ("weights['up']", "write 'weights/up'"),
        ("weights/upp", "Did you mean 'weights/up'"),
        ("wieghts/down", "Did you mean 'weights/down'"),
    ],
)
def test_selector_help(selector, hint):
    tactic = partir.ManualPartition({selector: 0}, axis="model")
    with pytest.raises(SelectorError, match=re.escape(hint)):
        partir.partition([tactic], mesh=mesh())(custom_step).plan(*custom_args())
