"""partir IR -> a JAX callable that binds each primitive again, inside `jax.jit`."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp
from xdsl.ir import Block, Operation, Region

from partir import ir
from partir.backend import jax_compat
from partir.backend.known import KNOWN_ENUMS, KNOWN_RECORDS, SCATTER_COMBINERS, numpy_dtype
from partir.backend.primitives import lookup_primitive, register_primitive
from partir.errors import UnsupportedPrimitiveError

# The frontend writes `random_wrap`/`random_unwrap` ops of its own (PRNG keys, see
# partir/frontend/random.py); registered here so parsed text runs in a fresh process too.
for _prim in jax_compat.random_primitives():
    register_primitive(_prim)


def decode_value(value: Any, where: str) -> Any:
    """One IR parameter value back as the JAX object the primitive expects."""
    if isinstance(value, tuple):
        return tuple(decode_value(v, where) for v in value)
    if isinstance(value, ir.Dtype):
        return numpy_dtype(value.name)
    if isinstance(value, ir.TensorSpec):
        return jax_compat.shaped_array(value.shape, numpy_dtype(value.dtype))
    if isinstance(value, ir.EnumValue):
        return getattr(KNOWN_ENUMS[value.kind], value.member)
    if isinstance(value, ir.Record):
        cls = KNOWN_RECORDS[value.kind]
        return cls(**{k: decode_value(v, where) for k, v in value.fields})
    if isinstance(value, ir.Opaque):
        try:
            return ir.OPAQUE_VALUES[value.ref]
        except KeyError:
            raise UnsupportedPrimitiveError(
                f"{where} has a parameter elided from the text ({value.note}); it can run only "
                "in the process that traced it. Trace the function again instead of parsing its text."
            ) from None
    return value


def decode_params(op: ir.PrimOp | ir.RegionPrimOp) -> dict[str, Any]:
    """The keyword parameters to bind `op`'s primitive with."""
    where = f"primitive {op.primitive_name!r}"
    rebuilt = op.primitive_name in SCATTER_COMBINERS
    params = {
        k: decode_value(v, where)
        for k, v in op.params.items()
        if not (rebuilt and k == "update_jaxpr")
    }
    if rebuilt:
        dtype = ir.dtype_of(op.operand_types[0])
        scalar = jax.ShapeDtypeStruct((), numpy_dtype(dtype))
        combiner = jax.make_jaxpr(SCATTER_COMBINERS[op.primitive_name])(scalar, scalar)
        params["update_jaxpr"] = combiner.jaxpr
    return params


def constant_value(op: ir.ConstantOp) -> np.ndarray:
    """The numpy array a constant op holds."""
    dtype = numpy_dtype(op.dtype)
    if op.dtype == "bfloat16":
        array = np.frombuffer(op.value.data, dtype="<u2").view(dtype)
    else:
        array = np.frombuffer(op.value.data, dtype=dtype.newbyteorder("<")).astype(dtype)
    return array.reshape(op.shape)


def _bind(op: ir.PrimOp, args: list[Any]) -> list[Any]:
    # parameters first: an elided parameter is the more useful error than an unknown name
    params = decode_params(op)
    try:
        prim = lookup_primitive(op.primitive_name)
    except KeyError:
        raise UnsupportedPrimitiveError(
            f"primitive {op.primitive_name!r} is not known in this process (it is not in "
            "jax.extend.core.primitives and no traced program used it). Trace a function that "
            "uses it first, or register it with partir.backend.primitives.register_primitive."
        ) from None
    out = prim.bind(*args, **params)
    return list(out) if prim.multiple_results else [out]


def _scan(op: ir.ScanOp, args: list[Any]) -> list[Any]:
    p = dict(op.params.items())
    n_consts, n_carry = p["num_consts"], p["num_carry"]
    consts, init, xs = (
        args[:n_consts],
        args[n_consts : n_consts + n_carry],
        args[n_consts + n_carry :],
    )
    region = op.bodies[0]

    def step(carry: list[Any], x: list[Any]) -> list[Any]:
        return evaluate_region(region, [*consts, *carry, *x])

    vma = _carry_variance(
        lambda c: step(c, [a[0] for a in xs])[:n_carry] if xs else step(c, [])[:n_carry],
        init,
        args,
    )
    init = [jax_compat.vary_over(c, axes) for c, axes in zip(init, vma, strict=True)]

    def body(carry: list[Any], x: list[Any]) -> tuple[list[Any], list[Any]]:
        outs = step(carry, x)
        new = [jax_compat.vary_over(c, axes) for c, axes in zip(outs[:n_carry], vma, strict=True)]
        return new, outs[n_carry:]

    carry, ys = jax.lax.scan(
        body, init, xs, length=p["length"], reverse=p["reverse"], unroll=p.get("unroll", 1)
    )
    return [*carry, *ys]


def _carry_variance(
    step: Callable[[list[Any]], list[Any]], init: list[Any], operands: list[Any]
) -> list[frozenset[str]]:
    """The manual axes each loop carry must vary over so that one iteration returns carries
    of the types it was given (inside spmd mode's `shard_map`; all empty outside it).

    A carry that starts the same on every device (a broadcast constant) but that the body
    makes differ (it mixes in a sharded operand) must be marked varying from the start;
    marking is free, and the fixed point is reached within one pass per mesh axis."""
    vma = [jax_compat.varying_axes(c) for c in init]
    if not any(jax_compat.varying_axes(x) for x in operands):
        return vma  # nothing varies (outside shard_map): no types to reconcile
    while True:
        outs = jax.eval_shape(
            lambda *c, vma=vma: step(
                [jax_compat.vary_over(x, a) for x, a in zip(c, vma, strict=True)]
            ),
            *init,
        )
        grown = [a | jax_compat.varying_axes(o) for a, o in zip(vma, outs, strict=True)]
        if grown == vma:
            return vma
        vma = grown


def _while(op: ir.WhileOp, args: list[Any]) -> list[Any]:
    p = dict(op.params.items())
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts, init = args[:nc], args[nc : nc + nb], args[nc + nb :]
    cond_region, body_region = op.bodies

    def step(c: list[Any]) -> list[Any]:
        return evaluate_region(body_region, [*body_consts, *c])

    vma = _carry_variance(step, list(init), list(args))
    return jax.lax.while_loop(
        lambda c: evaluate_region(cond_region, [*cond_consts, *c])[0],
        lambda c: [jax_compat.vary_over(x, a) for x, a in zip(step(c), vma, strict=True)],
        [jax_compat.vary_over(x, a) for x, a in zip(init, vma, strict=True)],
    )


def _cond(op: ir.CondOp, args: list[Any]) -> list[Any]:
    index, operands = args[0], args[1:]
    branches = [(lambda *xs, r=region: evaluate_region(r, list(xs))) for region in op.bodies]
    if not any(jax_compat.varying_axes(x) for x in args):
        return jax.lax.switch(index, branches, *operands)
    # inside spmd mode's shard_map every branch must return the same types, manual-axis
    # variance included: each result varies over what it varies over in any branch
    shapes = [jax.eval_shape(b, *operands) for b in branches]
    vma = [
        frozenset().union(*(jax_compat.varying_axes(s[k]) for s in shapes))
        for k in range(len(shapes[0]))
    ]

    def unified(branch: Callable[..., list[Any]]) -> Callable[..., list[Any]]:
        return lambda *xs: [
            jax_compat.vary_over(x, a) for x, a in zip(branch(*xs), vma, strict=True)
        ]

    return jax.lax.switch(index, [unified(b) for b in branches], *operands)


def _remat(op: ir.RematOp, args: list[Any]) -> list[Any]:
    p = dict(op.params.items())
    policy = decode_value(p.get("policy"), "remat2")
    region = op.bodies[0]
    # bound again with its own `differentiated` flag: `jax.checkpoint` would drop it, and
    # with it the optimization barrier XLA needs to keep the recomputation
    return jax_compat.bind_checkpoint(
        lambda *xs: evaluate_region(region, list(xs)),
        list(args),
        prevent_cse=p.get("prevent_cse", True),
        differentiated=p.get("differentiated", False),
        policy=policy,
    )


_REGION_EVALUATORS: dict[type, Callable[[Any, list[Any]], list[Any]]] = {
    ir.ScanOp: _scan,
    ir.WhileOp: _while,
    ir.CondOp: _cond,
    ir.RematOp: _remat,
}


def evaluate_op(
    op: Operation,
    args: list[Any],
    run_block: Callable[[Block, Sequence[Any]], list[Any]] | None = None,
) -> list[Any]:
    """Run one op on JAX values; `run_block` evaluates region bodies (default: plainly)."""
    if isinstance(op, ir.PrimOp):
        if op.primitive_name == "sharding_constraint":
            # the user's constraint is a seed of the plan, whose own constraints (annotate)
            # or shard_map layouts (spmd) carry the layout: here it is the identity
            return list(args)
        if op.primitive_name == "shard_map":  # the user's own region, on global values
            return jax_compat.bind_shard_map(decode_params(op), list(args))
        return _bind(op, args)
    if isinstance(op, ir.ConstantOp):
        return [constant_value(op)]
    if isinstance(op, ir.RegionPrimOp):
        token = _RUN_BLOCK.set(run_block or evaluate_block)
        try:
            return _REGION_EVALUATORS[type(op)](op, args)
        finally:
            _RUN_BLOCK.reset(token)
    raise UnsupportedPrimitiveError(f"cannot evaluate op {op.name} in the global view")


def evaluate_block(block: Block, args: Sequence[Any]) -> list[Any]:
    """Run a block's ops on `args` (JAX values); return what its terminator returns."""
    env: dict[Any, Any] = dict(zip(block.args, args, strict=True))
    for op in block.ops:
        if isinstance(op, ir.YieldOp | func.ReturnOp):
            return [env[v] for v in op.operands]
        outs = evaluate_op(op, [env[v] for v in op.operands])
        for result, value in zip(op.results, outs, strict=True):
            env[result] = value
    raise ValueError("block has no terminator")


_RUN_BLOCK: contextvars.ContextVar[Callable[[Block, Sequence[Any]], list[Any]]] = (
    contextvars.ContextVar("partir_run_block")
)


def evaluate_region(region: Region, args: Sequence[Any]) -> list[Any]:
    """Run a single-block region on `args` (with the evaluator of the enclosing op)."""
    return _RUN_BLOCK.get(evaluate_block)(region.block, list(args))


def module_function(module: ModuleOp) -> func.FuncOp:
    """The program's entry function (the module's first `func.func`)."""
    for op in module.ops:
        if isinstance(op, func.FuncOp):
            return op
    raise ValueError("module has no func.func")


def to_flat_callable(module: ModuleOp) -> Callable[..., list[Any]]:
    """A jitted callable on the flat list of input leaves, returning the flat outputs."""
    block = module_function(module).body.block

    def run(*leaves: Any) -> list[Any]:
        return evaluate_block(block, leaves)

    return jax.jit(run)
