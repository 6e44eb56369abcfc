// Fused temporal adapter: y = TConv(act(W_down x + b_down)), forward and backward.
//
//   x: (B, C, F, H, W), any strides with H*W tokens evenly strided (NCDHW or channels-last)
//   w_down: (R, C), b_down: (R,), conv_w: (R, 3), conv_b: (R,)  ->  y: (B, R, F, H, W)
//   pre[f] = W_down x[f] + b_down,  a[f] = act(pre[f]),
//   y[f]   = conv_b + conv_w[:,0] a[f-1] + conv_w[:,1] a[f] + conv_w[:,2] a[f+1]  (a[-1] = a[F] = 0)
//
// A block owns a tile of RT output channels x TT tokens of one video and walks its F frames
// (or a chunk of them plus one neighbour frame on either side, when the grid is small; see
// split_frames):
// per frame it computes the GEMM tile (tensor cores for fp16/bf16, FMAs for fp32 and on GPUs
// without 16-bit tensor cores for the dtype: see use_wmma), keeps the
// last three frames in a shared-memory ring and writes the conv output of the previous frame.
// Only y is written. Where x and W_down allow 16-byte loads (Geometry::vec: aligned pointers,
// strides and sizes that are multiples of 16 bytes along the contiguous dimension), each
// thread fetches its share of the next 32-channel step into registers while the tensor cores
// work on the current one; otherwise the tiles are loaded element by element.
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
#include <cstring>
#include <type_traits>
#include <vector>

// Checks a vector access's alignment (the emulator defines it; the GPU faults instead).
#ifndef SIMDA_CHECK_ALIGNED
#define SIMDA_CHECK_ALIGNED(pointer, bytes, what)
#endif

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
  bool vec;                    // tiles move as 16-byte vectors (vector_loads)
  int chunk;                   // output frames per block (split_frames); blockIdx.z = (b, chunk)
  int chunks;                  // ceil(F / chunk)
};

// The frames a block works on: it writes frames [f0, f1) and computes the pre-activations of
// [fs, fe], one more frame on each side where there is one (the conv's neighbours).
struct FrameSpan {
  int b, f0, f1, fs, fe;
};

__device__ __forceinline__ FrameSpan frame_span(const Geometry& g) {
  FrameSpan s;
  s.b = blockIdx.z / g.chunks;
  s.f0 = (blockIdx.z % g.chunks) * g.chunk;
  s.f1 = s.f0 + g.chunk < g.F ? s.f0 + g.chunk : g.F;
  s.fs = s.f0 > 0 ? s.f0 - 1 : 0;
  s.fe = s.f1 < g.F ? s.f1 : g.F - 1;
  return s;
}

__device__ __forceinline__ uint4 load16(const void* p) {
  SIMDA_CHECK_ALIGNED(p, 16, "16-byte global load");
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const uint4*>(p));
#else
  return *reinterpret_cast<const uint4*>(p);
#endif
}

__device__ __forceinline__ void store16(void* p, const uint4& v) {
  SIMDA_CHECK_ALIGNED(p, 16, "16-byte shared-memory store");
  *reinterpret_cast<uint4*>(p) = v;
}

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

// Element q of a 16-byte vector of T (q a compile-time constant after unrolling).
template <typename T>
__device__ __forceinline__ T element(const uint4& v, int q) {
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  const int wi = q / kPerWord;
  const unsigned word = wi == 0 ? v.x : wi == 1 ? v.y : wi == 2 ? v.z : v.w;
  T out;
  if constexpr (sizeof(T) == 4) {
    memcpy(&out, &word, 4);
  } else {
    const unsigned short bits = static_cast<unsigned short>(word >> (16 * (q % 2)));
    memcpy(&out, &bits, 2);
  }
  return out;
}

// The vector path of load_tiles (Geometry::vec): fetch() reads a thread's share of one
// step's W_down and x tiles into registers as 16-byte vectors (zero outside the tensors: C and,
// when tokens are contiguous, T are multiples of a vector, so a vector is all in or all out),
// put() stores them in shared memory, transposing channels-last x on the way.
template <typename T, int RT>
struct TilePrefetch {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per vector
  static constexpr int kWPer = RT * kKC / kVec / kThreads;         // vectors per thread
  static constexpr int kXPer = kKC * kTT / kVec / kThreads;
  static_assert(kWPer >= 1 && kWPer * kVec * kThreads == RT * kKC, "W tile must split into whole vectors");
  static_assert(kXPer >= 1 && kXPer * kVec * kThreads == kKC * kTT, "x tile must split into whole vectors");
  uint4 w[kWPer];
  uint4 xv[kXPer];

  __device__ __forceinline__ void fetch(const T* __restrict__ x, const T* __restrict__ wd, const Geometry& g,
                                        int b, int f, int r0, int64_t t0, int c0, bool channels_last) {
    const uint4 zero = {0u, 0u, 0u, 0u};  // 0.0 in every element type
#pragma unroll
    for (int n = 0; n < kWPer; ++n) {
      const int idx = threadIdx.x + n * kThreads;
      const int r = r0 + idx / (kKC / kVec), c = c0 + (idx % (kKC / kVec)) * kVec;
      w[n] = (r < g.R && c < g.C) ? load16(wd + static_cast<int64_t>(r) * g.C + c) : zero;
    }
    const T* xb = x + b * g.sxb + f * g.sxf;
#pragma unroll
    for (int n = 0; n < kXPer; ++n) {
      const int idx = threadIdx.x + n * kThreads;
      // coalesced along the contiguous dimension: channels (channels-last) or tokens
      const int c = channels_last ? c0 + (idx % (kKC / kVec)) * kVec : c0 + idx / (kTT / kVec);
      const int64_t t = channels_last ? t0 + idx / (kKC / kVec) : t0 + (idx % (kTT / kVec)) * kVec;
      xv[n] = (c < g.C && t < g.T) ? load16(xb + c * g.sxc + t * g.sxt) : zero;
    }
  }

  __device__ __forceinline__ void put(T* sW, T* sX, bool channels_last) const {
#pragma unroll
    for (int n = 0; n < kWPer; ++n) {
      const int idx = threadIdx.x + n * kThreads;
      store16(sW + (idx / (kKC / kVec)) * kLdW + (idx % (kKC / kVec)) * kVec, w[n]);
    }
#pragma unroll
    for (int n = 0; n < kXPer; ++n) {
      const int idx = threadIdx.x + n * kThreads;
      if (channels_last) {  // kVec channels of one token: a column of sX
        const int j = idx / (kKC / kVec), k = (idx % (kKC / kVec)) * kVec;
#pragma unroll
        for (int q = 0; q < kVec; ++q) sX[(k + q) * kLdX + j] = element<T>(xv[n], q);
      } else {
        store16(sX + (idx / (kTT / kVec)) * kLdX + (idx % (kTT / kVec)) * kVec, xv[n]);
      }
    }
  }
};

// Moves each kKC-channel step's W_down and x tiles into sW and sX:
//   loader.start(); for (c0...) { loader.stage(c0); __syncthreads(); loader.prefetch(c0 + kKC);
//                                 <use the tiles>; __syncthreads(); }
// On the vector path the next step's tiles are in registers, in flight, while the current
// step's are used; otherwise stage() loads them element by element.
template <typename T, int RT, bool kPrefetch>
struct TileLoader {
  const T* x;
  const T* w;
  const Geometry& g;
  int b, f, r0;
  int64_t t0;
  T* sW;
  T* sX;
  bool channels_last;
  TilePrefetch<T, RT> next;

  __device__ __forceinline__ void start() {
    if (kPrefetch && g.vec) next.fetch(x, w, g, b, f, r0, t0, 0, channels_last);
  }
  __device__ __forceinline__ void stage(int c0) {
    if (g.vec) {
      if (!kPrefetch) next.fetch(x, w, g, b, f, r0, t0, c0, channels_last);
      next.put(sW, sX, channels_last);
    } else {
      load_tiles<T, RT>(x, w, g, b, f, r0, t0, c0, sW, sX, channels_last);
    }
  }
  __device__ __forceinline__ void prefetch(int c0) {
    if (kPrefetch && g.vec && c0 < g.C) next.fetch(x, w, g, b, f, r0, t0, c0, channels_last);
  }
};

// acc[RT x TT] = W_down[r0:, :] x[b, :, f, t0:] into ring (fp32, leading dim kLdRing).
// fp16/bf16: wmma 16x16x16 on tensor cores; each warp owns RT/2 rows x 32 tokens.
template <typename T, int RT, bool kPrefetch>
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
  TileLoader<T, RT, kPrefetch> loader{x, w, g, b, f, r0, t0, sW, sX, channels_last, {}};
  loader.start();
  for (int c0 = 0; c0 < g.C; c0 += kKC) {
    loader.stage(c0);
    __syncthreads();
    loader.prefetch(c0 + kKC);
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
template <typename T, int RT, bool kPrefetch>
__device__ void gemm_tile_fma(const T* x, const T* w, const Geometry& g, int b, int f, int r0,
                              int64_t t0, T* sW, T* sX, float* ring, bool channels_last) {
  constexpr int kRowsPerThread = RT * kTT / kThreads / 4;
  static_assert(RT % 8 == 0 && kRowsPerThread >= 1, "FMA tiles need RT to be a multiple of 8");
  const int i0 = (threadIdx.x / 16) * kRowsPerThread;  // 8 row groups
  const int j0 = (threadIdx.x % 16) * 4;               // 16 column groups of 4
  float acc[kRowsPerThread][4] = {};
  TileLoader<T, RT, kPrefetch> loader{x, w, g, b, f, r0, t0, sW, sX, channels_last, {}};
  loader.start();
  for (int c0 = 0; c0 < g.C; c0 += kKC) {
    loader.stage(c0);
    __syncthreads();
    loader.prefetch(c0 + kKC);
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

template <typename T, int RT, bool kPrefetch>
__device__ __forceinline__ void compute_pre(const T* x, const T* w, const Geometry& g, int b,
                                            int f, int r0, int64_t t0, T* sW, T* sX, float* ring,
                                            bool channels_last) {
  if constexpr (!use_wmma<T>()) {
    gemm_tile_fma<T, RT, kPrefetch>(x, w, g, b, f, r0, t0, sW, sX, ring, channels_last);
  } else {
    gemm_tile<T, RT, kPrefetch>(x, w, g, b, f, r0, t0, sW, sX, ring, channels_last);
  }
}

// Rings of three fp32 frames, the W_down and x tiles, and row_params floats per output channel.
template <int RT>
constexpr size_t smem_bytes(size_t elem, int rings, int row_params) {
  return static_cast<size_t>(rings) * 3 * RT * kLdRing * 4 + RT * kLdW * elem + kKC * kLdX * elem +
         static_cast<size_t>(row_params) * RT * 4;
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
  float* rows = reinterpret_cast<float*>(sX + kKC * kLdX);         // kRowParams x RT
  const int r0 = blockIdx.x * RT;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTT;
  const FrameSpan span = frame_span(g);
  const int b = span.b;
  // The block's rows of b_down, conv_w (3 taps) and conv_b, read once (0 past R).
  float* s_bias = rows;
  float* s_conv_w = rows + RT;  // tap k of row i at s_conv_w[k * RT + i]
  float* s_conv_b = rows + 4 * RT;
  for (int i = threadIdx.x; i < RT; i += kThreads) {
    const int r = r0 + i;
    const bool ok = r < g.R;
    s_bias[i] = ok ? to_f(b_down[r]) : 0.f;
    for (int k = 0; k < 3; ++k) s_conv_w[k * RT + i] = ok ? to_f(conv_w[static_cast<int64_t>(r) * 3 + k]) : 0.f;
    s_conv_b[i] = ok ? to_f(conv_b[r]) : 0.f;
  }
  __syncthreads();

  // y[f-1] from the ring slots of f-2, f-1, f (present when 0 <= index < F).
  auto emit = [&](int out_f) {
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT, r = r0 + i;
      const int64_t t = t0 + j;
      if (r >= g.R || t >= g.T) continue;
      float v = s_conv_b[i];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int src = out_f + k - 1;
        if (src >= 0 && src < g.F) v += s_conv_w[k * RT + i] * ring[(src % 3) * RT * kLdRing + i * kLdRing + j];
      }
      y[((static_cast<int64_t>(b) * g.R + r) * g.F + out_f) * g.T + t] = from_f<T>(v);
    }
  };

  for (int f = span.fs; f <= span.fe; ++f) {
    float* slot = ring + (f % 3) * RT * kLdRing;
    compute_pre<T, RT, true>(x, w_down, g, b, f, r0, t0, sW, sX, slot, channels_last);
    __syncthreads();
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT;
      slot[i * kLdRing + j] = act_fn(slot[i * kLdRing + j] + s_bias[i], gelu);
    }
    __syncthreads();
    if (f - 1 >= span.f0) emit(f - 1);  // (f - 1 < f1 always)
    __syncthreads();  // the slot of f-2 is overwritten next
  }
  if (span.f1 == g.F) emit(g.F - 1);  // the last frame has no next one to wait for
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
  const FrameSpan span = frame_span(g);
  const int b = span.b;
  const int my_i = threadIdx.x / kPerRow, my_j0 = threadIdx.x % kPerRow;
  const int my_r = r0 + my_i;
  const bool row_ok = my_r < g.R;
  float w3[3] = {0.f, 0.f, 0.f};
#pragma unroll
  for (int k = 0; k < 3; ++k) w3[k] = row_ok ? to_f(conv_w[static_cast<int64_t>(my_r) * 3 + k]) : 0.f;
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
  for (int f = span.fs; f <= span.fe; ++f) {
    float* pslot = pre_ring + (f % 3) * RT * kLdRing;
    float* dslot = dy_ring + (f % 3) * RT * kLdRing;
    compute_pre<T, RT, false>(x, w_down, g, b, f, r0, t0, sW, sX, pslot, channels_last);
    __syncthreads();
    for (int idx = threadIdx.x; idx < RT * kTT; idx += kThreads) {
      const int i = idx / kTT, j = idx % kTT, r = r0 + i;
      const int64_t t = t0 + j;
      const bool ok = r < g.R && t < g.T;
      pslot[i * kLdRing + j] += ok ? to_f(b_down[r]) : 0.f;
      dslot[i * kLdRing + j] = ok ? to_f(dy[((static_cast<int64_t>(b) * g.R + r) * g.F + f) * g.T + t]) : 0.f;
    }
    __syncthreads();
    if (f - 1 >= span.f0) finalise(f - 1, stage);
  }
  if (span.f1 == g.F) finalise(g.F - 1, stage);

  // Combine the kPerRow owners of each row (adjacent lanes) in a fixed order.
#pragma unroll
  for (int off = 1; off < kPerRow; off <<= 1) {
    acc_db += __shfl_xor_sync(0xffffffffu, acc_db, off);
    acc_dcb += __shfl_xor_sync(0xffffffffu, acc_dcb, off);
#pragma unroll
    for (int k = 0; k < 3; ++k) acc_dcw[k] += __shfl_xor_sync(0xffffffffu, acc_dcw[k], off);
  }
  if (row_ok && my_j0 == 0) {
    const int64_t part = static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y;  // (b, chunk, tile)
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
constexpr int kRowParams = 5;  // forward: b_down, conv_w (3), conv_b per output channel

// The launch grid is (R tiles, token tiles, B * frame chunks): y and z are limited to 65535
// blocks (split_frames keeps B * chunks within it).
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
  g.vec = false;
  g.chunk = g.F;
  g.chunks = 1;
  return g;
}

// Output frames per block. A block walks its frames one after another, so with few blocks
// (small latents, few channels) most SMs would idle: then F is split into chunks, each block
// recomputing the pre-activations of one frame on either side, until the grid has two blocks
// per SM or chunks would drop below 4 frames (at most 1.5x the GEMM work). frames_per_block >
// 0 sets it instead (tests; tuning on a GPU: SIMDA_ADAPTER_FRAMES_PER_BLOCK).
inline void split_frames(Geometry& g, int64_t blocks_per_frame_span, int64_t batch, int sm_count,
                         int frames_per_block) {
  constexpr int64_t kMaxGridZ = 65535;
  int chunk = g.F;
  if (frames_per_block > 0) {
    chunk = frames_per_block < g.F ? frames_per_block : g.F;
  } else {
    while (chunk >= 8 && blocks_per_frame_span * ((g.F + chunk - 1) / chunk) < 2 * int64_t{sm_count})
      chunk = (chunk + 1) / 2;
  }
  if (batch * ((g.F + chunk - 1) / chunk) > kMaxGridZ) chunk = g.F;  // the grid's z axis
  g.chunk = chunk;
  g.chunks = (g.F + chunk - 1) / chunk;
}

// The launch grid of a kernel with rt output channels per block: (channel tiles, token tiles,
// B * frame chunks), the frames split as split_frames decides (which it records in g).
template <typename Launch>
dim3 launch_grid(Geometry& g, int rt, int64_t batch, const Launch& launch) {
  const int64_t channel_tiles = (g.R + rt - 1) / rt, token_tiles = (g.T + kTT - 1) / kTT;
  split_frames(g, channel_tiles * token_tiles * batch, batch, launch.sm_count(), launch.frames_per_block());
  return dim3(static_cast<unsigned>(channel_tiles), static_cast<unsigned>(token_tiles),
              static_cast<unsigned>(batch * g.chunks));
}

// Whether x's channels are its contiguous dimension (channels-last): tiles are then gathered
// along channels instead of tokens.
inline bool channels_last_layout(const at::Tensor& x) { return x.stride(1) == 1 && x.size(1) > 1; }

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

// Whether x and W_down (contiguous (R, C)) can move as 16-byte vectors: both pointers aligned,
// C a multiple of a vector, and along x's contiguous dimension (channels when channels_last,
// else tokens, whose count must then be a multiple of a vector) every other stride too.
template <typename T>
bool vector_loads(const at::Tensor& x, const at::Tensor& w_down, const Geometry& g, bool channels_last) {
  constexpr int64_t kVec = 16 / sizeof(T);
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  const auto fits = [&](int dim, int64_t stride) { return x.size(dim) == 1 || stride % kVec == 0; };
  if (!aligned(x.const_data_ptr()) || !aligned(w_down.const_data_ptr()) || g.C % kVec != 0) return false;
  if (!fits(0, g.sxb) || !fits(2, g.sxf)) return false;
  if (channels_last) return g.T == 1 || g.sxt % kVec == 0;
  return g.sxt == 1 && g.T % kVec == 0 && g.sxc % kVec == 0;
}

// Which load path the kernels take for these inputs (x and w_down as the binding passes them).
inline bool uses_vector_loads(const at::Tensor& x, const at::Tensor& w_down) {
  const Geometry g = geometry(x, w_down.size(0));
  const bool channels_last = channels_last_layout(x);
  bool vec = false;
  dispatch_dtype(x.scalar_type(), [&](auto tag) { vec = vector_loads<decltype(tag)>(x, w_down, g, channels_last); });
  return vec;
}

// The host side, generic over `launch(kernel, grid, smem_bytes, args...)`, which runs `kernel`
// on a grid of kThreads-thread blocks, and says the GPU's SM count (`launch.sm_count()`) and
// any frames-per-block setting (`launch.frames_per_block()`, 0: automatic).

// x must have evenly strided tokens (stride(3) == W * stride(4)); the binding ensures it.
template <typename Launch>
at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                        const at::Tensor& conv_w, const at::Tensor& conv_b, bool gelu,
                        const Launch& launch) {
  const int64_t B = x.size(0), R = w_down.size(0), F = x.size(2);
  auto y = at::empty({B, R, F, x.size(3), x.size(4)}, x.options());
  if (y.numel() == 0) return y;
  Geometry g = geometry(x, R);
  const bool channels_last = channels_last_layout(x);
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    g.vec = vector_loads<T>(x, w_down, g, channels_last);
    constexpr int RT = fwd_rows<T>();
    constexpr size_t smem = smem_bytes<RT>(sizeof(T), 1, kRowParams);
    static_assert(smem <= kMaxSmemBytes, "forward tile exceeds the shared-memory budget");
    const dim3 grid = launch_grid(g, RT, B, launch);
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
  const bool channels_last = channels_last_layout(x);
  // dpre follows x's order of frames and channels, so that both GEMMs below read x in place:
  // frames outside channels (diffusers' (B*F, C, H, W) viewed as video, or channels-last)
  // -> dpre (B, F, R, T); channels outside frames (NCDHW) -> dpre (B, R, F, T).
  const bool frames_outer = x.stride(2) > x.stride(1);
  auto dpre = frames_outer ? at::empty({B, F, R, g.T}, x.options())
                           : at::empty({B, R, F, g.T}, x.options());
  g.spb = R * F * g.T;
  g.spr = frames_outer ? g.T : F * g.T;
  g.spf = frames_outer ? R * g.T : g.T;
  // per-block partial sums, (B * chunks * token tiles, R): one row per block of a channel tile
  auto f32 = x.options().dtype(at::kFloat);
  auto part_db = at::zeros({1, R}, f32);
  auto part_dcb = at::zeros({1, R}, f32);
  auto part_dcw = at::zeros({1, R, 3}, f32);
  if (dpre.numel() > 0) {
    dispatch_dtype(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      g.vec = vector_loads<T>(x, w_down, g, channels_last);
      constexpr int RT = bwd_rows<T>();
      static_assert(RT * kTT <= kKC * kLdX, "the dpre staging tile must fit in sX");
      constexpr size_t smem = smem_bytes<RT>(sizeof(T), 2, 0);
      static_assert(smem <= kMaxSmemBytes, "backward tile exceeds the shared-memory budget");
      const dim3 grid = launch_grid(g, RT, B, launch);
      const int64_t parts = int64_t{grid.z} * grid.y;
      part_db = at::zeros({parts, R}, f32);
      part_dcb = at::zeros({parts, R}, f32);
      part_dcw = at::zeros({parts, R, 3}, f32);
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
