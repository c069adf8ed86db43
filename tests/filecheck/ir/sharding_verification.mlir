// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

// An op's partir.shardings must fit its results on the module's mesh: rank, known axes,
// divisible dims, one sharding per result.

builtin.module attributes {partir.mesh = #partir.mesh<["data"=4, "model"=2]>} {
  func.func @rank(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
    %y = partir.prim tanh(%x) [accuracy=None] {partir.shardings = [#partir.sharding<[{"data"}, {}, {}]>]} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    func.return %y : tensor<8x16xf32>
  }
}
// CHECK: %y (result 0 of partir.prim tanh): sharding #partir.sharding<[{"data"}, {}, {}]> has 3 dims for a value of shape [8, 16]

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["data"=4, "model"=2]>} {
  func.func @axis(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
    %y = partir.prim tanh(%x) [accuracy=None] {partir.shardings = [#partir.sharding<[{"batch"}, {}]>]} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    func.return %y : tensor<8x16xf32>
  }
}
// CHECK: %y (result 0 of partir.prim tanh): sharding #partir.sharding<[{"batch"}, {}]> names mesh axis 'batch', which the module's mesh ['data', 'model'] does not have

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["data"=4, "model"=2]>} {
  func.func @divisible(%x: tensor<6x16xf32>) -> tensor<6x16xf32> {
    %y = partir.prim tanh(%x) [accuracy=None] {partir.shardings = [#partir.sharding<[{"data"}, {}]>]} : (tensor<6x16xf32>) -> tensor<6x16xf32>
    func.return %y : tensor<6x16xf32>
  }
}
// CHECK: %y (result 0 of partir.prim tanh): dim 0 of size 6 is not divisible by 4 (mesh axes data)

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["data"=4, "model"=2]>} {
  func.func @count(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
    %y = partir.prim tanh(%x) [accuracy=None] {partir.shardings = []} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    func.return %y : tensor<8x16xf32>
  }
}
// CHECK: 'partir.prim' op: partir.shardings must hold one sharding per value (1), got: 0

// -----

// CHECK: partir.prim tanh(%x) [accuracy=None] {partir.shardings = [#partir.sharding<[{"data"}, {"model"}]>]}
builtin.module attributes {partir.mesh = #partir.mesh<["data"=4, "model"=2]>} {
  func.func @fits(%x: tensor<8x16xf32>) -> tensor<8x16xf32> {
    %y = partir.prim tanh(%x) [accuracy=None] {partir.shardings = [#partir.sharding<[{"data"}, {"model"}]>]} : (tensor<8x16xf32>) -> tensor<8x16xf32>
    func.return %y : tensor<8x16xf32>
  }
}
