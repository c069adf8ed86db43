"""Read logical axis names from a parameter tree's metadata (Flax NNX and Linen).

`logical_axes(tree)` returns plain ``{path: names}`` (a `/`-joined path relative to the
tree, as `partir.LogicalPartition` reads it; one logical name or None per dim), so the
tactic itself stays free of jax and flax:

- Flax NNX: each `nnx.Variable` whose metadata has ``out_sharding`` (the ``sharding=``
  of ``nnx.Param(...)`` or `nnx.with_partitioning`), path of the variable (its ``/value``
  leaf is below it, and a selector naming an inner node selects the leaves under it);
- Flax Linen: each ``nn.LogicallyPartitioned`` box (``nn.with_logical_partitioning``),
  path of the box, which is also the path of the unboxed leaf after ``nn.unbox``;
- any leaf whose ``names`` attribute is a tuple of str/None (other boxed metadata).

Leaves without metadata are left out: they get no sharding from logical rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax

from partir.ir.paths import escape_key

LogicalNames = tuple[str | None, ...]


def _names_of(node: Any) -> LogicalNames | None:
    """The logical names a metadata-carrying node states, or None if it is not one."""
    variable: Any = None
    try:
        from flax import nnx

        variable = nnx.Variable
    except ImportError:  # flax is optional: only boxes with `names` are read then
        pass
    if variable is not None and isinstance(node, variable):
        names = node.get_metadata().get("out_sharding")
        return _as_names(names)
    names = getattr(node, "names", None)
    if names is not None and hasattr(node, "value") and hasattr(node, "unbox"):
        return _as_names(names)
    return None


def _as_names(names: Any) -> LogicalNames | None:
    if names is None:
        return None
    if isinstance(names, str):
        return (names,)
    if isinstance(names, tuple | list) and all(n is None or isinstance(n, str) for n in names):
        return tuple(names)
    return None


def _is_metadata(node: Any) -> bool:
    return _names_of(node) is not None


def _key_text(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def logical_axes(tree: Any) -> dict[str, LogicalNames]:
    """``{path: logical names}`` of every leaf of `tree` that states them in its metadata.

    Args:
      tree: a parameter tree: an NNX `State` (``nnx.split(model, nnx.Param)[1]`` or
        ``nnx.state(model)``), a Linen variables dict as ``model.init`` returns it (boxed),
        or any pytree of boxes with a ``names`` attribute.

    Returns:
      Path relative to `tree` (``blocks/0/attn/query/kernel``; `/` inside a key escaped as in
      `partir.ir.paths`) -> one logical name or None per dim. Pass it to
      ``partir.LogicalPartition(rules, axis=..., logical=...)``.
    """
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_metadata)[0]
    out: dict[str, LogicalNames] = {}
    for keys, node in leaves:
        names = _names_of(node)
        if names is not None:
            out["/".join(escape_key(_key_text(k)) for k in keys)] = names
    return out


def input_logical_axes(arguments: Mapping[str, Any]) -> dict[str, LogicalNames]:
    """``{absolute input path: names}`` over a function's arguments (argument name -> value),
    for `TacticContext.logical_axes`: each argument's `logical_axes` under its name. An
    optax state built from NNX parameters holds `nnx.Variable` leaves with the same
    metadata, so its moments are named too."""
    out: dict[str, LogicalNames] = {}
    for name, value in arguments.items():
        for path, names in logical_axes(value).items():
            out[f"{escape_key(name)}/{path}" if path else escape_key(name)] = names
    return out


__all__ = ["input_logical_axes", "logical_axes"]
