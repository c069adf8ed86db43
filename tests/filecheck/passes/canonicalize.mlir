// RUN: partir opt %s -p canonicalize --split-input-file | filecheck %s

// The collective algebra as the spmd ops' canonicalization patterns: a slice of a sum is a
// reduce-scatter, a slice of a gather on its dim is nothing, on another dim an all_to_all.

builtin.module attributes {partir.mesh = #partir.mesh<["x"=4, "y"=2]>} {
  func.func @slice_of_sum(%a: tensor<8x4xf32>) -> tensor<2x4xf32> {
    %r = spmd.all_reduce %a kind sum axes ["x", "y"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["x"] : tensor<8x4xf32> -> tensor<2x4xf32>
    func.return %s : tensor<2x4xf32>
  }
}
// CHECK-LABEL: func.func @slice_of_sum
// CHECK-NEXT:    %[[R:.*]] = spmd.all_reduce %a kind sum axes ["y"] : tensor<8x4xf32> -> tensor<8x4xf32>
// CHECK-NEXT:    %{{.*}} = spmd.reduce_scatter %[[R]] dim 0 kind sum axes ["x"] : tensor<8x4xf32> -> tensor<2x4xf32>
// CHECK-NOT:     spmd.all_slice

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=4]>} {
  func.func @slice_of_gather(%a: tensor<2x8xf32>) -> (tensor<2x8xf32>, tensor<8x2xf32>) {
    %g = spmd.all_gather %a dim 0 axes ["x"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %s = spmd.all_slice %g dim 0 axes ["x"] : tensor<8x8xf32> -> tensor<2x8xf32>
    %g2 = spmd.all_gather %a dim 0 axes ["x"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %t = spmd.all_slice %g2 dim 1 axes ["x"] : tensor<8x8xf32> -> tensor<8x2xf32>
    func.return %s, %t : tensor<2x8xf32>, tensor<8x2xf32>
  }
}
// CHECK-LABEL: func.func @slice_of_gather
// CHECK-NEXT:    %[[T:.*]] = spmd.all_to_all %a src 0 dst 1 axes ["x"] : tensor<2x8xf32> -> tensor<8x2xf32>
// CHECK-NEXT:    func.return %a, %[[T]]

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=4]>} {
  func.func @split_reduce(%a: tensor<8x4xf32>) -> (tensor<2x4xf32>, tensor<4xf32>) {
    %r = spmd.all_reduce %a kind sum axes ["x"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["x"] : tensor<8x4xf32> -> tensor<2x4xf32>
    %t = partir.prim reduce_sum(%r) [axes=(0,), out_sharding=None] : (tensor<8x4xf32>) -> tensor<4xf32>
    func.return %s, %t : tensor<2x4xf32>, tensor<4xf32>
  }
}
// CHECK-LABEL: func.func @split_reduce
// CHECK-NEXT:    %[[RS:.*]] = spmd.reduce_scatter %a dim 0 kind sum axes ["x"] : tensor<8x4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    %[[L:.*]] = partir.prim reduce_sum(%[[RS]])
// CHECK-NEXT:    %[[R:.*]] = spmd.all_reduce %[[L]] kind sum axes ["x"] : tensor<4xf32> -> tensor<4xf32>
// CHECK-NEXT:    func.return %[[RS]], %[[R]]
