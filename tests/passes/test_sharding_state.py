"""The propagation state: one dataclass whose copy shares no mutable container, and the
typed decisions (linear modes, misaligned claims, reduction kinds) of the engine."""

import dataclasses

import jax.numpy as jnp
import pytest
from xdsl.dialects.shard import ReductionKind
from xdsl.ir import Operation, SSAValue

import partir
from partir import ir
from partir.passes import state
from partir.passes.edges import LINEAR, Linear
from partir.passes.propagate import Propagator
from partir.passes.state import Misaligned, ShardingState

MESH = ir.MeshAttr((("batch", 2), ("model", 4)))


def _step(w, x):
    h = jnp.tanh(x @ w)
    return (h @ w.T).sum(), jnp.maximum(h, 0.0).max(axis=0)


@pytest.fixture(scope="module")
def propagated():
    """A propagator with every field of its state non-empty: tiles, partials, a pin,
    conflicts and a visit count."""
    program = partir.trace(_step, jnp.ones((8, 8)), jnp.ones((4, 8)))
    prop = Propagator(program.module, MESH)
    w, x = program.function.args
    assert prop.seed(x, 0, "batch", 0)
    prop.propagate("batch", 0, [x])
    assert prop.pin(w, "model", 1)
    assert not prop.seed(w, 1, "model", 2)  # clashes with the pin: a conflict
    assert prop.seed(x, 1, "model", 2)
    prop.propagate("model", 2, [x])
    prop.barriers["pretend_callback"] += 1
    return prop


def _containers(value, path):
    """Every mutable container reachable from `value`, with where it was found (the
    program's values and ops are shared by design: propagation never changes them)."""
    if isinstance(value, SSAValue | Operation):
        return
    if isinstance(value, dict):
        yield path, value
        for k, v in value.items():
            yield from _containers(v, f"{path}[{k!r}]")
    elif isinstance(value, list | set):
        yield path, value
        for i, v in enumerate(value):
            yield from _containers(v, f"{path}[{i}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        assert type(value).__dataclass_params__.frozen, f"{path} is a mutable record"  # type: ignore[attr-defined]


def test_every_field_is_filled_by_the_fixture(propagated):
    empty = [
        f.name for f in dataclasses.fields(ShardingState) if not getattr(propagated.state, f.name)
    ]
    assert not empty, f"the fixture leaves {empty} empty: the copy test would not see them"


def test_copy_shares_no_mutable_container(propagated):
    new = propagated.copy()
    assert new.state == propagated.state
    for f in dataclasses.fields(ShardingState):
        old_ids = {id(c): p for p, c in _containers(getattr(propagated.state, f.name), f.name)}
        shared = [p for p, c in _containers(getattr(new.state, f.name), f.name) if id(c) in old_ids]
        assert not shared, f"the copy shares {shared} with its original"


def test_changing_a_copy_leaves_the_original(propagated):
    before = propagated.state.copy()
    new = propagated.copy()
    v = next(iter(new.dims))
    new.dims[v][0].append("extra")
    new.partial.setdefault(v, []).append("extra")
    new.pinned.add((v, "extra"))
    new.conflicts.clear()
    new.barriers["pretend_callback"] += 5
    new.state.visits += 1
    assert propagated.state == before
    # the public attributes are views of the state, not copies
    assert new.dims is new.state.dims and new.visits == propagated.visits + 1


def test_a_field_without_a_copier_is_refused():
    @dataclasses.dataclass
    class Grown(ShardingState):
        extra: dict = dataclasses.field(default_factory=dict)

    with pytest.raises(TypeError, match=r"\['extra'\] name no copier"):
        state._check_copiers(Grown)


def test_decisions_are_typed(propagated):
    assert set(LINEAR.values()) == set(Linear)
    assert LINEAR["sub"] is Linear.ALL and LINEAR["div"] is Linear.FIRST
    kinds = set(propagated.reduction.values())
    assert kinds and all(isinstance(k, ReductionKind) for k in kinds)
    assert Misaligned(0) != "0" and Misaligned(1) == Misaligned(1)


def test_max_partials_print_as_before(propagated):
    maxed = [v for v, k in propagated.reduction.items() if k is ReductionKind.MAX]
    assert maxed, "the fixture's max over the batch leaves a pending max"
    text = str(ir.ShardingAttr(propagated.sharding(maxed[0])))
    assert "partial=max{" in text and "ReductionKind" not in text
