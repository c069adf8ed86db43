"""Conflicts have a kind: clashes between tactics apart from expected resharding."""

import jax.numpy as jnp
import pytest

import partir
from partir.errors import ShardingConflictError
from partir.plan.conflict_kind import counts
from partir.tactics import presets


def test_demo_schedule_has_no_clash_and_counts_expected_apart(gpt, mesh):
    schedule = [*presets.BP(), *presets.MP(), *presets.Z3()]
    plan = partir.partition(schedule, mesh=mesh, mode="spmd")(gpt.fn).plan(*gpt.args)
    kinds = [c.kind for c in plan.conflicts]
    assert plan.conflicts and set(kinds) == {"expected"}
    # Z3's gathers: each is between batch parallelism and ZeRO-3, at a matmul using a parameter
    assert all(c.tactic_indices == (0, 2) for c in plan.conflicts)
    n = len(kinds)
    assert counts(kinds) == f"0 clashes, {n} expected reshardings"
    assert "(0 clashes)" in repr(plan)
    text = str(plan.conflicts[0])
    assert text.startswith("expected resharding on axis 'batch'")
    # strict mode lets expected resharding through
    strict = partir.partition(schedule, mesh=mesh, mode="spmd", strict=True)(gpt.fn)
    assert len(strict.plan(*gpt.args).conflicts) == n


def test_history_and_html_show_kinds_apart(gpt, mesh):
    schedule = [*presets.BP(), *presets.MP(), *presets.Z3()]
    plan = partir.partition(schedule, mesh=mesh, mode="spmd")(gpt.fn).plan(*gpt.args)
    history = plan.history
    rows = history.rows()
    assert rows[3]["conflicts"] == f"{len(plan.conflicts)} expected"
    assert rows[1]["conflicts"] == "0"
    html = plan._repr_html_()
    assert f"0 clashes, {len(plan.conflicts)} expected reshardings" in html


def _clash_pin_fn(x, w):
    return jnp.tanh(x @ w)


def test_pin_against_propagation_is_a_clash_and_strict_raises(mesh):
    schedule = [
        partir.ManualPartition({"out": partir.REPLICATED}, axis="batch"),
        partir.ManualPartition({"x": 0}, axis="batch"),
    ]
    args = (jnp.ones((8, 16)), jnp.ones((16, 4)))
    plan = partir.partition(schedule, mesh=mesh)(_clash_pin_fn).plan(*args)
    (conflict,) = plan.conflicts
    assert conflict.kind == "clash"
    assert str(conflict).startswith("clash on axis 'batch'")
    with pytest.raises(ShardingConflictError) as err:
        partir.partition(schedule, mesh=mesh, strict=True)(_clash_pin_fn).plan(*args)
    message = str(err.value)
    assert "#0 " in message and "#1 " in message, message
    assert "'batch'" in message and "out: replicated" in message
    line = _clash_pin_fn.__code__.co_firstlineno + 1
    assert f"test_conflict_kinds.py:{line}" in message, message


def test_one_input_seeded_two_ways_is_a_clash(mesh):
    def f(x, w):
        return x @ w

    # tactic 1 shards w on the axis tactic 0 already used for x, and x itself a second way
    schedule = [
        partir.ManualPartition({"x": 0}, axis="model"),
        partir.ManualPartition({"x": 1}, axis="model"),
    ]
    args = (jnp.ones((8, 16)), jnp.ones((16, 4)))
    plan = partir.partition(schedule, mesh=mesh)(f).plan(*args)
    clashes = [c for c in plan.conflicts if c.kind == "clash"]
    assert len(clashes) == 1 and clashes[0].conflict.op is None
    with pytest.raises(
        ShardingConflictError, match=r"tactics #0 .* and #1 .* on mesh axis 'model'"
    ):
        partir.partition(schedule, mesh=mesh, strict=True)(f).plan(*args)


def test_two_tactics_meeting_at_an_op_is_expected_and_runs(mesh):
    # ZeRO in miniature: tactic 1 stores w split on the axis tactic 0 splits x on
    def f(x, w):
        return x @ w

    schedule = [
        partir.ManualPartition({"x": 0}, axis="batch"),
        partir.ManualPartition({"w": 0}, axis="batch"),
    ]
    x = jnp.arange(128.0).reshape(8, 16) / 100
    w = jnp.ones((16, 4)) / 16
    step = partir.partition(schedule, mesh=mesh, strict=True)(f)
    (conflict,) = step.plan(x, w).conflicts
    assert conflict.kind == "expected"
    assert jnp.allclose(step(x, w), f(x, w), atol=1e-6)


def test_one_tactics_own_claims_meeting_are_expected(gpt, mesh):
    # ZeRO-2 pins the parameters replicated and shards their optimizer state: where the
    # update meets them, the conflict is the tactic's own choice
    schedule = [*presets.BP(), *presets.Z2()]
    plan = partir.partition(schedule, mesh=mesh)(gpt.fn).plan(*gpt.args)
    own = [c for c in plan.conflicts if len(set(c.tactic_indices)) == 1]
    assert own and all(c.kind == "expected" for c in own)
