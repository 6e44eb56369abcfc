# make test  - set up .venv (pinned), lint, build-check the CUDA extension (setup.py and CMake),
#              run the tests
# make demo  - set up .venv and run the main job (`simda demo`)
# make test-compat - the same tests on the oldest supported stack (Python 3.12, torch 2.11,
#               triton 3.6, diffusers 0.35) in .venv-compat
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.simda-installed
PYTEST_ARGS ?=

.PHONY: setup test test-compat demo lint format cuda-check cmake-build cmake-check bench clean

$(STAMP): requirements-dev.txt setup.py pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements-dev.txt
	SIMDA_SKIP_CUDA_BUILD=1 $(PY) -m pip install -q --no-build-isolation --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Compile and link simda_kernels._C for sm_90 whenever nvcc is present (no GPU needed).
cuda-check: setup
	@if command -v nvcc >/dev/null 2>&1; then \
	  SIMDA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$${MAX_JOBS:-2}" \
	    $(PY) setup.py -q build_ext --build-temp build/cuda-check-temp --build-lib build/cuda-check \
	  && $(PY) scripts/check_extension.py build/cuda-check; \
	else echo "nvcc not found: skipping the CUDA extension build check"; fi

# The same extension through CMake (for C++ users).
cmake-build: setup
	$(VENV)/bin/cmake -S . -B build/cmake -DPython_EXECUTABLE=$(abspath $(PY)) \
	  -DCMAKE_PREFIX_PATH="$$($(PY) -c 'import torch; print(torch.utils.cmake_prefix_path)')" \
	  -DCUDAToolkit_ROOT="$$($(PY) simda_kernels/_toolchain.py)" -DCUDA_TOOLKIT_ROOT_DIR="$$($(PY) simda_kernels/_toolchain.py)"
	$(VENV)/bin/cmake --build build/cmake -j "$${MAX_JOBS:-2}"
	$(PY) scripts/check_extension.py build/cmake

# The CMake build too, whenever nvcc is present (its include paths differ from setup.py's).
cmake-check: setup
	@if command -v nvcc >/dev/null 2>&1; then $(MAKE) --no-print-directory cmake-build; \
	else echo "nvcc not found: skipping the CMake build check"; fi

# tests/ for correctness; benchmarks/ once each at tiny CPU sizes (--benchmark-disable).
test: lint cuda-check cmake-check
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests benchmarks --benchmark-disable $(PYTEST_ARGS)

# The oldest supported stack (the GPU machine's): its own venv, the extension built against
# torch 2.11 when nvcc is present, the whole suite. COMPAT_PYTHON: a Python 3.12 interpreter.
COMPAT_PYTHON ?= python3.12
COMPAT_VENV ?= .venv-compat
COMPAT_PY := $(COMPAT_VENV)/bin/python
test-compat:
	@command -v $(COMPAT_PYTHON) >/dev/null 2>&1 || { echo "test-compat needs a Python 3.12:" \
	  "set COMPAT_PYTHON=/path/to/python3.12 ('$(COMPAT_PYTHON)' not found)"; exit 1; }
	test -x $(COMPAT_PY) || $(COMPAT_PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_PY) -m pip install -q -r requirements-compat.txt
	SIMDA_SKIP_CUDA_BUILD=1 $(COMPAT_PY) -m pip install -q --no-build-isolation --no-deps -e .
	@if command -v nvcc >/dev/null 2>&1; then \
	  SIMDA_FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" MAX_JOBS="$${MAX_JOBS:-2}" \
	    $(COMPAT_PY) setup.py -q build_ext --build-temp build/compat-check-temp --build-lib build/compat-check \
	  && $(COMPAT_PY) scripts/check_extension.py build/compat-check; \
	else echo "nvcc not found: skipping the CUDA extension build check"; fi
	TRITON_INTERPRET=1 PATH="$(abspath $(COMPAT_VENV))/bin:$$PATH" $(COMPAT_PY) -m pytest -q \
	  -p no:cacheprovider tests benchmarks --benchmark-disable $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/simda demo

bench: setup
	mkdir -p out
	$(PY) -m pytest benchmarks/ --benchmark --benchmark-json out/bench.json
	$(VENV)/bin/simda bench out/bench.json --output out/bench

clean:
	rm -rf build out .pytest_cache .benchmarks
