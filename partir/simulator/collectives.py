"""Collective costs: the formulas of reference §6.1, §6.2 and §6.4, per mesh-axis group.

Notation as in the reference: V is the array's size in bytes over the whole group (for an
all_gather, its result; for reduce_scatter and all_reduce, the operand; for all_to_all, the
local operand times the group size), n the group size, W a link's bandwidth, alpha a latency.

- **Torus (TPU ICI), every axis of the group on ICI** (scaling book, §6.2). A closed ring
  (wraparound, or size <= 2) is bidirectional: ``W_i = 2 * link``; an axis without wraparound
  "typically doubles" the time: ``W_i = link`` and twice the hops. Over the group's axes:
  ``T_AG = max(T_min * sum(hops_i), V / sum(W_i))`` with ``hops_i = |X_i| / 2`` (closed) or
  ``|X_i|`` (open); reduce_scatter = all_gather, all_reduce = 2 x all_gather,
  all_to_all = all_gather / 4.
- **Everything else** (NVLink/NVSwitch, InfiniBand, DCN, loopback, and groups mixing link
  kinds): one ring over all n devices at the slowest link (Alpa's rule across mesh dims,
  §6.1), NCCL ring bandwidth terms (§6.4): all_gather and reduce_scatter ``(n-1)/n * V / B``,
  all_reduce ``2(n-1)/n * V / B``, all_to_all ``(n-1)/n^2 * V / B`` through a switch
  (each device sends its other n-1 tiles directly; a group with a ring link uses Alpa's
  ``(n-1)/(2n) * V``), plus ``alpha = base + steps * step latency`` with NCCL's steps (n - 1
  for all_gather/reduce_scatter/all_to_all, 2(n - 1) for all_reduce). B is the link's
  bandwidth times its efficiency.
- collective_permute: one hop of the local buffer. all_slice: free (a local slice).

`bytes_sent` (per device, what `Report.communication_bytes` adds up) is the ring volume:
``(n-1)/n V`` (all_gather, reduce_scatter), ``2(n-1)/n V`` (all_reduce), ``(n-1)/n^2 V``
(all_to_all), the local buffer (collective_permute), independent of the topology.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from partir import ir
from partir.simulator.costs import cost
from partir.simulator.topology import AxisLink

KIND_OF: dict[type, str] = {
    ir.AllGatherOp: "all_gather",
    ir.AllSliceOp: "all_slice",
    ir.AllReduceOp: "all_reduce",
    ir.ReduceScatterOp: "reduce_scatter",
    ir.AllToAllOp: "all_to_all",
    ir.CollectivePermuteOp: "collective_permute",
}
"""spmd collective op class -> kind name."""

# Torus time as a multiple of an all_gather's (reference §6.2).
_TORUS_FACTOR = {"all_gather": 1.0, "reduce_scatter": 1.0, "all_reduce": 2.0, "all_to_all": 0.25}


class CollectiveSig(NamedTuple):
    """What a collective cost function sees of one collective.

    Attributes:
      kind: ``all_gather``, ``reduce_scatter``, ``all_reduce``, ``all_to_all``,
        ``collective_permute`` or ``all_slice``.
      operand_bytes: the local operand's bytes.
      result_bytes: the local result's bytes.
      result_elements: the local result's elements.
      group: the `AxisLink` of each mesh axis in the communication group.
    """

    kind: str
    operand_bytes: int
    result_bytes: int
    result_elements: int
    group: tuple[AxisLink, ...]


class CommCost(NamedTuple):
    """The cost of one collective on one device."""

    time_s: float
    """Seconds from start to every device holding its result."""
    bytes_sent: float
    """Bytes each device sends (the ring volume; see the module doc)."""
    volume_bytes: float = 0.0
    """V: the array's size over the group."""
    flops: float = 0.0
    """Reduction flops as XLA's HloCostAnalysis counts them (all_reduce: one per element)."""


def group_size(group: Sequence[AxisLink]) -> int:
    """Devices in the group spanned by the axes.

    Args:
      group: the `AxisLink` of each mesh axis of the group.
    """
    return math.prod(a.size for a in group)


def bytes_sent(kind: str, volume_bytes: float, n: int) -> float:
    """Bytes one device sends in a ring collective of `kind` over `n` devices.

    Args:
      kind: the collective kind.
      volume_bytes: V (for collective_permute: the local buffer).
      n: the group size.
    """
    if n <= 1 or kind == "all_slice":
        return 0.0
    if kind in ("all_gather", "reduce_scatter"):
        return (n - 1) / n * volume_bytes
    if kind == "all_reduce":
        return 2 * (n - 1) / n * volume_bytes
    if kind == "all_to_all":
        return (n - 1) / n**2 * volume_bytes
    return float(volume_bytes)


def torus_time(kind: str, volume_bytes: float, group: Sequence[AxisLink]) -> float:
    """Seconds for a collective over torus (ICI) axes, by the scaling book's rules (§6.2).

    Args:
      kind: the collective kind.
      volume_bytes: V.
      group: the axes (each `AxisLink.link` a torus link).
    """
    if group_size(group) <= 1 or kind == "all_slice":
        return 0.0
    if kind == "collective_permute":
        link = min((a.link for a in group), key=lambda lk: lk.effective_bandwidth_bytes_per_s)
        return link.latency_s + volume_bytes / link.effective_bandwidth_bytes_per_s
    bandwidth = 0.0
    latency = 0.0
    for a in group:
        if a.size <= 1:
            continue
        closed = a.closed_ring
        bandwidth += (2.0 if closed else 1.0) * a.link.effective_bandwidth_bytes_per_s
        latency += a.link.latency_s * (a.size / 2 if closed else a.size)
    t_all_gather = max(latency, volume_bytes / bandwidth)
    return _TORUS_FACTOR[kind] * t_all_gather


def alpha_beta_time(kind: str, volume_bytes: float, group: Sequence[AxisLink]) -> float:
    """Seconds for a ring collective over the group at its slowest link (§6.1, §6.4).

    Args:
      kind: the collective kind.
      volume_bytes: V (for collective_permute: the local buffer).
      group: the axes; n is the product of their sizes.
    """
    n = group_size(group)
    if n <= 1 or kind == "all_slice":
        return 0.0
    terms = [a.link.terms(kind) for a in group if a.size > 1]
    base = max(t[0] for t in terms)
    step = max(t[1] for t in terms)
    bandwidth = min(t[2] for t in terms)
    links = [a.link for a in group if a.size > 1]
    if kind == "collective_permute":
        return base + step + volume_bytes / bandwidth
    if kind == "all_to_all":
        switched = all(lk.switched for lk in links)
        factor = (n - 1) / n**2 if switched else (n - 1) / (2 * n)
        return base + (n - 1) * step + factor * volume_bytes / bandwidth
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    return base + steps * step + bytes_sent(kind, volume_bytes, n) / bandwidth


def collective_time(kind: str, volume_bytes: float, group: Sequence[AxisLink]) -> float:
    """Seconds for one collective: `torus_time` when every axis is on one torus link kind
    (ICI), else `alpha_beta_time`.

    Args:
      kind: the collective kind.
      volume_bytes: V (for collective_permute: the local buffer).
      group: the `AxisLink` of each axis of the group.
    """
    active = [a for a in group if a.size > 1]
    if not active:
        return 0.0
    kinds = {a.link.kind for a in active}
    if len(kinds) == 1 and not active[0].link.switched:
        return torus_time(kind, volume_bytes, active)
    return alpha_beta_time(kind, volume_bytes, active)


def _ring_collective(c: CollectiveSig, volume: float, flops: float = 0.0) -> CommCost:
    n = group_size(c.group)
    return CommCost(
        collective_time(c.kind, volume, c.group), bytes_sent(c.kind, volume, n), volume, flops
    )


@cost(ir.AllGatherOp)
def _all_gather(c: CollectiveSig) -> CommCost:
    return _ring_collective(c, c.result_bytes)


@cost(ir.ReduceScatterOp)
def _reduce_scatter(c: CollectiveSig) -> CommCost:
    return _ring_collective(c, c.operand_bytes)


@cost(ir.AllReduceOp)
def _all_reduce(c: CollectiveSig) -> CommCost:
    # HloCostAnalysis::HandleAllReduce counts one flop per result element ("assume 2 replicas")
    flops = float(c.result_elements) if group_size(c.group) > 1 else 0.0
    return _ring_collective(c, c.operand_bytes, flops)


@cost(ir.AllToAllOp)
def _all_to_all(c: CollectiveSig) -> CommCost:
    return _ring_collective(c, c.operand_bytes * group_size(c.group))


@cost(ir.CollectivePermuteOp)
def _collective_permute(c: CollectiveSig) -> CommCost:
    return _ring_collective(c, c.operand_bytes)


@cost(ir.AllSliceOp)
def _all_slice(c: CollectiveSig) -> CommCost:
    return CommCost(0.0, 0.0, 0.0, 0.0)
