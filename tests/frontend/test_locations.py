"""Source locations point into the user's code: frames inside JAX, optax and other installed
libraries are skipped, and notebook cells read as ``In [N], line L``."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import partir
from partir import ir
from partir.frontend.jaxpr import is_library_file
from partir.passes.edges import location_of
from partir.testing import models, schedules


def test_zoo_gpt_collectives_point_into_the_model_not_optax():
    m = models.get("gpt")
    tactics = schedules.schedule("gpt", "BP+MP+Z3")
    plan = partir.partition(tactics, mesh={"batch": 4, "model": 2})(m.fn).plan(*m.args)
    sources = {c.source for c in plan.collectives()}
    assert sources
    for source in sources:
        assert source.startswith("partir/testing/"), source
        assert "site-packages" not in source and "optax" not in source and source != "unknown"


def test_an_optimizer_update_is_blamed_on_the_line_that_calls_it():
    opt = optax.adamw(1e-3)
    w = jnp.ones((8, 4))

    def step(w, state, g):
        updates, state = opt.update(g, state, w)  # the optimizer line
        return optax.apply_updates(w, updates), state

    program = partir.trace(step, w, opt.init(w), w)
    lines = {location_of(op) for op in program.module.walk() if isinstance(op, ir.PrimOp)}
    this = __file__.rpartition("/")[2]
    assert lines and all(this in line for line in lines), lines
    assert any("(step)" in line for line in lines)


@pytest.mark.parametrize(
    ("path", "library"),
    [("/x/lib/python3.12/site-packages/optax/_src/alias.py", True),
     ("/usr/lib/python3/dist-packages/flax/nnx/module.py", True),
     ("/home/me/model.py", False), (partir.__file__, True),
     (models.__file__, False)],
)  # fmt: skip
def test_library_files(path, library):
    assert is_library_file(path) is library


def test_notebook_cells_read_as_in_n_line_l():
    interactive = pytest.importorskip("IPython.core.interactiveshell")
    shell = interactive.InteractiveShell.instance()
    shell.run_cell("import jax.numpy as jnp", store_history=True)
    shell.run_cell("def f(x):\n    y = jnp.sin(x)\n    return y * 2\n", store_history=True)
    number = shell.execution_count - 1
    program = partir.trace(shell.user_ns["f"], jax.ShapeDtypeStruct((4,), jnp.float32))
    lines = [location_of(op) for op in program.module.walk() if isinstance(op, ir.PrimOp)]
    assert f"In [{number}], line 2 (f)" in lines
    assert f"In [{number}], line 3 (f)" in lines
