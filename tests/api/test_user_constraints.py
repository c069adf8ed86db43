"""The user's own sharding code inside the partitioned function: `with_sharding_constraint`
(and the `reshard` JAX's AD makes) are seeds applied before the schedule, a disagreement
with a tactic is a conflict naming the user's line, constraints on another mesh are mapped
or dropped with a warning, and a `jax.shard_map` region keeps its specs. Every result is
compared with `jax.jit` of the unpartitioned function, in both modes."""

from __future__ import annotations

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import partir
from partir.testing import assert_tree_close

MODES = ("annotate", "spmd")
MP = partir.ManualPartition
AUTO2 = (AxisType.Auto,) * 2

# batch on x's rows, Megatron-style on the hidden dimension
SCHEDULE = [
    MP({"x": 0}, axis="batch"),
    MP({"params/w_in": 1, "params/w_out": 0}, axis="model"),
]


@pytest.fixture(scope="module")
def foreign():
    """Another mesh on the same devices, with its own axis names (as MaxText makes)."""
    return jax.make_mesh((4, 2), ("data", "tensor"), axis_types=AUTO2)


def constrained_loss(sharding):
    """The test MLP's loss, its hidden activation constrained to `sharding` (None: not)."""

    def loss(params, x):
        h = jnp.tanh(x @ params["w_in"])
        if sharding is not None:
            h = jax.lax.with_sharding_constraint(h, sharding)  # the user's line
        return jnp.mean((h @ params["w_out"]) ** 2)

    return loss


USER_LINE = (
    next(
        i
        for i, text in enumerate(inspect.getsource(constrained_loss).splitlines())
        if "the user's line" in text
    )
    + inspect.getsourcelines(constrained_loss)[1]
)


def _params(seed: int = 0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    return {
        "w_in": jax.random.normal(k1, (16, 32)) * 0.3,
        "w_out": jax.random.normal(k2, (32, 8)) * 0.3,
    }


X = jax.random.normal(jax.random.key(7), (8, 16))


_close = functools.partial(assert_tree_close, rtol=2e-5, atol=2e-6)


def _collectives(plan):
    return sorted(str(c) for c in plan.collectives())


@pytest.mark.parametrize("mode", MODES)
def test_agreeing_constraint_adds_no_collective(mesh, mode):
    fn = constrained_loss(NamedSharding(mesh, P("batch", "model")))
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(fn)
    bare = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(constrained_loss(None))
    params = _params()
    plan = part.plan(params, X)
    assert plan.conflicts == []
    assert _collectives(plan) == _collectives(bare.plan(params, X))
    _close(part(params, X), jax.jit(fn)(params, X))
    # and its gradient, whose transpose carries the constraint too
    grad = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(jax.grad(fn))
    _close(grad(params, X), jax.jit(jax.grad(fn))(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_disagreeing_constraint_is_one_conflict_naming_the_users_line(mesh, mode):
    # the tactic tiles the activation's rows on batch; the user asks for its columns
    fn = constrained_loss(NamedSharding(mesh, P(None, "batch")))
    part = partir.partition(SCHEDULE[:1], mesh=mesh, mode=mode)(fn)
    params = _params()
    plan = part.plan(params, X)
    assert len(plan.conflicts) == 1
    (conflict,) = plan.conflicts
    assert conflict.axis == "batch"
    assert re.search(
        rf"user constraint at \S*test_user_constraints.py:{USER_LINE}\b", str(conflict)
    )
    assert 0 in conflict.tactic_indices  # the tactic it disagrees with is named too
    _close(part(params, X), jax.jit(fn)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_constraint_is_a_seed_the_plan_keeps(mesh, mode):
    # no tactic on 'model': the user's constraint alone puts the hidden dim there
    fn = constrained_loss(NamedSharding(mesh, P(None, "model")))
    part = partir.partition(SCHEDULE[:1], mesh=mesh, mode=mode)(fn)
    params = _params()
    plan = part.plan(params, X)
    assert plan.sharding_of("params/w_in").spec == P(None, "model")
    assert "user constraint at" in plan.explain("params/w_in")
    _close(part(params, X), jax.jit(fn)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_none_dims_are_replicated_and_unconstrained_dims_are_free(mesh, mode):
    # JAX's meaning: P("batch", None) keeps the hidden dim whole, so the Megatron tactic
    # meets a pinned value; P("batch", UNCONSTRAINED) leaves it to the schedule
    params = _params()
    whole = constrained_loss(NamedSharding(mesh, P("batch", None)))
    plan = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(whole).plan(params, X)
    # met from both sides: through tanh (w_in) and through the next dot (w_out)
    assert plan.conflicts and {c.axis for c in plan.conflicts} == {"model"}
    assert all("replicated, from user constraint at" in str(c) for c in plan.conflicts)
    free = constrained_loss(NamedSharding(mesh, P("batch", P.UNCONSTRAINED)))
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(free)
    assert part.plan(params, X).conflicts == []
    _close(part(params, X), jax.jit(free)(params, X))
    whole_part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(whole)
    _close(whole_part(params, X), jax.jit(whole)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_constraint_on_a_foreign_mesh_maps_by_size(mesh, foreign, mode):
    fn = constrained_loss(NamedSharding(foreign, P("data", "tensor")))
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(fn)
    params = _params()
    plan = part.plan(params, X)
    assert plan.conflicts == []  # data -> batch, tensor -> model: what the schedule does
    bare = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(constrained_loss(None))
    assert _collectives(plan) == _collectives(bare.plan(params, X))
    _close(part(params, X), jax.jit(fn)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_unmappable_constraint_is_dropped_with_a_warning(mesh, mode):
    other = jax.make_mesh((8,), ("x",), axis_types=(AxisType.Auto,))
    fn = constrained_loss(NamedSharding(other, P("x")))
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(fn)
    params = _params()
    with pytest.warns(UserWarning, match=rf"user constraint at .*:{USER_LINE} .*mesh axis 'x'"):
        plan = part.plan(params, X)
    assert plan.conflicts == []
    _close(part(params, X), jax.jit(fn)(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_loss_constraining_on_a_foreign_mesh_differentiates(mesh, foreign, mode):
    # JAX's AD makes zeros (and a `reshard`) that carry the loss's own mesh in their
    # parameters; spmd mode binds every op inside a shard_map on the partitioning mesh
    def loss(params, x):
        h = jnp.tanh(x @ params["w_in"])
        h = jax.lax.with_sharding_constraint(h, NamedSharding(foreign, P("data", None)))
        h = h + jnp.zeros_like(h, device=NamedSharding(foreign, P("data")))
        return jnp.mean((h @ params["w_out"]) ** 2)

    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(jax.value_and_grad(loss))
    params = _params()
    _close(step(params, X), jax.jit(jax.value_and_grad(loss))(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_two_user_constraints_disagreeing_name_both_lines(mesh, mode):
    def fn(x):
        y = jax.lax.with_sharding_constraint(jnp.sin(x), NamedSharding(mesh, P("batch")))
        z = jax.lax.with_sharding_constraint(y * 2, NamedSharding(mesh, P(None, "batch")))
        return jnp.cos(z)

    part = partir.partition([MP({"x": 0}, axis="model")], mesh=mesh, mode=mode)(fn)
    x = jax.random.normal(jax.random.key(1), (8, 8))
    plan = part.plan(x)
    texts = [str(c) for c in plan.conflicts if c.axis == "batch"]
    assert len(texts) == 1
    assert texts[0].count("user constraint at") >= 2
    _close(part(x), jax.jit(fn)(x))


def test_reshard_on_an_auto_mesh_is_rejected_by_jax(mesh):
    # `jax.sharding.reshard` takes only Explicit mesh axes, and partir partitions on Auto
    # axes: the user's reshard cannot trace inside a partitioned function at all (JAX's
    # own error). The `reshard` equations JAX itself makes (AD zeros) are seeds, above.
    fn = partir.partition(SCHEDULE[:1], mesh=mesh)(
        lambda x: jax.sharding.reshard(jnp.sin(x), P("batch"))
    )
    with jax.set_mesh(mesh), pytest.raises(ValueError, match="Auto"):
        fn.plan(X)


def test_constraint_params_print_plainly(mesh):
    fn = constrained_loss(NamedSharding(mesh, P("batch", "model")))
    plan = partir.partition(SCHEDULE, mesh=mesh)(fn).plan(_params(), X)
    text = str(plan.program.module)
    assert "sharding_constraint" in text
    assert "NamedSharding" in text  # the kind of sharding, as a plain string
    assert "opaque" not in text.split("sharding_constraint", 1)[1].split("\n", 1)[0]


@pytest.mark.parametrize("mode", MODES)
def test_step_called_inside_the_users_own_mesh(mesh, mode):
    # MaxText style: the step runs under `jax.set_mesh(its_mesh)` and constrains with bare
    # PartitionSpecs on that mesh's axes; spmd mode's shard_map is on the plan's mesh
    fsdp = jax.make_mesh((8,), ("fsdp",), axis_types=(AxisType.Auto,))

    def loss(params, x):
        h = jnp.tanh(x @ params["w_in"])
        h = jax.lax.with_sharding_constraint(h, P("fsdp"))
        return jnp.mean((h @ params["w_out"] + jnp.zeros_like(x[:, :8])) ** 2)

    step = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(jax.value_and_grad(loss))
    params = _params()
    with jax.set_mesh(fsdp):
        want = jax.jit(jax.value_and_grad(loss))(params, X)
        with pytest.warns(UserWarning, match="mesh axis 'fsdp'"):
            got = step(params, X)
    _close(got, want)


# -- a jax.shard_map region inside the step ---------------------------------------------


def region_loss(region_mesh):
    """The test MLP's loss with a per-device region: a row sum over the hidden dimension,
    tiled on both axes, reduced with the region's own psum."""

    def loss(params, x):
        h = jnp.tanh(x @ params["w_in"])

        @functools.partial(
            jax.shard_map, mesh=region_mesh, in_specs=P(*region_mesh.axis_names),
            out_specs=P(region_mesh.axis_names[0]),
        )  # fmt: skip
        def row_sums(block):
            return jax.lax.psum(
                jnp.sum(block * 2, axis=1, keepdims=True), region_mesh.axis_names[1]
            )

        return jnp.mean((h @ params["w_out"]) * row_sums(h))

    return loss


@pytest.mark.parametrize("mode", MODES)
def test_shard_map_region_matches_jit(mesh, mode):
    fn = region_loss(mesh)
    params = _params()
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(fn)
    plan = part.plan(params, X)
    assert plan.conflicts == []
    _close(part(params, X), jax.jit(fn)(params, X))
    # the region's specs seed its result: rows on batch, replicated on model
    region = next(
        op for op in plan.program.module.walk() if getattr(op, "primitive_name", "") == "shard_map"
    )
    assert plan.propagator.sharding(region.outs[0]).dims == (("batch",), ())
    assert "model" in {a for v, a in plan.propagator.pinned if v is region.outs[0]}
    # its operand arrives as the blocks its in_specs name: no gather into the region; the
    # loss's mean is reduced, and the region's own psum over model is listed
    # at the user's line
    table = [c for c in plan.collectives() if c.communicates]
    assert [c.kind for c in table] == ["all_reduce", "all_reduce"]
    psum = table[0]
    assert psum.axes == ("model",)
    assert psum.shape == (2, 1) and psum.bytes == 8
    assert re.search(r"test_user_constraints.py:\d+ \(row_sums\)", psum.source), psum.source
    assert psum.reason.startswith("the user's jax.shard_map at ")
    if mode == "spmd":
        # what runs is partir's program: the region's psum is found in the compiled HLO
        check = plan.check_compiled()
        assert check.all_planned_found, str(check)
        assert not [b for b in check.extra if b.kind == "all_reduce"], str(check)
    # its gradient has two regions (forward with residuals, and the transpose)
    grad = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(jax.grad(fn))
    _close(grad(params, X), jax.jit(jax.grad(fn))(params, X))


@pytest.mark.parametrize("mode", MODES)
def test_every_collective_of_a_shard_map_region_is_listed(mesh, mode):
    """Each collective primitive a region's body can bind, one in a loop, is listed once per
    buffer with its kind, axes and per-device shape; the step still matches jit."""

    @functools.partial(
        jax.shard_map, mesh=mesh, in_specs=P("batch", "model"), out_specs=P(), check_vma=False
    )  # fmt: skip
    def region(block):  # block: [2, 16] per device
        summed = jax.lax.psum((block, block * 2), "model")
        biggest = jax.lax.pmax(jax.lax.stop_gradient(block), "batch")  # pmax has no JVP
        gathered = jax.lax.all_gather(block, "model", tiled=True)
        scattered = jax.lax.psum_scatter(block, "batch", scatter_dimension=1, tiled=True)
        shifted = jax.lax.ppermute(block, "batch", [(i, (i + 1) % 4) for i in range(4)])
        moved = jax.lax.all_to_all(block, "model", 1, 0, tiled=True)
        looped = jax.lax.fori_loop(0, 2, lambda _, c: jax.lax.psum(c, "batch") / 4, block)
        parts = (*summed, biggest, gathered, scattered, shifted, moved, looped)
        return sum(jnp.sum(p) for p in parts)

    def loss(params, x):
        return region(jnp.tanh(x @ params["w_in"])) / 64

    params = _params()
    part = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(loss)
    _close(part(params, X), jax.jit(loss)(params, X))
    # unchecked (check_vma=False) regions with a loop run in spmd mode, differentiated too
    grad = partir.partition(SCHEDULE, mesh=mesh, mode=mode)(jax.grad(loss))
    _close(grad(params, X), jax.jit(jax.grad(loss))(params, X))
    where = "the user's jax.shard_map at "
    listed = [(c.kind, c.axes, c.shape) for c in part.plan(params, X).collectives()
              if c.reason.startswith(where)]  # fmt: skip
    assert listed == [
        ("all_reduce", ("model",), (2, 16)),
        ("all_reduce", ("model",), (2, 16)),
        ("all_reduce", ("batch",), (2, 16)),
        ("all_gather", ("model",), (4, 16)),
        ("reduce_scatter", ("batch",), (2, 4)),
        ("collective_permute", ("batch",), (2, 16)),
        ("all_to_all", ("model",), (4, 8)),
        ("all_reduce", ("batch",), (2, 16)),
    ]


@pytest.mark.parametrize("mode", MODES)
def test_shard_map_disagreeing_with_a_tactic_is_a_conflict_at_its_line(mesh, mode):
    fn = region_loss(mesh)
    params = _params()
    # the tactic wants the hidden dimension on batch; the region tiles the rows there
    part = partir.partition([MP({"params/w_in": 1}, axis="batch")], mesh=mesh, mode=mode)(fn)
    plan = part.plan(params, X)
    assert plan.conflicts
    assert any("user shard_map at" in str(c) for c in plan.conflicts)
    _close(part(params, X), jax.jit(fn)(params, X))


def test_shard_map_on_another_mesh_in_spmd_mode_names_the_line(mesh, foreign):
    fn = region_loss(foreign)
    params = _params()
    part = partir.partition(SCHEDULE, mesh=mesh, mode="spmd")(fn)
    with pytest.raises(
        partir.errors.ShardMapError, match=r"jax.shard_map at .*test_user_constraints.py:\d+"
    ):
        part(params, X)
    # annotate mode binds the region on its own mesh, as the user wrote it
    annotated = partir.partition(SCHEDULE, mesh=mesh, mode="annotate")(fn)
    _close(annotated(params, X), jax.jit(fn)(params, X))
