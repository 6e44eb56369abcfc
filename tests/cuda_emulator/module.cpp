// The emulated kernels as one Python module: one submodule per emulated architecture.
#include "cuda_emulator.h"
// clang-format off
#include <torch/extension.h>
// clang-format on

void register_sm75(pybind11::module_& m);
void register_sm90(pybind11::module_& m);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "simda's CUDA kernels run on the CPU by tests/cuda_emulator";
  register_sm75(m);
  register_sm90(m);
  m.def("self_test", &emu::self_test, "faults the emulator must report", pybind11::arg("fault"));
}
