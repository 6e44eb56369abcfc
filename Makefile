# make test  - set up .venv (pinned), lint, build-check the CUDA extension, run the tests
# make demo  - set up .venv and run the main job (`simda demo`)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.simda-installed
PYTEST_ARGS ?=

.PHONY: setup test demo lint format cuda-check cmake-build bench clean

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

# tests/ for correctness; benchmarks/ once each at tiny CPU sizes (--benchmark-disable).
test: lint cuda-check
	TRITON_INTERPRET=1 $(PY) -m pytest -q tests benchmarks --benchmark-disable $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/simda demo

bench: setup
	mkdir -p out
	$(PY) -m pytest benchmarks/ --benchmark-only --benchmark-json out/bench.json
	$(VENV)/bin/simda bench out/bench.json --output out/bench

clean:
	rm -rf build out .pytest_cache .benchmarks
