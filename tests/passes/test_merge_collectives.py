"""optimize-collectives merges identical collectives with xDSL's CSE (no devices needed)."""

from xdsl.dialects.builtin import StringAttr

from partir import ir
from partir.passes.optimize_collectives import WHY, _merge_duplicates

TEXT = """
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @f(%a: tensor<2x8xf32>, %b: tensor<8x8xf32>)
      -> (tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>) {
    %g1 = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %g2 = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %g3 = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %s = spmd.all_reduce %b kind sum axes ["x"] : tensor<8x8xf32> -> tensor<8x8xf32>
    %m = spmd.all_reduce %b kind max axes ["x"] : tensor<8x8xf32> -> tensor<8x8xf32>
    %dead = spmd.all_reduce %b kind sum axes ["y"] : tensor<8x8xf32> -> tensor<8x8xf32>
    func.return %g1, %g2, %s, %m : tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>
  }
}
"""


def _collectives(module):
    return [op for op in module.walk() if isinstance(op, ir.CollectiveOp)]


def test_duplicates_merge_whatever_they_say_about_why():
    module = ir.parse_module(TEXT)
    g1, g2, *_ = _collectives(module)
    g1.attributes[WHY] = StringAttr("for the first matmul")
    g2.attributes[WHY] = StringAttr("for the second matmul")
    _merge_duplicates(module)
    module.verify()
    left = _collectives(module)
    gathers = [op for op in left if isinstance(op, ir.AllGatherOp)]
    assert gathers == [g1]
    assert g1.attributes[WHY] == StringAttr("for the first matmul")
    ret = module.body.block.first_op.body.block.last_op
    assert ret.operands[0] is ret.operands[1] is g1.result


def test_different_kinds_stay_and_dead_collectives_go():
    module = ir.parse_module(TEXT)
    _merge_duplicates(module)
    reduces = [op for op in _collectives(module) if isinstance(op, ir.AllReduceOp)]
    assert sorted(op.kind.data.value for op in reduces) == ["max", "sum"]
    assert all(op.result.uses for op in _collectives(module))
