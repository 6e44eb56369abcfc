// Python binding of simda_kernels._C: argument checks live here, kernels in the .cu files.
#include <torch/extension.h>

namespace simda {
at::Tensor temporal_conv_forward(const at::Tensor& a, const at::Tensor& w, const at::Tensor& cb);
}

static at::Tensor temporal_conv_forward(const at::Tensor& a, const at::Tensor& w, const at::Tensor& cb) {
  TORCH_CHECK(a.is_cuda(), "a must be a CUDA tensor");
  TORCH_CHECK(a.dim() == 5, "a must be (B, R, F, H, W), got ", a.sizes());
  TORCH_CHECK(w.dim() == 2 && w.size(0) == a.size(1) && w.size(1) == 3, "w must be (R, 3)");
  TORCH_CHECK(cb.dim() == 1 && cb.size(0) == a.size(1), "cb must be (R,)");
  TORCH_CHECK(w.scalar_type() == a.scalar_type() && cb.scalar_type() == a.scalar_type(),
              "a, w and cb must share a dtype");
  return simda::temporal_conv_forward(a, w, cb);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "simda CUDA kernels";
  m.def("temporal_conv_forward", &temporal_conv_forward, "depthwise temporal conv (B, R, F, H, W)");
}
