"""simulate() on the zoo's device-local programs: FLOPs against XLA, invariants, the report."""

import functools
import io
import json

import jax
import pytest

import partir
from partir.simulator import Report, SimulatorError, simulate
from partir.testing import models, schedules

MODELS = ("mlp", "gpt", "gpt_scan", "moe", "unet")
CASES = [
    (m, s) for m in MODELS for s in schedules.SCHEDULES if schedules.applicable(m, s)
]  # fmt: skip


@functools.cache
def mesh():
    return jax.make_mesh((4, 2), ("batch", "model"))


@functools.cache
def plan(model, schedule):
    m = models.get(model, abstract=True)
    tactics = schedules.schedule(model, schedule) if schedule else []
    return partir.partition(tactics, mesh=mesh(), mode="spmd")(m.fn).plan(*m.args)


@functools.cache
def report(model, schedule, hardware="tpu-v5p"):
    return simulate(plan(model, schedule).lowered.module, hardware)


@functools.cache
def xla_analysis(model, schedule):
    lowered = plan(model, schedule).lower()
    compiled = lowered.compile()
    m = compiled.memory_analysis()
    memory = (
        m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
    )
    return lowered.cost_analysis(), compiled.cost_analysis(), memory


@pytest.mark.parametrize(("model", "schedule"), CASES)
def test_flops_and_memory_match_the_compiled_program(model, schedule):
    """`flops` within 5% of the compiled program's cost_analysis() (per device), and peak
    memory within 15% of its memory_analysis() (argument + output + temp - alias).

    `flops` counts as XLA does: loop bodies once, elementwise work that fusion recomputes
    once per fusion (see partir.simulator.fusion). `executed_flops` counts the program as
    written, loops times their trip count: it agrees within 1% with the unoptimised HLO's
    count (the CPU backend rewrites cumsum's reduce-window, hence moe), except for the
    scanned GPT, whose HLO counts the loop body once.
    """
    r = report(model, schedule)
    before, compiled, memory = xla_analysis(model, schedule)
    assert r.flops == pytest.approx(compiled["flops"], rel=0.05)
    assert r.peak_memory_bytes == pytest.approx(memory, rel=0.15)
    if model != "gpt_scan":
        assert r.executed_flops == pytest.approx(before["flops"], rel=0.01)
        assert r.transcendentals == before.get("transcendentals", 0.0)
    else:
        assert r.executed_flops > 1.5 * r.flops  # the body runs `layers` times


@pytest.mark.parametrize("schedule", ["BP", "BP+MP+Z3"])
def test_scan_costs_length_times_its_body(schedule):
    unrolled, scanned = report("gpt", schedule), report("gpt_scan", schedule)
    assert scanned.executed_flops == pytest.approx(unrolled.executed_flops, rel=0.01)
    assert scanned.transcendentals == pytest.approx(unrolled.transcendentals, rel=0.01)
    counts = {row.count for row in scanned.ops}
    assert models.get("gpt_scan", abstract=True).config.layers in counts


@pytest.mark.parametrize("model", MODELS)
def test_replicated_has_no_communication(model):
    r = report(model, "")
    assert r.communication_time_s == 0 and r.communication_bytes == 0
    assert r.collectives == ()
    assert r.step_time_s == r.compute_time_s == pytest.approx(r.step_time_overlap_s)


@pytest.mark.parametrize(("model", "schedule"), [c for c in CASES if c[1] != "EMB"][::3])
@pytest.mark.parametrize("hardware", ["tpu-v5p", "h100", "cpu"])
def test_costs_nonnegative_and_additive(model, schedule, hardware):
    r = report(model, schedule, hardware)
    assert all(v >= 0 for row in r.ops for v in (row.flops, row.bytes_accessed, row.time_s))
    assert all(c.time_s >= 0 and c.bytes_sent >= 0 for c in r.collectives)
    flops = sum(row.flops for row in r.ops) + sum(c.flops for c in r.collectives)
    assert flops == pytest.approx(r.executed_flops)
    assert sum(row.time_s for row in r.ops) == pytest.approx(r.compute_time_s)
    assert sum(c.time_s for c in r.collectives) == pytest.approx(r.communication_time_s)
    assert sum(c.bytes_sent for c in r.collectives) == pytest.approx(r.communication_bytes)
    assert r.step_time_s == pytest.approx(
        r.compute_time_s + r.communication_time_s + r.launch_time_s
    )
    lower = max(r.compute_time_s, r.communication_time_s) + r.launch_time_s
    assert lower * (1 - 1e-9) <= r.step_time_overlap_s <= r.step_time_s * (1 + 1e-9)
    assert 0 <= r.mfu <= r.mfu_overlap * (1 + 1e-9) <= 1


@pytest.mark.parametrize(("model", "schedule"), CASES)
def test_memory_peak_covers_arguments(model, schedule):
    r = report(model, schedule)
    mem = r.memory
    assert r.peak_memory_bytes >= mem.argument_bytes > 0
    assert sum(mem.by_category.values()) == r.peak_memory_bytes
    donated = simulate(plan(model, schedule).lowered.module, "tpu-v5p", donate=True)
    assert donated.peak_memory_bytes <= r.peak_memory_bytes
    assert r.fits


def test_sharding_reduces_memory_and_adds_communication():
    replicated, zero3 = report("gpt", ""), report("gpt", "BP+MP+Z3")
    assert zero3.peak_memory_bytes < replicated.peak_memory_bytes
    assert zero3.memory.argument_bytes < replicated.memory.argument_bytes / 4
    # ZeRO-3's reduce_scatter + all_gather move what data parallelism's all_reduce moves
    # (each parameter is gathered once and kept for the backward pass)
    data_parallel = report("gpt", "BP+MP")
    assert zero3.communication_bytes == pytest.approx(data_parallel.communication_bytes)
    assert data_parallel.communication_bytes > 0
    kinds = {c.kind for c in zero3.collectives}
    assert {"all_gather", "reduce_scatter", "all_reduce"} <= kinds


def test_collectives_match_plan_table():
    r = report("gpt", "BP+MP+Z3")
    table = plan("gpt", "BP+MP+Z3").collectives()
    assert [(c.kind, c.axes, c.buffer_bytes) for c in r.collectives] == [
        (c.kind, c.axes, c.bytes) for c in table
    ]
    assert all(c.location for c in r.collectives)


def test_topology_override_slows_communication():
    module = plan("gpt", "BP+MP+Z3").lowered.module
    ici = simulate(module, "tpu-v5p")
    dcn = simulate(module, "tpu-v5p", topology={"batch": "dcn"})
    assert dcn.communication_time_s > ici.communication_time_s
    assert dcn.compute_time_s == ici.compute_time_s
    assert dcn.topology["batch"].link.kind == "dcn"
    with pytest.raises(SimulatorError, match="does not have"):
        simulate(module, "tpu-v5p", topology={"pipeline": "dcn"})


def test_faster_hardware_is_faster():
    module = plan("unet", "BP+MP").lowered.module
    times = [simulate(module, hw).step_time_s for hw in ("a100", "h100")]
    assert times[1] < times[0]


def test_report_text_dict_and_top_ops():
    r = report("gpt", "BP+MP+Z3")
    text = str(r)
    for needle in ("tpu-v5p", "step time", "MFU", "peak memory", "dot_general", "all_gather"):
        assert needle in text
    data = json.loads(json.dumps(r.to_dict()))
    assert data["flops"] == r.flops and data["executed_flops"] == r.executed_flops
    assert data["fits"] is True
    assert data["collectives"][0]["kind"] == r.collectives[0].kind
    top = r.top_ops(3)
    assert len(top) == 3 and top[0].time_s >= top[1].time_s >= top[2].time_s
    assert isinstance(r, Report)


def test_simulate_accepts_plan_lowered_and_global_programs():
    p = plan("mlp", "BP")
    direct = simulate(p.lowered.module, "cpu")
    assert simulate(p.lowered, "cpu").executed_flops == direct.executed_flops
    assert simulate(p, "cpu").flops == direct.flops
    one_device = simulate(partir.trace(models.get("mlp").fn, *models.get("mlp").args).module)
    assert one_device.communication_time_s == 0 and one_device.flops > 0
    with pytest.raises(SimulatorError, match="expects the device-local ModuleOp"):
        simulate(42, "cpu")


def test_plot_draws_time_breakdown_and_memory_timeline():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    r = report("gpt", "BP+MP+Z3")
    fig = r.plot(top=5)
    assert isinstance(fig, Figure)
    time_ax, memory_ax = fig.axes
    bars = time_ax.patches
    assert len(bars) == 6  # the 5 costliest kinds and "other"
    seconds = {"s": 1.0, "ms": 1e-3, "us": 1e-6}[time_ax.get_xlabel().split()[0]]
    assert sum(b.get_width() for b in bars) * seconds == pytest.approx(r.step_time_s)
    # the timeline's top edge is the report's memory over time; its maximum is the peak
    unit = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[memory_ax.get_ylabel().split()[0]]
    tops = memory_ax.collections[-1].get_paths()[0].vertices[:, 1]
    assert tops.max() * unit == pytest.approx(r.peak_memory_bytes)
    assert len(memory_ax.collections) == 3  # arguments, result buffers, the heap
    fig.savefig(io.BytesIO(), format="png")  # renders on the Agg backend


def test_cpu_overheads_per_kernel_and_launch():
    import dataclasses

    from partir.simulator import get_hardware
    from partir.simulator.fusion import fusion_clusters

    base = dataclasses.replace(get_hardware("h100"), min_kernel_time_s=0.0)
    module = plan("mlp", "BP").lowered.module
    plain = simulate(module, base)
    costly = simulate(
        module,
        dataclasses.replace(
            base, kernel_overhead_s=1e-3, launch_overhead_s=0.5, buffer_overhead_s=1e-2
        ),
    )
    block = plain.block
    kernels = sum(
        1
        for op, mine in fusion_clusters(block, reductions_read_memory=True).items()
        if id(op) in mine and isinstance(op, partir.ir.PrimOp)
    )
    assert kernels > 0
    assert costly.compute_time_s - plain.compute_time_s == pytest.approx(kernels * 1e-3)
    buffers = len(block.args) + len(list(block.ops)[-1].operands)
    assert costly.launch_time_s == pytest.approx(0.5 + buffers * 1e-2)
    assert plain.launch_time_s == 0.0
    assert costly.step_time_s == pytest.approx(
        costly.compute_time_s + costly.communication_time_s + costly.launch_time_s
    )


def test_fused_elementwise_chain_moves_its_bytes_once():
    # sin -> cos -> exp on one large array is one loop fusion: the chain reads x once and
    # writes its result once, so it costs about one op's memory traffic, not three
    import jax.numpy as jnp

    n = 1 << 22
    x = jax.ShapeDtypeStruct((n,), jnp.float32)
    hw = partir.simulator.get_hardware("h100")
    one = simulate(partir.trace(jnp.sin, x).module, hw)
    chain = simulate(partir.trace(lambda v: jnp.exp(jnp.cos(jnp.sin(v))), x).module, hw)
    traffic = 2 * 4 * n / hw.hbm_bandwidth_bytes_per_s  # one read and one write, at peak
    assert one.compute_time_s >= traffic
    assert chain.compute_time_s < 1.5 * one.compute_time_s
    # `bytes_accessed` stays the unfused count: each op reading and writing the whole array
    assert chain.bytes_accessed == 3 * 2 * 4 * n
