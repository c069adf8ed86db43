"""JAX primitives by name, so IR ops (which name their primitive) can be bound again."""

from __future__ import annotations

from partir.backend import jax_compat as jcore

_BY_NAME: dict[str, jcore.Primitive] = {}
_public_loaded = False


def _load_public() -> None:
    global _public_loaded
    _public_loaded = True
    for prim in jcore.public_primitives():
        _BY_NAME.setdefault(prim.name, prim)


def register_primitive(prim: jcore.Primitive) -> None:
    """Remember `prim` under its name (the frontend calls this for every primitive it sees)."""
    if prim.name not in _BY_NAME:
        _BY_NAME[prim.name] = prim


def lookup_primitive(name: str) -> jcore.Primitive:
    """The primitive named `name`; raises KeyError if this process has never seen it."""
    if name not in _BY_NAME and not _public_loaded:
        _load_public()
    return _BY_NAME[name]
