"""Notebook HTML for partir's result objects, looked up by type.

The objects (`CollectiveTable`, `History`, ...) sit below the display code: `display.notebook`
imports them, never the reverse. Their `_repr_html_` asks this registry, which
`display.notebook` fills when it is imported (`partir` imports it), so no module reaches up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

HTML_VIEWS: dict[type, Callable[[Any], str]] = {}
"""Result type -> the function that renders it as notebook HTML."""


def html_view(cls: type) -> Callable[[Callable[[T], str]], Callable[[T], str]]:
    """Register the decorated function as the notebook HTML of `cls` (and subclasses)."""

    def register(fn: Callable[[T], str]) -> Callable[[T], str]:
        HTML_VIEWS[cls] = fn
        return fn

    return register


def render_html(obj: Any) -> str:
    """`obj`'s notebook HTML, from the view registered for its type or a base type.

    Importing any partir module imports `partir` first, and with it `display.notebook`, so the
    views are registered before any object can ask."""
    for cls in type(obj).__mro__:
        view = HTML_VIEWS.get(cls)
        if view is not None:
            return view(obj)
    raise TypeError(f"no notebook view for {type(obj).__name__}")
