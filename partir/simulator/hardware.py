"""Hardware profiles: per-chip compute, memory and interconnect numbers.

Every number is cited to `reference/hardware_and_costs.md` (shared with the project as
`/work/shared/reference/hardware_and_costs.md`; "§7" below means its hardware table, "§6.x" its
formulas). Tags follow the reference: [P] primary source, [S] secondary, [M] our inference or
an assumption. Where the reference gives two figures (the scaling book and the Cloud docs
disagree on ICI link bandwidth for v5e/v5p/v6e) the profile uses one and keeps the other in
`Link.alt_bandwidth_bytes_per_s`; calibration against measurement decides.

The built-in chip profiles and `get_hardware` are in `profiles.py`.

The ``cpu`` profile is a conservative default for the emulated CPU mesh. ``partir calibrate``
measures this machine and writes a JSON file in the format of
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
      nccl_protocols: the link is driven by NCCL, which picks the fastest of its ring and
        tree algorithms and LL, LL128 and Simple protocols per message
        (`partir.simulator.collectives.nccl_time`); `base_latency_s` and `latency_s` are
        then the Ring/Simple figures.
      bus_bandwidth: measured bus bandwidth per collective kind (nccl-tests' ``busbw``),
        ``(kind, bytes/s)``, replacing `effective_bandwidth_bytes_per_s` for that kind.
    """

    kind: str
    bandwidth_bytes_per_s: float
    latency_s: float
    efficiency: float = 1.0
    base_latency_s: float = 0.0
    switched: bool = False
    alt_bandwidth_bytes_per_s: float | None = None
    per_kind: tuple[tuple[str, float, float, float], ...] = ()
    nccl_protocols: bool = False
    bus_bandwidth: tuple[tuple[str, float], ...] = ()

    def terms(self, collective: str) -> tuple[float, float, float]:
        """``(base latency, per-step latency, effective bandwidth)`` for one collective kind.

        Args:
          collective: the collective kind (``"all_reduce"``, ...).
        """
        for kind, base, step, bandwidth in self.per_kind:
            if kind == collective:
                return base, step, bandwidth
        return self.base_latency_s, self.latency_s, self.bandwidth_for(collective)

    def bandwidth_for(self, collective: str) -> float:
        """The large-message bandwidth of one collective kind: its `bus_bandwidth` entry,
        else `effective_bandwidth_bytes_per_s`.

        Args:
          collective: the collective kind (``"all_reduce"``, ...).
        """
        for kind, bandwidth in self.bus_bandwidth:
            if kind == collective:
                return bandwidth
        return self.effective_bandwidth_bytes_per_s

    def scaled(self, factor: float) -> Link:
        """This link with every bandwidth figure (efficiency, `bus_bandwidth`, `per_kind`)
        times `factor`: a fitted collective efficiency.

        Args:
          factor: the multiplier, > 0.
        """
        return dataclasses.replace(
            self,
            efficiency=self.efficiency * factor,
            bus_bandwidth=tuple((k, b * factor) for k, b in self.bus_bandwidth),
            per_kind=tuple((k, a, s, b * factor) for k, a, s, b in self.per_kind),
        )

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
      collective_overlap: the fraction of a collective's time the ops that consume its
        result need not wait for: compilers overlap a tensor-parallel collective with the
        matmul next to it (XLA's collective matmul, Megatron-Core's TP communication
        overlap), so that a consumer starts on the first chunks while later ones arrive. 0
        means a consumer waits for the whole collective.
      multi_output_fusion: the compiler merges same-shape elementwise loops that share
        operands or feed one another into one kernel (XLA's GPU and TPU multi-output fusion,
        xla/service/gpu/transforms/multi_output_fusion.cc): a value passed between them stays
        on chip, so an AdamW update is one memory pass over parameters, gradients and moments.
        False on the CPU, whose fusion the simulator follows op by op.
      compute_contention: how many times slower each op runs than its roofline because
        emulated devices share a host's cores (CPU only; 1 elsewhere).
      dispatch_contention: the same for the per-kernel overhead: every device's kernel
        launches go through the host's shared runtime threads.
      provenance: where the profile's free efficiency parameters come from, e.g. the
        published runs it was fitted on; empty for a profile of first-principles numbers only.
        A report simulated on a fitted profile says so.
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
    collective_overlap: float = 0.0
    multi_output_fusion: bool = False
    compute_contention: float = 1.0
    dispatch_contention: float = 1.0
    provenance: str = ""
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
        if not 0.0 <= self.collective_overlap <= 1.0:
            raise SimulatorError(
                f"hardware {self.name!r}: collective_overlap must be in [0, 1], got "
                f"{self.collective_overlap}"
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

    def fitted(
        self,
        *,
        matmul_efficiency: float | None = None,
        collective_efficiency: float | None = None,
        collective_overlap: float | None = None,
        provenance: str,
    ) -> Hardware:
        """This profile with its free efficiency parameters replaced (a calibration).

        Args:
          matmul_efficiency: the fraction of peak the largest matmuls reach; the whole
            `compute_efficiency` table is scaled so that its top step is this (each step
            capped at 1).
          collective_efficiency: a multiplier on every link's bandwidth (`Link.scaled`).
          collective_overlap: the new `collective_overlap`.
          provenance: what the values were fitted on (kept in the profile and the report).
        """
        out = self
        if matmul_efficiency is not None:
            top = max(e for _, e in self.compute_efficiency)
            table = tuple(
                (t, min(1.0, e * matmul_efficiency / top)) for t, e in self.compute_efficiency
            )
            out = dataclasses.replace(out, compute_efficiency=table)
        if collective_efficiency is not None:
            links = tuple(link.scaled(collective_efficiency) for link in out.links)
            out = dataclasses.replace(out, links=links)
        if collective_overlap is not None:
            out = dataclasses.replace(out, collective_overlap=collective_overlap)
        return dataclasses.replace(out, provenance=provenance)

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
            fields["bus_bandwidth"] = tuple(tuple(k) for k in fields.get("bus_bandwidth", ()))
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


GiB = 2**30
"""Bytes in a gibibyte."""

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
