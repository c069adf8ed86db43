"""`PipelinePartition` on the zoo's scanned GPT step: its spec, its errors, its plan."""

import functools
import json

import jax
import pytest

import partir
from partir import ir
from partir.errors import DimensionError, SelectorError, TacticError
from partir.tactics.pipeline import (
    ACCUMULATED,
    INVARIANT,
    PIPELINE_ATTR,
    PipelineSpec,
    pipeline_spec,
)
from partir.tactics.presets import BP, MP
from partir.testing import models

MESH = {"stage": 2, "data": 2, "model": 2}
LAYERS = "params/blocks/**"


@functools.cache
def gpt_scan(layers: int = 4):
    return models.gpt_scan(layers=layers)


def plan_of(tactic, layers: int = 4, mode: str = "annotate"):
    m = gpt_scan(layers)
    schedule = [*BP(axis="data"), *MP(axis="model", stacked=True), tactic]
    return partir.partition(schedule, mesh=MESH, mode=mode)(m.fn).plan(*m.args)


@pytest.mark.parametrize(
    ("schedule", "repeats", "microbatches"), [("gpipe", 1, 2), ("circular", 2, 4)]
)
def test_plan_records_the_pipeline_spec(schedule, repeats, microbatches):
    tactic = partir.PipelinePartition(
        "stage", LAYERS, microbatches=microbatches, schedule=schedule, repeats=repeats
    )
    plan = plan_of(tactic)
    spec = pipeline_spec(plan.records)
    assert spec == PipelineSpec("stage", 2, microbatches, schedule, repeats, 4)
    assert spec.bubble == pytest.approx(1 / (repeats * microbatches + 1))
    assert "2 scan(s) pipelined over 'stage'" in plan.records[-1].notes[0]
    assert "PipelinePartition" in plan.summary()


def test_layer_scans_are_classified_and_weights_seeded_on_stage():
    plan = plan_of(partir.PipelinePartition("stage", LAYERS, microbatches=2))
    scans = [op for op in plan.program.module.walk() if isinstance(op, ir.ScanOp)]
    marks = [json.loads(op.attributes[PIPELINE_ATTR].data) for op in scans]
    forward, backward = sorted(marks, key=lambda s: len(s["args"]))
    # forward: carry = activations (batch dim 0), the 12 stacked weights are invariant
    nc = 2
    assert forward["args"][nc] == 0
    assert forward["args"][-12:] == [INVARIANT] * 12
    # transposed scan: carry = the activations' cotangent, 12 weight gradients accumulated
    assert backward["yields"] == [0] + [ACCUMULATED] * 12
    for leaf in jax.tree.leaves(plan.in_shardings[0]["blocks"]):
        assert leaf.spec[0] == "stage"
    # the opt state's moments follow their weights onto the stages
    assert plan.in_shardings[1][0].mu["blocks"]["attn"]["q"].spec[0] == "stage"


def test_circular_needs_microbatches_at_least_stages():
    tactic = partir.PipelinePartition(
        "stage", LAYERS, microbatches=1, schedule="circular", repeats=2
    )
    with pytest.raises(TacticError, match="microbatches >= stages"):
        plan_of(tactic)


def test_remat_blocks_are_refused():
    m = models.gpt_scan(layers=4, remat=True)
    tactic = partir.PipelinePartition("stage", LAYERS, microbatches=2)
    step = partir.partition([tactic], mesh=MESH)(m.fn)
    with pytest.raises(TacticError, match="nested"):
        step.plan(*m.args)


def test_plan_without_pipeline_has_no_spec():
    m = gpt_scan()
    plan = partir.partition(BP(axis="data"), mesh=MESH)(m.fn).plan(*m.args)
    assert pipeline_spec(plan.records) is None


def test_layers_selector_matching_nothing_names_the_inputs():
    with pytest.raises(SelectorError, match=r"params/blockz/\*\*.*matches no input"):
        plan_of(partir.PipelinePartition("stage", "params/blockz/**", microbatches=2))


def test_layers_not_divisible_by_stages_times_repeats():
    tactic = partir.PipelinePartition(
        "stage", LAYERS, microbatches=2, schedule="circular", repeats=3
    )
    with pytest.raises(DimensionError, match=r"L=4 layers.*2 stages.*3 repeats"):
        plan_of(tactic)


def test_batch_not_divisible_by_microbatches():
    with pytest.raises(DimensionError, match="does not divide into 3 microbatches"):
        plan_of(partir.PipelinePartition("stage", LAYERS, microbatches=3))


def test_unscanned_layers_are_refused():
    m = models.gpt(layers=2)
    tactic = partir.PipelinePartition("stage", "params/blocks/0/attn/q", microbatches=2)
    step = partir.partition([tactic], mesh=MESH)(m.fn)
    with pytest.raises(TacticError, match=r"no lax\.scan consumes"):
        step.plan(*m.args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"schedule": "1f1b"}, "schedule='1f1b'"),
        ({"microbatches": 0}, "microbatches=0"),
        ({"repeats": 2}, "needs schedule='circular'"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {"microbatches": 2, **kwargs}
    with pytest.raises(TacticError, match=match):
        partir.PipelinePartition("stage", LAYERS, **args)


def test_unknown_axis():
    with pytest.raises(partir.errors.UnknownAxisError, match="'pipe'"):
        plan_of(partir.PipelinePartition("pipe", LAYERS, microbatches=2))
