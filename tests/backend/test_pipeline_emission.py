"""The pipelined loop `PipelinePartition` emits (partir/backend/pipeline.py), on the zoo's
scanned GPT train step (4 layers) on a (stage 2, data 2, model 2) mesh: the loss and the
updated parameters equal the unpartitioned step's, the weights stay on their stages."""

import functools

import jax
import numpy as np
import pytest

import partir
from partir.backend import pipeline
from partir.tactics.presets import BP, MP
from partir.testing import models

MESH = {"stage": 2, "data": 2, "model": 2}
LAYERS = "params/blocks/**"


@functools.cache
def gpt_scan():
    m = models.gpt_scan(layers=4)
    return m, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


def step_of(mode: str, **kwargs):
    m, _ = gpt_scan()
    tactic = partir.PipelinePartition("stage", LAYERS, **kwargs)
    schedule = [*BP(axis="data"), *MP(axis="model", stacked=True), tactic]
    return partir.partition(schedule, mesh=MESH, mode=mode)(m.fn)


@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("spmd", {"microbatches": 2}),
        ("annotate", {"microbatches": 2}),
        ("spmd", {"microbatches": 2, "schedule": "circular", "repeats": 2}),
        ("annotate", {"microbatches": 2, "schedule": "circular", "repeats": 2}),
    ],
    ids=["spmd-gpipe", "annotate-gpipe", "spmd-circular", "annotate-circular"],
)
def test_pipelined_train_step_equals_unpartitioned(mode, kwargs):
    m, want = gpt_scan()
    got = step_of(mode, **kwargs)(*m.args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-4)


def test_spmd_collectives_permute_on_stage_and_gather_no_weight():
    m, _ = gpt_scan()
    plan = step_of("spmd", microbatches=2).plan(*m.args)
    table = plan.collectives()
    stage = [c for c in table if "stage" in c.axes]
    permutes = [c for c in stage if c.kind == "collective_permute"]
    # one per pipelined scan (forward and transposed), each a microbatch of activations
    assert len(permutes) == 2
    assert all(c.shape[0] == 8 // 2 // 2 for c in permutes)  # batch 8 / data 2 / M 2
    assert all("per tick (3 ticks)" in c.reason for c in permutes)
    assert not [c for c in stage if c.kind in ("all_gather", "all_to_all")]
    # each stage holds its own 2 of the 4 layers of every stacked weight
    for spec in jax.tree.leaves(plan.in_shardings[0]["blocks"]):
        assert spec.spec[0] == "stage"
    # XLA compiles exactly the planned collectives, the body's at microbatch size
    check = plan.check_compiled()
    assert not check.missing and not check.extra
    assert {c.kind for c in check.compiled if "stage" in (c.axes or ())} == {
        "collective_permute",
        "all_reduce",
    }


def test_microbatch_layout_round_trips():
    x = np.arange(2 * 8 * 3).reshape(2, 8, 3)
    split = pipeline.split_batch(x, 1, 4)
    assert split.shape == (4, 2, 2, 3)
    np.testing.assert_array_equal(split[1], x[:, 1::4])  # microbatch 1: rows 1, 5
    np.testing.assert_array_equal(pipeline.merge_batch(split, 1), x)
    layers = np.arange(8)
    stages = pipeline.to_stages(layers, 2, 2)  # stage s, repeat j: chunk 2j + s
    np.testing.assert_array_equal(stages[1, 0], [2, 3])
    np.testing.assert_array_equal(pipeline.from_stages(stages), layers)


def test_annotate_compiles_to_collective_permutes_without_weight_gathers():
    m, _ = gpt_scan()
    hlo = step_of("annotate", microbatches=2).lower(*m.args).compile().as_text()
    assert "collective-permute(" in hlo
    assert "all-gather(" not in hlo


def test_annotate_on_explicit_axes_is_refused_not_silently_unpipelined():
    from jax.sharding import AxisType

    m, _ = gpt_scan()
    mesh = jax.make_mesh((2, 2, 2), tuple(MESH), axis_types=(AxisType.Explicit,) * 3)
    tactic = partir.PipelinePartition("stage", LAYERS, microbatches=2)
    schedule = [*BP(axis="data"), *MP(axis="model", stacked=True), tactic]
    step = partir.partition(schedule, mesh=mesh, mode="annotate")(m.fn)
    with pytest.raises(partir.errors.TacticError, match=r"mode='spmd'.*AxisType\.Auto"):
        step(*m.args)
