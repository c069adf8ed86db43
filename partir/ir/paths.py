"""Input and output paths: `/`-joined pytree keys, with `/` inside a key escaped.

A path names one leaf: ``params/blocks/0/attn/q``. A dict key may itself contain `/`
(Haiku names modules ``mlp/~/linear_0``), so inside a key `\\` is written `\\\\` and `/` is
written `\\/`: ``{"enc/w": a, "enc": {"w": b}}`` gives ``x/enc\\/w`` and ``x/enc/w``, two
paths. Selectors (`partir.tactics.selectors`) read the same escapes.
"""

from __future__ import annotations

SEPARATOR = "/"


def escape_key(key: str) -> str:
    """One pytree key as a path component (`\\` and `/` escaped)."""
    return key.replace("\\", "\\\\").replace("/", "\\/")


def join_path(keys: list[str]) -> str:
    """The path of a leaf from its (unescaped) keys."""
    return SEPARATOR.join(escape_key(k) for k in keys)


def split_path(path: str) -> list[str]:
    """A path's components, still escaped (so `join` with `/` gives the path back)."""
    parts: list[str] = []
    current: list[str] = []
    chars = iter(path)
    for c in chars:
        if c == "\\":
            current.append(c + next(chars, ""))
        elif c == SEPARATOR:
            parts.append("".join(current))
            current = []
        else:
            current.append(c)
    parts.append("".join(current))
    return parts


def unescape_key(component: str) -> str:
    """A path component back as the key it came from."""
    out: list[str] = []
    chars = iter(component)
    for c in chars:
        out.append(next(chars, "") if c == "\\" else c)
    return "".join(out)


def root_of(path: str) -> str:
    """The first non-empty component of a path: the argument name (or ``out``)."""
    return next((c for c in split_path(path) if c), "")
