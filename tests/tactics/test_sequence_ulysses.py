"""Ulysses sequence parallelism on the zoo's multi-dimensional transformer."""

import collections
import functools

import jax
import numpy as np
import pytest

import partir
from partir.errors import SelectorError, TacticError
from partir.tactics.presets import BP, MP
from partir.tactics.sequence import Ulysses
from partir.testing import models

LAYERS = 2
SCHEDULES = {
    "BP+Ulysses": (lambda: [*BP(), *Ulysses()], {"batch": 2, "seq": 4}),
    "BP+MP+Ulysses": (lambda: [*BP(), *MP(), *Ulysses()], {"batch": 2, "model": 2, "seq": 2}),
}
# all-to-alls per attention forward: q, k, v to heads and the output back; 2 attentions
# per block; the backward pass has as many (their transposes)
PER_ATTENTION = 4
EXPECTED = PER_ATTENTION * 2 * LAYERS * 2


@functools.cache
def model_and_reference():
    m = models.video_dit(layers=LAYERS)
    return m, jax.tree.map(np.asarray, jax.jit(m.fn)(*m.args))


@functools.cache
def plan_of(name: str, mode: str):
    m, _ = model_and_reference()
    schedule, mesh = SCHEDULES[name]
    step = partir.partition(schedule(), mesh=mesh, mode=mode)(m.fn)
    return step, step.plan(*m.args)


@pytest.mark.parametrize("mode", ["annotate", "spmd"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ulysses_step_equals_unpartitioned(name, mode):
    m, ref = model_and_reference()
    step, _ = plan_of(name, mode)
    out = step(*m.args)
    for got, want in zip(jax.tree.leaves(out), jax.tree.leaves(ref), strict=True):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_ulysses_spmd_is_all_to_alls_around_each_attention(name):
    _, plan = plan_of(name, "spmd")
    rows = [c for c in plan.collectives() if c.communicates and "seq" in c.axes]
    a2a = [r for r in rows if r.kind == "all_to_all"]
    assert len(a2a) == EXPECTED, str(plan.collectives())
    # each at one of the attentions' per-head names (forward) or their twins (backward)
    at = collections.Counter(r.reason.split(" at ")[0] for r in a2a)
    assert at == {"operand 0 of name": EXPECTED}, at
    assert not [r for r in rows if r.kind == "all_gather"], str(plan.collectives())


def test_ulysses_moves_more_than_dsp():
    # the paper's comparison on this model: Ulysses re-tiles four values per attention,
    # DSP one per stage (each as big as the residual), so Ulysses sends 4x the activation
    # bytes on seq
    from partir.tactics.sequence import DSP

    m, _ = model_and_reference()

    def seq_bytes(schedule):
        plan = partir.partition(schedule, mesh={"batch": 2, "seq": 4}, mode="spmd")(m.fn)
        rows = plan.plan(*m.args).collectives()
        return sum(c.bytes for c in rows if c.communicates and "seq" in c.axes and not c.serves)

    _, plan = plan_of("BP+Ulysses", "spmd")
    ulysses = sum(
        c.bytes for c in plan.collectives() if c.communicates and "seq" in c.axes and not c.serves
    )
    assert ulysses / seq_bytes([*BP(), *DSP()]) == pytest.approx(4, rel=0.01)


def test_ulysses_names_a_missing_attention():
    m, _ = model_and_reference()
    step = partir.partition(Ulysses(stages=("spatial", "cross")), mesh={"seq": 4})(m.fn)
    with pytest.raises(SelectorError, match="cross_q"):
        step.plan(*m.args)


def test_ulysses_rejects_heads_not_divisible_by_the_axis():
    m = models.video_dit(layers=1, heads=2, time=8, space=8)
    step = partir.partition(Ulysses(), mesh={"seq": 4})(m.fn)
    with pytest.raises(TacticError, match="heads_dim"):
        step.plan(*m.args)


def test_ulysses_rejects_bad_arguments():
    with pytest.raises(TacticError, match="must differ"):
        Ulysses(dim=3)
    with pytest.raises(TacticError, match="dim"):
        Ulysses(dim="time")  # type: ignore[arg-type]
    with pytest.raises(TacticError, match="stages"):
        Ulysses(stages=())
