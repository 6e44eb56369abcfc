// Temporal adapter kernels (CUDA). Placeholder until the fused kernel lands: the depthwise
// temporal convolution alone, y[b,r,f,t] = cb[r] + sum_k w[r,k] * a[b,r,f+k-1,t] (zero padded).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

namespace simda {

template <typename scalar_t>
__global__ void temporal_conv_kernel(const scalar_t* __restrict__ a, const scalar_t* __restrict__ w,
                                     const scalar_t* __restrict__ cb, scalar_t* __restrict__ y,
                                     int64_t total, int rank, int frames, int64_t tokens) {
  int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x;
  if (i >= total) return;
  int f = (i / tokens) % frames;
  int r = (i / (tokens * frames)) % rank;
  float acc = static_cast<float>(cb[r]);
  for (int k = 0; k < 3; ++k) {
    int g = f + k - 1;
    if (g >= 0 && g < frames)
      acc += static_cast<float>(w[r * 3 + k]) * static_cast<float>(a[i + (int64_t)(k - 1) * tokens]);
  }
  y[i] = static_cast<scalar_t>(acc);
}

at::Tensor temporal_conv_forward(const at::Tensor& a, const at::Tensor& w, const at::Tensor& cb) {
  auto ac = a.contiguous();
  auto y = at::empty_like(ac);
  const int64_t total = ac.numel();
  if (total == 0) return y;
  const c10::cuda::CUDAGuard guard(a.device());
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, ac.scalar_type(), "temporal_conv", [&] {
    temporal_conv_kernel<scalar_t><<<blocks, threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        ac.data_ptr<scalar_t>(), w.contiguous().data_ptr<scalar_t>(), cb.contiguous().data_ptr<scalar_t>(),
        y.data_ptr<scalar_t>(), total, ac.size(1), ac.size(2), ac.size(3) * ac.size(4));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

}  // namespace simda
