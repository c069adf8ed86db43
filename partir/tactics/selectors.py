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
