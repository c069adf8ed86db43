"""Sharding attributes are verified against the values they describe and the module's mesh,
and every zoo model's propagated, lowered and optimized modules verify."""

import pytest
from xdsl.dialects.builtin import DictionaryAttr
from xdsl.utils.exceptions import VerifyException

import partir
from partir import ir
from partir.testing import models, schedules

ZOO = ("mlp", "gpt", "gpt_scan", "moe", "unet")


@pytest.fixture(scope="module", params=ZOO)
def planned(request):
    model = models.get(request.param)
    step = partir.partition(
        schedules.schedule(request.param, "BP+MP+Z3"), mesh={"batch": 4, "model": 2}
    )(model.fn)
    return step.plan(*model.args)


def test_zoo_modules_verify(planned):
    planned.propagator.write_to_ir()
    module = planned.propagator.module
    ir.verify_module(module)
    assert "partir.shardings" in str(module)  # the check had shardings to look at
    ir.verify_module(
        planned.lowered.module, local=True
    )  # lowered, then optimized by `plan.lowered`


def _with_arg_sharding(plan, index, sharding):
    fn = plan.propagator.entry()
    attrs = list(fn.arg_attrs.data)
    entries = dict(attrs[index].data)
    entries["partir.sharding"] = ir.ShardingAttr(sharding)
    attrs[index] = DictionaryAttr(entries)
    fn.arg_attrs = type(fn.arg_attrs)(attrs)


def test_bad_argument_sharding_names_path_axis_and_dim():
    model = models.get("mlp")
    plan = partir.partition(schedules.schedule("mlp", "BP"), mesh={"batch": 8})(model.fn).plan(
        *model.args
    )
    plan.propagator.write_to_ir()
    paths = plan.program.input_paths
    i = paths.index("params/layers/0/w")
    _with_arg_sharding(plan, i, ir.Sharding((("batch",), ("nope",))))
    with pytest.raises(VerifyException, match=r"params/layers/0/w.*names mesh axis 'nope'"):
        ir.verify_module(plan.propagator.module)
    _with_arg_sharding(plan, i, ir.Sharding((("batch",),)))
    with pytest.raises(VerifyException, match=r"params/layers/0/w.*has 1 dims"):
        ir.verify_module(plan.propagator.module)


def test_op_sharding_checked_in_verify(planned):
    planned.propagator.write_to_ir()
    module = planned.propagator.module.clone()
    op = next(o for o in module.walk() if "partir.shardings" in o.attributes)
    rank = len(op.results[0].type.get_shape())
    bad = ir.Sharding(((),) * (rank + 1))
    op.attributes["partir.shardings"] = type(op.attributes["partir.shardings"])(
        [ir.ShardingAttr(bad), *op.attributes["partir.shardings"].data[1:]]
    )
    with pytest.raises(VerifyException, match=rf"result 0 of .*has {rank + 1} dims"):
        module.verify()


def test_verify_if_enabled_names_the_pass(monkeypatch):
    model = models.get("mlp")
    plan = partir.partition(schedules.schedule("mlp", "BP"), mesh={"batch": 8})(model.fn).plan(
        *model.args
    )
    plan.propagator.write_to_ir()
    module = plan.propagator.module
    _with_arg_sharding(plan, 0, ir.Sharding((("ghost",),)))
    monkeypatch.setenv(ir.verify.VERIFY_ENV, "0")
    ir.verify_if_enabled(module, "some-pass")  # off: nothing checked
    monkeypatch.setenv(ir.verify.VERIFY_ENV, "1")
    with pytest.raises(VerifyException, match=r"after some-pass: .*'ghost'"):
        ir.verify_if_enabled(module, "some-pass")
