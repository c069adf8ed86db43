"""Shared plumbing of the model zoo (`partir.testing.models`): the `Model` record, the registry,
the optimizer, parameter initialisation and the layers the models are built from.

Import the public names from `partir.testing.models`; the model builders live in
`_mlp_models`, `_transformer_models` and `_unet_models`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

LEARNING_RATE = 1e-3
"""Learning rate of the `optax.adamw` optimizer every model uses."""

WEIGHT_DECAY = 0.01
"""Weight decay of the `optax.adamw` optimizer every model uses."""


@dataclasses.dataclass(frozen=True)
class Model:
    """One zoo entry, ready to run: ``fn(*args)``.

    Attributes:
      name: the registry name (``"gpt"``, ...).
      fn: the training step ``(params, opt_state, batch) -> (new_params, new_opt_state, loss)``,
        pure and not jitted; a model that draws random numbers (``gpt`` with ``dropout > 0``)
        takes a PRNG key too: ``(params, opt_state, batch, key)``.
      args: ``(params, opt_state, batch)`` (and ``key``, a `jax.random.key`, where ``fn``
        takes one): real jax arrays, or `jax.ShapeDtypeStruct` leaves when the model was
        built with ``abstract=True``.
      config: the frozen config dataclass the model was built from.
    """

    name: str
    fn: Callable
    args: tuple
    config: Any


MODELS: dict[str, Callable[..., Model]] = {}
"""Registry: model name -> builder ``(*, abstract=False, seed=0, **overrides) -> Model``."""


def register_model(name: str) -> Callable[[Callable[..., Model]], Callable[..., Model]]:
    """Decorator that registers a model builder in `MODELS` under ``name``.

    Args:
      name: the registry name; registering the same name twice raises `ValueError`.

    Returns:
      A decorator that stores the builder and returns it unchanged. A builder takes keyword
      arguments ``abstract`` (bool), ``seed`` (int) and config-field overrides, and returns a
      `Model`.
    """

    def decorator(builder: Callable[..., Model]) -> Callable[..., Model]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = builder
        return builder

    return decorator


def get(name: str, *, abstract: bool = False, seed: int = 0, **overrides: Any) -> Model:
    """Builds the zoo model ``name``.

    Args:
      name: a key of `MODELS`.
      abstract: if True, ``args`` holds `jax.ShapeDtypeStruct` leaves computed with
        `jax.eval_shape`: nothing is allocated, so huge configs are fine.
      seed: seed of the `jax.random` key that initialises params and draws the batch.
      **overrides: config fields to replace, e.g. ``layers=32``. An unknown field raises
        `TypeError` naming it and the valid fields.

    Returns:
      The `Model`.
    """
    if name not in MODELS:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    return MODELS[name](abstract=abstract, seed=seed, **overrides)


WARM_STEPS = 10
"""The example optimizer state is that of a run `WARM_STEPS` steps in (see `warm_state`)."""
WARM_NU = 1e-4
"""Second-moment estimate of the example optimizer state (about a 1e-2 gradient scale)."""


def make_optimizer() -> optax.GradientTransformation:
    """Returns the optimizer every model uses: ``optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)``."""
    return optax.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)


def warm_state(opt_state: Any) -> Any:
    """An AdamW state as it stands mid-training rather than at step 0.

    At step 0 the update is lr * g / (|g| + eps): a gradient that sums to near eps turns
    the float reassociation of a partitioned batch sum into an update difference of up to
    lr * 1e-10 / eps, so partitioned and unpartitioned steps disagree far beyond float
    rounding. Mid-training the second moment is far above eps^2 and the update is
    linear in g; the examples start there (`WARM_STEPS`, `WARM_NU`).
    """

    def warm(state: Any) -> Any:
        if isinstance(state, optax.ScaleByAdamState):
            return state._replace(
                count=jnp.full_like(state.count, WARM_STEPS),
                nu=jax.tree.map(lambda v: jnp.full_like(v, WARM_NU), state.nu),
            )
        return state

    return jax.tree.map(warm, opt_state, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))


# ----------------------------------------------------------------------------------------------
# Shared plumbing


def _make_config(cls: type, overrides: dict[str, Any]) -> Any:
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(overrides) - set(valid))
    if unknown:
        raise TypeError(
            f"unknown {cls.__name__} field(s) {', '.join(map(repr, unknown))}; "
            f"valid fields: {', '.join(valid)}"
        )
    return cls(**overrides)


@dataclasses.dataclass(frozen=True)
class _Init:
    """A leaf to fill: kind "normal" (arg * N(0, 1)), "fill" (constant arg) or "int" ([0, arg))."""

    shape: tuple[int, ...]
    dtype: Any
    kind: str
    arg: float


def _normal(shape: tuple[int, ...], scale: float, dtype: Any) -> _Init:
    return _Init(tuple(shape), jnp.dtype(dtype), "normal", scale)


def _const(shape: tuple[int, ...], fill: float, dtype: Any) -> _Init:
    return _Init(tuple(shape), jnp.dtype(dtype), "fill", fill)


def _materialize(spec: Any, seed: int) -> Any:
    # All normals come from ONE jax.random draw (and all ints from one more), sliced on the host:
    # compiling a threefry per leaf costs seconds on CPU; this costs one small compile per size.
    leaves, treedef = jax.tree.flatten(spec)
    total = {k: sum(math.prod(x.shape) for x in leaves if x.kind == k) for k in ("normal", "int")}
    normal_key, int_key = jax.random.split(jax.random.key(seed))
    pool = {
        "normal": np.asarray(jax.random.normal(normal_key, (total["normal"],), jnp.float32)),
        "int": np.asarray(jax.random.bits(int_key, (total["int"],), jnp.uint32)),
    }
    offset, out = {"normal": 0, "int": 0}, []
    for leaf in leaves:
        if leaf.kind == "fill":
            out.append(np.full(leaf.shape, leaf.arg, leaf.dtype))
            continue
        start, offset[leaf.kind] = offset[leaf.kind], offset[leaf.kind] + math.prod(leaf.shape)
        value = pool[leaf.kind][start : offset[leaf.kind]].reshape(leaf.shape)
        value = value * np.float32(leaf.arg) if leaf.kind == "normal" else value % leaf.arg
        out.append(value.astype(leaf.dtype))
    return jax.tree.unflatten(treedef, out)


def _stack(*xs: Any) -> Any:
    # numpy on the concrete path (no per-shape compile), jnp under jax.eval_shape
    return np.stack(xs) if isinstance(xs[0], np.ndarray) else jnp.stack(xs)


def _build(
    name: str,
    config: Any,
    *,
    abstract: bool,
    seed: int,
    spec: tuple[Any, Any],
    loss_fn: Callable[..., jax.Array],
    post: Callable[[tuple[Any, Any]], tuple[Any, Any]] = lambda args: args,
    takes_key: bool = False,
) -> Model:
    # spec: (params, batch) pytrees of _Init leaves; post rearranges them (e.g. stacks layers).
    # takes_key: the step takes a PRNG key after the batch, passed on as loss_fn's 4th arg.
    optimizer = make_optimizer()
    if abstract:
        shapes = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype), spec)
        params, batch = jax.eval_shape(post, shapes)
        opt_state = jax.eval_shape(lambda p: warm_state(optimizer.init(p)), params)
        key = jax.eval_shape(lambda: _step_key(seed))
    else:
        params, batch = jax.device_put(post(_materialize(spec, seed)))
        opt_state = warm_state(optimizer.init(params))
        key = _step_key(seed)

    def train_step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, config)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt_state, loss

    def random_train_step(params, opt_state, batch, key):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch, config, key)
        updates, new_opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), new_opt_state, loss

    step = random_train_step if takes_key else train_step
    step.__name__ = step.__qualname__ = f"{name}_train_step"
    step.__doc__ = (
        f"One adamw training step of the {name!r} model ({config}).\n\n"
        f"Args: params, opt_state, batch{', key' if takes_key else ''} (as in `Model.args`).\n"
        "Returns: (new_params, new_opt_state, loss), loss of the input params."
    )
    args = (params, opt_state, batch, key) if takes_key else (params, opt_state, batch)
    return Model(name=name, fn=step, args=args, config=config)


def _step_key(seed: int) -> jax.Array:
    # the step's own key (dropout), apart from the keys _materialize draws the inputs with
    return jax.random.fold_in(jax.random.key(seed), 1)


def _dtype(config: Any) -> jnp.dtype:
    return jnp.dtype(config.dtype)


def _gelu(x: jax.Array) -> jax.Array:
    # tanh approximation, written out so the jaxpr holds only plain primitives
    return 0.5 * x * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    e = jnp.exp(x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True)))
    return e / jnp.sum(e, axis=axis, keepdims=True)


def _log_softmax(x: jax.Array, axis: int = -1) -> jax.Array:
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def _one_hot(indices: jax.Array, n: int, dtype: Any) -> jax.Array:
    return (indices[..., None] == jnp.arange(n, dtype=indices.dtype)).astype(dtype)


def _ln_init(d: int, dtype: Any) -> dict[str, _Init]:
    return {"scale": _const((d,), 1.0, dtype), "bias": _const((d,), 0.0, dtype)}


def _layer_norm(x: jax.Array, p: dict[str, jax.Array], eps: float = 1e-5) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * p["scale"] + p["bias"]


def _mse(pred: jax.Array, target: jax.Array) -> jax.Array:
    return jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)))
