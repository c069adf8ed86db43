"""Small programs that give wrong numbers, a wrong plan or a degraded rule when one rule,
propagation step or lowering step is wrong: the focused, deterministic cases behind the
mutation catalogue (tests/mutation/catalogue.py) for the mutants that only the random
oracle used to find.

Each case is checked in both modes against `jax.jit` of the unpartitioned function; spmd
mode runs partir's own device-local program, so a wrong tile mapping, a missing collective
or a pending reduction carried through the wrong op shows up as a wrong number there. A rule
that fails to build degrades to a replicated barrier with a warning: the numbers stay right,
so every case also fails on such a warning."""

from __future__ import annotations

import re
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import partir
from partir.simulator import AxisLink, get_hardware
from partir.simulator.collectives import _NCCL_HOP, nccl_time
from partir.simulator.costs import OpCost, roofline_time

MODES = ("annotate", "spmd")
MP = partir.ManualPartition


def _data(seed, *shapes):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.0, 1.0, s).astype(np.float32) for s in shapes]


def _check(fn, schedule, mesh, mode, *args):
    """Partition `fn`, fail on a rule that did not build, compare with the unpartitioned
    result; returns the plan."""
    part = partir.partition(schedule, mesh=mesh, mode=mode)(fn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = part.plan(*args)
    degraded = [str(w.message) for w in caught if "sharding rule" in str(w.message)]
    assert not degraded, degraded
    got, want = part(*args), jax.jit(fn)(*args)
    jax.tree.map(lambda u, v: np.testing.assert_allclose(u, v, rtol=2e-5, atol=2e-5), got, want)
    return plan


@pytest.mark.parametrize("mode", MODES)
def test_a_product_of_two_pending_sums_is_reduced_first(mesh, mode):
    """``sum_d(x) * sum_d(y)`` with d split: each factor is a pending sum, and the sum of
    per-device products is not the product of the sums (mul is linear in one operand only)."""
    x, y = _data(0, (8, 16), (8, 16))

    def fn(x, y):
        return jnp.sum(x * 0.125, axis=0) * jnp.sum(y * 0.125, axis=0)

    _check(fn, [MP({"x": 0, "y": 0}, axis="batch")], mesh, mode, x, y)


@pytest.mark.parametrize("mode", MODES)
def test_a_product_of_pending_sums_made_at_different_depths(mesh, mode):
    """The same product, both factors from one x, the second one op further from x: the
    first becomes a pending sum and flows through the mul before the second arrives, so
    lowering must reduce the second before the product (it carries one pending sum)."""
    (x,) = _data(0, (8, 16))

    def fn(x):
        return jnp.sum(x * 0.125, axis=0) * jnp.sum(jnp.sin(x) * 0.125, axis=0)

    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_reversed_sharded_dim_moves_tiles(mesh, mode):
    """``rev`` along a split dim: device k's tile comes from device n-1-k, it is not a
    local reversal."""
    (x,) = _data(1, (8, 6))
    fn = lambda x: jnp.tanh(lax.rev(x, (0,)) * 2.0)  # noqa: E731
    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dim", [0, 1, 2])
def test_a_cyclic_transpose_of_a_sharded_dim(mesh, mode, dim):
    """A permutation that is not its own inverse: reading it backwards puts the split dim
    in the wrong place (the sizes differ, so the tile has the wrong shape too)."""
    (x,) = _data(2, (4, 8, 12))
    fn = lambda x: jnp.sin(lax.transpose(x, (2, 0, 1)))  # noqa: E731
    _check(fn, [MP({"x": dim}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_slice_along_one_dim_keeps_the_sharded_dim_whole(mesh, mode):
    """A slice along dim 1 of a value split on dim 0: the local limit of dim 0 is the local
    size, not one less."""
    (x,) = _data(3, (8, 12))
    fn = lambda x: lax.slice(x, (0, 2), (8, 9)) * 0.5  # noqa: E731
    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_contraction_over_a_split_dim_is_all_reduced_before_tanh(mesh, mode):
    """``tanh(x @ w)`` with the contracted dim split: the pending sum must be reduced before
    the nonlinear op (and only once)."""
    x, w = _data(4, (8, 16), (16, 4))
    fn = lambda x, w: jnp.tanh(x @ w * 0.25)  # noqa: E731
    plan = _check(fn, [MP({"x": 1, "w": 0}, axis="model")], mesh, mode, x, w)
    if mode == "spmd":
        assert [c.kind for c in plan.collectives() if c.communicates] == ["all_reduce"]


@pytest.mark.parametrize("mode", MODES)
def test_an_iota_along_a_sharded_dim_counts_globally(mesh, mode):
    """``x + iota`` along a split dim: each device's iota must start at its tile's offset."""
    (x,) = _data(5, (8, 6))

    def fn(x):
        return x + lax.broadcasted_iota(jnp.float32, x.shape, 0) * 0.1

    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_max_over_a_split_dim_is_pending_as_a_max(mesh, mode):
    """``tanh(max_d(x))`` with d split: the pending value is a max, reduced as a max."""
    (x,) = _data(6, (8, 16))
    fn = lambda x: jnp.tanh(jnp.max(x, axis=1) * 3.0)  # noqa: E731
    _check(fn, [MP({"x": 1}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_broadcast_keeps_its_operand_dims(mesh, mode):
    """``broadcast_in_dim`` into a new leading dim: the operand's dims map to result dims
    1 and 2 (a rule that maps them wrongly fails to build and degrades to a barrier)."""
    (x,) = _data(7, (8, 6))

    def fn(x):
        return lax.broadcast_in_dim(x, (3, 8, 6), (1, 2)) * jnp.arange(3.0)[:, None, None]

    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_value_meeting_its_own_transpose_records_a_conflict(mesh, mode):
    """``x + x.T`` with x split on dim 0: the add sees one axis on two different dims, a
    conflict the plan must record (and resolve by moving data)."""
    (x,) = _data(8, (8, 8))
    plan = _check(lambda x: x + x.T, [MP({"x": 0}, axis="batch")], mesh, mode, x)
    assert [c.axis for c in plan.conflicts] == ["batch"]


def test_a_sum_over_a_split_dim_is_a_pending_sum_not_a_gather(mesh):
    """``sum_d(x)`` with d split reduces the local tiles and all-reduces the small result;
    replicating the reduced dim would all-gather x instead."""
    (x,) = _data(9, (8, 16))
    fn = lambda x: jnp.tanh(jnp.sum(x, axis=1))  # noqa: E731
    plan = _check(fn, [MP({"x": 1}, axis="batch")], mesh, "spmd", x)
    assert [c.kind for c in plan.collectives() if c.communicates] == ["all_reduce"]


@pytest.mark.parametrize(
    "op",
    [lambda x: jnp.sort(x, axis=0), lambda x: lax.rev(x, (0,))],
    ids=["sort", "rev"],
)
def test_a_replicate_factor_stops_propagation(mesh, op):
    """Sorting or reversing a split dim needs the dim whole: the op's input is gathered and
    its result is not sharded on that axis (the tactic's axis does not cross a replicate
    factor, where it would only be sliced off again after the gather)."""
    (x,) = _data(10, (8, 6))
    plan = _check(lambda x: jnp.sin(op(x)), [MP({"x": 0}, axis="batch")], mesh, "spmd", x)
    assert plan.out_shardings.spec == jax.sharding.PartitionSpec()
    assert [c.kind for c in plan.collectives() if c.communicates] == ["all_gather"]


@pytest.mark.parametrize("mode", MODES)
def test_a_dynamic_slice_keeps_the_sharded_dim_whole(mesh, mode):
    """A dynamic slice along dim 1 of a value split on dim 0: the local slice size of dim 0
    is the local size, not the global one."""
    (x,) = _data(11, (8, 12))

    def fn(x):
        start = jnp.argmax(x[0]) % 8
        return lax.dynamic_slice(x, (0, start), (8, 4)) * 0.5

    _check(fn, [MP({"x": 0}, axis="batch")], mesh, mode, x)


@pytest.mark.parametrize("mode", MODES)
def test_a_pending_max_used_tiled_is_not_a_sum_reduce_scatter(mesh, mode):
    """``max_1(x) * y`` with x split on dim 1 and y on dim 0, one axis: the pending max is
    all-reduced as a max and then sliced like y; fusing the two into a reduce_scatter is
    right for a sum only."""
    x, y = _data(12, (8, 16), (8,))
    fn = lambda x, y: jnp.max(x, axis=1) * y  # noqa: E731
    _check(fn, [MP({"x": 1, "y": 0}, axis="batch")], mesh, mode, x, y)


@pytest.mark.parametrize("mode", MODES)
def test_a_sum_pending_on_two_axes_used_tiled_on_one(mesh, mode):
    """``(x @ w) * y``, the contraction split on both axes and y on dim 0 over one of them:
    the reduce_scatter over that axis must be followed by an all_reduce over the other."""
    x, w, y = _data(13, (8, 16), (16, 8), (8, 8))
    fn = lambda x, w, y: (x @ w) * y  # noqa: E731
    schedule = [MP({"x": 1, "w": 0, "y": 0}, axis="batch"), MP({"x": 1, "w": 0}, axis="model")]
    plan = _check(fn, schedule, mesh, mode, x, w, y)
    if mode == "spmd":
        kinds = [c.kind for c in plan.collectives() if c.communicates]
        assert kinds == ["reduce_scatter", "all_reduce"], kinds


_SLICE_OF_SUM = """
builtin.module attributes {partir.mesh = #partir.mesh<["x"=4, "y"=2]>} {
  func.func @slice_of_sum(%a: tensor<8x4xf32>) -> tensor<2x4xf32> {
    %r = spmd.all_reduce %a kind sum axes ["x", "y"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["x"] : tensor<8x4xf32> -> tensor<2x4xf32>
    func.return %s : tensor<2x4xf32>
  }
}
"""


def test_a_slice_of_a_sum_over_more_axes_still_reduces_the_rest(tmp_path):
    """``all_slice_x(all_reduce_xy(a))`` canonicalizes to a reduce_scatter over x *of the
    all_reduce over y*: scattering `a` itself would drop the sum over y (a check that only
    looks for both ops would not see it, the all_reduce being left unused)."""
    src = tmp_path / "slice_of_sum.mlir"
    src.write_text(_SLICE_OF_SUM)
    cli = "import sys; from partir.cli import main; sys.exit(main())"
    out = subprocess.run(
        [sys.executable, "-c", cli, "opt", str(src), "-p", "canonicalize"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    reduced = re.search(r"(%\S+) = spmd\.all_reduce %a kind sum axes \[\"y\"\]", out)
    assert reduced, out
    assert re.search(rf"spmd\.reduce_scatter {re.escape(reduced.group(1))} dim 0", out), out


def test_a_ring_all_reduce_makes_twice_the_latency_hops_of_an_all_gather():
    """A small message is latency-bound: NCCL's ring all_reduce is a reduce_scatter then an
    all_gather, 2(n-1) hops to the all_gather's n-1, so on 8 NVLink GPUs the all_reduce
    costs at least 7 more hops of the fastest protocol (the simulator's collective model)."""
    group = [AxisLink("model", 8, get_hardware("h100").link("nvlink"))]
    extra = nccl_time("all_reduce", 8.0, group) - nccl_time("all_gather", 8.0, group)
    assert extra >= 7 * min(_NCCL_HOP[("ring", "nvlink")]) * 0.99, extra


def test_transcendentals_cost_time_in_the_roofline():
    """exp, tanh, ... take compute time: n transcendentals cost what n *
    `flops_per_transcendental` plain flops do, and more than nothing."""
    hw = get_hardware("h100")
    n = 1e12
    t = roofline_time(OpCost(transcendentals=n), hw, "float32")
    assert t > 0
    assert t == pytest.approx(
        roofline_time(OpCost(flops=n * hw.flops_per_transcendental), hw, "float32")
    )
