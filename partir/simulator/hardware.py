"""Hardware profiles: per-chip compute, memory and interconnect numbers.

Every number is cited to `reference/hardware_and_costs.md` (shared with the project as
`/work/shared/reference/hardware_and_costs.md`; "§7" below means its hardware table, "§6.x" its
formulas). Tags follow the reference: [P] primary source, [S] secondary, [M] our inference or
an assumption. Where the reference gives two figures (the scaling book and the Cloud docs
disagree on ICI link bandwidth for v5e/v5p/v6e) the profile uses one and keeps the other in
`Link.alt_bandwidth_bytes_per_s`; calibration against measurement decides.

The ``cpu`` profile is a conservative default for the emulated CPU mesh. ``partir calibrate``
(not written yet) is to measure this machine and write a JSON file in the format of
`Hardware.to_dict` to `cpu_profile_path()` (``$PARTIR_CPU_PROFILE``, else
``~/.cache/partir/hardware/cpu.json``); `get_hardware("cpu")` loads that file when it exists.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partir.errors import SimulatorError


@dataclass(frozen=True)
class Link:
    """One kind of interconnect, as the collective cost model sees it.

    Attributes:
      kind: ``"ici"`` (TPU torus), ``"nvlink"`` (GPU NVSwitch domain), ``"infiniband"``
        (GPU across nodes), ``"dcn"`` (TPU across slices/hosts), ``"loopback"`` (CPU) or
        ``"ethernet"`` (CPU hosts to one another).
      bandwidth_bytes_per_s: one direction. For a torus (`switched` False), per physical
        link; for a switched fabric, what one device can inject.
      latency_s: per ring step / torus hop.
      efficiency: achieved fraction of `bandwidth_bytes_per_s` for large messages.
      base_latency_s: fixed start-up latency of one collective (NCCL's base latency).
      switched: True for a full-bisection switch (NVSwitch, InfiniBand fat tree, DCN,
        shared memory), False for a ring/torus whose axes may lack wraparound.
      alt_bandwidth_bytes_per_s: the other published figure where sources disagree, or None.
      per_kind: measured numbers that replace the ones above for one collective kind:
        ``(kind, base_latency_s, latency_s, effective bandwidth)`` per kind (``partir
        calibrate`` fits them on the CPU, where every kind is implemented differently).
    """

    kind: str
    bandwidth_bytes_per_s: float
    latency_s: float
    efficiency: float = 1.0
    base_latency_s: float = 0.0
    switched: bool = False
    alt_bandwidth_bytes_per_s: float | None = None
    per_kind: tuple[tuple[str, float, float, float], ...] = ()

    def terms(self, collective: str) -> tuple[float, float, float]:
        """``(base latency, per-step latency, effective bandwidth)`` for one collective kind.

        Args:
          collective: the collective kind (``"all_reduce"``, ...).
        """
        for kind, base, step, bandwidth in self.per_kind:
            if kind == collective:
                return base, step, bandwidth
        return self.base_latency_s, self.latency_s, self.effective_bandwidth_bytes_per_s

    @property
    def effective_bandwidth_bytes_per_s(self) -> float:
        """`bandwidth_bytes_per_s` times `efficiency`: what a large transfer achieves."""
        return self.bandwidth_bytes_per_s * self.efficiency


# Calculon's A100 efficiency tables (systems/a100_80g.json; reference §6.3 [P, code]).
# Compute is keyed by the op's GFLOP (the file's "gflops_efficiency"; the reference's
# summary writes the thresholds as "MB"), memory by the MB the op moves.
_CALCULON_MATRIX_EFFICIENCY = ((128e9, 0.95), (16e9, 0.9), (1e9, 0.6), (0.0, 0.1))
_CALCULON_HBM_EFFICIENCY = ((100e6, 0.90), (10e6, 0.75), (1e6, 0.6), (0.0, 0.3))


@dataclass(frozen=True)
class Hardware:
    """One accelerator (per chip or GPU) and its interconnect.

    Attributes:
      name: the profile name, e.g. ``"tpu-v5p"``.
      kind: ``"tpu"``, ``"gpu"`` or ``"cpu"`` (selects the default topology).
      peak_bf16_flops_per_s: dense bf16 matrix peak.
      peak_f32_flops_per_s: the rate f32 matmuls run at under JAX's default precision.
      hbm_bandwidth_bytes_per_s: device memory bandwidth.
      memory_bytes: device memory capacity.
      links: the interconnect kinds this device has (see `Link`).
      devices_per_node: devices per host (TPU) or per NVLink node (GPU).
      fast_domain_devices: devices one fast fabric spans: the TPU pod (ICI) or NVLink domain.
      torus_rank: dimensions of the ICI torus (0: not a torus); descriptive, since the
        topology maps each mesh axis onto one torus dimension.
      wraparound_multiple: a torus axis whose size is a multiple of this has wraparound
        links (axes of size <= 2 behave as if they had).
      compute_efficiency: ``(min_flops, efficiency)`` steps, largest first: the fraction of
        peak an op of that many flops achieves.
      memory_efficiency: ``(min_bytes, efficiency)`` steps for memory bandwidth.
      min_kernel_time_s: time floor of one matmul/convolution kernel.
      flops_per_transcendental: flops one transcendental (exp, tanh, ...) costs in time.
      peak_int8_ops_per_s: int8 peak where published, else None.
      kernel_overhead_s: time each kernel the compiler launches (an XLA fusion or a library
        call) adds on top of its roofline time: the CPU runtime's per-kernel dispatch, which
        dominates small programs there (``partir calibrate`` measures it); 0 on the
        accelerator profiles, whose small-kernel cost is `min_kernel_time_s`.
      launch_overhead_s: time to start one program (one step) on the device, whatever it
        computes: the runtime's dispatch and synchronisation of the devices (CPU: measured
        by ``partir calibrate``; 0 on the accelerator profiles, where it is negligible).
      buffer_overhead_s: time each argument and result buffer adds to starting a program.
    """

    name: str
    kind: str
    peak_bf16_flops_per_s: float
    peak_f32_flops_per_s: float
    hbm_bandwidth_bytes_per_s: float
    memory_bytes: float
    links: tuple[Link, ...]
    devices_per_node: int
    fast_domain_devices: int
    torus_rank: int = 0
    wraparound_multiple: int = 4
    compute_efficiency: tuple[tuple[float, float], ...] = _CALCULON_MATRIX_EFFICIENCY
    memory_efficiency: tuple[tuple[float, float], ...] = _CALCULON_HBM_EFFICIENCY
    min_kernel_time_s: float = 0.0
    flops_per_transcendental: float = 1.0
    peak_int8_ops_per_s: float | None = None
    kernel_overhead_s: float = 0.0
    launch_overhead_s: float = 0.0
    buffer_overhead_s: float = 0.0
    _by_kind: dict[str, Link] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_kind", {link.kind: link for link in self.links})
        if self.peak_bf16_flops_per_s <= 0 or self.hbm_bandwidth_bytes_per_s <= 0:
            raise SimulatorError(f"hardware {self.name!r}: peaks and bandwidths must be > 0")
        for table in ("compute_efficiency", "memory_efficiency"):
            bad = [e for _, e in getattr(self, table) if not 0 < e <= 1]
            if bad:
                raise SimulatorError(
                    f"hardware {self.name!r}: {table} fractions must be in (0, 1], got {bad}; "
                    "recalibrate (`partir calibrate`) or fix the profile file"
                )

    def peak_flops_per_s(self, dtype: str) -> float:
        """Peak matrix FLOP/s for operands of `dtype` (a dtype name such as ``"float32"``)."""
        if dtype in ("float32", "float64"):
            return self.peak_f32_flops_per_s
        if dtype in ("int8", "uint8") and self.peak_int8_ops_per_s:
            return self.peak_int8_ops_per_s
        return self.peak_bf16_flops_per_s

    def link(self, kind: str) -> Link:
        """The `Link` of one interconnect kind (``"ici"``, ``"nvlink"``, ...)."""
        try:
            return self._by_kind[kind]
        except KeyError:
            raise SimulatorError(
                f"hardware {self.name!r} has no {kind!r} link; it has: {', '.join(self._by_kind)}"
            ) from None

    def compute_efficiency_at(self, flops: float) -> float:
        """Fraction of peak an op of `flops` floating-point operations achieves."""
        return _step(self.compute_efficiency, flops)

    def memory_efficiency_at(self, num_bytes: float) -> float:
        """Fraction of `hbm_bandwidth_bytes_per_s` an op moving `num_bytes` achieves."""
        return _step(self.memory_efficiency, num_bytes)

    @property
    def critical_intensity(self) -> float:
        """Peak bf16 FLOP/s over HBM bytes/s: the arithmetic intensity of the ridge point."""
        return self.peak_bf16_flops_per_s / self.hbm_bandwidth_bytes_per_s

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; `Hardware.from_dict` reads it back (the calibration format)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        out["links"] = [dataclasses.asdict(link) for link in self.links]
        out["compute_efficiency"] = [list(p) for p in self.compute_efficiency]
        out["memory_efficiency"] = [list(p) for p in self.memory_efficiency]
        return out

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Hardware:
        """A `Hardware` from `to_dict` output (unknown keys are an error, missing ones too)."""
        names = {f.name for f in dataclasses.fields(Hardware) if f.init}
        unknown = set(data) - names
        if unknown:
            raise SimulatorError(
                f"unknown hardware fields {sorted(unknown)}; known: {sorted(names)}"
            )
        kwargs = dict(data)
        links = []
        for link in data.get("links", ()):
            fields = dict(link)
            fields["per_kind"] = tuple(tuple(k) for k in fields.get("per_kind", ()))
            links.append(Link(**fields))
        kwargs["links"] = tuple(links)
        for key in ("compute_efficiency", "memory_efficiency"):
            if key in kwargs:
                kwargs[key] = tuple((float(a), float(b)) for a, b in kwargs[key])
        try:
            return Hardware(**kwargs)
        except TypeError as e:
            raise SimulatorError(f"incomplete hardware profile: {e}") from None


def _step(table: tuple[tuple[float, float], ...], size: float) -> float:
    for threshold, eff in table:
        if size >= threshold:
            return eff
    return table[-1][1] if table else 1.0


# ---------------------------------------------------------------------------------------
# Interconnects
# ---------------------------------------------------------------------------------------

# ICI per-hop latency T_min ~ 1 us (reference §6.2 and §7 notes, scaling book [P]).
_ICI_HOP_S = 1e-6
# NCCL Ring, Simple protocol: base latency 8.4 us, +3.4 us per NVLink step, +14 us per network
# step (reference §6.5 and §7 notes, PyTorch AutoParallel's port of NCCL tuning.cc [P]).
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


def _nvlink(per_direction: float, efficiency: float) -> Link:
    return Link(
        "nvlink", per_direction, _NCCL_NVLINK_STEP_S, efficiency, _NCCL_BASE_S, switched=True
    )


def _infiniband(per_gpu: float, efficiency: float) -> Link:
    return Link("infiniband", per_gpu, _NCCL_NET_STEP_S, efficiency, _NCCL_BASE_S, switched=True)


GiB = 2**30
"""Bytes in a gibibyte."""

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
        links=(_nvlink(300e9, 0.65), _infiniband(25e9, 0.9)),
        devices_per_node=8,
        fast_domain_devices=8,
        min_kernel_time_s=7e-6,
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
        links=(_nvlink(450e9, 320 / 450), _infiniband(50e9, 0.9)),
        devices_per_node=8,
        fast_domain_devices=8,
        min_kernel_time_s=7e-6,
    )
)

# H200 SXM: 989 TFLOP/s bf16 (the H100 die), 141 GB HBM3e, 4.8 TB/s; NVLink4 as H100 [S];
# interconnect "as H100".
_register(
    Hardware(
        name="h200",
        kind="gpu",
        peak_bf16_flops_per_s=989e12,
        peak_f32_flops_per_s=989e12 / 2,
        hbm_bandwidth_bytes_per_s=4.8e12,
        memory_bytes=141e9,
        links=(_nvlink(450e9, 320 / 450), _infiniband(50e9, 0.9)),
        devices_per_node=8,
        fast_domain_devices=8,
        min_kernel_time_s=7e-6,
    )
)

# CPU hosts to one another (what-if plans of several CPU hosts, and `jax.distributed` meshes
# spanning processes): [M] 10 GbE, 1.25e9 B/s, 50 us per ring step (TCP through the kernel,
# gloo's transport); not measured by `partir calibrate`, which runs on one host.
CPU_ETHERNET = Link("ethernet", 1.25e9, 5e-5, efficiency=0.8, switched=True)
"""The link between CPU hosts, for CPU profiles (a calibrated one) that name none."""

# The emulated CPU mesh: [M] conservative guesses for one of 8 devices sharing one host,
# meant to be replaced by `partir calibrate`. No efficiency steps: calibration measures them.
DEFAULT_CPU = Hardware(
    name="cpu",
    kind="cpu",
    peak_bf16_flops_per_s=2e10,
    peak_f32_flops_per_s=2e10,
    hbm_bandwidth_bytes_per_s=5e9,
    memory_bytes=8 * GiB,
    links=(Link("loopback", 5e9, 1e-5, switched=True), CPU_ETHERNET),
    devices_per_node=8,
    fast_domain_devices=8,
    compute_efficiency=((0.0, 1.0),),
    memory_efficiency=((0.0, 1.0),),
)
"""The ``cpu`` profile used when no calibration file exists."""


def cpu_profile_path() -> Path:
    """Where `partir calibrate` writes (and `get_hardware("cpu")` reads) the CPU profile."""
    env = os.environ.get("PARTIR_CPU_PROFILE")
    if env:
        return Path(env)
    return Path.home() / ".cache" / "partir" / "hardware" / "cpu.json"


def cpu_profile(path: str | os.PathLike[str] | None = None) -> Hardware:
    """The calibrated CPU profile from `path` (default `cpu_profile_path()`), else `DEFAULT_CPU`.

    Args:
      path: a JSON file in `Hardware.to_dict` format; None for the default location. Fields
        the file omits keep `DEFAULT_CPU`'s values.
    """
    file = Path(path) if path is not None else cpu_profile_path()
    if not file.is_file():
        return DEFAULT_CPU
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise SimulatorError(f"cannot read the CPU profile {file}: {e}") from None
    return Hardware.from_dict({**DEFAULT_CPU.to_dict(), **data})


def save_cpu_profile(hardware: Hardware, path: str | os.PathLike[str] | None = None) -> Path:
    """Write `hardware` as the CPU profile (what `partir calibrate` will call); returns the path.

    Args:
      hardware: the measured profile.
      path: the JSON file to write; None for `cpu_profile_path()`.
    """
    file = Path(path) if path is not None else cpu_profile_path()
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps(hardware.to_dict(), indent=2) + "\n")
    return file


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
