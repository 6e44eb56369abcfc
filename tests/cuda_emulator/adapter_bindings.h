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
        py::arg("conv_b"), py::arg("gelu"), py::arg("seed"), py::call_guard<py::gil_scoped_release>());
  m.def("backward", &backward, py::arg("grad"), py::arg("x"), py::arg("w_down"), py::arg("b_down"),
        py::arg("conv_w"), py::arg("gelu"), py::arg("seed"), py::call_guard<py::gil_scoped_release>());
  m.def("uses_vector_loads", &uses_vector_loads, "whether the kernels move these tiles as 16-byte vectors",
        py::arg("x"), py::arg("w_down"));
}

}  // namespace
