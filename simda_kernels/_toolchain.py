"""Where the CUDA toolchain is, for building ``simda_kernels._C`` (setup.py, JIT, CMake).

Standard library only: ``setup.py`` loads this file by path before anything is installed.
``python simda_kernels/_toolchain.py`` prints the toolkit root.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

#: nvcc flags of the extension: setup.py and the JIT build use this list; CMakeLists.txt
#: repeats it (a test keeps the two equal).
NVCC_FLAGS = ["-O3", "-lineinfo", "--expt-relaxed-constexpr", "-diag-suppress=3189"]


def cuda_home() -> str | None:
    """The CUDA toolkit root: ``$CUDA_HOME``, else found from ``nvcc`` on PATH (which may be a
    wrapper script, so nvcc is asked where it lives)."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    cmd = [nvcc, "--dryrun", "-x", "cu", "-c", os.devnull, "-o", os.devnull]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True).stderr
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("#$ _HERE_="):
            return os.path.dirname(line.split("=", 1)[1].strip())
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def torch_half_flags() -> list[str]:
    """The ``-D__CUDA_NO_HALF*`` defines torch's CUDA extension builds compile with (no
    implicit half/bfloat16 conversions or operators), for other compilations of the kernels."""
    from torch.utils import cpp_extension

    return [f for f in cpp_extension.COMMON_NVCC_FLAGS if f.startswith("-D__CUDA_NO_")]


def nvidia_wheel_includes() -> list[str]:
    """Headers of the nvidia-* wheels (cuBLAS, cuSPARSE, ...) that torch's headers include."""
    try:
        import nvidia
    except ImportError:
        return []
    return sorted(glob.glob(os.path.join(list(nvidia.__path__)[0], "*", "include")))


if __name__ == "__main__":
    print(cuda_home() or "")
