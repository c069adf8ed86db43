"""The package's layering, read from its source: no import cycle (function-level imports
count, `TYPE_CHECKING` ones do not), no import against the layer order, modules under 600
lines, and no over-long or over-complex function in the compiler's core."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "partir"

# (rank, prefixes under `partir`), lowest first. A module may import its own package and
# packages of a lower rank; packages of one rank (passes, simulator) are siblings that do
# not import each other. The API layer (`partir/_*.py`, `partir/__init__.py`), `testing`,
# the CLI and `universe` sit on top and may import anything.
LAYERS: dict[str, tuple[int, tuple[str, ...]]] = {
    "base": (0, ("errors", "utils")),
    "ir": (1, ("ir",)),
    "rules": (2, ("rules",)),
    "passes": (3, ("passes",)),
    "simulator": (3, ("simulator",)),
    "tactics": (4, ("tactics",)),
}
# Beside the compiler's core: the packages that read JAX. They may import the core up to
# `rules` (what a program is, not how it is planned), their own package, and the JAX
# shims both share; not each other otherwise.
JAX_SIDE = ("frontend", "backend")
JAX_SIDE_MAX_RANK = 2
SHARED_JAX_SHIMS = ("backend.jax_compat", "backend.known", "backend.primitives")
TOP = ("testing", "cli", "universe")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(sub) for sub in ast.walk(node))
    return skip


def _is_module(name: str) -> bool:
    base = ROOT.parent / name.replace(".", "/")
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _imports(path: Path) -> Iterator[tuple[str, int]]:
    """(imported partir module, line) for every import in `path`, function-level ones
    included; `from partir import ir` counts as importing `partir.ir`."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_nodes(tree)
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("partir"):
                    yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if not module.startswith("partir"):
                continue
            subs = [f"{module}.{a.name}" for a in node.names if _is_module(f"{module}.{a.name}")]
            if subs:
                yield from ((s, node.lineno) for s in subs)
            if len(subs) < len(node.names):
                yield module, node.lineno


def _graph() -> dict[str, dict[str, int]]:
    graph: dict[str, dict[str, int]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        me = _module_name(path)
        edges = graph.setdefault(me, {})
        for target, line in _imports(path):
            if target != me and not me.startswith(target + "."):  # a parent package
                edges.setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _package_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    # a package __init__ re-exports its submodules, so an edge into the package is an
    # edge into whichever submodule defines the name: count modules, not packages, but
    # drop the init -> submodule edges that re-exporting makes
    pruned = {
        m: {t: ln for t, ln in edges.items() if not t.startswith(m + ".")}
        for m, edges in graph.items()
    }
    return _cycles(pruned)


def test_no_import_cycle():
    cycles = _package_cycles(_graph())
    assert not cycles, "import cycles (function-level imports count):\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def _layer_of(module: str) -> tuple[str, int] | None:
    """(package name, rank) of a module; rank -1 for the JAX side, None for the top."""
    rel = module.removeprefix("partir").removeprefix(".")
    for name, (rank, prefixes) in LAYERS.items():
        if any(rel == p or rel.startswith(p + ".") for p in prefixes):
            return name, rank
    head = rel.split(".")[0]
    if head in JAX_SIDE:
        return head, -1
    return None


def _violation(source: str, target: str) -> bool:
    src, dst = _layer_of(source), _layer_of(target)
    if src is None or src[0] == (dst or ("",))[0]:
        return False  # the top imports anything; a package imports itself
    if dst is None:
        return True  # nothing below the top imports the top
    rel = target.removeprefix("partir.")
    if src[1] >= 0:  # the core: strictly lower ranks only, never the JAX side
        return dst[1] < 0 or dst[1] >= src[1]
    if dst[1] >= 0:
        return dst[1] > JAX_SIDE_MAX_RANK
    return not any(rel == s or rel.startswith(s + ".") for s in SHARED_JAX_SHIMS)


def test_imports_follow_the_layers():
    graph = _graph()
    bad = [
        f"{src} -> {dst} (line {line})"
        for src, edges in sorted(graph.items())
        for dst, line in sorted(edges.items())
        if dst.startswith("partir") and _violation(src, dst)
    ]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("partir.rules.core", "partir.ir.attrs", False),
        ("partir.ir.ops", "partir.rules.core", True),
        ("partir.passes.propagate", "partir.simulator", True),
        ("partir.simulator.memory", "partir.passes.edges", True),
        ("partir.tactics.manual", "partir.passes.propagate", False),
        ("partir.ir.verify", "partir.rules.core", True),
        ("partir.ir.verify", "partir.utils.gc", False),
        ("partir.frontend.jaxpr", "partir.passes.edges", True),
        ("partir.frontend.jaxpr", "partir.ir", False),
        ("partir.frontend.jaxpr", "partir.backend.jax_compat", False),
        ("partir.frontend.jaxpr", "partir.backend.spmd", True),
        ("partir.backend.spmd", "partir.api.plan", True),
        ("partir.api.plan", "partir.backend.spmd", False),
    ],
)
def test_layer_rule_itself(source, target, expected):
    assert _violation(source, target) == expected


def test_cycle_finder_finds_a_function_level_cycle(tmp_path):
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 1}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_modules_are_under_600_lines():
    long = {
        str(p.relative_to(ROOT.parent)): n
        for p in ROOT.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 600
    }
    assert not long, f"modules over 600 lines: {long}"


def test_core_functions_are_short():
    long = []
    for package in ("passes", "tactics"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > 80:
                        long.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name}")
    assert not long, f"functions over 80 lines: {long}"


def test_at_most_three_loose_modules_at_the_top():
    # the tree shows the architecture: a plan is made in api/, shown in display/, checked
    # and replayed in plan/; only the package's face stays loose at the top
    loose = sorted(p.name for p in ROOT.glob("*.py") if p.name != "__init__.py")
    assert len(loose) <= 3, f"loose top-level modules: {loose}"


def _top_package_graph(graph: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """The module graph collapsed onto partir's subpackages (``partir.plan``, ...); the
    root ``partir`` (which re-exports everything) is left out."""

    def top(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:2]) if len(parts) > 1 else None

    packages: dict[str, dict[str, int]] = {}
    for src, edges in graph.items():
        if (a := top(src)) is None:
            continue
        for dst, line in edges.items():
            b = top(dst)
            if b is not None and b != a and dst.startswith("partir."):
                packages.setdefault(a, {}).setdefault(b, line)
        packages.setdefault(a, {})
    return packages


def test_no_cycle_between_subpackages():
    cycles = _cycles(_top_package_graph(_graph()))
    assert not cycles, "subpackages importing each other:\n" + "\n".join(
        " <-> ".join(c) for c in cycles
    )


def test_subpackage_cycle_finder_sees_a_two_package_cycle():
    graph = {"partir.a.x": {"partir.b.y": 1}, "partir.b.y": {"partir.a.z": 2}, "partir.a.z": {}}
    assert _cycles(_top_package_graph(graph)) == [["partir.a", "partir.b"]]


CROSS_CUTTING_SUITES = {
    "property": "hypothesis properties over rules, passes and emission together",
    "filecheck": "golden lit/filecheck cases of the IR, rules and passes",
    "mutation": "the mutation catalogue and its runner (not collected)",
    "multihost": "several processes on loopback (partir.api.multihost and the runtime)",
}
"""Test folders that test no single subpackage."""


def test_tests_mirror_the_package_tree():
    """Each test folder is named after the subpackage it tests (or is a cross-cutting suite),
    and only whole-package checks (architecture, docs, lint, notebooks, the filecheck
    runner) sit at the top of tests/."""
    tests = ROOT.parent / "tests"
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))}
    strays = sorted(folders - packages - set(CROSS_CUTTING_SUITES))
    assert not strays, f"test folders named after no subpackage of partir/: {strays}"
    loose = sorted(p.name for p in tests.glob("test_*.py"))
    assert loose == [
        "test_architecture.py",
        "test_docs.py",
        "test_filecheck.py",
        "test_lint.py",
        "test_notebooks.py",
    ], f"tests/ top level holds only whole-package checks, not {loose}"
