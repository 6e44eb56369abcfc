// Fused temporal adapter: y = TConv(act(W_down x + b_down)), forward and backward.
//
//   x: (B, C, F, H, W), any strides with H*W tokens evenly strided (NCDHW or channels-last)
//   w_down: (R, C), b_down: (R,), conv_w: (R, 3), conv_b: (R,)  ->  y: (B, R, F, H, W)
//   pre[f] = W_down x[f] + b_down,  a[f] = act(pre[f]),
//   y[f]   = conv_b + conv_w[:,0] a[f-1] + conv_w[:,1] a[f] + conv_w[:,2] a[f+1]  (a[-1] = a[F] = 0)
//
// A block owns a tile of RT output channels x TT tokens of one video and walks its F frames:
// per frame it computes the GEMM tile (tensor cores for fp16/bf16, FMAs for fp32 and on GPUs
// without 16-bit tensor cores for the dtype: see use_wmma), keeps the
// last three frames in a shared-memory ring and writes the conv output of the previous frame.
// Only y is written.
//
// This header holds the kernels and the host code that launches them, generic over how a
// kernel is launched: temporal_adapter.cu launches them on the GPU, the CPU emulator of the
// tests (tests/cuda_emulator/) runs the same code with one CPU thread per CUDA thread.
//
// Backward, given dy (the pre-activation is recomputed, nothing but x is saved):
//   da[f]    = conv_w[:,0] dy[f+1] + conv_w[:,1] dy[f] + conv_w[:,2] dy[f-1]
//   dpre[f]  = da[f] * act'(pre[f])
//   dconv_w[:,k] = sum dy[f] a[f+k-1],  dconv_b = sum dy,  db_down = sum dpre
// The kernel writes dpre and per-block partial sums (reduced in a fixed order on the host, so
// the result is deterministic); dW_down = dpre x^T and dx = W_down^T dpre are cuBLAS GEMMs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef SIMDA_CUDA_EMULATOR
#include <mma.h>
#endif

#include <cstdint>
#include <type_traits>
#include <vector>

// The block's dynamic shared memory (the emulator gives each block its own buffer).
#ifndef SIMDA_DYNAMIC_SMEM
#define SIMDA_DYNAMIC_SMEM(name) extern __shared__ __align__(128) unsigned char name[]
#endif

namespace simda {
namespace {

constexpr int kThreads = 128;  // 4 warps
constexpr int kTT = 64;        // tokens per tile
constexpr int kKC = 32;        // input channels per GEMM step
constexpr int kLdX = kTT + 8;  // padded leading dims (wmma needs multiples of 8 / 4)
constexpr int kLdW = kKC + 8;
constexpr int kLdRing = kTT + 4;

__device__ __forceinline__ float act_fn(float v, bool gelu) {
  return gelu ? 0.5f * v * (1.0f + erff(v * 0.70710678118654752f)) : v;
}

// d act / d pre, exact GELU: Phi(v) + v phi(v)
__device__ __forceinline__ float act_grad(float v, bool gelu) {
  if (!gelu) return 1.0f;
  const float cdf = 0.5f * (1.0f + erff(v * 0.70710678118654752f));
  const float pdf = 0.39894228040143268f * expf(-0.5f * v * v);
  return cdf + v * pdf;
}

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }

struct Geometry {
  int C, R, F;
  int64_t T;                   // tokens per frame (H*W)
  int64_t sxb, sxc, sxf, sxt;  // x strides (elements)
  int64_t spb, spr, spf;       // dpre strides (backward; tokens contiguous)
};

// Stage W_down[r0:r0+RT, c0:c0+KC] and x[b, c0:c0+KC, f, t0:t0+TT] in shared memory (zero
// padded), coalesced along whichever of channels / tokens is contiguous in x.
template <typename T, int RT>
__device__ __forceinline__ void load_tiles(const T* __restrict__ x, const T* __restrict__ w,
                                           const Geometry& g, int b, int f, int r0, int64_t t0,
                                           int c0, T* sW, T* sX, bool channels_last) {
  for (int idx = threadIdx.x; idx < RT * kKC; idx += kThreads) {
    const int i = idx / kKC, k = idx % kKC;
    const int r = r0 + i, c = c0 + k;
    sW[i * kLdW + k] = (r < g.R && c < g.C) ? w[static_cast<int64_t>(r) * g.C + c] : from_f<T>(0.f);
  }
  const T* xb = x + b * g.sxb + f * g.sxf;
  for (int idx = threadIdx.x; idx < kKC * kTT; idx += kThreads) {
    const int k = channels_last ? idx % kKC : idx / kTT;
    const int j = channels_last ? idx / kKC : idx % kTT;
    const int c = c0 + k;
    const int64_t t = t0 + j;
    sX[k * kLdX + j] = (c < g.C && t < g.T) ? xb[c * g.sxc + t * g.sxt] : from_f<T>(0.f);
  }
}

// acc[RT x TT] = W_down[r0:, :] x[b, :, f, t0:] into ring (fp32, leading dim kLdRing).
// fp16/bf16: wmma 16x16x16 on tensor cores; each warp owns RT/2 rows x 32 tokens.
template <typename T, int RT>
__device__ void gemm_tile(const T* x, const T* w, const Geometry& g, int b, int f, int r0,
                          int64_t t0, T* sW, T* sX, float* ring, bool channels_last) {
  using namespace nvcuda;
  constexpr int kRowsPerWarp = RT / 2, kFragRows = kRowsPerWarp / 16;
  static_assert(kFragRows >= 1 && kRowsPerWarp % 16 == 0, "wmma tiles need RT to be a multiple of 32");
  const int warp = threadIdx.x / 32;
  const int wr = (warp / 2) * kRowsPerWarp, wc = (warp % 2) * 32;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFragRows][2];
#pragma unroll
  for (int i = 0; i < kFragRows; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  for (int c0 = 0; c0 < g.C; c0 += kKC) {
    load_tiles<T, RT>(x, w, g, b, f, r0, t0, c0, sW, sX, channels_last);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kKC; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a[kFragRows];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> bf[2];
#pragma unroll
      for (int i = 0; i < kFragRows; ++i)
        wmma::load_matrix_sync(a[i], sW + (wr + 16 * i) * kLdW + kk, kLdW);
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(bf[j], sX + kk * kLdX + wc + 16 * j, kLdX);
#pragma unroll
      for (int i = 0; i < kFragRows; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a[i], bf[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kFragRows; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(ring + (wr + 16 * i) * kLdRing + wc + 16 * j, acc[i][j], kLdRing,
                              wmma::mem_row_major);
}

// The same tile with FMAs in fp32 (exact for fp32 inputs, no TF32; also fp16/bf16 where
// use_wmma is false); each thread owns (RT/8) x 4 outputs.
template <typename T, int RT>
__device__ void gemm_tile_fma(const T* x, const T* w, const Geometry& g, int b, int f, int r0,
                              int64_t t0, T* sW, T* sX, float* ring, bool channels_last) {
  constexpr int kRowsPerThread = RT * kTT / kThreads / 4;
  static_assert(RT % 8 == 0 && kRowsPerThread >= 1, "FMA tiles need RT to be a multiple of 8");
  const int i0 = (threadIdx.x / 16) * kRowsPerThread;  // 8 row groups
  const int j0 = (threadIdx.x % 16) * 4;               // 16 column groups of 4
  float acc[kRowsPerThread][4] = {};
  for (int c0 = 0; c0 < g.C; c0 += kKC) {
    load_tiles<T, RT>(x, w, g, b, f, r0, t0, c0, sW, sX, channels_last);
    __syncthreads();
#pragma unroll 4
    for (int k = 0; k < kKC; ++k) {
      float bv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) bv[j] = to_f(sX[k * kLdX + j0 + j]);
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const float av = to_f(sW[(i0 + i) * kLdW + k]);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av, bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kRowsPerThread; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) ring[(i0 + i) * kLdRing + j0 + j] = acc[i][j];
}

// The architecture the device code is compiled for (the emulator chooses one).
#if defined(__CUDA_ARCH__)
constexpr int kArch = __CUDA_ARCH__;
#elif defined(SIMDA_EMULATED_ARCH)
constexpr int kArch = SIMDA_EMULATED_ARCH;
#else
constexpr int kArch = 0;  // host pass of nvcc: no device code is generated from it
#endif

// Tensor cores for fp16 from sm_70 and bf16 from sm_80; FMAs otherwise (and for fp32).
template <typename T>
__device__ constexpr bool use_wmma() {
  if (std::is_same_v<T, float> || kArch < 700) return false;
  return kArch >= 800 || std::is_same_v<T, __half>;
}

template <typename T, int RT>
__device__ __forceinline__ void compute_pre(const T* x, const T* w, const Geometry& g, int b,
                                            int f, int r0, int64_t t0, T* sW, T* sX, float* ring,
                                            bool channels_last) {
  if constexpr (!use_wmma<T>()) {
    gemm_tile_fma<T, RT>(x, w, g, b, f, r0, t0, sW, sX, ring, channels_last);
  } else {
    gemm_tile<T, RT>(x, w, g, b, f, r0, t0, sW, sX, ring, channels_last);
  }
}

template <int RT>
constexpr size_t smem_bytes(size_t elem, int rings) {
  return RT * kLdW * elem + kKC * kLdX * elem + static_cast<size_t>(rings) * 3 * RT * kLdRing * 4;
}

template <typename T, int RT>
__global__ void __launch_bounds__(kThreads)
temporal_adapter_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w_down,
                            const T* __restrict__ b_down, const T* __restrict__ conv_w,
                            const T* __restrict__ conv_b, T* __restrict__ y, Geometry g, bool gelu,
                            bool channels_last) {
  SIMDA_DYNAMIC_SMEM(smem);
  float* ring = reinterpret_cast<float*>(smem);                   // 3 x RT x kLdRing
  T* sW = reinterpret_cast<T*>(ring + 3 * RT * kLdRing);           // RT x kLdW
  T* sX = sW + RT * kLdW;                                          // kKC x kLdX
  const int r0 = blockIdx.x * RT;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTT;
  const int b = blockIdx.z;

  // y[f-1] from the ring slots of f-2, f-1, f (present when 0 <= index < F).
  auto emit = [&](int out_f) {
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT, r = r0 + i;
      const int64_t t = t0 + j;
      if (r >= g.R || t >= g.T) continue;
      float v = to_f(conv_b[r]);
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int src = out_f + k - 1;
        if (src >= 0 && src < g.F) v += to_f(conv_w[static_cast<int64_t>(r) * 3 + k]) * ring[(src % 3) * RT * kLdRing + i * kLdRing + j];
      }
      y[((static_cast<int64_t>(b) * g.R + r) * g.F + out_f) * g.T + t] = from_f<T>(v);
    }
  };

  for (int f = 0; f < g.F; ++f) {
    float* slot = ring + (f % 3) * RT * kLdRing;
    compute_pre<T, RT>(x, w_down, g, b, f, r0, t0, sW, sX, slot, channels_last);
    __syncthreads();
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT;
      const float bias = (r0 + i < g.R) ? to_f(b_down[r0 + i]) : 0.f;
      slot[i * kLdRing + j] = act_fn(slot[i * kLdRing + j] + bias, gelu);
    }
    __syncthreads();
    if (f >= 1) emit(f - 1);
    __syncthreads();  // the slot of f-2 is overwritten next
  }
  emit(g.F - 1);
}

// Backward: one thread owns one channel row (kThreads / RT threads per row) for the
// per-channel sums; dpre is staged in shared memory and written coalesced.
template <typename T, int RT>
__global__ void __launch_bounds__(kThreads)
temporal_adapter_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x,
                            const T* __restrict__ w_down, const T* __restrict__ b_down,
                            const T* __restrict__ conv_w, T* __restrict__ dpre,
                            float* __restrict__ part_db, float* __restrict__ part_dcb,
                            float* __restrict__ part_dcw, Geometry g, bool gelu,
                            bool channels_last) {
  SIMDA_DYNAMIC_SMEM(smem);
  float* pre_ring = reinterpret_cast<float*>(smem);         // 3 x RT x kLdRing
  float* dy_ring = pre_ring + 3 * RT * kLdRing;             // 3 x RT x kLdRing
  T* sW = reinterpret_cast<T*>(dy_ring + 3 * RT * kLdRing);
  T* sX = sW + RT * kLdW;
  constexpr int kPerRow = kThreads / RT;
  const int r0 = blockIdx.x * RT;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTT;
  const int b = blockIdx.z;
  const int my_i = threadIdx.x / kPerRow, my_j0 = threadIdx.x % kPerRow;
  const int my_r = r0 + my_i;
  const bool row_ok = my_r < g.R;
  float w3[3] = {0.f, 0.f, 0.f};
  if (row_ok)
    for (int k = 0; k < 3; ++k) w3[k] = to_f(conv_w[static_cast<int64_t>(my_r) * 3 + k]);
  float acc_db = 0.f, acc_dcb = 0.f, acc_dcw[3] = {0.f, 0.f, 0.f};

  auto ring_at = [&](float* ring, int frame, int i, int j) -> float {
    return (frame >= 0 && frame < g.F) ? ring[(frame % 3) * RT * kLdRing + i * kLdRing + j] : 0.f;
  };
  // Finalise frame gf (pre and dy of gf-1, gf, gf+1 are in the rings): each owner thread
  // accumulates its row's sums and puts dpre in the staging tile, then the block stores it
  // coalesced.
  auto finalise = [&](int gf, T* stage) {
    if (row_ok) {
      for (int j = my_j0; j < kTT; j += kPerRow) {
        if (t0 + j >= g.T) continue;
        const float dyv = ring_at(dy_ring, gf, my_i, j);
        const float da = w3[0] * ring_at(dy_ring, gf + 1, my_i, j) + w3[1] * dyv +
                         w3[2] * ring_at(dy_ring, gf - 1, my_i, j);
        const float p = ring_at(pre_ring, gf, my_i, j);
        const float dp = da * act_grad(p, gelu);
        stage[my_i * kTT + j] = from_f<T>(dp);
        acc_db += dp;
        acc_dcb += dyv;
#pragma unroll
        for (int k = 0; k < 3; ++k) {
          const int src = gf + k - 1;
          if (src >= 0 && src < g.F) acc_dcw[k] += dyv * act_fn(ring_at(pre_ring, src, my_i, j), gelu);
        }
      }
    }
    __syncthreads();
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT, r = r0 + i;
      const int64_t t = t0 + j;
      if (r < g.R && t < g.T)
        dpre[b * g.spb + r * g.spr + gf * g.spf + t] = stage[i * kTT + j];
    }
    __syncthreads();
  };

  T* stage = sX;  // reused between GEMMs (RT x kTT fits: backward_impl checks)
  for (int f = 0; f < g.F; ++f) {
    float* pslot = pre_ring + (f % 3) * RT * kLdRing;
    float* dslot = dy_ring + (f % 3) * RT * kLdRing;
    compute_pre<T, RT>(x, w_down, g, b, f, r0, t0, sW, sX, pslot, channels_last);
    __syncthreads();
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT, r = r0 + i;
      const int64_t t = t0 + j;
      const bool ok = r < g.R && t < g.T;
      pslot[i * kLdRing + j] += ok ? to_f(b_down[r]) : 0.f;
      dslot[i * kLdRing + j] = ok ? to_f(dy[((static_cast<int64_t>(b) * g.R + r) * g.F + f) * g.T + t]) : 0.f;
    }
    __syncthreads();
    if (f >= 1) finalise(f - 1, stage);
  }
  finalise(g.F - 1, stage);

  // Combine the kPerRow owners of each row (adjacent lanes) in a fixed order.
#pragma unroll
  for (int off = 1; off < kPerRow; off <<= 1) {
    acc_db += __shfl_xor_sync(0xffffffffu, acc_db, off);
    acc_dcb += __shfl_xor_sync(0xffffffffu, acc_dcb, off);
#pragma unroll
    for (int k = 0; k < 3; ++k) acc_dcw[k] += __shfl_xor_sync(0xffffffffu, acc_dcw[k], off);
  }
  if (row_ok && my_j0 == 0) {
    const int64_t part = static_cast<int64_t>(b) * gridDim.y + blockIdx.y;
    part_db[part * g.R + my_r] = acc_db;
    part_dcb[part * g.R + my_r] = acc_dcb;
    for (int k = 0; k < 3; ++k) part_dcw[(part * g.R + my_r) * 3 + k] = acc_dcw[k];
  }
}

// Output channels per block. fp32 tiles are halved so that every kernel's shared memory fits
// the smallest opt-in limit of the architectures built (64 KiB on sm_75).
template <typename T> constexpr int fwd_rows() { return sizeof(T) == 4 ? 32 : 64; }
template <typename T> constexpr int bwd_rows() { return sizeof(T) == 4 ? 16 : 32; }
constexpr size_t kMaxSmemBytes = 64 * 1024;

// The launch grid is (R tiles, token tiles, B): y and z are limited to 65535 blocks.
Geometry geometry(const at::Tensor& x, int64_t R) {
  constexpr int64_t kMaxGridYZ = 65535;
  TORCH_CHECK(x.size(0) <= kMaxGridYZ, "fused temporal adapter: batch size ", x.size(0),
              " exceeds the kernel's limit of ", kMaxGridYZ, " videos per call; split the batch");
  TORCH_CHECK((x.size(3) * x.size(4) + kTT - 1) / kTT <= kMaxGridYZ, "fused temporal adapter: H*W = ",
              x.size(3) * x.size(4), " tokens per frame exceed the kernel's limit of ", kMaxGridYZ * kTT);
  Geometry g;
  g.C = static_cast<int>(x.size(1));
  g.R = static_cast<int>(R);
  g.F = static_cast<int>(x.size(2));
  g.T = x.size(3) * x.size(4);
  g.sxb = x.stride(0);
  g.sxc = x.stride(1);
  g.sxf = x.stride(2);
  g.sxt = x.stride(4);
  return g;
}

// Calls fn(T{}) with the CUDA element type of fp16 / bf16 / fp32.
template <typename Fn>
void dispatch_dtype(at::ScalarType st, Fn&& fn) {
  switch (st) {
    case at::kHalf: fn(__half{}); break;
    case at::kBFloat16: fn(__nv_bfloat16{}); break;
    case at::kFloat: fn(float{}); break;
    default: TORCH_CHECK(false, "fused temporal adapter: unsupported dtype ", st);
  }
}

// The host side, generic over `launch(kernel, grid, smem_bytes, args...)`, which runs `kernel`
// on a grid of kThreads-thread blocks.

// x must have evenly strided tokens (stride(3) == W * stride(4)); the binding ensures it.
template <typename Launch>
at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                        const at::Tensor& conv_w, const at::Tensor& conv_b, bool gelu,
                        const Launch& launch) {
  const int64_t B = x.size(0), R = w_down.size(0), F = x.size(2);
  auto y = at::empty({B, R, F, x.size(3), x.size(4)}, x.options());
  if (y.numel() == 0) return y;
  const Geometry g = geometry(x, R);
  const bool channels_last = x.stride(1) == 1 && x.size(1) > 1;
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    constexpr int RT = fwd_rows<T>();
    constexpr size_t smem = smem_bytes<RT>(sizeof(T), 1);
    static_assert(smem <= kMaxSmemBytes, "forward tile exceeds the shared-memory budget");
    const dim3 grid((R + RT - 1) / RT, (g.T + kTT - 1) / kTT, B);
    launch(temporal_adapter_fwd_kernel<T, RT>, grid, smem,
           reinterpret_cast<const T*>(x.const_data_ptr()), reinterpret_cast<const T*>(w_down.const_data_ptr()),
           reinterpret_cast<const T*>(b_down.const_data_ptr()), reinterpret_cast<const T*>(conv_w.const_data_ptr()),
           reinterpret_cast<const T*>(conv_b.const_data_ptr()), reinterpret_cast<T*>(y.mutable_data_ptr()), g,
           gelu, channels_last);
  });
  return y;
}

template <typename Launch>
std::vector<at::Tensor> backward_impl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w_down,
                                      const at::Tensor& b_down, const at::Tensor& conv_w, bool gelu,
                                      const Launch& launch) {
  const int64_t B = x.size(0), C = x.size(1), R = w_down.size(0), F = x.size(2);
  Geometry g = geometry(x, R);
  const bool channels_last = x.stride(1) == 1 && x.size(1) > 1;
  // dpre follows x's order of frames and channels, so that both GEMMs below read x in place:
  // frames outside channels (diffusers' (B*F, C, H, W) viewed as video, or channels-last)
  // -> dpre (B, F, R, T); channels outside frames (NCDHW) -> dpre (B, R, F, T).
  const bool frames_outer = x.stride(2) > x.stride(1);
  auto dpre = frames_outer ? at::empty({B, F, R, g.T}, x.options())
                           : at::empty({B, R, F, g.T}, x.options());
  g.spb = R * F * g.T;
  g.spr = frames_outer ? g.T : F * g.T;
  g.spf = frames_outer ? R * g.T : g.T;
  const int64_t tiles = (g.T + kTT - 1) / kTT;
  auto f32 = x.options().dtype(at::kFloat);
  auto part_db = at::zeros({B * tiles, R}, f32);
  auto part_dcb = at::zeros({B * tiles, R}, f32);
  auto part_dcw = at::zeros({B * tiles, R, 3}, f32);
  if (dpre.numel() > 0) {
    dispatch_dtype(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      constexpr int RT = bwd_rows<T>();
      static_assert(RT * kTT <= kKC * kLdX, "the dpre staging tile must fit in sX");
      constexpr size_t smem = smem_bytes<RT>(sizeof(T), 2);
      static_assert(smem <= kMaxSmemBytes, "backward tile exceeds the shared-memory budget");
      const dim3 grid((R + RT - 1) / RT, tiles, B);
      launch(temporal_adapter_bwd_kernel<T, RT>, grid, smem,
             reinterpret_cast<const T*>(dy.const_data_ptr()), reinterpret_cast<const T*>(x.const_data_ptr()),
             reinterpret_cast<const T*>(w_down.const_data_ptr()), reinterpret_cast<const T*>(b_down.const_data_ptr()),
             reinterpret_cast<const T*>(conv_w.const_data_ptr()), reinterpret_cast<T*>(dpre.mutable_data_ptr()),
             part_db.mutable_data_ptr<float>(), part_dcb.mutable_data_ptr<float>(),
             part_dcw.mutable_data_ptr<float>(), g, gelu, channels_last);
    });
  }
  // Groups G of (channels x K tokens) matrices: x_g (G, C, K), dpre_g (G, R, K), both views.
  auto xg = frames_outer ? x.permute({0, 2, 1, 3, 4}).reshape({B * F, C, g.T}) : x.reshape({B, C, F * g.T});
  auto dg = dpre.view({xg.size(0), R, xg.size(2)});
  auto dx = at::matmul(w_down.t(), dg);  // (G, C, K), cuBLAS
  dx = frames_outer ? dx.view({B, F, C, x.size(3), x.size(4)}).permute({0, 2, 1, 3, 4})
                    : dx.view(x.sizes());
  // dW_down = sum_g dpre_g x_g^T: per-group GEMMs and a sum when that is smaller than x,
  // else one GEMM over all tokens (copying both operands into (rows, G*K)).
  const int64_t G = xg.size(0);
  at::Tensor dw_down;
  if (G * R * C <= xg.numel()) {
    dw_down = at::matmul(dg, xg.transpose(1, 2)).sum(0);
  } else {
    dw_down = at::matmul(dg.transpose(0, 1).reshape({R, -1}), xg.transpose(0, 1).reshape({C, -1}).t());
  }
  const auto dtype = x.scalar_type();
  return {dx, dw_down, part_db.sum(0).to(dtype), part_dcw.sum(0).to(dtype), part_dcb.sum(0).to(dtype)};
}

}  // namespace
}  // namespace simda
