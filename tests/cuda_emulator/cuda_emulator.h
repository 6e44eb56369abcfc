// A CPU emulator for the subset of CUDA that csrc/ uses, for testing the kernels without a
// GPU: every CUDA thread of a block is a CPU thread, __syncthreads is a barrier of the block,
// warp-collective calls (shuffles, ldmatrix, mma.sync) wait for the 32 lanes of their warp and
// fail when some lane never comes or lanes disagree on the call, shared memory is one buffer
// per block (filled with NaN bytes before each block, like uninitialised memory), and blocks
// run one after another in a shuffled order.
//
// The PTX instructions of csrc/ptx_primitives.cuh are emulated lane by lane with the register
// layouts of the PTX ISA: ldmatrix hands each lane the elements of the rows the other lanes
// point at, mma.sync m16n8k16 computes each lane's four accumulators from the fragments the
// 32 lanes hold (exactly, in fp32), so a kernel that reads a fragment element as the wrong row
// or column gets wrong results. cp.async is deferred: the destination is poisoned with NaN at
// issue and the copy lands when the issuing thread waits for its group, so reading a stage
// before its wait (or a __syncthreads after it) reads NaN; a copy never waited for fails the
// block. Alignment, the architecture of each instruction (bf16 MMA from sm_80, cp.async from
// sm_80, synchronous before) and the shared-memory limit are checked.
//
// Include this before the kernel header. What it cannot show: the timing of real hardware
// (races that need two warps to interleave finely; ThreadSanitizer on sanitize.cpp covers
// missing barriers), the tensor cores' accumulation order, and the compiler's code generation
// for the device.
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
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <deque>
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
// lanes never made (undefined behaviour on the GPU: a hang or a wrong result). Waiting lanes
// sleep on a futex, so that the lanes still on their way get the CPU.
class WarpBarrier {
 public:
  void arrive_and_wait(const char* what) {
    const uint32_t generation = generation_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == 31) {  // the last lane releases all
      count_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_acq_rel);
      syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, 31, nullptr, nullptr, 0);
      return;
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(warp_timeout_ms.load());
    const timespec nap{0, 50'000'000};
    while (generation_.load(std::memory_order_acquire) == generation) {
      syscall(SYS_futex, word(), FUTEX_WAIT_PRIVATE, generation, &nap, nullptr, 0);
      if (std::chrono::steady_clock::now() > deadline)
        fail(std::string(what) + ": not every lane of the warp made the call");
    }
  }

 private:
  uint32_t* word() { return reinterpret_cast<uint32_t*>(&generation_); }
  std::atomic<uint32_t> count_{0};
  std::atomic<uint32_t> generation_{0};
};

// What a lane brought to a warp-collective call: the call, its warp-uniform argument, and the
// lane's own operands (a row pointer, a shuffled value, MMA fragments).
struct Slot {
  const char* what;
  uint64_t arg;
  alignas(16) uint32_t data[16];
};

struct Block {
  std::barrier<>* barrier;
  unsigned char* smem;
  WarpBarrier* warps;  // one per warp
  Slot* slots;         // two per thread
};

inline thread_local Block block{};
inline thread_local unsigned parity = 0;  // which of its two slots a thread uses next

inline unsigned lane() { return threadIdx.x % 32; }

// The operands the lanes of a warp brought to one call (valid until this lane's next call).
struct Lanes {
  unsigned first, set;
  const uint32_t* operands(unsigned lane) const { return block.slots[2 * (first + lane) + set].data; }
};

// Every lane of the warp arrives with the same call and argument, or the call fails. Slots
// alternate between two sets, so one barrier per call suffices: a lane writes a set again only
// after the next call's barrier, which every lane reaches after it has read this one.
inline Lanes warp_collective(const char* what, uint64_t arg, const void* operands = nullptr, size_t bytes = 0) {
  const unsigned t = threadIdx.x, first = t - lane(), set = parity;
  parity ^= 1;
  Slot& mine = block.slots[2 * t + set];
  mine.what = what;
  mine.arg = arg;
  if (bytes > sizeof(mine.data)) fail(std::string(what) + ": too many operands for the emulator's slot");
  if (bytes) std::memcpy(mine.data, operands, bytes);
  block.warps[t / 32].arrive_and_wait(what);
  for (unsigned other = first; other < first + 32; ++other) {
    const Slot& s = block.slots[2 * other + set];
    if (std::strcmp(s.what, what) != 0 || s.arg != arg)
      fail(std::string(what) + ": the lanes of a warp passed different arguments (or made different calls)");
  }
  return Lanes{first, set};
}

// Vector loads and stores fault on the GPU unless aligned to their size (x86 tolerates them).
inline void check_aligned(const void* p, std::size_t bytes, const char* what) {
  if (reinterpret_cast<std::uintptr_t>(p) % bytes != 0)
    fail(std::string(what) + ": pointer is not " + std::to_string(bytes) + "-byte aligned");
}

// cp.async copies of this thread: issued into the open group, committed groups oldest first.
struct AsyncCopy {
  unsigned char* dst;
  const unsigned char* src;  // null: 16 zero bytes
};
inline thread_local std::vector<AsyncCopy> copies_open;
inline thread_local std::deque<std::vector<AsyncCopy>> copy_groups;

inline void land(const std::vector<AsyncCopy>& group) {
  for (const AsyncCopy& c : group) {
    if (c.src) std::memcpy(c.dst, c.src, 16);
    else std::memset(c.dst, 0, 16);
  }
}

inline bool copies_pending() {
  if (!copies_open.empty()) return true;
  return std::any_of(copy_groups.begin(), copy_groups.end(), [](const auto& g) { return !g.empty(); });
}

template <typename T>
inline float to_float(T v) {
  if constexpr (std::is_same_v<T, __half>) return __half2float(v);
  else if constexpr (std::is_same_v<T, __nv_bfloat16>) return __bfloat162float(v);
  else return static_cast<float>(v);
}

// Element `half_index` (0: low 16 bits) of a register holding two 16-bit values of type T.
template <typename T>
inline float unpack(uint32_t reg, int half_index) {
  const uint16_t bits = static_cast<uint16_t>(reg >> (16 * half_index));
  T v;
  std::memcpy(&v, &bits, 2);
  return to_float(v);
}

}  // namespace emu

#define SIMDA_DYNAMIC_SMEM(name) unsigned char* name = ::emu::block.smem
#define SIMDA_CHECK_ALIGNED(pointer, bytes, what) ::emu::check_aligned(pointer, bytes, what)

inline void __syncthreads() { emu::block.barrier->arrive_and_wait(); }

// Lanes exchange values within their warp (all 32 lanes must take part: full mask only).
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  if (mask != 0xffffffffu) emu::fail("__shfl_xor_sync: only full-warp masks are emulated");
  if (lane_mask < 0 || lane_mask > 31) emu::fail("__shfl_xor_sync: lane mask outside the warp");
  const emu::Lanes lanes = emu::warp_collective("__shfl_xor_sync", static_cast<uint64_t>(lane_mask), &v, sizeof v);
  float out;
  std::memcpy(&out, lanes.operands(emu::lane() ^ static_cast<unsigned>(lane_mask)), sizeof out);
  return out;
}

// The instructions of csrc/ptx_primitives.cuh (same names, same contract). Internal linkage:
// each translation unit emulates the architecture it defines SIMDA_EMULATED_ARCH as.
namespace simda_ptx {
namespace {

#ifdef SIMDA_EMULATED_ARCH
constexpr int kEmulatedArch = SIMDA_EMULATED_ARCH;
#else
constexpr int kEmulatedArch = 900;
#endif

// 16 bytes global -> shared, or 16 zero bytes when !valid (src not read).
inline void cp_async16(void* dst, const void* src, bool valid) {
  emu::check_aligned(dst, 16, "cp.async shared destination");
  if (valid) emu::check_aligned(src, 16, "cp.async global source");
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = valid ? static_cast<const unsigned char*>(src) : nullptr;
  if constexpr (kEmulatedArch >= 800) {
    std::memset(d, 0xff, 16);  // in flight: NaN until the group is waited for
    emu::copies_open.push_back({d, s});
  } else {  // no cp.async before sm_80: a synchronous copy
    emu::land({{d, s}});
  }
}

inline void cp_async_commit() {
  if constexpr (kEmulatedArch >= 800) {
    emu::copy_groups.push_back(std::move(emu::copies_open));
    emu::copies_open.clear();
  }
}

// Every committed group but the n most recent has landed.
template <int N>
inline void cp_async_wait() {
  while (emu::copy_groups.size() > static_cast<size_t>(N)) {
    emu::land(emu::copy_groups.front());
    emu::copy_groups.pop_front();
  }
}

// ldmatrix.x4 (.trans): lanes 8i..8i+7 point at the eight 16-byte rows of 8x8 matrix i; lane l
// receives in r[i] the elements (l/4, 2(l%4)) and (l/4, 2(l%4)+1) of matrix i (of its
// transpose with .trans), the first in the low 16 bits.
template <bool kTrans>
inline void ldmatrix(uint32_t (&r)[4], const void* row, const char* what) {
  static_assert(kEmulatedArch >= 750, "ldmatrix needs sm_75");
  emu::check_aligned(row, 16, what);
  const emu::Lanes lanes = emu::warp_collective(what, 0, &row, sizeof row);
  auto element = [&](int matrix, int i, int j) {  // element (i, j) of `matrix`, as 16 bits
    const uint16_t* p;
    std::memcpy(&p, lanes.operands(8 * matrix + i), sizeof p);
    return static_cast<uint32_t>(p[j]);
  };
  const int l = static_cast<int>(emu::lane()), g = l / 4, c = 2 * (l % 4);
  for (int i = 0; i < 4; ++i)
    r[i] = kTrans ? element(i, c, g) | element(i, c + 1, g) << 16 : element(i, g, c) | element(i, g, c + 1) << 16;
}

inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix<false>(r, row, "ldmatrix.x4"); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ldmatrix<true>(r, row, "ldmatrix.x4.trans"); }

// mma.sync m16n8k16, fp32 accumulators, for every (m, n): acc[m][n] += A_m B_n. Fragments as
// the PTX ISA lays them out, with g = lane / 4 and q = lane % 4:
//   A (16x16, row-major) a[0..3]: (g, 2q..2q+1), (g+8, 2q..), (g, 8+2q..), (g+8, 8+2q..)
//   B (16x8, k x n) b[0..1]: (2q..2q+1, g), (8+2q..8+2q+1, g)
//   C (16x8) acc[0..3]: (g, 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)
template <typename T, int M, int N>
inline void mma_tile(float (&acc)[M][N][4], const uint32_t (&a)[M][4], const uint32_t (&b)[N][2]) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma.sync: fp16 or bf16 operands");
  static_assert(kEmulatedArch >= (std::is_same_v<T, __half> ? 750 : 800),
                "mma.sync: no tensor cores for this type on the emulated architecture");
  uint32_t operands[M * 4 + N * 2];
  std::memcpy(operands, a, sizeof a);
  std::memcpy(operands + M * 4, b, sizeof b);
  const emu::Lanes lanes = emu::warp_collective("mma.sync.m16n8k16", M * 16 + N, operands, sizeof operands);
  auto a_at = [&](int m, int row, int k) {  // A_m(row, k), held by lane 4 (row % 8) + (k % 8) / 2
    const uint32_t reg = lanes.operands(4 * (row % 8) + (k % 8) / 2)[m * 4 + row / 8 + 2 * (k / 8)];
    return emu::unpack<T>(reg, k % 2);
  };
  auto b_at = [&](int n, int k, int col) {  // B_n(k, col), held by lane 4 col + (k % 8) / 2
    const uint32_t reg = lanes.operands(4 * col + (k % 8) / 2)[M * 4 + n * 2 + k / 8];
    return emu::unpack<T>(reg, k % 2);
  };
  const int g = static_cast<int>(emu::lane()) / 4, q = static_cast<int>(emu::lane()) % 4;
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n)
      for (int e = 0; e < 4; ++e) {
        const int row = g + 8 * (e / 2), col = 2 * q + e % 2;
        float s = acc[m][n][e];
        for (int k = 0; k < 16; ++k) s += a_at(m, row, k) * b_at(n, k, col);
        acc[m][n][e] = s;
      }
}

}  // namespace
}  // namespace simda_ptx

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
  std::vector<Slot> slots(2 * threads);
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
      block = Block{&barrier, smem.get(), warps.get(), slots.data()};
      parity = 0;
      for (const dim3& b : order) {
        if (t == 0) std::memset(smem.get(), 0xff, smem_bytes);  // NaN in every float type
        barrier.arrive_and_wait();
        blockIdx = {b.x, b.y, b.z};
        copies_open.clear();
        copy_groups.clear();
        try {
          body();
          if (copies_pending()) fail("cp.async: copies issued but never waited for");
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

// Faults the emulator must catch (its own test): "misaligned" runs ldmatrix on a row that is
// not 16-byte aligned, "misaligned_vector" checks a 16-byte access 8 bytes off, "partial_warp"
// runs an MMA on 31 lanes of a warp, "divergent_calls" an MMA whose lane 5 brings other tile
// sizes, "unwaited_copy" issues a cp.async and never waits for it, "smem" asks for more shared
// memory than sm_75 has.
inline void self_test(const std::string& fault) {
  auto mma = [](bool other_sizes) {
    uint32_t a[1][4] = {}, b[1][2] = {}, b2[2][2] = {};
    float acc[1][1][4] = {}, acc2[1][2][4] = {};
    if (other_sizes) simda_ptx::mma_tile<__half, 1, 2>(acc2, a, b2);
    else simda_ptx::mma_tile<__half, 1, 1>(acc, a, b);
  };
  if (fault == "misaligned") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      uint32_t r[4];
      simda_ptx::ldmatrix_x4(r, block.smem + 16 * lane() + 8);
    });
  } else if (fault == "misaligned_vector") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      SIMDA_CHECK_ALIGNED(block.smem + 8, 16, "16-byte shared-memory store");
    });
  } else if (fault == "partial_warp") {  // lane 0 never calls: the others wait, then fail
    const int saved = warp_timeout_ms.exchange(300);
    try {
      launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [&] {
        if (lane() != 0) mma(false);
      });
    } catch (...) {
      warp_timeout_ms = saved;
      throw;
    }
    warp_timeout_ms = saved;
  } else if (fault == "divergent_calls") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [&] { mma(lane() == 5); });
  } else if (fault == "unwaited_copy") {
    launch(dim3(1, 1, 1), 32, 1024, smem_optin_limit(900), 0, [] {
      alignas(16) static const unsigned char source[16] = {};
      simda_ptx::cp_async16(block.smem + 16 * threadIdx.x, source, true);
      simda_ptx::cp_async_commit();
    });
  } else if (fault == "smem") {
    launch(dim3(1, 1, 1), 32, 65 * 1024, smem_optin_limit(750), 0, [] {});
  } else {
    fail("unknown self-test fault '" + fault + "'");
  }
}

}  // namespace emu
