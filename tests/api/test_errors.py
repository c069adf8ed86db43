"""Every user-facing error: its class, and the user's own names in its message."""

import jax
import jax.numpy as jnp
import pytest

import partir
from partir.errors import (
    DimensionError,
    DuplicateShardingError,
    InputMismatchError,
    MeshError,
    PartIRError,
    ScheduleError,
    SelectorError,
    TacticError,
    UnknownAxisError,
)


def loss(params, x):
    return jnp.sum(jnp.tanh(x @ params["w_in"]) @ params["w_out"])


PARAMS = {"w_in": jnp.ones((16, 30)), "w_out": jnp.ones((30, 4))}
X = jnp.ones((8, 16))


def plan(schedule, mesh, *args):
    return partir.partition(schedule, mesh=mesh)(loss).plan(*(args or (PARAMS, X)))


def test_unknown_mesh_axis(mesh):
    with pytest.raises(
        UnknownAxisError, match=r"mesh axis 'tensor', but the mesh has axes \('batch', 'model'\)"
    ):
        plan([partir.ManualPartition({"x": 0}, axis="tensor")], mesh)


def test_selector_matching_nothing(mesh):
    with pytest.raises(
        SelectorError,
        match=r"selector 'params/w_hidden' matches no input or output\. Inputs under 'params' include: params/w_in, params/w_out",
    ):
        plan([partir.ManualPartition({"params/w_hidden": 0}, axis="model")], mesh)


def test_selector_with_unknown_argument(mesh):
    with pytest.raises(SelectorError, match=r"The function's arguments are params, x"):
        plan([partir.ManualPartition({"batch": 0}, axis="batch")], mesh)


def test_dimension_out_of_range(mesh):
    with pytest.raises(
        DimensionError,
        match=r"cannot shard params/w_in \(f32\[16,30\]\) on dim 2: it has rank 2, so dims run from -2 to 1",
    ):
        plan([partir.ManualPartition({"params/w_in": 2}, axis="model")], mesh)


def test_dimension_not_divisible(mesh):
    with pytest.raises(
        DimensionError,
        match=r"cannot shard params/w_in \(f32\[16,30\]\) on dim 1: 30 is not divisible by mesh axis 'batch' of size 4",
    ):
        plan([partir.ManualPartition({"params/w_in": 1}, axis="batch")], mesh)


def test_negative_dimension_is_counted_from_the_end(mesh):
    with pytest.raises(DimensionError, match=r"on dim 1: 30 is not divisible"):
        plan([partir.ManualPartition({"params/w_in": -1}, axis="batch")], mesh)


def test_one_value_sharded_twice_by_one_tactic(mesh):
    with pytest.raises(
        DuplicateShardingError,
        match=r"shards params/w_in twice on axis 'model': selector 'params' asks for dim 0 and 'params/w_in' for dim 1",
    ):
        plan([partir.ManualPartition({"params": 0, "params/w_in": 1}, axis="model")], mesh)


def test_non_array_leaf_selected(mesh):
    def scaled(x, scale):
        return x * scale

    with pytest.raises(
        SelectorError, match=r"selects scale through 'scale', but that input is a Python float"
    ):
        partir.partition([partir.ManualPartition({"scale": 0}, axis="batch")], mesh=mesh)(
            scaled
        ).plan(X, 2.0)


def test_no_mesh_given_and_none_set():
    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")])(loss)
    with pytest.raises(MeshError, match=r"got no mesh and none is set.*jax\.set_mesh"):
        step.plan(PARAMS, X)


def test_mesh_axis_name_reused():
    with pytest.raises(MeshError, match=r"mesh axis name 'batch' is used twice"):
        partir.partition(
            [partir.ManualPartition({"x": 0}, axis="batch")], mesh=[("batch", 2), ("batch", 4)]
        )(loss).plan(PARAMS, X)


@pytest.mark.parametrize("entry", [None, {"x": 0}, "BP"])
def test_schedule_entry_of_wrong_type(entry):
    with pytest.raises(
        ScheduleError,
        match=r"schedule entry 1 is .* not a tactic\. Each entry must be one of: ManualPartition",
    ):
        partir.partition([partir.ManualPartition({"x": 0}, axis="batch"), entry])


def test_schedule_that_is_not_a_list():
    with pytest.raises(ScheduleError, match=r"expects a schedule: a list of tactics, got dict"):
        partir.partition({"x": 0})


def test_tactic_arguments_of_wrong_type():
    with pytest.raises(TacticError, match=r"selector 'x' maps to 'zero'; expected a dimension"):
        partir.ManualPartition({"x": "zero"}, axis="batch")
    with pytest.raises(
        TacticError, match=r"expects `inputs` to map selectors to dimensions, got list"
    ):
        partir.ManualPartition([("x", 0)], axis="batch")  # type: ignore[arg-type]


def test_input_shape_changed_between_plan_and_call(mesh):
    planned = plan([partir.ManualPartition({"x": 0}, axis="batch")], mesh)
    with pytest.raises(
        InputMismatchError, match=r"x: planned float32\[8, 16\], called with float32\[16, 16\]"
    ):
        planned(PARAMS, jnp.ones((16, 16)))


def test_every_error_is_a_partir_error():
    for cls in (
        DimensionError,
        DuplicateShardingError,
        InputMismatchError,
        MeshError,
        ScheduleError,
        SelectorError,
        UnknownAxisError,
    ):
        assert issubclass(cls, PartIRError)


# -- calling, meshes and paths (partir behaves like a jax.jit that plans) -----------------


def test_calling_with_shape_dtype_structs_says_to_plan(mesh):
    from partir.errors import AbstractInputError, ProgramError

    part = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh)(loss)
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), (PARAMS, X))
    with pytest.raises(
        AbstractInputError,
        match=r"called with a jax\.ShapeDtypeStruct at params/w_in \(float32\[16, 30\]\).*"
        r"call \.plan\(\.\.\.\) with the same arguments",
    ):
        part(*abstract)
    assert issubclass(AbstractInputError, ProgramError)
    part.plan(*abstract)  # planning from shapes is what they are for


def test_mesh_given_as_sizes_only():
    with pytest.raises(
        MeshError,
        match=r"partir\.partition\(mesh=\(4, 2\)\): a mesh needs axis names.*"
        r"mesh=\{'batch': 4, 'model': 2\}.*jax\.make_mesh\(\(4, 2\), \('batch', 'model'\)\)",
    ):
        partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=(4, 2))


def test_mesh_sequence_entry_not_a_pair():
    with pytest.raises(MeshError, match=r"entry 1 is 'model'; each entry .* \(name, size\) pair"):
        partir.partition([], mesh=[("batch", 4), "model"])


def test_sharding_of_a_path(mesh):
    planned = plan([partir.ManualPartition({"x": 0}, axis="batch")], mesh)
    assert planned.sharding_of("x") == jax.sharding.NamedSharding(
        mesh, jax.sharding.PartitionSpec("batch")
    )
    assert planned.sharding_of("out") == planned.out_shardings
    assert planned.sharding_of("params/w_in") == planned.in_shardings[0]["w_in"]


def test_sharding_of_an_unknown_path_lists_near_ones(mesh):
    planned = plan([partir.ManualPartition({"x": 0}, axis="batch")], mesh)
    with pytest.raises(
        SelectorError,
        match=r"sharding_of\('params/w_inn'\): no input or output leaf has that path\. "
        r"Near paths: params/w_in",
    ):
        planned.sharding_of("params/w_inn")


def test_unhashable_static_argument(mesh):
    from partir.errors import ProgramError

    def f(x, opts):
        return x * len(opts)

    part = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh,
                            static_argnums=1)(f)  # fmt: skip
    with pytest.raises(ProgramError, match=r"static arguments must be hashable.*argument 1: list"):
        part(X, [1, 2])


def test_argument_both_static_and_donated():
    from partir.errors import ProgramError

    with pytest.raises(ProgramError, match=r"argument\(s\) x are both static and donated"):
        partir.partition([], static_argnums=1, donate_argnums=(0, 1))(loss)


def test_a_scalar_input_says_it_is_a_scalar(mesh):
    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh)(
        lambda x: x * 2
    )
    with pytest.raises(DimensionError, match=r"x \(f32\[\]\) on dim 0: it is a scalar") as info:
        step.plan(jnp.float32(1.0))
    assert "0 to -1" not in str(info.value)


def test_float0_leaves_say_what_they_are(mesh):
    import numpy as np

    from partir.errors import UnsupportedDtypeError

    step = partir.partition([partir.ManualPartition({"x": 0}, axis="batch")], mesh=mesh)(
        lambda x, g: x * 2
    )
    with pytest.raises(UnsupportedDtypeError, match=r"input 'g'.*float0 is the tangent type") as e:
        step.plan(X, np.zeros((8,), dtype=jax.dtypes.float0))
    assert "PRNG" not in str(e.value)


def test_a_parsed_program_called_with_pytrees_names_its_flat_inputs():
    from partir.errors import ProgramError

    def f(x, y):
        return x + y["a"]

    parsed = partir.parse(str(partir.trace(f, jnp.ones(4), {"a": jnp.ones(4)})))
    run = parsed.to_jax()
    with pytest.raises(ProgramError, match=r"takes its 2 input leaves flat.*paths: x, y/a"):
        run(jnp.ones(4), {"a": jnp.ones(4)})
    with pytest.raises(ProgramError, match=r"takes 2 input leaves \(x, y/a\); got 1"):
        run(jnp.ones(4))
    with pytest.raises(ProgramError, match=r"input y/a has shape \(3,\), but .* \(4,\)"):
        run(jnp.ones(4), jnp.ones(3))
    assert jnp.allclose(run(jnp.ones(4), jnp.ones(4))[0], 2.0)
