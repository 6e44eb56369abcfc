// The fused temporal adapter on the GPU: launches the kernels of temporal_adapter_kernels.cuh.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "temporal_adapter_kernels.cuh"

namespace simda {
namespace {

struct CudaLaunch {
  // (cudaDeviceGetAttribute, not ATen's device properties, whose header needs the cuBLAS and
  // cuSPARSE headers, which a CMake build against a bare toolkit lacks)
  int sm_count() const { return attribute(cudaDevAttrMultiProcessorCount); }
  // The shared memory a block may opt in to (227 KiB on sm_90, 163 KiB on sm_80, 99 KiB on
  // sm_86), which picks wide or narrow tiles. SIMDA_ADAPTER_NARROW_TILES=1 caps it at sm_75's
  // 64 KiB, which every narrow tile fits and no wide one: narrow tiles everywhere (tuning).
  size_t smem_limit() const {
    const auto limit = static_cast<size_t>(attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin));
    const char* narrow = std::getenv("SIMDA_ADAPTER_NARROW_TILES");
    return narrow && std::strcmp(narrow, "1") == 0 ? std::min<size_t>(limit, 64 * 1024) : limit;
  }
  static int attribute(cudaDeviceAttr what) {
    int value = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, what, c10::cuda::current_device()));
    return value;
  }
  // SIMDA_ADAPTER_FRAMES_PER_BLOCK=N sets the frames each block writes (0 or unset: automatic).
  int frames_per_block() const {
    const char* value = std::getenv("SIMDA_ADAPTER_FRAMES_PER_BLOCK");
    return value ? std::max(0, std::atoi(value)) : 0;
  }
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, size_t smem, Args... args) const {
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        static_cast<int>(smem)));
    kernel<<<grid, kThreads, smem, c10::cuda::getCurrentCUDAStream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace

// The GPU architectures this build holds kernels for, as nvcc numbers them (900 for sm_90).
std::vector<int64_t> temporal_adapter_archs() {
#ifdef __CUDA_ARCH_LIST__
  return {__CUDA_ARCH_LIST__};
#else
  return {};
#endif
}

at::Tensor temporal_adapter_forward(const at::Tensor& x, const at::Tensor& w_down,
                                    const at::Tensor& b_down, const at::Tensor& conv_w,
                                    const at::Tensor& conv_b, bool gelu) {
  const c10::cuda::CUDAGuard guard(x.device());
  return forward_impl(x, w_down, b_down, conv_w, conv_b, gelu, CudaLaunch{});
}

std::vector<at::Tensor> temporal_adapter_backward(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& w_down, const at::Tensor& b_down,
                                                  const at::Tensor& conv_w, bool gelu) {
  const c10::cuda::CUDAGuard guard(x.device());
  return backward_impl(dy, x, w_down, b_down, conv_w, gelu, CudaLaunch{});
}

}  // namespace simda
