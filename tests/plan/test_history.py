"""`plan.history`: per tactic, the values it sharded, its collectives, conflicts and cost.

The Megatron figures come from the model config (Shoeybi et al. 2019, §3: 2 all-reduces per
layer forward and 2 backward, each of one activation), never hard-coded.
"""

import collections
import functools

import jax
import pytest
from jax.sharding import AxisType

import partir
from partir.plan.history import diff_collectives
from partir.tactics.presets import BP, MP, Z3
from partir.testing import models

ITEMSIZE = 4  # f32


@functools.cache
def mesh_2d():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


def plan(schedule, layers=2):
    m = models.get("gpt", abstract=True, dtype="float32", layers=layers)
    return m, partir.partition(schedule, mesh=mesh_2d())(m.fn).plan(*m.args)


def multiset(collectives):
    return collections.Counter(
        (c.kind, c.axes, c.shape, c.bytes, c.source) for c in collectives if c.communicates
    )


@pytest.mark.parametrize("layers", [2, 3])
def test_history_mp_after_bp_adds_exactly_the_megatron_all_reduces(layers):
    m, p = plan([*BP(), *MP()], layers=layers)
    c = m.config
    history = p.history
    assert [s.index for s in history] == [0, 1]
    mp = history[1]
    assert mp.axis == "model"
    local_batch = c.batch // mesh_2d().shape["batch"]
    activation = local_batch * c.seq * c.d_model * ITEMSIZE
    added = [x for x in mp.added if x.communicates]
    assert len(added) == 4 * c.layers, "\n".join(map(str, added))
    assert all(x.kind == "all_reduce" and x.axes == ("model",) for x in added)
    assert all(x.bytes == activation for x in added)
    assert not [x for x in mp.removed if x.communicates]
    # the data-parallel gradient all-reduces of the now model-sharded weights shrink
    assert mp.resized and all(r.after.bytes < r.before.bytes for r in mp.resized)
    assert mp.peak_memory_change_bytes < 0
    assert mp.after.peak_memory_bytes < mp.before.peak_memory_bytes


def test_history_prefixes_match_separate_plans():
    """Prefix k of the replay is the plan of schedule[:k]: same collectives."""
    _, bp = plan(BP())
    _, bp_mp = plan([*BP(), *MP()])
    history = bp_mp.history
    assert multiset(history[0].collectives) == multiset(bp.collectives())
    assert multiset(history[1].collectives) == multiset(bp_mp.collectives())
    assert multiset(history[0].added) == multiset(bp.collectives())


def test_history_values_seeded_reached_and_conflicts():
    _, p = plan([*BP(), *MP(), *Z3()])
    history = p.history
    bp, mp, z3 = history
    assert {path for path, _ in bp.seeded} == {"batch/tokens", "batch/targets"}
    assert bp.values_decided > len(bp.seeded)
    # batch parallelism reaches the loss output but no parameter
    assert "out/2" in bp.reached
    assert not any(path.startswith("params/") for path in bp.reached)
    assert any(path.startswith("params/blocks/0/attn/q") for path, _ in mp.seeded)
    # every conflict is attributed to exactly one tactic
    assert sum(len(s.conflicts) for s in history) == len(p.conflicts)
    assert all(2 in c.tactic_indices for c in z3.conflicts)
    assert not bp.conflicts
    text = str(history)
    assert "all_reduce(model)" in text and "(unpartitioned)" in text
    assert text.count("\n#") >= 3


def test_history_uses_the_last_simulated_hardware():
    _, p = plan([*BP(), *MP()])
    assert p.history.hardware == "cpu"
    report = p.simulate("tpu-v5p")
    history = p.history
    assert history.hardware == "tpu-v5p"
    # the last prefix is the plan itself
    assert history[-1].after.step_time_s == pytest.approx(report.step_time_s)
    assert history[-1].after.peak_memory_bytes == report.peak_memory_bytes
    h100 = p.history_for("h100")
    assert h100.hardware == "h100"
    assert h100[0].after.step_time_s != history[0].after.step_time_s
    assert p.history.hardware == "tpu-v5p"  # history_for does not change the default


def test_history_time_deltas_add_up():
    _, p = plan([*BP(), *MP(), *Z3()])
    history = p.history_for("h100")
    total = sum(s.step_time_change_s for s in history)
    assert history.start.step_time_s + total == pytest.approx(history[-1].after.step_time_s)
    assert history[0].before is history.start


def test_diff_collectives_matches_by_place_and_kind():
    from partir.plan.collectives import Collective

    def coll(kind, nbytes, source="a.py:1"):
        return Collective(kind, ("x",), "float32", (nbytes // 4,), nbytes, source, "operand 0")

    before = [coll("all_reduce", 16), coll("all_gather", 8), coll("all_gather", 8, "b.py:2")]
    after = [coll("all_reduce", 8), coll("all_gather", 8), coll("reduce_scatter", 4)]
    added, removed, resized = diff_collectives(before, after)
    assert [c.kind for c in added] == ["reduce_scatter"]
    assert [c.source for c in removed] == ["b.py:2"]
    assert [(r.before.bytes, r.after.bytes) for r in resized] == [(16, 8)]
