"""Notebook display: sharding grids agree with JAX, the memory timeline with liveness."""

import builtins
import functools
import re

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import partir
from partir._display import Colours, device_ids, sharding_grid, tiles
from partir.simulator.display import report_html
from partir.tactics.presets import BP, MP, SP, Z3
from partir.testing import models


@functools.cache
def mesh_2d():
    return jax.make_mesh((4, 2), ("batch", "model"), axis_types=(AxisType.Auto,) * 2)


@functools.cache
def gpt_plan(schedule_name):
    schedule = {"BP+MP+Z3": [*BP(), *MP(), *Z3()], "MP+SP": [*MP(), *SP()]}[schedule_name]
    m = models.get("gpt", abstract=True, dtype="float32", layers=2)
    return partir.partition(schedule, mesh=mesh_2d())(m.fn).plan(*m.args)


def _slices_to_tile(index, shape):
    return tuple(
        (s.start or 0) // ((s.stop or n) - (s.start or 0))
        for s, n in zip(index, shape, strict=True)
    )


@pytest.mark.parametrize("schedule_name", ["BP+MP+Z3", "MP+SP"])
def test_tiles_agree_with_jax_devices_indices_map(schedule_name):
    """Which devices hold which tile, from the plan alone, equals what JAX's NamedSharding
    says for every input (the oracle: `devices_indices_map`)."""
    p = gpt_plan(schedule_name)
    ids = device_ids(p.mesh)
    axes = list(p.mesh.axis_names)
    shardings = jax.tree.leaves(p.in_shardings)
    checked = 0
    for value, sharding in zip(p.program.function.args, shardings, strict=True):
        shape = tuple(value.type.get_shape())
        ours = tiles(p.sharding_of(value).dims, axes, ids)
        theirs: dict[tuple[int, ...], list[int]] = {}
        for device, index in sharding.devices_indices_map(shape).items():
            theirs.setdefault(_slices_to_tile(index, shape), []).append(device.id)
        assert ours == {k: tuple(sorted(v)) for k, v in theirs.items()}
        checked += 1
    assert checked == len(p.program.input_paths)


def test_device_ids_of_an_abstract_mesh_are_positions():
    mesh = jax.sharding.AbstractMesh((4, 2), ("batch", "model"))
    assert device_ids(mesh).tolist() == np.arange(8).reshape(4, 2).tolist()


def test_sharding_grid_shapes_and_colours():
    ids = np.arange(8).reshape(4, 2)
    colours = Colours()
    both = sharding_grid((32, 16), (("batch",), ("model",)), ["batch", "model"], ids, colours)
    assert "repeat(2," in both and both.count("<div title=") == 8
    # a value sharded on one axis: 4 tiles, each on 2 devices, one colour per device set
    rows = sharding_grid((32, 16), (("batch",), ()), ["batch", "model"], ids, colours)
    assert rows.count("<div title=") == 4 and "repeat(1," in rows
    assert ">0,1<" in rows and ">6,7<" in rows
    assert len(colours.seen) == 8 + 4
    replicated = sharding_grid((5,), ((),), ["batch", "model"], ids, colours)
    assert replicated.count("<div title=") == 1 and ">0-7<" in replicated


def test_plan_html_shows_grids_history_and_collectives():
    p = gpt_plan("BP+MP+Z3")
    p.simulate("tpu-v5p")
    html = p._repr_html_()
    assert html.count('class="partir-grid"') >= 5
    assert "History on mesh" in html and "tpu-v5p" in html
    assert "all_reduce(model)" in html and "(unpartitioned)" in html
    assert f"{len(p.conflicts)} conflicts" in html
    # every communicating (kind, axes) of the plan is in the collectives summary
    for kind, axes in p.collectives().summary():
        if kind != "all_slice":
            assert re.search(rf"<td>{kind}</td><td>{','.join(axes)}</td>", html)


def test_report_html_has_both_plots():
    pytest.importorskip("matplotlib")
    report = gpt_plan("MP+SP").simulate("h100")
    html = report._repr_html_()
    assert html.count("<svg") == 1
    # Report.plot()'s two panels: the time breakdown and the memory timeline
    assert 'id="axes_1"' in html and 'id="axes_2"' in html
    assert "Top compute ops" in html and "Simulated on h100" in html


def test_report_html_without_matplotlib(monkeypatch):
    report = gpt_plan("MP+SP").simulate("h100")
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    html = report_html(report)
    assert "<svg" not in html and "pip install matplotlib" in html
    assert "Top compute ops" in html


def test_collective_table_html():
    table = gpt_plan("MP+SP").collectives()
    html = table._repr_html_()
    n = sum(c.communicates for c in table)
    assert f"<h3>{n} communicating collectives" in html
    assert html.count("<tr>") == len(table.summary()) + 1 + len(table) + 1 - sum(
        1 for k, _ in table.summary() if k == "all_slice"
    )


@pytest.mark.parametrize(
    ("mfu", "text"),
    [(0.5, "50.0%"), (0.0012, "0.1%"), (0.00021, "0.021%"), (3e-6, "0.0003%"), (1e-8, "<0.0001%"),
     (0.0, "0.0%"), (float("nan"), "-")],
)  # fmt: skip
def test_mfu_keeps_enough_digits_to_be_nonzero(mfu, text):
    from partir.simulator.display import fmt_mfu

    assert fmt_mfu(mfu) == text
