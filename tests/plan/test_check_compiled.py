"""plan.check_compiled(): the collectives XLA compiled against the ones the plan planned.

The zoo test compiles every zoo model x preset schedule in spmd mode on a (4, 2) mesh (27
compiles of the default, small configs: about a minute on two CPU cores) and requires every
planned communicating collective to be in the compiled HLO with the same kind, axes and bytes,
and nothing else there.
"""

import json
import math
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType

import partir
from partir.backend.hlo import CompiledCollective
from partir.plan.check import (
    EQUIVALENCES,
    FOUND_FORMS,
    CompiledCheck,
    check_compiled,
    compare,
)
from partir.plan.collectives import Collective, CollectiveTable
from partir.testing import models, schedules


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


def _plan(mesh, name, schedule, mode, **config):
    model = models.get(name, abstract=True, **config)
    step = partir.partition(schedules.schedule(name, schedule), mesh=mesh, mode=mode)(model.fn)
    return step.plan(*model.args)


def assert_well_formed(check: CompiledCheck) -> None:
    """Every planned collective and every compiled buffer is accounted for exactly once."""
    assert isinstance(check, CompiledCheck)
    assert len(check.matched) + len(check.missing) == len(check.planned)
    compiled_buffers = sum(len(c.shapes) for c in check.compiled)
    used = sum(len(m.compiled) for m in check.matched)
    assert used + len(check.extra) == compiled_buffers
    for r in check.rows:
        assert r.planned_count == r.found + sum(r.equivalent.values()) + r.missing
        if r.kind != "all_to_all":  # an all-to-all's n buffers are one found collective
            assert r.compiled_count == r.found + r.standing_in + r.extra, r
    for m in check.matched:
        assert m.how in FOUND_FORMS or m.how in EQUIVALENCES
    data = check.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["all_planned_found"] == check.all_planned_found
    text = str(check)
    assert text.splitlines()[1].split()[:2] == ["kind", "axes"]
    assert len(text.splitlines()) >= 2 + len(check.rows)


# ------------------------------------------------------------------ zoo x schedules, spmd

ZOO_CASES = [
    (name, schedule)
    for name in sorted(models.MODELS)
    for schedule in schedules.SCHEDULES
    if schedules.applicable(name, schedule)
]

KNOWN_DRIFT: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize(
    ("name", "schedule"),
    [
        pytest.param(*case, marks=pytest.mark.xfail(strict=True, reason=KNOWN_DRIFT[case]))
        if case in KNOWN_DRIFT
        else case
        for case in ZOO_CASES
    ],
)
def test_spmd_plan_is_what_compiles(mesh, name, schedule):
    plan = _plan(mesh, name, schedule, "spmd")
    check = plan.check_compiled()
    assert_well_formed(check)
    assert check.planned, "every preset schedule communicates on this mesh"
    assert check.all_planned_found, str(check)
    assert not check.extra, str(check)
    assert check.agrees
    for r in check.rows:
        assert r.status == "ok", str(check)
        assert (r.planned_count, r.planned_bytes) == (r.compiled_count, r.compiled_bytes)


def test_zoo_cases_cover_every_model_and_schedule():
    assert {n for n, _ in ZOO_CASES} == set(models.MODELS)
    assert {s for _, s in ZOO_CASES} == set(schedules.SCHEDULES)


# ------------------------------------------------------------------ annotate mode


def test_annotate_gpt_bp_mp_reports_xla_departures(mesh):
    plan = _plan(mesh, "gpt", "BP+MP", "annotate")
    check = plan.check_compiled()
    assert_well_formed(check)
    assert check.mode == "annotate"
    model = check.row("all_reduce", ("model",))
    assert model is not None and model.compiled_count > 0
    # partir's all-reduces over model (4 per layer) are in what XLA compiled ...
    assert model.found == model.planned_count == 4 * 2
    # ... and whatever else XLA chose is listed, not hidden
    assert model.extra == model.compiled_count - model.found
    assert all(b.kind == "all_reduce" and b.axes == ("model",) for b in check.extra)
    text = str(check)
    assert "all_reduce" in text and "model" in text


def test_annotate_reduce_scatter_is_reported_as_all_reduce_plus_slice(mesh):
    plan = _plan(mesh, "mlp", "BP+MP+Z2", "annotate")
    check = plan.check_compiled()
    assert_well_formed(check)
    rs = check.row("reduce_scatter", ("batch",))
    assert rs is not None and rs.planned_count > 0
    assert rs.equivalent.get("reduce_scatter_as_all_reduce") == rs.planned_count
    assert not check.all_planned_found  # done another way, so not *found* ...
    assert "MISSING" not in rs.status  # ... but not called a mismatch either
    assert "reduce_scatter_as_all_reduce" in str(check)


# ------------------------------------------------------------------ all-to-all


def _transpose_add(a, b):
    return jnp.tanh(a + b.T)


@pytest.mark.parametrize("mode", ["spmd", "annotate"])
def test_all_to_all_split_into_buffers_is_found(mesh, mode):
    a, b = jnp.ones((16, 32)), jnp.ones((32, 16))
    tactic = partir.ManualPartition({"a": 0, "b": 0}, axis="batch")
    plan = partir.partition([tactic], mesh=mesh, mode=mode)(_transpose_add).plan(a, b)
    check = plan.check_compiled()
    assert_well_formed(check)
    assert [c.kind for c in check.planned] == ["all_to_all"]
    (match,) = check.matched
    assert match.how in ("exact", "all_to_all_buffers")
    assert sum(b.bytes for b in match.compiled) == match.planned.bytes
    assert check.agrees, str(check)


# ------------------------------------------------------------------ drift


class _Drifted:
    """A real plan whose planned collectives were edited: what compiles no longer matches."""

    def __init__(self, plan, collectives):
        self.mesh, self.mode, self._plan, self._collectives = (
            plan.mesh,
            plan.mode,
            plan,
            collectives,
        )

    def lower(self):
        return self._plan.lower()

    def collectives(self):
        return CollectiveTable(self._collectives)


def test_unplanned_compiled_collective_is_extra(mesh):
    plan = _plan(mesh, "mlp", "BP+MP", "spmd")
    planned = [c for c in plan.collectives() if c.communicates]
    dropped = next(c for c in planned if c.axes == ("model",))
    kept = list(planned)
    kept.remove(dropped)
    check = check_compiled(_Drifted(plan, kept))
    assert_well_formed(check)
    assert check.all_planned_found and not check.agrees
    assert [(b.kind, b.axes, b.bytes) for b in check.extra] == [
        ("all_reduce", ("model",), dropped.bytes)
    ]
    assert "EXTRA" in check.row("all_reduce", ("model",)).status
    assert "extra (compiled, not planned)" in str(check)


def test_planned_but_not_compiled_is_missing(mesh):
    plan = _plan(mesh, "mlp", "BP", "spmd")
    ghost = Collective("all_gather", ("model",), "float32", (3, 5), 60, "nowhere:1", "test")
    check = check_compiled(_Drifted(plan, [*plan.collectives(), ghost]))
    assert_well_formed(check)
    assert not check.all_planned_found and not check.all_planned_accounted
    assert [m.planned for m in check.missing] == [ghost]
    assert "no all_gather over model" in check.missing[0].hint
    assert check.to_dict()["missing"][0]["type"] == "f32[3, 5]"


def test_annotate_drift_shows_under_extra(mesh):
    # XLA's own choice in annotate mode: it reduces the q, k and v input gradients separately
    plan = _plan(mesh, "gpt", "MP", "annotate", layers=1)
    check = plan.check_compiled()
    assert_well_formed(check)
    assert check.all_planned_found
    assert check.extra and not check.agrees
    assert {(b.kind, b.axes) for b in check.extra} == {("all_reduce", ("model",))}


# ------------------------------------------------------------------ compare(), no compiling


def _planned(kind, axes, shape, dtype="float32"):
    n = math.prod(shape) * 4
    return Collective(kind, axes, dtype, shape, n, "src", "why")


def _compiled(kind, axes, *shapes, name="op"):
    shapes = tuple(("f32", s) for s in shapes)
    n = sum(math.prod(s) * 4 for _, s in shapes)
    return CompiledCollective(kind, name, shapes, n, None, None, None, axes)


MESH = {"batch": 4, "model": 2}


def test_compare_counts_buffers_of_combined_ops():
    planned = [_planned("all_reduce", ("batch",), s) for s in [(8,), (4, 4), (8,)]]
    compiled = [_compiled("all_reduce", ("batch",), (8,), (8,), (4, 4))]
    check = compare(planned, compiled, MESH)
    assert check.agrees
    assert all(m.combined for m in check.matched)
    (row,) = check.rows
    assert (row.compiled_count, row.compiled_ops, row.status) == (3, 1, "ok")


def test_compare_reduce_scatter_as_all_reduce_uses_leftovers_only():
    planned = [
        _planned("all_reduce", ("batch",), (16,)),
        _planned("reduce_scatter", ("batch",), (4,)),
    ]
    # two all-reduces of 16 floats: one is the planned all-reduce, one the reduce-scatter's
    compiled = [_compiled("all_reduce", ("batch",), (16,), (16,))]
    check = compare(planned, compiled, MESH, "annotate")
    assert [m.how for m in check.matched] == ["exact", "reduce_scatter_as_all_reduce"]
    assert check.all_planned_accounted and not check.all_planned_found and not check.extra
    assert check.row("all_reduce", ("batch",)).standing_in == 1
    assert check.equivalences == {"reduce_scatter_as_all_reduce": 1}


def test_compare_all_reduce_per_axis():
    planned = [_planned("all_reduce", ("batch", "model"), ())]
    compiled = [
        _compiled("all_reduce", ("batch",), (), name="a"),
        _compiled("all_reduce", ("model",), (), name="b"),
    ]
    check = compare(planned, compiled, MESH, "annotate")
    assert [m.how for m in check.matched] == ["all_reduce_per_axis"]
    assert check.all_planned_accounted and not check.extra


def test_compare_all_to_all_instruction_with_n_buffers():
    planned = [_planned("all_to_all", ("batch",), (32, 4))]
    compiled = [_compiled("all_to_all", ("batch",), *[(8, 4)] * 4)]
    check = compare(planned, compiled, MESH)
    assert [m.how for m in check.matched] == ["all_to_all_buffers"]
    assert check.agrees
    assert check.rows[0].compiled_count == 4 and check.rows[0].compiled_ops == 1


def test_compare_merged_duplicates_are_missing_with_a_hint():
    planned = [_planned("all_gather", ("batch",), (8, 8))] * 2
    compiled = [_compiled("all_gather", ("batch",), (8, 8))]
    check = compare(planned, compiled, MESH)
    assert not check.all_planned_found
    (missing,) = check.missing
    assert "1 all_gather buffer(s)" in missing.hint and "the plan has 2" in missing.hint


def test_compare_unknown_axes_and_unplanned_kinds_are_extra():
    compiled = [
        _compiled("collective_permute", ("batch", "model"), (4,)),
        _compiled("all_reduce", None, (4,)),
    ]
    check = compare([_planned("all_slice", ("batch",), (4,))], compiled, MESH)
    assert check.planned == [] and check.all_planned_found
    assert len(check.extra) == 2 and not check.agrees
    assert "?" in str(check)


def test_plan_method_delegates(mesh):
    plan = _plan(mesh, "mlp", "BP", "spmd")
    check = plan.check_compiled()
    assert isinstance(check, CompiledCheck) and check.agrees
    again = check_compiled(plan, compiled=plan.lower().compile().as_text())
    # from_cache says whether XLA compiled during the first check; the comparison is the same
    assert {**again.to_dict(), "from_cache": None} == {**check.to_dict(), "from_cache": None}


def test_stub_namespace_plan(mesh):
    # check_compiled only needs mesh, mode, lower() and collectives()
    f = jax.jit(lambda x: x * 2)
    stub = SimpleNamespace(
        mesh=mesh, mode="annotate", lower=lambda: f.lower(jnp.ones(4)), collectives=list
    )
    check = check_compiled(stub)
    assert check.agrees and check.rows == []
    assert "match the plan" in str(check)
