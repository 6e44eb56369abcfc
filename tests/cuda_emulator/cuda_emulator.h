// A CPU emulator for the subset of CUDA that csrc/ uses, for testing the kernels without a
// GPU: every CUDA thread of a block is a CPU thread, __syncthreads is a barrier of the block,
// warp-collective calls (shuffles, wmma loads and stores) wait for the 32 lanes of their warp
// and fail when some lane never comes or lanes disagree on the arguments, shared memory is one
// buffer per block (filled with NaN bytes before each block, like uninitialised memory), blocks
// run one after another in a shuffled order, and wmma is computed exactly in fp32 on whole
// 16x16 tiles per lane (each lane stores only its share of a tile) after checking the types,
// architecture and alignment rules of the hardware.
//
// Include this before the kernel header. What it cannot show: the timing of real hardware
// (races that need two warps to interleave finely; ThreadSanitizer on sanitize.cpp covers
// missing barriers), the register-level layout of wmma fragments, TF32 rounding, and the
// compiler's code generation for the device.
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
#include <atomic>
#include <barrier>
#include <chrono>
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

// The built-in variables of the running CUDA thread.
inline thread_local uint3 threadIdx{};
inline thread_local uint3 blockIdx{};
inline thread_local dim3 gridDim{};
inline thread_local dim3 blockDim{};

namespace emu {

[[noreturn]] inline void fail(const std::string& what) { throw std::runtime_error("cuda emulator: " + what); }

// How long a lane waits for the rest of its warp at a warp-collective call.
inline std::atomic<int> warp_timeout_ms{30000};

// The 32 lanes of one warp meet here; a lane left waiting too long reports the call that some
// lanes never made (undefined behaviour on the GPU: a hang or a wrong result).
class WarpBarrier {
 public:
  void arrive_and_wait(const char* what) {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == 31) {  // the last lane releases all
      count_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(warp_timeout_ms.load());
    for (unsigned spin = 1; generation_.load(std::memory_order_acquire) == generation; ++spin) {
      std::this_thread::yield();
      if (spin % 256 == 0 && std::chrono::steady_clock::now() > deadline)
        fail(std::string(what) + ": not every lane of the warp made the call");
    }
  }

 private:
  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> generation_{0};
};

// What a lane passed to a warp-collective call (all lanes must pass the same).
struct Call {
  const char* what;
  const void* pointer;
  uint64_t arg;
};

struct Block {
  std::barrier<>* barrier;
  unsigned char* smem;
  WarpBarrier* warps;  // one per warp
  float* exchange;     // two slots per thread, for warp shuffles
  Call* calls;         // two slots per thread, for warp-collective calls
};

inline thread_local Block block{};
inline thread_local unsigned parity = 0;  // which of its two slots a thread uses next

inline unsigned lane() { return threadIdx.x % 32; }
inline WarpBarrier& my_warp() { return block.warps[threadIdx.x / 32]; }

// Every lane of the warp arrives with the same arguments, or the call fails. Slots alternate
// between two sets, so one barrier per call suffices: a lane writes a set again only after the
// next call's barrier, which every lane reaches after it has read this one.
inline void warp_collective(const char* what, const void* pointer, uint64_t arg) {
  const unsigned t = threadIdx.x, first = t - lane(), set = parity;
  parity ^= 1;
  block.calls[2 * t + set] = Call{what, pointer, arg};
  my_warp().arrive_and_wait(what);
  for (unsigned other = first; other < first + 32; ++other) {
    const Call& c = block.calls[2 * other + set];
    if (std::strcmp(c.what, what) != 0 || c.pointer != pointer || c.arg != arg)
      fail(std::string(what) + ": the lanes of a warp passed different arguments (or made different calls)");
  }
}

}  // namespace emu

#define SIMDA_DYNAMIC_SMEM(name) unsigned char* name = ::emu::block.smem

namespace emu {
// Vector loads and stores fault on the GPU unless aligned to their size (x86 tolerates them).
inline void check_aligned(const void* p, std::size_t bytes, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0)
    fail(std::string(what) + ": pointer is not " + std::to_string(bytes) + "-byte aligned");
}
}  // namespace emu
#define SIMDA_CHECK_ALIGNED(pointer, bytes, what) ::emu::check_aligned(pointer, bytes, what)

inline void __syncthreads() { emu::block.barrier->arrive_and_wait(); }

// Lanes exchange values within their warp (all 32 lanes must take part: full mask only).
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
  if (lane_mask < 0 || lane_mask > 31) emu::fail("__shfl_xor_sync: lane mask outside the warp");
  const unsigned t = threadIdx.x, set = emu::parity;
  emu::parity ^= 1;
  emu::block.exchange[2 * t + set] = v;
  emu::my_warp().arrive_and_wait("__shfl_xor_sync");
  const unsigned source = (t - emu::lane()) | (emu::lane() ^ static_cast<unsigned>(lane_mask));
  return emu::block.exchange[2 * source + set];
}

namespace nvcuda {
namespace wmma {

struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Only what the hardware has: 16x16x16 tiles of fp16 (sm_70+) or bf16 (sm_80+) multiplied
// into fp32 accumulators (so a kernel that would not compile for its target fails here too).
template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "wmma: only 16x16x16 tiles are emulated");
  static constexpr bool operand = !std::is_same_v<Use, accumulator>;
  static_assert(!operand || std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>,
                "wmma: operands must be fp16 or bf16");
  static_assert(operand || std::is_same_v<T, float>, "wmma: accumulators are fp32 here");
#ifdef SIMDA_EMULATED_ARCH
  static_assert(!operand || SIMDA_EMULATED_ARCH >= (std::is_same_v<T, __half> ? 700 : 800),
                "wmma: no tensor cores for this type on the emulated architecture");
#endif
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

// A warp-collective call with the hardware's rules: 256-bit aligned tile pointers, a leading
// dimension that is a multiple of 16 bytes.
template <typename T>
inline void begin_tile_call(const T* p, unsigned ldm, const char* what) {
  emu::warp_collective(what, p, ldm);
  if (reinterpret_cast<std::uintptr_t>(p) % 32 != 0)
    emu::fail(std::string(what) + ": pointer is not 32-byte aligned");
  if ((ldm * sizeof(T)) % 16 != 0) emu::fail(std::string(what) + ": leading dimension is not a multiple of 16 bytes");
}

template <typename Use, int M, int N, int K, typename T, typename L>
inline void fill_fragment(fragment<Use, M, N, K, T, L>& f, float v) {
  std::fill(std::begin(f.x), std::end(f.x), v);
}

// Every lane holds the whole tile (the hardware spreads it over the lanes' registers).
template <typename Use, int M, int N, int K, typename T, typename L>
inline void load_matrix_sync(fragment<Use, M, N, K, T, L>& f, const T* p, unsigned ldm) {
  begin_tile_call(p, ldm, "wmma::load_matrix_sync");
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

// Each lane writes its share of the tile (every 32nd element) from its own fragment, so a lane
// that skipped a load, an mma or the store leaves wrong or unwritten elements.
template <int M, int N, int K>
inline void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm, layout_t layout) {
  begin_tile_call(p, ldm, "wmma::store_matrix_sync");
  for (int e = static_cast<int>(emu::lane()); e < M * N; e += 32) {
    const int i = e / N, j = e % N;
    (layout == mem_row_major ? p[i * ldm + j] : p[j * ldm + i]) = f.x[e];
  }
}

}  // namespace wmma
}  // namespace nvcuda

namespace emu {

// Largest dynamic shared memory a block can opt in to, by compute capability (x100).
constexpr size_t smem_optin_limit(int arch) {
  switch (arch) {
    case 700: case 720: return 96 * 1024;
    case 750: return 64 * 1024;
    case 800: case 870: return 163 * 1024;
    case 860: case 890: case 1200: case 1210: return 99 * 1024;
    default: return 227 * 1024;  // sm_90, sm_100
  }
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
  if (threads % 32 != 0) fail("blocks must be whole warps");
  std::vector<float> exchange(2 * threads);
  std::vector<Call> calls(2 * threads);
  std::unique_ptr<WarpBarrier[]> warps(new WarpBarrier[threads / 32]);
  std::barrier<> barrier(threads);
  std::vector<std::string> faults(threads);
  std::vector<std::thread> pool;
  pool.reserve(threads);
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      threadIdx = {t, 0, 0};
      blockDim = dim3(threads, 1, 1);
      gridDim = grid;
      block = Block{&barrier, smem.get(), warps.get(), exchange.data(), calls.data()};
      parity = 0;
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
// that is not 32-byte aligned, "misaligned_vector" checks a 16-byte access 8 bytes off,
// "partial_warp" stores a tile from 31 lanes of a warp, "divergent_pointers" stores with one
// lane pointing elsewhere, "smem" asks for more shared memory than sm_75 has.
inline void self_test(const std::string& fault) {
  if (fault == "misaligned") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __half, nvcuda::wmma::row_major> a;
      nvcuda::wmma::load_matrix_sync(a, reinterpret_cast<const __half*>(block.smem) + 8, 16);
    });
  } else if (fault == "misaligned_vector") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      SIMDA_CHECK_ALIGNED(block.smem + 8, 16, "16-byte shared-memory store");
    });
  } else if (fault == "partial_warp") {  // lane 0 never stores: the others wait, then fail
    const int saved = warp_timeout_ms.exchange(300);
    try {
      launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
        nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
        nvcuda::wmma::fill_fragment(acc, 1.0f);
        if (lane() != 0) nvcuda::wmma::store_matrix_sync(reinterpret_cast<float*>(block.smem), acc, 16,
                                                          nvcuda::wmma::mem_row_major);
      });
    } catch (...) {
      warp_timeout_ms = saved;
      throw;
    }
    warp_timeout_ms = saved;
  } else if (fault == "divergent_pointers") {
    launch(dim3(1, 1, 1), 32, 4096, smem_optin_limit(900), 0, [] {
      nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> acc;
      nvcuda::wmma::fill_fragment(acc, 1.0f);
      float* tile = reinterpret_cast<float*>(block.smem) + (lane() == 5 ? 256 : 0);
      nvcuda::wmma::store_matrix_sync(tile, acc, 16, nvcuda::wmma::mem_row_major);
    });
  } else if (fault == "smem") {
    launch(dim3(1, 1, 1), 32, 65 * 1024, smem_optin_limit(750), 0, [] {});
  } else {
    fail("unknown self-test fault '" + fault + "'");
  }
}

}  // namespace emu
