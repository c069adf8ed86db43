"""The built-in hardware profiles (TPU v4/v5e/v5p/v6e, A100/H100/H200), their fitted
variants, and `get_hardware`, which finds a profile by name.

Every number is cited to `reference/hardware_and_costs.md` (shared with the project as
`/work/shared/reference/hardware_and_costs.md`; "§7" below means its hardware table, "§6.x" its
formulas), with the tags of `hardware.py`. ``<name>-fitted`` profiles (`FITS`) are the same
chips with their free efficiency parameters fitted on published training runs by
benchmarks/published_runs.py; their `Hardware.provenance` says on which rows, and a report
simulated on one says so.
"""

from __future__ import annotations

import dataclasses

from partir.simulator.hardware import GiB, Hardware, Link, SimulatorError, cpu_profile

# ---------------------------------------------------------------------------------------
# Interconnects
# ---------------------------------------------------------------------------------------

# ICI per-hop latency T_min ~ 1 us (reference §6.2 and §7 notes, scaling book [P]).
_ICI_HOP_S = 1e-6
# NCCL Ring, Simple protocol: base latency 8.4 us, +3.4 us per NVLink step, +14 us per network
# step (reference §6.5 and §7 notes, PyTorch AutoParallel's port of NCCL tuning.cc [P]). The
# other algorithms and protocols (Tree; LL, LL128) are in collectives.py, from the same file.
_NCCL_BASE_S = 8.4e-6
_NCCL_NVLINK_STEP_S = 3.4e-6
_NCCL_NET_STEP_S = 14e-6
# DCN latency: not in the reference. [M] we reuse NCCL's per-network-step latency.
_DCN_STEP_S = _NCCL_NET_STEP_S
# DCN ~ 2.5e10 B/s per host (reference §6.2, scaling book [P]).
_DCN_HOST_BYTES_PER_S = 2.5e10


def _ici(one_way: float, alt_one_way: float | None = None) -> Link:
    return Link("ici", one_way, _ICI_HOP_S, alt_bandwidth_bytes_per_s=alt_one_way)


def _dcn(per_chip: float) -> Link:
    return Link("dcn", per_chip, _DCN_STEP_S, switched=True)


def _nvlink(
    per_direction: float, efficiency: float, bus_bandwidth: tuple[tuple[str, float], ...] = ()
) -> Link:
    return Link(
        "nvlink", per_direction, _NCCL_NVLINK_STEP_S, efficiency, _NCCL_BASE_S, switched=True,
        nccl_protocols=True, bus_bandwidth=bus_bandwidth,
    )  # fmt: skip


def _infiniband(per_gpu: float, efficiency: float) -> Link:
    return Link(
        "infiniband", per_gpu, _NCCL_NET_STEP_S, efficiency, _NCCL_BASE_S, switched=True,
        nccl_protocols=True,
    )  # fmt: skip


# nccl-tests all_reduce_perf bus bandwidth for large messages on one node [S]: 460-480 GB/s on
# 8 H100 SXM5 (NVLink4 with NVLS in-switch reduction, which is how busbw can pass the 450 GB/s
# per direction), 230-250 GB/s on 8 A100 SXM4 (Alaya NeW, "NCCL-tests in practice",
# docs.alayanew.com/en/docs/tech-blog/2026-05-06-nccl-tests, reference numbers table). We use
# the midpoints. All-gather/reduce-scatter keep the link's own figure (H100: ~320 GB/s).
_H100_NVLINK_BUSBW = (("all_reduce", 470e9),)
_A100_NVLINK_BUSBW = (("all_reduce", 240e9),)


# ---------------------------------------------------------------------------------------
# Profiles (reference §7 unless noted)
# ---------------------------------------------------------------------------------------

PROFILES: dict[str, Hardware] = {}
"""Built-in profiles by name (``cpu`` is built by `cpu_profile`, not stored here)."""


def _register(hw: Hardware) -> None:
    PROFILES[hw.name] = hw


# TPU v4: 275 TFLOP/s bf16, 32 GiB HBM2, 1200 GB/s; ICI 4.5e10 B/s one-way per link, 6 links,
# 3D torus wrapping on multiples of 4; pod 4096 chips (Cloud TPU v4 docs, scaling book [P]).
# f32: [M] JAX's default precision runs f32 matmuls on the MXU in one bf16 pass on TPU.
# DCN: [M] 4 chips per v4 host (not in the reference), so 2.5e10 / 4 per chip.
_register(
    Hardware(
        name="tpu-v4",
        kind="tpu",
        peak_bf16_flops_per_s=275e12,
        peak_f32_flops_per_s=275e12,
        hbm_bandwidth_bytes_per_s=1.2e12,
        memory_bytes=32 * GiB,
        links=(_ici(4.5e10), _dcn(_DCN_HOST_BYTES_PER_S / 4)),
        devices_per_node=4,
        fast_domain_devices=4096,
        torus_rank=3,
        wraparound_multiple=4,
        multi_output_fusion=True,
    )
)

# TPU v5e: 197 TFLOP/s bf16 (int8 393 TOPS), 16 GB, 819 GB/s; ICI 4.5e10 one-way per link
# (book) vs 400 GB/s bidi over 4 ports = 5e10 one-way (Cloud docs); 2D torus 16x16, wraparound
# only on full 16-chip axes; 8 chips/host with 2x100 Gbps NIC = 2.5e10 B/s per host [P].
_register(
    Hardware(
        name="tpu-v5e",
        kind="tpu",
        peak_bf16_flops_per_s=197e12,
        peak_f32_flops_per_s=197e12,
        hbm_bandwidth_bytes_per_s=819e9,
        memory_bytes=16e9,
        links=(_ici(4.5e10, 400e9 / 4 / 2), _dcn(2 * 100e9 / 8 / 8)),
        devices_per_node=8,
        fast_domain_devices=256,
        torus_rank=2,
        wraparound_multiple=16,
        peak_int8_ops_per_s=393e12,
        multi_output_fusion=True,
    )
)

# TPU v5p: 459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s; ICI 9e10 one-way per link (book) vs
# 1200 GB/s bidi per chip over 6 ports = 1e11 one-way (docs); 3D torus; 8960 chips/pod;
# DCN 50 Gbps per chip [P]. Wraparound as v4 (multiples of 4 / full cubes) [P]. [M] 4 chips
# per host (not in the reference).
_register(
    Hardware(
        name="tpu-v5p",
        kind="tpu",
        peak_bf16_flops_per_s=459e12,
        peak_f32_flops_per_s=459e12,
        hbm_bandwidth_bytes_per_s=2765e9,
        memory_bytes=95e9,
        links=(_ici(9e10, 1200e9 / 6 / 2), _dcn(50e9 / 8)),
        devices_per_node=4,
        fast_domain_devices=8960,
        torus_rank=3,
        wraparound_multiple=4,
        multi_output_fusion=True,
    )
)

# TPU v6e (Trillium): 918 TFLOP/s bf16 (int8 1836), 32 GB, 1638 GB/s; ICI 9e10 one-way per
# link (book) vs 800 GB/s bidi over 4 ports = 1e11 one-way (docs); 2D torus, 256 chips/pod,
# 8 chips/host; wraparound only on full 16-chip axes [P]. DCN 2.5e10 B/s per host (book).
_register(
    Hardware(
        name="tpu-v6e",
        kind="tpu",
        peak_bf16_flops_per_s=918e12,
        peak_f32_flops_per_s=918e12,
        hbm_bandwidth_bytes_per_s=1638e9,
        memory_bytes=32e9,
        links=(_ici(9e10, 800e9 / 4 / 2), _dcn(_DCN_HOST_BYTES_PER_S / 8)),
        devices_per_node=8,
        fast_domain_devices=256,
        torus_rank=2,
        wraparound_multiple=16,
        peak_int8_ops_per_s=1836e12,
        multi_output_fusion=True,
    )
)

# A100 SXM4 80GB: 312 TFLOP/s bf16, 80 GB, 2.039 TB/s; NVLink3 300 GB/s per direction,
# NVSwitch, 8 GPUs/node; inter-node 200 Gb/s per GPU = 25 GB/s [P]. Link efficiencies 0.65
# (NVLink) and 0.9 (IB) are Calculon's A100 tiers (reference §6.3). 7 us kernel floor:
# AutoParallel's roofline (reference §6.6). f32: [M] TF32 dense is half the bf16 rate.
_register(
    Hardware(
        name="a100",
        kind="gpu",
        peak_bf16_flops_per_s=312e12,
        peak_f32_flops_per_s=156e12,
        hbm_bandwidth_bytes_per_s=2.039e12,
        memory_bytes=80e9,
        links=(_nvlink(300e9, 0.65, _A100_NVLINK_BUSBW), _infiniband(25e9, 0.9)),
        devices_per_node=8,
        fast_domain_devices=8,
        min_kernel_time_s=7e-6,
        multi_output_fusion=True,
    )
)

# H100 SXM5: 989.4 TFLOP/s bf16, 80 GB HBM3, 3.35e12 B/s (not AutoParallel's 3.35 TiB/s);
# NVLink4 450 GB/s per direction, ~320 GB/s/GPU measured for an 8-way all-gather (so efficiency
# 320/450); inter-node 400 Gb/s per GPU = 50 GB/s [P]. IB efficiency: [M] Calculon's A100 0.9.
_register(
    Hardware(
        name="h100",
        kind="gpu",
        peak_bf16_flops_per_s=989.4e12,
        peak_f32_flops_per_s=989.4e12 / 2,
        hbm_bandwidth_bytes_per_s=3.35e12,
        memory_bytes=80e9,
        links=(_nvlink(450e9, 320 / 450, _H100_NVLINK_BUSBW), _infiniband(50e9, 0.9)),
        devices_per_node=8,
        fast_domain_devices=8,
        min_kernel_time_s=7e-6,
        multi_output_fusion=True,
    )
)

# H200 SXM: 989 TFLOP/s bf16 (the H100 die), 141 GB HBM3e, 4.8 TB/s; NVLink4 as H100 [S];
# interconnect "as H100", so the profile is H100's with the chip figures replaced.
_register(
    dataclasses.replace(
        PROFILES["h100"],
        name="h200",
        peak_bf16_flops_per_s=989e12,
        peak_f32_flops_per_s=989e12 / 2,
        hbm_bandwidth_bytes_per_s=4.8e12,
        memory_bytes=141e9,
    )
)

# Fitted profiles. benchmarks/published_runs.py traces published training runs at full size,
# simulates their published plans and fits three free parameters per chip (large-matmul
# efficiency, a collective-bandwidth multiplier, `collective_overlap`) by grid search on every
# other row by device count (at most half the rows); the held-out rows' errors are in
# benchmarks/results/published_runs.json and docs/simulator.md. The values below are that
# script's output, copied here with their provenance; `get_hardware("<name>-fitted")` returns
# the profile with them applied (the first-principles profiles above stay as they are).
FITS: dict[str, tuple[float, float, float, str]] = {
    "tpu-v5p": (0.9, 0.8, 0.9, "fitted on 3 MaxText v5p README rows (64B v5p-128, 128B "
                "v5p-512, 512B v5p-1024) by benchmarks/published_runs.py"),
    "tpu-v6e": (0.7, 0.4, 0.0, "fitted on 1 MaxText Trillium row (Llama 3.1 70B on 256 v6e; "
                "one row for three parameters: underdetermined) by benchmarks/published_runs.py"),
    "a100": (0.7, 0.4, 0.0, "fitted on 7 Megatron-LM A100 rows (Narayanan et al. 2021 Table 1: "
             "1.7B, 3.6B, 18.4B, 76.1B, 310B, 1T; Korthikanti et al. 2022: 1T; pipeline rows "
             "by the pipeline step simulator) by benchmarks/published_runs.py"),
    "h100": (0.65, 1.0, 0.9, "fitted on 2 H100 rows (Megatron-Core GPT-3 175B on 4,608 GPUs, "
             "Llama 3 405B on 16,384 GPUs; both pipelined, by the pipeline step simulator) by "
             "benchmarks/published_runs.py"),
}  # fmt: skip
"""Profile name -> (matmul efficiency, collective efficiency, collective overlap, provenance)."""

for _name, (_matmul, _collective, _overlap, _why) in FITS.items():
    _register(
        dataclasses.replace(
            PROFILES[_name].fitted(
                matmul_efficiency=_matmul,
                collective_efficiency=_collective,
                collective_overlap=_overlap,
                provenance=_why,
            ),
            name=f"{_name}-fitted",
        )
    )


def get_hardware(name_or_profile: str | Hardware) -> Hardware:
    """A hardware profile by name (``tpu-v5p``, ``h100``, ``cpu``, ...), or `Hardware` as is.

    Args:
      name_or_profile: a profile name (case-insensitive; ``v5p`` works for ``tpu-v5p``) or a
        `Hardware` instance.
    """
    if isinstance(name_or_profile, Hardware):
        return name_or_profile
    key = str(name_or_profile).lower()
    if key == "cpu":
        return cpu_profile()
    if key in PROFILES:
        return PROFILES[key]
    if f"tpu-{key}" in PROFILES:
        return PROFILES[f"tpu-{key}"]
    raise SimulatorError(
        f"unknown hardware profile {name_or_profile!r}; known: {', '.join([*PROFILES, 'cpu'])}, "
        "or pass a partir.simulator.Hardware"
    )


# What `jax.Device.device_kind` reports on each chip (Cloud TPU names v5e and v6e "lite").
# Checked in order: the first pattern the lower-cased kind contains wins.
_DEVICE_KINDS: tuple[tuple[str, str], ...] = (
    ("v6 lite", "tpu-v6e"),
    ("v6e", "tpu-v6e"),
    ("v5 lite", "tpu-v5e"),
    ("v5e", "tpu-v5e"),
    ("v5p", "tpu-v5p"),
    ("tpu v5", "tpu-v5p"),
    ("tpu v4", "tpu-v4"),
    ("a100", "a100"),
    ("h100", "h100"),
    ("h200", "h200"),
    ("cpu", "cpu"),
)


def profile_for_device_kind(kind: str) -> str | None:
    """The profile name for a device's `device_kind` (``"TPU v5 lite"`` -> ``"tpu-v5e"``,
    ``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``), or None when partir has no profile for it."""
    text = kind.lower()
    for pattern, name in _DEVICE_KINDS:
        if pattern in text:
            return name
    return None
