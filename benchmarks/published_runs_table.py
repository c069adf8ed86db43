"""The published training runs `published_runs.py` predicts: each row's model shape, batch,
sequence length, hardware, device count, published plan and MFU, with its source (data, with
citations; `[M]` marks a value the source does not state and this table assumes)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

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
    "custom with offload); 8B per-device batch [M]",
    "maxtext-v6e-405b": "MaxText tiering (Gold), Trillium: Llama 3.1 405B at 38.55% MFU; plan "
    "from the tpu-recipes v0.1.2 Trillium recipe (llama3_1_405b_8192_pure_fsdp_ici: "
    "per_device_batch_size=1, ici_fsdp_parallelism=256 per v6e-256 slice, "
    "max_target_length=8192, remat_policy custom with the layer input offloaded to host; "
    "modelled as full recomputation on one slice [M]). The same file's "
    "llama3_1_405b_8192_fsdp_dcn runs FSDP 64 x TP 4 instead; which plan the 38.55% "
    "measured is not stated",
    "narayanan21": "Narayanan et al., 'Efficient Large-Scale Language Model Training on GPU "
    "Clusters Using Megatron-LM', SC'21, Table 1 (weak scaling, A100, seq 2048, vocab 51200, "
    "full activation recomputation; % of 312 TFLOP/s peak counting recomputation, Eq. 3)",
    "korthikanti22": "Korthikanti et al., 'Reducing Activation Recomputation in Large "
    "Transformer Models', 2022, Table 5 / Megatron-LM README before 2024-07 (A100, selective "
    "recomputation + sequence parallelism, MFU without recomputation)",
    "megatron-core-h100": "Megatron-LM README, 'Strong Scaling Results' (github.com/NVIDIA/"
    "Megatron-LM): GPT-3 175B strong scaled from 96 to 4,608 H100 'using the same batch size "
    "of 1152 sequences throughout', MFU 47% to 42% (plan [M]: TP 4, PP 8 interleaved x4, "
    "sequence parallel, flash attention, microbatch 1; vocab 51200 [M], the README's is larger)",
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
    Run("MaxText Llama2 70B v5p-1024", "maxtext-llama2-70b", "llama", LLAMA2_70B, "tpu-v5p",
        512, 4 * 512, 4096, 512, 1, 1, "Z3", False, True, 0, 0.654, "6n", flash=True),
    # TPU v6e (Trillium), MaxText tiering
    Run("MaxText Llama3.1 8B v6e-256", "maxtext-v6e", "llama", LLAMA3_8B, "tpu-v6e", 256,
        3 * 256, 8192, 256, 1, 1, "Z3", False, True, 0, 0.4546, "6n-causal", flash=True),
    Run("MaxText Llama3.1 70B v6e-256", "maxtext-v6e", "llama", LLAMA3_70B, "tpu-v6e", 256,
        4 * 256, 8192, 256, 1, 1, "Z3", False, True, 0, 0.5033, "6n-causal", flash=True),
    Run("MaxText Llama3.1 405B v6e-256", "maxtext-v6e-405b", "llama", LLAMA3_405B, "tpu-v6e",
        256, 256, 8192, 256, 1, 1, "Z3", False, True, 0, 0.3855, "6n-causal", flash=True),
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
    # H100: Megatron-Core strong scaling at one global batch of 1152 sequences
    Run("Megatron-Core 175B 96xH100", "megatron-core-h100", "gpt", _gpt(96, 12288, 96), "h100",
        96, 1152, 2048, 3, 4, 8, "", True, False, 1, 0.47, "megatron-mfu", flash=True,
        interleave=4),
    Run("Megatron-Core 175B 4608xH100", "megatron-core-h100", "gpt", _gpt(96, 12288, 96),
        "h100", 4608, 1152, 2048, 144, 4, 8, "", True, False, 1, 0.42, "megatron-mfu",
        flash=True, interleave=4),
    Run("Llama 3 405B 8192xH100", "llama3", "llama", LLAMA3_405B, "h100", 8192, 2048, 8192, 64,
        8, 16, "Z1", False, False, 1, 0.43, "6n-causal", flash=True, interleave=4),
    Run("Llama 3 405B 16384xH100", "llama3", "llama", LLAMA3_405B, "h100", 16384, 2048, 8192,
        128, 8, 16, "Z1", False, False, 1, 0.41, "6n-causal", flash=True, interleave=4),
)  # fmt: skip
"""The published rows (at least 20), in family order."""
