import importlib.util
import os

import torch  # noqa: I001 (before pytest: it decides the Triton mode below)

# The Triton mode must be set before any kernel is defined. Without a GPU the interpreter runs
# the kernels on CPU tensors; with one the kernels are compiled, so that the GPU tests check
# the real device code (the interpreter would silently run them on the CPU instead).
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")
INTERPRET = os.environ["TRITON_INTERPRET"] == "1"

import pytest  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests marked ``interpreter`` run the Triton kernels on CPU tensors: skipped when the
    kernels are compiled (TRITON_INTERPRET=0, the default on a GPU machine)."""
    if INTERPRET:
        return
    skip = pytest.mark.skip(reason="runs Triton kernels on CPU tensors: needs TRITON_INTERPRET=1")
    for item in items:
        if "interpreter" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
#: GPU tests of the Triton kernels: they must check the compiled kernels, not the interpreter
requires_compiled_triton = pytest.mark.skipif(
    INTERPRET, reason="checks the compiled Triton kernels: unset TRITON_INTERPRET"
)


def load_script(name):
    """A module of scripts/ (they are not a package), loaded by path."""
    path = os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", f"{name}.py"
    )
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
