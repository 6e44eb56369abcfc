// Fused temporal adapter: y = TConv(act(W_down x + b_down)), forward and backward.
//
//   x: (B, C, F, H, W), any strides with H*W tokens evenly strided (NCDHW, frame-major, channels-last)
//   w_down: (R, C), b_down: (R,), conv_w: (R, 3), conv_b: (R,)  ->  y: (B, R, F, H, W)
//   pre[f] = W_down x[f] + b_down,  a[f] = act(pre[f]),
//   y[f]   = conv_b + conv_w[:,0] a[f-1] + conv_w[:,1] a[f] + conv_w[:,2] a[f+1]  (a[-1] = a[F] = 0)
//
// y is laid out in x's order of frames and channels: where frames are outside channels in x
// (diffusers' (B*F, C, H, W) feature map seen as a video, or channels-last) y is written as
// (B, F, R, H, W), the (B*F, R, H, W) map the up-projection reads next, and returned as a
// (B, R, F, H, W) view of it; otherwise as (B, R, F, H, W). Tokens are contiguous either way.
//
// A block owns RT output channels x kTT tokens of one video and walks its F frames (or a
// chunk of them plus one neighbour frame on either side, when the grid is small; see
// split_frames). The GEMM runs over every (frame, KC-channel step) of the walk as one
// pipeline (temporal_adapter_gemm.cuh): kStages shared-memory buffers filled by cp.async, the
// next step's copies in flight while the tensor cores (mma.sync m16n8k16, fp32 accumulators;
// FMAs for fp32 and where the GPU has no tensor cores for the dtype) work on the current one,
// one __syncthreads per step. After a frame's last step each thread adds the bias to its
// accumulators, applies the activation and stores a[f] in a ring of three frames in shared
// memory, in the element type (16 bits for fp16/bf16: the value eager PyTorch would round it
// to as well); then the block writes y[f-1] from the ring (conv over frames f-2, f-1, f) as
// 16-byte vectors.
//
// This header holds the kernels and the host code that launches them, generic over how a
// kernel is launched: temporal_adapter.cu launches them on the GPU, the CPU emulator of the
// tests (tests/cuda_emulator/) runs the same code with one CPU thread per CUDA thread.
//
// Backward, given dy in any layout with contiguous tokens (the pre-activation is recomputed:
// nothing but x is saved):
//   da[f]    = conv_w[:,0] dy[f+1] + conv_w[:,1] dy[f] + conv_w[:,2] dy[f-1]
//   dpre[f]  = da[f] * act'(pre[f])
//   dconv_w[:,k] = sum dy[f] a[f+k-1],  dconv_b = sum dy,  db_down = sum dpre
// The same GEMM pipeline recomputes pre[f]; its epilogue evaluates act and act' once per
// element (one erff, one expf) into two rings, and each thread finalises a fixed set of
// (channel, 8-token) chunks frame after frame, its dy chunks in registers. The kernel writes
// dpre and per-block partial sums (reduced in a fixed order on the host, so the result is
// deterministic); dW_down = dpre x^T and dx = W_down^T dpre are cuBLAS GEMMs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/zeros.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "temporal_adapter_gemm.cuh"

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

// ------------------------------------------------------------------------------------ maths

constexpr float kRsqrt2 = 0.70710678118654752f;    // 1 / sqrt(2)
constexpr float kRsqrt2Pi = 0.39894228040143268f;  // 1 / sqrt(2 pi)

// GELU, exact erf form: v Phi(v), Phi(v) = (1 + erf(v / sqrt 2)) / 2
__device__ __forceinline__ float act_fn(float v, bool gelu) {
  return gelu ? 0.5f * v * (1.0f + erff(v * kRsqrt2)) : v;
}

// act(v), and act'(v) in `grad`: GELU' = Phi(v) + v phi(v), phi(v) = exp(-v^2 / 2) / sqrt(2 pi)
__device__ __forceinline__ float act_with_grad(float v, bool gelu, float& grad) {
  if (!gelu) {
    grad = 1.0f;
    return v;
  }
  const float cdf = 0.5f * (1.0f + erff(v * kRsqrt2));
  grad = cdf + v * kRsqrt2Pi * expf(-0.5f * v * v);
  return v * cdf;
}

// ------------------------------------------------------------------- 16-byte chunks of T


// v rounded to T, as the bits of T in the low bits of a word
template <typename T>
__device__ __forceinline__ uint32_t bits_of(float v) {
  const T t = from_f<T>(v);
  if constexpr (sizeof(T) == 4) {
    uint32_t u;
    memcpy(&u, &t, 4);
    return u;
  } else {
    uint16_t u;
    memcpy(&u, &t, 2);
    return u;
  }
}

template <typename T>
__device__ __forceinline__ float from_bits(uint32_t u) {
  T t;
  if constexpr (sizeof(T) == 4) {
    memcpy(&t, &u, 4);
  } else {
    const uint16_t h = static_cast<uint16_t>(u);
    memcpy(&t, &h, 2);
  }
  return to_f(t);
}

__device__ __forceinline__ uint32_t& word(uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
__device__ __forceinline__ uint32_t word(const uint4& v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }

// Element q of a chunk of kVec<T> elements (q a compile-time constant after unrolling).
template <typename T>
__device__ __forceinline__ float chunk_get(const uint4& c, int q) {
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  return from_bits<T>(kPerWord == 1 ? word(c, q) : word(c, q / 2) >> (16 * (q % 2)));
}

template <typename T>
__device__ __forceinline__ void chunk_set(uint4& c, int q, float v) {
  constexpr int kPerWord = 4 / static_cast<int>(sizeof(T));
  if constexpr (kPerWord == 1) {
    word(c, q) = bits_of<T>(v);
  } else {
    const int shift = 16 * (q % 2);
    word(c, q / 2) = (word(c, q / 2) & ~(0xffffu << shift)) | (bits_of<T>(v) << shift);
  }
}

__device__ __forceinline__ uint4 load16(const void* p) {
  SIMDA_CHECK_ALIGNED(p, 16, "16-byte load");
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const uint4*>(p));
#else
  return *reinterpret_cast<const uint4*>(p);
#endif
}

__device__ __forceinline__ uint4 load16_shared(const void* p) {
  SIMDA_CHECK_ALIGNED(p, 16, "16-byte shared-memory load");
  return *reinterpret_cast<const uint4*>(p);
}

__device__ __forceinline__ void store16(void* p, const uint4& v) {
  SIMDA_CHECK_ALIGNED(p, 16, "16-byte store");
  *reinterpret_cast<uint4*>(p) = v;
}

// Two adjacent elements (p 2-element aligned) rounded to T: one 4- or 8-byte store.
template <typename T>
__device__ __forceinline__ void store_pair(T* p, float v0, float v1) {
  if constexpr (sizeof(T) == 4) {
    SIMDA_CHECK_ALIGNED(p, 8, "8-byte shared-memory store");
    *reinterpret_cast<float2*>(p) = make_float2(v0, v1);
  } else {
    SIMDA_CHECK_ALIGNED(p, 4, "4-byte shared-memory store");
    *reinterpret_cast<uint32_t*>(p) = bits_of<T>(v0) | bits_of<T>(v1) << 16;
  }
}

// The kVec<T> elements of a row from `p` on (`valid` of them; zero after): one 16-byte load
// where `vec`, else element by element.
template <typename T>
__device__ __forceinline__ uint4 load_chunk(const T* p, int valid, bool vec) {
  if (vec) return load16(p);
  uint4 c = make_uint4(0u, 0u, 0u, 0u);
#pragma unroll
  for (int q = 0; q < kVec<T>; ++q)
    if (q < valid) chunk_set<T>(c, q, to_f(p[q]));
  return c;
}

template <typename T>
__device__ __forceinline__ void store_chunk(T* p, const uint4& c, int valid, bool vec) {
  if (vec) {
    store16(p, c);
    return;
  }
#pragma unroll
  for (int q = 0; q < kVec<T>; ++q)
    if (q < valid) p[q] = from_f<T>(chunk_get<T>(c, q));
}

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

// Wide tiles where a block may use enough shared memory (sm_80, sm_90, sm_100: the forward's
// 16-bit tile needs 110.5 KiB, two blocks per SM on sm_90), narrow ones elsewhere (64 KiB on
// sm_75; 99 KiB on sm_86/sm_89, where the backward and the fp32 forward still run wide).
// fp32 tiles have half the channels: the ring holds fp32 values.
template <typename T, bool kWide>
using FwdTile = Tile<T, (sizeof(T) == 4 ? 32 : 64) * (kWide ? 2 : 1), kWide && sizeof(T) == 2 ? 64 : 32, 2>;
template <typename T, bool kWide>
using BwdTile = Tile<T, (sizeof(T) == 4 ? 16 : 32) * (kWide ? 2 : 1), kWide && sizeof(T) == 2 ? 64 : 32, 2>;

// --------------------------------------------------------------------------------- forward

template <typename T, bool kWide>
constexpr size_t fwd_smem_bytes() {
  using Tl = FwdTile<T, kWide>;
  // stages, the ring of three frames, and b_down, conv_w (3 taps), conv_b per channel (fp32)
  return (static_cast<size_t>(Tl::kStages) * Tl::kStageElems + 3 * Tl::kSlot) * sizeof(T) + 5 * Tl::RT * 4;
}

template <typename T, bool kWide>
__global__ void __launch_bounds__(kThreads)
temporal_adapter_fwd_kernel(const T* __restrict__ x, const T* __restrict__ w_down, const T* __restrict__ b_down,
                            const T* __restrict__ conv_w, const T* __restrict__ conv_b, T* __restrict__ y,
                            Geometry g, bool gelu) {
  using Tl = FwdTile<T, kWide>;
  constexpr int RT = Tl::RT, V = kVec<T>, kChunks = kTT / V;
  SIMDA_DYNAMIC_SMEM(smem);
  T* stages = reinterpret_cast<T*>(smem);
  T* ring = stages + Tl::kStages * Tl::kStageElems;  // a[f] of three frames, slot f % 3
  float* s_bias = reinterpret_cast<float*>(ring + 3 * Tl::kSlot);
  float* s_conv_w = s_bias + RT;  // tap k of row i at s_conv_w[k * RT + i]
  float* s_conv_b = s_bias + 4 * RT;
  const int r0 = blockIdx.x * RT;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTT;
  const FrameSpan span = frame_span(g);
  // The block's rows of b_down, conv_w and conv_b, read once (0 past R).
  for (int i = threadIdx.x; i < RT; i += kThreads) {
    const int r = r0 + i;
    const bool ok = r < g.R;
    s_bias[i] = ok ? to_f(b_down[r]) : 0.f;
    for (int k = 0; k < 3; ++k) s_conv_w[k * RT + i] = ok ? to_f(conv_w[static_cast<int64_t>(r) * 3 + k]) : 0.f;
    s_conv_b[i] = ok ? to_f(conv_b[r]) : 0.f;
  }
  // (the first pipeline step's __syncthreads publishes them)

  // y[out_f] = conv_b + sum_k conv_w[:, k] a[out_f + k - 1], from ring slots present in [0, F);
  // a thread per (channel, 16-byte chunk of tokens): the eight threads of a channel read one
  // ring row (no bank conflict) and write one 128-byte row segment of y.
  auto emit = [&](int out_f) {
    block_stride<RT * kChunks>([&](int u) {
      const int i = u / kChunks, j = (u % kChunks) * V, r = r0 + i;
      const int64_t t = t0 + j;
      if (r >= g.R || t >= g.T) return;
      float v[V];
#pragma unroll
      for (int q = 0; q < V; ++q) v[q] = s_conv_b[i];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int src = out_f + k - 1;
        if (src < 0 || src >= g.F) continue;
        const uint4 a = load16_shared(ring + (src % 3) * Tl::kSlot + i * Tl::kLdRing + j);
        const float wk = s_conv_w[k * RT + i];
#pragma unroll
        for (int q = 0; q < V; ++q) v[q] = fmaf(wk, chunk_get<T>(a, q), v[q]);
      }
      uint4 out;
#pragma unroll
      for (int q = 0; q < V; ++q) chunk_set<T>(out, q, v[q]);
      const int valid = g.T - t < V ? static_cast<int>(g.T - t) : V;
      store_chunk<T>(y + span.b * g.sob + r * g.sor + out_f * g.sof + t, out, valid, g.vec_out);
    });
  };

  gemm_frames<T, Tl>(x, w_down, g, span.b, span.fs, span.fe, r0, t0, stages, [&](int f, const Accum<T, Tl>& acc) {
    // a[f] = act(acc + b_down) into slot f % 3 (last read by the emit of y[f-2], before this
    // step's __syncthreads), rounded to T once.
    T* slot = ring + (f % 3) * Tl::kSlot;
    acc.for_each_pair([&](int i, int j, float v0, float v1) {
      if (r0 + i >= g.R) return;
      store_pair<T>(slot + i * Tl::kLdRing + j, act_fn(v0 + s_bias[i], gelu), act_fn(v1 + s_bias[i], gelu));
    });
    __syncthreads();
    if (f - 1 >= span.f0) emit(f - 1);  // (f - 1 < f1 always)
  });
  if (span.f1 == g.F) emit(g.F - 1);  // the last frame has no next one to wait for
}

// -------------------------------------------------------------------------------- backward

template <typename T, bool kWide>
constexpr size_t bwd_smem_bytes() {
  using Tl = BwdTile<T, kWide>;
  // stages, rings of act (3 frames) and act' (2 frames), and b_down, conv_w (3 taps) per channel
  return (static_cast<size_t>(Tl::kStages) * Tl::kStageElems + 5 * Tl::kSlot) * sizeof(T) + 4 * Tl::RT * 4;
}

// Each thread finalises kUnits (channel, 16-byte chunk of tokens) units, the same ones at every
// frame: the kChunks threads of a channel are adjacent lanes, which sum the channel's partial
// sums with shuffles at the end.
template <typename T, bool kWide>
__global__ void __launch_bounds__(kThreads)
temporal_adapter_bwd_kernel(const T* __restrict__ dy, const T* __restrict__ x, const T* __restrict__ w_down,
                            const T* __restrict__ b_down, const T* __restrict__ conv_w, T* __restrict__ dpre,
                            float* __restrict__ part_db, float* __restrict__ part_dcb,
                            float* __restrict__ part_dcw, Geometry g, bool gelu) {
  using Tl = BwdTile<T, kWide>;
  constexpr int RT = Tl::RT, V = kVec<T>, kChunks = kTT / V, kUnits = RT * kChunks / kThreads;
  static_assert(kUnits >= 1 && kUnits * kThreads == RT * kChunks, "whole units per thread");
  static_assert(32 % kChunks == 0, "a channel's threads are lanes of one warp");
  SIMDA_DYNAMIC_SMEM(smem);
  T* stages = reinterpret_cast<T*>(smem);
  T* ring_a = stages + Tl::kStages * Tl::kStageElems;  // act(pre[f]), slot f % 3
  T* ring_d = ring_a + 3 * Tl::kSlot;                  // act'(pre[f]), slot f % 2
  float* s_bias = reinterpret_cast<float*>(ring_d + 2 * Tl::kSlot);
  float* s_conv_w = s_bias + RT;  // tap k of row i at s_conv_w[k * RT + i]
  const int r0 = blockIdx.x * RT;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTT;
  const FrameSpan span = frame_span(g);
  for (int i = threadIdx.x; i < RT; i += kThreads) {
    const int r = r0 + i;
    const bool ok = r < g.R;
    s_bias[i] = ok ? to_f(b_down[r]) : 0.f;
    for (int k = 0; k < 3; ++k) s_conv_w[k * RT + i] = ok ? to_f(conv_w[static_cast<int64_t>(r) * 3 + k]) : 0.f;
  }

  int unit_i[kUnits], unit_j[kUnits];  // the units' row in the tile and first token
  bool unit_ok[kUnits];
  float db[kUnits], dcb[kUnits], dcw[kUnits][3];
  uint4 dys[3][kUnits];  // dy of frames f-2, f-1, f at the units
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {
    const int idx = threadIdx.x + u * kThreads;
    unit_i[u] = idx / kChunks;
    unit_j[u] = (idx % kChunks) * V;
    unit_ok[u] = r0 + unit_i[u] < g.R && t0 + unit_j[u] < g.T;
    db[u] = dcb[u] = dcw[u][0] = dcw[u][1] = dcw[u][2] = 0.f;
    dys[1][u] = dys[2][u] = make_uint4(0u, 0u, 0u, 0u);
  }
  auto valid_tokens = [&](int u) {
    const int64_t left = g.T - (t0 + unit_j[u]);
    return left < V ? static_cast<int>(left) : V;
  };
  // Shift the dy window by one frame: dy[f] enters (zero outside [0, F)).
  auto next_dy = [&](int f) {
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      dys[0][u] = dys[1][u];
      dys[1][u] = dys[2][u];
      dys[2][u] = make_uint4(0u, 0u, 0u, 0u);
      if (unit_ok[u] && f < g.F)
        dys[2][u] = load_chunk<T>(dy + span.b * g.sdb + (r0 + unit_i[u]) * g.sdr + f * g.sdf + t0 + unit_j[u],
                                  valid_tokens(u), g.vec_dy);
    }
  };
  // Frame gf (act of gf-1..gf+1 and act' of gf in the rings, dy of gf-1..gf+1 in dys): dpre
  // and the partial sums.
  auto finalise = [&](int gf) {
#pragma unroll
    for (int u = 0; u < kUnits; ++u) {
      if (!unit_ok[u]) continue;
      const int i = unit_i[u], j = unit_j[u];
      uint4 a[3];
#pragma unroll
      for (int k = 0; k < 3; ++k) {
        const int src = gf + k - 1;
        a[k] = src >= 0 && src < g.F ? load16_shared(ring_a + (src % 3) * Tl::kSlot + i * Tl::kLdRing + j)
                                     : make_uint4(0u, 0u, 0u, 0u);
      }
      const uint4 d = load16_shared(ring_d + (gf % 2) * Tl::kSlot + i * Tl::kLdRing + j);
      const float w0 = s_conv_w[i], w1 = s_conv_w[RT + i], w2 = s_conv_w[2 * RT + i];
      uint4 out;
#pragma unroll
      for (int q = 0; q < V; ++q) {
        const float dy_prev = chunk_get<T>(dys[0][u], q), dy_cur = chunk_get<T>(dys[1][u], q);
        const float dy_next = chunk_get<T>(dys[2][u], q);
        const float dp = (w0 * dy_next + w1 * dy_cur + w2 * dy_prev) * chunk_get<T>(d, q);
        chunk_set<T>(out, q, dp);
        db[u] += dp;
        dcb[u] += dy_cur;
#pragma unroll
        for (int k = 0; k < 3; ++k) dcw[u][k] = fmaf(dy_cur, chunk_get<T>(a[k], q), dcw[u][k]);
      }
      store_chunk<T>(dpre + span.b * g.sob + (r0 + i) * g.sor + gf * g.sof + t0 + j, out, valid_tokens(u),
                     g.vec_out);
    }
  };

  gemm_frames<T, Tl>(x, w_down, g, span.b, span.fs, span.fe, r0, t0, stages, [&](int f, const Accum<T, Tl>& acc) {
    // act and act' of pre[f] = acc + b_down, each computed once, into slots f % 3 and f % 2
    // (last read by finalise(f - 2), before this step's __syncthreads)
    T* sa = ring_a + (f % 3) * Tl::kSlot;
    T* sd = ring_d + (f % 2) * Tl::kSlot;
    acc.for_each_pair([&](int i, int j, float v0, float v1) {
      if (r0 + i >= g.R) return;
      float d0, d1;
      const float a0 = act_with_grad(v0 + s_bias[i], gelu, d0), a1 = act_with_grad(v1 + s_bias[i], gelu, d1);
      store_pair<T>(sa + i * Tl::kLdRing + j, a0, a1);
      store_pair<T>(sd + i * Tl::kLdRing + j, d0, d1);
    });
    next_dy(f);
    __syncthreads();
    if (f - 1 >= span.f0) finalise(f - 1);
  });
  if (span.f1 == g.F) {  // the last frame: no next one (dy[F] = act[F] = 0)
    next_dy(g.F);
    finalise(g.F - 1);
  }

  // Combine the kChunks threads of each channel (adjacent lanes) in a fixed order.
#pragma unroll
  for (int u = 0; u < kUnits; ++u) {
#pragma unroll
    for (int off = 1; off < kChunks; off <<= 1) {
      db[u] += __shfl_xor_sync(0xffffffffu, db[u], off);
      dcb[u] += __shfl_xor_sync(0xffffffffu, dcb[u], off);
#pragma unroll
      for (int k = 0; k < 3; ++k) dcw[u][k] += __shfl_xor_sync(0xffffffffu, dcw[u][k], off);
    }
    const int r = r0 + unit_i[u];
    if (unit_j[u] == 0 && r < g.R) {
      const int64_t part = static_cast<int64_t>(blockIdx.z) * gridDim.y + blockIdx.y;  // (b, chunk, tile)
      part_db[part * g.R + r] = db[u];
      part_dcb[part * g.R + r] = dcb[u];
      for (int k = 0; k < 3; ++k) part_dcw[(part * g.R + r) * 3 + k] = dcw[u][k];
    }
  }
}

// ------------------------------------------------------------------------------ host side

// The launch grid is (R tiles, token tiles, B * frame chunks): y and z are limited to 65535
// blocks (split_frames keeps B * chunks within it).
Geometry geometry(const at::Tensor& x, int64_t R) {
  constexpr int64_t kMaxGridYZ = 65535;
  TORCH_CHECK(x.size(0) <= kMaxGridYZ, "fused temporal adapter: batch size ", x.size(0),
              " exceeds the kernel's limit of ", kMaxGridYZ, " videos per call; split the batch");
  TORCH_CHECK((x.size(3) * x.size(4) + kTT - 1) / kTT <= kMaxGridYZ, "fused temporal adapter: H*W = ",
              x.size(3) * x.size(4), " tokens per frame exceed the kernel's limit of ", kMaxGridYZ * kTT);
  Geometry g{};
  g.C = static_cast<int>(x.size(1));
  g.R = static_cast<int>(R);
  g.F = static_cast<int>(x.size(2));
  g.T = x.size(3) * x.size(4);
  g.sxb = x.stride(0);
  g.sxc = x.stride(1);
  g.sxf = x.stride(2);
  g.sxt = x.stride(4);
  g.channels_last = x.stride(1) == 1 && x.size(1) > 1;
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

// Whether x and W_down (contiguous (R, C)) can move as 16-byte copies: both pointers aligned,
// C a multiple of a vector, and along x's contiguous dimension (channels when channels-last,
// else tokens, whose count must then be a multiple of a vector) every other stride too.
template <typename T>
bool vector_loads(const at::Tensor& x, const at::Tensor& w_down, const Geometry& g) {
  constexpr int64_t V = kVec<T>;
  const auto aligned = [](const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; };
  const auto fits = [&](int dim, int64_t stride) { return x.size(dim) == 1 || stride % V == 0; };
  if (!aligned(x.const_data_ptr()) || !aligned(w_down.const_data_ptr()) || g.C % V != 0) return false;
  if (!fits(0, g.sxb) || !fits(2, g.sxf)) return false;
  if (g.channels_last) return g.T == 1 || g.sxt % V == 0;
  return g.sxt == 1 && g.T % V == 0 && g.sxc % V == 0;
}

// Which load path the kernels take for these inputs (x and w_down as the binding passes them).
inline bool uses_vector_loads(const at::Tensor& x, const at::Tensor& w_down) {
  const Geometry g = geometry(x, w_down.size(0));
  bool vec = false;
  dispatch_dtype(x.scalar_type(), [&](auto tag) { vec = vector_loads<decltype(tag)>(x, w_down, g); });
  return vec;
}

// Where frames are outside channels in x (x.stride(2) > x.stride(1)): y, dpre and dx are then
// laid out frames outside channels too.
inline bool frames_outer(const at::Tensor& x) { return x.stride(2) > x.stride(1); }

// A (B, N, F, H, W) tensor laid out like x's frames and channels, N channels.
inline at::Tensor empty_like_order(const at::Tensor& x, int64_t n) {
  const int64_t B = x.size(0), F = x.size(2), H = x.size(3), W = x.size(4);
  return frames_outer(x) ? at::empty({B, F, n, H, W}, x.options()).transpose(1, 2)
                         : at::empty({B, n, F, H, W}, x.options());
}

// The host side, generic over `launch(kernel, grid, smem_bytes, args...)`, which runs `kernel`
// on a grid of kThreads-thread blocks, and says the GPU's SM count (`launch.sm_count()`), the
// shared memory a block may opt in to (`launch.smem_limit()`) and any frames-per-block setting
// (`launch.frames_per_block()`, 0: automatic).

// Every narrow tile fits 64 KiB (sm_75) and no wide one does (SIMDA_ADAPTER_NARROW_TILES in
// temporal_adapter.cu relies on it).
static_assert(fwd_smem_bytes<__half, false>() <= 64 * 1024 && fwd_smem_bytes<float, false>() <= 64 * 1024 &&
                  bwd_smem_bytes<__half, false>() <= 64 * 1024 && bwd_smem_bytes<float, false>() <= 64 * 1024,
              "narrow tiles fit sm_75's 64 KiB");
static_assert(fwd_smem_bytes<__half, true>() > 64 * 1024 && fwd_smem_bytes<float, true>() > 64 * 1024 &&
                  bwd_smem_bytes<__half, true>() > 64 * 1024 && bwd_smem_bytes<float, true>() > 64 * 1024,
              "wide tiles need more than 64 KiB");

// Runs fn(std::bool_constant<wide>) with the wide tile when its kernel's shared memory fits.
template <typename Launch, typename Fn>
void with_width(size_t wide_smem, size_t narrow_smem, const Launch& launch, Fn&& fn) {
  const size_t limit = launch.smem_limit();
  TORCH_CHECK(narrow_smem <= limit, "fused temporal adapter: the GPU allows ", limit,
              " bytes of shared memory per block, the kernel needs ", narrow_smem);
  if (wide_smem <= limit) fn(std::true_type{});
  else fn(std::false_type{});
}

// x must have evenly strided tokens (stride(3) == W * stride(4)); the binding ensures it.
template <typename Launch>
at::Tensor forward_impl(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                        const at::Tensor& conv_w, const at::Tensor& conv_b, bool gelu,
                        const Launch& launch) {
  const int64_t B = x.size(0), R = w_down.size(0);
  auto y = empty_like_order(x, R);
  if (y.numel() == 0) return y;
  Geometry g = geometry(x, R);
  g.sob = y.stride(0);
  g.sor = y.stride(1);
  g.sof = y.stride(2);
  dispatch_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    g.vec_x = vector_loads<T>(x, w_down, g);
    g.vec_out = g.T % kVec<T> == 0;
    with_width(fwd_smem_bytes<T, true>(), fwd_smem_bytes<T, false>(), launch, [&](auto wide) {
      constexpr bool kWide = decltype(wide)::value;
      const dim3 grid = launch_grid(g, FwdTile<T, kWide>::RT, B, launch);
      launch(temporal_adapter_fwd_kernel<T, kWide>, grid, fwd_smem_bytes<T, kWide>(),
             reinterpret_cast<const T*>(x.const_data_ptr()), reinterpret_cast<const T*>(w_down.const_data_ptr()),
             reinterpret_cast<const T*>(b_down.const_data_ptr()), reinterpret_cast<const T*>(conv_w.const_data_ptr()),
             reinterpret_cast<const T*>(conv_b.const_data_ptr()), reinterpret_cast<T*>(y.mutable_data_ptr()), g,
             gelu);
    });
  });
  return y;
}

// dy: (B, R, F, H, W) with contiguous, evenly strided tokens (the binding ensures it).
template <typename Launch>
std::vector<at::Tensor> backward_impl(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w_down,
                                      const at::Tensor& b_down, const at::Tensor& conv_w, bool gelu,
                                      const Launch& launch) {
  const int64_t B = x.size(0), C = x.size(1), R = w_down.size(0), F = x.size(2);
  Geometry g = geometry(x, R);
  // dpre follows x's order of frames and channels, so that both GEMMs below read x in place:
  // frames outside channels -> dpre (B, F, R, T); channels outside frames -> dpre (B, R, F, T).
  const bool outer = frames_outer(x);
  auto dpre = empty_like_order(x, R);
  g.sob = dpre.stride(0);
  g.sor = dpre.stride(1);
  g.sof = dpre.stride(2);
  g.sdb = dy.stride(0);
  g.sdr = dy.stride(1);
  g.sdf = dy.stride(2);
  // per-block partial sums, (B * chunks * token tiles, R): one row per block of a channel tile
  auto f32 = x.options().dtype(at::kFloat);
  auto part_db = at::zeros({1, R}, f32);
  auto part_dcb = at::zeros({1, R}, f32);
  auto part_dcw = at::zeros({1, R, 3}, f32);
  if (dpre.numel() > 0) {
    dispatch_dtype(x.scalar_type(), [&](auto tag) {
      using T = decltype(tag);
      constexpr int64_t V = kVec<T>;
      g.vec_x = vector_loads<T>(x, w_down, g);
      g.vec_out = g.T % V == 0;
      g.vec_dy = g.T % V == 0 && reinterpret_cast<std::uintptr_t>(dy.const_data_ptr()) % 16 == 0 &&
                 (B == 1 || g.sdb % V == 0) && g.sdr % V == 0 && (F == 1 || g.sdf % V == 0);
      with_width(bwd_smem_bytes<T, true>(), bwd_smem_bytes<T, false>(), launch, [&](auto wide) {
        constexpr bool kWide = decltype(wide)::value;
        const dim3 grid = launch_grid(g, BwdTile<T, kWide>::RT, B, launch);
        const int64_t parts = int64_t{grid.z} * grid.y;
        part_db = at::zeros({parts, R}, f32);
        part_dcb = at::zeros({parts, R}, f32);
        part_dcw = at::zeros({parts, R, 3}, f32);
        launch(temporal_adapter_bwd_kernel<T, kWide>, grid, bwd_smem_bytes<T, kWide>(),
               reinterpret_cast<const T*>(dy.const_data_ptr()), reinterpret_cast<const T*>(x.const_data_ptr()),
               reinterpret_cast<const T*>(w_down.const_data_ptr()),
               reinterpret_cast<const T*>(b_down.const_data_ptr()),
               reinterpret_cast<const T*>(conv_w.const_data_ptr()), reinterpret_cast<T*>(dpre.mutable_data_ptr()),
               part_db.mutable_data_ptr<float>(), part_dcb.mutable_data_ptr<float>(),
               part_dcw.mutable_data_ptr<float>(), g, gelu);
      });
    });
  }
  // Groups G of (channels x K tokens) matrices: x_g (G, C, K), dpre_g (G, R, K), both views.
  auto xg = outer ? x.permute({0, 2, 1, 3, 4}).reshape({B * F, C, g.T}) : x.reshape({B, C, F * g.T});
  auto dg = outer ? dpre.permute({0, 2, 1, 3, 4}).reshape({B * F, R, g.T}) : dpre.reshape({B, R, F * g.T});
  auto dx = at::matmul(w_down.t(), dg);  // (G, C, K), cuBLAS
  dx = outer ? dx.view({B, F, C, x.size(3), x.size(4)}).transpose(1, 2) : dx.view(x.sizes());
  // dW_down = sum_g dpre_g x_g^T: one batched GEMM over the groups and a sum, reading x in
  // place (one GEMM over all tokens would need x copied into (C, G*K) for frame-major x).
  auto dw_down = at::matmul(dg, xg.transpose(1, 2)).sum(0);
  const auto dtype = x.scalar_type();
  return {dx, dw_down, part_db.sum(0).to(dtype), part_dcw.sum(0).to(dtype), part_dcb.sum(0).to(dtype)};
}

}  // namespace
}  // namespace simda
