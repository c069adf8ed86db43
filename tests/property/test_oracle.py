"""The oracle: for random programs, meshes and schedules of `ManualPartition` tactics, the
partitioned program computes what the unpartitioned one does, in annotate mode (XLA partitions
from partir's constraints) and in spmd mode (partir's own device-local program runs, so a wrong
rule, propagation step or collective rewrite shows up as a wrong number).

Besides the numbers, every case checks that no primitive with a rule became a barrier (a rule
that fails to build warns and degrades to replicated: a silent loss the numbers cannot show) and
that the partir modules verify. Shapes are divisible by construction: every input dimension is a
multiple of the mesh's device count, so any axis (or stack of axes) divides any dimension.
"""

import collections
import math
import warnings

import jax
import numpy as np
from hypothesis import event, given, note, settings
from hypothesis import strategies as st
from jax.sharding import AxisType

import partir
from partir import ir
from partir.rules.core import RULES, get_rule
from partir.testing import strategies

COVERAGE: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
"""What the drawn cases reached: section ("primitives", "sharded factors", "collectives", ...)
-> name -> count. tests/property/conftest.py reports it at the end of the session."""

_MESHES: dict[tuple[tuple[str, int], ...], jax.sharding.Mesh] = {}

# Size-1 axes shard nothing: drawn about one time in seven.
_AXIS_SIZES = (2, 4, 2, 4, 2, 4, 1)


def mesh_of(axes):
    if axes not in _MESHES:
        names, sizes = zip(*axes, strict=True)
        _MESHES[axes] = jax.make_mesh(sizes, names, axis_types=(AxisType.Auto,) * len(axes))
    return _MESHES[axes]


@st.composite
def mesh_axes(draw):
    names = draw(st.permutations(strategies.AXIS_NAMES))
    axes: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(1, 3))):
        room = 8 // math.prod(n for _, n in axes)
        size = draw(st.sampled_from([s for s in _AXIS_SIZES if s <= room]))
        axes.append((names[len(axes)], size))
    return tuple(axes)


# The generators aimed at delicate rules (partir/testing/_program_rules.py) drawn five times as
# often as the basic ones: each is one pattern, and a bug in it shows only when the pattern meets
# a sharded input.
_AIMED = [n for n, g in strategies.OP_GENERATORS.items() if g.draw.__module__.endswith("_rules")]
_OPS = [*strategies.OP_GENERATORS, *_AIMED * 4]


# Partial sums meeting products and nonlinear ops: the patterns where treating a bilinear op
# as linear, or a sum as safe to carry, gives wrong numbers in spmd mode only. In the mixed
# draw they are a few cases in 300; `test_partial_products_equal_unpartitioned` draws them
# alone.
_PARTIAL = [n for n in _AIMED if n.startswith("partial")]


@st.composite
def cases(draw, ops=tuple(_OPS)):
    axes = draw(mesh_axes())
    devices = math.prod(s for _, s in axes)
    prog = draw(strategies.programs(max_ops=6, dim_multiple=devices, ops=list(ops)))
    schedule = draw(strategies.schedules(prog, axes, max_tactics=3))
    return axes, prog, schedule


def unrecorded_conflicts(prop):
    """(primitive, axis) of ops where, in the final state, two values hold one axis on
    different factors (or on a dim the axis does not align with) and no conflict says so."""
    recorded = {(id(c.op), c.axis) for c in prop.conflicts}
    seen, out = set(), []
    for edges in prop._edges.values():
        for edge in edges:
            if id(edge) in seen or not isinstance(edge.op, ir.PrimOp):
                continue
            seen.add(id(edge))
            claims: dict[str, set[str]] = {}
            for i, v in enumerate(edge.values):
                tdims = prop._tensor_dims(edge, i)
                for d, axes in enumerate(prop.dims.get(v, [])):
                    for k, axis in enumerate(axes):
                        before = math.prod(prop.sizes[a] for a in axes[:k])
                        f = prop._factor_at(edge.rule, tdims[d], before, prop.sizes[axis])
                        claims.setdefault(axis, set()).add(f"?{i}" if f is None else f)
            for axis, factors in claims.items():
                if len(factors) > 1 and (id(edge.op), axis) not in recorded:
                    out.append((edge.op.primitive_name, axis, sorted(factors)))
    return out


def _record_coverage(coverage, prog, plan, mode):
    prop = plan.propagator
    for op in plan.program.module.walk():
        if not isinstance(op, ir.PrimOp):
            continue
        name = op.primitive_name
        coverage["primitives"][name] += 1
        rule = get_rule(op)
        if rule is None:
            continue
        dims = [*rule.operands, *rule.results]
        for v, tdims in zip([*op.args, *op.outs], dims, strict=True):
            for d, axes in enumerate(prop.dims.get(v, [])):
                for f in tdims[d] if axes else ():
                    coverage["sharded factors"][f"{name}:{rule.kind(f).name.lower()}"] += 1
            if prop.partial.get(v):
                coverage["partial values"][f"{name}:{'in' if v in op.args else 'out'}"] += 1
    if mode == "spmd":
        for op in plan.lowered.module.walk():
            if op.name.startswith("spmd."):
                coverage["collectives"][op.name] += 1
    coverage["generators"].update(op.op for op in prog.ops)
    coverage["cases"][f"{mode} conflicts={bool(plan.conflicts)}"] += 1


# The `aim_*` generators build each pattern along every dim of its operand, so a bug behind
# one of them shows whichever dim a schedule shards. Here every case applies each of them once
# (and a slice, whose localisation they do not exercise), from rank >= 1 inputs, on meshes
# without size-1 axes, under schedules that always shard: each case can expose every kind.
# First in the file: under tests/mutation/run.py (-x, in file order) it kills in seconds.
_TARGETED = (*strategies.AIMED_OPS, "slice")


@st.composite
def targeted_cases(draw):
    names = draw(st.permutations(strategies.AXIS_NAMES))
    axes: list[tuple[str, int]] = []
    for _ in range(draw(st.integers(1, 2))):
        room = 8 // math.prod(n for _, n in axes)
        axes.append((names[len(axes)], draw(st.sampled_from([s for s in (2, 4) if s <= room]))))
    axes_t = tuple(axes)
    devices = math.prod(s for _, s in axes_t)
    prog = draw(strategies.targeted_programs(dim_multiple=devices, ops=_TARGETED))
    schedule = draw(strategies.schedules(prog, axes_t, max_tactics=2, replicated=False))
    return axes_t, prog, schedule


@settings(deadline=None, max_examples=30)
@given(case=targeted_cases())
def test_targeted_patterns_equal_unpartitioned(case):
    check_case("spmd", case)


@settings(deadline=None)
@given(case=cases())
def test_partitioned_equals_unpartitioned_spmd(case):
    check_case("spmd", case)


# a test per mode, each with the profile's draws (300 in CI), so the two run on both workers
@settings(deadline=None)
@given(case=cases())
def test_partitioned_equals_unpartitioned_annotate(case):
    check_case("annotate", case)


@settings(deadline=None, max_examples=30)
@given(case=cases(ops=tuple(_PARTIAL)))
def test_partial_products_equal_unpartitioned(case):
    check_case("spmd", case)


# Ops that move or reverse dims, with ops that consume a sharded dim in place: a rule that
# maps a dim to the wrong place (a transpose's inverse permutation) gives a tile of the
# wrong shape or the wrong elements, in spmd mode only.
_DIM_MOVES = ("transpose", "rev", "expand_dims", "squeeze", "reduce_sum", "dot_general", "add")


@settings(deadline=None, max_examples=30)
@given(case=cases(ops=_DIM_MOVES))
def test_dim_moves_equal_unpartitioned(case):
    check_case("spmd", case)


def check_case(mode, case):
    """Plan `case` in `mode`, check the IR and the plan's own invariants, run it, compare."""
    axes, prog, schedule = case
    note(f"mesh {axes}\nschedule {schedule}")
    args = prog.example_args()
    want = jax.jit(prog.fn)(*args)
    step = partir.partition(schedule, mesh=mesh_of(axes), mode=mode)(prog.fn)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = step.plan(*args)
        plan.program.module.verify()
        plan.lowered.module.verify()  # lowered and optimised, in both modes
    note(plan.ir())
    rule_warnings = [str(w.message) for w in caught if "sharding rule" in str(w.message)]
    assert not rule_warnings, rule_warnings
    barriers = sorted(set(plan.propagator.barriers) & set(RULES))
    assert not barriers, f"primitives with a rule became barriers: {barriers}"
    missed = unrecorded_conflicts(plan.propagator)
    assert not missed, f"tactics disagree at ops with no conflict recorded: {missed}"
    _record_coverage(COVERAGE, prog, plan, mode)
    sharded = any(
        s.spec != jax.sharding.PartitionSpec() for s in jax.tree.leaves(plan.in_shardings)
    )
    event(f"inputs sharded: {sharded}")
    if mode == "spmd":
        event(f"communicates: {any(c.communicates for c in plan.collectives())}")
    got = step(*args)
    # bf16 round trips and float->int casts can land one rounding step apart
    loose = any(op.op == "convert" for op in prog.ops)
    tol = 2e-2 if loose else 1e-5
    if not _close(got, want, tol):
        # the reference is `jax.jit` of the function, which XLA can miscompile
        # (tests/property/test_known_bugs.py); op by op, each primitive is its own program
        with jax.disable_jit():
            eager = prog.fn(*jax.device_put(args))
        note(f"jax.jit and op-by-op agree: {_close(want, eager, tol)}")
        want = eager
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=tol, atol=tol)


def _close(a, b, tol: float) -> bool:
    return all(
        np.allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    )
