// Input layout rules of the temporal adapter's kernels, shared by the binding and the tests'
// CPU emulator.
#pragma once

#include <ATen/core/Tensor.h>

namespace simda {

// A copy of t (B, N, F, H, W) that keeps its order of frames and channels (frames outside
// channels stay so), the rest contiguous.
inline at::Tensor contiguous_in_order(const at::Tensor& t) {
  return t.stride(2) > t.stride(1) ? t.transpose(1, 2).contiguous().transpose(1, 2) : t.contiguous();
}

// The kernels walk the H*W tokens of x's frames with one stride: H and W must flatten
// (stride(3) == W * stride(4)); otherwise x is copied first.
inline at::Tensor tokens_flat(const at::Tensor& x) {
  return x.stride(3) == x.size(4) * x.stride(4) || x.size(3) == 1 ? x : contiguous_in_order(x);
}

// The backward reads dy's tokens as one contiguous row per (video, channel, frame), in any
// order of those; otherwise dy is copied first.
inline at::Tensor tokens_contiguous(const at::Tensor& dy) {
  const bool w_ok = dy.stride(4) == 1 || dy.size(4) == 1;
  const bool h_ok = dy.stride(3) == dy.size(4) || dy.size(3) == 1;
  return w_ok && h_ok ? dy : contiguous_in_order(dy);
}

}  // namespace simda
