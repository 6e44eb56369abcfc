// The fused temporal adapter's kernels (csrc/temporal_adapter_kernels.cuh) run by the CPU
// emulator on CPU tensors, through the same host code as on the GPU. Define
// SIMDA_EMULATED_ARCH before including it.
#pragma once

#include "cuda_emulator.h"
// clang-format off
#include <ATen/Tensor.h>
#include "temporal_adapter_kernels.cuh"
#include "temporal_adapter_layout.h"
// clang-format on

#include "adapter_launch.h"
