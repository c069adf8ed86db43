"""Training steps built with Flax NNX and Linen, Equinox, Haiku and a MaxText-style Llama
(`partir.testing._library_models`) under BP, BP + Megatron (from the library's logical axis
names, no leaf listed by hand) and BP + Z3 (the preset with no arguments): equal to
`jax.jit` of the unpartitioned step in both modes, with the collectives each should give."""

from __future__ import annotations

import collections
import dataclasses
import functools
import math
import warnings

import jax
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import partir
from partir.tactics.presets import BP, MP, Z3
from partir.testing import models

LIBRARIES = [
    "nnx_decoder", "nnx_decoder_scan", "linen_encoder", "equinox_transformer",
    "haiku_transformer", "maxtext_llama",
]  # fmt: skip
SCANNED = {"nnx_decoder_scan", "maxtext_llama"}
"""Steps whose layers run in a scan: a collective of the body is listed once for all layers."""


@functools.cache
def mesh():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


@functools.cache
def model(name: str):
    return models.LIBRARY_MODELS[name]()


@functools.cache
def reference(name: str):
    m = model(name)
    return jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


def megatron(m) -> list:
    return [*BP(), partir.LogicalPartition(models.MEGATRON_RULES, axis="model", logical=m.logical)]


SCHEDULES = {
    "BP": lambda m: BP(),
    "BP+MP": megatron,
    "BP+Z3": lambda m: [*BP(), *Z3()],
}


def assert_close(got, want):
    assert jax.tree.structure(got) == jax.tree.structure(jax.tree.map(lambda x: x, want))
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("name", LIBRARIES)
def test_library_step_equals_jit(name, schedule, mode):
    m = model(name)
    step = partir.partition(SCHEDULES[schedule](m), mesh=mesh(), mode=mode)(m.fn)
    assert_close(step(*m.args), reference(name))


def model_collectives(plan, axis: str) -> collections.Counter:
    return collections.Counter(
        c.kind for c in plan.collectives() if c.communicates and c.axes == (axis,)
    )


@pytest.mark.parametrize("name", LIBRARIES)
def test_megatron_from_logical_names_gives_four_all_reduces_per_layer(name):
    m = model(name)
    plan = partir.partition(megatron(m), mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)
    per_layer = 4 if name in SCANNED else 4 * m.layers
    assert model_collectives(plan, "model") == {"all_reduce": per_layer}
    assert not plan.conflicts
    # the weights really are split: heads and hidden units on `model`, as Megatron does
    specs = {
        p: s.spec
        for p, s in zip(plan.program.input_paths, jax.tree.leaves(plan.in_shardings), strict=True)
    }
    assert sum("model" in str(s) for p, s in specs.items() if p.startswith("params/")) >= 4 * (
        1 if name in SCANNED else m.layers
    )


def test_maxtext_named_activations_are_not_barriers():
    """checkpoint_name's `name` is an identity: no gather of a named value, and the plan
    is that of the same model without names (the 4 Megatron all-reduces per layer)."""
    m = model("maxtext_llama")
    for schedule in (BP(), megatron(m)):
        plan = partir.partition(schedule, mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)
        gathers = [c for c in plan.collectives() if c.kind == "all_gather"]
        assert not any("of name" in c.reason for c in gathers), gathers
    assert model_collectives(plan, "model") == {"all_reduce": 4}


def test_nnx_metadata_and_rules_give_the_hand_written_megatron_layout():
    m = model("nnx_decoder")
    by_rules = partir.partition(megatron(m), mesh=mesh())(m.fn).plan(*m.args)
    hand = [
        *BP(),
        *MP(
            column={"params/**/attn/query/kernel": 1, "params/**/attn/key/kernel": 1,
                    "params/**/attn/value/kernel": 1, "params/**/up/kernel": 1},
            row={"params/**/attn/out/kernel": 0, "params/**/down/kernel": 0},
            column_bias={"params/**/attn/query/bias": 0, "params/**/attn/key/bias": 0,
                         "params/**/attn/value/bias": 0, "params/**/up/bias": 0},
        ),
    ]  # fmt: skip
    by_hand = partir.partition(hand, mesh=mesh())(m.fn).plan(*m.args)
    assert by_rules.in_shardings == by_hand.in_shardings
    assert by_rules.out_shardings == by_hand.out_shardings
    q = by_rules.in_shardings[0]["blocks"][0]["attn"]["query"]["kernel"].get_value()
    assert q.spec == P(None, "model")


def leaf_sizes(tree, root: str) -> dict[str, tuple[tuple[int, ...], int]]:
    out = {}
    for keys, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        path = "/".join(
            [
                root,
                *(
                    partir.ir.paths.escape_key(
                        str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                    )
                    for k in keys
                ),
            ]
        )
        out[path] = (tuple(leaf.shape), leaf.size * leaf.dtype.itemsize)
    return out


@pytest.mark.parametrize("name", ["nnx_decoder", "linen_encoder", "equinox_transformer"])
def test_zero3_gathers_each_sharded_parameter_once(name):
    m = model(name)
    plan = partir.partition([*BP(), *Z3()], mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)
    n = mesh().shape["batch"]
    params = leaf_sizes(m.args[0], "params")
    sharded = sorted(b for shape, b in params.values() if any(d % n == 0 for d in shape))
    gathers = [c for c in plan.collectives() if c.kind == "all_gather" and c.communicates]
    assert sorted(c.bytes for c in gathers) == sharded
    assert all(c.axes == ("batch",) for c in gathers)


def test_zero3_skips_and_reports_every_leaf_without_a_divisible_dim():
    """On a (4, 2) mesh a vocabulary of 30 and a width of 6 leave some leaves with no dim
    divisible by 4: Z3 skips exactly those, reports them with their bytes, and the step
    is still exact."""
    m = models.LIBRARY_MODELS["equinox_transformer"](vocab=30, d_model=6, heads=2, d_ff=12)
    record_of = lambda plan: plan.records[1]  # noqa: E731
    plan = partir.partition([*BP(), *Z3()], mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)
    n = mesh().shape["batch"]
    leaves = leaf_sizes(m.args[0], "params") | leaf_sizes(m.args[1], "opt_state")
    want = sorted(
        (p, b) for p, (shape, b) in leaves.items()
        if ("/mu/" in p or "/nu/" in p or p.startswith("params/")) and not any(d % n == 0 for d in shape)
    )  # fmt: skip
    assert want  # the sizes were chosen so that some leaves have no divisible dim
    assert sorted(record_of(plan).skipped) == want
    assert any(
        "skipped" in note and f"{len(want)} leaves" in note for note in record_of(plan).notes
    )
    specs = dict(zip(plan.program.input_paths, jax.tree.leaves(plan.in_shardings), strict=True))
    assert all(specs[p].spec == P() for p, _ in want)
    got = partir.partition([*BP(), *Z3()], mesh=mesh(), mode="spmd")(m.fn)(*m.args)
    assert_close(got, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args)))

    with pytest.raises(partir.errors.DimensionError, match="strict=False"):
        partir.partition([*BP(), *Z3(strict=True)], mesh=mesh())(m.fn).plan(*m.args)
    # below the size threshold a strict Z3 still skips
    big = max(b for _, b in want) + 1
    plan = partir.partition([*BP(), *Z3(strict=True, min_bytes=big)], mesh=mesh())(m.fn).plan(
        *m.args
    )
    assert sorted(plan.records[1].skipped) == want


@pytest.mark.parametrize("name", ["nnx_decoder_remat"])
@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_rematerialised_nnx_layers(name, mode):
    m = model(name)
    step = partir.partition(megatron(m), mesh=mesh(), mode=mode)(m.fn)
    assert_close(step(*m.args), reference(name))
    if mode == "spmd":
        kinds = model_collectives(step.plan(*m.args), "model")
        # the recomputed forward may repeat the attention all-reduce; nothing is gathered
        assert set(kinds) == {"all_reduce"} and 4 <= kinds["all_reduce"] <= 6


def test_parameter_bytes_of_the_helpers():
    """`leaf_sizes` (used above to derive the expectations) agrees with the arrays."""
    m = model("nnx_decoder")
    sizes = leaf_sizes(m.args[0], "params")
    total = sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(m.args[0]))
    assert sum(b for _, b in sizes.values()) == total
    plan = partir.partition(BP(), mesh=mesh())(m.fn).plan(*m.args)
    assert set(sizes) <= set(plan.program.input_paths)


# -- values named by checkpoint_name ----------------------------------------------------------


@pytest.mark.parametrize("remat", [False, True], ids=["plain", "remat"])
@pytest.mark.parametrize("mode", ["annotate", "spmd"])
def test_checkpoint_name_selector_seeds_every_occurrence(mode, remat):
    """``name:mlpwi`` seeds the SwiGLU product on its hidden dim: the value is sharded as
    asked wherever it occurs (under remat also in the recomputed forward of the backward),
    explain names the tactic, and the step is exact."""
    m = models.maxtext_llama(remat=remat)
    tactic = partir.ManualPartition({"name:mlpwi": 2}, axis="model")
    step = partir.partition([*BP(), tactic], mesh=mesh(), mode=mode)(m.fn)
    plan = step.plan(*m.args)
    named = partir.tactics.manual.named_values(plan.propagator.module, "mlpwi")
    assert len(named) >= (2 if remat else 1)
    for value in named:
        assert plan.propagator.dim_of(value, "model") == 2
    assert [d for _, d in plan.records[1].seeded] == [2] * len(named)
    text = plan.explain("name:mlpwi")
    assert "axis 'model' on dim 2: seeded by tactic #1" in text and "name:mlpwi" in text
    want = jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))
    assert_close(step(*m.args), want)


def test_checkpoint_name_selector_errors_list_the_names():
    m = model("maxtext_llama")
    tactic = partir.ManualPartition({"name:mlp_wi": 2}, axis="model")
    with pytest.raises(partir.errors.SelectorError, match="did you mean 'name:mlpwi'"):
        partir.partition([tactic], mesh=mesh())(m.fn).plan(*m.args)
    plan = partir.partition(BP(), mesh=mesh())(m.fn).plan(*m.args)
    with pytest.raises(partir.errors.SelectorError, match="out_proj"):
        plan.explain("name:nope")


# -- layout traps -------------------------------------------------------------------------------


def equinox_mp(column_dim: int, row_dim: int) -> list:
    qkv = {f"params/**/attn/{n}_proj/weight": column_dim for n in ("query", "key", "value")}
    return MP(
        column=qkv | {"params/**/up/weight": column_dim},
        row={"params/**/attn/output_proj/weight": row_dim, "params/**/down/weight": row_dim},
        column_bias=(),
    )


def test_megatron_dims_transposed_for_equinox_warn():
    """Equinox `Linear.weight` is [out, in]: Megatron's [in, out] dims split the contracted
    side of every matmul, a silently bad plan without the warning."""
    m = model("equinox_transformer")
    with pytest.warns(UserWarning, match="dims look transposed.*Equinox"):
        plan = partir.partition([*BP(), *equinox_mp(1, 0)], mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)  # fmt: skip
    assert any("transposed" in n for n in plan.records[1].notes)
    assert model_collectives(plan, "model")["all_reduce"] > 4 * m.layers  # why it matters
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = partir.partition([*BP(), *equinox_mp(0, 1)], mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)  # fmt: skip
    assert model_collectives(plan, "model") == {"all_reduce": 4 * m.layers}
    assert not plan.records[1].notes


@pytest.mark.parametrize(("zoo", "stacked"), [("gpt", False), ("gpt_scan", True)])
def test_megatron_on_the_zoo_does_not_warn(zoo, stacked):
    m = models.get(zoo, abstract=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = partir.partition([*BP(), *MP(stacked=stacked)], mesh=mesh())(m.fn).plan(*m.args)
    assert not plan.records[1].notes


# -- the automatic search on library naming -------------------------------------------------


def search_context(m, schedule):
    from partir.passes.propagate import Propagator

    program = partir.trace(m.fn, *m.args)
    mesh_attr = partir.ir.MeshAttr((("batch", 4), ("model", 2)))
    outs = list(program.function.body.block.last_op.operands)
    ctx = partir.tactics.TacticContext(
        Propagator(program.module, mesh_attr), program.input_paths,
        list(program.function.args), {}, program.name, program.output_paths, outs,
    )  # fmt: skip
    for i, t in enumerate(schedule):
        t.apply(ctx, i)
    return ctx


@pytest.mark.parametrize("name", ["nnx_decoder", "haiku_transformer"])
def test_search_ties_state_to_parameters_by_structure(name):
    """The optax state mirrors the parameter tree (``opt_state/0/mu/<params sub-path>``):
    found from the structure, every mu and nu leaf is tied to its parameter, and after BP
    the search offers ZeRO groups that shard each divisible parameter with its state."""
    from partir.tactics.auto.classes import dimension_classes
    from partir.tactics.auto.space import build_space, roles, zero_entries

    m = model(name)

    # rename the arguments: nothing may depend on `params` / `opt_state` being the names
    def renamed(weights, adam, batch):
        return m.fn(weights, adam, batch)

    renamed_model = dataclasses.replace(m, fn=renamed)
    ctx = search_context(renamed_model, BP())
    r = roles(ctx)
    paths = ctx.input_paths
    assert {paths[i] for i in r.params} == {p for p in paths if p.startswith("weights/")}
    mirrored = {paths[j] for j in r.state_of}
    assert mirrored == {p for p in paths if "/mu/" in p or "/nu/" in p}
    for j, i in r.state_of.items():
        assert paths[j].split("/", 3)[3] == paths[i].split("/", 1)[1]
    space = build_space(ctx, ("batch",), dimension_classes(ctx))
    assert {g.fill for g in space.groups if g.fill} == {"zero2", "zero3"}
    zero3 = dict(zero_entries(ctx, ctx.propagator, "batch", "zero3"))
    n = 4
    divisible = {
        i for i in r.params if any(d % n == 0 for d in partir.ir.shape_of(ctx.inputs[i].type))
    }
    assert {i for i in zero3 if i in r.params} == divisible
    assert {j for j in zero3 if j in r.state_of} == {
        j for j, i in r.state_of.items() if i in divisible
    }


def test_logical_names_from_the_context_cover_the_optimizer_state():
    """`LogicalPartition(logical=None)` reads `TacticContext.logical_axes`, absolute paths of
    every argument (`partir.plan.logical.input_logical_axes`): the optax moments of NNX
    parameters are NNX variables with the same metadata, so they are named too, and the
    seeds are those of the explicit ``logical=`` form."""
    from partir.plan.logical import input_logical_axes

    m = model("nnx_decoder")
    params, opt_state, batch = m.args
    names = input_logical_axes({"params": params, "opt_state": opt_state, "batch": batch})
    assert "opt_state/0/mu/blocks/0/up/kernel" in names
    implicit = partir.LogicalPartition(models.MEGATRON_RULES, axis="model")
    explicit = partir.LogicalPartition(models.MEGATRON_RULES, axis="model", logical=m.logical)
    seeded = []
    for tactic, ctx_names in ((implicit, names), (explicit, {})):
        ctx = search_context(m, [])
        ctx.logical_axes = ctx_names
        with pytest.warns(UserWarning):
            seeded.append(sorted(tactic.apply(ctx, 0).seeded))
    assert seeded[0] == seeded[1] and len(seeded[0]) == 60


def test_name_rule_is_an_identity():
    from jax.ad_checkpoint import checkpoint_name

    from partir.rules import get_rule

    program = partir.trace(lambda x: checkpoint_name(x * 2, "h"), np.ones((4, 6), np.float32))
    (op,) = [o for o in program.module.walk() if getattr(o, "primitive_name", "") == "name"]
    assert str(get_rule(op)) == "ij->ij {i=4, j=6}"


WIDE = {"d_model": 512, "d_ff": 2048, "heads": 8, "seq": 128, "batch": 32, "vocab": 512}
"""A width where tensor parallelism pays on tpu-v5p (BP+Megatron beats BP alone)."""


@pytest.mark.parametrize("name", ["nnx_decoder", "equinox_transformer"])
def test_automatic_model_axis_matches_megatron_on_library_naming(name):
    m = models.LIBRARY_MODELS[name](**WIDE)

    def time_of(schedule, **kw):
        plan = partir.partition(schedule, mesh=mesh(), mode="spmd", **kw)(m.fn).plan(*m.args)
        return plan.simulate("tpu-v5p").step_time_s

    with pytest.warns(UserWarning):
        megatron_s = time_of(megatron(m))
    assert megatron_s < time_of(BP())  # tensor parallelism pays at this width
    auto_s = time_of([*BP(), partir.AutomaticPartition(["model"])], hardware="tpu-v5p")
    assert auto_s <= 1.02 * megatron_s


@pytest.mark.parametrize("name", [*LIBRARIES, "nnx_decoder_remat"])
def test_every_primitive_the_libraries_emit_has_a_rule(name):
    """The audit: no primitive of these steps is a barrier (a 'no sharding rule' warning),
    and batch parallelism alone meets no conflict."""
    from partir.rules import RULES

    m = model(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = partir.partition(BP(), mesh=mesh())(m.fn).plan(*m.args)
    assert not [w for w in caught if "sharding rule" in str(w.message)]
    assert not plan.conflicts
    prims = {
        op.primitive_name for op in plan.program.module.walk() if isinstance(op, partir.ir.PrimOp)
    }
    assert "name" in prims or name != "maxtext_llama"
    assert prims <= set(RULES), prims - set(RULES)
