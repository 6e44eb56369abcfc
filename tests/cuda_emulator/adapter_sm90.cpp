// Hopper: fp16 and bf16 on tensor cores, fp32 on FMAs, 227 KiB of shared memory per block.
#define SIMDA_EMULATED_ARCH 900
#include "adapter_bindings.h"

void register_sm90(pybind11::module_& m) { register_arch(m, "sm90"); }
