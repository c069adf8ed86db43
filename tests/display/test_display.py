"""Notebook display: sharding grids agree with JAX, the memory timeline with liveness."""

import builtins
import functools
import re

import jax
import numpy as np
import pytest
from jax.sharding import AxisType

import partir
from partir.display.notebook import Colours, device_ids, sharding_grid, tiles
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


@pytest.mark.parametrize("schedule_name", ["BP+MP+Z3", "MP+SP"])
def test_zoo_gpt_collectives_blame_the_model_and_name_gradients(schedule_name):
    """On the zoo GPT (an optax AdamW step), every collective's location is in the
    model's own files (none in optax, jax or site-packages), and every parameter's
    gradient reduction names the parameter it serves."""
    p = gpt_plan(schedule_name)
    table = p.collectives()
    model_files = {"partir/testing/_zoo.py", "partir/testing/_transformer_models.py"}
    for c in table:
        assert c.source.split(":")[0] in model_files, c
    params = [path for path in p.program.input_paths if path.startswith("params/")]
    named = [c.serves for c in table if c.serves]
    assert len(named) == len(set(named))  # one reduction per gradient (optimized)
    if schedule_name == "BP+MP+Z3":
        # the data is split on 'batch': every gradient is a pending sum there
        assert set(named) == {f"grad of {path}" for path in params}
    else:
        # the data is split on 'model' (SP): every parameter replicated on it has a
        # pending-sum gradient; one split there (MP's) is whole on each device
        replicated = {path for path in params if "model" not in str(p.sharding_of(path).spec)}
        assert replicated and set(named) == {f"grad of {path}" for path in replicated}
    # only reductions name a gradient, and every named one is a reduction
    assert all(c.kind in ("all_reduce", "reduce_scatter") for c in table if c.serves)
    # the library frame stays as a secondary note: the gradient reductions the model's
    # line handed to optax say where in optax, by package path (no site-packages prefix)
    vias = [c.via for c in table if c.via]
    assert vias and all(v.startswith("optax/") for v in vias), vias
    text = str(table)
    assert all(f"{serves}: " in text for serves in named)
    # the loss is reduced as an output named by its path
    loss = [c for c in table if c.reason.startswith("out/")]
    assert loss and all(re.fullmatch(r"out/\d+(/.*)?", c.reason) for c in loss)


def test_summary_groups_layers_and_names_every_leaf_once():
    p = gpt_plan("BP+MP+Z3")
    text = p.summary()
    params = [path for path in p.program.input_paths if path.startswith("params/")]
    layers = {path.split("/")[2] for path in params if path.startswith("params/blocks/")}
    assert len(layers) == 2
    # one line for q of every layer, with the plan's own sharding of layer 0
    spec = str(p.sharding_of("params/blocks/0/attn/q").spec).replace("PartitionSpec", "P")
    (line,) = [ln for ln in text.splitlines() if ln.strip().startswith("blocks/*/attn/q ")]
    assert spec in line and line.rstrip().endswith("x2"), line
    assert "blocks/0/attn/q" not in text
    # the leaf counts add up to the inputs and outputs
    counts = [int(m) for m in re.findall(r"\((\d+) lea(?:ves|f)\)", text)]
    assert sum(counts) == len(p.program.input_paths) + len(p.program.output_paths)
    assert "0 clashes" in text.splitlines()[0]


def test_summary_splits_a_pattern_whose_layers_differ():
    m = models.get("gpt", abstract=True, dtype="float32", layers=2)
    schedule = [partir.ManualPartition({"params/blocks/0/attn/q": 1}, axis="model")]
    p = partir.partition(schedule, mesh=mesh_2d())(m.fn).plan(*m.args)
    lines = [ln.strip() for ln in p.summary().splitlines()]
    assert any(ln.startswith("blocks/0/attn/q ") and "'model'" in ln for ln in lines)
    assert any(ln.startswith("blocks/1/attn/q ") and "P()" in ln for ln in lines)


@pytest.mark.parametrize("path", ["params/blocks/0/attn/q", "params/head", "batch/tokens"])
def test_show_sharding_cells_are_the_jax_tiles(path):
    """Each cell's element ranges and devices are what JAX's NamedSharding says."""
    p = gpt_plan("BP+MP+Z3")
    text = str(p.show_sharding(path))
    sharding = p.sharding_of(path)
    value = dict(zip(p.program.input_paths, p.program.function.args, strict=True))[path]
    shape = tuple(value.type.get_shape())
    theirs: dict[str, list[int]] = {}
    for device, index in sharding.devices_indices_map(shape).items():
        key = ", ".join(
            ":" if (s.start, s.stop) in ((None, None), (0, n)) else f"{s.start}:{s.stop}"
            for s, n in zip(index, shape, strict=True)
        )
        theirs.setdefault(key, []).append(device.id)
    cells = re.findall(r"\[([^\]]*)\]", text.split("\n", 1)[1])
    devs = re.findall(r"dev ([\d,\-]+)", text)
    assert len(cells) == len(devs) == len(theirs)
    for cell, dev in zip(cells, devs, strict=True):
        ids = sorted(theirs[cell])
        expect = (
            f"{ids[0]}-{ids[-1]}"
            if len(ids) > 2 and ids == list(range(ids[0], ids[-1] + 1))
            else ",".join(map(str, ids))
        )
        assert dev == expect, (cell, dev, ids)
    assert path in text.splitlines()[0]


def test_describe_is_compact_and_full_is_the_ir():
    p = gpt_plan("BP+MP+Z3")
    compact = p.describe()
    assert len(compact.splitlines()) < len(p.ir().splitlines()) // 5
    assert "out/0 (29 leaves): as params" in compact
    assert p.describe(full=True) == p.ir()
    assert str(p) == compact  # print(plan) is the compact view
    n = sum(c.communicates for c in p.collectives())
    assert f"collectives: {n} communicating" in compact


def test_report_says_latency_bound_by_its_rule():
    """The toy GPT's collectives are a few KiB: their latency, not their bytes, sets the
    time, and the headline says so; the split into bandwidth and latency time is the
    collectives' bytes at the links' achieved bandwidth."""
    p = gpt_plan("BP+MP+Z3")
    report = p.simulate("h100")
    moved = 0.0
    for row in report.collectives:
        links = [report.topology[a].link for a in row.axes]
        if row.bytes_sent:
            moved += row.bytes_sent / min(k.bandwidth_bytes_per_s * k.efficiency for k in links)
    assert report.bandwidth_time_s == pytest.approx(min(moved, report.communication_time_s))
    assert report.latency_time_s == pytest.approx(
        report.communication_time_s - report.bandwidth_time_s
    )
    comm, compute = report.communication_time_s, report.compute_time_s
    expected = (
        "compute-bound"
        if comm < compute
        else "latency-bound"
        if report.latency_time_s > comm / 2
        else "communication-bound"
    )
    assert report.bound == expected == "latency-bound"
    text = str(report)
    assert "latency-bound: communication" in text
    assert "latency-bound" in report_html(report, plots=False)


def test_report_explains_flop_counts_only_where_they_differ():
    p = gpt_plan("BP+MP+Z3")
    report = p.simulate("tpu-v5p")
    differ = abs(report.flops - report.executed_flops) > 0.01 * report.executed_flops
    assert bool(report.flops_note()) == differ
    if differ:
        assert report.flops_note() in str(report)
    scan = models.get("gpt_scan", abstract=True, layers=2)
    plan = partir.partition([*BP(), *MP(stacked=True)], mesh=mesh_2d(), mode="spmd")(scan.fn).plan(
        *scan.args
    )
    looped = plan.simulate("tpu-v5p")
    assert looped.flops < looped.executed_flops  # a scan body counted once by XLA
    assert "loop body once" in looped.flops_note()


@pytest.mark.parametrize(
    "name", ["linen_encoder", "equinox_transformer", "haiku_transformer", "nnx_decoder"]
)
def test_library_models_gradients_named_and_blamed_on_the_model(name):
    """Flax, Equinox and Haiku steps with optax: under data parallelism every parameter's
    gradient all-reduce names it, and every collective is located in the model's file."""
    model = getattr(models, name)()
    mesh = jax.make_mesh((8,), ("batch",), axis_types=(AxisType.Auto,))
    schedule = [partir.ManualPartition({"batch": 0}, axis="batch")]
    p = partir.partition(schedule, mesh=mesh, mode="spmd")(model.fn).plan(*model.args)
    table = p.collectives()
    params = [path for path in p.program.input_paths if path.startswith("params/")]
    assert sorted(c.serves for c in table if c.serves) == sorted(f"grad of {x}" for x in params)
    assert {c.source.split(":")[0] for c in table} == {"partir/testing/_library_models.py"}
    (loss,) = [c for c in table if not c.serves]
    assert re.fullmatch(r"out/\d+", loss.reason)
