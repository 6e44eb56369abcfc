// Turing: fp16 on tensor cores, bf16 and fp32 on FMAs, 64 KiB of shared memory per block.
#define SIMDA_EMULATED_ARCH 750
#include "adapter_bindings.h"

void register_sm75(pybind11::module_& m) { register_arch(m, "sm75"); }
