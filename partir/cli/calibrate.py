"""`partir calibrate`: measure this machine's emulated CPU devices for the ``cpu`` profile.

Runs small JAX programs on all the CPU devices at once (as a partitioned step runs: every
emulated device shares the host's cores) and fits what `partir.simulator.Hardware` needs:

- **matmul throughput** per device (f32, and bf16 when the CPU runs it at a different
  rate), for square matmuls of several sizes: the peak and its efficiency by op size;
- **memory bandwidth** per device, from a fused elementwise op over arrays of several sizes
  (bytes read and written per second), and its efficiency by size;
- **transcendental cost**, from ``exp`` over a large array, in flops of the matmul peak;
- **kernel overhead**: the time one more kernel (XLA fusion or library call) adds to a
  step, from chains of tiny dots;
- **launch overhead**: the time to start a program on every device, and what each argument
  and result buffer adds, from trivial programs of 1 and 33 buffers;
- **contention** is not measured: `COMPUTE_CONTENTION` and `DISPATCH_CONTENTION_PER_DEVICE`
  (fitted once, see there) are written into the profile;
- **collectives**: all_gather, all_reduce, reduce_scatter, all_to_all and
  collective_permute, chained inside one program (so each costs what it costs in a step),
  at several sizes and group sizes 2, 4 and 8; fitted per kind to the simulator's
  alpha-beta form ``base + steps * step + bytes_sent / bandwidth`` (nonnegative least
  squares on relative error).

Every timing is the median of several runs after a warm-up. `calibrate` returns the
profile; the CLI writes it with `partir.simulator.save_cpu_profile`, where
``get_hardware("cpu")`` finds it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from partir.errors import PartIRError
from partir.simulator import Hardware, Link, bytes_sent
from partir.simulator.hardware import DEFAULT_CPU

_BUFFERS = 33
"""Arguments (and results) of the program that measures the per-buffer launch cost."""

KINDS = ("all_gather", "all_reduce", "reduce_scatter", "all_to_all", "collective_permute")
"""The collective kinds measured (the simulator's names)."""


# Contention of the emulated devices for the host's cores, which the per-op measurements above
# (each op alone, every device running it) do not capture: in a whole step, ops of different
# devices queue behind one another. Fitted on the zoo rows of benchmarks/simulator_accuracy.py
# (8 devices on a 2-core host; grid search of the mean squared log ratio, `--fit-contention`
# there) and checked on its GPT ranking rows, which the fit does not see. Refitted 2026-12 from
# (2.0, 2.0): on the zoo rows a step costs about 4.75x its ops' rooflines but each kernel
# launch far less than 16x its measured overhead. A term for the devices' working set
# overflowing the host's last-level cache (8 x peak bytes > L3) was tried on the same rows
# plus half of the GPT rows and fitted to zero: the GPT rows that run slowest against their
# rooflines are those holding the whole batch per device, not those with the largest working
# set (docs/simulator.md).
COMPUTE_CONTENTION = 4.75
"""Factor on every op's roofline time in a step (`Hardware.compute_contention`)."""
DISPATCH_CONTENTION_PER_DEVICE = 0.5625
"""Factor, per emulated device, on the per-kernel overhead (`Hardware.dispatch_contention`,
4.5 on 8 devices): each device's launches wait for some of the others'."""
CONTENTION_PROVENANCE = (
    "cpu contention fitted on the zoo rows of benchmarks/simulator_accuracy.py (8 devices, "
    "2 cores); the rest measured by partir calibrate"
)


class CalibrationError(PartIRError, ValueError):
    """The machine cannot be calibrated as asked (too few devices, a bad option)."""


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much to measure.

    Attributes:
      matmul_sizes: square matmul sizes n (an n x n by n x n product per device).
      bandwidth_elements: f32 elements per device of the elementwise bandwidth test.
      collective_bytes: bytes per device of each collective's local operand.
      group_sizes: collective group sizes (devices); each must divide the device count.
      chain: collectives (or tiny dots) chained in one program; the cost of one is the
        difference to a program with one, divided by ``chain - 1``.
      repeats: timed runs per measurement (the fastest counts).
      min_chain_s: a chain shorter than this (seconds) is lengthened, up to 256 steps.
    """

    matmul_sizes: tuple[int, ...] = (32, 64, 128, 256, 384, 512)
    bandwidth_elements: tuple[int, ...] = (1 << 10, 1 << 14, 1 << 18, 1 << 20, 1 << 21)
    collective_bytes: tuple[int, ...] = (256, 16 << 10, 256 << 10, 2 << 20)
    group_sizes: tuple[int, ...] = (2, 4, 8)
    chain: int = 8
    repeats: int = 7
    min_chain_s: float = 2e-3


QUICK = Plan(
    matmul_sizes=(32, 128, 256),
    bandwidth_elements=(1 << 10, 1 << 18),
    collective_bytes=(256, 256 << 10),
    group_sizes=(2, 8),
    chain=4,
    repeats=3,
    min_chain_s=5e-4,
)
"""A few seconds: enough for tests and a first estimate."""


def _fastest_time(fn: Callable[..., Any], args: Sequence[Any], repeats: int) -> float:
    """The fastest of `repeats` timed runs after two warm-up runs (the first compiles).

    The fastest, not the median: other processes on the machine only ever add time.
    """
    jax.block_until_ready(fn(*args))
    jax.block_until_ready(fn(*args))
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - start)
    return best


class _Machine:
    """The device mesh and helpers to time per-device programs on all devices at once."""

    def __init__(self, devices: Sequence[Any], plan: Plan):
        n = len(devices)
        self.n = n
        self.plan = plan
        self.mesh = jax.sharding.Mesh(np.array(devices), ("d",))
        # group sizes as nested axes: a group of g devices is the g innermost devices
        self.shape = _factor(n)
        names = tuple(f"a{i}" for i in range(len(self.shape)))
        self.group_mesh = jax.sharding.Mesh(np.array(devices).reshape(self.shape), names)

    def marginal(
        self,
        step: Callable[..., Any],
        shape: tuple[int, ...],
        dtype: str,
        consts: Sequence[Any] = (),
        min_chain: int | None = None,
    ) -> float:
        """Seconds one more `step` adds to a program that chains it on every device.

        ``step(x, *consts)`` runs on each device's local `x` (of `shape`); `consts` are
        replicated inputs (not constants, which XLA could fold into the step). The cost of
        one step is the slope of program time over chains of 1, ``1 + k`` and ``1 + 2k``
        steps, with k chosen so the chain takes a few milliseconds: what the step costs
        inside a compiled program, without the dispatch of a program.
        """
        mesh = self.mesh
        x = jax.device_put(
            jnp.ones((self.n * shape[0], *shape[1:]), dtype), NamedSharding(mesh, P("d"))
        )
        cs = [jax.device_put(c, NamedSharding(mesh, P())) for c in consts]

        def run(k: int) -> float:
            def fn(v: Any, *c: Any) -> Any:
                for _ in range(k):
                    v = step(v, *c)
                return v

            specs = (P("d"), *(P() for _ in cs))
            mapped = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P("d")))
            return _fastest_time(mapped, [x, *cs], self.plan.repeats)

        k = min_chain or self.plan.chain
        one = run(1)
        many = run(1 + k)
        if many - one < self.plan.min_chain_s and k < 128:
            # too short to stand above the noise: lengthen the chain to reach a few ms
            per = max((many - one) / k, 1e-7)
            k = int(min(128, max(2 * k, self.plan.min_chain_s / per)))
            many = run(1 + k)
        # the slope through three chain lengths: one noisy run moves it less than a difference
        more = run(1 + 2 * k)
        slope = float(np.polyfit([1, 1 + k, 1 + 2 * k], [one, many, more], 1)[0])
        return max(slope, 1e-9)

    def program(self, buffers: int) -> float:
        """Seconds of a whole program of `buffers` tiny arguments, each doubled into a result:
        mostly the cost of starting a program on every device."""
        mesh = self.mesh
        xs = [
            jax.device_put(jnp.ones((self.n, 4), jnp.float32), NamedSharding(mesh, P("d")))
            for _ in range(buffers)
        ]
        specs = tuple(P("d") for _ in xs)

        def fn(*vs: Any) -> Any:
            return tuple(v * 2.0 for v in vs)

        mapped = jax.jit(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=specs))
        return _fastest_time(mapped, xs, self.plan.repeats)

    def group_axes(self, g: int) -> tuple[str, ...]:
        """The innermost mesh axes whose sizes multiply to `g`."""
        axes: list[str] = []
        size = 1
        for i in reversed(range(len(self.shape))):
            if size == g:
                break
            axes.insert(0, f"a{i}")
            size *= self.shape[i]
        if size != g:
            raise CalibrationError(f"group size {g} does not fit the device mesh {self.shape}")
        return tuple(axes)

    def collective(self, kind: str, g: int, local_bytes: int, chain: int) -> float:
        """Median seconds of `chain` collectives of `kind` over groups of `g` devices."""
        axes = self.group_axes(g)
        m = max(local_bytes // 4 // g, 1) * g  # f32 elements, divisible by the group
        step = _COLLECTIVE_STEP[kind]

        def fn(x: Any) -> Any:
            for _ in range(chain):
                x = step(x, axes, g)
            return x

        mesh = self.group_mesh
        names = tuple(mesh.axis_names)
        spec = P(names)
        x = jax.device_put(jnp.ones((self.n * m,), jnp.float32), NamedSharding(mesh, spec))
        mapped = jax.jit(
            jax.shard_map(fn, mesh=mesh, in_specs=(spec,), out_specs=spec, check_vma=False)
        )
        return _fastest_time(mapped, [x], self.plan.repeats)


def _factor(n: int) -> tuple[int, ...]:
    """`n` as a product of 2s (and one odd factor first), e.g. 8 -> (2, 2, 2)."""
    twos = []
    while n % 2 == 0 and n > 1:
        twos.append(2)
        n //= 2
    return ((n,) if n > 1 else ()) + tuple(twos) or (1,)


def _all_gather(x: Any, axes: tuple[str, ...], g: int) -> Any:
    # gather, then keep one tile: the next collective sees the same local size
    return jax.lax.all_gather(x, axes, tiled=True)[: x.shape[0]]


def _all_reduce(x: Any, axes: tuple[str, ...], g: int) -> Any:
    return jax.lax.psum(x, axes)


def _reduce_scatter(x: Any, axes: tuple[str, ...], g: int) -> Any:
    # scatter the local operand, then tile the result back to the operand's size
    return jnp.tile(jax.lax.psum_scatter(x, axes, tiled=True), g)


def _all_to_all(x: Any, axes: tuple[str, ...], g: int) -> Any:
    return jax.lax.all_to_all(x, axes, 0, 0, tiled=True)


def _collective_permute(x: Any, axes: tuple[str, ...], g: int) -> Any:
    perm = [(i, (i + 1) % g) for i in range(g)]
    return jax.lax.ppermute(x, axes, perm)


_COLLECTIVE_STEP: dict[str, Callable[[Any, tuple[str, ...], int], Any]] = {
    "all_gather": _all_gather,
    "all_reduce": _all_reduce,
    "reduce_scatter": _reduce_scatter,
    "all_to_all": _all_to_all,
    "collective_permute": _collective_permute,
}


def _volume(kind: str, local_bytes: int, g: int) -> float:
    """V as `partir.simulator.collectives` defines it, for a local operand of `local_bytes`."""
    if kind in ("all_gather", "all_to_all"):
        return float(local_bytes * g)
    return float(local_bytes)


def _steps(kind: str, g: int) -> float:
    if kind == "collective_permute":
        return 0.0  # one hop: its latency is all `base` (the simulator adds one `step`)
    return 2.0 * (g - 1) if kind == "all_reduce" else float(g - 1)


def fit_collective(
    kind: str, samples: Sequence[tuple[int, float, float]]
) -> tuple[float, float, float]:
    """Fit ``t = base + steps(kind, g) * step + bytes_sent(kind, V, g) / bandwidth``.

    Args:
      kind: the collective kind.
      samples: ``(group size g, V in bytes, seconds)`` per measurement.

    Returns ``(base_s, step_s, bandwidth_bytes_per_s)``, each positive: nonnegative least
    squares on relative error, with floors where the data cannot separate a term.
    """
    from scipy.optimize import nnls

    rows, target = [], []
    for g, volume, seconds in samples:
        sent = bytes_sent(kind, volume, g) if kind != "collective_permute" else volume
        weight = 1.0 / max(seconds, 1e-9)
        rows.append([weight, _steps(kind, g) * weight, sent * weight])
        target.append(1.0)
    coef, _ = nnls(np.array(rows), np.array(target))
    base, step, per_byte = (float(c) for c in coef)
    fastest = min(s for _, _, s in samples)
    base = max(base, 1e-3 * fastest)
    step = max(step, 1e-9)
    bandwidth = 1.0 / per_byte if per_byte > 0 else 1e12
    return base, step, bandwidth


def _host_memory() -> float:
    """Physical memory of the host in bytes (the emulated devices share it)."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return DEFAULT_CPU.memory_bytes * 8


MAX_BYTES_PER_S = 1e12
"""No CPU device streams memory faster than this: the floor of a measured elementwise time."""
MAX_FLOPS_PER_S = 1e13
"""No CPU device multiplies faster than this: the floor of a measured matmul time."""


def _efficiency_steps(points: Sequence[tuple[float, float]], peak: float) -> tuple:
    """``(size, rate)`` samples -> the simulator's ``(min size, fraction of peak)`` steps."""
    # a fraction is kept within [1%, 100%]: a noisy sample must not make an op free or stall it
    steps = sorted(
        ((size, min(max(rate / peak, 0.01), 1.0)) for size, rate in points), reverse=True
    )
    *head, (_, smallest) = steps
    return (*((float(s), round(e, 4)) for s, e in head), (0.0, round(smallest, 4)))


def calibrate(
    *,
    quick: bool = False,
    plan: Plan | None = None,
    progress: Callable[[str], None] = print,
    devices: Sequence[Any] | None = None,
) -> Hardware:
    """Measure the CPU devices and return the ``cpu`` profile they imply.

    Args:
      quick: measure fewer sizes with fewer runs (`QUICK`): seconds instead of a minute.
      plan: exactly what to measure (overrides `quick`).
      progress: called with one line per measurement (``print`` by default).
      devices: the devices to use (default: every CPU device; at least 2, ideally 8, as
        tests and benchmarks emulate with ``jax_num_cpu_devices``).

    Raises:
      CalibrationError: fewer than two CPU devices.
    """
    devices = list(devices if devices is not None else jax.devices("cpu"))
    if len(devices) < 2:
        raise CalibrationError(
            f"calibration needs several CPU devices, found {len(devices)}; set "
            "jax.config.update('jax_num_cpu_devices', 8) (or XLA_FLAGS="
            "--xla_force_host_platform_device_count=8) before JAX starts"
        )
    plan = plan or (QUICK if quick else Plan())
    machine = _Machine(devices, plan)
    say = progress
    say(
        f"calibrating {machine.n} CPU devices (all running at once; fastest of {plan.repeats} runs)"
    )

    # -- matmul throughput ------------------------------------------------------------------
    rates: dict[str, list[tuple[float, float]]] = {}
    for dtype in ("float32", "bfloat16"):
        rates[dtype] = []
        for n in plan.matmul_sizes:
            w = jnp.eye(n, dtype=dtype)  # keeps the chained values bounded
            flops = 2.0 * n**3
            t = max(
                machine.marginal(lambda x, w: x @ w, (n, n), dtype, [w]), flops / MAX_FLOPS_PER_S
            )
            rates[dtype].append((flops, flops / t))
            say(
                f"  matmul {dtype:<8} {n:>4}x{n:<4} {t * 1e6:10.2f} us {flops / t / 1e9:8.2f} GFLOP/s"
            )
    # the peak from the two largest sizes: small ones only lower it (a noisy fast small
    # measurement must not set the rate every large matmul is held to)
    peak_f32 = max(r for _, r in sorted(rates["float32"])[-2:])
    peak_bf16 = max(r for _, r in sorted(rates["bfloat16"])[-2:])

    # -- memory bandwidth: a fused elementwise op, kept apart by optimization barriers ------
    def axpy(x: Any, a: Any) -> Any:
        return jax.lax.optimization_barrier(x * a + 1.0)

    half = jnp.float32(0.5)
    bw_points = []
    for m in plan.bandwidth_elements:
        moved = 8.0 * m  # read and write 4 bytes per element
        # a slope lost in the noise is held to a physical bound, not taken as free
        t = max(machine.marginal(axpy, (m,), "float32", [half]), moved / MAX_BYTES_PER_S)
        bw_points.append((moved, moved / t))
        say(f"  elementwise {moved / 1024:9.0f} KiB {t * 1e6:10.2f} us {moved / t / 1e9:8.2f} GB/s")
    # streaming bandwidth from the arrays of 1 MiB and more (smaller ones sit in cache)
    streaming = [r for size, r in bw_points if size >= 1 << 20] or [bw_points[-1][1]]
    bandwidth = float(np.median(streaming))

    # -- transcendentals --------------------------------------------------------------------
    m = max(plan.bandwidth_elements)
    t_axpy = m * 8.0 / dict(bw_points)[8.0 * m]
    t_exp = machine.marginal(
        lambda x, a: jax.lax.optimization_barrier(jnp.exp(x * a)), (m,), "float32", [half]
    )
    per_exp = max(t_exp - t_axpy, 0.1 * t_exp) / m
    flops_per_transcendental = max(per_exp * peak_f32, 1.0)
    say(
        f"  exp         {m:10d} el {t_exp * 1e6:10.2f} us ~{flops_per_transcendental:.0f} flops each"
    )

    # -- kernel overhead: one more tiny dot -------------------------------------------------
    eye = jnp.eye(8, dtype=jnp.float32)
    overhead = machine.marginal(lambda x, w: x @ w, (8, 8), "float32", [eye], 4 * plan.chain)
    say(f"  kernel overhead {overhead * 1e6:8.2f} us (one more tiny dot in a program)")

    # -- starting a program: the dispatch, and each argument and result buffer ------------
    launch_one = machine.program(1)
    launch_many = machine.program(_BUFFERS)
    per_buffer = max(
        (launch_many - launch_one - (_BUFFERS - 1) * overhead) / (2 * (_BUFFERS - 1)), 0.0
    )
    launch = max(launch_one - 2 * per_buffer - overhead, 1e-7)
    say(
        f"  program launch {launch * 1e6:8.1f} us + {per_buffer * 1e6:.2f} us per argument "
        "or result buffer"
    )

    # -- collectives ------------------------------------------------------------------------
    per_kind = []
    groups = [g for g in plan.group_sizes if g <= machine.n and machine.n % g == 0]
    for kind in KINDS:
        samples = []
        for g in groups:
            for size in plan.collective_bytes:
                one = machine.collective(kind, g, size, 1)
                many = machine.collective(kind, g, size, plan.chain + 1)
                t = max((many - one) / plan.chain, 1e-8)
                if many - one < plan.min_chain_s:  # lengthen the chain above the noise
                    k = int(min(64, max(2 * plan.chain, plan.min_chain_s / t)))
                    t = max((machine.collective(kind, g, size, k + 1) - one) / k, 1e-8)
                local = max(size // 4 // g, 1) * g * 4
                samples.append((g, _volume(kind, local, g), t))
                say(f"  {kind:<18} group {g} {local / 1024:9.1f} KiB {t * 1e6:10.1f} us")
        base, step, bw = fit_collective(kind, samples)
        per_kind.append((kind, base, step, bw))
        say(f"  -> {kind}: {base * 1e6:.1f} us + {step * 1e6:.2f} us per step, {bw / 1e9:.2f} GB/s")
    slowest = max(per_kind, key=lambda k: k[1])
    link = Link(
        "loopback",
        min(k[3] for k in per_kind),
        slowest[2],
        1.0,
        slowest[1],
        switched=True,
        per_kind=tuple(per_kind),
    )
    same_rate = abs(peak_bf16 - peak_f32) / peak_f32 < 0.1
    return dataclasses.replace(
        DEFAULT_CPU,
        peak_f32_flops_per_s=peak_f32,
        peak_bf16_flops_per_s=peak_f32 if same_rate else peak_bf16,
        hbm_bandwidth_bytes_per_s=bandwidth,
        links=(link,),
        devices_per_node=machine.n,
        fast_domain_devices=machine.n,
        memory_bytes=_host_memory() / machine.n,
        compute_efficiency=_efficiency_steps(rates["float32"], peak_f32),
        memory_efficiency=_efficiency_steps(bw_points, bandwidth),
        flops_per_transcendental=flops_per_transcendental,
        kernel_overhead_s=overhead,
        launch_overhead_s=launch,
        buffer_overhead_s=per_buffer,
        compute_contention=COMPUTE_CONTENTION,
        dispatch_contention=DISPATCH_CONTENTION_PER_DEVICE * machine.n,
        provenance=CONTENTION_PROVENANCE,
    )
