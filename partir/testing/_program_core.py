"""The core of `partir.testing.strategies`: `RandomProgram` and `OpSpec`, the op generator
registry (`register_op`, `OP_GENERATORS`) and the helpers generators draw operands with.

Import the public names from `partir.testing.strategies`; the registered generators live in
`_program_ops`.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from hypothesis import strategies as st
from jax import lax

F32 = np.dtype(np.float32)
I32 = np.dtype(np.int32)
MAX_RANK = 4
MAX_INPUT_ELEMENTS = 4096
MAX_ELEMENTS = 16384
INT_INPUT_HIGH = 64
AXIS_NAMES = ("a", "b", "c", "d", "e", "f")

Shape = tuple[int, ...]
Pool = list[jax.ShapeDtypeStruct]
Draw = Callable[[st.SearchStrategy], Any]
Ref = int | tuple[int, Shape]  # a value id, or (id, shape to reshape it to first)


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One step of a program.

    Attributes:
      op: the generator's name (a key of `OP_GENERATORS`).
      operands: value ids it reads (input ``xi`` is id ``i``; op ``k`` defines
        ``len(inputs) + k``).
      reshapes: per operand, the shape it is reshaped to before `apply` (None: used as is).
      params: static parameters, as sorted ``(name, value)`` pairs of hashable values.
      out: shape and dtype of the value it defines.
      apply: ``apply(*operand_arrays, **params)``, built from ``jax.lax`` (and a little jnp).
    """

    op: str
    operands: tuple[int, ...]
    reshapes: tuple[Shape | None, ...]
    params: tuple[tuple[str, Any], ...]
    out: jax.ShapeDtypeStruct
    apply: Callable[..., Any] = dataclasses.field(compare=False, repr=False)

    def __call__(self, *args: Any) -> Any:
        """Apply the op to operand arrays or tracers, given in `operands` order."""
        arrays = [
            x if s is None else lax.reshape(x, s) for x, s in zip(args, self.reshapes, strict=True)
        ]
        return self.apply(*arrays, **dict(self.params))


def _fmt(aval: Any) -> str:
    dtype = {F32: "f32", I32: "i32"}.get(np.dtype(aval.dtype), str(aval.dtype))
    return f"{dtype}[{','.join(map(str, aval.shape))}]"


@dataclasses.dataclass(frozen=True)
class RandomProgram:
    """A random JAX program: named inputs, a DAG of ops, and the value ids it returns.

    Attributes:
      inputs: ``{"x0": ShapeDtypeStruct, ...}`` in id order; ``xi`` is value id ``i``.
      ops: the steps in order; step ``k`` defines value id ``len(inputs) + k``.
      outputs: the value ids `fn` returns (1 to 3, the last op's value first).
    """

    inputs: dict[str, jax.ShapeDtypeStruct] = dataclasses.field(hash=False)
    ops: tuple[OpSpec, ...]
    outputs: tuple[int, ...]

    def values(self) -> list[jax.ShapeDtypeStruct]:
        """Shape and dtype of every value, indexed by value id."""
        return [*self.inputs.values(), *(op.out for op in self.ops)]

    def fn(self, inputs: dict) -> tuple:
        """The program: a pure, jittable function of the inputs dict, returning a tuple."""
        vals = [inputs[name] for name in self.inputs]
        for op in self.ops:
            vals.append(op(*(vals[i] for i in op.operands)))
        return tuple(vals[i] for i in self.outputs)

    def example_args(self, seed: int = 0) -> tuple[dict]:
        """Deterministic concrete arguments for `fn`: ``({"x0": np.ndarray, ...},)``.

        Args:
          seed: numpy RNG seed. Floats are uniform in [-1, 1], ints in ``[0, INT_INPUT_HIGH)``.
        """
        rng = np.random.default_rng(seed)
        args = {}
        for name, a in self.inputs.items():
            if np.dtype(a.dtype) == I32:
                args[name] = rng.integers(0, INT_INPUT_HIGH, a.shape, dtype=np.int32)
            else:
                args[name] = rng.uniform(-1.0, 1.0, a.shape).astype(a.dtype)
        return (args,)

    def __repr__(self) -> str:
        lines = [f"  %{i} = {n}: {_fmt(a)}" for i, (n, a) in enumerate(self.inputs.items())]
        for k, op in enumerate(self.ops):
            args = ", ".join(
                f"%{i}" + (f"->{list(s)}" if s is not None else "")
                for i, s in zip(op.operands, op.reshapes, strict=True)
            )
            params = "".join(f" {n}={v!r}" for n, v in op.params if v is not None)
            lines.append(f"  %{len(self.inputs) + k} = {op.op}({args}){params} -> {_fmt(op.out)}")
        lines.append(f"  return {', '.join(f'%{i}' for i in self.outputs)}")
        return "RandomProgram(\n" + "\n".join(lines) + "\n)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Make hypothesis's pretty printer (used in failure reports) show `__repr__`."""
        printer.text(repr(self))


@dataclasses.dataclass(frozen=True)
class OpGenerator:
    """A registered op generator.

    Attributes:
      name: the registry key.
      draw: ``draw(draw, pool) -> (operands, params, apply)``; see `register_op`.
      primitives: JAX primitive names every application of it produces.
    """

    name: str
    draw: Callable[[Draw, Pool], tuple[tuple[Ref, ...], dict[str, Any], Callable[..., Any]]]
    primitives: tuple[str, ...]


OP_GENERATORS: dict[str, OpGenerator] = {}


def register_op(name: str, primitives: Sequence[str] | None = None) -> Callable:
    """Decorator registering an op generator under ``name``.

    The decorated function takes ``(draw, pool)``: hypothesis's ``draw`` and the list of
    ``ShapeDtypeStruct`` values defined so far (it always holds a float32 value). It returns
    ``(operands, params, apply)``: operands are value ids, or ``(id, shape)`` to reshape that value
    first; ``apply(*arrays, **params)`` must depend only on its arguments, keep the module's
    invariants and produce every name in ``primitives`` (default ``(name,)``; ``()`` for a
    generator whose primitives vary with its draws) in the jaxpr.
    """

    def deco(fn: Callable) -> Callable:
        OP_GENERATORS[name] = OpGenerator(
            name, fn, (name,) if primitives is None else tuple(primitives)
        )
        return fn

    return deco


def primitive_names(jaxpr: Any) -> set[str]:
    """Names of all primitives in a (closed) jaxpr, including nested sub-jaxprs (jit, ...)."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for p in eqn.params.values():
            for sub in p if isinstance(p, tuple | list) else (p,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    names |= primitive_names(sub)
    return names


# ------------------------------------------------------------------ helpers for generators


def _size(shape: Any) -> int:
    return math.prod(shape)


def _ids(pool: Pool, dtype: np.dtype = F32, pred: Callable[[Shape], bool] | None = None):
    return [i for i, v in enumerate(pool) if v.dtype == dtype and (pred is None or pred(v.shape))]


def _choose(draw: Draw, pool: Pool) -> int:
    """Any float value."""
    return draw(st.sampled_from(_ids(pool)))


def _operand(draw: Draw, pool: Pool, min_rank: int = 0, max_rank: int = MAX_RANK):
    """A float value of rank in ``[min_rank, max_rank]``: ``(ref, shape)``.

    When no value has such a rank, any float value is reshaped into one (leading unit dims added,
    or leading dims merged) and ``ref`` is ``(id, shape)``.
    """
    i = draw(
        st.sampled_from(_ids(pool, pred=lambda s: min_rank <= len(s) <= max_rank) or _ids(pool))
    )
    shape = tuple(pool[i].shape)
    while len(shape) < min_rank:
        shape = (1, *shape)
    while len(shape) > max_rank:
        shape = (shape[0] * shape[1], *shape[2:])
    return (i if shape == tuple(pool[i].shape) else (i, shape)), shape


def _fitting(draw: Draw, pool: Pool, shape: Shape):
    """A float value that broadcasts to ``shape``: ``(id, bdims)``, bdims None when equal."""
    cands = []
    for i in _ids(pool, pred=lambda s: len(s) <= len(shape)):
        src = tuple(pool[i].shape)
        for m in itertools.combinations(range(len(shape)), len(src)):
            if all(n == 1 or n == shape[d] for n, d in zip(src, m, strict=True)):
                cands.append((i, None if src == shape else m))
    return draw(st.sampled_from(cands))


def _bcast(y: Any, shape: Shape, bdims: tuple[int, ...] | None) -> Any:
    return y if bdims is None else lax.broadcast_in_dim(y, shape, bdims)


def _index_source(draw: Draw, pool: Pool) -> int:
    """A value to compute a data-dependent index from: an int value, or a float one."""
    return draw(st.sampled_from(_ids(pool, I32) + _ids(pool)))


def _scalar_index(v: Any) -> Any:
    """A non-negative int32 scalar from ``v``: reduce_max of ints, argmax of floats."""
    if v.dtype == I32:
        return lax.reduce_max(v, tuple(range(v.ndim))) if v.ndim else v
    return lax.argmax(lax.reshape(v, (v.size,)), 0, np.int32)


def _other_dims(shape: Shape, ax: int) -> list[int | None]:
    """The dims other than `ax`, or [None] for a rank-1 shape."""
    return [d for d in range(len(shape)) if d != ax] or [None]


def _axis(draw: Draw, shape: Shape) -> int:
    return draw(st.integers(0, len(shape) - 1))
