"""A CPU emulator of the CUDA kernels in ``csrc/`` (see ``cuda_emulator.h``): the kernels'
own source, compiled for the CPU, one CPU thread per CUDA thread. It needs a C++20 compiler
and the CUDA headers (``cuda_fp16.h``: a CUDA toolkit or torch's nvidia wheels), no GPU."""

from __future__ import annotations

import functools
import os

from simda_kernels import _toolchain

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(os.path.dirname(os.path.dirname(HERE)), "csrc")
SOURCES = ["module.cpp", "adapter_sm75.cpp", "adapter_sm90.cpp"]


def cuda_include_dir() -> str | None:
    """A folder holding ``cuda_fp16.h``: the toolkit's, else an nvidia wheel's."""
    home = _toolchain.cuda_home()
    candidates = [os.path.join(home, "include")] if home else []
    candidates += _toolchain.nvidia_wheel_includes()
    for folder in candidates:
        if os.path.exists(os.path.join(folder, "cuda_fp16.h")):
            return folder
    return None


def _require_cuda_include() -> str:
    include = cuda_include_dir()
    if include is None:
        raise RuntimeError("the CUDA emulator needs the CUDA headers (cuda_fp16.h)")
    return include


@functools.cache
def load():
    """Builds (about 30 s on 2 cores, cached by torch) and imports the emulated kernels:
    submodules ``sm75`` and ``sm90`` with ``forward`` and ``backward``, and ``self_test``."""
    from torch.utils import cpp_extension

    include = _require_cuda_include()
    return cpp_extension.load(
        name="simda_cuda_emulator",
        build_directory=_toolchain.jit_build_directory("simda_cuda_emulator"),
        sources=[os.path.join(HERE, name) for name in SOURCES],
        extra_include_paths=[CSRC, HERE, include],
        # the half-precision restrictions torch's CUDA builds compile the kernels with
        extra_cflags=["-O2", "-std=c++20", *_toolchain.torch_half_flags()],
        verbose=os.environ.get("SIMDA_JIT_VERBOSE", "0") == "1",
    )


def sanitizer_command(sanitizer: str, arch: int, binary: str) -> list[str]:
    """The g++ command that builds ``sanitize.cpp`` (the emulated adapter kernels as a plain
    program) with ``-fsanitize=<sanitizer>`` (``thread`` or ``address``) for one architecture."""
    import torch
    from torch.utils import cpp_extension

    include = _require_cuda_include()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    libs = cpp_extension.library_paths()
    return [
        os.environ.get("CXX", "g++"),
        "-std=c++20",
        "-O1",
        "-g",
        f"-fsanitize={sanitizer}",
        "-fno-omit-frame-pointer",
        f"-D_GLIBCXX_USE_CXX11_ABI={abi}",
        f"-DSIMDA_EMULATED_ARCH={arch}",
        *_toolchain.torch_half_flags(),
        *[f"-I{path}" for path in (CSRC, HERE, *cpp_extension.include_paths(), include)],
        os.path.join(HERE, "sanitize.cpp"),
        *[f"-L{path}" for path in libs],
        *[f"-Wl,-rpath,{path}" for path in libs],
        "-ltorch_cpu",
        "-lc10",
        "-o",
        binary,
    ]


class EmulatedExtension:
    """Stands in for ``simda_kernels._C``: its adapter entry points run the emulated kernels of
    one architecture (``load().sm90``, say), with the binding's argument normalisation."""

    def __init__(self, kernels, seed=0):
        self.kernels = kernels
        self.seed = seed
        self.calls = 0

    def archs(self):
        return [self.kernels.arch]

    def temporal_adapter_forward(self, x, w_down, b_down, conv_w, conv_b, act):
        self.calls += 1
        return self.kernels.forward(x, w_down, b_down, conv_w, conv_b, act == "gelu", self.seed)

    def temporal_adapter_backward(self, grad, x, w_down, b_down, conv_w, act):
        self.calls += 1
        return self.kernels.backward(grad, x, w_down, b_down, conv_w, act == "gelu", self.seed + 1)
