// RUN: xdsl-opt %s -p partir-optimize-collectives --split-input-file | filecheck %s

// all_slice . all_reduce -> reduce_scatter
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @slice_of_reduce(%a: tensor<8x4xf32>) -> tensor<2x4xf32> {
    %r = spmd.all_reduce %a kind sum axes ["y"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
    func.return %s : tensor<2x4xf32>
  }
}
// CHECK-LABEL: func.func @slice_of_reduce
// CHECK-NEXT:    %{{.*}} = spmd.reduce_scatter %a dim 0 kind sum axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
// CHECK-NOT:     spmd.all_reduce
// CHECK-NOT:     spmd.all_slice

// -----

// a reduction over more axes than are sliced keeps the rest as an all_reduce
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @slice_of_wider_reduce(%a: tensor<8x4xf32>) -> tensor<2x4xf32> {
    %r = spmd.all_reduce %a kind sum axes ["x", "y"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
    func.return %s : tensor<2x4xf32>
  }
}
// CHECK-LABEL: func.func @slice_of_wider_reduce
// CHECK-NEXT:    %[[R:.*]] = spmd.all_reduce %a kind sum axes ["x"] : tensor<8x4xf32> -> tensor<8x4xf32>
// CHECK-NEXT:    %{{.*}} = spmd.reduce_scatter %[[R]] dim 0 kind sum axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>

// -----

// all_slice . all_gather on the same dim and axes -> identity
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @slice_of_gather(%a: tensor<2x4xf32>) -> tensor<2x4xf32> {
    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %g dim 0 axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
    func.return %s : tensor<2x4xf32>
  }
}
// CHECK-LABEL: func.func @slice_of_gather
// CHECK-NEXT:    func.return %a : tensor<2x4xf32>

// -----

// all_slice(e) . all_gather(d), d != e -> all_to_all(d -> e)
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @slice_other_dim_of_gather(%a: tensor<2x8xf32>) -> tensor<8x2xf32> {
    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %s = spmd.all_slice %g dim 1 axes ["y"] : tensor<8x8xf32> -> tensor<8x2xf32>
    func.return %s : tensor<8x2xf32>
  }
}
// CHECK-LABEL: func.func @slice_other_dim_of_gather
// CHECK-NEXT:    %{{.*}} = spmd.all_to_all %a src 0 dst 1 axes ["y"] : tensor<2x8xf32> -> tensor<8x2xf32>
// CHECK-NEXT:    func.return

// -----

// a gather with another consumer is kept: slicing it again costs nothing, re-gathering would
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @shared_gather(%a: tensor<2x8xf32>) -> (tensor<8x2xf32>, tensor<8x8xf32>) {
    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %s = spmd.all_slice %g dim 1 axes ["y"] : tensor<8x8xf32> -> tensor<8x2xf32>
    func.return %s, %g : tensor<8x2xf32>, tensor<8x8xf32>
  }
}
// CHECK-LABEL: func.func @shared_gather
// CHECK-NEXT:    %g = spmd.all_gather %a dim 0 axes ["y"]
// CHECK-NEXT:    %s = spmd.all_slice %g dim 1 axes ["y"]

// -----

// one gather per value, however many consumers need it gathered
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @duplicate_gathers(%a: tensor<2x8xf32>) -> (tensor<8x8xf32>, tensor<8x8xf32>) {
    %g1 = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %g2 = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    func.return %g1, %g2 : tensor<8x8xf32>, tensor<8x8xf32>
  }
}
// CHECK-LABEL: func.func @duplicate_gathers
// CHECK-NEXT:    %g1 = spmd.all_gather %a dim 0 axes ["y"]
// CHECK-NEXT:    func.return %g1, %g1

// -----

// an all_reduce feeding slices along d and a reduce_sum over d: reduce-scatter once, sum the
// local slice, all-reduce the small sum (exact: the sum is linear)
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @reduce_feeding_slice_and_sum(%a: tensor<8x4xf32>) -> (tensor<2x4xf32>, tensor<4xf32>) {
    %r = spmd.all_reduce %a kind sum axes ["y"] : tensor<8x4xf32> -> tensor<8x4xf32>
    %s = spmd.all_slice %r dim 0 axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
    %t = partir.prim reduce_sum(%r) [axes=(0,), out_sharding=None] : (tensor<8x4xf32>) -> tensor<4xf32>
    func.return %s, %t : tensor<2x4xf32>, tensor<4xf32>
  }
}
// CHECK-LABEL: func.func @reduce_feeding_slice_and_sum
// CHECK-NEXT:    %[[RS:.*]] = spmd.reduce_scatter %a dim 0 kind sum axes ["y"] : tensor<8x4xf32> -> tensor<2x4xf32>
// CHECK-NEXT:    %[[L:.*]] = partir.prim reduce_sum(%[[RS]]) [axes=(0,), out_sharding=None] : (tensor<2x4xf32>) -> tensor<4xf32>
// CHECK-NEXT:    %[[T:.*]] = spmd.all_reduce %[[L]] kind sum axes ["y"] : tensor<4xf32> -> tensor<4xf32>
// CHECK-NEXT:    func.return %[[RS]], %[[T]]

// -----

// a gather feeding only a narrowing convert: convert the local shard, gather half the bytes
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @gather_before_narrowing_convert(%a: tensor<2x8xf32>) -> tensor<8x8xbf16> {
    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xf32> -> tensor<8x8xf32>
    %c = partir.prim convert_element_type(%g) [new_dtype=bfloat16, weak_type=False, sharding=None] : (tensor<8x8xf32>) -> tensor<8x8xbf16>
    func.return %c : tensor<8x8xbf16>
  }
}
// CHECK-LABEL: func.func @gather_before_narrowing_convert
// CHECK-NEXT:    %[[C:.*]] = partir.prim convert_element_type(%a) [new_dtype=bfloat16, weak_type=False, sharding=None] : (tensor<2x8xf32>) -> tensor<2x8xbf16>
// CHECK-NEXT:    %[[G:.*]] = spmd.all_gather %[[C]] dim 0 axes ["y"] : tensor<2x8xbf16> -> tensor<8x8xbf16>
// CHECK-NEXT:    func.return %[[G]]

// -----

// a widening convert, or a gather with another user, stays as it is
builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @gather_before_widening_convert(%a: tensor<2x8xbf16>) -> (tensor<8x8xf32>, tensor<8x8xbf16>) {
    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xbf16> -> tensor<8x8xbf16>
    %c = partir.prim convert_element_type(%g) [new_dtype=float32, weak_type=False, sharding=None] : (tensor<8x8xbf16>) -> tensor<8x8xf32>
    func.return %c, %g : tensor<8x8xf32>, tensor<8x8xbf16>
  }
}
// CHECK-LABEL: func.func @gather_before_widening_convert
// CHECK-NEXT:    %g = spmd.all_gather %a dim 0 axes ["y"] : tensor<2x8xbf16> -> tensor<8x8xbf16>
// CHECK-NEXT:    %c = partir.prim convert_element_type(%g)
