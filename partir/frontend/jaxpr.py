"""jaxpr -> partir IR.

Each equation becomes a `partir.prim` op; `scan`, `while`, `cond` and `remat2` keep
their sub-programs as regions; nested `jit`, `closed_call` and custom-derivative calls
are inlined (the program is already differentiated, so their rules are not needed).
The user's own sharding code stays visible: `with_sharding_constraint` / `reshard` become
identity ``sharding_constraint`` ops and a `jax.shard_map` one ``shard_map`` op whose
body is kept whole; the API seeds the plan with them (`partir.frontend.constraints`).
Literals and closed-over constants become exact `partir.constant` ops, and every op
carries the user's source line as its location.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from xdsl.dialects import func
from xdsl.dialects.builtin import (
    ArrayAttr,
    CallSiteLoc,
    DictionaryAttr,
    FileLineColLoc,
    IntAttr,
    NameLoc,
    StringAttr,
)
from xdsl.ir import Attribute, Block, Operation, Region, SSAValue

from partir import ir
from partir.backend import jax_compat as jcore
from partir.backend.primitives import register_primitive
from partir.frontend import random as keys
from partir.frontend.encode import encode_params
from partir.ir.constants import encode_array
from partir.ir.locations import location_text
from partir.ir.paths import escape_key
from partir.utils.gc import gc_paused

INLINED: dict[str, str] = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
"""Call-like primitives whose body is inlined, and the parameter holding it."""

_REGION_PARAMS: dict[str, tuple[str, ...]] = {
    "scan": ("jaxpr",),
    "while": ("cond_jaxpr", "body_jaxpr"),
    "cond": ("branches",),
    "remat2": ("jaxpr",),
}

USER_SHARDING = frozenset({"sharding_constraint", "reshard"})
"""The user's sharding code: one identity ``sharding_constraint`` op each, seeded by the API."""

_KEY_PRIMITIVES = frozenset(
    {"random_wrap", "random_unwrap", "iota_2x32_shape", *keys.EXPANDED, *keys.IDENTITY}
)
"""Primitives on PRNG keys, converted by `_Converter.key_op`."""


def _tensor_type(aval: Any) -> Attribute:
    """The IR type of a jaxpr value; a PRNG key array is a tensor of `ir.types.KeyType`."""
    if jcore.is_key_dtype(aval.dtype):
        return ir.tensor_type(tuple(aval.shape), keys.key_dtype_name(aval))
    if jcore.is_float0(aval.dtype):
        raise ir.UnsupportedDtypeError(
            f"partir cannot represent a value of type {aval}: float0 is the tangent type of "
            "an integer or boolean input (jax.grad(..., allow_int=True) makes it) and holds "
            "no data. Leave it out of the partitioned function's inputs and outputs (drop "
            "the integer leaves from what you differentiate, or filter float0 leaves out)."
        )
    try:
        return ir.tensor_type(tuple(aval.shape), np.dtype(aval.dtype).name)
    except (TypeError, ir.UnsupportedDtypeError) as e:
        raise ir.UnsupportedDtypeError(
            f"partir cannot represent a value of type {aval}: {e}. Convert it to one of "
            "the supported dtypes before partitioning."
        ) from None


def _result_types(eqn: jcore.JaxprEqn) -> list[Attribute]:
    """The IR types of an equation's results; an error names the equation's source line."""
    try:
        return [_tensor_type(v.aval) for v in eqn.outvars]
    except ir.UnsupportedDtypeError as e:
        where = jcore.summarize_source(eqn.source_info)
        raise ir.UnsupportedDtypeError(f"{e} (made by {eqn.primitive.name} at {where})") from None


_PARTIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_OWN_CODE_IN_PARTIR = (os.path.join(_PARTIR, "testing") + os.sep,)
_CELL = re.compile(r"^<ipython-input-(\d+)-[0-9a-f]+>$")


@functools.cache
def is_library_file(path: str) -> bool:
    """Whether a source file is a library's rather than the user's: anything installed
    (site-packages, dist-packages: optax, flax, equinox, haiku, ...) and partir itself,
    except the model zoo in `partir.testing`, which stands for user code."""
    parts = path.replace("\\", "/").split("/")
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    full = os.path.abspath(path)
    return full.startswith(_PARTIR) and not full.startswith(_OWN_CODE_IN_PARTIR)


def notebook_cell(path: str) -> str | None:
    """``In [3]`` for the file IPython or a Jupyter kernel compiled cell 3 into, else None."""
    match = _CELL.match(path)
    if match:
        return f"In [{match.group(1)}]"
    if "ipykernel_" not in path:
        return None
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None  # type: ignore[attr-defined]
    number = getattr(getattr(shell, "compile", None), "_filename_map", {}).get(path)
    return f"In [{number}]" if number is not None else None


class _Converter:
    """Builds IR for one jaxpr at a time, threading values through an environment."""

    def __init__(self) -> None:
        self.locations: dict[Any, Attribute | None] = {}
        self.cwd = os.getcwd() + os.sep
        # key value <-> its data, where one was made from the other: unwrap(wrap(x)) is x
        self.key_data: dict[SSAValue, SSAValue] = {}
        self.data_key: dict[SSAValue, SSAValue] = {}
        # while converting a key primitive's expansion: the location all its ops take
        self.pinned: list[Attribute | None] = []

    def location(self, eqn: jcore.JaxprEqn, fallback: Attribute | None) -> Attribute | None:
        if self.pinned:  # partir's own frames would otherwise pass for user code
            return self.pinned[-1]
        traceback = jcore.traceback_of(eqn.source_info)
        if traceback in self.locations:
            return self.locations[traceback] or fallback
        own, library = jcore.user_frames(traceback, is_library_file)
        loc: Attribute | None = None
        if own is not None:
            loc = self.frame_loc(own)
            if library is not None:
                # MLIR's call-site form: the library code (optax's update, flax's
                # attention) called at the user's line, which stays the location people see
                loc = CallSiteLoc(self.frame_loc(library), loc)
        self.locations[traceback] = loc
        return loc or fallback

    def frame_loc(self, frame: tuple[str, int, int, str]) -> NameLoc:
        """``fn("file":line:col)`` for one frame: the user's files relative to the working
        directory, a library's from its package (no site-packages prefix), notebook cells
        as ``In [3]``."""
        file, line, col, fn = frame
        file = notebook_cell(file) or file
        norm = file.replace("\\", "/")
        for marker in ("/site-packages/", "/dist-packages/"):
            if marker in norm:
                file = norm.rsplit(marker, 1)[1]
                break
        if os.path.isabs(file) and file.startswith(self.cwd):
            file = os.path.relpath(file, self.cwd)
        return NameLoc(
            StringAttr(fn.rpartition(".")[2]),
            FileLineColLoc(StringAttr(file), IntAttr(int(line)), IntAttr(int(col))),
        )

    def constant(
        self, value: Any, aval: Any, ops: list[Operation], cache: dict[Any, SSAValue]
    ) -> SSAValue:
        if jcore.is_key_dtype(aval.dtype):
            # a closed-over key array: its uint32 data as a constant, wrapped again
            data = keys.key_constant_data(value)
            data_type = ir.tensor_type(data.shape, "uint32")
            const = ir.ConstantOp(encode_array(data, "uint32"), data_type)  # type: ignore[arg-type]
            ops.append(const)
            return self.wrap(const.result, _tensor_type(aval), ops, None)
        dtype = np.dtype(aval.dtype).name
        array = np.asarray(value, dtype=aval.dtype)
        key = (dtype, array.shape, array.tobytes()) if array.size <= 16 else None
        if key is not None and key in cache:
            return cache[key]
        op = ir.ConstantOp(encode_array(array, dtype), _tensor_type(aval))  # type: ignore[arg-type]
        ops.append(op)
        if key is not None:
            cache[key] = op.result
        return op.result

    def convert(
        self,
        jaxpr: jcore.Jaxpr,
        consts: Sequence[Any],
        args: Sequence[SSAValue],
        ops: list[Operation],
        literals: dict[Any, SSAValue],
        fallback_loc: Attribute | None = None,
    ) -> list[SSAValue]:
        """Append the IR of `jaxpr` applied to `args` to `ops`; return its outputs."""
        env: dict[jcore.Var, SSAValue] = {}
        for var, value in zip(jaxpr.constvars, consts, strict=True):
            env[var] = self.constant(value, var.aval, ops, literals)
        for var, value in zip(jaxpr.invars, args, strict=True):
            env[var] = value

        def read(atom: Any) -> SSAValue:
            if isinstance(atom, jcore.Literal):
                return self.constant(atom.val, atom.aval, ops, literals)
            return env[atom]

        for eqn in jaxpr.eqns:
            name = eqn.primitive.name
            loc = self.location(eqn, fallback_loc)
            invals = [read(v) for v in eqn.invars]
            if name in INLINED:
                sub = eqn.params[INLINED[name]]
                sub_jaxpr, sub_consts = (
                    (sub.jaxpr, sub.consts) if isinstance(sub, jcore.ClosedJaxpr) else (sub, ())
                )
                outs = self.convert(sub_jaxpr, sub_consts, invals, ops, literals, loc)
            elif name in _REGION_PARAMS:
                outs = self.region_op(eqn, invals, ops, loc)
            elif name in _KEY_PRIMITIVES:
                outs = self.key_op(eqn, invals, ops, literals, loc)
            else:
                # One op per equation. The user's own sharding code is one op too, with
                # plain parameters the API turns into seeds (`partir.frontend.constraints`):
                # a shard_map region (its body kept whole) or an identity constraint.
                prim = "sharding_constraint" if name in USER_SHARDING else name
                if name != "shard_map" and name not in USER_SHARDING:
                    register_primitive(eqn.primitive)
                params = encode_params(name, eqn.params)
                if name == "shard_map":
                    params += (("collectives", self.region_collectives(eqn, loc)),)
                op = ir.PrimOp(prim, invals, _result_types(eqn), params, loc)
                ops.append(op)
                outs = list(op.outs)
            for var, value in zip(eqn.outvars, outs, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = value
        return [read(v) for v in jaxpr.outvars]

    def region_collectives(self, eqn: jcore.JaxprEqn, loc: Attribute | None) -> tuple[Any, ...]:
        """A `jax.shard_map` region's own collectives, for `plan.collectives()` (the body
        stays JAX's): per buffer ``(kind, axes, dtype, per-device shape, source line)``."""
        return tuple(
            (kind, axes, np.dtype(aval.dtype).name, tuple(aval.shape), location_text(where))
            for kind, axes, aval, body_eqn in jcore.region_collectives(eqn.params["jaxpr"])
            for where in (self.location(body_eqn, loc),)
        )

    def wrap(
        self, data: SSAValue, key_type: Attribute, ops: list[Operation], loc: Attribute | None
    ) -> SSAValue:
        """The key array whose data is `data` (a `random_wrap`, unless `data` was unwrapped)."""
        if data in self.data_key:
            return self.data_key[data]
        op = ir.PrimOp(
            "random_wrap", [data], [key_type], keys.impl_param(ir.dtype_of(key_type)), loc
        )
        ops.append(op)
        self.key_data[op.outs[0]] = data
        self.data_key[data] = op.outs[0]
        return op.outs[0]

    def unwrap(self, key: SSAValue, ops: list[Operation], loc: Attribute | None) -> SSAValue:
        """The data of a key array (a `random_unwrap`, unless `key` was wrapped here)."""
        if key in self.key_data:
            return self.key_data[key]
        op = ir.PrimOp("random_unwrap", [key], [keys.key_data_type(key.type)], (), loc)
        ops.append(op)
        self.key_data[key] = op.outs[0]
        self.data_key[op.outs[0]] = key
        return op.outs[0]

    def key_op(
        self,
        eqn: jcore.JaxprEqn,
        invals: list[SSAValue],
        ops: list[Operation],
        literals: dict[Any, SSAValue],
        loc: Attribute | None,
    ) -> list[SSAValue]:
        """A key primitive on key data (see `partir.frontend.random`)."""
        name = eqn.primitive.name
        if name == "random_wrap":
            return [self.wrap(invals[0], _result_types(eqn)[0], ops, loc)]
        if name == "random_unwrap":
            return [self.unwrap(invals[0], ops, loc)]
        if name in keys.IDENTITY:
            return list(invals)
        if name == "iota_2x32_shape":
            shape = tuple(eqn.params["shape"])
            if not keys.has_local_counters(shape):  # kept: replicated, see the rules
                register_primitive(eqn.primitive)
                op = ir.PrimOp(name, [], _result_types(eqn), encode_params(name, eqn.params), loc)
                ops.append(op)
                return list(op.outs)
            counters = keys.counters_jaxpr(shape)
            return self.expansion(counters, [], ops, literals, loc)
        result_types = _result_types(eqn)  # an unsupported key impl fails here
        in_avals = [v.aval for v in eqn.invars]
        args = list(invals)
        if name != "random_seed":
            keys.key_dtype_name(in_avals[0])
            args[0] = self.unwrap(invals[0], ops, loc)
        closed = keys.physical_jaxpr(name, dict(eqn.params), in_avals)
        outs = self.expansion(closed, args, ops, literals, loc)
        if name in keys.KEY_RESULTS:
            return [self.wrap(outs[0], result_types[0], ops, loc)]
        return outs

    def expansion(
        self,
        closed: Any,
        args: list[SSAValue],
        ops: list[Operation],
        literals: dict[Any, SSAValue],
        loc: Attribute | None,
    ) -> list[SSAValue]:
        """Convert partir's own jaxpr for one user equation; its ops take that one's `loc`."""
        self.pinned.append(loc)
        try:
            return self.convert(closed.jaxpr, closed.consts, args, ops, literals, loc)
        finally:
            self.pinned.pop()

    def region(self, closed: Any, loc: Attribute | None) -> Region:
        """A single-block region holding a (closed) jaxpr, its inputs as block arguments."""
        jaxpr, consts = (
            (closed.jaxpr, closed.consts) if isinstance(closed, jcore.ClosedJaxpr) else (closed, ())
        )
        block = Block(arg_types=[_tensor_type(v.aval) for v in jaxpr.invars])
        body: list[Operation] = []
        outs = self.convert(jaxpr, consts, block.args, body, {}, loc)
        body.append(ir.YieldOp(outs))
        block.add_ops(body)
        return Region(block)

    def region_op(
        self,
        eqn: jcore.JaxprEqn,
        invals: list[SSAValue],
        ops: list[Operation],
        loc: Attribute | None,
    ) -> list[SSAValue]:
        name = eqn.primitive.name
        keys = _REGION_PARAMS[name]
        bodies: list[Any] = []
        for key in keys:
            value = eqn.params[key]
            bodies.extend(value if isinstance(value, tuple | list) else [value])
        regions = [self.region(b, loc) for b in bodies]
        op = ir.REGION_OPS[name](
            invals,
            _result_types(eqn),
            regions,
            encode_params(name, eqn.params, skip=frozenset(keys)),
            loc,
        )
        ops.append(op)
        return list(op.outs)


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def argument_paths(
    fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[list[str], Any]:
    """The `/`-joined path of every input leaf, starting with the argument's name.

    A `/` or `\\` inside a key is escaped (`partir.ir.paths`), so distinct leaves always get
    distinct paths."""
    import inspect

    import jax

    try:
        positional = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        positional = []
    leaves, tree = jax.tree_util.tree_flatten_with_path((args, kwargs))
    paths = []
    for keypath, _ in leaves:
        where, first, *rest = keypath
        if _key_name(where) == "0":
            i = int(_key_name(first))
            head = positional[i] if i < len(positional) else f"args/{i}"
        else:
            head = escape_key(_key_name(first))
        paths.append("/".join([head, *(escape_key(_key_name(k)) for k in rest)]))
    return paths, tree


def output_paths(out_shape: Any) -> tuple[list[str], Any]:
    """The path of every output leaf, starting with ``out``."""
    import jax

    leaves, tree = jax.tree_util.tree_flatten_with_path(out_shape)
    paths = ["/".join(["out", *(escape_key(_key_name(k)) for k in kp)]) for kp, _ in leaves]
    return paths, tree


def _path_attrs(paths: Sequence[str]) -> ArrayAttr[DictionaryAttr]:
    return ArrayAttr([DictionaryAttr({"partir.path": StringAttr(p)}) for p in paths])


def jaxpr_to_module(
    closed: jcore.ClosedJaxpr, name: str, in_paths: Sequence[str], out_paths: Sequence[str]
):
    """Build the partir module of a closed jaxpr: one `func.func` named `name`."""
    with gc_paused():
        return _build_module(closed, name, in_paths, out_paths)


def _erase_unused_key_casts(block: Block) -> None:
    """Drop `random_wrap`/`random_unwrap` ops nobody uses: a key primitive's expansion
    reads the data its operand was wrapped from, which leaves the user's cast unused."""
    casts = [
        op
        for op in block.walk()
        if isinstance(op, ir.PrimOp) and op.primitive_name in ("random_wrap", "random_unwrap")
    ]
    for op in reversed(casts):  # users after producers: erase the later casts first
        if not any(result.uses for result in op.results):
            op.detach()
            op.erase()


def _input_type(aval: Any, path: str) -> Attribute:
    """The IR type of an input leaf; an unsupported one is named by its argument path."""
    try:
        return _tensor_type(aval)
    except ir.UnsupportedDtypeError as e:
        raise ir.UnsupportedDtypeError(f"input {path!r}: {e}") from None


def _build_module(
    closed: jcore.ClosedJaxpr, name: str, in_paths: Sequence[str], out_paths: Sequence[str]
):
    from xdsl.dialects.builtin import ModuleOp

    jaxpr = closed.jaxpr
    in_types = [_input_type(v.aval, path) for v, path in zip(jaxpr.invars, in_paths, strict=True)]
    out_types = [_tensor_type(v.aval) for v in jaxpr.outvars]
    block = Block(arg_types=in_types)
    ops: list[Operation] = []
    outs = _Converter().convert(jaxpr, closed.consts, block.args, ops, {})
    ops.append(func.ReturnOp(*outs))
    block.add_ops(ops)
    _erase_unused_key_casts(block)
    fn = func.FuncOp(
        name,
        (in_types, out_types),
        Region(block),
        arg_attrs=_path_attrs(in_paths),
        res_attrs=_path_attrs(out_paths),
    )
    return ModuleOp([fn])
