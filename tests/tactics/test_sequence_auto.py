"""AutomaticPartition's stage family: a dimension switch at named values finds DSP."""

import functools

import pytest

import partir
from partir.passes.propagate import Propagator
from partir.tactics.auto import build_space, dimension_classes
from partir.tactics.auto.space import stream_names
from partir.tactics.presets import BP
from partir.tactics.sequence import DSP, DSPPartition
from partir.testing import models

MESH = {"batch": 1, "seq": 8}
WIDE = {"d_model": 256, "heads": 8, "d_ff": 1024, "dtype": "bfloat16"}


def context(m, mesh):
    program = partir.trace(m.fn, *m.args)
    mesh_attr = partir.ir.MeshAttr(tuple(mesh.items()))
    outs = list(program.function.body.block.last_op.operands)
    return partir.tactics.TacticContext(
        Propagator(program.module, mesh_attr), program.input_paths,
        list(program.function.args), {}, program.name, program.output_paths, outs,
    )  # fmt: skip


@functools.cache
def video_space():
    m = models.video_dit(abstract=True, layers=1, batch=1, time=16, space=16, **WIDE)
    ctx = context(m, MESH)
    return ctx, build_space(ctx, ["seq"], dimension_classes(ctx))


def test_stages_are_the_stream_names_only():
    # q, k, v and the attention outputs ([B, T, S, H, dh]) are not the data's shape, and
    # the <name>_grad twins are the cotangents of the stages, not stages themselves
    ctx, _ = video_space()
    assert list(stream_names(ctx)) == ["spatial_in", "temporal_in"]


def test_stage_groups_and_switches():
    _, space = video_space()
    stages = [g.stages for g in space.groups if g.stages]
    # dims 1, 2, 3 (time, space, d) are open on seq; batch (1) is not divisible
    singles = {s for s in stages if len(s) == 1}
    switches = {s for s in stages if len(s) == 2}
    assert singles == {((n, d),) for n in ("spatial_in", "temporal_in") for d in (1, 2, 3)}
    assert (("spatial_in", 1), ("temporal_in", 2)) in switches and len(switches) == 6
    index = {g.stages: g.index for g in space.groups if g.stages}
    dsp = index[(("spatial_in", 1), ("temporal_in", 2))]
    # one layout per stage: a switch excludes every other group naming its stages
    assert (index[(("spatial_in", 2),)], dsp) in space.exclusive
    assert not space.compatible([dsp], index[(("temporal_in", 3),)])


def test_no_stage_groups_without_names():
    m = models.get("mlp")
    ctx = context(m, {"batch": 4, "model": 2})
    assert not stream_names(ctx)
    space = build_space(ctx, ["batch", "model"], dimension_classes(ctx))
    assert space.groups and not [g for g in space.groups if g.stages]


def test_search_on_seq_finds_the_dsp_layout():
    m = models.video_dit(abstract=True, layers=1, batch=1, time=64, space=1024, **WIDE)

    def plan_of(schedule):
        step = partir.partition(schedule, mesh=MESH, mode="spmd", hardware="h100")(m.fn)
        return step.plan(*m.args)

    search = partir.AutomaticPartition("seq", budget={"evaluations": 24})
    auto = plan_of([*BP(), search])
    dsp = plan_of([*BP(), *DSP()])
    found = [t for t in auto.tactics_found if isinstance(t, DSPPartition)]
    assert [dict(t.dims) for t in found] == [{"spatial_in": 1, "temporal_in": 2}]
    ratio = auto.simulate("h100").step_time_s / dsp.simulate("h100").step_time_s
    assert ratio <= 1.02
    # the tactics found reproduce the search's plan
    again = plan_of(list(auto.tactics_found))
    assert again.simulate("h100").step_time_s == pytest.approx(auto.simulate("h100").step_time_s)
