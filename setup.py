"""Build of simda: a pure-Python package, plus the CUDA extension ``simda_kernels._C``.

The extension is built when a CUDA-enabled torch and nvcc are present. Environment:
  SIMDA_SKIP_CUDA_BUILD=1  never build it        SIMDA_FORCE_CUDA=1  build it or fail
  TORCH_CUDA_ARCH_LIST     target GPUs (default: torch's choice, e.g. "9.0")
  MAX_JOBS                 parallel compile jobs  CUDA_HOME  toolkit root (found from nvcc)
GPU users: ``pip install --no-build-isolation .`` so the build sees the installed torch.
"""

import glob
import importlib.util
import os

from setuptools import find_packages, setup

# The toolchain helpers, by path: the package itself is not importable before it is installed.
_spec = importlib.util.spec_from_file_location(
    "_simda_toolchain",
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "simda_kernels", "_toolchain.py"),
)
toolchain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toolchain)


def _flag(name):
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def _extensions():
    if _flag("SIMDA_SKIP_CUDA_BUILD"):
        return [], {}
    force = _flag("SIMDA_FORCE_CUDA")
    try:
        import torch
    except ImportError:
        if force:
            raise RuntimeError("SIMDA_FORCE_CUDA=1 but torch is not importable") from None
        return [], {}
    home = toolchain.cuda_home()
    if home is not None:  # before torch.utils.cpp_extension reads it
        os.environ["CUDA_HOME"] = home
    from torch.utils import cpp_extension

    if torch.version.cuda is None or home is None:
        if force:
            raise RuntimeError(
                f"SIMDA_FORCE_CUDA=1 but torch.version.cuda={torch.version.cuda} and "
                f"CUDA_HOME={home}: install a CUDA build of torch and the CUDA toolkit"
            )
        print("simda: no CUDA torch or nvcc found; installing without simda_kernels._C")
        return [], {}
    ext = cpp_extension.CUDAExtension(
        name="simda_kernels._C",
        sources=sorted(glob.glob("csrc/*.cpp") + glob.glob("csrc/*.cu")),
        depends=sorted(glob.glob("csrc/*.cuh") + glob.glob("csrc/*.h")),
        include_dirs=[os.path.abspath("csrc"), *toolchain.nvidia_wheel_includes()],
        extra_compile_args={"cxx": ["-O3"], "nvcc": toolchain.NVCC_FLAGS},
    )
    return [ext], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()

setup(
    name="simda",
    version="0.1.0",
    description="SimDA: fused kernels and adapters that turn SD-1.x into a text-to-video model",
    packages=find_packages(include=["simda", "simda.*", "simda_kernels", "simda_kernels.*"]),
    package_data={
        "simda": ["assets/toyworld/*.json", "assets/toyworld/*.safetensors", "assets/toyworld/*/*"],
        "simda_kernels": ["measured/*.json", "measured/*.md"],
    },
    python_requires=">=3.11",
    install_requires=[
        "torch>=2.11",
        "diffusers>=0.35",
        "transformers",
        "safetensors",
        "scipy",  # diffusers' LMS scheduler
        "numpy",
        "tqdm",
        "imageio",
        "imageio-ffmpeg",
        "pillow",
        "matplotlib",
    ],
    extras_require={
        "lora": ["peft"],
        "offload": ["accelerate"],
        "bench": ["pytest", "pytest-benchmark"],
    },
    entry_points={"console_scripts": ["simda=simda.cli:main"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
