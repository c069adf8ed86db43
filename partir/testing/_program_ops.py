"""The registered op generators of `partir.testing.strategies` (see `register_op`).

Registration order is the order of `OP_GENERATORS`, hence the draw order.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from hypothesis import strategies as st
from jax import lax

from partir.testing._program_core import (
    F32,
    I32,
    MAX_ELEMENTS,
    MAX_RANK,
    Draw,
    Pool,
    Ref,
    Shape,
    _axis,
    _bcast,
    _choose,
    _fitting,
    _ids,
    _index_source,
    _operand,
    _other_dims,
    _scalar_index,
    _size,
    register_op,
)

# ------------------------------------------------------------------ contractions and reductions
# (registration order is the draw order: hypothesis shrinks towards the first ops)


@register_op("dot_general", primitives=("dot_general", "tanh"))
def _dot_general(draw: Draw, pool: Pool):
    """``tanh(dot_general(a, b) / sqrt(K))``: 1+ pairs of equal-size dims of a and b, each
    contracted or batched (K: the contracted size). Uses a with itself (one dim contracted, the
    rest batched) when no dims match or the result would be too big."""
    a, sa = _operand(draw, pool, min_rank=1)
    others = _ids(pool, pred=lambda s: bool(set(s) & set(sa)))
    b: Ref = draw(st.sampled_from([i for i in others if i != a] or [a]))
    sb = sa if b == a else tuple(pool[b].shape)  # type: ignore
    # x with itself pairs dim i with dim i only: XLA's CPU partitioner (jax 0.12) miscompiles a
    # self-contraction of transposed dims sharded on two axes (tests/property/test_known_bugs.py)
    pairs = [
        (i, j)
        for i in range(len(sa))
        for j in range(len(sb))
        if sa[i] == sb[j] and (b != a or i == j)
    ]
    chosen: list[tuple[int, int]] = []
    for i, j in draw(st.permutations(pairs)):
        if all(i != ci and j != cj for ci, cj in chosen):
            chosen.append((i, j))
    chosen = chosen[: draw(st.integers(1, len(chosen)))]
    batch = [p for p in chosen if draw(st.booleans())]
    contract = [p for p in chosen if p not in batch]
    out = [sa[i] for i, _ in batch] + [
        n for i, n in enumerate(sa) if i not in {p[0] for p in chosen}
    ]
    out += [n for j, n in enumerate(sb) if j not in {p[1] for p in chosen}]
    if _size(out) > MAX_ELEMENTS or len(out) > MAX_RANK:
        b, i = a, _axis(draw, sa)
        contract, batch = [(i, i)], [(k, k) for k in range(len(sa)) if k != i]
    dims = tuple((tuple(i for i, _ in ps), tuple(j for _, j in ps)) for ps in (contract, batch))
    scale = 1.0 / math.sqrt(_size(sa[i] for i, _ in contract))

    def apply(x, y, dims, scale):
        return lax.tanh(lax.dot_general(x, y, dims) * scale)

    return (a, b), {"dims": dims, "scale": scale}, apply


def _reduction(name: str, f: Callable[[Any, tuple[int, ...]], Any], what: str) -> None:
    def gen(draw: Draw, pool: Pool):
        a, shape = _operand(draw, pool, min_rank=1)
        axes = draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True))
        return (a,), {"axes": tuple(sorted(axes))}, f

    gen.__doc__ = f"{what} of a float value over a non-empty set of axes."
    register_op(name)(gen)


_reduction(
    "reduce_sum",
    # scaled first: the reduction's own result (a partial sum when an axis is sharded) is what
    # the next op reads
    lambda x, axes: lax.reduce_sum(x * (1 / _size(x.shape[a] for a in axes)), axes),
    "Mean",
)
_reduction("reduce_max", lax.reduce_max, "Max")


@register_op("argmax")
def _argmax(draw: Draw, pool: Pool):
    """``argmax`` of a float value along one axis: defines an int32 value (usable as an index)."""
    a, shape = _operand(draw, pool, min_rank=1)
    return (a,), {"d": _axis(draw, shape)}, lambda x, d: lax.argmax(x, d, np.int32)


@register_op("cumsum")
def _cumsum(draw: Draw, pool: Pool):
    """``cumsum(x, d, reverse) / n`` along one axis (of size n) of a float value."""
    a, shape = _operand(draw, pool, min_rank=1)
    params = {"d": _axis(draw, shape), "reverse": draw(st.booleans())}
    return (a,), params, lambda x, d, reverse: lax.cumsum(x, d, reverse=reverse) * (1 / x.shape[d])


# ------------------------------------------------------------------ shape ops


@register_op("broadcast_in_dim")
def _broadcast(draw: Draw, pool: Pool):
    """Insert 1+ new dims (sizes drawn from the pool's dims) and maybe expand size-1 dims."""
    a, shape = _operand(draw, pool, max_rank=MAX_RANK - 1)
    sizes = sorted({1, 2, *(n for v in pool for n in v.shape)})
    layout: list[int | None] = list(range(len(shape)))  # operand dim, or None for a new dim
    for _ in range(draw(st.integers(1, MAX_RANK - len(shape)))):
        layout.insert(draw(st.integers(0, len(layout))), None)
    out: list[int] = []
    for k, d in enumerate(layout):
        n = 1 if d is None else shape[d]
        if n == 1 and (d is None or draw(st.booleans())):
            now = _size(out) * _size(shape[e] for e in layout[k + 1 :] if e is not None)
            n = draw(st.sampled_from([s for s in sizes if now * s <= MAX_ELEMENTS]))
        out.append(n)
    params = {"shape": tuple(out), "bdims": tuple(k for k, d in enumerate(layout) if d is not None)}
    return (a,), params, lambda x, shape, bdims: lax.broadcast_in_dim(x, shape, bdims)


@register_op("expand_dims", primitives=("broadcast_in_dim",))
def _expand_dims(draw: Draw, pool: Pool):
    """``lax.expand_dims``: insert one size-1 dim."""
    a, shape = _operand(draw, pool, max_rank=MAX_RANK - 1)
    return (a,), {"d": draw(st.integers(0, len(shape)))}, lambda x, d: lax.expand_dims(x, (d,))


@register_op("squeeze")
def _squeeze(draw: Draw, pool: Pool):
    """Squeeze a size-1 dim; or index one position of a dim (``slice`` then ``squeeze``)."""
    units = [(i, d) for i in _ids(pool) for d, n in enumerate(pool[i].shape) if n == 1]
    if units and draw(st.booleans()):
        (a, d), index = draw(st.sampled_from(units)), None
    else:
        a, shape = _operand(draw, pool, min_rank=1)
        d = _axis(draw, shape)
        index = draw(st.integers(0, shape[d] - 1))

    def apply(x, d, index):
        x = x if index is None else lax.slice_in_dim(x, index, index + 1, axis=d)
        return lax.squeeze(x, (d,))

    return (a,), {"d": d, "index": index}, apply


def _splits(s: Shape) -> list[Shape]:
    if len(s) >= MAX_RANK:
        return []
    return [
        (*s[:i], p, n // p, *s[i + 1 :]) for i, n in enumerate(s) for p in range(2, n) if n % p == 0
    ]


def _merges(s: Shape) -> list[Shape]:
    return [(*s[:i], s[i] * s[i + 1], *s[i + 2 :]) for i in range(len(s) - 1)]


@register_op("reshape")
def _reshape(draw: Draw, pool: Pool):
    """Reshape a float value: split a dim, merge two adjacent dims, or merge then split."""
    a = _choose(draw, pool)
    s = tuple(pool[a].shape)
    opts = _splits(s) + _merges(s) + [t for m in _merges(s) for t in _splits(m) if t != s]
    shape = draw(st.sampled_from(opts or [(*s, 1), (1, *s)]))  # none: rank 0 or a prime size
    return (a,), {"shape": shape}, lambda x, shape: lax.reshape(x, shape)


@register_op("transpose")
def _transpose(draw: Draw, pool: Pool):
    """Transpose a float value of rank >= 2 by a non-identity permutation."""
    a, shape = _operand(draw, pool, min_rank=2)
    ident = tuple(range(len(shape)))
    perm = draw(st.sampled_from([p for p in itertools.permutations(ident) if p != ident]))
    return (a,), {"perm": perm}, lambda x, perm: lax.transpose(x, perm)


@register_op("slice")
def _slice(draw: Draw, pool: Pool):
    """Static, maybe strided slice; proper on at least one dim when any dim has size >= 2."""
    a, shape = _operand(draw, pool, min_rank=1)
    big = [d for d, n in enumerate(shape) if n >= 2]
    forced = draw(st.sampled_from(big)) if big else -1
    start, limit, strides = [], [], []
    for d, n in enumerate(shape):
        lo, hi, step = 0, n, 1
        if d == forced or draw(st.booleans()):
            lo = draw(st.integers(0, n - 1))
            hi, step = draw(st.integers(lo + 1, n)), draw(st.sampled_from((1, 2)))
            if d == forced and (lo, hi, step) == (0, n, 1):
                hi = n - 1
        start.append(lo)
        limit.append(hi)
        strides.append(step)
    params = {"start": tuple(start), "limit": tuple(limit), "strides": tuple(strides)}
    return (a,), params, lambda x, start, limit, strides: lax.slice(x, start, limit, strides)


@register_op("concatenate")
def _concatenate(draw: Draw, pool: Pool):
    """Concatenate a float value with 1-2 values (maybe itself) that match it off the axis; when
    that would be too big, rotate it instead (two slices concatenated in swapped order)."""
    a, shape = _operand(draw, pool, min_rank=1)
    d = _axis(draw, shape)
    refs: list[Ref] = [a]
    total = _size(shape)

    def fits(s: Shape) -> bool:
        off_axis = all(m == n for k, (m, n) in enumerate(zip(s, shape, strict=True)) if k != d)
        return off_axis and total + _size(s) <= MAX_ELEMENTS

    for _ in range(draw(st.integers(1, 2))):
        cands = _ids(pool, pred=lambda s: len(s) == len(shape) and fits(s))
        cands = cands + ([a] if fits(shape) and a not in cands else [])
        if cands:
            refs.append(draw(st.sampled_from(cands)))
            total += _size(shape if refs[-1] == a else pool[refs[-1]].shape)  # type: ignore
    if len(refs) > 1:
        return tuple(refs), {"d": d}, lambda *xs, d: lax.concatenate(xs, d)
    d = draw(st.sampled_from([k for k, n in enumerate(shape) if n >= 2]))  # size > 1: a dim >= 2
    cut = draw(st.integers(1, shape[d] - 1))

    def roll(x, d, cut):
        return lax.concatenate(
            [lax.slice_in_dim(x, cut, None, axis=d), lax.slice_in_dim(x, 0, cut, axis=d)], d
        )

    return (a,), {"d": d, "cut": cut}, roll


@register_op("pad")
def _pad(draw: Draw, pool: Pool):
    """``lax.pad`` with low/high in [-1, 2] (negative crops), interior in {0, 1}, a small value."""
    a, shape = _operand(draw, pool, min_rank=1)
    cfg = []
    for n in shape:
        lo, hi, inner = draw(st.integers(-1, 2)), draw(st.integers(-1, 2)), draw(st.integers(0, 1))
        cfg.append((lo, hi, inner) if n + (n - 1) * inner + lo + hi >= 1 else (0, 0, inner))
    out = [n + (n - 1) * i + lo + hi for n, (lo, hi, i) in zip(shape, cfg, strict=True)]
    if _size(out) > MAX_ELEMENTS:
        big = max(range(len(shape)), key=lambda k: shape[k])
        cfg = [(0, -1 if k == big else 0, 0) for k in range(len(shape))]
    params = {"cfg": tuple(cfg), "value": draw(st.sampled_from((0.0, 1.0, -0.5)))}
    return (a,), params, lambda x, cfg, value: lax.pad(x, np.float32(value), cfg)


# ------------------------------------------------------------------ indexing


@register_op("dynamic_slice")
def _dynamic_slice(draw: Draw, pool: Pool):
    """``dynamic_slice``; each start is a static int or ``rem(s + off, n - size + 1)``, with s a
    scalar computed from a value (reduce_max of an int value, argmax of a float one)."""
    a, shape = _operand(draw, pool, min_rank=1)
    sizes = tuple(draw(st.integers(1, n)) for n in shape)
    starts = tuple(
        draw(st.one_of(st.integers(0, n - z), st.none())) for n, z in zip(shape, sizes, strict=True)
    )
    offs = tuple(0 if s is not None else draw(st.integers(0, 3)) for s in starts)

    def apply(x, i, sizes, starts, offs):
        s = _scalar_index(i) if None in starts else None
        idx = [
            lax.rem(s + off, n - z + 1) if b is None else b
            for n, z, b, off in zip(x.shape, sizes, starts, offs, strict=True)
        ]
        return lax.dynamic_slice(x, idx, sizes)

    params = {"sizes": sizes, "starts": starts, "offs": offs}
    return (a, _index_source(draw, pool)), params, apply


@register_op("take", primitives=("gather", "rem"))
def _take(draw: Draw, pool: Pool):
    """``jnp.take(x, idx, axis)``, i.e. ``x[..., idx, ...]``: idx is an int value ``rem n``, or
    ``rem(iota(m) * k + s, n)`` with s a scalar computed from a value."""
    a, shape = _operand(draw, pool, min_rank=1)
    ax = _axis(draw, shape)
    rest = _size(shape) // shape[ax]
    ints = _ids(pool, I32, lambda s: len(shape) + len(s) <= MAX_RANK + 1)
    ints = [i for i in ints if rest * _size(pool[i].shape) <= MAX_ELEMENTS]
    if ints and draw(st.booleans()):
        j, m, k = draw(st.sampled_from(ints)), None, None
    else:
        j, k = _index_source(draw, pool), draw(st.integers(1, 3))
        m = draw(st.sampled_from(sorted({1, 2, 3, shape[ax]})))

    def apply(x, i, ax, m, k):
        n = x.shape[ax]
        idx = lax.rem(i, n) if m is None else lax.rem(lax.iota(I32, m) * k + _scalar_index(i), n)
        return jnp.take(x, idx, axis=ax, mode="clip")

    return (a, j), {"ax": ax, "m": m, "k": k}, apply


@register_op("take_along_axis", primitives=("gather", "rem", "iota"))
def _take_along_axis(draw: Draw, pool: Pool):
    """``jnp.take_along_axis(x, idx, axis)``; idx has x's shape but m on the axis and is
    ``rem(iota_axis * k1 + iota_other * k2 + s, n)``, s a scalar computed from a value."""
    a, shape = _operand(draw, pool, min_rank=1)
    ax = _axis(draw, shape)
    params = {
        "ax": ax,
        "m": draw(st.sampled_from(sorted({1, 2, 3, shape[ax]}))),
        "other": draw(st.sampled_from(_other_dims(shape, ax))),
        "k1": draw(st.integers(0, 2)),
        "k2": draw(st.integers(0, 2)),
    }

    def apply(x, i, ax, m, other, k1, k2):
        ishape = (*x.shape[:ax], m, *x.shape[ax + 1 :])
        idx = lax.broadcasted_iota(I32, ishape, ax) * k1 + _scalar_index(i)
        if other is not None:
            idx = idx + lax.broadcasted_iota(I32, ishape, other) * k2
        return jnp.take_along_axis(x, lax.rem(idx, x.shape[ax]), axis=ax, mode="clip")

    return (a, _index_source(draw, pool)), params, apply


# ------------------------------------------------------------------ mixed and elementwise ops


@register_op("select", primitives=("select_n",))
def _select(draw: Draw, pool: Pool):
    """``where(a > b, c, d)`` (or ``<``); b, c, d are float values broadcast to a's shape."""
    a = _choose(draw, pool)
    (b, bb), (c, bc), (d, bd) = (_fitting(draw, pool, pool[a].shape) for _ in range(3))

    def apply(x, y, t, f, cmp, bdims):
        pred = (lax.gt if cmp == "gt" else lax.lt)(x, _bcast(y, x.shape, bdims[0]))
        return lax.select(pred, _bcast(t, x.shape, bdims[1]), _bcast(f, x.shape, bdims[2]))

    return (a, b, c, d), {"cmp": draw(st.sampled_from(("gt", "lt"))), "bdims": (bb, bc, bd)}, apply


@register_op("iota", primitives=("iota", "add"))
def _iota(draw: Draw, pool: Pool):
    """``(x + iota(d) / n) / 2``: an iota along dim d (of size n) added into a float value."""
    a, shape = _operand(draw, pool, min_rank=1)

    def apply(x, d):
        return (x + lax.broadcasted_iota(F32, x.shape, d) * (1 / x.shape[d])) * 0.5

    return (a,), {"d": _axis(draw, shape)}, apply


@register_op("convert", primitives=("convert_element_type",))
def _convert(draw: Draw, pool: Pool):
    """Round trip through another dtype: f32->bf16->f32, f32->i32->f32 (of 4x, then /4), or an
    int value to f32 (``rem(i, 16) / 16``)."""
    a = draw(st.sampled_from(_ids(pool) + _ids(pool, I32)))
    via = "int" if pool[a].dtype == I32 else draw(st.sampled_from(("bf16", "i32")))

    def apply(x, via):
        if via == "int":
            return lax.convert_element_type(lax.rem(x, 16), F32) * (1 / 16)
        if via == "bf16":
            return lax.convert_element_type(lax.convert_element_type(x, jnp.bfloat16), F32)
        return lax.convert_element_type(lax.convert_element_type(x * 4.0, I32), F32) * 0.25

    return (a,), {"via": via}, apply


def _binary(name: str, f: Callable[[Any, Any], Any], what: str) -> None:
    def gen(draw: Draw, pool: Pool):
        a = _choose(draw, pool)
        b, bdims = _fitting(draw, pool, pool[a].shape)
        return (a, b), {"bdims": bdims}, lambda x, y, bdims: f(x, _bcast(y, x.shape, bdims))

    gen.__doc__ = f"Elementwise {what}; y is a float value broadcast (broadcast_in_dim) to x."
    register_op(name)(gen)


def _unary(name: str, f: Callable[[Any], Any], what: str) -> None:
    def gen(draw: Draw, pool: Pool):
        return (_choose(draw, pool),), {}, f

    gen.__doc__ = f"Elementwise {what} of a float value."
    register_op(name)(gen)


_binary("add", lambda x, y: lax.add(x, y) * 0.5, "(x + y) / 2")
_binary("sub", lambda x, y: lax.sub(x, y) * 0.5, "(x - y) / 2")
_binary("mul", lax.mul, "x * y")
_binary("max", lax.max, "max(x, y)")
_binary("min", lax.min, "min(x, y)")
_binary("div", lambda x, y: lax.div(x, 1.0 + y * y), "x / (1 + y*y)")
_unary("neg", lax.neg, "-x")
_unary("abs", lax.abs, "|x|")
_unary("sin", lax.sin, "sin(x)")
_unary("cos", lax.cos, "cos(x)")
_unary("tanh", lax.tanh, "tanh(x)")
_unary("logistic", lax.logistic, "logistic(x)")
_unary("exp", lambda x: lax.exp(x - 1.0), "exp(x - 1), in [e^-2, 1]")
_unary("log", lambda x: lax.log(1.0 + x * x), "log(1 + x*x), in [0, log 2]")
_unary("log1p", lambda x: lax.log1p(lax.abs(x)), "log1p(|x|)")
_unary("sqrt", lambda x: lax.sqrt(0.5 + 0.5 * x * x), "sqrt((1 + x*x) / 2), in [0.7, 1]")


@register_op("integer_pow")
def _integer_pow(draw: Draw, pool: Pool):
    """``x ** n`` for n in {2, 3} (the integer_pow primitive)."""
    params = {"n": draw(st.sampled_from((2, 3)))}
    return (_choose(draw, pool),), params, lambda x, n: lax.integer_pow(x, n)
