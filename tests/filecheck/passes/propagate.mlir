// RUN: xdsl-opt %s -p partir-propagate --split-input-file | filecheck %s
// RUN: partir opt %s -p partir-propagate --split-input-file | filecheck %s
// RUN: xdsl-opt %s -p 'partir-propagate{axes=y,x}' --split-input-file | filecheck %s --check-prefix=YX

// A two-layer MLP: rows of x on "x", w1's columns on "y". The first matmul's result is
// tiled on both, the second contracts over "y" (partial), the sum over both axes.
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @mlp_batch_and_megatron(%x: tensor<8x16xf32> {partir.sharding = #partir.sharding<[{"x"}, {}]>}, %w1: tensor<16x32xf32> {partir.sharding = #partir.sharding<[{}, {"y"}]>}, %w2: tensor<32x4xf32>) -> tensor<f32> {
    %h = partir.prim dot_general(%x, %w1) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
    %a = partir.prim tanh(%h) [accuracy=None] : (tensor<8x32xf32>) -> tensor<8x32xf32>
    %o = partir.prim dot_general(%a, %w2) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x32xf32>, tensor<32x4xf32>) -> tensor<8x4xf32>
    %s = partir.prim reduce_sum(%o) [axes=(0, 1), out_sharding=None] : (tensor<8x4xf32>) -> tensor<f32>
    func.return %s : tensor<f32>
  }
}
// CHECK-LABEL: func.func @mlp_batch_and_megatron
// CHECK-SAME:    %w2: tensor<32x4xf32> {partir.sharding = #partir.sharding<[{"y"}, {}]>}
// CHECK-NEXT:    partir.prim dot_general{{.*}} {partir.shardings = [#partir.sharding<[{"x"}, {"y"}]>]}
// CHECK-NEXT:    partir.prim tanh{{.*}} {partir.shardings = [#partir.sharding<[{"x"}, {"y"}]>]}
// CHECK-NEXT:    partir.prim dot_general{{.*}} {partir.shardings = [#partir.sharding<[{"x"}, {}], partial=sum{"y"}>]}
// CHECK-NEXT:    partir.prim reduce_sum{{.*}} {partir.shardings = [#partir.sharding<[], partial=sum{"x", "y"}>]}
// YX-LABEL:      func.func @mlp_batch_and_megatron
// YX:            partir.prim reduce_sum{{.*}} {partir.shardings = [#partir.sharding<[], partial=sum{"y", "x"}>]}

// -----

// Earlier axes win: "x" tiles the contraction dim of the matmul through w's seed, and the
// rows of a on the same axis meet it there: a conflict, listed on the module.
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @conflict_on_one_axis(%a: tensor<8x16xf32> {partir.sharding = #partir.sharding<[{"x"}, {}]>}, %w: tensor<16x4xf32> {partir.sharding = #partir.sharding<[{"x"}, {}]>}) -> tensor<8x4xf32> {
    %y = partir.prim dot_general(%a, %w) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x16xf32>, tensor<16x4xf32>) -> tensor<8x4xf32>
    func.return %y : tensor<8x4xf32>
  }
}
// CHECK:       builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>, partir.conflicts = ["axis 'x' at unknown: factor {{.*}}"]}
// CHECK-LABEL: func.func @conflict_on_one_axis
// CHECK-NEXT:    partir.prim dot_general
// CHECK-NOT:     partir.shardings

// -----

// An intermediate value's sharding seeds too: tiling the tanh result on "y" reaches w1.
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @seed_in_the_middle(%x: tensor<8x16xf32>, %w1: tensor<16x32xf32>) -> tensor<8x32xf32> {
    %h = partir.prim dot_general(%x, %w1) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
    %a = partir.prim tanh(%h) [accuracy=None] {partir.shardings = [#partir.sharding<[{}, {"y"}]>]} : (tensor<8x32xf32>) -> tensor<8x32xf32>
    func.return %a : tensor<8x32xf32>
  }
}
// CHECK-LABEL: func.func @seed_in_the_middle
// CHECK-SAME:    %w1: tensor<16x32xf32> {partir.sharding = #partir.sharding<[{}, {"y"}]>}
// CHECK-NEXT:    partir.prim dot_general{{.*}} {partir.shardings = [#partir.sharding<[{}, {"y"}]>]}
