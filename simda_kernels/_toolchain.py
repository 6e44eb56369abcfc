"""Where the CUDA toolchain is, for building ``simda_kernels._C`` (setup.py, JIT, CMake).

Standard library only: ``setup.py`` loads this file by path before anything is installed.
``python simda_kernels/_toolchain.py`` prints the toolkit root.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import time
import warnings

#: A JIT build lock older than this was left by an interrupted build (builds take about a
#: minute on 2 cores): torch would wait for it forever.
STALE_LOCK_S = 15 * 60

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


def lock_file_blocks() -> bool:
    """Whether torch's JIT build waits for as long as a ``lock`` file exists (torch <= 2.13,
    ``FileBaton``) rather than holding an OS lock that dies with its process (``FileLock``)."""
    from torch.utils import cpp_extension

    return not hasattr(cpp_extension, "FileLock")


def jit_build_directory(name: str) -> str:
    """The folder for ``torch.utils.cpp_extension.load(name=name, build_directory=...)``.

    One folder per Python and torch version, under ``$TORCH_EXTENSIONS_DIR`` or torch's
    default root: torch's own default is shared by every torch build of one CUDA version, so
    a module compiled against one torch could be loaded by another. A build lock left there
    by an interrupted build is removed with a warning once it is older than ``STALE_LOCK_S``;
    a younger one is waited for, with a warning that says which file to delete if no other
    build is running. That is for torch <= 2.13, whose lock is a file whose mere existence
    blocks (silently and without end); newer torch holds an OS lock on a file that stays,
    and is left alone.
    """
    import torch
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    version = f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__}"
    folder = os.path.join(root, "simda", f"{name}-{re.sub(r'[^0-9A-Za-z.]+', '_', version)}")
    os.makedirs(folder, exist_ok=True)
    lock = os.path.join(folder, "lock")
    if not lock_file_blocks():
        return folder
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:  # no lock: nobody is building
        return folder
    if age > STALE_LOCK_S:
        warnings.warn(
            f"removing {lock}, left {age / 60:.0f} min ago by a build of {name} that did not "
            "finish (interrupted?)",
            stacklevel=2,
        )
        try:
            os.remove(lock)
        except FileNotFoundError:
            pass
    else:
        warnings.warn(
            f"another process is building {name} in {folder} (lock {age:.0f} s old); waiting. "
            f"If none is, delete {lock}",
            stacklevel=2,
        )
    return folder


if __name__ == "__main__":
    print(cuda_home() or "")
