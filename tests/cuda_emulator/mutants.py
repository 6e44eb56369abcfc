"""Deliberately broken variants of the temporal adapter's kernels: plausible bugs the emulator
tests must catch (a test that cannot fail is a defect).

Each mutant replaces one snippet of a csrc/ header, which must occur exactly once (so a kernel
edit that moves the code fails here instead of silently testing nothing), and names the
scenario of the emulator tests that catches it. ``load()`` compiles every mutant, plus an
unbroken copy, into one module: each is a patched copy of the headers included inside its own
namespace of one translation unit, with the emulator's entry points (``adapter_launch.h``),
emulating sm_90. tests/test_kernel_mutants.py runs them. A missing ``__syncthreads`` is the
sanitizer build's to catch (ThreadSanitizer), not a numerical test's: such mutants are not
here.
"""

from __future__ import annotations

import dataclasses
import functools
import os

from tests import cuda_emulator

KERNELS = "temporal_adapter_kernels.cuh"
GEMM = "temporal_adapter_gemm.cuh"


@dataclasses.dataclass(frozen=True)
class Scenario:
    """An emulator check (tests/test_temporal_adapter.py::check) of x (B, C, F, H, W)."""

    dtype: str = "float16"
    layout: str = "folded"  # a key of tests/test_temporal_adapter.py::layouts
    # C = 72: a partial channel step; R = 36: a partial 32-row warp group; 64 tokens: one tile
    # moved as 16-byte copies; five frames: the ring wraps
    shape: tuple[int, int, int, int, int] = (1, 72, 5, 4, 16)
    frames_per_block: int = 0
    smem_limit: int = 0


ELEMENTS = (1, 72, 5, 7, 9)  # 63 tokens: loaded and stored element by element, a partial chunk
CHUNKS = Scenario(frames_per_block=2)  # blocks of 2, 2 and 1 frames


@dataclasses.dataclass(frozen=True)
class Mutant:
    old: str
    new: str
    scenario: Scenario = Scenario()
    file: str = KERNELS


MUTANTS = {
    # the cp.async pipeline
    "wrong_pipeline_stage": Mutant(
        "    const T* buf = buffer(s);", "    const T* buf = buffer(s + 1);", file=GEMM
    ),
    "wait_one_group_short": Mutant(
        "simda_ptx::cp_async_wait<Tl::kStages - 2>();",
        "simda_ptx::cp_async_wait<Tl::kStages - 1>();",
        file=GEMM,
    ),
    "one_buffer_for_all_stages": Mutant(
        "return stages + (s % Tl::kStages) * Tl::kStageElems;", "return stages;", file=GEMM
    ),
    "channel_steps_rounded_down": Mutant(
        "const int ksteps = (g.C + Tl::KC - 1) / Tl::KC;",
        "const int ksteps = g.C / Tl::KC > 0 ? g.C / Tl::KC : 1;",
        file=GEMM,
    ),
    "dropped_channel_zero_fill": Mutant(  # stale (here NaN) shared memory times x's zeros
        "if (r < g.R) simda_ptx::cp_async16(sW",
        "if (r < g.R && c < g.C) simda_ptx::cp_async16(sW",
        file=GEMM,
    ),
    # ldmatrix and the MMA fragments
    "a_fragment_halves": Mutant(
        "sW + (wr + 16 * m + l % 16) * Tl::kLdW + kk + (l / 16) * 8",
        "sW + (wr + 16 * m + l % 16) * Tl::kLdW + kk + ((l / 8) % 2) * 8",
        file=GEMM,
    ),
    "b_fragment_rows": Mutant(
        "(kk + l % 16) * Tl::kLdXt + j", "(kk + l % 8) * Tl::kLdXt + j", file=GEMM
    ),
    "b_fragment_channels_last": Mutant(
        "(j + l % 8) * Tl::kLdXc + kk + ((l / 8) % 2) * 8",
        "(j + l % 8) * Tl::kLdXc + kk + (l / 16) * 8",
        Scenario(layout="channels_last"),
        file=GEMM,
    ),
    "accumulator_rows": Mutant(
        "fn(wr + 16 * m + g + 8 * h, wc + 8 * n + 2 * q,",
        "fn(wr + 16 * m + 2 * g + h, wc + 8 * n + 2 * q,",
        file=GEMM,
    ),
    "tail_warp_skips_partial_rows": Mutant(
        "if (r0 + wr >= g.R) return;", "if (r0 + wr + WR > g.R) return;", file=GEMM
    ),
    # the 16-bit ring: values rounded where they must not be
    "fp32_ring_rounded_to_16_bits": Mutant(
        "*reinterpret_cast<float2*>(p) = make_float2(v0, v1);",
        "*reinterpret_cast<float2*>(p) ="
        " make_float2(to_f(from_f<__half>(v0)), to_f(from_f<__half>(v1)));",
        Scenario(dtype="float32"),
    ),
    "fp16_ring_rounded_to_bf16": Mutant(
        "*reinterpret_cast<uint32_t*>(p) = bits_of<T>(v0) | bits_of<T>(v1) << 16;",
        "*reinterpret_cast<uint32_t*>(p) = bits_of<T>(to_f(from_f<__nv_bfloat16>(v0))) |"
        " bits_of<T>(to_f(from_f<__nv_bfloat16>(v1))) << 16;",
    ),
    "swapped_halves_of_a_chunk": Mutant(
        "word(c, q / 2) >> (16 * (q % 2))", "word(c, q / 2) >> (16 * (1 - q % 2))"
    ),
    # forward epilogue and conv
    "bias_after_activation": Mutant(
        "act_fn(v0 + s_bias[i], gelu), act_fn(v1 + s_bias[i], gelu)",
        "act_fn(v0, gelu) + s_bias[i], act_fn(v1, gelu) + s_bias[i]",
    ),
    "gelu_tanh_approximation": Mutant(
        "return gelu ? 0.5f * v * (1.0f + erff(v * kRsqrt2)) : v;",
        "return gelu ? 0.5f * v * (1.0f + tanhf(0.7978845608f * (v + 0.044715f * v * v * v))) : v;",
        Scenario(dtype="float32"),
    ),
    "swapped_conv_taps": Mutant(
        "        const int src = out_f + k - 1;", "        const int src = out_f + 1 - k;"
    ),
    "skipped_partial_chunk": Mutant(
        "if (r >= g.R || t >= g.T) return;",
        "if (r >= g.R || t + V > g.T) return;",
        Scenario(shape=ELEMENTS),
    ),
    # backward
    "gelu_derivative_without_pdf": Mutant(
        "grad = cdf + v * kRsqrt2Pi * expf(-0.5f * v * v);", "grad = cdf;"
    ),
    "transposed_conv_not_flipped": Mutant(
        "(w0 * dy_next + w1 * dy_cur + w2 * dy_prev)", "(w0 * dy_prev + w1 * dy_cur + w2 * dy_next)"
    ),
    "conv_weight_grad_shifted": Mutant(
        "fmaf(dy_cur, chunk_get<T>(a[k], q), dcw[u][k])",
        "fmaf(dy_cur, chunk_get<T>(a[2 - k], q), dcw[u][k])",
    ),
    "dy_window_not_shifted": Mutant("      dys[0][u] = dys[1][u];\n", ""),
    "dy_row_read_past_its_end": Mutant(
        "    if (q < valid) chunk_set<T>(c, q, to_f(p[q]));",
        "    chunk_set<T>(c, q, to_f(p[q]));",
        Scenario(shape=ELEMENTS),
    ),
    "partial_shuffle_reduction": Mutant(
        "for (int off = 1; off < kChunks; off <<= 1) {",
        "for (int off = 1; off < kChunks / 2; off <<= 1) {",
    ),
    # frame chunks
    "chunk_without_left_neighbour": Mutant(
        "s.fs = s.f0 > 0 ? s.f0 - 1 : 0;", "s.fs = s.f0;", CHUNKS
    ),
    "last_frame_finalised_by_every_chunk": Mutant(
        "if (span.f1 == g.F) {  // the last frame",
        "if (span.f1 >= span.f0) {  // the last frame",
        CHUNKS,
    ),
}

CONTROL = "unbroken"  # the headers as they are: every scenario must pass

# A mutant's module holds only the kernels its scenario runs (its dtype, wide tiles): the host
# code's dispatch is cut down to them, which keeps the build short.
_DTYPE_CASES = {
    "float16": "    case at::kHalf: fn(__half{}); break;\n",
    "bfloat16": "    case at::kBFloat16: fn(__nv_bfloat16{}); break;\n",
    "float32": "    case at::kFloat: fn(float{}); break;\n",
}
_WIDTHS = "  if (wide_smem <= limit) fn(std::true_type{});\n  else fn(std::false_type{});\n"


def _replace_once(headers: dict[str, str], file: str, old: str, new: str, what: str) -> None:
    count = headers[file].count(old)
    if count != 1:
        raise ValueError(f"{what}: its snippet occurs {count} times in {file}")
    headers[file] = headers[file].replace(old, new)


def _patched_headers(name: str) -> dict[str, str]:
    """The csrc headers with mutant ``name`` applied (unchanged for CONTROL)."""
    headers = {}
    for file in sorted(os.listdir(cuda_emulator.CSRC)):
        if file.endswith((".h", ".cuh")):
            with open(os.path.join(cuda_emulator.CSRC, file)) as f:
                headers[file] = f.read()
    if name == CONTROL:
        return headers
    mutant = MUTANTS[name]
    _replace_once(headers, mutant.file, mutant.old, mutant.new, name)
    for dtype, case in _DTYPE_CASES.items():
        if dtype != mutant.scenario.dtype:
            _replace_once(headers, KERNELS, case, "", f"{name}'s dtype dispatch")
    if not mutant.scenario.smem_limit:
        _replace_once(headers, KERNELS, _WIDTHS, "  fn(std::true_type{});\n", f"{name}'s tiles")
    return headers


def _write(path: str, text: str) -> None:
    """Write only what changed (the build tracks files by time)."""
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def _translation_unit(names) -> str:
    lines = [
        "// Generated by tests/cuda_emulator/mutants.py: one namespace per broken variant.",
        "#define SIMDA_EMULATED_ARCH 900",
        '#include "cuda_emulator.h"',
        "// clang-format off",
        "#include <torch/extension.h>",
        "#include <ATen/Tensor.h>",
        "#include <ATen/ops/empty.h>",
        "#include <ATen/ops/matmul.h>",
        "#include <ATen/ops/zeros.h>",
        "// clang-format on",
    ]
    for name in names:
        lines += [
            f"namespace mutant_{name} {{",
            f'#include "{name}/temporal_adapter_layout.h"',
            f'#include "{name}/{KERNELS}"',
            '#include "adapter_launch.h"',
            "}",
        ]
    lines += [
        "PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {",
        "  using release = pybind11::call_guard<pybind11::gil_scoped_release>;",
    ]
    for name in names:
        lines += [
            f'  auto {name} = m.def_submodule("{name}");',
            f'  {name}.def("forward", &mutant_{name}::forward, release());',
            f'  {name}.def("backward", &mutant_{name}::backward, release());',
        ]
    lines.append("}")
    return "\n".join(lines) + "\n"


@functools.cache
def load():
    """Builds (about a minute on 2 cores, cached) and imports the module of mutants: one
    submodule per name of MUTANTS and CONTROL, each with ``forward`` and ``backward`` taking
    the arguments of the emulator's (``cuda_emulator.load().sm90``)."""
    from torch.utils import cpp_extension

    from simda_kernels import _toolchain

    include = cuda_emulator._require_cuda_include()
    build = _toolchain.jit_build_directory("simda_cuda_mutants")
    sources = os.path.join(build, "sources")
    names = [CONTROL, *MUTANTS]
    for name in names:
        for file, text in _patched_headers(name).items():
            # (a first line of its own: GCC's #pragma once takes files with the same text and
            # time for one)
            _write(os.path.join(sources, name, file), f"// {name}\n{text}")
    unit = os.path.join(sources, "mutants.cpp")
    _write(unit, _translation_unit(names))
    return cpp_extension.load(
        name="simda_cuda_mutants",
        build_directory=build,
        sources=[unit],
        extra_include_paths=[sources, cuda_emulator.HERE, include],
        # -O0: a quick build; the emulated runs are short and dominated by thread switches
        extra_cflags=["-O0", "-std=c++20", *_toolchain.torch_half_flags()],
        verbose=os.environ.get("SIMDA_JIT_VERBOSE", "0") == "1",
    )
