// RUN: xdsl-opt %s --split-input-file --verify-diagnostics | filecheck %s

// Collective verifiers check local shapes against the enclosing module's mesh.

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @gather_wrong_size(%a: tensor<4xf32>) -> tensor<6xf32> {
    %b = spmd.all_gather %a dim 0 axes ["x"] : tensor<4xf32> -> tensor<6xf32>
    func.return %b : tensor<6xf32>
  }
}
// CHECK: 'spmd.all_gather' op result shape (6,) does not match the operand (4,) over axes ('x',), expected: (8,)

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @slice_not_divisible(%a: tensor<6xf32>) -> tensor<1xf32> {
    %b = spmd.all_slice %a dim 0 axes ["y"] : tensor<6xf32> -> tensor<1xf32>
    func.return %b : tensor<1xf32>
  }
}
// CHECK: 'spmd.all_slice' op dim 0 of size 6 is not divisible by 4

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @unknown_axis(%a: tensor<8xf32>) -> tensor<8xf32> {
    %b = spmd.all_reduce %a kind sum axes ["z"] : tensor<8xf32> -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }
}
// CHECK: unknown mesh axis 'z'; the mesh has ('x', 'y')

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @bad_kind(%a: tensor<8xf32>) -> tensor<8xf32> {
    %b = spmd.all_reduce %a kind product axes ["x"] : tensor<8xf32> -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }
}
// CHECK: 'spmd.all_reduce' op kind must be one of ('sum', 'max', 'min'), got: product

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @all_to_all_same_dim(%a: tensor<8x8xf32>) -> tensor<8x8xf32> {
    %b = spmd.all_to_all %a src 1 dst 1 axes ["y"] : tensor<8x8xf32> -> tensor<8x8xf32>
    func.return %b : tensor<8x8xf32>
  }
}
// CHECK: 'spmd.all_to_all' op src and dst must differ, got: 1

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @repeated_axis(%a: tensor<8xf32>) -> tensor<8xf32> {
    %b = spmd.all_reduce %a kind sum axes ["x", "x"] : tensor<8xf32> -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }
}
// CHECK: 'spmd.all_reduce' op repeats a mesh axis, got: ('x', 'x')

// -----

builtin.module attributes {partir.mesh = #partir.mesh<["x"=2, "y"=4]>} {
  func.func @permute_out_of_group(%a: tensor<8xf32>) -> tensor<8xf32> {
    %b = spmd.collective_permute %a pairs [[0, 2]] axes ["x"] : tensor<8xf32> -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }
}
// CHECK: 'spmd.collective_permute' op pair (0, 2) outside a group of 2

// -----

builtin.module {
  func.func @no_mesh(%a: tensor<8xf32>) -> tensor<8xf32> {
    %b = spmd.all_reduce %a kind sum axes ["x"] : tensor<8xf32> -> tensor<8xf32>
    func.return %b : tensor<8xf32>
  }
}
// CHECK: 'spmd.all_reduce' op needs an enclosing module with a partir.mesh attribute
