"""Selectors: `/`-joined pytree paths with `*` (one level) and `**` (any levels).

A selector starts with the argument's name (``params/blocks/0/attn/q``). A selector that
names an inner node selects every leaf under it; `*` inside a component matches part of
a name (``w_*``). Inside a component, `\\/` is a `/` that belongs to the key (Haiku's
``params/mlp\\/~\\/linear_0/w``, see `partir.ir.paths`), `\\*` a literal `*` and `\\\\` a
backslash.
"""

from __future__ import annotations

import functools
import re

from partir.ir.paths import escape_key, split_path

_CHAR = r"(?:[^/\\]|\\.)"
"""One character of an escaped path component."""


def _component_pattern(component: str) -> str:
    pieces: list[str] = []
    literal: list[str] = []
    chars = iter(component)
    for c in chars:
        if c == "\\":
            literal.append(next(chars, ""))
        elif c == "*":
            pieces.append(re.escape(escape_key("".join(literal))))
            literal = []
        else:
            literal.append(c)
    pieces.append(re.escape(escape_key("".join(literal))))
    return f"{_CHAR}*".join(pieces)


@functools.cache
def compile_selector(selector: str) -> re.Pattern[str]:
    """The regular expression, matched against ``path + "/"``, of the leaves selected."""
    pattern = ""
    # empty components (a leading, trailing or doubled `/`) are ignored
    for part in (p for p in split_path(selector) if p):
        if part == "**":
            pattern += f"(?:{_CHAR}+/)*"
        elif part == "*":
            pattern += f"{_CHAR}+/"
        else:
            pattern += _component_pattern(part) + "/"
    # a prefix match: a selector naming an inner node selects every leaf under it
    return re.compile(pattern)


def select(selector: str, paths: list[str]) -> list[int]:
    """Indices of the `paths` the selector selects."""
    rx = compile_selector(selector)
    return [i for i, p in enumerate(paths) if rx.match(p + "/")]


def _distance(a: str, b: str) -> int:
    """Levenshtein edit distance (insertions, deletions, substitutions)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def closest(selector: str, paths: list[str], n: int = 3) -> list[str]:
    """The `n` paths (or inner nodes at the selector's depth) nearest `selector` by edit
    distance, nearest first; for "did you mean" hints."""
    depth = len([p for p in split_path(selector) if p])
    candidates: dict[str, None] = {}
    for path in paths:
        parts = split_path(path)
        candidates["/".join(parts[:depth])] = None
        candidates[path] = None
    ranked = sorted(candidates, key=lambda c: (_distance(selector, c), c))
    return ranked[:n]


def selector_hints(selector: str, paths: list[str]) -> str:
    """Hints for a selector that matched nothing: a `.` written for `/`, a ``keystr``-style
    path, and the closest paths. Empty if there is nothing to say."""
    hints: list[str] = []
    if "[" in selector and "]" in selector:
        # ``weights['up'][0]`` or ``.mu['up']`` (jax.tree_util.keystr) -> weights/up/0
        fixed = re.sub(r"\[['\"]?([^\]'\"]+)['\"]?\]", r"/\1", selector)
        fixed = fixed.replace(".", "/").strip("/")
        if fixed and select(fixed, paths):
            hints.append(
                f"Selectors are `/`-joined, not jax.tree_util.keystr paths: write {fixed!r}."
            )
    elif "." in selector:
        fixed = selector.replace(".", "/")
        if select(fixed, paths):
            hints.append(f"Selectors separate keys with `/`, not `.`: write {fixed!r}.")
    if not hints:
        near = closest(selector, paths)
        if near:
            hints.append(f"Did you mean {' or '.join(repr(p) for p in near)}?")
    return " ".join(hints)
