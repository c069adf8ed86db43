"""The simulator against published training runs: predict each run's MFU from partir itself.

Each row is a published large-model training run (model shape, global batch, sequence length,
precision, hardware, device count, parallel plan, published MFU), with its source. For each,
this script traces the model at full size from `jax.ShapeDtypeStruct`s (the zoo's Llama-style
``llama`` or GPT-style ``gpt_scan``, layers under one `lax.scan`, so depth costs nothing to
trace), writes the published plan as a partir schedule on an abstract mesh
(``partir.partition(schedule, mesh={...})``), simulates one step on the chip's profile and
topology, and turns the overlapped step time into MFU under the row's own FLOP convention.

Pipeline parallelism (no partir tactic yet, issue #16) is approximated, not simulated: a row
with PP = p stages and m microbatches per data-parallel replica simulates one stage (its
L / p layers plus the output head, i.e. the last and slowest stage) on the DP x TP mesh with the
replica's whole batch, and multiplies the step by the 1F1B bubble ``1 + (p - 1) / (v m)`` with v virtual stages per device
(Narayanan et al. 2021, §2.2; v = 1 unless the row says otherwise); point-to-point activation sends are not counted (Megatron
overlaps them). Such rows are tagged ``pipeline_approximated``.

Calibration: per chip profile, at most half of the rows (every other row by device count)
fit three free parameters: the large-matmul efficiency, a collective-bandwidth efficiency
and `Hardware.collective_overlap` (`Hardware.fitted`), by grid search on the mean absolute
relative MFU error. The other rows are held out, and the errors of both halves are reported
apart. The fitted values are copied, with their provenance, into
`partir.simulator.hardware.FITS` (profiles ``<name>-fitted``); `--check-fits` re-simulates with
those stored profiles.

    python benchmarks/published_runs.py [--quick]   # writes results/published_runs.{json,png}
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
from partir.tactics import SP
from partir.testing import models, schedules

RESULTS = pathlib.Path(__file__).parent / "results"

# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------
SOURCES = {
    "maxtext-v5p": "MaxText, MaxText/configs/v5p/README.md (results) and MaxText/configs/v5p/"
    "{32b,64b,128b,256b,512b}.sh (plans: per_device_batch_size, ici_fsdp/tensor_parallelism, "
    "remat_policy, max_target_length=2048); model dims from global_parameter_scale "
    "(MaxText/pyconfig.py get_individual_scales, base.yml: emb 2048, heads 16, mlp 7168, "
    "16 layers, head_dim 128, vocab 32000). github.com/AI-Hypercomputer/maxtext",
    "maxtext-llama2-70b": "MaxText tiering (Gold): Llama 2 70B on 512 v5p chips, 65.4% MFU; "
    "plan from MaxText/configs/v5p/llama2_70b.sh (per_device_batch_size=4, fsdp over all "
    "chips, max_target_length=4096, remat save_dot_except_mlpwi)",
    "maxtext-v6e": "MaxText tiering (Gold), Trillium: Llama 3.1 70B 50.33% and 8B 45.46% on 256 "
    "v6e at SL 8192, Llama 3.1 405B 38.55%; plan from benchmarks/maxtext_trillium_model_"
    "configs.py (llama3_1_70b_8192: per_device_batch_size=4, ici_fsdp_parallelism=-1, remat "
    "custom with offload); 8B and 405B per-device batch [M]",
    "narayanan21": "Narayanan et al., 'Efficient Large-Scale Language Model Training on GPU "
    "Clusters Using Megatron-LM', SC'21, Table 1 (weak scaling, A100, seq 2048, vocab 51200, "
    "full activation recomputation; % of 312 TFLOP/s peak counting recomputation, Eq. 3)",
    "korthikanti22": "Korthikanti et al., 'Reducing Activation Recomputation in Large "
    "Transformer Models', 2022, Table 5 / Megatron-LM README before 2024-07 (A100, selective "
    "recomputation + sequence parallelism, MFU without recomputation)",
    "megatron-core-h100": "Megatron-Core README / NVIDIA (2024): GPT-3 175B strong scaling on "
    "H100, 47% MFU at 96 GPUs to 42% at 4,608 (plan [M]: TP 4, PP 8 interleaved x4, sequence "
    "parallel, flash attention; global batch 1536 at 96 GPUs, 2304 at 4,608 [M])",
    "llama3": "Dubey et al., 'The Llama 3 Herd of Models', 2024, Table 4: 405B, seq 8192, "
    "TP 8, PP 16, DP 64/128 on 8,192/16,384 H100, 16M tokens per batch; BF16 MFU 43%/41%; "
    "§3.3.2: interleaved pipeline schedule (x4 here [M]), FSDP-style sharded optimizer state",
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One published run and its plan.

    Attributes:
      name: a short label.
      source: a key of `SOURCES`.
      model: ``"llama"`` (RMSNorm/RoPE/SwiGLU/GQA) or ``"gpt"`` (LayerNorm, GELU, learned
        positions).
      shape: the model config (zoo config fields).
      hardware: the profile name.
      devices: chips or GPUs.
      batch: global batch (sequences).
      seq: sequence length.
      dp, tp, pp: data (incl. FSDP), tensor and pipeline degrees; dp * tp * pp == devices.
      zero: ``""`` (none), ``"Z1"`` (optimizer state), ``"Z3"`` (FSDP).
      sp: Megatron sequence parallelism.
      remat: per-layer activation recomputation.
      microbatch: sequences per microbatch (pipeline rows).
      mfu: the published figure (a fraction).
      convention: how the publication counts FLOPs: ``"6n"`` (6N + full attention),
        ``"6n-causal"`` (attention halved), ``"megatron-hfu"`` (Narayanan's Eq. 3, with
        recomputation), ``"megatron-mfu"`` (Korthikanti's, without).
      flash: the run used a fused (flash) attention kernel; see `flash_adjustment`.
      interleave: virtual pipeline stages per device (the interleaved 1F1B schedule).
    """

    name: str
    source: str
    model: str
    shape: dict[str, Any]
    hardware: str
    devices: int
    batch: int
    seq: int
    dp: int
    tp: int
    pp: int
    zero: str
    sp: bool
    remat: bool
    microbatch: int
    mfu: float
    convention: str
    flash: bool = False
    interleave: int = 1


def _maxtext(scale: int) -> dict[str, Any]:
    # MaxText/pyconfig.py get_individual_scales: log2(scale) split over heads/mlp, emb, layers
    log = int(math.log2(scale))
    base, rem = divmod(log, 3)
    heads = base + int(rem > 0)
    emb = base + int(rem > 1)
    return {"d_model": 2048 * 2**emb, "heads": 16 * 2**heads, "kv_heads": 16 * 2**heads,
            "d_ff": 7168 * 2**heads, "layers": 16 * 2**base, "vocab": 32000}  # fmt: skip


LLAMA2_70B = {"layers": 80, "d_model": 8192, "heads": 64, "kv_heads": 8, "d_ff": 28672,
              "vocab": 32000}  # fmt: skip
LLAMA3_8B = {"layers": 32, "d_model": 4096, "heads": 32, "kv_heads": 8, "d_ff": 14336,
             "vocab": 128256, "rope_theta": 5e5}  # fmt: skip
LLAMA3_70B = {**LLAMA2_70B, "vocab": 128256, "rope_theta": 5e5}
LLAMA3_405B = {"layers": 126, "d_model": 16384, "heads": 128, "kv_heads": 8, "d_ff": 53248,
               "vocab": 128256, "rope_theta": 5e5}  # fmt: skip


def _gpt(layers: int, d: int, heads: int) -> dict[str, Any]:
    return {"layers": layers, "d_model": d, "heads": heads, "d_ff": 4 * d, "vocab": 51200}


def _v5p(name: str, scale: int, chips: int, tp: int, pdb: int, remat: bool, mfu: float) -> Run:
    return Run(name, "maxtext-v5p", "llama", _maxtext(scale), "tpu-v5p", chips, pdb * chips,
               2048, chips // tp, tp, 1, "Z3", False, remat, 0, mfu, "6n", flash=True)  # fmt: skip


def _nar(name: str, shape: dict, gpus: int, tp: int, pp: int, batch: int, mfu: float) -> Run:
    return Run(name, "narayanan21", "gpt", shape, "a100", gpus, batch, 2048, gpus // (tp * pp),
               tp, pp, "", False, True, 1, mfu, "megatron-hfu")  # fmt: skip


def _kor(name: str, shape: dict, gpus: int, pp: int, batch: int, mfu: float) -> Run:
    return Run(name, "korthikanti22", "gpt", shape, "a100", gpus, batch, 2048, gpus // (8 * pp),
               8, pp, "", True, False, 1, mfu, "megatron-mfu")  # fmt: skip


RUNS: tuple[Run, ...] = (
    # TPU v5p, MaxText README (v5p-N names count TensorCores: N/2 chips)
    _v5p("MaxText 32B v5p-128", 32, 64, 4, 7, False, 0.7147),
    _v5p("MaxText 64B v5p-128", 64, 64, 4, 3, False, 0.7031),
    _v5p("MaxText 128B v5p-256", 128, 128, 8, 1, False, 0.6868),
    _v5p("MaxText 128B v5p-512", 128, 256, 8, 1, False, 0.6883),
    _v5p("MaxText 256B v5p-1024", 256, 512, 8, 1, False, 0.6709),
    _v5p("MaxText 512B v5p-1024", 512, 512, 8, 2, True, 0.6399),
    Run(
        "MaxText Llama2 70B v5p-1024",
        "maxtext-llama2-70b",
        "llama",
        LLAMA2_70B,
        "tpu-v5p",
        512,
        4 * 512,
        4096,
        512,
        1,
        1,
        "Z3",
        False,
        True,
        0,
        0.654,
        "6n",
        flash=True,
    ),
    # TPU v6e (Trillium), MaxText tiering
    Run(
        "MaxText Llama3.1 8B v6e-256",
        "maxtext-v6e",
        "llama",
        LLAMA3_8B,
        "tpu-v6e",
        256,
        3 * 256,
        8192,
        256,
        1,
        1,
        "Z3",
        False,
        True,
        0,
        0.4546,
        "6n-causal",
        flash=True,
    ),
    Run(
        "MaxText Llama3.1 70B v6e-256",
        "maxtext-v6e",
        "llama",
        LLAMA3_70B,
        "tpu-v6e",
        256,
        4 * 256,
        8192,
        256,
        1,
        1,
        "Z3",
        False,
        True,
        0,
        0.5033,
        "6n-causal",
        flash=True,
    ),
    Run(
        "MaxText Llama3.1 405B v6e-256",
        "maxtext-v6e",
        "llama",
        LLAMA3_405B,
        "tpu-v6e",
        256,
        256,
        8192,
        256,
        1,
        1,
        "Z3",
        False,
        True,
        0,
        0.3855,
        "6n-causal",
        flash=True,
    ),
    # A100, Megatron-LM weak scaling (Narayanan et al. 2021, Table 1)
    _nar("Megatron 1.7B 32xA100", _gpt(24, 2304, 24), 32, 1, 1, 512, 0.44),
    _nar("Megatron 3.6B 64xA100", _gpt(30, 3072, 32), 64, 2, 1, 512, 0.44),
    _nar("Megatron 7.5B 128xA100", _gpt(36, 4096, 32), 128, 4, 1, 512, 0.46),
    _nar("Megatron 18.4B 256xA100", _gpt(40, 6144, 48), 256, 8, 1, 1024, 0.43),
    _nar("Megatron 39.1B 512xA100", _gpt(48, 8192, 64), 512, 8, 2, 1536, 0.44),
    _nar("Megatron 76.1B 1024xA100", _gpt(60, 10240, 80), 1024, 8, 4, 1792, 0.45),
    _nar("Megatron 145.6B 1536xA100", _gpt(80, 12288, 96), 1536, 8, 8, 2304, 0.47),
    _nar("Megatron 310.1B 1920xA100", _gpt(96, 16384, 128), 1920, 8, 16, 2160, 0.50),
    _nar("Megatron 529.6B 2520xA100", _gpt(105, 20480, 128), 2520, 8, 35, 2520, 0.52),
    _nar("Megatron 1T 3072xA100", _gpt(128, 25600, 160), 3072, 8, 64, 3072, 0.52),
    # A100, Korthikanti et al. 2022 (DP = 1)
    _kor("Megatron 22B 8xA100 (SP)", _gpt(48, 6144, 64), 8, 1, 4, 0.415),
    _kor("Megatron 175B 64xA100 (SP)", _gpt(96, 12288, 96), 64, 8, 64, 0.514),
    _kor("Megatron 530B 280xA100 (SP)", _gpt(105, 20480, 128), 280, 35, 280, 0.560),
    _kor("Megatron 1T 512xA100 (SP)", _gpt(128, 25600, 160), 512, 64, 512, 0.563),
    # H100
    Run(
        "Megatron-Core 175B 96xH100",
        "megatron-core-h100",
        "gpt",
        _gpt(96, 12288, 96),
        "h100",
        96,
        1536,
        2048,
        3,
        4,
        8,
        "",
        True,
        False,
        1,
        0.47,
        "megatron-mfu",
        flash=True,
        interleave=4,
    ),
    Run(
        "Megatron-Core 175B 4608xH100",
        "megatron-core-h100",
        "gpt",
        _gpt(96, 12288, 96),
        "h100",
        4608,
        2304,
        2048,
        144,
        4,
        8,
        "",
        True,
        False,
        1,
        0.42,
        "megatron-mfu",
        flash=True,
        interleave=4,
    ),
    Run(
        "Llama 3 405B 8192xH100",
        "llama3",
        "llama",
        LLAMA3_405B,
        "h100",
        8192,
        2048,
        8192,
        64,
        8,
        16,
        "Z1",
        False,
        False,
        1,
        0.43,
        "6n-causal",
        flash=True,
        interleave=4,
    ),
    Run(
        "Llama 3 405B 16384xH100",
        "llama3",
        "llama",
        LLAMA3_405B,
        "h100",
        16384,
        2048,
        8192,
        128,
        8,
        16,
        "Z1",
        False,
        False,
        1,
        0.41,
        "6n-causal",
        flash=True,
        interleave=4,
    ),
)
"""The published rows (at least 20), in family order."""


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


def _schedule(run: Run) -> list:
    names = ["BP"] + (["MP"] if run.tp > 1 else [])
    if run.model == "llama":
        tactics = models.llama_schedule("+".join(names + ([run.zero] if run.zero else [])))
        return tactics
    tactics = [schedules.tactic("gpt_scan", n) for n in names]
    if run.sp and run.tp > 1:
        tactics += SP()
    if run.zero:
        tactics.append(schedules.tactic("gpt_scan", {"Z1": "Z2"}.get(run.zero, run.zero)))
    return tactics


@dataclasses.dataclass
class Planned:
    """A run's traced, partitioned stage and what its simulation needs."""

    run: Run
    plan: Any
    layers_traced: int
    bubble: float
    plan_s: float


def plan_run(run: Run) -> Planned:
    """Trace and partition the run's model (one pipeline stage when PP > 1) at full size."""
    start = time.perf_counter()
    layers = math.ceil(run.shape["layers"] / run.pp)
    replica_batch = run.batch // run.dp
    bubble = 1.0
    if run.pp > 1:
        m = replica_batch // max(run.microbatch, 1)
        bubble = 1 + (run.pp - 1) / (run.interleave * m)
    cfg = {**run.shape, "layers": layers, "seq": run.seq, "batch": run.batch,
           "dtype": "bfloat16", "remat": run.remat}  # fmt: skip
    if run.model == "llama":
        model = models.llama(abstract=True, **cfg)
    else:
        model = models.get("gpt_scan", abstract=True, **cfg)
    mesh = {"batch": run.dp, "model": run.tp}
    step = partir.partition(_schedule(run), mesh=mesh, mode="spmd")
    plan = step(model.fn).plan(*model.args)
    return Planned(run, plan, layers, bubble, time.perf_counter() - start)


def flash_adjustment(report: Any, seq: int) -> float:
    """Seconds of the simulated step spent in non-matmul ops reading or writing attention
    scores (a value with two dims of the sequence length: masking, softmax, their gradients).

    The zoo models compute attention as XLA sees plain JAX: every elementwise op on the
    scores reads and writes them in device memory. The published runs marked `Run.flash` used
    a fused attention kernel (FlashAttention, Dao et al. 2022; MaxText's ``attention=flash``)
    that keeps the scores on chip, so those memory passes do not happen; their FLOPs are
    negligible next to the two score matmuls, which stay. This is an approximation of such a
    kernel outside the simulator, stated in each row (``flash_adjustment_s``).
    """
    total = 0.0
    for op, count, cost, seconds in report.records:
        if not isinstance(cost, OpCost) or getattr(op, "primitive_name", "") == "dot_general":
            continue
        values = [*getattr(op, "operands", ()), *getattr(op, "results", ())]
        if any(ir.shape_of(v.type).count(seq) >= 2 for v in values if hasattr(v.type, "shape")):
            total += seconds * count
    return total


def predict(p: Planned, hardware: Any) -> dict[str, float]:
    """Simulated step time and MFU of a planned run on one profile."""
    report = p.plan.simulate(hardware, donate=True)
    flash = flash_adjustment(report, p.run.seq) if p.run.flash else 0.0
    step = (report.step_time_overlap_s - flash) * p.bubble
    per_device = published_flops(p.run) / p.run.devices
    return {
        "step_time_s": step,
        "compute_time_s": report.compute_time_s * p.bubble,
        "communication_time_s": report.communication_time_s * p.bubble,
        "mfu": per_device / (step * report.peak_flops_per_s),
        "flash_adjustment_s": flash * p.bubble,
    }


def _err(pred: float, published: float) -> float:
    return abs(pred - published) / published


# grids of the free parameters (Hardware.fitted)
MATMUL = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
COLLECTIVE = (0.6, 0.8, 1.0, 1.2)
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
            flash_adjustment_s=pred["flash_adjustment_s"],
            layers_traced=p.layers_traced,
            pipeline_approximated=run.pp > 1,
            pipeline_bubble=p.bubble,
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
        "held_out_no_pipeline": _summary([r for r in held_rows if not r["pipeline_approximated"]]),
        "failed": failures,
        "seconds": time.perf_counter() - start,
    }
    print(summary)
    RESULTS.mkdir(exist_ok=True)
    plot(out_rows, pathlib.Path(args.out).with_suffix(".png"))
    write_result({"fits": fits, "summary": summary, "rows": out_rows}, args.out)


if __name__ == "__main__":
    main()
