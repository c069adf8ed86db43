"""Every notebook in tactics_examples/ executes without error, and is committed stripped.

Each runs in a fresh kernel of this interpreter (nbclient), from the repository root; a
cell that raises fails the test with the cell's traceback. The notebooks assert their own
numerical checks.
"""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

ROOT = pathlib.Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "tactics_examples").glob("*.ipynb"))
CELL_TIMEOUT_S = 300
"""Per cell; a notebook takes well under a minute on a 2-core machine."""


def test_there_are_notebooks():
    names = {p.name for p in NOTEBOOKS}
    assert {
        "01_first_partition.ipynb",
        "02_transformer_schedules.ipynb",
        "03_sequence_and_expert_parallel.ipynb",
        "04_conv_and_conflicts.ipynb",
    } <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stripped(path):
    nb = nbformat.read(path, as_version=4)
    dirty = [
        i
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.outputs or c.execution_count is not None)
    ]
    assert not dirty, (
        f"{path.name}: cells {dirty} have outputs; run "
        ".venv/bin/python tactics_examples/strip_outputs.py"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_first_cell_sets_eight_devices(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert 'jax.config.update("jax_num_cpu_devices", 8)' in first_code.source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path):
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT)}},
    )
    client.execute()
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    # every code cell ran (none was skipped)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
