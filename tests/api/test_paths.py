"""Pytree paths are unambiguous: a `/` inside a key is escaped in paths and selectors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import partir
from partir.ir.paths import escape_key, join_path, split_path, unescape_key
from partir.tactics.selectors import select

KEYS = st.text(alphabet=st.sampled_from("ab/\\*~_0"), min_size=1, max_size=6)


@given(st.lists(KEYS, min_size=1, max_size=4))
def test_paths_split_back_into_their_keys(keys: list[str]) -> None:
    path = join_path(keys)
    assert [unescape_key(c) for c in split_path(path)] == keys
    assert "/".join(split_path(path)) == path


@given(st.lists(KEYS, min_size=1, max_size=3), st.lists(KEYS, min_size=1, max_size=3))
def test_distinct_key_lists_give_distinct_paths(a: list[str], b: list[str]) -> None:
    assert (join_path(a) == join_path(b)) == (a == b)


@given(st.lists(KEYS, min_size=1, max_size=4))
def test_an_escaped_path_selects_itself_and_nothing_longer_by_accident(keys: list[str]) -> None:
    path = join_path(keys)
    # a path whose keys have no `*` is a selector for exactly that leaf (and those below it)
    selector = "/".join(escape_key(k).replace("*", "\\*") for k in keys)
    others = [join_path([*keys[:-1], keys[-1] + "x"]), join_path(["q", *keys])]
    assert select(selector, [path, *others]) == [0]


def test_wildcards_match_escaped_components() -> None:
    paths = ["params/mlp\\/~\\/linear_0/w", "params/mlp\\/~\\/linear_1/w", "params/mlp/w"]
    assert select("params/mlp\\/~\\/linear_0/w", paths) == [0]
    assert select("params/*/w", paths) == [0, 1, 2]  # one level, escaped or not
    assert select("params/mlp\\/*/w", paths) == [0, 1]
    assert select("params/**/w", paths) == [0, 1, 2]
    assert select("params/mlp/w", paths) == [2]


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_slash_keys_give_two_paths_and_two_shardings(mode: str) -> None:
    """`{"enc/w": a, "enc": {"w": b}}`: two leaves, two paths, each selected on its own."""
    x = {"enc/w": jnp.arange(64.0).reshape(8, 8), "enc": {"w": jnp.ones((8, 8))}}

    def f(x):
        return x["enc/w"] @ x["enc"]["w"]

    tactic = partir.ManualPartition({"x/enc\\/w": 0, "x/enc/w": 1}, axis="batch")
    step = partir.partition([tactic], mesh={"batch": 8}, mode=mode)(f)
    plan = step.plan(x)
    assert sorted(plan.program.input_paths) == ["x/enc/w", "x/enc\\/w"]
    specs = jax.tree.map(lambda s: tuple(s.spec), plan.in_shardings)[0]
    assert specs["enc/w"][:1] == ("batch",)
    assert specs["enc"]["w"] == (None, "batch")
    np.testing.assert_allclose(step(x), f(x), rtol=1e-6)


def test_haiku_module_names_are_paths_of_their_own() -> None:
    haiku = pytest.importorskip("haiku")
    model = haiku.without_apply_rng(haiku.transform(lambda x: haiku.nets.MLP([8, 4])(x)))
    params = model.init(jax.random.key(0), jnp.zeros((1, 8)))
    program = partir.trace(model.apply, params, jnp.zeros((8, 8)))
    paths = program.input_paths
    assert "params/mlp\\/~\\/linear_0/w" in paths and "params/mlp\\/~\\/linear_1/b" in paths
    plan = partir.partition(
        [partir.ManualPartition({"params/mlp\\/~\\/linear_0/w": 1}, axis="model")],
        mesh={"model": 8},
    )(model.apply).plan(params, jnp.zeros((8, 8)))
    sharded = jax.tree.map(lambda s: tuple(s.spec), plan.in_shardings)[0]
    assert sharded["mlp/~/linear_0"]["w"] == (None, "model")
    assert sharded["mlp/~/linear_1"]["w"] != (None, "model")
