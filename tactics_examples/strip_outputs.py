"""Strip outputs from the notebooks in this folder, so git holds only what a person wrote.

    .venv/bin/python tactics_examples/strip_outputs.py           # strip in place
    .venv/bin/python tactics_examples/strip_outputs.py --check   # exit 1 if any has outputs

`tests/test_notebooks.py` runs every notebook and checks that the committed ones are
stripped.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

HERE = pathlib.Path(__file__).parent


def strip(nb: nbformat.NotebookNode) -> bool:
    """Clear outputs, execution counts and run metadata in place; True if anything changed."""
    changed = False
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            cell.outputs = []
            cell.execution_count = None
            changed = True
        for key in ("execution", "collapsed", "scrolled"):
            if key in cell.metadata:
                del cell.metadata[key]
                changed = True
    for key in ("widgets", "papermill"):
        if key in nb.metadata:
            del nb.metadata[key]
            changed = True
    return changed


def main(argv: list[str] | None = None) -> int:
    """Strip (or, with --check, report) every ``*.ipynb`` next to this script."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if unstripped")
    args = parser.parse_args(argv)
    dirty = []
    for path in sorted(HERE.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if strip(nb):
            dirty.append(path.name)
            if not args.check:
                nbformat.write(nb, path)
    verb = "have outputs" if args.check else "stripped"
    for name in dirty:
        print(f"{name}: {verb}")
    return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
    sys.exit(main())
