"""Property: any drawn JAX program traces, prints, parses back to the same text, and its
IR computes what the function computes."""

import jax
import numpy as np
from hypothesis import given, note, settings

import partir
from partir.testing import strategies


# Each example compiles three programs; 100 draws reach every op family the strategy has
# (tests/testing/test_strategies.py checks the reach) at a third of the ci profile's cost.
@settings(deadline=None, max_examples=100)
@given(strategies.programs(max_ops=8))
def test_trace_print_parse_run_round_trip(prog):
    args = prog.example_args()
    program = partir.trace(prog.fn, *args)
    text = str(program)
    note(text)
    assert str(partir.parse(text)) == text
    want = jax.jit(prog.fn)(*args)
    got = program.to_jax()(*args)
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
    # the parsed text runs too, on flat leaves
    flat = partir.parse(text).to_jax()(*jax.tree.leaves(args))
    for g, w in zip(flat, jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
