// The GEMM at the heart of the temporal adapter's kernels (temporal_adapter_kernels.cuh):
//
//   acc[RT x kTT] = W_down[r0:r0+RT, :] x[b, :, f, t0:t0+kTT]   (fp32)   for each frame f of a walk
//
// run as one pipeline over every (frame, KC-channel step) of the walk: kStages shared-memory
// buffers filled by cp.async (16-byte copies where x allows, else element by element), the next
// step's copies in flight while the current step is multiplied, one __syncthreads per step; on
// tensor cores (mma.sync m16n8k16 from ldmatrix fragments, fp32 accumulators) for fp16 from
// sm_75 and bf16 from sm_80, with FMAs otherwise (exact fp32, no TF32). After a frame's last
// step the kernel's epilogue gets the accumulators with their (row, token) positions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#ifndef SIMDA_CUDA_EMULATOR
#include "ptx_primitives.cuh"
#endif

#include <cstdint>
#include <type_traits>

namespace simda {
namespace {

constexpr int kThreads = 256;  // 8 warps
constexpr int kWarps = kThreads / 32;
constexpr int kTT = 64;  // tokens per tile

template <typename T> __device__ __forceinline__ float to_f(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_f(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f(float v) { return __float2bfloat16_rn(v); }

template <typename T> constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16 bytes

// fn(idx) for the thread's indices threadIdx.x + n * kThreads below N (unrolled).
template <int N, class Fn>
__device__ __forceinline__ void block_stride(Fn&& fn) {
#pragma unroll
  for (int n = 0; n < (N + kThreads - 1) / kThreads; ++n) {
    const int idx = static_cast<int>(threadIdx.x) + n * kThreads;
    if (N % kThreads == 0 || idx < N) fn(idx);
  }
}

// ------------------------------------------------------------------------------- geometry

struct Geometry {
  int C, R, F;
  int64_t T;                    // tokens per frame (H*W)
  int64_t sxb, sxc, sxf, sxt;   // x strides (elements)
  int64_t sob, sor, sof;        // output strides: y (forward) or dpre (backward); tokens contiguous
  int64_t sdb, sdr, sdf;        // dy strides (backward; tokens contiguous)
  bool channels_last;           // x's channels are contiguous: tiles are gathered along channels
  bool vec_x;                   // x and W_down tiles move as 16-byte copies (vector_loads)
  bool vec_out;                 // output rows are written as 16-byte vectors (T a multiple of a vector)
  bool vec_dy;                  // dy rows are read as 16-byte vectors
  int chunk;                    // output frames per block (split_frames); blockIdx.z = (b, chunk)
  int chunks;                   // ceil(F / chunk)
};

// ---------------------------------------------------------------------------------- tiles

// A kernel's tile: RT output channels x kTT tokens per block, the GEMM in steps of KC input
// channels through kStages shared-memory buffers. Every shared-memory row is padded by 16
// bytes, which spreads the eight 16-byte rows an ldmatrix phase reads (and the 32-bit
// accumulator stores into the ring) over all banks.
template <typename T, int RT_, int KC_, int kStages_>
struct Tile {
  static constexpr int RT = RT_, KC = KC_, kStages = kStages_;
  static constexpr int kPad = kVec<T>;
  static constexpr int kLdW = KC + kPad;   // sW: RT x KC, one output channel per row
  static constexpr int kLdXt = kTT + kPad;  // sX, tokens contiguous: KC x kTT
  static constexpr int kLdXc = KC + kPad;   // sX, channels-last: kTT x KC
  static constexpr int kXElems = KC * kLdXt > kTT * kLdXc ? KC * kLdXt : kTT * kLdXc;
  static constexpr int kStageElems = RT * kLdW + kXElems;
  static constexpr int kLdRing = kTT + kPad;
  static constexpr int kSlot = RT * kLdRing;  // one frame of the ring
  static_assert(RT % 16 == 0 && KC % 16 == 0, "tiles are whole 16x16 MMA blocks");
};

// The architecture the device code is compiled for (the emulator chooses one).
#if defined(__CUDA_ARCH__)
constexpr int kArch = __CUDA_ARCH__;
#elif defined(SIMDA_EMULATED_ARCH)
constexpr int kArch = SIMDA_EMULATED_ARCH;
#else
constexpr int kArch = 0;  // host pass of nvcc: no device code is generated from it
#endif

// Tensor cores (mma.sync) for fp16 from sm_75 and bf16 from sm_80; FMAs otherwise and for fp32.
template <typename T>
constexpr bool use_mma() {
  if (std::is_same_v<T, float> || kArch < 750) return false;
  return kArch >= 800 || std::is_same_v<T, __half>;
}

// Stages W_down[r0:r0+RT, c0:c0+KC] and x[b, c0:c0+KC, f, t0:t0+kTT] in one buffer: sW (rows
// of channels), then sX (rows of KC channels' tokens, or of kTT tokens' channels when x is
// channels-last), zero past C and T; rows past R are left alone (their outputs are dropped).
// Vector path (g.vec_x): 16-byte cp.async copies, in flight until the caller waits for them;
// otherwise element by element, synchronously.
template <typename T, class Tl>
__device__ __forceinline__ void load_stage(const T* __restrict__ x, const T* __restrict__ w, const Geometry& g,
                                           int b, int f, int c0, int r0, int64_t t0, T* buf) {
  constexpr int KC = Tl::KC, V = kVec<T>;
  T* sW = buf;
  T* sX = buf + Tl::RT * Tl::kLdW;
  const T* xb = x + b * g.sxb + f * g.sxf;
  if (g.vec_x) {
    block_stride<Tl::RT * (KC / V)>([&](int idx) {
      const int i = idx / (KC / V), k = (idx % (KC / V)) * V, r = r0 + i, c = c0 + k;
      if (r < g.R) simda_ptx::cp_async16(sW + i * Tl::kLdW + k, c < g.C ? w + static_cast<int64_t>(r) * g.C + c : w, c < g.C);
    });
    if (g.channels_last) {  // 16 bytes of channels of one token (x's channel stride is 1)
      block_stride<kTT * (KC / V)>([&](int idx) {
        const int j = idx / (KC / V), k = (idx % (KC / V)) * V, c = c0 + k;
        const int64_t t = t0 + j;
        const bool ok = c < g.C && t < g.T;
        simda_ptx::cp_async16(sX + j * Tl::kLdXc + k, ok ? xb + c + t * g.sxt : x, ok);
      });
    } else {  // 16 bytes of tokens of one channel (x's token stride is 1)
      block_stride<KC * (kTT / V)>([&](int idx) {
        const int k = idx / (kTT / V), j = (idx % (kTT / V)) * V, c = c0 + k;
        const int64_t t = t0 + j;
        const bool ok = c < g.C && t < g.T;
        simda_ptx::cp_async16(sX + k * Tl::kLdXt + j, ok ? xb + c * g.sxc + t : x, ok);
      });
    }
    return;
  }
  for (int idx = threadIdx.x; idx < Tl::RT * KC; idx += kThreads) {
    const int i = idx / KC, k = idx % KC, r = r0 + i, c = c0 + k;
    if (r < g.R) sW[i * Tl::kLdW + k] = c < g.C ? w[static_cast<int64_t>(r) * g.C + c] : from_f<T>(0.f);
  }
  for (int idx = threadIdx.x; idx < KC * kTT; idx += kThreads) {
    // consecutive threads along whichever of channels / tokens is contiguous in x
    const int k = g.channels_last ? idx % KC : idx / kTT, j = g.channels_last ? idx / KC : idx % kTT;
    const int c = c0 + k;
    const int64_t t = t0 + j;
    const T v = c < g.C && t < g.T ? xb[c * g.sxc + t * g.sxt] : from_f<T>(0.f);
    sX[g.channels_last ? j * Tl::kLdXc + k : k * Tl::kLdXt + j] = v;
  }
}

// A thread's GEMM accumulators on the tensor cores. The 8 warps tile the block's RT x kTT
// outputs as kWM x kWN warps of WR x WT (32 x 32 for RT = 128); a warp whose rows all lie past
// R skips its MMAs, so a tail of R (R = 160 in tiles of 128: 32 rows) costs its own rows only.
template <typename T, class Tl>
struct MmaAccum {
  static constexpr int kWM = Tl::RT >= 128 ? 4 : 2, kWN = kWarps / kWM;
  static constexpr int WR = Tl::RT / kWM, WT = kTT / kWN;
  static constexpr int M = WR / 16, N = WT / 8;  // m16 x n8 blocks per warp
  static_assert(WR % 16 == 0 && WT % 16 == 0, "warp tiles are whole ldmatrix loads");
  float acc[M][N][4];
  int wr, wc;  // the warp's first row and token

  __device__ __forceinline__ void zero() {
    const int warp = threadIdx.x / 32;
    wr = (warp / kWN) * WR;
    wc = (warp % kWN) * WT;
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[m][n][e] = 0.f;
  }

  // acc += sW[wr:wr+WR, :] sX[:, wc:wc+WT] over one step of KC channels.
  __device__ __forceinline__ void step(const T* sW, const T* sX, const Geometry& g, int r0) {
    if (r0 + wr >= g.R) return;  // warp-uniform: the warp's rows are all past R
    const int l = threadIdx.x % 32;
#pragma unroll
    for (int kk = 0; kk < Tl::KC; kk += 16) {
      uint32_t a[M][4], b[N][2];
      // lane l points at row l % 16, column half l / 16 of each 16x16 block
#pragma unroll
      for (int m = 0; m < M; ++m)
        simda_ptx::ldmatrix_x4(a[m], sW + (wr + 16 * m + l % 16) * Tl::kLdW + kk + (l / 16) * 8);
#pragma unroll
      for (int n = 0; n < N; n += 2) {
        uint32_t r[4];  // B of token blocks n (k 0-7, 8-15) and n + 1
        const int j = wc + 8 * n + (l / 16) * 8;
        if (g.channels_last) {  // sX[j][k]: rows of tokens, as B's columns
          simda_ptx::ldmatrix_x4(r, sX + (j + l % 8) * Tl::kLdXc + kk + ((l / 8) % 2) * 8);
        } else {  // sX[k][j]: rows of channels, transposed on the way
          simda_ptx::ldmatrix_x4_trans(r, sX + (kk + l % 16) * Tl::kLdXt + j);
        }
        b[n][0] = r[0];
        b[n][1] = r[1];
        b[n + 1][0] = r[2];
        b[n + 1][1] = r[3];
      }
      simda_ptx::mma_tile<T, M, N>(acc, a, b);
    }
  }

  // fn(row, token, v0, v1): the accumulators of (row, token) and (row, token + 1), token even.
  // m16n8 accumulator layout: lane (g = l / 4, q = l % 4) holds rows g and g + 8, tokens 2q, 2q + 1.
  template <class Fn>
  __device__ __forceinline__ void for_each_pair(Fn&& fn) const {
    const int l = threadIdx.x % 32, g = l / 4, q = l % 4;
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
      for (int n = 0; n < N; ++n)
#pragma unroll
        for (int h = 0; h < 2; ++h)
          fn(wr + 16 * m + g + 8 * h, wc + 8 * n + 2 * q, acc[m][n][2 * h], acc[m][n][2 * h + 1]);
  }
};

// The same with FMAs in fp32 (exact for fp32 inputs, no TF32): each thread owns RT/16 rows x
// 4 tokens.
template <typename T, class Tl>
struct FmaAccum {
  static constexpr int kRows = Tl::RT / 16;
  float acc[kRows][4];
  int i0, j0;

  __device__ __forceinline__ void zero() {
    i0 = (threadIdx.x / 16) * kRows;
    j0 = (threadIdx.x % 16) * 4;
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = 0.f;
  }

  __device__ __forceinline__ void step(const T* sW, const T* sX, const Geometry& g, int r0) {
    if (r0 + i0 >= g.R) return;
#pragma unroll 4
    for (int k = 0; k < Tl::KC; ++k) {
      float bv[4];
#pragma unroll
      for (int j = 0; j < 4; ++j)
        bv[j] = to_f(g.channels_last ? sX[(j0 + j) * Tl::kLdXc + k] : sX[k * Tl::kLdXt + j0 + j]);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float av = to_f(sW[(i0 + i) * Tl::kLdW + k]);
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av, bv[j], acc[i][j]);
      }
    }
  }

  template <class Fn>
  __device__ __forceinline__ void for_each_pair(Fn&& fn) const {
#pragma unroll
    for (int i = 0; i < kRows; ++i)
#pragma unroll
      for (int j = 0; j < 4; j += 2) fn(i0 + i, j0 + j, acc[i][j], acc[i][j + 1]);
  }
};

template <typename T, class Tl>
using Accum = std::conditional_t<use_mma<T>(), MmaAccum<T, Tl>, FmaAccum<T, Tl>>;

// The GEMM of frames fs..fe of video b: for each frame, acc = W_down[r0:r0+RT, :] x[b, :, f,
// t0:t0+kTT] (fp32), then epilogue(f, acc) (called by every thread). Steps s = (frame, channel
// step) run as one pipeline: step s + kStages - 1 is copied into the buffer step s - 1 used
// while step s is multiplied.
template <typename T, class Tl, class Epilogue>
__device__ __forceinline__ void gemm_frames(const T* __restrict__ x, const T* __restrict__ w, const Geometry& g,
                                            int b, int fs, int fe, int r0, int64_t t0, T* stages,
                                            Epilogue&& epilogue) {
  const int ksteps = (g.C + Tl::KC - 1) / Tl::KC;
  const int steps = (fe - fs + 1) * ksteps;
  auto buffer = [&](int s) { return stages + (s % Tl::kStages) * Tl::kStageElems; };
  auto load = [&](int s) { load_stage<T, Tl>(x, w, g, b, fs + s / ksteps, (s % ksteps) * Tl::KC, r0, t0, buffer(s)); };
#pragma unroll
  for (int s = 0; s < Tl::kStages - 1; ++s) {
    if (s < steps) load(s);
    simda_ptx::cp_async_commit();
  }
  Accum<T, Tl> acc;
  acc.zero();
  for (int s = 0; s < steps; ++s) {
    simda_ptx::cp_async_wait<Tl::kStages - 2>();  // this thread's copies of step s have landed
    __syncthreads();                             // everyone's; and step s - 1's buffer is free
    if (s + Tl::kStages - 1 < steps) load(s + Tl::kStages - 1);
    simda_ptx::cp_async_commit();  // (empty past the last step: the group count stays uniform)
    const T* buf = buffer(s);
    acc.step(buf, buf + Tl::RT * Tl::kLdW, g, r0);
    if (s % ksteps == ksteps - 1) {
      epilogue(fs + s / ksteps, acc);
      acc.zero();
    }
  }
}

}  // namespace
}  // namespace simda
