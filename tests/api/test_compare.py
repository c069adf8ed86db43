"""`partir.compare`: its table is what separate `partition(...).plan(...).simulate(hw)` give."""

import pytest

import partir
from partir.errors import TacticError
from partir.plan.history import tactic_label
from partir.tactics.presets import BP, MP, Z3
from partir.testing import models

SCHEDULES = {"BP": BP(), "BP+MP": [*BP(), *MP()], "BP+MP+Z3": [*BP(), *MP(), *Z3()]}
HARDWARE = ("tpu-v5p", "h100")


@pytest.fixture(scope="module")
def gpt():
    return models.get("gpt", abstract=True, layers=2)


@pytest.fixture(scope="module")
def table(gpt, mesh):
    return partir.compare(SCHEDULES, gpt.fn, *gpt.args, mesh=mesh, hardware=HARDWARE)


def test_rows_equal_separate_simulate_calls(table, gpt, mesh):
    assert [(r.hardware, r.schedule) for r in table] == [
        (hw, name) for hw in HARDWARE for name in SCHEDULES
    ]
    for row in table:
        plan = partir.partition(SCHEDULES[row.schedule], mesh=mesh, mode="spmd")(gpt.fn).plan(
            *gpt.args
        )
        report = plan.simulate(row.hardware)
        assert row.step_time_s == report.step_time_s
        assert row.step_time_overlap_s == report.step_time_overlap_s
        assert row.communication_time_s == report.communication_time_s
        assert row.communication_bytes == report.communication_bytes
        assert row.peak_memory_bytes == report.peak_memory_bytes
        assert row.fits == report.fits and row.mfu == report.mfu
        runs = sum(s["count"] for s in report.collective_summary().values())
        assert row.collectives == pytest.approx(runs)
        # in spmd mode every collective runs once per step here (no loops)
        assert row.collectives == sum(c.communicates for c in plan.collectives())
        assert row.clashes == sum(c.kind == "clash" for c in plan.conflicts)


def test_schedules_differ_where_they_should(table):
    by = {(r.hardware, r.schedule): r for r in table}
    for hw in HARDWARE:
        # ZeRO-3 splits parameters and optimizer state: less memory than BP+MP
        assert by[(hw, "BP+MP+Z3")].peak_memory_bytes < by[(hw, "BP+MP")].peak_memory_bytes
        assert by[(hw, "BP")].collectives_by_kind.keys() == {"all_reduce"}
        assert "all_gather" in by[(hw, "BP+MP+Z3")].collectives_by_kind


def test_table_text_has_a_line_per_row_and_the_numbers(table):
    text = str(table)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["schedule", "mesh", "hardware"]
    assert len(lines) == len(table) + 2
    for row, line in zip(table, lines[1:], strict=False):
        assert line.startswith(row.schedule) and row.hardware in line
    assert "<table" in table._repr_html_()


def test_meshes_list_and_unnamed_schedules(gpt):
    rows = partir.compare(
        [BP(), [*BP(), *MP()]],
        gpt.fn,
        *gpt.args,
        mesh=[{"batch": 8, "model": 1}, {"batch": 4, "model": 2}],
        hardware="tpu-v5p",
    )
    assert [r.mesh for r in rows] == ["batch=8 x model=1"] * 2 + ["batch=4 x model=2"] * 2
    # an unnamed schedule is named by its tactics' short labels
    assert rows[0].schedule == tactic_label(BP()[0], 32)
    assert rows[1].schedule == " + ".join(tactic_label(t, 32) for t in [*BP(), *MP()])
    assert len({r.schedule for r in rows}) == 2


def test_plot_draws_one_bar_per_row_and_panel(table):
    pytest.importorskip("matplotlib")
    fig = table.plot()
    time_ax, memory_ax, comm_ax = fig.axes
    assert len(time_ax.patches) == 2 * len(table)
    assert len(memory_ax.patches) == len(comm_ax.patches) == len(table)


def test_bad_schedules_argument_says_what_to_pass(gpt):
    with pytest.raises(TacticError, match="mapping name -> schedule"):
        partir.compare("BP", gpt.fn, *gpt.args, mesh={"batch": 4, "model": 2})
