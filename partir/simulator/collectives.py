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
- **NCCL links** (`Link.nccl_protocols`: NVLink, InfiniBand): all_gather, reduce_scatter and
  all_reduce take the fastest of NCCL's algorithms and protocols, as NCCL's own tuner
  (`src/graph/tuning.cc`, `ncclTopoTuneModel`) predicts them (`nccl_time`): Ring with LL,
  LL128 or Simple, and for an all_reduce spanning nodes, Tree. Latency: a base per
  (algorithm, protocol) plus, for Ring, one hop per step (NVLink steps inside a node, network
  steps between nodes), for Tree ``2 (local hops + log2(nodes) network hops)``. Bandwidth:
  the link's bus bandwidth (`Link.bandwidth_for`) times the protocol's fraction (LL 1/4,
  LL128 0.92, or 0.7 with one GPU per node; Tree 0.9, LL 1/3.8 of that). Small messages go
  LL (a 4 KiB all_reduce over 64 nodes: ~70 us by Tree/LL, where Ring/Simple would be
  1.8 ms), large ones Ring/Simple.
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
from partir.simulator.hardware import Link
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
        # an axis over several torus dimensions (a 2x2x2 v5p slice) uses each one's links
        for size, closed in a.rings():
            bandwidth += (2.0 if closed else 1.0) * a.link.effective_bandwidth_bytes_per_s
            latency += a.link.latency_s * (size / 2 if closed else size)
    t_all_gather = max(latency, volume_bytes / bandwidth)
    return _TORUS_FACTOR[kind] * t_all_gather


# NCCL's tuning model (NVIDIA/nccl src/graph/tuning.cc, ncclTopoTuneModel [P, code]), per
# protocol (LL, LL128, Simple), in seconds. Ring figures equal reference §6.5's port.
_NCCL_PROTOCOLS = ("LL", "LL128", "Simple")
_NCCL_BASE = {"ring": (6.6e-6, 14.0e-6, 8.4e-6), "tree": (6.8e-6, 14.0e-6, 0.0)}
_NCCL_HOP = {
    ("ring", "nvlink"): (0.6e-6, 1.9e-6, 3.4e-6),
    ("ring", "infiniband"): (2.7e-6, 4.0e-6, 14.0e-6),
    ("tree", "nvlink"): (0.6e-6, 1.25e-6, 4.0e-6),
    ("tree", "infiniband"): (5.0e-6, 8.5e-6, 14.0e-6),
}


def nccl_time(kind: str, volume_bytes: float, group: Sequence[AxisLink]) -> float:
    """Seconds for an all_gather, reduce_scatter or all_reduce over NCCL links: the fastest
    (algorithm, protocol) of NCCL's tuning model (see the module doc).

    The group's NVLink axes are the GPUs of one node (``ppn``), its InfiniBand axes the
    nodes. A link's own `Link.base_latency_s` / `Link.latency_s` stand for Ring/Simple.

    Args:
      kind: ``all_gather``, ``reduce_scatter`` or ``all_reduce``.
      volume_bytes: V.
      group: the axes, every link with `Link.nccl_protocols`.
    """
    active = [a for a in group if a.size > 1]
    n = group_size(active)
    if n <= 1:
        return 0.0
    ppn = math.prod(a.size for a in active if a.link.kind != "infiniband")
    nodes = n // ppn
    bus = min(a.link.bandwidth_for(kind) for a in active)
    simple_base = max(a.link.terms(kind)[0] for a in active)
    intra = [a.link for a in active if a.link.kind != "infiniband"]
    inter = [a.link for a in active if a.link.kind == "infiniband"]
    all_reduce = kind == "all_reduce"
    steps = 2 * (n - 1) if all_reduce else n - 1
    inter_steps = (2 if all_reduce else 1) * (nodes - 1)
    sent = bytes_sent(kind, volume_bytes, n)
    best = math.inf
    for p, proto in enumerate(_NCCL_PROTOCOLS):
        base = simple_base if proto == "Simple" else _NCCL_BASE["ring"][p]
        hop_intra = _hop("ring", p, intra)
        hop_inter = _hop("ring", p, inter)
        if proto == "LL" and nodes > 1:
            hop_intra *= 1.8  # tuning.cc: LL's intra-node latency grows across nodes
        latency = base + (steps - inter_steps) * hop_intra + inter_steps * hop_inter
        if proto == "LL":
            bw = bus / 4 if nodes > 1 or all_reduce else bus / 3
        elif proto == "LL128":
            bw = bus * (0.7 if ppn < 2 else 0.92)
        else:
            bw = bus
            if all_reduce and nodes > 1 and volume_bytes >= n / 16 * 65536:
                latency *= 1.9  # tuning.cc: the ring's latency plateau
        best = min(best, latency + sent / bw)
        if all_reduce and nodes > 1:
            tree_bw = bus * 0.9 * (1 / 3.8 if proto == "LL" else 0.915 if proto == "LL128" else 1)
            tree_latency = _NCCL_BASE["tree"][p] + 2 * (
                (ppn - 1) * _hop("tree", p, intra) + math.log2(nodes) * _hop("tree", p, inter)
            )
            # a tree moves V up and V down: algorithm bandwidth half the bus bandwidth
            best = min(best, tree_latency + volume_bytes / (0.5 * tree_bw))
    return best


def _hop(algorithm: str, protocol: int, links: Sequence[Link]) -> float:
    """The slowest per-hop latency of `links` for one NCCL algorithm and protocol (Simple:
    the link's own `latency_s`)."""
    if not links:
        return 0.0
    if _NCCL_PROTOCOLS[protocol] == "Simple" and algorithm == "ring":
        return max(lk.latency_s for lk in links)
    return max(_NCCL_HOP[(algorithm, lk.kind)][protocol] for lk in links)


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
    links = [a.link for a in group if a.size > 1]
    nccl = kind in ("all_gather", "reduce_scatter", "all_reduce")
    if nccl and all(lk.nccl_protocols and not lk.per_kind for lk in links):
        return nccl_time(kind, volume_bytes, group)
    terms = [a.link.terms(kind) for a in group if a.size > 1]
    base = max(t[0] for t in terms)
    step = max(t[1] for t in terms)
    bandwidth = min(t[2] for t in terms)
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
