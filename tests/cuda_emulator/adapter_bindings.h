// Python registration of the emulated adapter kernels of one architecture: a source file
// defines SIMDA_EMULATED_ARCH, includes this header and calls register_arch from its
// registration function (one file per architecture, so that one build holds them all).
#pragma once

#include "adapter_emulated.h"
// clang-format off
#include <torch/extension.h>
// clang-format on

namespace {

void register_arch(pybind11::module_& parent, const char* name) {
  namespace py = pybind11;
  auto m = parent.def_submodule(name, "the temporal adapter's kernels as compiled for this architecture");
  m.attr("arch") = SIMDA_EMULATED_ARCH;
  m.def("forward", &forward, py::arg("x"), py::arg("w_down"), py::arg("b_down"), py::arg("conv_w"),
        py::arg("conv_b"), py::arg("gelu"), py::arg("seed"), py::arg("frames_per_block") = 0,
        py::arg("smem_limit") = 0, py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, py::arg("grad"), py::arg("x"), py::arg("w_down"), py::arg("b_down"),
        py::arg("conv_w"), py::arg("gelu"), py::arg("seed"), py::arg("frames_per_block") = 0,
        py::arg("smem_limit") = 0, py::call_guard<py::gil_scoped_release>());
  m.def(
      "frames_per_block",
      [](int frames, int64_t blocks, int64_t batch, int sm_count, int setting) {
        at::Tensor x = at::empty({1, 1, frames, 1, 1});
        simda::Geometry g = simda::geometry(x, 1);
        simda::split_frames(g, blocks, batch, sm_count, setting);
        return g.chunk;
      },
      "the frames each block writes, for `blocks` blocks per frame span of a batch of `batch`",
      py::arg("frames"), py::arg("blocks"), py::arg("batch"), py::arg("sm_count"), py::arg("setting") = 0);
  m.def("uses_vector_loads", &uses_vector_loads, "whether the kernels move these tiles as 16-byte vectors",
        py::arg("x"), py::arg("w_down"));
}

}  // namespace
