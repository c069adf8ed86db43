"""How a partitioned function is called: static and donated arguments, and input placement.

`jax.jit`'s argument options, resolved once per `Partitioned` (`ArgSpec`), and the per-call
work in front of the jitted program: splitting off static arguments (part of the plan's
key, never traced), mapping donated arguments to flat leaf indices, and moving each input
leaf to the sharding the plan wants (`place_leaf`), which keeps one compilation per plan.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import NamedSharding

from partir.backend import jax_compat
from partir.errors import AbstractInputError, ProgramError
from partir.frontend.encode import is_hashable

MSG_ABSTRACT_CALL = (
    "{what} was called with a jax.ShapeDtypeStruct at {path} ({shape}): running needs "
    "arrays. To plan from shapes alone, call .plan(...) with the same arguments (then "
    "print, explain, simulate or lower the plan); to run, pass arrays (plan.place(...) "
    "moves host or single-device data to the planned shardings)."
)


def is_concrete(x: Any) -> bool:
    """Whether `x` is an array with data on devices (not a tracer of an enclosing
    `jax.jit`, `jax.grad`, `jax.vmap` or `lax.scan`)."""
    return isinstance(x, jax.Array) and not jax_compat.is_tracer(x)


def place_leaf(x: Any, sharding: NamedSharding, path: str, what: str) -> Any:
    """`x` on `sharding`: host data and arrays laid out otherwise are `device_put` there.

    An uncommitted array (made without naming a device, as `jnp.ones` does) is moved too:
    `jax.jit` caches uncommitted and committed inputs apart, so without the move a
    training loop that feeds a step its own (committed) outputs compiles twice. Tracers
    pass through: the jitted program's `in_shardings` constrain them.
    """
    try:  # the per-call fast path: an array already placed (a loop's own outputs)
        if x.committed and x.sharding == sharding:
            return x
    except (AttributeError, jax.errors.ConcretizationTypeError):
        pass  # host data, a Python scalar, a ShapeDtypeStruct or a tracer: see below
    if isinstance(x, jax.ShapeDtypeStruct):
        raise AbstractInputError(
            MSG_ABSTRACT_CALL.format(what=what, path=path, shape=f"{x.dtype}{list(x.shape)}")
        )
    if isinstance(x, np.ndarray | np.generic):
        return jax.device_put(x, sharding)
    if not is_concrete(x):
        return x  # a tracer, or a Python scalar (jit makes it a weakly typed constant input)
    if x.committed and x.sharding == sharding:
        return x
    return jax.device_put(x, sharding)


def _positional_names(fn: Callable[..., Any]) -> list[str]:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _as_tuple(value: int | str | Iterable[Any] | None) -> tuple[Any, ...]:
    if value is None:
        return ()
    if isinstance(value, int | str):
        return (value,)
    return tuple(value)


def _resolve(
    fn: Callable[..., Any], nums: Any, names: Any, option: str
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Argument numbers and names of one option, each completed from the other through
    `fn`'s signature (as `jax.jit` does)."""
    argnums, argnames = _as_tuple(nums), _as_tuple(names)
    for n in argnums:
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ProgramError(
                f"partir.partition({option}_argnums={nums!r}): expected non-negative ints "
                f"(positions of {getattr(fn, '__name__', 'the function')}'s arguments)."
            )
    for n in argnames:
        if not isinstance(n, str):
            raise ProgramError(
                f"partir.partition({option}_argnames={names!r}): expected argument names (str)."
            )
    positional = _positional_names(fn)
    nums_out = set(argnums) | {positional.index(n) for n in argnames if n in positional}
    names_out = set(argnames) | {positional[i] for i in argnums if i < len(positional)}
    return tuple(sorted(nums_out)), tuple(sorted(names_out))


@dataclass(frozen=True)
class ArgSpec:
    """`jax.jit`'s argument options of a `Partitioned`, resolved against its function."""

    static_argnums: tuple[int, ...] = ()
    """Positional arguments that are not traced: Python values that select a plan."""
    static_argnames: tuple[str, ...] = ()
    """Keyword arguments that are not traced."""
    donate_argnums: tuple[int, ...] = ()
    """Positional arguments whose buffers the program may reuse for its outputs."""
    donate_argnames: tuple[str, ...] = ()
    """Keyword arguments whose buffers the program may reuse."""

    @classmethod
    def build(
        cls,
        fn: Callable[..., Any],
        static_argnums: Any = None,
        static_argnames: Any = None,
        donate_argnums: Any = None,
        donate_argnames: Any = None,
    ) -> ArgSpec:
        """Resolve the options as `jax.jit` does: numbers and names complete each other."""
        snums, snames = _resolve(fn, static_argnums, static_argnames, "static")
        dnums, dnames = _resolve(fn, donate_argnums, donate_argnames, "donate")
        positional = _positional_names(fn)
        both = {positional[i] if i < len(positional) else f"#{i}" for i in set(snums) & set(dnums)}
        both |= set(snames) & set(dnames)
        if both:
            raise ProgramError(
                f"partir.partition: argument(s) {', '.join(sorted(both))} are both static and "
                "donated. A static argument is a Python value, not a buffer: drop it from "
                "donate_argnums/donate_argnames."
            )
        return cls(snums, snames, dnums, dnames)

    @property
    def has_static(self) -> bool:
        """Whether any argument is static."""
        return bool(self.static_argnums or self.static_argnames)

    def split(
        self, fn_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any], tuple[Any, ...]]:
        """(traced args, traced kwargs, static key): the static key holds the static
        values by position and name, and is part of the plan's cache key."""
        if not self.has_static:
            return args, kwargs, ()
        dyn_args = tuple(a for i, a in enumerate(args) if i not in self.static_argnums)
        dyn_kwargs = {k: v for k, v in kwargs.items() if k not in self.static_argnames}
        key = tuple(
            [("arg", i, args[i]) for i in self.static_argnums if i < len(args)]
            + [("kwarg", k, kwargs[k]) for k in sorted(kwargs) if k in self.static_argnames]
        )
        try:
            hash(key)
        except TypeError:
            bad = [
                f"{'argument ' + str(where) if kind == 'arg' else where}: {type(v).__name__}"
                for kind, where, v in key
                if not is_hashable(v)
            ]
            raise ProgramError(
                f"{fn_name}: static arguments must be hashable, as in jax.jit; got "
                + ", ".join(bad)
                + ". Pass a tuple instead of a list, a frozen dataclass instead of a dict, "
                "or make the argument a traced array."
            ) from None
        return dyn_args, dyn_kwargs, key

    def bind(self, fn: Callable[..., Any], static_key: tuple[Any, ...]) -> Callable[..., Any]:
        """`fn` with the static values put back: it takes the traced arguments only, and its
        signature lists only them (so input paths keep the argument names)."""
        if not static_key:
            return fn
        by_pos = {where: v for kind, where, v in static_key if kind == "arg"}
        by_name = {where: v for kind, where, v in static_key if kind == "kwarg"}

        def bound(*dyn_args: Any, **dyn_kwargs: Any) -> Any:
            rest = iter(dyn_args)
            count = len(dyn_args) + len(by_pos)
            args = [by_pos[i] if i in by_pos else next(rest) for i in range(count)]
            return fn(*args, **dyn_kwargs, **by_name)

        bound.__name__ = getattr(fn, "__name__", "main")
        try:
            sig = inspect.signature(fn)
        except (TypeError, ValueError):
            return bound
        params = list(sig.parameters.values())
        kept = [
            p
            for i, p in enumerate(params)
            if not (p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and i in by_pos)
            and p.name not in by_name
        ]
        bound.__signature__ = sig.replace(parameters=kept)  # type: ignore[attr-defined]
        return bound

    def donated_leaves(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[int, ...]:
        """Flat leaf indices (over the traced ``(args, kwargs)``) of the donated arguments.

        Static arguments are removed from `args` before this is asked, so positional
        numbers are shifted down past them."""
        if not (self.donate_argnums or self.donate_argnames):
            return ()
        shift = {i: i - sum(1 for s in self.static_argnums if s < i) for i in self.donate_argnums}
        donated_pos = set(shift.values())
        leaves = jax.tree_util.tree_flatten_with_path((args, kwargs))[0]
        out = []
        for index, (keypath, _) in enumerate(leaves):
            group, key = keypath[0], keypath[1]
            if getattr(group, "idx", None) == 0 and getattr(key, "idx", None) in donated_pos:
                out.append(index)
            elif getattr(group, "idx", None) == 1 and getattr(key, "key", None) in (
                self.donate_argnames
            ):
                out.append(index)
        return tuple(out)
