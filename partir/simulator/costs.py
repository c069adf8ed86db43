"""Per-op costs: one registry for compute primitives (by name) and collectives (by op class).

Compute ops. A cost function takes a `Signature` (the op's local operand and result shapes,
dtypes and parameters) and returns an `OpCost`: FLOPs, transcendentals and bytes accessed,
counted the way XLA's `HloCostAnalysis` counts them (so that `Report.flops` can be checked
against `compiled.cost_analysis()`): a multiply-add is 2 flops (dot_general is
``2 * result elements * contracted size``, a convolution counts only the kernel taps that land
inside the unpadded input); an elementwise op is 1 flop per result element; exp, log, tanh,
sqrt, rsqrt, pow, ... are *transcendentals*, counted separately; a reduction is
``input - output`` elements; data movement (reshape, transpose, broadcast, gather, ...) is 0
flops. Bytes accessed are operands plus results, except where XLA reads less (slice, gather,
scatter) or nothing (reshape is a bitcast).

Collectives. A cost function takes a `CollectiveSig` (bytes and the mesh axes' `AxisLink`s)
and returns a `CommCost`: the time, the bytes each device sends, and reduction flops. The
formulas are `collective_time` (torus rules of the scaling book, alpha-beta rings elsewhere;
reference §6.1, §6.2, §6.4).

Register a new primitive with ``@cost("name")``; a primitive with no entry costs 0 flops and
its operand + result bytes, and is listed in `UNKNOWN_PRIMITIVES`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from partir import ir
from partir.simulator.hardware import Hardware


class OpCost(NamedTuple):
    """What one op does: floating-point work and memory traffic (per device)."""

    flops: float = 0.0
    """Floating-point operations other than transcendentals (an FMA is 2)."""
    transcendentals: float = 0.0
    """exp, log, tanh, sqrt, rsqrt, pow, ... evaluations."""
    bytes_accessed: float = 0.0
    """Bytes read and written in device memory (no fusion: each op reads and writes HBM)."""

    def plus(self, other: OpCost) -> OpCost:
        """The field-wise sum."""
        return OpCost(
            self.flops + other.flops,
            self.transcendentals + other.transcendentals,
            self.bytes_accessed + other.bytes_accessed,
        )

    def times(self, k: float) -> OpCost:
        """Every field times `k` (a loop's trip count)."""
        return OpCost(self.flops * k, self.transcendentals * k, self.bytes_accessed * k)


@dataclass(frozen=True)
class Signature:
    """What a compute cost function sees of one op.

    Attributes:
      primitive: the JAX primitive name.
      in_shapes, in_dtypes: local operand shapes and dtype names.
      out_shapes, out_dtypes: local result shapes and dtype names.
      params: the op's parameters (an `ir.ParamsAttr` or a plain mapping).
    """

    primitive: str
    in_shapes: tuple[tuple[int, ...], ...]
    in_dtypes: tuple[str, ...]
    out_shapes: tuple[tuple[int, ...], ...]
    out_dtypes: tuple[str, ...]
    params: Any = None

    def param(self, key: str, default: Any = None) -> Any:
        """One parameter's value, or `default` when the op has none by that name."""
        if self.params is None:
            return default
        if isinstance(self.params, ir.ParamsAttr):
            return self.params.find(key, default)
        return self.params.get(key, default)

    @property
    def in_bytes(self) -> int:
        """Bytes of all operands."""
        return sum(_bytes(s, d) for s, d in zip(self.in_shapes, self.in_dtypes, strict=True))

    @property
    def out_bytes(self) -> int:
        """Bytes of all results."""
        return sum(_bytes(s, d) for s, d in zip(self.out_shapes, self.out_dtypes, strict=True))

    @property
    def out_elements(self) -> int:
        """Elements of the first result."""
        return math.prod(self.out_shapes[0]) if self.out_shapes else 0

    @staticmethod
    def of(
        primitive: str,
        ins: Sequence[tuple[Sequence[int], str]],
        outs: Sequence[tuple[Sequence[int], str]],
        params: Mapping[str, Any] | ir.ParamsAttr | None = None,
    ) -> Signature:
        """A signature from ``(shape, dtype)`` pairs (for tests and what-if questions).

        Args:
          primitive: the primitive name.
          ins: ``(shape, dtype name)`` per operand.
          outs: ``(shape, dtype name)`` per result.
          params: the parameters, if the cost function reads any.
        """
        return Signature(
            primitive,
            tuple(tuple(s) for s, _ in ins),
            tuple(d for _, d in ins),
            tuple(tuple(s) for s, _ in outs),
            tuple(d for _, d in outs),
            params,
        )


def _bytes(shape: Sequence[int], dtype: str) -> int:
    return math.prod(shape) * ir.ITEMSIZE[dtype]


def signature_of(op: ir.PrimOp) -> Signature:
    """The `Signature` of one `partir.prim` op (local shapes in a device-local program)."""
    ins = [o.type for o in op.operands]
    outs = [r.type for r in op.results]
    return Signature(
        op.primitive_name,
        tuple(ir.shape_of(t) for t in ins),
        tuple(ir.dtype_of(t) for t in ins),
        tuple(ir.shape_of(t) for t in outs),
        tuple(ir.dtype_of(t) for t in outs),
        op.params,
    )


# ---------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------

COSTS: dict[Any, Callable[..., Any]] = {}
"""Primitive name -> ``fn(Signature) -> OpCost``; collective op class ->
``fn(CollectiveSig) -> CommCost``."""

UNKNOWN_PRIMITIVES: set[str] = set()
"""Primitives met with no cost entry (costed as 0 flops, operand + result bytes)."""

ELEMENTWISE = frozenset(
    "add add_any sub mul div rem max min neg abs sign floor ceil round nextafter and or not xor "
    "eq ne lt le gt ge clamp is_finite shift_left shift_right_logical shift_right_arithmetic "
    "population_count clz real imag conj complex square copysign exp log log1p expm1 tanh sqrt "
    "rsqrt cbrt pow sin cos tan atan2 erf erfc erf_inv acosh asinh atanh acos asin atan sinh "
    "cosh exp2 logistic convert_element_type select_n integer_pow log2 one_minus_square "
    "polynomial".split()
)
"""Elementwise primitives: XLA loop-fuses them (`partir.simulator.fusion`), and an accelerator's
multi-output fusion runs same-shape ones as one loop."""

HEAVY = frozenset({"dot_general", "conv_general_dilated", "ragged_dot"})
"""Primitives that run as matrix-unit kernels (the profile's kernel time floor applies)."""


def cost(*keys: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a cost function under primitive names and/or collective op classes.

    Args:
      *keys: primitive names (``"dot_general"``) for compute cost functions
        ``fn(Signature) -> OpCost``, or `ir.CollectiveOp` subclasses for collective cost
        functions ``fn(CollectiveSig) -> CommCost``.
    """

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        for key in keys:
            COSTS[key] = fn
        return fn

    return register


def compute_cost(sig: Signature) -> OpCost:
    """The `OpCost` of one compute op, from its registry entry (or the unknown default).

    Args:
      sig: the op's `Signature` (see `signature_of` for an op of a program).
    """
    fn = COSTS.get(sig.primitive)
    if fn is None:
        UNKNOWN_PRIMITIVES.add(sig.primitive)
        return OpCost(0.0, 0.0, sig.in_bytes + sig.out_bytes)
    result: OpCost = fn(sig)
    return result


def roofline_time(c: OpCost, hardware: Hardware, dtype: str, *, heavy: bool = False) -> float:
    """Seconds one op takes: ``max(flops / (peak * eff), bytes / (hbm * eff))``.

    Efficiencies come from the profile's size-dependent tables (Calculon's curve, reference
    §6.3); a transcendental costs `Hardware.flops_per_transcendental` flops; matrix kernels
    (`heavy`) take at least `Hardware.min_kernel_time_s` (AutoParallel's floor, §6.6).

    Args:
      c: the op's cost.
      hardware: the device profile.
      dtype: the dtype whose peak applies (a dot's operand dtype).
      heavy: whether the op is a matrix-unit kernel.
    """
    work = c.flops + c.transcendentals * hardware.flops_per_transcendental
    t_math = 0.0
    if work > 0:
        peak = hardware.peak_flops_per_s(dtype) * hardware.compute_efficiency_at(work)
        t_math = work / peak
    t_mem = 0.0
    if c.bytes_accessed > 0:
        bw = hardware.hbm_bandwidth_bytes_per_s * hardware.memory_efficiency_at(c.bytes_accessed)
        t_mem = c.bytes_accessed / bw
    t = max(t_math, t_mem)
    if heavy and t > 0:
        t = max(t, hardware.min_kernel_time_s)
    return t


# ---------------------------------------------------------------------------------------
# Compute cost functions
# ---------------------------------------------------------------------------------------


def _default_bytes(sig: Signature) -> float:
    return float(sig.in_bytes + sig.out_bytes)


def _elementwise(flops_per_element: float, transcendentals_per_element: float = 0.0) -> Callable:
    def fn(sig: Signature) -> OpCost:
        n = sig.out_elements
        return OpCost(n * flops_per_element, n * transcendentals_per_element, _default_bytes(sig))

    return fn


# One flop per result element (HloCostAnalysis::HandleElementwiseOp, compare, select, clamp,
# convert). `square` lowers to a multiply.
for _name in (
    "add", "add_any", "sub", "mul", "div", "rem", "max", "min", "neg", "abs", "sign", "floor",
    "ceil", "round", "nextafter", "and", "or", "not", "xor", "eq", "ne", "lt", "le", "gt", "ge",
    "clamp", "is_finite", "shift_left", "shift_right_logical", "shift_right_arithmetic",
    "population_count", "clz", "real", "imag", "conj", "complex", "square", "copysign",
):  # fmt: skip
    COSTS[_name] = _elementwise(1.0)

# Transcendentals (the opcodes HloCostAnalysis puts in its transcendental bucket); inverse
# trigonometric and hyperbolic functions are counted as one as well [M].
for _name in (
    "exp", "log", "log1p", "expm1", "tanh", "sqrt", "rsqrt", "cbrt", "pow", "sin", "cos", "tan",
    "atan2", "erf", "erfc", "erf_inv", "acosh", "asinh", "atanh", "acos", "asin", "atan", "sinh",
    "cosh", "lgamma", "digamma", "igamma", "igammac", "bessel_i0e", "bessel_i1e",
):  # fmt: skip
    COSTS[_name] = _elementwise(0.0, 1.0)

# exp2(x) lowers to exp(x * ln 2); XLA's CPU pipeline expands logistic to 1 / (1 + exp(-x)).
COSTS["exp2"] = _elementwise(1.0, 1.0)
COSTS["logistic"] = _elementwise(3.0, 1.0)
# jax >= 0.12: log2(x) lowers to log(x) times a constant; one_minus_square(x) to
# (1 + x) * (1 - x) [M].
COSTS["log2"] = _elementwise(1.0, 1.0)
COSTS["one_minus_square"] = _elementwise(3.0)


@cost("polynomial")
def _polynomial(sig: Signature) -> OpCost:
    # Horner's rule: a multiply and an add per coefficient after the first [M].
    terms = max(len(sig.in_dtypes) - 2, 0)
    return OpCost(2.0 * terms * sig.out_elements, 0.0, _default_bytes(sig))


@cost("convert_element_type")
def _convert(sig: Signature) -> OpCost:
    if sig.in_dtypes[0] == sig.out_dtypes[0]:
        return OpCost()  # XLA drops a convert to the same type
    return OpCost(float(sig.out_elements), 0.0, _default_bytes(sig))


@cost("select_n")
def _select_n(sig: Signature) -> OpCost:
    # select_n with k cases lowers to k - 1 selects
    cases = max(len(sig.in_shapes) - 1, 1)
    return OpCost(float(sig.out_elements * (cases - 1)), 0.0, _default_bytes(sig))


@cost("integer_pow")
def _integer_pow(sig: Signature) -> OpCost:
    # JAX lowers x**y by repeated squaring: bit_length(y) - 1 squarings, popcount(y) - 1
    # multiplies into the accumulator, one divide for y < 0.
    y = int(sig.param("y", 2))
    k = abs(y)
    muls = max(k.bit_length() - 1, 0) + max(bin(k).count("1") - 1, 0) + (1 if y < 0 else 0)
    return OpCost(float(sig.out_elements * muls), 0.0, _default_bytes(sig))


@cost(
    "reshape", "squeeze", "expand_dims", "bitcast_convert_type", "stop_gradient",
    "optimization_barrier", "device_put", "sharding_constraint",
)  # fmt: skip
def _free(sig: Signature) -> OpCost:
    # a bitcast or a no-op: no flops, no memory traffic
    return OpCost()


@cost(
    "broadcast_in_dim", "transpose", "rev", "concatenate", "pad", "iota", "copy", "copy_p",
    "split", "top_k_indices",
)  # fmt: skip
def _movement(sig: Signature) -> OpCost:
    return OpCost(0.0, 0.0, _default_bytes(sig))


@cost("slice", "dynamic_slice", "gather")
def _read_part(sig: Signature) -> OpCost:
    # XLA reads only what it copies: 2 x result plus the index operands (HandleGather/Slice)
    index_bytes = sum(
        _bytes(s, d) for s, d in zip(sig.in_shapes[1:], sig.in_dtypes[1:], strict=True)
    )
    return OpCost(0.0, 0.0, 2.0 * sig.out_bytes + index_bytes)


@cost("dynamic_update_slice")
def _update_part(sig: Signature) -> OpCost:
    update = _bytes(sig.in_shapes[1], sig.in_dtypes[1])
    index_bytes = sum(
        _bytes(s, d) for s, d in zip(sig.in_shapes[2:], sig.in_dtypes[2:], strict=True)
    )
    return OpCost(0.0, 0.0, 2.0 * update + index_bytes)


def _scatter(flops_per_update: float) -> Callable:
    def fn(sig: Signature) -> OpCost:
        # operand, indices, updates: 3 x updates + indices (HandleScatter)
        updates = _bytes(sig.in_shapes[2], sig.in_dtypes[2])
        index_bytes = _bytes(sig.in_shapes[1], sig.in_dtypes[1])
        n = math.prod(sig.in_shapes[2])
        return OpCost(n * flops_per_update, 0.0, 3.0 * updates + index_bytes)

    return fn


COSTS["scatter"] = _scatter(0.0)
for _name in ("scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min",
              "scatter_min", "scatter-max", "scatter_max"):  # fmt: skip
    COSTS[_name] = _scatter(1.0)


def _reduce(flops_per_step: float) -> Callable:
    def fn(sig: Signature) -> OpCost:
        steps = math.prod(sig.in_shapes[0]) - sig.out_elements
        return OpCost(steps * flops_per_step, 0.0, _default_bytes(sig))

    return fn


for _name in ("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or",
              "reduce_xor", "reduce_precision"):  # fmt: skip
    COSTS[_name] = _reduce(1.0)
# argmax/argmin reduce (value, index) pairs; JAX's comparator is 9 HLO ops per step.
COSTS["argmax"] = COSTS["argmin"] = _reduce(9.0)


@cost("dot_general")
def _dot_general(sig: Signature) -> OpCost:
    (contract_lhs, _), _ = sig.param("dimension_numbers")
    k = math.prod(sig.in_shapes[0][d] for d in contract_lhs)
    return OpCost(2.0 * sig.out_elements * k, 0.0, _default_bytes(sig))


def _valid_positions(
    in_size: int, kernel: int, out_size: int, stride: int, pad_lo: int, lhs_dil: int, rhs_dil: int
) -> int:
    """Pairs (output position, kernel tap) reading a real (unpadded, undilated) input element."""
    count = 0
    for k in range(kernel):
        if stride == 1 and lhs_dil == 1:  # XLA's closed form for the common case
            base = pad_lo - k * rhs_dil
            count += max(min(in_size + base, out_size) - max(base, 0), 0)
            continue
        for o in range(out_size):
            idx = o * stride - pad_lo + k * rhs_dil
            if idx % lhs_dil:
                continue
            if 0 <= idx // lhs_dil < in_size:
                count += 1
    return count


@cost("conv_general_dilated")
def _conv(sig: Signature) -> OpCost:
    # HloCostAnalysis::GetConvolutionFlops: 2 x (in_features / groups) x out_features x
    # (batch / batch_groups) x prod over spatial dims of the valid (output, tap) pairs.
    dn = sig.param("dimension_numbers")
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    lhs, rhs, out = sig.in_shapes[0], sig.in_shapes[1], sig.out_shapes[0]
    spatial = len(lhs_spec) - 2
    strides = sig.param("window_strides") or (1,) * spatial
    padding = sig.param("padding") or ((0, 0),) * spatial
    lhs_dil = sig.param("lhs_dilation") or (1,) * spatial
    rhs_dil = sig.param("rhs_dilation") or (1,) * spatial
    positions = 1
    for i in range(spatial):
        positions *= _valid_positions(
            lhs[lhs_spec[2 + i]], rhs[rhs_spec[2 + i]], out[out_spec[2 + i]],
            strides[i], padding[i][0], lhs_dil[i], rhs_dil[i],
        )  # fmt: skip
    groups = int(sig.param("feature_group_count", 1) or 1)
    batch_groups = int(sig.param("batch_group_count", 1) or 1)
    fma = (lhs[lhs_spec[1]] // groups) * out[out_spec[1]] * (lhs[lhs_spec[0]] // batch_groups)
    return OpCost(2.0 * fma * positions, 0.0, _default_bytes(sig))


def _reduce_window(sig: Signature) -> OpCost:
    # HandleReduceWindow: (window elements - 1) reductions per output element
    window = math.prod(sig.param("window_dimensions"))
    return OpCost(float((window - 1) * sig.out_elements), 0.0, _default_bytes(sig))


for _name in ("reduce_window_sum", "reduce_window_max", "reduce_window_min", "reduce_window"):
    COSTS[_name] = _reduce_window


def _windowed_scan_flops(outputs: int, window: int) -> int:
    """Flops XLA spends on a 1-D reduce-window of `window` taps giving `outputs` values.

    XLA's ReduceWindowRewriter (CPU and GPU) splits a window longer than 16 into blocks of 16,
    a reduce-window over the block sums, and an add (fitted exactly against cost_analysis()).
    """
    if window <= 16:
        return (window - 1) * outputs
    blocks = -(-window // 16)
    padded = 16 * blocks
    return 15 * padded + _windowed_scan_flops(blocks + 1, blocks) + padded


@cost("cumsum", "cumprod", "cummax", "cummin")
def _cumulative(sig: Signature) -> OpCost:
    # JAX lowers a cumulative reduction on CPU/GPU to a reduce-window of the axis' length
    shape = sig.in_shapes[0]
    n = shape[int(sig.param("axis", 0))]
    rows = math.prod(shape) // n if n else 0
    return OpCost(float(rows * _windowed_scan_flops(n, n)), 0.0, _default_bytes(sig))


@cost("cumlogsumexp")
def _cumlogsumexp(sig: Signature) -> OpCost:
    shape = sig.in_shapes[0]
    n = shape[int(sig.param("axis", 0))]
    rows = math.prod(shape) // n if n else 0
    steps = rows * _windowed_scan_flops(n, n)
    return OpCost(2.0 * steps, 2.0 * steps, _default_bytes(sig))


@cost("sort")
def _sort(sig: Signature) -> OpCost:
    # HandleSort: n * ceil(log2 n) comparisons, n the elements of operand 0
    n = math.prod(sig.in_shapes[0])
    return OpCost(float(n * max(math.ceil(math.log2(n)), 0)) if n > 1 else 0.0, 0.0,
                  _default_bytes(sig))  # fmt: skip


@cost("top_k")
def _top_k(sig: Signature) -> OpCost:
    # XLA's HandleTopK counts 0 (and a CPU custom call -1); we count a partial sort's
    # n * ceil(log2 k) comparisons [M].
    n = math.prod(sig.in_shapes[0])
    k = int(sig.param("k", 1))
    return OpCost(float(n * max(math.ceil(math.log2(max(k, 2))), 1)), 0.0, _default_bytes(sig))


@cost("select_and_scatter_add")
def _select_and_scatter_add(sig: Signature) -> OpCost:
    window = math.prod(sig.param("window_dimensions"))
    source = math.prod(sig.in_shapes[0])
    return OpCost(float(source * window), 0.0, _default_bytes(sig))


@cost("random_bits", "rng_bit_generator", "rng_uniform")
def _rng(sig: Signature) -> OpCost:
    # HandleRng: one transcendental per generated element
    return OpCost(0.0, float(sum(math.prod(s) for s in sig.out_shapes)), _default_bytes(sig))


# Key plumbing moves data only (the frontend expands seed, split and fold_in into
# threefry2x32 and shape ops, so these appear only in hand-written IR).
for _name in ("random_seed", "random_fold_in", "random_split"):
    COSTS[_name] = _movement


@cost("random_wrap", "random_unwrap")
def _key_cast(sig: Signature) -> OpCost:
    # a key array and its uint32 data are one buffer: JAX lowers both casts to nothing
    return OpCost()


THREEFRY_OPS_PER_ELEMENT = 117.0
"""Integer ops per result element of `threefry2x32`: 2 key additions, 20 rounds of add,
rotate (shift, shift, or) and xor, and 5 key injections of 3 adds (JAX's unrolled lowering)."""


@cost("threefry2x32")
def _threefry2x32(sig: Signature) -> OpCost:
    # HloCostAnalysis counts each integer elementwise op as one flop per element [M]
    return OpCost(THREEFRY_OPS_PER_ELEMENT * sig.out_elements, 0.0, _default_bytes(sig))


@cost("fft")
def _fft(sig: Signature) -> OpCost:
    # HloCostAnalysis::HandleFft: 2 flops per FMA x 4 FMAs per complex multiply x the
    # product of log2 of each transformed length x the operand's elements (fitted exactly
    # against cost_analysis() for FFT, RFFT and IRFFT) [M].
    logs = 1
    for n in sig.param("fft_lengths", ()):
        logs *= max(int(n).bit_length() - 1, 0)
    return OpCost(8.0 * logs * math.prod(sig.in_shapes[0]), 0.0, _default_bytes(sig))
