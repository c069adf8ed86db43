// RUN: xdsl-opt %s -p partir-populate-rules --split-input-file | filecheck %s

// Golden factor rules, one function per primitive case, alphabetical by primitive.
// Notation: operands->results, one letter per factor, "(ij)" a dimension of several
// factors (major first), "1" a size-1 dimension, nothing for a rank-0 tensor.

func.func @add_broadcast_size1_operand_dim(%x: tensor<16x64xf32>, %b: tensor<1x64xf32>) -> tensor<16x64xf32> {
  %y = partir.prim add(%x, %b) : (tensor<16x64xf32>, tensor<1x64xf32>) -> tensor<16x64xf32>
  func.return %y : tensor<16x64xf32>
}
// CHECK-LABEL: func.func @add_broadcast_size1_operand_dim
// CHECK:         partir.rule = "ij,1j->ij {i=16, j=64}"

// -----

func.func @add_scalar_operand(%s: tensor<f32>, %x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = partir.prim add(%s, %x) : (tensor<f32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @add_scalar_operand
// CHECK:         partir.rule = "_,ij->ij {i=4, j=8}"

// -----

func.func @argmax_middle_axis(%x: tensor<4x6x8xf32>) -> tensor<4x8xi32> {
  %y = partir.prim argmax(%x) [axes=(1,), index_dtype=int32] : (tensor<4x6x8xf32>) -> tensor<4x8xi32>
  func.return %y : tensor<4x8xi32>
}
// CHECK-LABEL: func.func @argmax_middle_axis
// CHECK:         partir.rule = "ijk->ik {i=4, j=6, k=8} replicate={j}"

// -----

func.func @broadcast_in_dim_scalar(%s: tensor<f32>) -> tensor<4x8xf32> {
  %y = partir.prim broadcast_in_dim(%s) [shape=(4, 8), broadcast_dimensions=(), sharding=None] : (tensor<f32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @broadcast_in_dim_scalar
// CHECK:         partir.rule = "_->ij {i=4, j=8}"

// -----

func.func @broadcast_in_dim_size1_expansion(%x: tensor<1x8xf32>) -> tensor<2x4x8xf32> {
  %y = partir.prim broadcast_in_dim(%x) [shape=(2, 4, 8), broadcast_dimensions=(1, 2), sharding=None] : (tensor<1x8xf32>) -> tensor<2x4x8xf32>
  func.return %y : tensor<2x4x8xf32>
}
// CHECK-LABEL: func.func @broadcast_in_dim_size1_expansion
// CHECK:         partir.rule = "1k->ijk {i=2, j=4, k=8}"

// -----

func.func @broadcast_in_dim_vector_to_rows(%x: tensor<64xf32>) -> tensor<16x64xf32> {
  %y = partir.prim broadcast_in_dim(%x) [shape=(16, 64), broadcast_dimensions=(1,), sharding=None] : (tensor<64xf32>) -> tensor<16x64xf32>
  func.return %y : tensor<16x64xf32>
}
// CHECK-LABEL: func.func @broadcast_in_dim_vector_to_rows
// CHECK:         partir.rule = "j->ij {i=16, j=64}"

// -----

func.func @cholesky_batched(%a: tensor<4x8x8xf32>) -> tensor<4x8x8xf32> {
  %l = partir.prim cholesky(%a) : (tensor<4x8x8xf32>) -> tensor<4x8x8xf32>
  func.return %l : tensor<4x8x8xf32>
}
// CHECK-LABEL: func.func @cholesky_batched
// CHECK:         partir.rule = "ijk->ijk {i=4, j=8, k=8} replicate={j,k}"

// -----

func.func @clamp_scalar_bounds(%lo: tensor<f32>, %x: tensor<4x8xf32>, %hi: tensor<f32>) -> tensor<4x8xf32> {
  %y = partir.prim clamp(%lo, %x, %hi) : (tensor<f32>, tensor<4x8xf32>, tensor<f32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @clamp_scalar_bounds
// CHECK:         partir.rule = "_,ij,_->ij {i=4, j=8}"

// -----

func.func @concatenate_last_dim(%a: tensor<8x32xf32>, %b: tensor<8x16xf32>) -> tensor<8x48xf32> {
  %y = partir.prim concatenate(%a, %b) [dimension=1] : (tensor<8x32xf32>, tensor<8x16xf32>) -> tensor<8x48xf32>
  func.return %y : tensor<8x48xf32>
}
// CHECK-LABEL: func.func @concatenate_last_dim
// CHECK:         partir.rule = "ij,ik->il {i=8, j=32, k=16, l=48} replicate={j,k,l}"

// -----

func.func @conv_general_dilated_grouped(%x: tensor<8x16x16x4xf32>, %w: tensor<3x3x2x8xf32>) -> tensor<8x16x16x8xf32> {
  %y = partir.prim conv_general_dilated(%x, %w) [window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(1, 1), rhs_dilation=(1, 1), dimension_numbers=ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)), feature_group_count=2, batch_group_count=1, precision=None, preferred_element_type=None, out_sharding=None] : (tensor<8x16x16x4xf32>, tensor<3x3x2x8xf32>) -> tensor<8x16x16x8xf32>
  func.return %y : tensor<8x16x16x8xf32>
}
// CHECK-LABEL: func.func @conv_general_dilated_grouped
// CHECK:         partir.rule = "impk,nqlj->iorj {i=8, j=8, k=4, l=2, m=16, n=3, o=16, p=16, q=3, r=16} replicate={j,k,l,m,n,o,p,q,r}"

// -----

func.func @conv_general_dilated_nhwc(%x: tensor<8x16x16x4xf32>, %w: tensor<3x3x4x8xf32>) -> tensor<8x16x16x8xf32> {
  %y = partir.prim conv_general_dilated(%x, %w) [window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(1, 1), rhs_dilation=(1, 1), dimension_numbers=ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2)), feature_group_count=1, batch_group_count=1, precision=None, preferred_element_type=None, out_sharding=None] : (tensor<8x16x16x4xf32>, tensor<3x3x4x8xf32>) -> tensor<8x16x16x8xf32>
  func.return %y : tensor<8x16x16x8xf32>
}
// CHECK-LABEL: func.func @conv_general_dilated_nhwc
// CHECK:         partir.rule = "ilok,mpkj->inqj {i=8, j=8, k=4, l=16, m=3, n=16, o=16, p=3, q=16} reduce={k} replicate={l,m,n,o,p,q}"

// -----

func.func @convert_element_type_scalar(%x: tensor<i32>) -> tensor<f32> {
  %y = partir.prim convert_element_type(%x) [new_dtype=float32, weak_type=False, sharding=None] : (tensor<i32>) -> tensor<f32>
  func.return %y : tensor<f32>
}
// CHECK-LABEL: func.func @convert_element_type_scalar
// CHECK:         partir.rule = "_->_ {}"

// -----

func.func @cumsum_axis1(%x: tensor<4x6xf32>) -> tensor<4x6xf32> {
  %y = partir.prim cumsum(%x) [axis=1, reverse=False] : (tensor<4x6xf32>) -> tensor<4x6xf32>
  func.return %y : tensor<4x6xf32>
}
// CHECK-LABEL: func.func @cumsum_axis1
// CHECK:         partir.rule = "ij->ij {i=4, j=6} replicate={j}"

// -----

func.func @dot_general_batch_two_contracting(%x: tensor<2x8x4x6xf32>, %w: tensor<2x4x6x16xf32>) -> tensor<2x8x16xf32> {
  %y = partir.prim dot_general(%x, %w) [dimension_numbers=(((2, 3), (1, 2)), ((0,), (0,))), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<2x8x4x6xf32>, tensor<2x4x6x16xf32>) -> tensor<2x8x16xf32>
  func.return %y : tensor<2x8x16xf32>
}
// CHECK-LABEL: func.func @dot_general_batch_two_contracting
// CHECK:         partir.rule = "ijlm,ilmk->ijk {i=2, j=8, k=16, l=4, m=6} reduce={l,m}"

// -----

func.func @dot_general_matmul(%x: tensor<8x32xf32>, %w: tensor<32x16xf32>) -> tensor<8x16xf32> {
  %y = partir.prim dot_general(%x, %w) [dimension_numbers=(((1,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<8x32xf32>, tensor<32x16xf32>) -> tensor<8x16xf32>
  func.return %y : tensor<8x16xf32>
}
// CHECK-LABEL: func.func @dot_general_matmul
// CHECK:         partir.rule = "ik,kj->ij {i=8, j=16, k=32} reduce={k}"

// -----

func.func @dot_general_vector_dot(%x: tensor<32xf32>, %w: tensor<32xf32>) -> tensor<f32> {
  %y = partir.prim dot_general(%x, %w) [dimension_numbers=(((0,), (0,)), ((), ())), precision=None, preferred_element_type=float32, out_sharding=None] : (tensor<32xf32>, tensor<32xf32>) -> tensor<f32>
  func.return %y : tensor<f32>
}
// CHECK-LABEL: func.func @dot_general_vector_dot
// CHECK:         partir.rule = "i,i->_ {i=32} reduce={i}"

// -----

func.func @dynamic_slice_rows(%x: tensor<4x8xf32>, %i: tensor<i32>, %j: tensor<i32>) -> tensor<2x8xf32> {
  %y = partir.prim dynamic_slice(%x, %i, %j) [slice_sizes=(2, 8)] : (tensor<4x8xf32>, tensor<i32>, tensor<i32>) -> tensor<2x8xf32>
  func.return %y : tensor<2x8xf32>
}
// CHECK-LABEL: func.func @dynamic_slice_rows
// CHECK:         partir.rule = "ik,_,_->jk {i=4, j=2, k=8} replicate={i,j}"

// -----

func.func @dynamic_update_slice_rows(%x: tensor<4x8xf32>, %u: tensor<2x8xf32>, %i: tensor<i32>, %j: tensor<i32>) -> tensor<4x8xf32> {
  %y = partir.prim dynamic_update_slice(%x, %u, %i, %j) : (tensor<4x8xf32>, tensor<2x8xf32>, tensor<i32>, tensor<i32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @dynamic_update_slice_rows
// CHECK:         partir.rule = "ik,jk,_,_->ik {i=4, j=2, k=8} replicate={i,j}"

// -----

func.func @exp_size0(%x: tensor<0x4xf32>) -> tensor<0x4xf32> {
  %y = partir.prim exp(%x) [accuracy=None] : (tensor<0x4xf32>) -> tensor<0x4xf32>
  func.return %y : tensor<0x4xf32>
}
// CHECK-LABEL: func.func @exp_size0
// CHECK:         partir.rule = "ij->ij {i=0, j=4}"

// -----

func.func @gather_batching_dims(%x: tensor<4x8xf32>, %i: tensor<4x3x1xi32>) -> tensor<4x3xf32> {
  %y = partir.prim gather(%x, %i) [dimension_numbers=GatherDimensionNumbers(offset_dims=(), collapsed_slice_dims=(1,), start_index_map=(1,), operand_batching_dims=(0,), start_indices_batching_dims=(0,)), slice_sizes=(1, 1), unique_indices=False, indices_are_sorted=False, mode=GatherScatterMode.FILL_OR_DROP, fill_value=nan] : (tensor<4x8xf32>, tensor<4x3x1xi32>) -> tensor<4x3xf32>
  func.return %y : tensor<4x3xf32>
}
// CHECK-LABEL: func.func @gather_batching_dims
// CHECK:         partir.rule = "ik,ij1->ij {i=4, j=3, k=8} replicate={k}"

// -----

func.func @gather_embedding_lookup(%table: tensor<64x32xf32>, %tokens: tensor<8x16x1xi32>) -> tensor<8x16x32xf32> {
  %y = partir.prim gather(%table, %tokens) [dimension_numbers=GatherDimensionNumbers(offset_dims=(2,), collapsed_slice_dims=(0,), start_index_map=(0,), operand_batching_dims=(), start_indices_batching_dims=()), slice_sizes=(1, 32), unique_indices=False, indices_are_sorted=False, mode=GatherScatterMode.PROMISE_IN_BOUNDS, fill_value=None] : (tensor<64x32xf32>, tensor<8x16x1xi32>) -> tensor<8x16x32xf32>
  func.return %y : tensor<8x16x32xf32>
}
// CHECK-LABEL: func.func @gather_embedding_lookup
// CHECK:         partir.rule = "kl,ij1->ijl {i=8, j=16, k=64, l=32} replicate={k}"

// -----

func.func @iota_2d() -> tensor<16x8xi32> {
  %y = partir.prim iota() [dtype=int32, shape=(16, 8), dimension=1, sharding=None] : () -> tensor<16x8xi32>
  func.return %y : tensor<16x8xi32>
}
// CHECK-LABEL: func.func @iota_2d
// CHECK:         partir.rule = "->ij {i=16, j=8} replicate={j}"

// -----

func.func @optimization_barrier_pairs(%a: tensor<4x8xf32>, %b: tensor<6xf32>) -> tensor<6xf32> {
  %y, %z = partir.prim optimization_barrier(%a, %b) : (tensor<4x8xf32>, tensor<6xf32>) -> (tensor<4x8xf32>, tensor<6xf32>)
  func.return %z : tensor<6xf32>
}
// CHECK-LABEL: func.func @optimization_barrier_pairs
// CHECK:         partir.rule = "ij,k->ij,k {i=4, j=8, k=6}"

// -----

func.func @pad_one_dim(%x: tensor<4x8xf32>, %v: tensor<f32>) -> tensor<4x11xf32> {
  %y = partir.prim pad(%x, %v) [padding_config=((0, 0, 0), (1, 2, 0))] : (tensor<4x8xf32>, tensor<f32>) -> tensor<4x11xf32>
  func.return %y : tensor<4x11xf32>
}
// CHECK-LABEL: func.func @pad_one_dim
// CHECK:         partir.rule = "ij,_->ik {i=4, j=8, k=11} replicate={j,k}"

// -----

func.func @reduce_max_rows(%x: tensor<4x8xf32>) -> tensor<8xf32> {
  %y = partir.prim reduce_max(%x) [axes=(0,)] : (tensor<4x8xf32>) -> tensor<8xf32>
  func.return %y : tensor<8xf32>
}
// CHECK-LABEL: func.func @reduce_max_rows
// CHECK:         partir.rule = "ij->j {i=4, j=8} reduce={i}:max"

// -----

func.func @reduce_prod_cols(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  %y = partir.prim reduce_prod(%x) [axes=(1,)] : (tensor<4x8xf32>) -> tensor<4xf32>
  func.return %y : tensor<4xf32>
}
// CHECK-LABEL: func.func @reduce_prod_cols
// CHECK:         partir.rule = "ij->i {i=4, j=8} replicate={j}"

// -----

func.func @reduce_sum_to_scalar(%x: tensor<4x8xf32>) -> tensor<f32> {
  %y = partir.prim reduce_sum(%x) [axes=(0, 1), out_sharding=None] : (tensor<4x8xf32>) -> tensor<f32>
  func.return %y : tensor<f32>
}
// CHECK-LABEL: func.func @reduce_sum_to_scalar
// CHECK:         partir.rule = "ij->_ {i=4, j=8} reduce={i,j}"

// -----

func.func @reduce_window_sum_pool(%x: tensor<8x16x16x4xf32>) -> tensor<8x8x8x4xf32> {
  %y = partir.prim reduce_window_sum(%x) [window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 2, 1), padding=((0, 0), (0, 0), (0, 0), (0, 0)), base_dilation=(1, 1, 1, 1), window_dilation=(1, 1, 1, 1)] : (tensor<8x16x16x4xf32>) -> tensor<8x8x8x4xf32>
  func.return %y : tensor<8x8x8x4xf32>
}
// CHECK-LABEL: func.func @reduce_window_sum_pool
// CHECK:         partir.rule = "ijln->ikmn {i=8, j=16, k=8, l=16, m=8, n=4} replicate={j,k,l,m}"

// -----

func.func @reduce_window_sum_unstrided(%x: tensor<4x8xf32>) -> tensor<3x8xf32> {
  %y = partir.prim reduce_window_sum(%x) [window_dimensions=(2, 1), window_strides=(1, 1), padding=((0, 0), (0, 0)), base_dilation=(1, 1), window_dilation=(1, 1)] : (tensor<4x8xf32>) -> tensor<3x8xf32>
  func.return %y : tensor<3x8xf32>
}
// CHECK-LABEL: func.func @reduce_window_sum_unstrided
// CHECK:         partir.rule = "ik->jk {i=4, j=3, k=8} replicate={i,j}"

// -----

func.func @reshape_merge(%x: tensor<8x4xf32>) -> tensor<32xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(32,), dimensions=None, sharding=None] : (tensor<8x4xf32>) -> tensor<32xf32>
  func.return %y : tensor<32xf32>
}
// CHECK-LABEL: func.func @reshape_merge
// CHECK:         partir.rule = "ij->(ij) {i=8, j=4}"

// -----

func.func @reshape_non_aligned(%x: tensor<6x4xf32>) -> tensor<4x6xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(4, 6), dimensions=None, sharding=None] : (tensor<6x4xf32>) -> tensor<4x6xf32>
  func.return %y : tensor<4x6xf32>
}
// CHECK-LABEL: func.func @reshape_non_aligned
// CHECK:         partir.rule = "(ij)k->(il)m {i=2, j=3, k=4, l=2, m=6} replicate={j,k,l,m}"

// -----

func.func @reshape_non_aligned_then_aligned(%x: tensor<6x4x5xf32>) -> tensor<4x6x5xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(4, 6, 5), dimensions=None, sharding=None] : (tensor<6x4x5xf32>) -> tensor<4x6x5xf32>
  func.return %y : tensor<4x6x5xf32>
}
// CHECK-LABEL: func.func @reshape_non_aligned_then_aligned
// CHECK:         partir.rule = "(ij)kn->(il)mn {i=2, j=3, k=4, l=2, m=6, n=5} replicate={j,k,l,m}"

// -----

func.func @reshape_size0(%x: tensor<0x4xf32>) -> tensor<2x0x2xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(2, 0, 2), dimensions=None, sharding=None] : (tensor<0x4xf32>) -> tensor<2x0x2xf32>
  func.return %y : tensor<2x0x2xf32>
}
// CHECK-LABEL: func.func @reshape_size0
// CHECK:         partir.rule = "ij->klm {i=0, j=4, k=2, l=0, m=2} replicate={i,j,k,l,m}"

// -----

func.func @reshape_size1_dims(%x: tensor<8x1x4xf32>) -> tensor<1x32xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(1, 32), dimensions=None, sharding=None] : (tensor<8x1x4xf32>) -> tensor<1x32xf32>
  func.return %y : tensor<1x32xf32>
}
// CHECK-LABEL: func.func @reshape_size1_dims
// CHECK:         partir.rule = "i1j->1(ij) {i=8, j=4}"

// -----

func.func @reshape_split(%x: tensor<32xf32>) -> tensor<4x8xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(4, 8), dimensions=None, sharding=None] : (tensor<32xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @reshape_split
// CHECK:         partir.rule = "(ij)->ij {i=4, j=8}"

// -----

func.func @reshape_split_heads(%x: tensor<8x16x32xf32>) -> tensor<8x16x4x8xf32> {
  %y = partir.prim reshape(%x) [new_sizes=(8, 16, 4, 8), dimensions=None, sharding=None] : (tensor<8x16x32xf32>) -> tensor<8x16x4x8xf32>
  func.return %y : tensor<8x16x4x8xf32>
}
// CHECK-LABEL: func.func @reshape_split_heads
// CHECK:         partir.rule = "ij(kl)->ijkl {i=8, j=16, k=4, l=8}"

// -----

func.func @rev_last_dim(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = partir.prim rev(%x) [dimensions=(1,)] : (tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @rev_last_dim
// CHECK:         partir.rule = "ij->ij {i=4, j=8} replicate={j}"

// -----

func.func @rng_bit_generator_no_rule(%key: tensor<4xui32>) -> tensor<4x8xui32> {
  %k, %bits = partir.prim rng_bit_generator(%key) [shape=(4, 8), dtype=uint32, algorithm=RandomAlgorithm.RNG_DEFAULT, out_sharding=None] : (tensor<4xui32>) -> (tensor<4xui32>, tensor<4x8xui32>)
  func.return %bits : tensor<4x8xui32>
}
// CHECK-LABEL: func.func @rng_bit_generator_no_rule
// CHECK:         partir.rule = "none"

// -----

func.func @scatter_overwrite_rows(%x: tensor<10x8xf32>, %i: tensor<3x1xi32>, %u: tensor<3x8xf32>) -> tensor<10x8xf32> {
  %y = partir.prim scatter(%x, %i, %u) [update_jaxpr=None, update_consts=(), dimension_numbers=ScatterDimensionNumbers(update_window_dims=(1,), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,), operand_batching_dims=(), scatter_indices_batching_dims=()), indices_are_sorted=False, unique_indices=False, mode=GatherScatterMode.FILL_OR_DROP] : (tensor<10x8xf32>, tensor<3x1xi32>, tensor<3x8xf32>) -> tensor<10x8xf32>
  func.return %y : tensor<10x8xf32>
}
// CHECK-LABEL: func.func @scatter_overwrite_rows
// CHECK:         partir.rule = "ij,k1,kj->ij {i=10, j=8, k=3} replicate={i,k}"

// -----

func.func @scatter_add_batching_dims(%x: tensor<8x32x8xf32>, %i: tensor<8x32x2x1xi32>, %u: tensor<8x32x2xf32>) -> tensor<8x32x8xf32> {
  %y = partir.prim "scatter-add"(%x, %i, %u) [update_jaxpr=opaque<0, "scatter-add combiner, rebuilt on emission">, update_consts=(), dimension_numbers=ScatterDimensionNumbers(update_window_dims=(), inserted_window_dims=(2,), scatter_dims_to_operand_dims=(2,), operand_batching_dims=(0, 1), scatter_indices_batching_dims=(0, 1)), indices_are_sorted=False, unique_indices=False, mode=GatherScatterMode.PROMISE_IN_BOUNDS] : (tensor<8x32x8xf32>, tensor<8x32x2x1xi32>, tensor<8x32x2xf32>) -> tensor<8x32x8xf32>
  func.return %y : tensor<8x32x8xf32>
}
// CHECK-LABEL: func.func @scatter_add_batching_dims
// CHECK:         partir.rule = "ijk,ijl1,ijl->ijk {i=8, j=32, k=8, l=2} reduce={l} replicate={k}"

// -----

func.func @scatter_add_embedding_grad(%zeros: tensor<64x32xf32>, %tokens: tensor<8x16x1xi32>, %g: tensor<8x16x32xf32>) -> tensor<64x32xf32> {
  %y = partir.prim "scatter-add"(%zeros, %tokens, %g) [update_jaxpr=opaque<0, "scatter-add combiner, rebuilt on emission">, update_consts=(), dimension_numbers=ScatterDimensionNumbers(update_window_dims=(2,), inserted_window_dims=(0,), scatter_dims_to_operand_dims=(0,), operand_batching_dims=(), scatter_indices_batching_dims=()), indices_are_sorted=False, unique_indices=False, mode=GatherScatterMode.PROMISE_IN_BOUNDS] : (tensor<64x32xf32>, tensor<8x16x1xi32>, tensor<8x16x32xf32>) -> tensor<64x32xf32>
  func.return %y : tensor<64x32xf32>
}
// CHECK-LABEL: func.func @scatter_add_embedding_grad
// CHECK:         partir.rule = "ij,kl1,klj->ij {i=64, j=32, k=8, l=16} reduce={k,l} replicate={i}"

// -----

func.func @select_and_scatter_add_pool_grad(%g: tensor<2x2x2x3xf32>, %x: tensor<2x4x4x3xf32>) -> tensor<2x4x4x3xf32> {
  %y = partir.prim select_and_scatter_add(%g, %x) [select_prim=opaque<0, "ge">, window_dimensions=(1, 2, 2, 1), window_strides=(1, 2, 2, 1), padding=((0, 0), (0, 0), (0, 0), (0, 0))] : (tensor<2x2x2x3xf32>, tensor<2x4x4x3xf32>) -> tensor<2x4x4x3xf32>
  func.return %y : tensor<2x4x4x3xf32>
}
// CHECK-LABEL: func.func @select_and_scatter_add_pool_grad
// CHECK:         partir.rule = "ikmn,ijln->ijln {i=2, j=4, k=2, l=4, m=2, n=3} replicate={j,k,l,m}"

// -----

func.func @select_n_scalar_predicate(%p: tensor<i1>, %a: tensor<4x8xf32>, %b: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y = partir.prim select_n(%p, %a, %b) : (tensor<i1>, tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32>
  func.return %y : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @select_n_scalar_predicate
// CHECK:         partir.rule = "_,ij,ij->ij {i=4, j=8}"

// -----

func.func @slice_cols(%x: tensor<4x8xf32>) -> tensor<4x4xf32> {
  %y = partir.prim slice(%x) [start_indices=(0, 2), limit_indices=(4, 6), strides=None] : (tensor<4x8xf32>) -> tensor<4x4xf32>
  func.return %y : tensor<4x4xf32>
}
// CHECK-LABEL: func.func @slice_cols
// CHECK:         partir.rule = "ij->ik {i=4, j=8, k=4} replicate={j,k}"

// -----

func.func @sort_two_operands(%k: tensor<4x8xf32>, %v: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %y, %z = partir.prim sort(%k, %v) [dimension=1, is_stable=True, num_keys=1] : (tensor<4x8xf32>, tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
  func.return %z : tensor<4x8xf32>
}
// CHECK-LABEL: func.func @sort_two_operands
// CHECK:         partir.rule = "ij,ij->ij,ij {i=4, j=8} replicate={j}"

// -----

func.func @split_cols(%x: tensor<4x8xf32>) -> tensor<4x5xf32> {
  %y, %z = partir.prim split(%x) [sizes=(3, 5), axis=1] : (tensor<4x8xf32>) -> (tensor<4x3xf32>, tensor<4x5xf32>)
  func.return %z : tensor<4x5xf32>
}
// CHECK-LABEL: func.func @split_cols
// CHECK:         partir.rule = "ij->ik,il {i=4, j=8, k=3, l=5} replicate={j,k,l}"

// -----

func.func @squeeze_middle(%x: tensor<8x32x1x8xf32>) -> tensor<8x32x8xf32> {
  %y = partir.prim squeeze(%x) [dimensions=(2,)] : (tensor<8x32x1x8xf32>) -> tensor<8x32x8xf32>
  func.return %y : tensor<8x32x8xf32>
}
// CHECK-LABEL: func.func @squeeze_middle
// CHECK:         partir.rule = "ij1k->ijk {i=8, j=32, k=8}"

// -----

func.func @top_k_last_axis(%x: tensor<8x32x8xf32>) -> tensor<8x32x2xi32> {
  %v, %i = partir.prim top_k(%x) [k=2, axis=2] : (tensor<8x32x8xf32>) -> (tensor<8x32x2xf32>, tensor<8x32x2xi32>)
  func.return %i : tensor<8x32x2xi32>
}
// CHECK-LABEL: func.func @top_k_last_axis
// CHECK:         partir.rule = "ijk->ijl,ijl {i=8, j=32, k=8, l=2} replicate={k,l}"

// -----

func.func @transpose_4d(%x: tensor<8x4x8x16xf32>) -> tensor<8x16x4x8xf32> {
  %y = partir.prim transpose(%x) [permutation=(0, 3, 1, 2)] : (tensor<8x4x8x16xf32>) -> tensor<8x16x4x8xf32>
  func.return %y : tensor<8x16x4x8xf32>
}
// CHECK-LABEL: func.func @transpose_4d
// CHECK:         partir.rule = "ijkl->iljk {i=8, j=4, k=8, l=16}"

// -----

func.func @triangular_solve_left(%a: tensor<4x8x8xf32>, %b: tensor<4x8x3xf32>) -> tensor<4x8x3xf32> {
  %x = partir.prim triangular_solve(%a, %b) [conjugate_a=False, left_side=True, lower=True, transpose_a=False, unit_diagonal=False] : (tensor<4x8x8xf32>, tensor<4x8x3xf32>) -> tensor<4x8x3xf32>
  func.return %x : tensor<4x8x3xf32>
}
// CHECK-LABEL: func.func @triangular_solve_left
// CHECK:         partir.rule = "ijk,ilm->ilm {i=4, j=8, k=8, l=8, m=3} replicate={j,k,l}"

// -----

func.func @triangular_solve_right(%a: tensor<8x8xf32>, %b: tensor<3x8xf32>) -> tensor<3x8xf32> {
  %x = partir.prim triangular_solve(%a, %b) [conjugate_a=False, left_side=False, lower=True, transpose_a=False, unit_diagonal=False] : (tensor<8x8xf32>, tensor<3x8xf32>) -> tensor<3x8xf32>
  func.return %x : tensor<3x8xf32>
}
// CHECK-LABEL: func.func @triangular_solve_right
// CHECK:         partir.rule = "ij,lk->lk {i=8, j=8, k=8, l=3} replicate={i,j,k}"
