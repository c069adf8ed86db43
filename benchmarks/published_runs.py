"""The simulator against published training runs: predict each run's MFU from partir itself.

Each row is a published large-model training run (model shape, global batch, sequence length,
precision, hardware, device count, parallel plan, published MFU), with its source. For each,
this script traces the model at full size from `jax.ShapeDtypeStruct`s (the zoo's Llama-style
``llama`` or GPT-style ``gpt_scan``, layers under one `lax.scan`, so depth costs nothing to
trace), writes the published plan as a partir schedule on an abstract mesh
(``partir.partition(schedule, mesh={...})``), simulates one step on the chip's profile and
topology, and turns the overlapped step time into MFU under the row's own FLOP convention.

Pipeline parallelism is simulated by the pipeline step simulator
(`partir.simulator.pipeline`): a row with PP = p stages traces its model with 1 and 2 layers
at 1 and 2 microbatches per data-parallel replica on the DP x TP mesh, fits one layer's and
the rest's per-microbatch and once-a-step costs from those four simulated steps
(`stage_costs_from_parts`), and simulates the row's schedule (1F1B, or interleaved 1F1B with
v chunks per device: Narayanan et al. 2021 §2.2) over its m microbatches, point-to-point
sends on the stage axis's link included (`pipeline_step`). The bubble is what falls out of
the schedule; each such row records it (``pipeline``).

Calibration: per chip profile, at most half of the rows (every other row by device count)
fit three free parameters: the large-matmul efficiency, a collective-bandwidth efficiency
and `Hardware.collective_overlap` (`Hardware.fitted`), by grid search on the mean absolute
relative MFU error. The other rows are held out, and the errors of both halves are reported
apart. The fitted values are copied, with their provenance, into
`partir.simulator.profiles.FITS` (profiles ``<name>-fitted``); `--check-fits` re-simulates with
those stored profiles.

    python benchmarks/published_runs.py [--quick]   # results/published_runs.{json,png}, ~6 min
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import math
import os
import pathlib
import time
from typing import Any

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

from _results import write_result

import partir
from partir import ir
from partir.simulator import OpCost, get_hardware
from partir.simulator.pipeline import PipelineReport, simulate_pipeline, stage_costs_from_parts
from partir.simulator.topology import AxisLink, Topology
from partir.tactics import SP, ManualPartition
from partir.testing import models, schedules

RESULTS = pathlib.Path(__file__).parent / "results"

from published_runs_table import RUNS, SOURCES, Run  # noqa: E402  (the data, with citations)

# ---------------------------------------------------------------------------------------------
# FLOP conventions
# ---------------------------------------------------------------------------------------------


def published_flops(run: Run) -> float:
    """FLOPs of one step as the run's publication counts them (`Run.convention`)."""
    s = run.shape
    tokens = run.batch * run.seq
    if run.convention.startswith("megatron"):
        # Narayanan Eq. 3: 96 B s l h^2 (1 + s/6h + V/16lh) (with full recomputation);
        # Korthikanti: 72 B s l h^2 (1 + s/6h + V/12lh) (model FLOPs)
        b, n_layers, h, v = run.batch, s["layers"], s["d_model"], s["vocab"]
        if run.convention == "megatron-hfu":
            return (
                96
                * b
                * run.seq
                * n_layers
                * h
                * h
                * (1 + run.seq / (6 * h) + v / (16 * n_layers * h))
            )
        return (
            72 * b * run.seq * n_layers * h * h * (1 + run.seq / (6 * h) + v / (12 * n_layers * h))
        )
    cfg = models.LlamaConfig(**{**s, "seq": run.seq})
    return tokens * models.llama_flops_per_token(cfg, causal=run.convention == "6n-causal")


# ---------------------------------------------------------------------------------------------
# Planning and simulating
# ---------------------------------------------------------------------------------------------


VOCAB_PARALLEL = {
    "llama": {"params/embed": 0, "params/head": 1},
    "gpt": {"params/embed/tokens": 0, "params/head": 1},
}
"""The embedding table and output head split over the vocabulary on the TP axis, as the
published plans do: Megatron's parallel embedding and output layer (Shoeybi et al. 2019, §3),
MaxText's ``vocab`` logical axis on ``tensor`` (MaxText/configs/base.yml
``logical_axis_rules``). Without it every TP rank computes the whole head and all-reduces its
full gradient."""


def _schedule(run: Run) -> list:
    names = ["BP"] + (["MP"] if run.tp > 1 else [])
    vocab = [ManualPartition(VOCAB_PARALLEL[run.model], axis="model")] if run.tp > 1 else []
    if run.model == "llama":
        tactics = models.llama_schedule("+".join(names))
        return tactics + vocab + (models.llama_schedule(run.zero) if run.zero else [])
    tactics = [schedules.tactic("gpt_scan", n) for n in names] + vocab
    if run.sp and run.tp > 1:
        tactics += SP()
    if run.zero:
        tactics.append(schedules.tactic("gpt_scan", {"Z1": "Z2"}.get(run.zero, run.zero)))
    return tactics


@dataclasses.dataclass
class Planned:
    """A run's traced, partitioned program(s) and what its simulation needs.

    Attributes:
      run: the row.
      plans: without pipeline parallelism, ``{(0, 0): plan}``: the whole model on the DP x TP
        mesh. With it, the four programs `stage_costs_from_runs` fits a stage from:
        ``(layers, microbatches) -> plan`` for 1 and 2 layers at 1 and 2 microbatches per
        data-parallel replica.
      layers_traced: layers in the (largest) traced program.
      pipeline_layers: the layer slots the pipeline simulates (the model's layers, rounded up
        to a multiple of stages x interleave when they do not divide).
      plan_s: seconds to trace and partition.
    """

    run: Run
    plans: dict[tuple[int, int], Any]
    layers_traced: int
    pipeline_layers: int
    plan_s: float


def _trace(run: Run, layers: int, batch: int) -> Any:
    cfg = {**run.shape, "layers": layers, "seq": run.seq, "batch": batch,
           "dtype": "bfloat16", "remat": run.remat}  # fmt: skip
    if run.model == "llama":
        model = models.llama(abstract=True, **cfg)
    else:
        model = models.get("gpt_scan", abstract=True, **cfg)
    step = partir.partition(_schedule(run), mesh={"batch": run.dp, "model": run.tp}, mode="spmd")
    return step(model.fn).plan(*model.args)


def plan_run(run: Run) -> Planned:
    """Trace and partition the run's model at full size (a pipeline stage's layers when
    PP > 1)."""
    start = time.perf_counter()
    if run.pp == 1:
        plans = {(0, 0): _trace(run, run.shape["layers"], run.batch)}
        return Planned(run, plans, run.shape["layers"], 0, time.perf_counter() - start)
    micro = run.dp * max(run.microbatch, 1)
    plans = {(n, b): _trace(run, n, b * micro) for n in (1, 2) for b in (1, 2)}
    chunk = run.pp * run.interleave
    slots = -(-run.shape["layers"] // chunk) * chunk
    return Planned(run, plans, 2, slots, time.perf_counter() - start)


def _topology(run: Run, hardware: Any) -> tuple[Topology, AxisLink | None]:
    """The DP and TP axes' links, and the stage axis's, from the whole (PP, DP, TP) mesh:
    on a GPU cluster the data-parallel axis crosses nodes as soon as PP x DP x TP does."""
    if run.pp == 1:
        return Topology.default(hardware, [("batch", run.dp), ("model", run.tp)]), None
    topo = Topology.default(hardware, [("stage", run.pp), ("batch", run.dp), ("model", run.tp)])
    return Topology((topo["batch"], topo["model"])), topo["stage"]


CAUSAL_SKIP = 0.5
"""The share of the attention-score matmuls a causal flash kernel skips: the blocks above the
diagonal are all masked (FlashAttention-2, Dao 2023, §3.1.1, which skips them); half the score
FLOPs."""


def _is_scores(value: Any, seq: int) -> bool:
    # attention scores carry heads besides batch and two sequence dims (rank >= 4); a rank-3
    # activation [batch, seq, d_model] with d_model == seq (Llama 70B at 8192) is not one
    if not hasattr(value.type, "shape"):
        return False
    shape = ir.shape_of(value.type)
    return len(shape) >= 4 and shape.count(seq) >= 2


def flash_adjustment(report: Any, seq: int) -> float:
    """Seconds of the simulated step a fused causal attention kernel does not spend.

    The zoo models compute attention as XLA sees plain JAX: every op on the scores (a value
    with heads and two dims of the sequence length) reads or writes them in device memory. The
    published runs marked `Run.flash` used a fused attention kernel (FlashAttention, Dao et
    al. 2022; MaxText's ``attention=flash``) that keeps the scores on chip: the elementwise
    passes (masking, softmax, their gradients) cost no memory time (their FLOPs are
    negligible), and the score matmuls, no longer bound by writing or reading the scores,
    run at the profile's large-matmul rate on the unmasked half of their FLOPs
    (`CAUSAL_SKIP`, the decoders being causal). This is an approximation of such a kernel
    outside the simulator, stated in each row (``flash_adjustment_s``).
    """
    hw = report.hardware
    rate = hw.peak_flops_per_s("bfloat16") * max(e for _, e in hw.compute_efficiency)
    total = 0.0
    for op, count, cost, seconds in report.records:
        if not isinstance(cost, OpCost):
            continue
        values = [*getattr(op, "operands", ()), *getattr(op, "results", ())]
        if any(_is_scores(v, seq) for v in values):
            kept = 0.0
            if getattr(op, "primitive_name", "") == "dot_general":
                kept = min(seconds, cost.flops * (1 - CAUSAL_SKIP) / rate)
            total += (seconds - kept) * count
    return total


def _simulate(plan: Any, run: Run, hardware: Any, topo: Topology) -> tuple[float, ...]:
    """(overlapped step, compute, communication, peak bytes, flash adjustment) of one
    program; the flash adjustment (`flash_adjustment`) comes off the step and the compute."""
    report = plan.simulate(hardware, donate=True, topology=topo)
    flash = flash_adjustment(report, run.seq) if run.flash else 0.0
    return (report.step_time_overlap_s - flash, report.compute_time_s - flash,
            report.communication_time_s, report.peak_memory_bytes, flash)  # fmt: skip


def pipeline_step(p: Planned, hardware: Any) -> PipelineReport:
    """The pipelined step of a PP > 1 row: `stage_costs_from_parts` on the four traced
    programs, then `simulate_pipeline` with the row's schedule (1F1B, or interleaved 1F1B
    with `Run.interleave` chunks per device) over its microbatches.

    Compute and communication are fitted apart (`stage_costs_from_parts`: the once-a-step
    data-parallel reduction hides behind the last backward passes by the profile's
    `collective_overlap`, the fitted parameter). The point-to-point message is one
    microbatch's layer output split over the TP ranks (Megatron's scatter/gather
    optimisation, Narayanan et al. 2021 §4.1). When the layers do not divide into
    stages x chunks (Llama 3 405B: 126 over 16 x 4), the pipeline holds the rounded-up slots
    and the last stage's missing layer makes room for the head, as Llama 3 does (Dubey et al.
    2024 §3.3.2: one layer fewer on the first and the last stage).
    """
    run = p.run
    topo, stage_link = _topology(run, hardware)
    sims = {k: _simulate(plan, run, hardware, topo) for k, plan in p.plans.items()}
    boundary = max(run.microbatch, 1) * run.seq * run.shape["d_model"] * 2 / run.tp
    costs = stage_costs_from_parts(
        {k: (v[1], v[3]) for k, v in sims.items()},
        {k: v[2] for k, v in sims.items()},
        boundary_bytes=boundary,
        forward_fraction=0.25 if run.remat else 1 / 3,
        collective_overlap=hardware.collective_overlap,
    )
    missing = p.pipeline_layers - run.shape["layers"]
    if missing:
        room = (missing - missing // 2) * costs.layer_microbatch_s
        costs = dataclasses.replace(
            costs, other_microbatch_s=max(0.0, costs.other_microbatch_s - room)
        )
    replica = run.batch // run.dp
    return simulate_pipeline(
        costs,
        layers=p.pipeline_layers,
        stages=run.pp,
        microbatches=replica // max(run.microbatch, 1),
        schedule="interleaved-1f1b" if run.interleave > 1 else "1f1b",
        repeats=run.interleave,
        stage_link=stage_link,
    )


def predict(p: Planned, hardware: Any) -> dict[str, Any]:
    """Simulated step time and MFU of a planned run on one profile."""
    per_device = published_flops(p.run) / p.run.devices
    peak = hardware.peak_flops_per_s("bfloat16")
    if p.run.pp == 1:
        topo, _ = _topology(p.run, hardware)
        step, *_, flash = _simulate(p.plans[0, 0], p.run, hardware, topo)
        return {"step_time_s": step, "mfu": per_device / (step * peak), "flash_adjustment_s": flash}
    pipe = pipeline_step(p, hardware)
    return {"step_time_s": pipe.step_time_s, "mfu": per_device / (pipe.step_time_s * peak),
            "pipeline": pipe}  # fmt: skip


def _err(pred: float, published: float) -> float:
    return abs(pred - published) / published


# grids of the free parameters (Hardware.fitted)
MATMUL = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
COLLECTIVE = (0.4, 0.6, 0.8, 1.0, 1.2)
OVERLAP = (0.0, 0.5, 0.9)


def fit_family(planned: list[Planned], base: Any) -> tuple[dict[str, float], float]:
    """Grid search of (matmul, collective, overlap) minimising the mean relative MFU error."""
    best: tuple[float, dict[str, float]] = (math.inf, {})
    for m, c, o in itertools.product(MATMUL, COLLECTIVE, OVERLAP):
        hw = base.fitted(matmul_efficiency=m, collective_efficiency=c, collective_overlap=o,
                         provenance="grid search")  # fmt: skip
        errs = [_err(predict(p, hw)["mfu"], p.run.mfu) for p in planned]
        mean = sum(errs) / len(errs)
        if mean < best[0]:
            best = (mean, {"matmul_efficiency": m, "collective_efficiency": c,
                           "collective_overlap": o})  # fmt: skip
    return best[1], best[0]


def split(runs: list[Run]) -> tuple[list[Run], list[Run]]:
    """Per family: every other row by device count (at most half) calibrates, the rest are
    held out."""
    cal, held = [], []
    by_hw: dict[str, list[Run]] = {}
    for r in runs:
        by_hw.setdefault(r.hardware, []).append(r)
    for rows in by_hw.values():
        rows = sorted(rows, key=lambda r: (r.devices, r.name))
        for i, r in enumerate(rows):
            (cal if i % 2 == 1 else held).append(r)
    return cal, held


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    errs = [r["error"] for r in rows if r.get("error") is not None]
    if not errs:
        return {"rows": 0}
    return {"rows": len(errs), "mean_abs_rel_error": sum(errs) / len(errs),
            "max_abs_rel_error": max(errs)}  # fmt: skip


def plot(rows: list[dict[str, Any]], path: pathlib.Path) -> None:
    """Predicted against published MFU, coloured by profile, calibration rows filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 6))
    colours = dict(zip(sorted({r["hardware"] for r in rows}), plt.cm.tab10.colors, strict=False))
    for r in rows:
        if r.get("predicted_mfu") is None:
            continue
        cal = r["role"] == "calibration"
        ax.scatter(r["published_mfu"], r["predicted_mfu"], s=45,
                   marker="o" if cal else "^", facecolors=colours[r["hardware"]] if cal else "none",
                   edgecolors=colours[r["hardware"]])  # fmt: skip
    for hw, c in colours.items():
        ax.scatter([], [], color=c, label=hw)
    ax.scatter([], [], marker="o", color="grey", label="calibration (filled)")
    ax.scatter([], [], marker="^", facecolors="none", edgecolors="grey", label="held out")
    ax.plot([0.3, 0.8], [0.3, 0.8], "k--", lw=1)
    for k in (0.9, 1.1):
        ax.plot([0.3, 0.8], [0.3 * k, 0.8 * k], "k:", lw=0.7)
    ax.set_xlabel("published MFU")
    ax.set_ylabel("partir simulated MFU (fitted profile)")
    ax.set_title("Simulated vs published MFU (dotted: ±10%)")
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a coarser parameter grid")
    parser.add_argument("--check-fits", action="store_true",
                        help="simulate with the stored <name>-fitted profiles, no fitting")  # fmt: skip
    parser.add_argument("--out", default=str(RESULTS / "published_runs.json"))
    args = parser.parse_args()
    global MATMUL, COLLECTIVE, OVERLAP
    if args.quick:
        MATMUL, COLLECTIVE, OVERLAP = (0.7, 0.8, 0.9), (0.8, 1.0), (0.0, 0.9)
    start = time.perf_counter()
    planned: dict[str, Planned] = {}
    failures: dict[str, str] = {}
    for run in RUNS:
        try:
            planned[run.name] = plan_run(run)
            print(f"planned {run.name:34} in {planned[run.name].plan_s:5.2f}s", flush=True)
        except Exception as e:  # a plan partir cannot write yet: listed, not hidden
            failures[run.name] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            print(f"FAILED  {run.name}: {failures[run.name]}", flush=True)
    ok = [r for r in RUNS if r.name in planned]
    cal, _ = split(ok)
    fits: dict[str, dict[str, Any]] = {}
    for hw_name in sorted({r.hardware for r in ok}):
        rows = [planned[r.name] for r in cal if r.hardware == hw_name]
        base = get_hardware(hw_name)
        if args.check_fits:
            fits[hw_name] = {"profile": f"{hw_name}-fitted"}
            continue
        if not rows:
            fits[hw_name] = {"note": "no calibration rows: first-principles profile"}
            continue
        params, err = fit_family(rows, base)
        fits[hw_name] = {**params, "calibration_rows": [p.run.name for p in rows],
                         "calibration_mean_error": err}  # fmt: skip
        print(f"fit {hw_name}: {params} (calibration mean error {err:.1%})", flush=True)
    out_rows = []
    for run in RUNS:
        row: dict[str, Any] = {
            "name": run.name, "source": SOURCES[run.source], "model": run.model,
            "shape": run.shape, "hardware": run.hardware, "devices": run.devices,
            "global_batch": run.batch, "seq": run.seq, "precision": "bf16",
            "plan": {"dp": run.dp, "tp": run.tp, "pp": run.pp, "sp": run.sp,
                     "zero": run.zero or None, "remat": run.remat,
                     "microbatch": run.microbatch or None},
            "published_mfu": run.mfu, "flop_convention": run.convention,
        }  # fmt: skip
        if run.name in failures:
            row.update(role="failed", predicted_mfu=None, error=None, reason=failures[run.name])
            out_rows.append(row)
            continue
        p = planned[run.name]
        fit = fits[run.hardware]
        if args.check_fits:
            hw = get_hardware(f"{run.hardware}-fitted")
        elif "matmul_efficiency" in fit:
            hw = get_hardware(run.hardware).fitted(
                **{k: fit[k] for k in ("matmul_efficiency", "collective_efficiency",
                                       "collective_overlap")},
                provenance="benchmarks/published_runs.py",
            )  # fmt: skip
        else:
            hw = get_hardware(run.hardware)
        pred = predict(p, hw)
        unfitted = predict(p, get_hardware(run.hardware))
        row.update(
            role="calibration" if run in cal else "held_out",
            predicted_mfu=pred["mfu"],
            predicted_mfu_unfitted=unfitted["mfu"],
            error=_err(pred["mfu"], run.mfu),
            step_time_s=pred["step_time_s"],
            flash_adjustment_s=pred.get("flash_adjustment_s"),
            layers_traced=p.layers_traced,
            pipeline=pred["pipeline"].to_dict() if "pipeline" in pred else None,
            plan_s=p.plan_s,
        )
        out_rows.append(row)
        print(f"{row['role']:11} {run.name:34} published {run.mfu:6.1%} predicted "
              f"{pred['mfu']:6.1%} (unfitted {unfitted['mfu']:6.1%}) err {row['error']:5.1%}",
              flush=True)  # fmt: skip
    calib = [r for r in out_rows if r["role"] == "calibration"]
    held_rows = [r for r in out_rows if r["role"] == "held_out"]
    summary = {
        "calibration": _summary(calib),
        "held_out": _summary(held_rows),
        "held_out_no_pipeline": _summary([r for r in held_rows if r["plan"]["pp"] == 1]),
        "held_out_pipeline": _summary([r for r in held_rows if r["plan"]["pp"] > 1]),
        "failed": failures,
        "seconds": time.perf_counter() - start,
    }
    print(summary)
    RESULTS.mkdir(exist_ok=True)
    plot(out_rows, pathlib.Path(args.out).with_suffix(".png"))
    write_result({"fits": fits, "summary": summary, "rows": out_rows}, args.out)


if __name__ == "__main__":
    main()
