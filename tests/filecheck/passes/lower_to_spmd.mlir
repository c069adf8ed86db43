// RUN: xdsl-opt %s -p partir-lower-to-spmd,partir-optimize-collectives --split-input-file | filecheck %s
// RUN: partir opt %s -p partir-lower-to-spmd,partir-optimize-collectives --split-input-file | filecheck %s

// Batch rows on "x", Megatron columns of w1 on "y": the second matmul contracts over "y"
// (a pending sum), and the loss sums over both. Local shapes, one all_reduce at the end.
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @mlp(%x: tensor<8x16xf32> {partir.sharding = #partir.sharding<[{"x"}, {}]>}, %w1: tensor<16x32xf32> {partir.sharding = #partir.sharding<[{}, {"y"}]>}, %w2: tensor<32x4xf32>) -> tensor<f32> {
    %h = partir.prim dot_general(%x, %w1) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x16xf32>, tensor<16x32xf32>) -> tensor<8x32xf32>
    %a = partir.prim tanh(%h) [accuracy=None] : (tensor<8x32xf32>) -> tensor<8x32xf32>
    %o = partir.prim dot_general(%a, %w2) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x32xf32>, tensor<32x4xf32>) -> tensor<8x4xf32>
    %s = partir.prim reduce_sum(%o) [axes=(0, 1), out_sharding=None] : (tensor<8x4xf32>) -> tensor<f32>
    func.return %s : tensor<f32>
  }
}
// CHECK-LABEL: func.func @mlp
// CHECK-SAME:    %x: tensor<4x16xf32> {partir.sharding = #partir.sharding<[{"x"}, {}]>}
// CHECK-SAME:    %w1: tensor<16x8xf32>
// CHECK-SAME:    %w2: tensor<8x4xf32> {partir.sharding = #partir.sharding<[{"y"}, {}]>}
// CHECK-NEXT:    partir.prim dot_general{{.*}} -> tensor<4x8xf32>
// CHECK-NEXT:    partir.prim tanh{{.*}} -> tensor<4x8xf32>
// CHECK-NEXT:    partir.prim dot_general{{.*}} -> tensor<4x4xf32>
// CHECK-NEXT:    %[[S:.*]] = partir.prim reduce_sum{{.*}} -> tensor<f32>
// CHECK-NEXT:    %[[R:.*]] = spmd.all_reduce %[[S]] kind sum axes ["x", "y"] : tensor<f32> -> tensor<f32>
// CHECK-NEXT:    func.return %[[R]]

// -----

// Expert parallelism after batch parallelism on one axis: tokens [E, B, d] arrive split
// along the batch, the expert weights [E, d, f] along the experts. Re-tiling the tokens
// (an all_to_all) sends fewer bytes than gathering every expert's weights, so the expert
// matmul and the gelu after it run split along the experts, and the tokens go back to the
// batch split (the second all_to_all) for the op whose plan is batch-split.
builtin.module attributes {partir.mesh = #partir.mesh<["x"=4]>} {
  func.func @experts(%t: tensor<8x8x16xf32> {partir.sharding = #partir.sharding<[{}, {"x"}, {}]>}, %w: tensor<8x16x16xf32> {partir.sharding = #partir.sharding<[{"x"}, {}, {}]>}) -> tensor<8x8x16xf32> {
    %s = partir.prim sin(%t) [accuracy=None] : (tensor<8x8x16xf32>) -> tensor<8x8x16xf32>
    %h = partir.prim dot_general(%s, %w) [dimension_numbers=(((2,), (1,)), ((0,), (0,))), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x8x16xf32>, tensor<8x16x16xf32>) -> tensor<8x8x16xf32>
    %g = partir.prim tanh(%h) [accuracy=None] : (tensor<8x8x16xf32>) -> tensor<8x8x16xf32>
    %c = partir.prim cos(%t) [accuracy=None] : (tensor<8x8x16xf32>) -> tensor<8x8x16xf32>
    %o = partir.prim mul(%g, %c) : (tensor<8x8x16xf32>, tensor<8x8x16xf32>) -> tensor<8x8x16xf32>
    func.return %o : tensor<8x8x16xf32>
  }
}
// CHECK-LABEL: func.func @experts
// CHECK-SAME:    %t: tensor<8x2x16xf32>
// CHECK-SAME:    %w: tensor<2x16x16xf32>
// CHECK-NEXT:    %[[S:.*]] = partir.prim sin(%t)
// CHECK-NEXT:    %[[D:.*]] = spmd.all_to_all %[[S]] src 1 dst 0 axes ["x"] : tensor<8x2x16xf32> -> tensor<2x8x16xf32>
// CHECK-NEXT:    %[[H:.*]] = partir.prim dot_general(%[[D]], %w) {{.*}} -> tensor<2x8x16xf32>
// CHECK-NEXT:    %[[G:.*]] = partir.prim tanh(%[[H]]) {{.*}} -> tensor<2x8x16xf32>
// CHECK-NEXT:    %[[C:.*]] = partir.prim cos(%t)
// CHECK-NEXT:    %[[B:.*]] = spmd.all_to_all %[[G]] src 0 dst 1 axes ["x"] : tensor<2x8x16xf32> -> tensor<8x2x16xf32>
// CHECK-NEXT:    partir.prim mul(%[[B]], %[[C]])
// CHECK-NOT:     spmd.all_gather
