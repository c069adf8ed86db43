"""Plans: Megatron layout, conflicts between tactics, provenance, text."""

import re

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

import partir
from partir.testing import models, schedules


def specs(tree):
    return {
        jax.tree_util.keystr(p): s.spec for p, s in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def test_bp_mp_gives_megatron_layout(gpt, mesh):
    step = partir.partition(schedules.schedule("gpt", "BP+MP"), mesh=mesh)(gpt.fn)
    plan = step.plan(*gpt.args)
    params_out = specs(plan.out_shardings[0])
    expected_block = {
        "['attn']['q']": P(None, "model"), "['attn']['k']": P(None, "model"), "['attn']['v']": P(None, "model"),
        "['attn']['o']": P("model"), "['mlp']['w_in']": P(None, "model"), "['mlp']['b_in']": P("model"),
        "['mlp']['w_out']": P("model"), "['mlp']['b_out']": P(), "['ln1']['scale']": P(), "['ln1']['bias']": P(),
        "['ln2']['scale']": P(), "['ln2']['bias']": P(),
    }  # fmt: skip
    expected = {f"['blocks'][{i}]{k}": v for i in range(2) for k, v in expected_block.items()}
    expected |= {
        "['embed']['tokens']": P(), "['embed']['positions']": P(), "['final_ln']['scale']": P(),
        "['final_ln']['bias']": P(), "['head']": P(),
    }  # fmt: skip
    assert params_out == expected
    # the inputs of the same parameters, and the data on the batch axis
    args_in = plan.in_shardings
    assert specs(args_in[0]) == expected
    assert specs(args_in[2]) == {"['targets']": P("batch"), "['tokens']": P("batch")}
    # optimizer state follows its parameter through the update
    mu = specs(args_in[1][0].mu)
    assert mu["['blocks'][0]['attn']['q']"] == P(None, "model")
    assert mu["['blocks'][1]['mlp']['w_out']"] == P("model")


def test_same_input_two_dims_one_axis_is_a_conflict_naming_both_tactics(mesh):
    def f(x, w):
        y = x @ w  # the line the conflict should point at
        return jnp.tanh(y)

    schedule = [
        partir.ManualPartition({"x": 0}, axis="batch"),
        partir.ManualPartition({"w": 0, "x": 1}, axis="batch"),
    ]
    plan = partir.partition(schedule, mesh=mesh)(f).plan(jnp.ones((8, 16)), jnp.ones((16, 4)))
    input_conflicts = [c for c in plan.conflicts if c.conflict.op is None]
    assert len(input_conflicts) == 1
    conflict = input_conflicts[0]
    assert conflict.tactic_indices == (0, 1)
    assert conflict.tactics == tuple(schedule)
    text = str(conflict)
    assert "tactic #0" in text and "tactic #1" in text and "'batch'" in text
    line = f.__code__.co_firstlineno + 1
    assert re.search(rf"test_plan.py:{line} \(f\)", text), text
    # the numbers are still right
    x, w = jnp.arange(128.0).reshape(8, 16) / 100, jnp.ones((16, 4)) / 16
    step = partir.partition(schedule, mesh=mesh)(f)
    assert jnp.allclose(step(x, w), f(x, w), atol=1e-6)


def test_op_conflict_records_source_line_and_tactics(mesh):
    def f(x, w):
        return x @ w

    schedule = [
        partir.ManualPartition({"x": 0}, axis="batch"),
        partir.ManualPartition({"w": 0}, axis="batch"),
    ]
    plan = partir.partition(schedule, mesh=mesh)(f).plan(jnp.ones((8, 16)), jnp.ones((16, 4)))
    (conflict,) = plan.conflicts
    assert conflict.conflict.op.primitive_name == "dot_general"
    assert conflict.tactic_indices == (0, 1)
    assert f"test_plan.py:{f.__code__.co_firstlineno + 1}" in conflict.location


def test_explain_megatron_weight_shows_tactic_and_chain(gpt, mesh):
    # Seed only the column-parallel weights: propagation decides the row-parallel ones.
    schedule = [
        partir.ManualPartition({"params/blocks/*/attn/q": 1, "params/blocks/*/attn/k": 1,
                                "params/blocks/*/attn/v": 1, "params/blocks/*/mlp/w_in": 1}, axis="model"),
    ]  # fmt: skip
    plan = partir.partition(schedule, mesh=mesh)(gpt.fn).plan(*gpt.args)
    assert specs(plan.in_shardings[0])["['blocks'][0]['mlp']['w_out']"] == P("model")
    text = plan.explain("params/blocks/0/mlp/w_out")
    assert "axis 'model' on dim 0" in text
    assert "tactic #0 ManualPartition(" in text
    assert "propagated from params/blocks/0/mlp/w_in" in text
    chain = [ln.split()[0] for ln in text.splitlines()[2:]]
    assert chain[0] == "dot_general" and chain[-1] == "dot_general", text
    assert "models.py" in text  # each step names the user's source line
    seeded = plan.explain("params/blocks/0/mlp/w_in")
    assert "seeded by tactic #0" in seeded


def test_partial_sums_are_added_before_one_reduction(mesh):
    # three input-gradient contributions, each partial on 'model', added together
    def f(x, a, b, c):
        return x @ a + x @ b + x @ c

    schedule = [partir.ManualPartition({"x": 1, "a": 0, "b": 0, "c": 0}, axis="model")]
    plan = partir.partition(schedule, mesh=mesh)(f).plan(
        *(jnp.ones((4, 8)),) + (jnp.ones((8, 4)),) * 3
    )
    out = plan.program.function.body.block.last_op.operands[0]
    assert plan.sharding_of(out).partial == ("model",)
    adds = [op for op in plan.program.module.walk() if getattr(op, "primitive_name", "") == "add"]
    assert all(plan.sharding_of(op.results[0]).partial == ("model",) for op in adds)


def test_plan_text_shows_shardings_and_parses(gpt, mesh):
    plan = partir.partition(schedules.schedule("gpt", "BP+MP"), mesh=mesh)(gpt.fn).plan(*gpt.args)
    text = plan.ir()
    assert (
        '{partir.path = "params/blocks/0/attn/q", partir.sharding = #partir.sharding<[{}, {"model"}]>}'
        in text
    )
    assert (
        '#partir.sharding<[{"batch"}, {}, {}], partial=sum{"model"}>' in text
    )  # a row-parallel matmul output
    body = text.split("\n", 1)[1]
    assert str(partir.parse(body)) == body


def test_lower_returns_the_lowered_program(gpt, mesh):
    step = partir.partition(schedules.schedule("gpt", "BP"), mesh=mesh)(gpt.fn)
    lowered = step.plan(*gpt.args).lower()
    assert "sdy.sharding" in lowered.as_text() or "mhlo.sharding" in lowered.as_text()


def test_shape_dtype_structs_plan_without_data(mesh):
    m = models.get(
        "gpt",
        abstract=True,
        layers=2,
        d_model=256,
        heads=8,
        seq=128,
        vocab=1024,
        d_ff=1024,
        batch=16,
    )
    plan = partir.partition(schedules.schedule("gpt", "BP+MP"), mesh=mesh)(m.fn).plan(*m.args)
    assert specs(plan.in_shardings[0])["['blocks'][1]['mlp']['w_in']"] == P(None, "model")


def test_mesh_from_set_mesh(mesh):
    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")])(lambda x: x * 2)
    with jax.set_mesh(mesh):
        out = step(jnp.ones((8, 2)))
    assert out.sharding.spec == P("batch")


def test_replicated_pins_a_value(mesh):
    def f(x, w):
        return x @ w

    schedule = [partir.ManualPartition({"w": partir.REPLICATED}, axis="model"),
                partir.ManualPartition({"x": 1}, axis="model")]  # fmt: skip
    plan = partir.partition(schedule, mesh=mesh)(f).plan(jnp.ones((4, 8)), jnp.ones((8, 4)))
    assert plan.in_shardings[1].spec == P()
    assert plan.in_shardings[0].spec == P(None, "model")
    assert "pinned replicated by tactic #0" in plan.explain("w")


def test_z2_keeps_parameters_replicated_and_shards_optimizer_state(gpt, mesh):
    plan = partir.partition(schedules.schedule("gpt", "BP+Z2"), mesh=mesh)(gpt.fn).plan(*gpt.args)
    params_in = specs(plan.in_shardings[0])
    assert all(spec == P() for spec in params_in.values())
    assert all(spec == P() for spec in specs(plan.out_shardings[0]).values())
    mu = specs(plan.in_shardings[1][0].mu)
    assert mu["['blocks'][0]['mlp']['w_in']"] == P("batch")


def test_pin_that_blocks_propagation_is_a_conflict(mesh):
    def f(x, w):
        return x @ w

    schedule = [
        partir.ManualPartition({"out": partir.REPLICATED}, axis="batch"),
        partir.ManualPartition({"x": 0}, axis="batch"),
    ]
    plan = partir.partition(schedule, mesh=mesh)(f).plan(jnp.ones((8, 16)), jnp.ones((16, 4)))
    (conflict,) = plan.conflicts
    assert conflict.tactic_indices == (0, 1)
    assert "out: replicated, from tactic #0" in str(conflict)


def test_repr_is_one_short_line_with_the_counts():
    m = models.get("gpt")
    plan = partir.partition(schedules.schedule("gpt", "BP+MP"), mesh={"batch": 4, "model": 2})(
        m.fn
    ).plan(*m.args)
    text = repr(plan)
    assert "\n" not in text and len(text) < 160, text
    assert text.startswith(
        f"<partir.Plan {plan.program.name}; mesh batch=4, model=2; mode=annotate"
    )
    assert f"{len(plan.conflicts)} conflicts" in text and "2 tactics" in text
    assert "collectives" not in text  # not lowered yet: repr does not lower
    n = len(plan.collectives())
    assert repr(plan).endswith(f"; {n} collectives>")
