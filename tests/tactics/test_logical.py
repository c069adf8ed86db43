"""`partir.LogicalPartition`: logical axis names (Flax metadata or patterns) mapped to mesh
axes by MaxText-style rules; `partir.logical_axes` reading Flax NNX and Linen metadata."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import partir
from partir.errors import SelectorError, TacticError
from partir.tactics.logical import mesh_axes, normalize_rules
from partir.tactics.presets import BP


@functools.cache
def mesh():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


def step(params, opt_state, x):
    """A two-layer MLP 'step' whose optimizer state mirrors the params (like optax's mu)."""
    h = jnp.tanh(x @ params["up"]["w"] + params["up"]["b"])
    loss = jnp.mean((h @ params["down"]["w"]) ** 2)
    grads = jax.grad(lambda p: jnp.mean((jnp.tanh(x @ p["up"]["w"] + p["up"]["b"]) @ p["down"]["w"]) ** 2))(params)  # fmt: skip
    mu = jax.tree.map(lambda m, g: 0.9 * m + 0.1 * g, opt_state["mu"], grads)
    new = jax.tree.map(lambda p, m: p - 0.1 * m, params, mu)
    return new, {"mu": mu}, loss


def args():
    k = iter(jax.random.split(jax.random.key(0), 4))
    params = {
        "up": {"w": jax.random.normal(next(k), (8, 16)), "b": jnp.zeros((16,))},
        "down": {"w": jax.random.normal(next(k), (16, 8))},
    }
    return params, {"mu": jax.tree.map(jnp.zeros_like, params)}, jax.random.normal(next(k), (8, 8))


LOGICAL = {"up/w": ("embed", "mlp"), "up/b": ("mlp",), "down/w": ("mlp", "embed")}
RULES = {"mlp": "model", "embed": None, "batch": "batch"}


def logical_schedule(**kw):
    return [
        *BP(inputs={"x": 0}),
        partir.LogicalPartition(RULES, axis="model", logical=LOGICAL, optimizer_state=("opt_state/mu",), **kw),
    ]  # fmt: skip


def test_rules_shard_the_named_dims_and_the_state_follows():
    with pytest.warns(UserWarning, match="'batch'"):  # no parameter is named `batch`
        plan = partir.partition(logical_schedule(), mesh=mesh(), mode="spmd")(step).plan(*args())
    params, state, _ = plan.in_shardings
    assert params["up"]["w"].spec == P(None, "model")
    assert params["up"]["b"].spec == P("model")
    assert params["down"]["w"].spec == P("model")
    assert state["mu"]["up"]["w"].spec == P(None, "model")
    notes = plan.records[1].notes
    assert any("'batch'" in n and "match no logical name" in n for n in notes)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_logical_partition_numerics(mode):
    a = args()
    with pytest.warns(UserWarning):
        got = partir.partition(logical_schedule(), mesh=mesh(), mode=mode)(step)(*a)
    want = jax.jit(step)(*a)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-5, atol=1e-6)


def test_unknown_logical_names_are_reported():
    rules = {"embed": None}  # `mlp` has no rule
    tactic = partir.LogicalPartition(rules, axis="model", logical=LOGICAL, with_optimizer_state=False)  # fmt: skip
    with pytest.warns(UserWarning, match="'mlp' have no rule"):
        plan = partir.partition([tactic], mesh=mesh())(step).plan(*args())
    assert any("'mlp'" in n and "no rule" in n for n in plan.records[0].notes)
    assert all(s.spec == P() for s in jax.tree.leaves(plan.in_shardings[0]))


def test_an_unused_rule_lists_the_logical_names():
    rules = {"mlpp": "model", "mlp": "model", "embed": None}
    tactic = partir.LogicalPartition(rules, axis="model", logical=LOGICAL, with_optimizer_state=False)  # fmt: skip
    with pytest.warns(UserWarning, match="'mlpp'.*'embed', 'mlp'"):
        partir.partition([tactic], mesh=mesh())(step).plan(*args())


def test_a_pattern_matching_nothing_names_the_argument():
    tactic = partir.LogicalPartition(RULES, axis="model", logical={"upp/w": ("embed", "mlp")})
    with pytest.raises(SelectorError, match="params_root") as e:
        partir.partition([tactic], mesh=mesh())(step).plan(*args())
    assert "Did you mean 'params/up/w'" in str(e.value)
    # the optimizer state under the default optax roots does not exist here
    tactic = partir.LogicalPartition(RULES, axis="model", logical=LOGICAL)
    with pytest.raises(SelectorError, match="with_optimizer_state=False"):
        partir.partition([tactic], mesh=mesh())(step).plan(*args())


def test_without_names_the_error_says_where_to_get_them():
    with pytest.raises(TacticError, match="logical_axes"):
        partir.partition([partir.LogicalPartition(RULES, axis="model")], mesh=mesh())(step).plan(*args())  # fmt: skip


@pytest.mark.parametrize(
    "rules",
    [{"mlp": 3}, {"mlp": ("model", 1)}, [("mlp",)], 5],
    ids=["int", "tuple-with-int", "short-pair", "not-rules"],
)
def test_bad_rules_raise(rules):
    with pytest.raises(TacticError):
        partir.LogicalPartition(rules, axis="model", logical=LOGICAL)


def test_bad_logical_raise():
    with pytest.raises(TacticError, match="logical names"):
        partir.LogicalPartition(RULES, axis="model", logical={"up/w": [1, 2]})
    with pytest.raises(TacticError):
        partir.LogicalPartition(RULES, axis="model", logical=["up/w"])


def test_maxtext_pairs_try_axes_in_order():
    rules = normalize_rules([("embed", "fsdp"), ("embed", "model"), ("mlp", "model"), ("kv", None)])
    assert rules == {"embed": ("fsdp", "model"), "mlp": ("model",), "kv": ()}
    # `embed` takes fsdp, `mlp` model; a second `embed` dim falls back to model when free
    assert mesh_axes(("embed", "mlp"), rules) == ["fsdp", "model"]
    assert mesh_axes(("embed", "embed"), rules) == ["fsdp", "model"]
    assert mesh_axes(("mlp", "embed", None), rules) == ["model", "fsdp", None]


@given(
    st.lists(st.sampled_from(["a", "b", "c", None]), max_size=5),
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.lists(st.sampled_from(["x", "y", "z"]), max_size=3, unique=True).map(tuple),
    ),
)
def test_mesh_axes_never_reuses_an_axis_and_follows_the_rules(names, rules):
    out = mesh_axes(tuple(names), rules)
    assert len(out) == len(names)
    taken = [a for a in out if a is not None]
    assert len(taken) == len(set(taken))
    for name, axis in zip(names, out, strict=True):
        if axis is not None:
            assert axis in rules[name]
        elif name is not None:
            # left unsharded only if each of its axes was taken by an earlier dim
            assert all(a in taken for a in rules.get(name, ()))


def test_logical_axes_reads_nnx_metadata():
    from flax import nnx

    class M(nnx.Module):
        def __init__(self, rngs):
            init = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", "mlp"))
            self.up = nnx.Linear(8, 16, kernel_init=init, rngs=rngs)
            self.down = nnx.Linear(16, 8, rngs=rngs)  # no metadata: left out

    with nnx.use_eager_sharding(False):
        model = M(nnx.Rngs(0))
    names = partir.logical_axes(nnx.split(model, nnx.Param)[1])
    assert names == {"up/kernel": ("embed", "mlp")}


def test_logical_axes_reads_linen_boxes():
    import flax.linen as nn

    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            k = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
            return nn.Dense(16, kernel_init=k, name="up")(x)

    boxed = M().init(jax.random.key(0), jnp.zeros((1, 8)))
    assert partir.logical_axes(boxed) == {"params/up/kernel": ("embed", "mlp")}


def test_overlapping_patterns_later_wins():
    """``up`` names the module (its weight and bias); the later ``up/b`` decides the bias,
    which the first pattern's 2 names would not fit (rank 1)."""
    logical = {"up": ("embed", "mlp"), "up/b": ("mlp",), "down/w": ("mlp", "embed")}
    tactic = partir.LogicalPartition(RULES, axis="model", logical=logical, optimizer_state=("opt_state/mu",))  # fmt: skip
    with pytest.warns(UserWarning):
        plan = partir.partition([*BP(inputs={"x": 0}), tactic], mesh=mesh())(step).plan(*args())
    params = plan.in_shardings[0]
    assert params["up"]["w"].spec == P(None, "model") and params["up"]["b"].spec == P("model")
    # and the other order: the module pattern last overrides the bias entry -> a rank error
    reordered = {"up/b": ("mlp",), "up": ("embed", "mlp")}
    tactic = partir.LogicalPartition(RULES, axis="model", logical=reordered, with_optimizer_state=False)  # fmt: skip
    with pytest.raises(partir.errors.DimensionError, match="params/up/b"):
        partir.partition([tactic], mesh=mesh())(step).plan(*args())


def test_names_read_from_the_arguments_when_none_are_given():
    """Without `logical=`, the tactic reads the names off the arguments themselves (here
    Linen `LogicallyPartitioned` boxes passed as they are): the same plan as naming them."""
    import flax.linen as nn

    class M(nn.Module):
        @nn.compact
        def __call__(self, x):
            up = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("embed", "mlp"))
            down = nn.with_logical_partitioning(nn.initializers.lecun_normal(), ("mlp", "embed"))
            h = jnp.tanh(nn.Dense(16, kernel_init=up, use_bias=False, name="up")(x))
            return nn.Dense(8, kernel_init=down, use_bias=False, name="down")(h)

    model = M()
    x = jnp.ones((8, 8))
    boxed = model.init(jax.random.key(0), x)

    def loss(variables, x):
        return jnp.mean(model.apply(nn.unbox(variables), x) ** 2)

    rules = {"embed": None, "mlp": "model"}
    read = partir.LogicalPartition(rules, axis="model")
    given = partir.LogicalPartition(
        rules,
        axis="model",
        logical=partir.logical_axes(boxed),
        params_root="variables",
        with_optimizer_state=False,
    )
    plans = [
        partir.partition([*BP(inputs={"x": 0}), t], mesh=mesh())(loss).plan(boxed, x)
        for t in (read, given)
    ]
    specs = [jax.tree.map(lambda s: s.spec, p.in_shardings[0]) for p in plans]
    assert specs[0] == specs[1]
    assert jax.tree.leaves(specs[0]) == [P("model"), P(None, "model")]  # down, up
