"""`plan.simulate` of a plan with a `PipelinePartition` reports the pipelined step
(partir/api/pipeline_report.py), on the zoo's scanned GPT train step (4 layers) on a
(stage 2, data 2, model 2) mesh."""

import functools
import json

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
