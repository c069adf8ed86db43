"""Tests for partir.rules: registry names, coverage of the model zoo and of random programs,
exact rules of the tricky primitives, soundness on local tiles, and the unknown-primitive
policy."""

from __future__ import annotations

import functools
import uuid
import warnings
from typing import Any

import jax
import jax.extend.core.primitives as jax_primitives
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from jax import lax
from jax.extend.core import Primitive
from jax.sharding import PartitionSpec as P
from xdsl.utils.test_value import create_ssa_value

import partir
from partir import ir
from partir.backend import jax_compat
from partir.backend.evaluate import decode_params
from partir.backend.known import numpy_dtype
from partir.backend.primitives import lookup_primitive
from partir.rules import NO_RULE_PRIMITIVES, RULES, FactorKind, OpRule, get_rule
from partir.rules.core import shapes
from partir.testing import models

try:
    from partir.testing import strategies
except ImportError:  # pragma: no cover - the strategies module is optional for this file
    strategies = None

needs_strategies = pytest.mark.skipif(strategies is None, reason="strategies not available")


# ------------------------------------------------------------------ helpers


def _jaxpr_primitives(jaxpr: Any) -> set[str]:
    """Names of every primitive in a (closed) jaxpr, nested sub-jaxprs included."""
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    names = set()
    for eqn in jaxpr.eqns:
        names.add(eqn.primitive.name)
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
                    names |= _jaxpr_primitives(sub)
    return names


@functools.cache
def _known_primitive_names() -> frozenset[str]:
    """`jax.extend.core.primitives`, plus primitives only seen when tracing lax functions."""
    names = {p.name for p in vars(jax_primitives).values() if isinstance(p, Primitive)}
    x = jnp.ones((4, 6))
    traced = [
        lambda x: lax.split(x, (2, 4), axis=1),
        lambda x: lax.optimization_barrier((x, x)),
        lambda x: x.at[jnp.array([0])].subtract(x[:1]),
        # stack, unstack, random_wrap, random_unwrap (PRNG keys; see partir/rules/random.py)
        lambda x: (jnp.stack([x, x]), *jax.random.key_data(jax.random.split(jax.random.key(0)))),
        lambda x: jax.random.wrap_key_data(x[0, :2].astype(jnp.uint32)),
        # shard_map (a user's region; see partir/rules/constraints.py)
        lambda x: jax.shard_map(
            lambda a: a, mesh=jax.make_mesh((1,), ("i",)), in_specs=P(), out_specs=P()
        )(x),
    ]
    for fn in traced:
        names |= _jaxpr_primitives(jax.make_jaxpr(fn)(x))
    return frozenset(names)


def _prim_ops(program: partir.Program) -> list[ir.PrimOp]:
    return [op for op in program.module.walk() if isinstance(op, ir.PrimOp)]


def _tensor(spec: tuple[tuple[int, ...], str] | tuple[int, ...]) -> Any:
    shape, dtype = spec if len(spec) == 2 and isinstance(spec[1], str) else (spec, "float32")
    return ir.tensor_type(tuple(shape), dtype)


def _op(primitive: str, operands: list, results: list, **params: Any) -> ir.PrimOp:
    """A primitive op on fresh SSA values: shapes are ``(dims...)`` (float32) or
    ``((dims...), dtype)``."""
    args = [create_ssa_value(_tensor(s)) for s in operands]
    return ir.PrimOp(primitive, args, [_tensor(s) for s in results], tuple(params.items()))


def _has_empty_side(rule: OpRule) -> bool:
    """Whether a side of the notation is empty (no tensor, or one rank-0 tensor): ambiguous."""
    return any(
        len(side) == 0 or (len(side) == 1 and not side[0]) for side in (rule.operands, rule.results)
    )


def _check_op(op: ir.PrimOp) -> None:
    """`op` has a rule (unless its primitive is a deliberate barrier) that fits its shapes and
    whose notation parses back to it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rule = get_rule(op)
    if op.primitive_name in NO_RULE_PRIMITIVES:
        assert rule is None
        return
    assert rule is not None, op.primitive_name
    rule.check_shapes(*shapes(op))
    parsed = OpRule.parse(str(rule))
    assert str(parsed) == str(rule)
    if not _has_empty_side(rule):  # see test_rule_notation_rank0_side_roundtrips
        assert parsed == rule, str(rule)


# ------------------------------------------------------------------ registry


def test_rules_keys_are_jax_primitive_names():
    known = _known_primitive_names()
    # a primitive newer than the installed JAX (but within the supported range) is allowed
    newer = {
        name
        for name, since in jax_compat.PRIMITIVES_SINCE.items()
        if jax_compat.is_older_than(jax.__version__, since)
    }
    unknown = sorted(name for name in RULES if name not in known and name not in newer)
    assert not unknown, f"rules registered for names that are no JAX primitive: {unknown}"
    assert not newer & known, "PRIMITIVES_SINCE gives too late a version for these"


def test_rules_no_rule_primitives_have_no_rule():
    assert not NO_RULE_PRIMITIVES & set(RULES)


@needs_strategies
def test_rules_cover_every_generated_primitive():
    promised = {p for g in strategies.OP_GENERATORS.values() for p in g.primitives}
    assert sorted(promised - set(RULES) - NO_RULE_PRIMITIVES) == []


# ------------------------------------------------------------------ zoo and random programs


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_rules_fit_every_zoo_op(name):
    model = models.get(name, abstract=True)
    program = partir.trace(model.fn, *model.args)
    ops = _prim_ops(program)
    assert ops
    for op in ops:
        _check_op(op)


@needs_strategies
@given(data=st.data())
def test_rules_fit_random_programs(data):
    prog = data.draw(strategies.programs(), label="program")
    program = partir.trace(prog.fn, *prog.example_args())
    note(str(program))
    for op in _prim_ops(program):
        _check_op(op)


# ------------------------------------------------------------------ exact rules

GATHER_DN = ir.Record(
    "GatherDimensionNumbers",
    (
        ("offset_dims", (2,)),
        ("collapsed_slice_dims", (0,)),
        ("start_index_map", (0,)),
        ("operand_batching_dims", ()),
        ("start_indices_batching_dims", ()),
    ),
)
SCATTER_DN = ir.Record(
    "ScatterDimensionNumbers",
    (
        ("update_window_dims", (2,)),
        ("inserted_window_dims", (0,)),
        ("scatter_dims_to_operand_dims", (0,)),
        ("operand_batching_dims", ()),
        ("scatter_indices_batching_dims", ()),
    ),
)
CONV_DN = ir.Record(
    "ConvDimensionNumbers",
    (("lhs_spec", (0, 3, 1, 2)), ("rhs_spec", (3, 2, 0, 1)), ("out_spec", (0, 3, 1, 2))),
)
CONV_PARAMS = dict(
    window_strides=(1, 1),
    padding=((1, 1), (1, 1)),
    lhs_dilation=(1, 1),
    rhs_dilation=(1, 1),
    dimension_numbers=CONV_DN,
)
MATMUL = (((1,), (0,)), ((), ()))

EXACT = [
    # reshape: gcd decomposition, major factors pass through splits and merges
    ("reshape", [(8, 4)], [(32,)], dict(new_sizes=(32,), dimensions=None), "ij->(ij) {i=8, j=4}"),
    ("reshape", [(32,)], [(4, 8)], dict(new_sizes=(4, 8), dimensions=None), "(ij)->ij {i=4, j=8}"),
    (
        "reshape", [(6, 4)], [(4, 6)], dict(new_sizes=(4, 6), dimensions=None),
        "(ij)k->(il)m {i=2, j=3, k=4, l=2, m=6} replicate={j,k,l,m}",
    ),
    ("reshape", [(8, 1, 4)], [(1, 32)], dict(new_sizes=(1, 32), dimensions=None), "i1j->1(ij) {i=8, j=4}"),
    ("reshape", [(1, 1)], [()], dict(new_sizes=(), dimensions=None), "11->_ {}"),
    ("reshape", [(12,)], [(2, 3, 2)], dict(new_sizes=(2, 3, 2), dimensions=None), "(ijk)->ijk {i=2, j=3, k=2}"),
    (
        "reshape", [(4, 6)], [(8, 3)], dict(new_sizes=(8, 3), dimensions=None),
        "i(jk)->(ij)k {i=4, j=2, k=3}",
    ),
    # dot_general and conv
    ("dot_general", [(8, 32), (32, 16)], [(8, 16)], dict(dimension_numbers=MATMUL), "ik,kj->ij {i=8, j=16, k=32} reduce={k}"),
    (
        "dot_general", [(2, 8, 4, 6), (2, 4, 6, 16)], [(2, 8, 16)],
        dict(dimension_numbers=(((2, 3), (1, 2)), ((0,), (0,)))),
        "ijlm,ilmk->ijk {i=2, j=8, k=16, l=4, m=6} reduce={l,m}",
    ),
    ("dot_general", [(1, 32), (32, 1)], [(1, 1)], dict(dimension_numbers=MATMUL), "1i,i1->11 {i=32} reduce={i}"),
    (
        "conv_general_dilated", [(8, 16, 16, 4), (3, 3, 4, 8)], [(8, 16, 16, 8)],
        dict(CONV_PARAMS, feature_group_count=1, batch_group_count=1),
        "ilok,mpkj->inqj {i=8, j=8, k=4, l=16, m=3, n=16, o=16, p=3, q=16} reduce={k} replicate={l,m,n,o,p,q}",
    ),
    (
        "conv_general_dilated", [(8, 16, 16, 4), (3, 3, 2, 8)], [(8, 16, 16, 8)],
        dict(CONV_PARAMS, feature_group_count=2, batch_group_count=1),
        "impk,nqlj->iorj {i=8, j=8, k=4, l=2, m=16, n=3, o=16, p=16, q=3, r=16} replicate={j,k,l,m,n,o,p,q,r}",
    ),
    # broadcast_in_dim
    ("broadcast_in_dim", [()], [(4, 8)], dict(shape=(4, 8), broadcast_dimensions=()), "_->ij {i=4, j=8}"),
    ("broadcast_in_dim", [(1, 8)], [(2, 4, 8)], dict(shape=(2, 4, 8), broadcast_dimensions=(1, 2)), "1k->ijk {i=2, j=4, k=8}"),
    ("broadcast_in_dim", [(64,)], [(16, 64)], dict(shape=(16, 64), broadcast_dimensions=(1,)), "j->ij {i=16, j=64}"),
    # gather / scatter-add of an embedding lookup (as traced from the gpt zoo model)
    (
        "gather", [(64, 32), ((8, 16, 1), "int32")], [(8, 16, 32)],
        dict(dimension_numbers=GATHER_DN, slice_sizes=(1, 32)),
        "kl,ij1->ijl {i=8, j=16, k=64, l=32} replicate={k}",
    ),
    (
        "gather", [(64, 32), ((8, 16, 1), "int32")], [(8, 16, 16)],
        dict(dimension_numbers=GATHER_DN, slice_sizes=(1, 16)),
        "kl,ij1->ijm {i=8, j=16, k=64, l=32, m=16} replicate={k,l,m}",
    ),
    (
        "scatter-add", [(64, 32), ((8, 16, 1), "int32"), (8, 16, 32)], [(64, 32)],
        dict(dimension_numbers=SCATTER_DN),
        "ij,kl1,klj->ij {i=64, j=32, k=8, l=16} reduce={k,l} replicate={i}",
    ),
    (
        "scatter", [(64, 32), ((8, 16, 1), "int32"), (8, 16, 32)], [(64, 32)],
        dict(dimension_numbers=SCATTER_DN),
        "ij,kl1,klj->ij {i=64, j=32, k=8, l=16} replicate={i,k,l}",
    ),
    # elementwise broadcasting, scalars and empty tensors
    ("add", [(16, 64), (1, 64)], [(16, 64)], {}, "ij,1j->ij {i=16, j=64}"),
    ("mul", [(), (4, 8)], [(4, 8)], {}, "_,ij->ij {i=4, j=8}"),
    ("exp", [(0, 4)], [(0, 4)], {}, "ij->ij {i=0, j=4}"),
    ("reduce_max", [(4, 8)], [(8,)], dict(axes=(0,)), "ij->j {i=4, j=8} reduce={i}:max"),
    ("top_k", [(8, 32, 8)], [(8, 32, 2), ((8, 32, 2), "int32")], dict(k=2, axis=2), "ijk->ijl,ijl {i=8, j=32, k=8, l=2} replicate={k,l}"),
]  # fmt: skip


@pytest.mark.parametrize(("primitive", "operands", "results", "params", "expected"), EXACT)
def test_rules_exact(primitive, operands, results, params, expected):
    op = _op(primitive, operands, results, **params)
    rule = get_rule(op)
    assert str(rule) == expected
    rule.check_shapes(*shapes(op))


def test_rule_reduce_factor_kinds():
    op = _op("dot_general", [(8, 32), (32, 16)], [(8, 16)], dimension_numbers=MATMUL)
    rule = get_rule(op)
    assert [rule.kind(f).value for f in rule.factors] == ["pass", "pass", "reduce"]
    assert rule.reduction == "sum"


def test_rule_notation_rank0_side_roundtrips():
    rule = get_rule(_op("neg", [()], [()]))
    assert OpRule.parse(str(rule)) == rule


# ------------------------------------------------------------------ unknown primitives


def test_rules_unknown_primitive_warns_once():
    name = f"not_a_primitive_{uuid.uuid4().hex[:8]}"
    op = _op(name, [(4,)], [(4,)])
    with pytest.warns(UserWarning, match=f"primitive '{name}' has no sharding rule"):
        assert get_rule(op) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_rule(op) is None


def test_rules_no_rule_primitive_is_silent():
    op = _op("rng_bit_generator", [((4,), "uint32")], [((4,), "uint32"), ((4, 8), "uint32")])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert get_rule(op) is None


# ------------------------------------------------------------------ soundness on local tiles


def _random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    dt = numpy_dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.issubdtype(dt, np.integer):
        return rng.integers(0, 6, shape).astype(dt)
    return rng.uniform(-1, 1, shape).astype(dt)


def _tile(x: Any, dims: tuple[tuple[str, ...], ...], rule: OpRule, f: str, r: int, n: int) -> Any:
    """Tile r of n of `x` along factor `f`: each dimension containing `f` is viewed as its
    factors (major first) and sliced along `f`."""
    for d, factors in enumerate(dims):
        if f not in factors:
            continue
        sizes = [rule.size(g) for g in factors]
        shape = list(x.shape)
        x = x.reshape(shape[:d] + sizes + shape[d + 1 :])
        step = rule.size(f) // n
        x = lax.slice_in_dim(x, r * step, (r + 1) * step, axis=d + factors.index(f))
        shape[d] //= n
        x = x.reshape(shape)
    return x


def _local_params(op: ir.PrimOp, params: dict, local_in: list, local_out: list) -> dict:
    """`params` with shape-valued entries resized to the local tiles (what lowering does)."""
    name, p = op.primitive_name, dict(params)
    if name in ("broadcast_in_dim", "iota"):
        p["shape"] = tuple(local_out[0])
    elif name == "reshape":
        p["new_sizes"] = tuple(local_out[0])
    elif name == "dynamic_slice":
        p["slice_sizes"] = tuple(local_out[0])
    elif name == "slice":
        full = shapes(op)[0][0]
        p["limit_indices"] = tuple(
            local if limit == size else limit
            for local, limit, size in zip(local_in[0], p["limit_indices"], full, strict=True)
        )
    elif name == "gather":
        full = shapes(op)[0][0]
        p["slice_sizes"] = tuple(
            local if s == size else s
            for local, s, size in zip(local_in[0], p["slice_sizes"], full, strict=True)
        )
    return p


def _bind(op: ir.PrimOp, params: dict, args: list) -> list:
    prim = lookup_primitive(op.primitive_name)
    out = prim.bind(*args, **params)
    return list(out) if prim.multiple_results else [out]


def _assert_tiles_agree(op: ir.PrimOp, n: int = 2) -> None:
    """For every pass or reduce factor divisible by `n`: the op run on the `n` local tiles
    gives the result's tiles (pass) or partial results combining to it (reduce)."""
    rule = get_rule(op)
    ins, outs = shapes(op)
    rng = np.random.default_rng(0)
    args = [
        _random_array(rng, s, ir.dtype_of(t)) for s, t in zip(ins, op.operand_types, strict=True)
    ]
    params = decode_params(op)
    if op.primitive_name == "scatter":
        params["update_jaxpr"] = None
    for f in rule.factors:
        kind = rule.kind(f)
        if kind is FactorKind.REPLICATE or rule.size(f) % n:
            continue
        if kind is FactorKind.REDUCE:  # operands lacking f must be the reduction identity
            identity = {"sum": 0, "max": -np.inf, "min": np.inf}[rule.reduction]
            args_f = [
                x if not s or any(f in dims for dims in t) else np.full(s, identity, x.dtype)
                for x, s, t in zip(args, ins, rule.operands, strict=True)
            ]
        else:
            assert any(f in dims for t in rule.results for dims in t), (
                f"pass factor {f} in no result"
            )
            args_f = args
        expected = _bind(op, params, args_f)
        local_out = [
            [s // n if f in dims else s for s, dims in zip(shape, t, strict=True)]
            for shape, t in zip(outs, rule.results, strict=True)
        ]
        tiles = []
        for r in range(n):
            local = [_tile(x, t, rule, f, r, n) for x, t in zip(args_f, rule.operands, strict=True)]
            lp = _local_params(op, params, [x.shape for x in local], local_out)
            tiles.append(_bind(op, lp, local))
        for j, t in enumerate(rule.results):
            if kind is FactorKind.PASS:
                for r in range(n):
                    want = np.asarray(_tile(np.asarray(expected[j]), t, rule, f, r, n))
                    np.testing.assert_allclose(
                        tiles[r][j], want, rtol=1e-5, atol=1e-5, err_msg=f"{rule} {f}"
                    )
            else:
                combine = {"sum": np.add, "max": np.maximum, "min": np.minimum}[rule.reduction]
                got = combine.reduce([np.asarray(tile[j]) for tile in tiles])
                np.testing.assert_allclose(
                    got, expected[j], rtol=1e-5, atol=1e-5, err_msg=f"{rule} {f}"
                )


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def _i32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.int32)


NHWC = ("NHWC", "HWIO", "NHWC")
TILED = {
    "gather_rows": (lambda a, i: a[i], _f32(10, 8), _i32(4, 3)),
    "gather_batched": (lambda a, i: jnp.take_along_axis(a, i, axis=1), _f32(4, 8), _i32(4, 6)),
    "scatter_set": (lambda a, i, u: a.at[i].set(u), _f32(10, 8), _i32(4), _f32(4, 8)),
    "scatter_add": (lambda a, i, u: a.at[i].add(u), _f32(10, 8), _i32(4, 2), _f32(4, 2, 8)),
    "scatter_add_batched": (
        lambda a, i, u: jnp.put_along_axis(a, i, u, axis=1, inplace=False, mode="promise_in_bounds"),
        _f32(4, 8), _i32(4, 2), _f32(4, 2),
    ),
    "conv": (lambda a, w: lax.conv_general_dilated(a, w, (1, 1), "SAME", dimension_numbers=NHWC), _f32(4, 8, 8, 4), _f32(3, 3, 4, 6)),
    "conv_grouped": (
        lambda a, w: lax.conv_general_dilated(a, w, (1, 1), "SAME", feature_group_count=2, dimension_numbers=NHWC),
        _f32(4, 8, 8, 4), _f32(3, 3, 2, 6),
    ),
    "pool_and_grad": (
        lambda a: jax.grad(lambda a: lax.reduce_window(a, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID").sum())(a),
        _f32(2, 4, 4, 2),
    ),
    "reshapes": (lambda a: (a.reshape(32), a.reshape(2, 16), a.reshape(4, 2, 4), a.reshape(1, 32, 1)), _f32(8, 4)),
    "reshape_non_aligned": (lambda a: a.reshape(4, 6, 5), _f32(6, 4, 5)),
    "reductions": (lambda a: (jnp.sum(a, 0), jnp.max(a, 1), jnp.min(a), jnp.argmax(a, 0), jnp.cumsum(a, 1)), _f32(4, 6)),
    "einsum": (lambda a, b: jnp.einsum("bij,bjk->bik", a, b), _f32(2, 4, 6), _f32(2, 6, 8)),
    "shapes": (
        lambda a: (a[1:3, :], lax.pad(a, 0.0, ((0, 0, 0), (1, 1, 0))), jnp.concatenate([a, a], 1), a.T, a[:, None, :1] + jnp.zeros((4, 2, 6))),
        _f32(4, 6),
    ),
    "dynamic": (lambda a, u, i: (lax.dynamic_slice(a, (i, 0), (2, 6)), lax.dynamic_update_slice(a, u, (i, 0))), _f32(4, 6), _f32(2, 6), _i32()),
    "sort_top_k": (lambda a: (lax.sort(a, dimension=1), lax.top_k(a, 2)), _f32(4, 6)),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(TILED))
def test_rules_tiles_agree_with_jax(case):
    fn, *args = TILED[case]
    ops = _prim_ops(partir.trace(fn, *args))
    for op in ops:
        if get_rule(op) is not None:
            _assert_tiles_agree(op)
