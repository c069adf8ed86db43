"""Collective costs against the published formulas (reference §6.1, §6.2, §6.4)."""

import math

import pytest

from partir import ir
from partir.simulator import (
    COSTS,
    AxisLink,
    CollectiveSig,
    Link,
    alpha_beta_time,
    bytes_sent,
    collective_time,
    get_hardware,
    torus_time,
)

SIZES = (1024.0, 2.0**20, 2.0**30)
GROUPS = (2, 4, 8, 16)


def switch(bandwidth=100e9, efficiency=1.0, base=0.0, step=0.0, kind="nvlink"):
    return Link(kind, bandwidth, step, efficiency, base, switched=True)


def ring(size, link, wrap=True, axis="x"):
    return AxisLink(axis, size, link, wraparound=wrap)


@pytest.mark.parametrize("n", GROUPS)
@pytest.mark.parametrize("size", SIZES)
def test_nccl_ring_bus_bandwidth(n, size):
    # nccl-tests PERFORMANCE.md: t = (S/B) * 2(n-1)/n for all_reduce, (S/B)(n-1)/n for
    # all_gather and reduce_scatter, S the total array size and B the bus bandwidth.
    b = 80e9
    group = [ring(n, switch(bandwidth=100e9, efficiency=0.8))]
    assert alpha_beta_time("all_reduce", size, group) == pytest.approx(size / b * 2 * (n - 1) / n)
    assert alpha_beta_time("all_gather", size, group) == pytest.approx(size / b * (n - 1) / n)
    assert alpha_beta_time("reduce_scatter", size, group) == pytest.approx(size / b * (n - 1) / n)
    # all_to_all through a switch: each device sends (n-1) of its n tiles, (n-1)/n^2 of V
    assert alpha_beta_time("all_to_all", size, group) == pytest.approx(size / b * (n - 1) / n**2)


@pytest.mark.parametrize("n", GROUPS)
def test_nccl_latency_terms(n):
    # NCCL ring, Simple protocol: base + steps * per-step latency, steps 2(n-1) for all_reduce
    # and n-1 for all_gather (reference §6.5).
    link = switch(base=8.4e-6, step=3.4e-6)
    group = [ring(n, link)]
    assert alpha_beta_time("all_reduce", 0.0, group) == pytest.approx(8.4e-6 + 2 * (n - 1) * 3.4e-6)
    assert alpha_beta_time("all_gather", 0.0, group) == pytest.approx(8.4e-6 + (n - 1) * 3.4e-6)


def test_h100_nvlink_8way_all_gather():
    # AutoParallel's docs: ~320 GB/s per GPU for an 8-way all-gather on an H100 node.
    h100 = get_hardware("h100")
    group = [ring(8, h100.link("nvlink"))]
    v = 2.0**30
    t = collective_time("all_gather", v, group)
    latency = 8.4e-6 + 7 * 3.4e-6
    assert t - latency == pytest.approx(v * 7 / 8 / 320e9)


@pytest.mark.parametrize("n", (4, 8, 16))
@pytest.mark.parametrize("size", SIZES)
def test_torus_rules_scaling_book(n, size):
    # T_AG = max(T_min |X| / 2, V / W_bidi) on a full ring; RS = AG; AR = 2 AG; AA = AG / 4.
    ici = Link("ici", 9e10, 1e-6)
    t_ag = max(1e-6 * n / 2, size / (2 * 9e10))
    group = [ring(n, ici)]
    assert torus_time("all_gather", size, group) == pytest.approx(t_ag)
    assert torus_time("reduce_scatter", size, group) == pytest.approx(t_ag)
    assert torus_time("all_reduce", size, group) == pytest.approx(2 * t_ag)
    assert torus_time("all_to_all", size, group) == pytest.approx(t_ag / 4)
    # no wraparound "typically doubles" the time
    open_ring = [ring(n, ici, wrap=False)]
    assert torus_time("all_gather", size, open_ring) == pytest.approx(2 * t_ag)
    # collective_time picks the torus rule for ICI axes
    assert collective_time("all_reduce", size, group) == pytest.approx(2 * t_ag)


@pytest.mark.parametrize("size", SIZES)
def test_torus_multi_axis(size):
    # T = max(T_min * sum|X_i| / 2, V / (W_bidi * n_axes))
    ici = Link("ici", 4.5e10, 1e-6)
    group = [ring(16, ici, axis="x"), ring(16, ici, axis="y")]
    expected = max(1e-6 * 32 / 2, size / (2 * 4.5e10 * 2))
    assert torus_time("all_gather", size, group) == pytest.approx(expected)


def test_v5e_latency_bound_below_45kb_per_hop():
    # reference §6.2: on v5e, buffers < 4.5e10 * 1e-6 = 45 kB are latency-bound
    ici = get_hardware("tpu-v5e").link("ici")
    group = [ring(16, ici)]
    latency = 1e-6 * 16 / 2
    assert torus_time("all_gather", 40e3 * 16, group) == pytest.approx(latency)
    assert torus_time("all_gather", 50e3 * 16, group) > latency


def test_mixed_group_uses_slowest_link():
    # Alpa across mesh dims: alpha = max, beta = max, n = n1 * n2 (reference §6.1)
    v5p = get_hardware("tpu-v5p")
    ici, dcn = v5p.link("ici"), v5p.link("dcn")
    group = [ring(4, dcn, axis="slice"), ring(4, ici, axis="x")]
    v = 2.0**28
    n = 16
    steps = 2 * (n - 1)
    expected = steps * dcn.latency_s + 2 * (n - 1) / n * v / dcn.effective_bandwidth_bytes_per_s
    assert collective_time("all_reduce", v, group) == pytest.approx(expected)


def test_free_and_degenerate():
    link = switch()
    assert collective_time("all_slice", 1e9, [ring(8, link)]) == 0.0
    assert collective_time("all_reduce", 1e9, [ring(1, link)]) == 0.0
    assert collective_time("all_reduce", 1e9, []) == 0.0


def test_bytes_sent():
    v = 1200.0
    assert bytes_sent("all_gather", v, 4) == 900
    assert bytes_sent("reduce_scatter", v, 4) == 900
    assert bytes_sent("all_reduce", v, 4) == 1800
    assert bytes_sent("all_to_all", v, 4) == 225
    assert bytes_sent("collective_permute", v, 4) == v
    assert bytes_sent("all_slice", v, 4) == 0
    assert bytes_sent("all_reduce", v, 1) == 0


def test_registry_volumes():
    link = switch(bandwidth=1e9)
    group = (ring(4, link),)
    local = 1000
    ag = COSTS[ir.AllGatherOp](CollectiveSig("all_gather", local, 4 * local, 4 * local // 4, group))
    assert ag.volume_bytes == 4 * local and ag.bytes_sent == 3 * local
    rs = COSTS[ir.ReduceScatterOp](CollectiveSig("reduce_scatter", 4 * local, local, 250, group))
    assert rs.volume_bytes == 4 * local and rs.time_s == pytest.approx(ag.time_s)
    ar = COSTS[ir.AllReduceOp](CollectiveSig("all_reduce", local, local, 250, group))
    assert ar.flops == 250  # XLA's HloCostAnalysis: one flop per element
    aa = COSTS[ir.AllToAllOp](CollectiveSig("all_to_all", local, local, 250, group))
    assert aa.bytes_sent == pytest.approx(3 / 4 * local)
    assert COSTS[ir.AllSliceOp](CollectiveSig("all_slice", local, 250, 62, group)).time_s == 0
    assert math.isclose(
        COSTS[ir.CollectivePermuteOp](
            CollectiveSig("collective_permute", local, local, 250, group)
        ).time_s,
        local / 1e9,
    )


def test_measured_terms_per_kind_replace_the_links():
    # a calibrated CPU link: each kind its own (base, per-step latency, bandwidth)
    link = Link(
        "loopback", 1e9, 1e-6, 1.0, 5e-6, switched=True,
        per_kind=(("all_reduce", 30e-6, 7e-6, 4e9), ("collective_permute", 100e-6, 0.0, 3e9)),
    )  # fmt: skip
    group = [ring(8, link)]
    v = 2.0**20
    assert alpha_beta_time("all_reduce", v, group) == pytest.approx(
        30e-6 + 14 * 7e-6 + 2 * 7 / 8 * v / 4e9
    )
    assert alpha_beta_time("collective_permute", v, group) == pytest.approx(100e-6 + v / 3e9)
    # kinds without measured terms keep the link's
    assert alpha_beta_time("all_gather", v, group) == pytest.approx(5e-6 + 7e-6 + 7 / 8 * v / 1e9)
