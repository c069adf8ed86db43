"""`Program`: a traced (or parsed) JAX function in partir IR, with its pytree signature."""

from __future__ import annotations

import collections
import functools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
from xdsl.dialects import func
from xdsl.dialects.builtin import ModuleOp, StringAttr

from partir import ir
from partir.backend import jax_compat
from partir.backend.evaluate import module_function, to_flat_callable
from partir.errors import ProgramError


def _paths(attrs: Any, count: int, prefix: str) -> list[str]:
    if attrs is None:
        return [f"{prefix}{i}" for i in range(count)]
    out = []
    for i, d in enumerate(attrs.data):
        path = d.data.get("partir.path")
        out.append(path.data if isinstance(path, StringAttr) else f"{prefix}{i}")
    return out


_OPENERS, _CLOSERS = "([{<", ")]}>"


def _depths(text: str, start: int = 0) -> Iterator[tuple[int, str, int]]:
    """(index, character, bracket depth after it) for characters outside string literals."""
    depth, in_string = 0, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            in_string = ch != '"' or text[i - 1] == "\\"
            continue
        if ch == '"':
            in_string = True
            continue
        if ch in _OPENERS:
            depth += 1
        elif ch in _CLOSERS and not (ch == ">" and text[i - 1] == "-"):  # not the `->` arrow
            depth -= 1
        yield i, ch, depth


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside brackets and string literals."""
    parts, start = [], 0
    for i, ch, depth in _depths(text):
        if ch == "," and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


def _matching_paren(text: str, open_at: int) -> int:
    for i, ch, depth in _depths(text, open_at):
        if depth == 0 and ch in _CLOSERS:
            return i
    raise ValueError("unbalanced signature")


def break_signatures(text: str) -> str:
    """Put each argument and result of a `func.func` signature on its own line."""
    out = []
    for line in text.split("\n"):
        stripped = line.lstrip()
        if not stripped.startswith("func.func @") or len(line) <= 100:
            out.append(line)
            continue
        indent = line[: len(line) - len(stripped)]
        inner = indent + "    "
        open_at = line.index("(")
        close_at = _matching_paren(line, open_at)
        args = _split_top_level(line[open_at + 1 : close_at])
        rest = line[close_at + 1 :]
        head = line[: open_at + 1]
        arrow = rest.find("-> (")
        if arrow >= 0 and rest.rstrip().endswith("{"):
            r_open = close_at + 1 + arrow + 3
            r_close = _matching_paren(line, r_open)
            results = _split_top_level(line[r_open + 1 : r_close])
            tail = (
                ") -> (\n"
                + ",\n".join(inner + r for r in results)
                + "\n"
                + indent
                + ")"
                + line[r_close + 1 :]
            )
        else:
            tail = ")" + rest
        out.append(head + "\n" + ",\n".join(inner + a for a in args) + "\n" + indent + tail)
    return "\n".join(out)


@dataclass
class Program:
    """A JAX function as partir IR.

    `str(program)` is the IR as MLIR text (it parses back with `partir.parse`);
    `to_jax()` returns a callable with the original function's pytree signature that
    evaluates the IR inside `jax.jit`.
    """

    module: ModuleOp
    """The xDSL module: one `func.func` whose arguments carry their pytree paths."""
    in_tree: Any = None
    """Treedef of ``(args, kwargs)``; None for a parsed program, which takes flat leaves."""
    out_tree: Any = None
    """Treedef of the outputs; None for a parsed program, which returns a flat list."""
    _callable: Callable[..., Any] | None = field(default=None, repr=False)

    @property
    def function(self) -> func.FuncOp:
        """The entry `func.func`."""
        return module_function(self.module)

    @property
    def name(self) -> str:
        """The traced function's name."""
        return self.function.sym_name.data

    @functools.cached_property
    def input_paths(self) -> list[str]:
        """The `/`-joined pytree path of every input leaf (``params/blocks/0/attn/q``)."""
        fn = self.function
        return _paths(fn.arg_attrs, len(fn.args), "in")

    @functools.cached_property
    def output_paths(self) -> list[str]:
        """The path of every output leaf (``out/0/blocks/0/attn/q``)."""
        fn = self.function
        return _paths(fn.res_attrs, len(fn.function_type.outputs), "out")

    def __str__(self) -> str:
        return break_signatures(str(self.module))

    def to_text(self, *, compact: bool = False) -> str:
        """The IR as text; `compact` elides primitive parameters (for reading, not parsing)."""
        token = ir.COMPACT.set(compact)
        try:
            return break_signatures(str(self.module))
        finally:
            ir.COMPACT.reset(token)

    def primitive_counts(self) -> collections.Counter[str]:
        """How many ops of each primitive the program has, regions included."""
        counts: collections.Counter[str] = collections.Counter()
        for op in self.module.walk():
            if isinstance(op, ir.PrimOp | ir.RegionPrimOp):
                counts[op.primitive_name] += 1
            elif isinstance(op, ir.ConstantOp):
                counts["constant"] += 1
        return counts

    def verify(self) -> Program:
        """Run the IR verifiers; returns self."""
        self.module.verify()
        return self

    def _flat_call(self, run: Callable[..., Any]) -> Callable[..., Any]:
        """A parsed program's callable: exactly its flat input leaves, checked."""
        arg_types = list(self.function.function_type.inputs.data)
        paths = self.input_paths
        name = self.name

        def call(*leaves: Any, **kwargs: Any) -> Any:
            if kwargs or any(not hasattr(x, "shape") for x in leaves):
                raise ProgramError(
                    f"{name}: a parsed program takes its {len(arg_types)} input leaves flat, "
                    f"as positional arrays (paths: {', '.join(paths[:4])}"
                    f"{', ...' if len(paths) > 4 else ''}); got "
                    f"{len(leaves)} positional and {len(kwargs)} keyword arguments of types "
                    f"{sorted({type(x).__name__ for x in [*leaves, *kwargs.values()]})}. Flatten "
                    "them with jax.tree.leaves(...), or call the traced Program instead."
                )
            if len(leaves) != len(arg_types):
                raise ProgramError(
                    f"{name}: the parsed program takes {len(arg_types)} input leaves "
                    f"({', '.join(paths[:4])}{', ...' if len(paths) > 4 else ''}); got "
                    f"{len(leaves)}. Pass jax.tree.leaves of the arguments it was traced with."
                )
            for i, (x, t) in enumerate(zip(leaves, arg_types, strict=True)):
                want = (ir.shape_of(t), ir.dtype_of(t))
                got = (tuple(x.shape), str(x.dtype))
                if got[0] != want[0]:
                    raise ProgramError(
                        f"{name}: input {paths[i] if i < len(paths) else i} has shape "
                        f"{got[0]}, but the program was traced with {want[0]} ({want[1]})."
                    )
            return run(*leaves)

        return call

    def to_jax(self) -> Callable[..., Any]:
        """A callable computing the same values as the traced function.

        It takes the function's original arguments (flat leaves for a parsed program)
        and evaluates the IR op by op inside `jax.jit`, so it compiles once per shape.
        """
        if self._callable is None:
            self._callable = to_flat_callable(self.module)
        run = self._callable
        if self.in_tree is None:
            return self._flat_call(run)

        in_tree, out_tree, name = self.in_tree, self.out_tree, self.name

        def call(*args: Any, **kwargs: Any) -> Any:
            leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
            if tree != in_tree:
                raise ProgramError(
                    f"{name}: the arguments' structure differs from the traced one.\n"
                    f"  traced: {in_tree}\n  called: {tree}\nCall with the same pytree "
                    "structure, or trace the function again."
                )
            return jax.tree_util.tree_unflatten(out_tree, run(*leaves))

        return call


def trace(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Program:
    """Trace `fn` on example arguments into a partir `Program`.

    Args:
      fn: a JAX-traceable function (jitted or not).
      *args, **kwargs: example arguments: arrays, or `jax.ShapeDtypeStruct` leaves when
        only shapes matter. Their pytree paths name the program's inputs.

    Returns:
      The program, with the input and output pytree structure kept.
    """
    from partir.frontend.jaxpr import argument_paths, jaxpr_to_module, output_paths

    closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args, **kwargs)
    in_paths, in_tree = argument_paths(fn, args, kwargs)
    out_paths, out_tree = output_paths(out_shape)
    name = getattr(fn, "__name__", None) or "main"
    module = jaxpr_to_module(closed, name if name.isidentifier() else "main", in_paths, out_paths)
    return Program(
        module,
        jax.tree_util.tree_structure((args, kwargs)) if in_tree is None else in_tree,
        out_tree,
    )


_TRACES: weakref.WeakKeyDictionary[Callable[..., Any], dict[Any, Program]] = (
    weakref.WeakKeyDictionary()
)


def trace_cached(
    fn: Callable[..., Any], key: Any, bound: Callable[..., Any], *args: Any, **kwargs: Any
) -> Program:
    """`trace(bound, ...)`, traced once per `fn` and `key` (the input signature and static
    values) in one JAX trace context, as `jax.jit` caches its traces. Every `Partitioned`
    of one function shares it (one per schedule or mesh in a comparison or a search): the
    program depends on neither, and tracing is much of planning. Each call returns its own
    copy of the IR, since tactics write attributes on it."""
    context = jax_compat.trace_context()
    try:
        per_fn = _TRACES.setdefault(fn, {}) if context is not None else None
    except TypeError:  # not weakly referenceable: trace every time
        per_fn = None
    if per_fn is None:
        return trace(bound, *args, **kwargs)
    full_key = (key, context)
    program = per_fn.get(full_key)
    if program is None:
        program = per_fn[full_key] = trace(bound, *args, **kwargs)
    return Program(program.module.clone(), program.in_tree, program.out_tree)


def parse(text: str) -> Program:
    """Parse partir IR text (as `str(program)` prints it) into a `Program` on flat leaves."""
    return Program(ir.parse_module(text))
