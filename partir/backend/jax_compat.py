"""Every access partir makes to JAX's version-sensitive surface, in one place.

partir reads jaxprs (primitive names and parameters) and binds primitives again, which ties
it to parts of JAX that change between minor versions. Each function here names what it
depends on, so moving to a new JAX means reading this module, not the whole tree. The rest
of partir uses only JAX's stable public API (`jax.jit`, `jax.lax`, `jax.sharding`,
`jax.shard_map`, `jax.tree_util`).

Tested range: `SUPPORTED` (the `test-oldest` make target runs the fast subset on its lower
end). Importing partir with a JAX outside it warns once. XLA's compiled-program text,
which also moves with JAX, is read in one place too: `partir/backend/hlo.py`.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
from jax.extend import core as jcore
from jax.extend import source_info_util

SUPPORTED = ("0.11.1", "0.13")
"""The JAX versions partir is tested with: at least the first, below the second."""

PRIMITIVES_SINCE: dict[str, str] = {
    "log2": "0.12.0",
    "one_minus_square": "0.12.0",  # the derivative of tanh, asin, acos, atanh
    "polynomial": "0.12.0",
}
"""Primitives new within the supported range, and the first JAX that has them. Their rules
and costs are registered on every version; older JAX never produces them."""

# jax.extend.core: the jaxpr data structures the frontend walks.
Jaxpr = jcore.Jaxpr
ClosedJaxpr = jcore.ClosedJaxpr
JaxprEqn = jcore.JaxprEqn
Literal = jcore.Literal
DropVar = jcore.DropVar
Var = jcore.Var
Primitive = jcore.Primitive


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def is_older_than(version: str, than: str) -> bool:
    """Whether release `version` comes before release `than` (``0.11.1`` < ``0.12.0``)."""
    return _release(version) < _release(than)


def version_warning(version: str | None = None) -> str | None:
    """The warning to give for JAX `version` (default: the installed one), or None in range."""
    version = version or jax.__version__
    low, high = SUPPORTED
    if _release(low) <= _release(version) < _release(high):
        return None
    return (
        f"partir is tested with jax>={low},<{high}; this is jax {version}. Primitive "
        "parameters and compiled-program formats may differ: install a jax in that range "
        f"(pip install 'jax>={low},<{high}') or report what breaks."
    )


def check_version() -> None:
    """Warn (once, at import) when the installed JAX is outside the tested range."""
    message = version_warning()
    if message is not None:
        warnings.warn(message, stacklevel=3)


def is_float0(dtype: Any) -> bool:
    """Whether `dtype` is `jax.dtypes.float0`, the data-less tangent of integer inputs."""
    return dtype == jax.dtypes.float0


def public_primitives() -> list[Any]:
    """Every `Primitive` that `jax.extend.core.primitives` exports."""
    module = jcore.primitives
    return [p for p in (getattr(module, a) for a in dir(module)) if isinstance(p, jcore.Primitive)]


def summarize_source(source_info: Any) -> str:
    """An equation's innermost user frame as ``file:line:col (function)``.

    Depends on `jax.extend.source_info_util.summarize` and its text format."""
    return source_info_util.summarize(source_info)


def traceback_of(source_info: Any) -> Any:
    """The (hashable) traceback an equation was traced under, or None."""
    return source_info.traceback


def user_frames(traceback: Any, is_library: Any) -> tuple[Any, Any]:
    """``(own, library)``: the innermost frame outside JAX for which `is_library(file)` is
    false, and the innermost frame outside JAX (the library one, when it differs; else None).
    Each is ``(file, line, column, function)`` or None.

    Depends on `Traceback.raw_frames()` and `source_info_util.is_user_filename` (JAX's own
    rule for which files are JAX's), which `summarize` uses too."""
    from jax._src import source_info_util as internal

    if traceback is None:
        return None, None
    codes, lastis = traceback.raw_frames()
    library = None
    for code, lasti in zip(codes, lastis, strict=True):
        if not internal.is_user_filename(code.co_filename):
            continue
        line, column, _, _ = traceback.code_addr2location(code, lasti)
        frame = (code.co_filename, line, column, code.co_qualname)
        if not is_library(code.co_filename):
            return frame, library
        library = library or frame
    return None, library


def shaped_array(shape: tuple[int, ...], dtype: Any) -> Any:
    """A `ShapedArray` (`jax.core.ShapedArray`), as `TensorSpec` parameters decode to."""
    return jax.core.ShapedArray(shape, dtype)


def is_shaped_array(value: Any) -> bool:
    """Whether a primitive parameter is a `ShapedArray`."""
    return isinstance(value, jax.core.ShapedArray)


_LAYOUT_PARAMS = ("sharding", "out_sharding")
"""Primitive parameters that hold the layout of the op's result (None: JAX decides)."""


def canonical_params(primitive: str, params: dict[str, Any]) -> dict[str, Any]:
    """A primitive's parameters in the version-independent form the IR stores.

    `scan` (jax >= 0.11): the operand and result grouping is a pair of `FlatTree`s,
    `ft_in` = (consts, carry, xs) and `ft_out` = (carry, ys). The IR keeps the counts
    `num_consts` and `num_carry` instead (jax <= 0.10's own parameters), so rules, passes
    and printed programs do not depend on JAX's internal tree type. The backend rebuilds the
    loop with `jax.lax.scan`, which needs only those counts.

    `sharding_constraint` and `reshard` (the user's own layouts): `user_sharding_params`;
    `shard_map` (a region of the user's own): `shard_map_params`.
    Any other primitive's result layout (``sharding``, ``out_sharding``) is dropped.
    """
    if primitive in ("sharding_constraint", "reshard"):
        return user_sharding_params(primitive, params)
    if primitive == "shard_map":
        return shard_map_params(params)
    if any(isinstance(params.get(k), jax.sharding.Sharding) for k in _LAYOUT_PARAMS):
        # an op's own result layout (`broadcast_in_dim[sharding=...]`, the zeros JAX's AD
        # makes; `dot_general[out_sharding=...]`): the plan decides layouts, and a mesh
        # other than the partitioning one cannot be bound inside spmd mode's shard_map
        params = {k: None if k in _LAYOUT_PARAMS else v for k, v in params.items()}
    if primitive == "scan" and "ft_in" in params:
        consts, carry, _ = params["ft_in"].unpack()
        out = {}
        for key, value in params.items():
            if key == "ft_in":
                out["num_consts"] = len(consts)
                out["num_carry"] = len(carry)
            elif key != "ft_out":
                out[key] = value
        return out
    return params


def user_sharding_params(primitive: str, params: dict[str, Any]) -> dict[str, Any]:
    """A user's `with_sharding_constraint` (``sharding_constraint``) or `reshard` as plain
    values: ``kind`` (which of the two), ``spec`` (per dimension, the tuple of mesh axis
    names tiling it, major to minor; ``None`` for a dimension left to XLA,
    `PartitionSpec.UNCONSTRAINED`), ``mesh`` (the ``(name, size)`` pairs of the mesh the
    sharding names) and ``sharding`` (the class name of a sharding that is not a
    `NamedSharding`: nothing to map, ``spec`` and ``mesh`` are empty).

    Depends on `sharding_constraint`'s ``sharding`` and ``unconstrained_dims`` parameters
    and `reshard`'s ``dst_sharding`` (jax >= 0.6), and `NamedSharding.spec` / ``.mesh``.
    """
    sharding = params.get("sharding", params.get("dst_sharding"))
    kind = "reshard" if primitive == "reshard" else "with_sharding_constraint"
    if not isinstance(sharding, jax.sharding.NamedSharding):
        return {"kind": kind, "spec": (), "mesh": (), "sharding": type(sharding).__name__}
    unconstrained = set(params.get("unconstrained_dims", ()) or ())
    spec: list[tuple[str, ...] | None] = []
    for d, entry in enumerate(sharding.spec):
        if d in unconstrained or entry is jax.sharding.PartitionSpec.UNCONSTRAINED:
            spec.append(None)
        elif entry is None:
            spec.append(())
        else:
            spec.append(tuple(str(a) for a in (entry if isinstance(entry, tuple) else (entry,))))
    for d in sorted(unconstrained):
        spec.extend([()] * (d + 1 - len(spec)))
        spec[d] = None
    mesh = sharding.mesh
    pairs = tuple((str(n), int(s)) for n, s in zip(mesh.axis_names, mesh.axis_sizes, strict=True))
    return {"kind": kind, "spec": tuple(spec), "mesh": pairs, "sharding": "NamedSharding"}


def _spec_dims(spec: Any) -> tuple[tuple[str, ...], ...]:
    out = []
    for entry in spec:
        axes = () if entry is None else entry if isinstance(entry, tuple) else (entry,)
        out.append(tuple(str(a) for a in axes))
    return tuple(out)


def shard_map_params(params: dict[str, Any]) -> dict[str, Any]:
    """A `jax.shard_map` region as plain values plus its body: ``axes`` (the ``(name,
    size)`` pairs of its mesh), ``manual`` (the axes it makes manual), ``in_specs`` and
    ``out_specs`` (per operand / result, per dimension, the axes tiling it), ``check_vma``,
    and, kept by reference, ``mesh`` and ``jaxpr`` (the body, in the per-device view).

    Depends on `shard_map`'s parameters ``mesh``, ``in_specs``, ``out_specs``,
    ``check_vma``, ``newly_manual_axes`` and ``jaxpr`` (jax >= 0.7)."""
    mesh = params["mesh"]
    return {
        "axes": tuple(
            (str(n), int(s)) for n, s in zip(mesh.axis_names, mesh.axis_sizes, strict=True)
        ),
        "manual": tuple(sorted(str(a) for a in params.get("newly_manual_axes", mesh.axis_names))),
        "in_specs": tuple(_spec_dims(s) for s in params["in_specs"]),
        "out_specs": tuple(_spec_dims(s) for s in params["out_specs"]),
        "check_vma": bool(params.get("check_vma", True)),
        "mesh": mesh,
        "jaxpr": params["jaxpr"],
    }


REGION_COLLECTIVES = {
    "psum": "all_reduce",
    "psum_invariant": "all_reduce",
    "pmax": "all_reduce",
    "pmin": "all_reduce",
    "all_gather": "all_gather",
    "all_gather_invariant": "all_gather",
    "reduce_scatter": "reduce_scatter",
    "ppermute": "collective_permute",
    "all_to_all": "all_to_all",
}
"""The collective primitives of a `jax.shard_map` body (jax 0.12: ``psum`` is
``psum_invariant`` under ``check_vma``; ``psum_scatter`` binds ``reduce_scatter``), and the
kind of collective each is."""


def region_collectives(body: Any) -> list[tuple[str, tuple[str, ...], Any, Any]]:
    """The collectives a `jax.shard_map` body runs, nested loops and branches included (a
    loop body's once, as `plan.collectives()` lists loops): per result buffer, ``(kind,
    axes, aval, eqn)``, the aval per device and the equation for its source line.

    Depends on the ``axes`` parameter of ``psum``/``pmax``/``pmin`` and ``axis_name`` of
    the others (a name or a tuple of names)."""
    jaxpr = body.jaxpr if isinstance(body, ClosedJaxpr) else body
    found: list[tuple[str, tuple[str, ...], Any, Any]] = []
    for eqn in jaxpr.eqns:
        kind = REGION_COLLECTIVES.get(eqn.primitive.name)
        if kind is not None:
            names = eqn.params.get("axes", eqn.params.get("axis_name", ()))
            names = names if isinstance(names, tuple | list) else (names,)
            # positional (int) axes are vmap's, not the mesh's: no communication
            axes = tuple(str(a) for a in names if isinstance(a, str))
            if axes:
                found += [(kind, axes, v.aval, eqn) for v in eqn.outvars]
            continue
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                if isinstance(sub, ClosedJaxpr | Jaxpr):
                    found += region_collectives(sub)
    return found


def _partition_spec(dims: Any) -> Any:
    return jax.sharding.PartitionSpec(
        *(None if not axes else axes[0] if len(axes) == 1 else tuple(axes) for axes in dims)
    )


def bind_shard_map(params: dict[str, Any], args: list[Any]) -> list[Any]:
    """A `shard_map` region again, on global values (`shard_map_params`' parameters)."""
    body = params["jaxpr"]
    jaxpr, consts = (body.jaxpr, body.consts) if isinstance(body, ClosedJaxpr) else (body, ())

    def local(*xs: Any) -> list[Any]:
        return list(jax.core.eval_jaxpr(jaxpr, consts, *xs))

    mapped = jax.shard_map(
        local,
        mesh=params["mesh"],
        in_specs=tuple(_partition_spec(s) for s in params["in_specs"]),
        out_specs=[_partition_spec(s) for s in params["out_specs"]],
        axis_names=set(params["manual"]),
        check_vma=params["check_vma"],
    )
    return list(mapped(*args))


def eval_jaxpr_with(body: Any, args: list[Any], prepare: Any) -> list[Any]:
    """Evaluate a (closed) jaxpr equation by equation, passing each equation's operands
    through `prepare` first (spmd mode matches their manual-axis variance there).

    Depends on `Primitive.get_bind_params` and `jax.core.Literal`, as `jax.core.eval_jaxpr`."""
    jaxpr, consts = (body.jaxpr, body.consts) if isinstance(body, ClosedJaxpr) else (body, ())
    env: dict[Any, Any] = dict(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))

    def read(atom: Any) -> Any:
        return atom.val if isinstance(atom, Literal) else env[atom]

    for eqn in jaxpr.eqns:
        operands = prepare([read(v) for v in eqn.invars])
        if eqn.primitive.name == "pvary":
            # the body was typed on the user's mesh, where an input of a replicated spec is
            # invariant; here it may already vary over those axes, and marking a value
            # varying twice is an error, so only the missing axes are added
            outs = [vary_over(x, tuple(eqn.params["axes"])) for x in operands]
            env.update((v, x) for v, x in zip(eqn.outvars, outs, strict=True))
            continue
        # `get_bind_params` gives the parameters alone on jax >= 0.12, (subfuns, params) before
        got = eqn.primitive.get_bind_params(eqn.params)
        subfuns, bind_params = got if isinstance(got, tuple) else ([], got)
        outs = eqn.primitive.bind(*subfuns, *operands, **bind_params)
        outs = outs if eqn.primitive.multiple_results else [outs]
        for var, value in zip(eqn.outvars, outs, strict=True):
            if not isinstance(var, DropVar):
                env[var] = value
    return [read(v) for v in jaxpr.outvars]


def vary_over(x: Any, axes: Any) -> Any:
    """`x` marked varying over `axes` as well (inside `jax.shard_map`; a no-op for axes it
    already varies over, and outside, where `axes` is empty)."""
    missing = tuple(sorted(a for a in axes if a not in varying_axes(x)))
    return jax.lax.pcast(x, missing, to="varying") if missing else x


def bind_checkpoint(
    fn: Any, args: list[Any], *, prevent_cse: bool, differentiated: bool, policy: Any
) -> list[Any]:
    """`fn(*args)` as one `remat2` equation with exactly these parameters.

    `jax.checkpoint` always binds ``differentiated=False``, but the optimization barrier
    that keeps XLA from undoing a rematerialisation is emitted only for the
    ``differentiated=True`` region `jax.grad` leaves in the backward pass. Re-binding the
    primitive keeps the program's barriers. Depends on `remat_p` (public in
    `jax.extend.core.primitives`) taking an open `Jaxpr` whose constants are its leading
    inputs, and on `partial_eval.convert_constvars_jaxpr` to make one.
    """
    from jax._src.interpreters import partial_eval

    closed = jax.make_jaxpr(lambda *xs: list(fn(*xs)))(*args)
    jaxpr = partial_eval.convert_constvars_jaxpr(closed.jaxpr)
    return list(
        jcore.primitives.remat_p.bind(
            *closed.consts,
            *args,
            jaxpr=jaxpr,
            prevent_cse=prevent_cse,
            differentiated=differentiated,
            policy=policy,
        )
    )


def is_tracer(value: Any) -> bool:
    """Whether `value` is a tracer of an enclosing transform (`jax.core.Tracer`): it has an
    abstract value but no data or placement to read."""
    return isinstance(value, jax.core.Tracer)


def use_abstract_mesh(mesh: Any) -> Any:
    """A context manager making `mesh` the context (abstract) mesh, also inside `jax.jit`
    (where `jax.set_mesh` is refused): `jax.sharding.use_abstract_mesh`."""
    return jax.sharding.use_abstract_mesh(mesh)


def varying_axes(value: Any) -> frozenset[str]:
    """The manual mesh axes a value inside `jax.shard_map` varies over (empty outside).

    Depends on the aval's `manual_axis_type.varying` (jax >= 0.10's `check_vma` typing)."""
    manual = getattr(jax.typeof(value), "manual_axis_type", None)
    return frozenset(manual.varying) if manual is not None else frozenset()


# ---------------------------------------------------------------------------------------
# PRNG keys (partir/frontend/jaxpr.py, partir/backend/evaluate.py): what partir reads of
# JAX's key arrays. A key array's dtype is a `jax._src.random.prng.KeyTy` whose `_impl` is
# the `PRNGImpl`; the `random_*_impl_base` functions are the physical implementations JAX's
# own lowering runs (`mlir.lower_fun` of the same `iterated_vmap_*` of the impl's
# functions), so tracing them gives exactly the computation XLA runs for the primitive.
# ---------------------------------------------------------------------------------------


def _prng() -> Any:
    from jax._src.random import prng

    return prng


def is_key_dtype(dtype: Any) -> bool:
    """Whether `dtype` is a PRNG key dtype (``key<fry>``, ``key<rbg>``, ...)."""
    try:
        return bool(jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key))
    except TypeError:
        return False


def key_impl(dtype: Any) -> Any:
    """The `PRNGImpl` of a key dtype (its ``.tag``, ``.name`` and ``.key_shape``)."""
    return dtype._impl


def is_prng_impl(value: Any) -> bool:
    """Whether a primitive parameter is a `PRNGImpl` (`random_wrap`'s and `random_seed`'s)."""
    return isinstance(value, _prng().PRNGImpl)


def prng_impls() -> dict[str, Any]:
    """Every registered `PRNGImpl` by name (``threefry2x32``, ``rbg``, ...)."""
    return dict(_prng().prngs)


def random_primitives() -> list[Any]:
    """The key primitives `jax.extend.core.primitives` does not export: `random_wrap`,
    `random_unwrap` and `iota_2x32_shape` (so IR parsed in a fresh process can run)."""
    prng = _prng()
    return [prng.random_wrap_p, prng.random_unwrap_p, prng.iota_2x32_shape_p]


def physical_random_fn(primitive: str, params: dict[str, Any], in_avals: list[Any]) -> Any:
    """The function of key *data* that `primitive` computes, as JAX's lowering runs it.

    `random_bits`, `random_split`, `random_fold_in` take the key data (``uint32[..., 2]``)
    in place of the key array and return bits, key data or key data; `random_seed` takes
    the seeds and returns key data. Raises KeyError for any other primitive.
    """
    prng = _prng()
    key = in_avals[0]
    if primitive == "random_seed":
        return lambda seeds: prng.random_seed_impl_base(seeds, impl=params["impl"])
    impl, ndim = key_impl(key.dtype), len(key.shape)
    if primitive == "random_bits":
        return lambda data: prng.random_bits_impl_base(
            impl, data, ndim, bit_width=params["bit_width"], shape=params["shape"]
        )
    if primitive == "random_split":
        return lambda data: prng.random_split_impl_base(impl, data, ndim, shape=params["shape"])
    if primitive == "random_fold_in":
        shape = tuple(key.shape)
        return lambda data, msgs: prng.random_fold_in_impl_base(impl, data, msgs, shape)
    raise KeyError(primitive)


def threefry_partitionable() -> bool:
    """The value of ``jax_threefry_partitionable`` (True by default since jax 0.5)."""
    return bool(jax.config.jax_threefry_partitionable)


# ---------------------------------------------------------------------------------------
# Explicit meshes (partir/backend/annotate.py): the sharding in a value's type and the error
# JAX raises when an op's result sharding under `AxisType.Explicit` axes is ambiguous.
# ---------------------------------------------------------------------------------------


def typed_spec(value: Any) -> Any:
    """The `PartitionSpec` in `value`'s type (sharding-in-types: set for values on a mesh
    with Explicit axes), or None when its type carries no `NamedSharding`.

    Depends on the aval's ``sharding`` attribute (jax >= 0.5)."""
    sharding = getattr(jax.typeof(value), "sharding", None)
    spec = getattr(sharding, "spec", None)
    return spec if isinstance(spec, jax.sharding.PartitionSpec) else None


def is_sharding_type_error(error: BaseException) -> bool:
    """Whether `error` is JAX's `ShardingTypeError` (an op whose result sharding is ambiguous
    or needs a collective under Explicit axes). Read by name: the class lives in
    ``jax._src.core`` (jax 0.12), which partir does not import."""
    return any(c.__name__ == "ShardingTypeError" for c in type(error).__mro__)


# ---------------------------------------------------------------------------------------
# Whether XLA compiled (partir/plan/check.py): JAX's compilation caches (in memory, and on disk
# with jax_compilation_cache_dir) skip XLA's compiler, and with it the log check_compiled reads.
# ---------------------------------------------------------------------------------------

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
_seen = {"compiles": 0, "hits": 0}
_listening: list[bool] = []


def _count_hit(event: str, **kwargs: Any) -> None:
    if event == _CACHE_HIT_EVENT:
        _seen["hits"] += 1


def _count_compile(event: str, duration_secs: float, **kwargs: Any) -> None:
    if event == _COMPILE_EVENT:
        _seen["compiles"] += 1


def compile_by_xla(lowered: Any) -> tuple[Any, bool]:
    """``lowered.compile()``, and whether XLA compiled it just now: False when one of JAX's
    compilation caches (in memory, or on disk with ``jax_compilation_cache_dir``) had it.

    Reads `jax.monitoring`'s backend-compile and ``/jax/compilation_cache/cache_hits``
    events (jax >= 0.4.26)."""
    if not _listening:
        jax.monitoring.register_event_listener(_count_hit)
        jax.monitoring.register_event_duration_secs_listener(_count_compile)
        _listening.append(True)
    before = dict(_seen)
    compiled = lowered.compile()
    compiled_now = _seen["compiles"] > before["compiles"] and _seen["hits"] == before["hits"]
    return compiled, compiled_now


def trace_context() -> Any:
    """What besides the arguments decides a trace (JAX's config, its context mesh): the
    key `jax.jit` caches traces under. None where this JAX has no such function, and then
    nothing is cached on it."""
    from jax._src import config

    get = getattr(config, "trace_context", None)
    try:
        return get() if get is not None else None
    except Exception:  # an internal API: any failure means "do not cache"
        return None
