// Python binding of simda_kernels._C: argument checks and layout normalisation live here,
// kernels in the .cu files.
#include <torch/extension.h>

#include <vector>

#include "temporal_adapter_layout.h"

namespace simda {
at::Tensor temporal_adapter_forward(const at::Tensor& x, const at::Tensor& w_down,
                                    const at::Tensor& b_down, const at::Tensor& conv_w,
                                    const at::Tensor& conv_b, bool gelu);
std::vector<at::Tensor> temporal_adapter_backward(const at::Tensor& dy, const at::Tensor& x,
                                                  const at::Tensor& w_down, const at::Tensor& b_down,
                                                  const at::Tensor& conv_w, bool gelu);
std::vector<int64_t> temporal_adapter_archs();
}  // namespace simda

namespace {

bool parse_act(const std::string& act) {
  TORCH_CHECK(act == "gelu" || act == "none", "act must be 'gelu' or 'none', got '", act, "'");
  return act == "gelu";
}

void check_cuda(const at::Tensor& t, const char* name, const at::Tensor& like) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.device() == like.device(), name, " is on ", t.device(), " but x is on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), name, " has dtype ", t.scalar_type(),
              " but x has ", like.scalar_type());
}

void check_args(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                const at::Tensor& conv_w) {
  TORCH_CHECK(x.dim() == 5, "x must be 5-D (B, C, F, H, W), got ", x.sizes());
  const auto st = x.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat,
              "x must be fp16, bf16 or fp32, got ", st);
  check_cuda(x, "x", x);
  check_cuda(w_down, "w_down", x);
  check_cuda(b_down, "b_down", x);
  check_cuda(conv_w, "conv_w", x);
  const int64_t R = w_down.size(0);
  TORCH_CHECK(w_down.dim() == 2 && w_down.size(1) == x.size(1), "w_down must be (R, C=", x.size(1),
              "), got ", w_down.sizes());
  TORCH_CHECK(b_down.dim() == 1 && b_down.size(0) == R, "b_down must be (R=", R, ",), got ", b_down.sizes());
  TORCH_CHECK(conv_w.dim() == 2 && conv_w.size(0) == R && conv_w.size(1) == 3, "conv_w must be (R=", R,
              ", 3), got ", conv_w.sizes());
  TORCH_CHECK(x.size(2) < (1 << 30) && R < (1 << 30) && x.size(1) < (1 << 30), "sizes too large");
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& w_down, const at::Tensor& b_down,
                   const at::Tensor& conv_w, const at::Tensor& conv_b, const std::string& act) {
  check_args(x, w_down, b_down, conv_w);
  check_cuda(conv_b, "conv_b", x);
  TORCH_CHECK(conv_b.dim() == 1 && conv_b.size(0) == w_down.size(0), "conv_b must be (R,), got ",
              conv_b.sizes());
  return simda::temporal_adapter_forward(simda::tokens_flat(x), w_down.contiguous(), b_down.contiguous(),
                                         conv_w.contiguous(), conv_b.contiguous(), parse_act(act));
}

std::vector<at::Tensor> backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& w_down,
                                 const at::Tensor& b_down, const at::Tensor& conv_w,
                                 const std::string& act) {
  check_args(x, w_down, b_down, conv_w);
  check_cuda(dy, "grad", x);
  TORCH_CHECK(dy.dim() == 5 && dy.size(0) == x.size(0) && dy.size(1) == w_down.size(0) &&
                  dy.size(2) == x.size(2) && dy.size(3) == x.size(3) && dy.size(4) == x.size(4),
              "grad must be (B, R, F, H, W) = ", x.size(0), ", ", w_down.size(0), ", ...; got ",
              dy.sizes());
  // any layout whose tokens are contiguous is read in place (the model's frame-major grad)
  return simda::temporal_adapter_backward(simda::tokens_contiguous(dy), simda::tokens_flat(x), w_down.contiguous(),
                                          b_down.contiguous(), conv_w.contiguous(), parse_act(act));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "simda CUDA kernels: the fused temporal adapter";
  m.def("temporal_adapter_forward", &forward,
        "TConv(act(W_down x + b_down)) of x (B, C, F, H, W) -> (B, R, F, H, W), laid out in x's "
        "order of frames and channels",
        py::arg("x"), py::arg("w_down"), py::arg("b_down"), py::arg("conv_w"), py::arg("conv_b"),
        py::arg("act"));
  m.def("temporal_adapter_backward", &backward,
        "grads (x, w_down, b_down, conv_w, conv_b) of temporal_adapter_forward", py::arg("grad"),
        py::arg("x"), py::arg("w_down"), py::arg("b_down"), py::arg("conv_w"), py::arg("act"));
  m.def("archs", &simda::temporal_adapter_archs,
        "the GPU architectures this build holds kernels for, as nvcc numbers them (900: sm_90)");
}
