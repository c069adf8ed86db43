"""Which interconnect each mesh axis runs over.

A mesh axis is one ring of devices on one kind of `Link`:

- TPU: mesh axes, minor to major, stay on the ICI torus while the devices they span fit in
  one pod (`Hardware.fast_domain_devices`); axes beyond go over DCN. An ICI axis has
  wraparound links when its size is a multiple of `Hardware.wraparound_multiple` (4 on
  v4/v5p, 16 on v5e/v6e; reference §6.2 and §7), or at most 2.
- GPU: the innermost axes whose product fits in one node (`devices_per_node`, 8) are on
  NVLink (NVSwitch: switched, no wraparound question); the outer axes are on InfiniBand. An
  axis that straddles the node boundary runs at InfiniBand speed.
- CPU: every axis on ``loopback`` (shared memory), and an axis that crosses hosts on
  ``ethernet``.

Hosts: the innermost axes whose product fits in one host (`Hardware.devices_per_node`, or
``devices_per_host`` for a what-if) stay on it; an axis beyond crosses hosts
(`AxisLink.crosses_hosts`). On a GPU such an axis is on InfiniBand, on a CPU on
``ethernet``; on a TPU it stays on ICI while it fits in the pod (ICI spans hosts). A real
multi-process mesh names its crossing axes itself (``cross_host_axes``, read from which
process owns each device). On a CPU, hosts are only considered when named that way.

TPU slices: the ICI axes' devices form a slice whose shape is what Cloud TPU allocates
(`slice_shape`: 3D on v4/v5p, e.g. 8 chips are 2x2x2, 128 are 4x4x8; 2D on v5e/v6e, e.g.
8 chips are 2x4), and the mesh axes, minor to major, take its physical dimensions: an axis
the size of one dimension is that ring; an axis spanning several (4 devices on two 2-rings
of a 2x2x2 v5p slice) is a multi-dimensional torus whose collectives use every dimension's
links at once (`AxisLink.torus`; the scaling book's multi-axis rule, reference §6.2); an axis
that takes part of a dimension is one ring without wraparound. A mesh whose axes do not tile
the slice this way keeps one ring per axis. Several mesh axes sharing one dimension are not
modelled. Override the default with `Topology.from_kinds` or by passing `AxisLink`s.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from partir import ir
from partir.simulator.hardware import CPU_ETHERNET, Hardware, Link, SimulatorError

MeshLike = ir.MeshAttr | Mapping[str, int] | Iterable[tuple[str, int]]
"""A mesh: a `partir.ir.MeshAttr`, a ``{axis: size}`` mapping, or ``(axis, size)`` pairs,
major to minor."""


def mesh_axes(mesh: MeshLike) -> tuple[tuple[str, int], ...]:
    """The ``(axis, size)`` pairs of a mesh, major to minor.

    Args:
      mesh: a `MeshLike`.
    """
    if isinstance(mesh, ir.MeshAttr):
        return tuple(mesh.data)
    if isinstance(mesh, Mapping):
        return tuple((str(a), int(n)) for a, n in mesh.items())
    return tuple((str(a), int(n)) for a, n in mesh)


@dataclass(frozen=True)
class AxisLink:
    """One mesh axis on one interconnect.

    Attributes:
      axis: the mesh axis name.
      size: devices along the axis.
      link: the `Link` it runs over.
      wraparound: for a torus link, whether the ring is closed (a switched link ignores it).
      crosses_hosts: whether the axis's devices are on more than one host (process).
      torus: for an axis spanning several physical torus dimensions, ``(size, closed)`` per
        dimension; empty when the axis is one ring (of `size`, closed per `wraparound`).
    """

    axis: str
    size: int
    link: Link
    wraparound: bool = True
    crosses_hosts: bool = False
    torus: tuple[tuple[int, bool], ...] = ()

    @property
    def closed_ring(self) -> bool:
        """Whether collectives see a closed ring: switched, wraparound, or size <= 2 (for a
        multi-dimensional axis: every dimension closed)."""
        if self.torus:
            return self.link.switched or all(closed for _, closed in self.torus)
        return self.link.switched or self.wraparound or self.size <= 2

    def rings(self) -> tuple[tuple[int, bool], ...]:
        """The physical rings the axis runs over, ``(size, closed)`` each."""
        return self.torus or ((self.size, self.closed_ring),)


@dataclass(frozen=True)
class Topology:
    """The `AxisLink` of every mesh axis.

    Attributes:
      axes: one `AxisLink` per mesh axis, major to minor.
    """

    axes: tuple[AxisLink, ...]

    def __getitem__(self, axis: str) -> AxisLink:
        for a in self.axes:
            if a.axis == axis:
                return a
        raise SimulatorError(
            f"the topology has no mesh axis {axis!r}; it has {[a.axis for a in self.axes]}"
        )

    def __str__(self) -> str:
        parts = []
        for a in self.axes:
            wrap = "" if a.link.switched else (" wraparound" if a.closed_ring else " no-wrap")
            if a.torus:
                wrap += " (" + "x".join(str(d) for d, _ in a.torus) + " torus)"
            hosts = " cross-host" if a.crosses_hosts else ""
            parts.append(f"{a.axis}={a.size}: {a.link.kind}{wrap}{hosts}")
        return ", ".join(parts)

    @staticmethod
    def default(
        hardware: Hardware,
        mesh: MeshLike,
        *,
        devices_per_host: int | None = None,
        cross_host_axes: Iterable[str] | None = None,
    ) -> Topology:
        """The default mapping of `mesh`'s axes onto `hardware`'s links (see the module doc).

        Args:
          hardware: the device profile.
          mesh: the device mesh (`MeshLike`), major to minor.
          devices_per_host: devices on one host, for a what-if; default the profile's
            `devices_per_node` (on a CPU: one host, unless given).
          cross_host_axes: the axes that cross hosts, when the mesh's devices say so (a
            `jax.distributed` mesh); overrides `devices_per_host`.
        """
        axes = mesh_axes(mesh)
        if devices_per_host is not None and devices_per_host < 1:
            raise SimulatorError(f"devices_per_host must be at least 1, got: {devices_per_host}")
        crossing = _crossing(hardware, axes, devices_per_host, cross_host_axes)
        kinds: dict[str, str] = {}
        if hardware.kind == "tpu":
            span = 1
            for axis, size in reversed(axes):
                span *= size
                kinds[axis] = "ici" if span <= hardware.fast_domain_devices else "dcn"
        elif hardware.kind == "gpu":
            for axis, _ in axes:
                kinds[axis] = "infiniband" if axis in crossing else "nvlink"
        else:
            kinds = {axis: hardware.links[0].kind for axis, _ in axes}
        topo = Topology.from_kinds(hardware, axes, kinds)
        if hardware.kind == "tpu" and hardware.torus_rank >= 2:
            topo = _on_slice(hardware, topo)
        return Topology(tuple(_mark_host(hardware, a, a.axis in crossing) for a in topo.axes))

    @staticmethod
    def from_kinds(
        hardware: Hardware,
        mesh: MeshLike,
        kinds: Mapping[str, str],
        wraparound: Mapping[str, bool] | None = None,
    ) -> Topology:
        """A topology that puts each mesh axis on the named link kind.

        Args:
          hardware: the device profile whose links are named.
          mesh: the device mesh (`MeshLike`).
          kinds: axis -> link kind (``"ici"``, ``"dcn"``, ``"nvlink"``, ``"infiniband"``,
            ``"loopback"``); an axis left out gets the default mapping's kind.
          wraparound: axis -> whether its torus ring is closed; by default from the axis
            size and `Hardware.wraparound_multiple`.
        """
        axes = mesh_axes(mesh)
        unknown = (set(kinds) | set(wraparound or {})) - {a for a, _ in axes}
        if unknown:
            raise SimulatorError(
                f"topology names mesh axes {sorted(unknown)} that the mesh "
                f"{dict(axes)} does not have"
            )
        default = None
        out = []
        for axis, size in axes:
            if axis in kinds:
                kind = kinds[axis]
            else:
                default = default or Topology.default(hardware, axes)
                kind = default[axis].link.kind
            if wraparound is not None and axis in wraparound:
                wrap = bool(wraparound[axis])
            else:
                wrap = size <= 2 or size % hardware.wraparound_multiple == 0
            out.append(AxisLink(axis, size, hardware.link(kind), wrap))
        return Topology(tuple(out))


def slice_shape(devices: int, rank: int) -> tuple[int, ...] | None:
    """The physical shape of a TPU slice of `devices` chips on a `rank`-D torus, as Cloud TPU
    allocates them (smallest dimension doubled first: 8 -> 2x2x2, 128 -> 4x4x8, 6144 ->
    16x16x24; 2D: 8 -> 2x4), or None when no such shape has exactly that many chips.

    Args:
      devices: chips in the slice.
      rank: torus dimensions (3 on v4/v5p, 2 on v5e/v6e).
    """
    dims = [1] * rank
    while math.prod(dims) < devices:
        i = dims.index(min(dims))
        factor = devices / math.prod(dims)
        if factor >= 2:
            dims[i] *= 2
        elif float(dims[i] * factor).is_integer():
            dims[i] = int(dims[i] * factor)
        else:
            return None
    return tuple(sorted(dims)) if math.prod(dims) == devices else None


def _on_slice(hardware: Hardware, topo: Topology) -> Topology:
    """The ICI axes of `topo` laid onto the physical dimensions of their slice (module doc)."""
    ici = [a for a in topo.axes if a.link.kind == "ici" and not a.link.switched]
    shape = slice_shape(math.prod(a.size for a in ici), hardware.torus_rank)
    if shape is None:
        return topo
    free = list(shape)
    placed: dict[str, tuple[tuple[int, bool], ...]] = {}
    for a in reversed(ici):  # minor to major
        if a.size == 1:
            continue
        if a.size in free:
            free.remove(a.size)
            continue  # one whole dimension: the ring it already is
        taken: list[int] = []
        for d in sorted(free):
            if a.size % (math.prod(taken) * d) == 0:
                taken.append(d)
            if math.prod(taken) == a.size:
                break
        if math.prod(taken) != a.size or len(taken) < 2:
            return topo  # the axis does not tile whole dimensions: one ring per axis
        for d in taken:
            free.remove(d)
        wrap = hardware.wraparound_multiple
        placed[a.axis] = tuple((d, d <= 2 or d % wrap == 0) for d in taken)
    return Topology(
        tuple(dataclasses.replace(a, torus=placed[a.axis]) if a.axis in placed else a
              for a in topo.axes)
    )  # fmt: skip


def _mark_host(hardware: Hardware, axis: AxisLink, crosses: bool) -> AxisLink:
    """`axis` flagged as crossing hosts or not; a crossing CPU axis goes on ethernet
    (the profile's, or `CPU_ETHERNET` for a calibrated profile, which measures one host)."""
    if crosses and hardware.kind == "cpu":
        names = {link.kind for link in hardware.links}
        link = hardware.link("ethernet") if "ethernet" in names else CPU_ETHERNET
        return dataclasses.replace(axis, link=link, crosses_hosts=True)
    return dataclasses.replace(axis, crosses_hosts=crosses)


def _crossing(
    hardware: Hardware,
    axes: tuple[tuple[str, int], ...],
    devices_per_host: int | None,
    cross_host_axes: Iterable[str] | None,
) -> frozenset[str]:
    """The axes that cross hosts: named, or the axes beyond the innermost ones whose
    product fits in one host (an axis straddling the boundary crosses)."""
    if cross_host_axes is not None:
        named = frozenset(cross_host_axes)
        unknown = named - {a for a, _ in axes}
        if unknown:
            raise SimulatorError(
                f"cross_host_axes names {sorted(unknown)}, not axes of the mesh {dict(axes)}"
            )
        return named
    if devices_per_host is None and hardware.kind == "cpu":
        return frozenset()
    per_host = devices_per_host if devices_per_host is not None else hardware.devices_per_node
    out, span = set(), 1
    for axis, size in reversed(axes):
        span *= size
        if span > per_host and size > 1:
            out.add(axis)
    return frozenset(out)


def resolve_topology(
    hardware: Hardware,
    mesh: MeshLike,
    topology: Topology | Mapping[str, str | AxisLink] | None,
) -> Topology:
    """The `Topology` to simulate with.

    Args:
      hardware: the device profile.
      mesh: the device mesh of the program.
      topology: None for `Topology.default`; a `Topology` (checked against the mesh); or a
        mapping axis -> link kind name or `AxisLink` (other axes keep the default).
    """
    axes = mesh_axes(mesh)
    if topology is None:
        return Topology.default(hardware, axes)
    if isinstance(topology, Topology):
        got = {(a.axis, a.size) for a in topology.axes}
        missing = [a for a in axes if a not in got]
        if missing:
            raise SimulatorError(f"the topology does not describe mesh axes {missing}")
        return topology
    kinds = {a: v for a, v in topology.items() if isinstance(v, str)}
    base = Topology.from_kinds(hardware, axes, kinds)
    links = {a: v for a, v in topology.items() if isinstance(v, AxisLink)}
    return Topology(tuple(links.get(a.axis, a) for a in base.axes))
