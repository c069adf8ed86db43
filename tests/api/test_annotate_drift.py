"""`plan.check_compiled()` names where the compiled program drifted from the plan: each
missing and extra collective with its HLO instruction, the plan's value and source line
(or the foreign code's own line), and XLA's involuntary full rematerializations."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import partir
from partir.backend.annotate import op_numbers
from partir.plan.check import check_compiled, remats_in
from partir.plan.check_records import REMAT_MARKER

SCHEDULE = [
    partir.ManualPartition({"x": 0}, axis="batch"),
    partir.ManualPartition({"params/w_in": 1, "params/w_out": 0}, axis="model"),
]


def loss(params, x):
    h = jnp.tanh(x @ params["w_in"])
    return jnp.sum(h @ params["w_out"])


def _args():
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    params = {"w_in": jax.random.normal(k1, (16, 32)), "w_out": jax.random.normal(k2, (32, 8))}
    return params, jax.random.normal(k3, (8, 16))


@pytest.fixture(scope="module", params=["auto", "explicit"])
def plan(request):
    kind = AxisType.Auto if request.param == "auto" else AxisType.Explicit
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(kind,) * 2)
    return partir.partition(SCHEDULE, mesh=mesh)(loss).plan(*_args())


def test_planned_program_names_every_collective(plan):
    check = plan.check_compiled()
    if plan.mesh.axis_types[0] == AxisType.Explicit:
        assert check.agrees, str(check)  # the pending sum is unreduced: XLA follows the plan
    else:
        # on an Auto mesh XLA reduces the partial loss per axis, early: named drift
        assert not check.agrees
        (gone,) = check.missing
        assert gone.planned.kind == "all_reduce" and gone.planned.reason == "out"
        assert {c.name for c in check.compiled_at(gone.planned.source)} == {
            b.instruction for b in check.extra
        }
    assert not check.remats
    # every compiled collective is named with the plan's op it serves
    for c in check.compiled:
        origin = check.origins[c.name]
        assert origin.value, origin
        assert "test_annotate_drift.py" in origin.source


def _foreign_lines() -> tuple[int, int]:
    lines, first = inspect.getsourcelines(foreign_loss)
    return first, first + len(lines)


def foreign_loss(params, x, mesh):
    h = jnp.tanh(x @ params["w_in"])
    h = jax.lax.with_sharding_constraint(h, NamedSharding(mesh, P(None, None)))  # foreign
    return jnp.sum(h @ params["w_out"])


def test_foreign_constraint_is_named(plan):
    mesh = jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)
    ins = jax.tree.map(lambda s: NamedSharding(mesh, s.spec), plan.in_shardings)
    step = jax.jit(lambda p, x: foreign_loss(p, x, mesh), in_shardings=ins)
    compiled = step.lower(*_args()).compile()
    check = check_compiled(plan, compiled)
    text = str(check)
    assert not check.agrees, text
    assert check.extra, text  # replicating h gathers it: a collective the plan does not have
    for b in check.extra:
        origin = check.origin(b)
        assert origin is not None and origin.hlo_op == b.instruction
        assert f"%{b.instruction}" in text
    # XLA's gather of h is made for the op whose result the foreign constraint moves: named
    # by the foreign function's own lines (the HLO's stack frames), not by the plan's
    lines = {check.origin(b).source for b in check.extra}
    first, last = _foreign_lines()
    assert any(
        f"test_annotate_drift.py:{n} (foreign_loss)" in s for s in lines for n in range(first, last)
    ), (lines, text)
    for m in check.missing:  # a planned collective XLA did not make: named by the plan
        assert "test_annotate_drift.py" in m.planned.source
        assert m.planned.source in text
    d = check.to_dict()
    assert all(e["at"] for e in d["extra"])


def test_remat_warnings_are_named(plan):
    # XLA's log line (the format of its SPMD partitioner's warning), naming an instruction
    # emitted for the plan's first dot_general, and one that names no instruction
    numbers = op_numbers(plan.program.module)
    k = next(n for op, n in numbers.items() if getattr(op, "primitive_name", "") == "dot_general")
    log = (
        f"W0000 spmd_partitioner.cc:1] [SPMD] {REMAT_MARKER}. The compiler cannot go from "
        "sharding {devices=[4,1]<=[4]} to {devices=[1,4]<=[4]} efficiently for HLO "
        'operation %reshape.7 = f32[8,32]{1,0} reshape(%p), metadata={op_name="jit(run)/'
        f'partir_op{k}/reshape"}}.\nI0000 something else\n'
        f"W0000 spmd_partitioner.cc:1] [SPMD] {REMAT_MARKER}. no instruction here\n"
    )
    remats = remats_in(plan, log)
    assert len(remats) == 2
    first = remats[0].origin
    assert first is not None and first.hlo_op == "reshape.7"
    assert first.value.startswith("dot_general") and "test_annotate_drift.py" in first.source
    assert "reshape.7" in str(remats[0])
    assert remats[1].origin is None
