"""Source locations of ops, as people read them in reports and errors.

The frontend gives an op the innermost frame in the user's code, ``fn("file":line:col)``;
where that line called into a library (optax's update, a flax layer), the location is
MLIR's ``callsite(library at user)``: `location_of` reads the user's frame, and
`library_location_of` the library frame, the secondary note.
"""

from __future__ import annotations

from xdsl.dialects.builtin import CallSiteLoc, FileLineColLoc, NameLoc
from xdsl.ir import Attribute, Operation


def location_of(op: Operation | None) -> str:
    """``file:line (function)`` of an op's source location in the user's code, or
    ``unknown``."""
    if op is None:
        return "unknown"
    loc = op.location
    return _text(loc.caller if isinstance(loc, CallSiteLoc) else loc)


def location_text(loc: Attribute | None) -> str:
    """`location_of` for a location itself (the user's line of a call-site location)."""
    if loc is None:
        return "unknown"
    return _text(loc.caller if isinstance(loc, CallSiteLoc) else loc)


def library_location_of(op: Operation | None) -> str | None:
    """``package/file.py:line (function)`` of the library code the user's line called
    (``optax/tree_utils/_tree_math.py:398 (tree_add)``), or None when the op was made in
    the user's code itself."""
    loc = op.location if op is not None else None
    return _text(loc.callee) if isinstance(loc, CallSiteLoc) else None


def _text(loc: Attribute) -> str:
    if isinstance(loc, NameLoc) and isinstance(loc.location, FileLineColLoc):
        return f"{_file_line(loc.location)} ({loc.desc.data})"
    if isinstance(loc, FileLineColLoc):
        return _file_line(loc)
    return "unknown"


def _file_line(loc: FileLineColLoc) -> str:
    # a notebook cell reads as IPython's own tracebacks do: "In [3], line 2"
    name = loc.filename.data
    if name.startswith("In ["):
        return f"{name}, line {loc.line.data}"
    return f"{name}:{loc.line.data}"
