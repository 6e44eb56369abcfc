// Input layout rules of the temporal adapter's kernels, shared by the binding and the tests'
// CPU emulator.
#pragma once

#include <ATen/core/Tensor.h>

namespace simda {

// The kernels walk the H*W tokens of a frame with one stride: H and W must flatten (stride(3)
// == W * stride(4)); otherwise x is copied first.
inline at::Tensor tokens_flat(const at::Tensor& x) {
  return x.stride(3) == x.size(4) * x.stride(4) || x.size(3) == 1 ? x : x.contiguous();
}

}  // namespace simda
