"""`plan.simulate` of a plan with a `PipelinePartition` reports the pipelined step
(partir/api/pipeline_report.py): on the zoo's scanned GPT train step (4 layers) on a
(stage 2, data 2, model 2) mesh, and (issue #16, Must show 2) on a compute-bound GPT planned
from abstract shapes, where the emitted GPipe schedule's bubble is (P-1)/(M+P-1) and each
stage holds 1/P of the layers' weights."""

import functools
import json

import jax
import pytest

import partir
from partir.api.pipeline_report import PipelinedReport
from partir.simulator import Report
from partir.tactics.presets import BP, MP
from partir.testing import models

MESH = {"stage": 2, "data": 2, "model": 2}


@functools.cache
def report_of(hardware: str = "h100", **pipeline) -> Report:
    m = models.gpt_scan(layers=4)
    schedule = [*BP(axis="data"), *MP(axis="model", stacked=True)]
    if pipeline:
        schedule.append(partir.PipelinePartition("stage", "params/blocks/**", **pipeline))
    plan = partir.partition(schedule, mesh=MESH, mode="spmd")(m.fn).plan(*m.args)
    return plan.simulate(hardware)


def test_without_a_pipeline_the_report_is_the_device_local_programs():
    assert type(report_of()) is Report


@pytest.mark.parametrize("hardware", ["h100", "tpu-v5p"])
def test_stage_costs_account_for_the_whole_unpipelined_step(hardware):
    r = report_of(hardware, microbatches=2)
    assert isinstance(r, PipelinedReport)
    costs, flat = r.stage_costs, r.unpipelined
    assert costs is not None and flat is not None
    # every second of the loop-free program is either a layer on a microbatch or once a step
    layers = costs.layer_microbatch_s * 4 * 2
    assert layers > 0
    assert layers + costs.other_step_s >= flat.step_time_s * (1 - 1e-9)
    assert 0 < costs.forward_fraction < 1
    # each stage runs half the layers: the step is shorter than the loop-free one, which
    # runs all four on every device, but longer than half of it (the bubble)
    assert flat.step_time_s / 2 < r.step_time_s < flat.step_time_s
    assert r.pipeline is not None and not r.pipeline.simulated_only


def test_more_microbatches_shrink_the_bubble_and_the_step():
    two, four = report_of(microbatches=2), report_of(microbatches=4)
    assert isinstance(two, PipelinedReport) and isinstance(four, PipelinedReport)
    assert two.pipeline is not None and four.pipeline is not None
    assert four.pipeline.bubble_fraction < two.pipeline.bubble_fraction
    assert four.step_time_s < two.step_time_s
    # the device-local program does not depend on M
    assert two.unpipelined.step_time_s == four.unpipelined.step_time_s  # type: ignore[union-attr]


def test_each_stage_holds_its_own_layers():
    r = report_of(microbatches=2)
    assert isinstance(r, PipelinedReport) and r.pipeline is not None and r.unpipelined
    assert r.peak_memory_bytes == int(r.pipeline.peak_memory_bytes)
    assert r.peak_memory_bytes < r.unpipelined.peak_memory_bytes
    assert len(set(r.pipeline.static_bytes)) == 1  # uniform layers: equal stages


def test_what_ifs_are_labelled_and_the_report_serialises():
    r = report_of(microbatches=4)
    assert isinstance(r, PipelinedReport)
    assert set(r.what_if) == {"1f1b", "interleaved-1f1b"}
    assert all(w.simulated_only for w in r.what_if.values())
    d = json.loads(json.dumps(r.to_dict()))
    assert d["pipeline"]["schedule"] == "gpipe" and d["stage_costs"]["layer_microbatch_s"] > 0
    text = str(r)
    assert "stage 1:" in text and "(simulated only)" in text and "without the loop" in text


def test_circular_pays_its_relayout_once_a_step():
    gpipe = report_of(microbatches=2)
    circular = report_of(microbatches=2, schedule="circular", repeats=2)
    assert isinstance(gpipe, PipelinedReport) and isinstance(circular, PipelinedReport)
    assert circular.pipeline is not None and circular.pipeline.repeats == 2
    assert circular.stage_costs.other_step_s > gpipe.stage_costs.other_step_s  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------
# Compute-bound: a 32-layer GPT at d_model 4096, planned from jax.ShapeDtypeStruct inputs on
# an abstract mesh where it has more than 8 devices (nothing is allocated). The mesh's model
# axis is 1 so each device runs whole layers; the stage axis is inside the data axis, so on
# h100 it stays on NVLink. One microbatch's transfer (its activations, [B/(2M), 2048, 4096]
# bf16) is then a small fraction of a stage's forward on it: the bubble should be the
# published GPipe one.

BIG = {"layers": 32, "d_model": 4096, "heads": 32, "d_ff": 16384, "seq": 2048, "vocab": 1024}
BIG_BATCH = 64  # sequences per step: 32 per data-parallel group, 1 to 8 per microbatch


@functools.cache
def big_model():
    return models.get("gpt_scan", abstract=True, batch=BIG_BATCH, dtype="bfloat16", **BIG)


@functools.cache
def big_report(hardware: str, stages: int, microbatches: int = 0, stage_outer: bool = False):
    """The big GPT's report on (data 2, stage P, model 1); no pipeline when microbatches is 0
    (the same schedule, the stage axis unused). `stage_outer` puts the stage axis outside
    the data axis (on h100 at P = 8: across nodes, on InfiniBand)."""
    m = big_model()
    axes = [("data", 2), ("stage", stages)]
    mesh = dict([*reversed(axes), ("model", 1)] if stage_outer else [*axes, ("model", 1)])
    schedule = [*BP(axis="data"), *MP(axis="model", stacked=True)]
    if microbatches:
        schedule.append(
            partir.PipelinePartition("stage", "params/blocks/**", microbatches=microbatches)
        )
    plan = partir.partition(schedule, mesh=mesh, mode="spmd")(m.fn).plan(*m.args)
    return plan.simulate(hardware)


def gpipe_bubble(stages: int, microbatches: int) -> float:
    """GPipe's bubble (Huang et al. 2019; GSPMD arXiv 2105.04663 §3.3)."""
    return (stages - 1) / (microbatches + stages - 1)


@pytest.mark.parametrize(
    ("hardware", "stages", "microbatches"),
    [
        ("h100", 2, 4),
        ("h100", 4, 4),
        ("h100", 4, 16),
        ("h100", 8, 8),
        ("h100", 8, 32),
        ("tpu-v5p", 2, 8),
        ("tpu-v5p", 4, 8),
        ("tpu-v5p", 8, 16),
    ],
)
def test_compute_bound_gpipe_bubble_is_the_published_one(hardware, stages, microbatches):
    r = big_report(hardware, stages, microbatches)
    assert isinstance(r, PipelinedReport)
    pipe, costs = r.pipeline, r.stage_costs
    assert pipe is not None and costs is not None
    assert pipe.schedule == "gpipe" and not pipe.simulated_only
    # the config is compute-bound: a transfer is under 2% of a stage's forward on a
    # microbatch (0.2-1.6% measured), and the once-a-step part, which the bubble does not
    # count (it is outside the pipelined part), is under 10% of the step (1.5-7.6%)
    stage_mb_s = costs.layer_microbatch_s * BIG["layers"] / stages
    assert pipe.p2p_time_s < 0.02 * stage_mb_s * costs.forward_fraction
    assert r.step_time_s - pipe.pipeline_time_s < 0.10 * r.step_time_s
    want = gpipe_bubble(stages, microbatches)
    assert pipe.bubble_fraction == pytest.approx(want, rel=0.02)
    # the same from the step itself: the pipelined part lasts M + P - 1 stage-microbatches
    assert pipe.pipeline_time_s == pytest.approx((microbatches + stages - 1) * stage_mb_s, rel=0.02)
    assert r.step_time_s < r.unpipelined.step_time_s  # type: ignore[union-attr]


def test_transfers_across_nodes_add_their_fill_and_drain_to_the_bubble():
    # the stage axis outside data: 8 stages of 2 devices span two 8-GPU nodes, so each
    # transfer crosses InfiniBand and the fill and the drain each wait P - 1 of them
    r = big_report("h100", 8, 32, stage_outer=True)
    assert isinstance(r, PipelinedReport) and r.pipeline and r.stage_costs
    assert r.topology["stage"].link.kind == "infiniband"
    pipe, stage_mb_s = r.pipeline, r.stage_costs.layer_microbatch_s * BIG["layers"] / 8
    assert pipe.bubble_fraction > gpipe_bubble(8, 32) * 1.02
    busy = 32 * stage_mb_s
    assert pipe.bubble_fraction == pytest.approx(
        1 - busy / (busy + 7 * stage_mb_s + 2 * 7 * pipe.p2p_time_s), rel=1e-3
    )


def _nbytes(leaves) -> int:
    return sum(x.size * x.dtype.itemsize for x in leaves)


@pytest.mark.parametrize("stages", [2, 4, 8])
def test_each_stage_holds_one_pth_of_the_layer_weights(stages):
    flat = big_report("tpu-v5p", stages)
    r = big_report("tpu-v5p", stages, 8)
    assert type(flat) is Report and isinstance(r, PipelinedReport)
    assert r.pipeline is not None and r.unpipelined is not None
    params, opt_state, _ = big_model().args
    # without the pipeline every device holds every layer (model axis 1, BP shards the batch)
    weights = _nbytes(jax.tree.leaves(params["blocks"]))
    layer_args = _nbytes(
        leaf
        for path, leaf in jax.tree.leaves_with_path((params, opt_state))
        if "blocks" in jax.tree_util.keystr(path)
    )
    assert layer_args == 3 * weights  # the weights and Adam's two moments
    other_args = flat.memory.argument_bytes - layer_args
    assert 0 < other_args < 0.01 * layer_args
    # with it, a device's arguments (weights, optimizer state) are its stage's layers
    assert r.unpipelined.memory.argument_bytes == pytest.approx(
        other_args + layer_args / stages, rel=1e-3
    )
    # the pipeline's static bytes per stage: those, plus its layers' gradients
    layer_state = layer_args + weights
    for static in r.pipeline.static_bytes:
        assert static == pytest.approx(other_args + layer_state / stages, rel=1e-3)
    # the peak per stage falls ~1/P too: GPipe stashes every microbatch's activations of
    # its L/P layers, the loop-free step those of all L layers for the whole batch
    ratio = r.peak_memory_bytes * stages / flat.peak_memory_bytes
    assert 0.85 < ratio < 1.05
