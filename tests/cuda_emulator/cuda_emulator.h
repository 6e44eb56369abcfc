// A CPU emulator for the subset of CUDA that csrc/ uses, for testing the kernels without a
// GPU: every CUDA thread of a block is a CPU thread, __syncthreads is a barrier, shared memory
// is one buffer per block (filled with NaN bytes before each block, like uninitialised memory),
// blocks run one after another in a shuffled order, and wmma is computed exactly in fp32 on
// whole 16x16 tiles per thread, after checking the alignment rules the hardware imposes.
//
// Include this before the kernel header. What it cannot show: the timing of real hardware
// (races that need two warps to interleave finely), the register-level layout of wmma
// fragments, and the compiler's code generation for the device.
#pragma once

#define SIMDA_CUDA_EMULATOR 1

// Execution-space qualifiers mean nothing on the CPU (defined before the CUDA headers, which
// then keep them).
#define __host__
#define __device__
#define __global__
#define __shared__
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

namespace emu {

struct Block {
  std::barrier<>* barrier;
  unsigned char* smem;
  float* exchange;  // one slot per thread, for warp shuffles
};

inline thread_local Block block{};

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("cuda emulator: " + what); }

}  // namespace emu

inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 gridDim{};
inline thread_local dim3 blockDim{};

#define SIMDA_DYNAMIC_SMEM(name) unsigned char* name = ::emu::block.smem

inline void __syncthreads() { emu::block.barrier->arrive_and_wait(); }

// Every thread of the block must call it (as every thread of a warp must on the GPU).
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
  const unsigned t = threadIdx.x;
  emu::block.exchange[t] = v;
  __syncthreads();
  const float r = emu::block.exchange[(t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(lane_mask))];
  __syncthreads();
  return r;
}

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  float x[rows * cols];
};

template <typename T>
inline float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<float>(v);
}

// The hardware needs 256-bit aligned tile pointers and a leading dimension that is a multiple
// of 16 bytes.
template <typename T>
inline void check_tile(const T* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    emu::fail(std::string(what) + ": pointer is not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) emu::fail(std::string(what) + ": leading dimension is not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  std::fill(std::begin(f.x), std::end(f.x), v);
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  check_tile(p, ldm, "wmma::load_matrix_sync");
  using Frag = fragment<Use, M, N, K, T, L>;
  for (int i = 0; i < Frag::rows; ++i)
    for (int j = 0; j < Frag::cols; ++j)
      f.x[i * Frag::cols + j] = to_float(std::is_same_v<L, col_major> ? p[j * ldm + i] : p[i * ldm + j]);
}

template <int M, int N, int K, typename T, typename LA, typename LB>
inline void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
                     const fragment<matrix_b, M, N, K, T, LB>& b, const fragment<accumulator, M, N, K, float>& c) {
  float out[M * N];
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      float s = c.x[i * N + j];
      for (int k = 0; k < K; ++k) s += a.x[i * K + k] * b.x[k * N + j];
      out[i * N + j] = s;
    }
  std::copy(out, out + M * N, d.x);
}

// Lane 0 writes the tile for the warp (all lanes hold the same values).
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  check_tile(p, ldm, "wmma::store_matrix_sync");
  if (threadIdx.x % 32 != 0) return;
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[i * N + j];
}

}  // namespace wmma
}  // namespace nvcuda

namespace emu {

// Largest dynamic shared memory a block can opt in to, by compute capability (x100).
constexpr size_t smem_optin_limit(int arch) {
  if (arch >= 900) return 227 * 1024;
  if (arch >= 860) return 99 * 1024;
  if (arch >= 800) return 163 * 1024;
  if (arch >= 750) return 64 * 1024;
  return 96 * 1024;  // sm_70
}

// Runs body() as every thread of every block of `grid`, blocks in a shuffled order.
inline void launch(dim3 grid, unsigned threads, size_t smem_bytes, size_t smem_limit, uint64_t seed,
                   const std::function<void()>& body) {
  if (smem_bytes > smem_limit)
    fail("kernel asks for " + std::to_string(smem_bytes) + " bytes of shared memory, the limit is " +
         std::to_string(smem_limit));
  std::vector<dim3> order;
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) order.emplace_back(x, y, z);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
  // Exactly the bytes asked for, so that an address sanitizer sees an overflow.
  const size_t n = std::max<size_t>(smem_bytes, 1);
  auto release = [](unsigned char* p) { ::operator delete[](p, std::align_val_t(256)); };
  std::unique_ptr<unsigned char[], decltype(release)> smem(
      static_cast<unsigned char*>(::operator new[](n, std::align_val_t(256))), release);
  std::vector<float> exchange(threads);
  std::barrier<> barrier(threads);
  std::vector<std::string> faults(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = {t, 0, 0};
      blockDim = dim3(threads, 1, 1);
      gridDim = grid;
      block = Block{&barrier, smem.get(), exchange.data()};
      for (const dim3& b : order) {
        if (t == 0) std::memset(smem.get(), 0xff, smem_bytes);  // NaN in every float type
        barrier.arrive_and_wait();
        blockIdx = {b.x, b.y, b.z};
        try {
          body();
        } catch (const std::exception& e) {
          faults[t] = e.what();
          barrier.arrive_and_drop();  // the other threads go on without this one
          return;
        }
        barrier.arrive_and_wait();
      }
    });
  }
  for (auto& th : pool) th.join();
  for (const auto& f : faults)
    if (!f.empty()) throw std::runtime_error(f);
}

}  // namespace emu

namespace emu {

// Faults the emulator must catch (its own test): "misaligned" loads a wmma tile from a pointer
// that is not 32-byte aligned, "smem" asks for more shared memory than sm_75 has.
inline void self_test(const std::string& fault) {
  if (fault == "misaligned") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> a;
      nvcuda::wmma::load_matrix_sync(a, reinterpret_cast<const __half*>(block.smem) + 8, 16);
    });
  } else if (fault == "smem") {
    launch(dim3(1, 1, 1), 32, 65 * 1024, smem_optin_limit(750), 0, [] {});
  } else {
    fail("unknown self-test fault '" + fault + "'");
  }
}

}  // namespace emu
