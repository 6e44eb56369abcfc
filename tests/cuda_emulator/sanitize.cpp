// The emulated adapter kernels under a sanitizer, as a plain program (no Python): built with
// -fsanitize=thread it reports data races between the threads of a block (shared memory
// touched by two threads without a __syncthreads between them, the role of compute-sanitizer's
// racecheck); with -fsanitize=address, reads or writes outside x, the weights, the outputs or
// the exact shared-memory allocation. Correctness is the pytest suite's job: this only runs
// every dtype and layout once and exits non-zero when the sanitizer reports anything.
// Compile with -DSIMDA_EMULATED_ARCH=900 or 750; run by tests/cuda_emulator/__init__.py.
#include "adapter_emulated.h"
// clang-format off
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
// clang-format on

#include <cstdio>

int main() {
  at::set_num_threads(1);
  at::manual_seed(0);
  // 70 tokens: two tiles, one partial, loaded element by element; 80 tokens (F = 3): the same
  // as 16-byte vectors (channels-last x takes vectors along C at both sizes)
  const int64_t B = 2, C = 40, R = 20, H = 5;
  int runs = 0;
  for (auto dtype : {at::kFloat, at::kHalf, at::kBFloat16}) {
    for (int64_t F : {1, 3, 5}) {  // 5: the three-frame ring wraps
      const int64_t W = F == 3 ? 16 : 14;
      const auto opt = at::TensorOptions().dtype(dtype);
      // NCDHW, diffusers' (B*F, C, H, W) viewed as video, channels-last
      const at::Tensor inputs[] = {
          at::randn({B, C, F, H, W}, opt),
          at::randn({B, F, C, H, W}, opt).transpose(1, 2),
          at::randn({B, F, H, W, C}, opt).permute({0, 4, 1, 2, 3}),
      };
      for (const auto& x : inputs) {
        auto w_down = at::randn({R, C}, opt) / std::sqrt(static_cast<double>(C)), b_down = at::randn({R}, opt);
        auto conv_w = at::randn({R, 3}, opt), conv_b = at::randn({R}, opt);
        const int frames_per_block = F == 5 ? 2 : 0;  // F = 5: blocks of 2, 2 and 1 frames
        auto y = forward(x, w_down, b_down, conv_w, conv_b, true, runs, frames_per_block);
        auto grads = backward(at::randn_like(y), x, w_down, b_down, conv_w, true, runs, frames_per_block);
        bool finite = y.isfinite().all().item<bool>();
        for (const auto& g : grads) finite = finite && g.isfinite().all().item<bool>();
        if (!finite) {
          std::fprintf(stderr, "non-finite output (dtype %s, F=%ld)\n", c10::toString(dtype), F);
          return 1;
        }
        ++runs;
      }
    }
  }
  std::printf("sm_%d: %d forward+backward runs, no sanitizer report\n", SIMDA_EMULATED_ARCH / 10, runs);
  return 0;
}
