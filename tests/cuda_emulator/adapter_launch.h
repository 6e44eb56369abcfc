// The emulated kernels' entry points, normalising arguments as the binding does
// (csrc/bindings.cpp): included once by adapter_emulated.h, and once per broken variant, inside
// its namespace, by the module mutants.py generates. No include guard on purpose.

namespace {

struct EmulatedLaunch {
  uint64_t seed;
  int frames = 0;       // frames per block (0: automatic, for a GPU of kSms SMs)
  size_t smem = 0;      // shared memory a block may opt in to (0: the emulated architecture's)
  static constexpr int kSms = 132;
  int sm_count() const { return kSms; }
  int frames_per_block() const { return frames; }
  size_t smem_limit() const { return smem ? smem : emu::smem_optin_limit(SIMDA_EMULATED_ARCH); }
  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, size_t smem_bytes, Args... args) const {
    emu::launch(grid, simda::kThreads, smem_bytes, smem_limit(), seed, [&] { kernel(args...); });
  }
};

// Arguments normalised as the binding does (csrc/bindings.cpp).
at::Tensor forward(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                   const at::Tensor& conv_w, const at::Tensor& conv_b, bool gelu, uint64_t seed,
                   int frames_per_block = 0, size_t smem_limit = 0) {
  return simda::forward_impl(simda::tokens_flat(x), w_down.contiguous(), b_down.contiguous(), conv_w.contiguous(),
                             conv_b.contiguous(), gelu, EmulatedLaunch{seed, frames_per_block, smem_limit});
}

std::vector<at::Tensor> backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w_down,
                                 const at::Tensor& b_down, const at::Tensor& conv_w, bool gelu, uint64_t seed,
                                 int frames_per_block = 0, size_t smem_limit = 0) {
  return simda::backward_impl(simda::tokens_contiguous(dy), simda::tokens_flat(x), w_down.contiguous(),
                              b_down.contiguous(), conv_w.contiguous(), gelu,
                              EmulatedLaunch{seed, frames_per_block, smem_limit});
}

bool uses_vector_loads(const at::Tensor& x, const at::Tensor& w_down) {
  return simda::uses_vector_loads(simda::tokens_flat(x), w_down.contiguous());
}

}  // namespace
