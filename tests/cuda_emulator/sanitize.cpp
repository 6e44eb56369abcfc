// The emulated adapter kernels under a sanitizer, as a plain program (no Python): built with
// -fsanitize=thread it reports data races between the threads of a block (shared memory
// touched by two threads without a __syncthreads between them, the role of compute-sanitizer's
// racecheck; a cp.async into a buffer other threads still read counts, its poisoning is a
// write); with -fsanitize=address, reads or writes outside x, the weights, dy, the outputs or
// the exact shared-memory allocation. Correctness is the pytest suite's job: this runs every
// code path once (each dtype; 16-byte copies in three layouts, element by element with frame
// chunks, wide and narrow tiles) and exits non-zero when the sanitizer reports anything.
// Compile with -DSIMDA_EMULATED_ARCH=900 or 750; run by tests/cuda_emulator/__init__.py.
#include "adapter_emulated.h"
// clang-format off
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
// clang-format on

#include <cstdio>

namespace {

struct Run {
  int64_t frames, height, width;  // 64 tokens move as 16-byte copies, 35 element by element
  int layout;                     // 0: NCDHW, 1: diffusers' (B*F, C, H, W) as a video, 2: channels-last
  int frames_per_block;   // 0: automatic
  size_t smem_limit;      // 0: the architecture's (wide tiles on sm_90, narrow on sm_75)
};

}  // namespace

int main() {
  at::set_num_threads(1);
  at::manual_seed(0);
  // R = 40: two 32-row warp groups of a wide tile, both row tiles of a narrow one; C = 40: one
  // wide channel step, two narrow ones; four frames: the ring of three wraps
  const int64_t B = 1, C = 40, R = 40;
  const Run runs[] = {
      {4, 4, 16, 0, 0, 0}, {4, 4, 16, 1, 0, 0}, {4, 4, 16, 2, 0, 0},  // vectors, three layouts
      {5, 5, 7, 0, 2, 0},                                           // elements; blocks of 2, 2, 1 frames
      {4, 4, 16, 1, 0, 64 * 1024},                                  // narrow tiles
  };
  int count = 0;
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (const Run& run : runs) {
      const auto opt = at::TensorOptions().dtype(dtype);
      const int64_t F = run.frames, H = run.height, W = run.width;
      const at::Tensor inputs[] = {
          at::randn({B, C, F, H, W}, opt),
          at::randn({B, F, C, H, W}, opt).transpose(1, 2),
          at::randn({B, F, H, W, C}, opt).permute({0, 4, 1, 2, 3}),
      };
      const at::Tensor& x = inputs[run.layout];
      auto w_down = at::randn({R, C}, opt) / std::sqrt(static_cast<double>(C)), b_down = at::randn({R}, opt);
      auto conv_w = at::randn({R, 3}, opt), conv_b = at::randn({R}, opt);
      auto y = forward(x, w_down, b_down, conv_w, conv_b, true, count, run.frames_per_block, run.smem_limit);
      auto grads = backward(at::randn_like(y), x, w_down, b_down, conv_w, true, count, run.frames_per_block,
                            run.smem_limit);
      bool finite = y.isfinite().all().item<bool>();
      for (const auto& g : grads) finite = finite && g.isfinite().all().item<bool>();
      if (!finite) {
        std::fprintf(stderr, "non-finite output (dtype %s, F=%ld)\n", c10::toString(dtype), F);
        return 1;
      }
      ++count;
    }
  }
  std::printf("sm_%d: %d forward+backward runs, no sanitizer report\n", SIMDA_EMULATED_ARCH / 10, count);
  return 0;
}
