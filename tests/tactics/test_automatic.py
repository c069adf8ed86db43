"""`AutomaticPartition` on the zoo: as good as Megatron where Megatron is the answer, fits a
memory limit by sharding parameters and optimizer state, never worse than its manual
prefix, and editable: the tactics it found give back the same plan."""

import functools
import math

import jax
import pytest

import partir
from partir.testing import models, schedules

# A GPT step big enough that tensor parallelism pays on both profiles (shapes only)
GPT = {
    "layers": 2, "d_model": 1024, "heads": 16, "d_ff": 4096, "seq": 512, "batch": 16,
    "vocab": 8192, "dtype": "bfloat16",
}  # fmt: skip
MESHES = {"(2,4)": {"batch": 2, "model": 4}, "(4,2)": {"batch": 4, "model": 2}}


@functools.cache
def model(name: str, **config):
    return models.get(name, abstract=True, **config)


_PLANS: dict = {}


def plan_of(m, schedule, mesh, hardware="cpu"):
    """The plan (planned once per model, schedule, mesh and judge in this module)."""
    key = (id(m), repr(schedule), tuple(mesh.items()), hardware)
    if key not in _PLANS:
        step = partir.partition(list(schedule), mesh=mesh, mode="spmd", hardware=hardware)
        _PLANS[key] = step(m.fn).plan(*m.args)
    return _PLANS[key]


# -- Must show 1: BP then automatic on `model` matches hand-written Megatron -------------


@pytest.mark.parametrize("mesh", MESHES)
@pytest.mark.parametrize("hardware", ["tpu-v5p", "h100"])
def test_gpt_bp_then_automatic_model_is_as_fast_as_megatron(hardware, mesh):
    m = model("gpt", **GPT)
    megatron = plan_of(m, schedules.schedule("gpt", "BP+MP"), MESHES[mesh])
    auto = plan_of(
        m,
        [schedules.tactic("gpt", "BP"), partir.AutomaticPartition(["model"])],
        MESHES[mesh],
        hardware,
    )
    t_megatron = megatron.simulate(hardware).step_time_s
    t_auto = auto.simulate(hardware).step_time_s
    assert t_auto <= 1.02 * t_megatron, (t_auto, t_megatron, str(auto.records[1]))
    # it shards the attention and MLP weights on `model` as Megatron does
    found = auto.tactics_found
    assert [t.axis for t in found] == ["batch"] + ["model"] * (len(found) - 1)
    assert len(found) >= 2
    record = auto.records[1]
    assert record.report.step_time_s == pytest.approx(t_auto, rel=1e-9)
    assert record.report.prefix_step_time_s > t_auto


# -- Must show 2: a memory limit forces ZeRO-like sharding --------------------------------

SMALL_GPT = {
    "layers": 2,
    "d_model": 256,
    "heads": 8,
    "d_ff": 1024,
    "seq": 16,
    "batch": 8,
    "vocab": 512,
}


def _state_bytes(m) -> int:
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(m.args[:2]))


def test_memory_limit_below_replicated_state_gives_a_fitting_zero_plan():
    m = model("gpt", **SMALL_GPT)
    mesh = {"batch": 8}
    limit = 0.75 * _state_bytes(m)  # replicated parameters + optimizer state cannot fit
    prefix = plan_of(m, [schedules.tactic("gpt", "BP")], mesh)
    assert prefix.simulate("h100").peak_memory_bytes > limit
    auto = plan_of(
        m,
        [schedules.tactic("gpt", "BP"), partir.AutomaticPartition("batch", memory_limit=limit)],
        mesh,
        "h100",
    )
    assert auto.simulate("h100").peak_memory_bytes <= limit
    assert auto.records[1].report.fits
    prop = auto.propagator
    sharded = {"params": 0, "opt_state": 0}
    total = {"params": 0, "opt_state": 0}
    for path, value in zip(auto.program.input_paths, auto.program.function.args, strict=True):
        root = path.split("/")[0]
        if root not in total:
            continue
        nbytes = math.prod(value.type.get_shape())
        total[root] += nbytes
        if "batch" in prop.axes_of(value):
            sharded[root] += nbytes
    # ZeRO-like: most parameter and optimizer-state bytes are split over the data axis
    assert sharded["params"] >= 0.75 * total["params"], sharded
    assert sharded["opt_state"] >= 0.75 * total["opt_state"], sharded


def test_objective_memory_minimises_the_peak():
    m = model("gpt", **SMALL_GPT)
    mesh = {"batch": 8}
    bp = schedules.tactic("gpt", "BP")
    by_time = plan_of(m, [bp, partir.AutomaticPartition("batch")], mesh, "h100")
    by_memory = plan_of(
        m, [bp, partir.AutomaticPartition("batch", objective="memory")], mesh, "h100"
    )
    peak_time = by_time.simulate("h100").peak_memory_bytes
    peak_memory = by_memory.simulate("h100").peak_memory_bytes
    assert peak_memory < peak_time
    assert by_memory.records[1].report.objective == "memory"


# -- Must show 5: never slower than the prefix; the found tactics give the same plan --------

PREFIXED = ["mlp", "gpt", "gpt_scan", "moe", "unet"]


@functools.cache
def prefixed(name: str):
    m = model(name)
    mesh = MESHES["(4,2)"]
    prefix = [schedules.tactic(name, "BP")]
    alone = plan_of(m, prefix, mesh)
    auto = plan_of(m, [*prefix, partir.AutomaticPartition(["model"])], mesh, "tpu-v5p")
    return m, alone, auto


@pytest.mark.parametrize("name", PREFIXED)
def test_automatic_after_a_prefix_is_never_predicted_slower(name):
    _, alone, auto = prefixed(name)
    t_alone = alone.simulate("tpu-v5p").step_time_s
    t_auto = auto.simulate("tpu-v5p").step_time_s
    assert t_auto <= t_alone * (1 + 1e-12)
    report = auto.records[1].report
    assert report.prefix_step_time_s == pytest.approx(t_alone, rel=1e-9)
    assert report.evaluations >= 1 + report.groups  # the prefix alone, each group alone


def _op_shardings(plan):
    return [
        (op.name, str(plan.propagator.sharding(r)))
        for op in plan.program.module.walk()
        for r in op.results
    ]


def _collectives(plan):
    return [(c.kind, c.axes, c.dtype, c.shape, c.bytes, c.reason) for c in plan.collectives()]


@pytest.mark.parametrize("name", PREFIXED)
def test_found_tactics_reproduce_the_plan(name):
    m, _, auto = prefixed(name)
    found = auto.tactics_found
    assert all(isinstance(t, partir.ManualPartition) for t in found)
    again = plan_of(m, list(found), MESHES["(4,2)"])
    assert _op_shardings(again) == _op_shardings(auto)
    assert again.in_shardings == auto.in_shardings
    assert again.out_shardings == auto.out_shardings
    assert _collectives(again) == _collectives(auto)
    assert again.simulate("tpu-v5p").step_time_s == auto.simulate("tpu-v5p").step_time_s


def test_found_tactics_print_as_code_that_builds_them_again():
    *_, auto = prefixed("gpt")
    text = str(auto.tactics_found)
    assert text.startswith("[\n") and "ManualPartition(" in text
    rebuilt = eval(text, {"ManualPartition": partir.ManualPartition, "partir": partir})
    assert rebuilt == list(auto.tactics_found)
    # and the automatic record carries the same tactics
    assert auto.records[1].found == list(auto.tactics_found)[1:]


def test_found_tactics_of_unrolled_layers_use_one_selector_per_weight():
    m = model("gpt", **GPT)
    auto = plan_of(
        m, [schedules.tactic("gpt", "BP"), partir.AutomaticPartition(["model"])],
        MESHES["(4,2)"], "h100",
    )  # fmt: skip
    selectors = [s for t in auto.records[1].found for s in t.inputs]
    assert selectors and not any("/0/" in s or "/1/" in s for s in selectors if "blocks" in s)


def test_automatic_on_every_axis_without_a_prefix_decides_both():
    m = model("gpt", **{**GPT, "layers": 1})
    auto = plan_of(m, [partir.AutomaticPartition(["batch", "model"])], MESHES["(4,2)"], "h100")
    t_auto = auto.simulate("h100").step_time_s
    best_preset = min(
        plan_of(m, schedules.schedule("gpt", s), MESHES["(4,2)"]).simulate("h100").step_time_s
        for s in ("BP+MP", "BP+MP+Z3")
    )
    assert t_auto <= 1.02 * best_preset
    assert {t.axis for t in auto.tactics_found} == {"batch", "model"}
